"""``gguflite convert-llava MODEL_DIR [--vision-tower DIR] [--outdir DIR] [--outtype T]
[--projector P]``: registered on the ``gguflite`` command by ``register(subparsers)``."""
from __future__ import annotations

import argparse
import sys

from ..errors import GGUFError
from .llava import OUTTYPES, convert_llava


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert-llava", help="convert a LLaVA checkpoint folder to an LLM GGUF + an mmproj GGUF",
        description="Convert a LLaVA-1.5/1.6, BakLLaVA, MobileVLM or llava-hf checkpoint folder into "
                    "<name>-<outtype>.gguf (the LLM) and mmproj-<name>-<outtype>.gguf (vision tower + "
                    "projector). The source folder is only read.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="the checkpoint folder (config.json, weights, tokenizer.model)")
    p.add_argument("--vision-tower", metavar="DIR", default=None,
                   help="CLIP folder for checkpoints without their own tower (LLaVA-1.5, MobileVLM); "
                        "default: config's mm_vision_tower if it is a local folder")
    p.add_argument("--outdir", metavar="DIR", default=None, help="output folder (default: the current directory)")
    p.add_argument("--outtype", choices=list(OUTTYPES), default="f16", help="type of the 2-D weights (default f16)")
    p.add_argument("--projector", choices=["auto", "mlp", "ldp", "ldpv2"], default="auto",
                   help="projector type (default: from config.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Errors (GGUFError, CheckpointError) propagate to ``gguflite.cli.main``, which prints
    them and exits 2."""
    llm, mmproj = convert_llava(args.model_dir, vision_tower=args.vision_tower, outdir=args.outdir,
                                outtype=args.outtype, projector=args.projector, progress=not args.quiet)
    print(llm)
    print(mmproj)
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point (``python -m gguflite.convert.cli convert-llava ...``), with
    the same error handling as ``gguflite``."""
    parser = argparse.ArgumentParser(prog="gguflite")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GGUFError as e:
        print(f"gguflite: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
