"""``gguflite requantize IN OUT --type q4_k_m``: the command-line face of
``gguflite.quant.requantize`` (type choice per tensor documented there)."""
from __future__ import annotations

import sys
import time

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


class ProgressBar:
    """``requantize [#####.....]  42%  1.20/2.90 GB`` on stderr, redrawn at most 10 times a second."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream, self.width, self.last = stream, width, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * self.width)
        scale, unit = (1e9, "GB") if total >= 1e9 else (1e6, "MB")
        self.stream.write(f"\rrequantize [{bar:<{self.width}}] {frac:4.0%}  {done / scale:.2f}/{total / scale:.2f} {unit}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def cmd_requantize(args) -> int:
    targets = requantize(args.input, args.output, args.type, allow_requantize=args.allow_requantize,
                         progress=None if args.quiet else ProgressBar())
    n = sum(t is not None for t in targets.values())
    print(f"{args.output}: {n} of {len(targets)} tensors quantized ({args.type})", file=sys.stderr)
    return 0
