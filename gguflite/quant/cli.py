"""``gguflite requantize IN OUT --type q4_k_m``: the command-line face of
``gguflite.quant.requantize`` (type choice per tensor documented there)."""
from __future__ import annotations

import sys

from ..progress import ProgressBar
from .requantize import SCHEMES, requantize


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "requantize",
        help="rewrite a file with its weights quantized (llama.cpp's per-tensor type rules)",
        description="Quantize the weights of IN into OUT (written atomically). 1-D and norm "
        "tensors are copied unchanged; output.weight and, for the _m types, some attn_v / "
        "ffn_down layers get Q6_K, as llama-quantize does (see gguflite/quant/requantize.py).",
    )
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--type", required=True, type=str.lower, choices=sorted(SCHEMES), metavar="TYPE",
                   help="one of: " + ", ".join(SCHEMES))
    p.add_argument("--allow-requantize", action="store_true",
                   help="accept already-quantized weights (dequantized first; loses quality)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_requantize)


def cmd_requantize(args) -> int:
    targets = requantize(args.input, args.output, args.type, allow_requantize=args.allow_requantize,
                         progress=None if args.quiet else ProgressBar("requantize"))
    n = sum(t is not None for t in targets.values())
    print(f"{args.output}: {n} of {len(targets)} tensors quantized ({args.type})", file=sys.stderr)
    return 0
