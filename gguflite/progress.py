"""The one-line progress bar of the long-running commands (requantize, convert-llava).

``bar(done, total, note="")`` redraws ``label [#####.....]  42%  1.20/2.90 GB  note`` on
stderr at most ten times a second, and ends the line when ``done`` reaches ``total``.
``sys.stderr`` is looked up at each draw, not bound once, so a caller that swaps it (a
test harness, an embedding application) gets the output where it expects it.
"""
from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, label: str, width: int = 30, interval: float = 0.1, stream=None):
        self.label, self.width, self.interval = label, width, interval
        self.stream = stream  # None: whatever sys.stderr is at each draw
        self.t0 = self.last = time.monotonic()

    def __call__(self, done: int, total: int, note: str = "") -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.interval:
            return
        self.last = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * self.width)
        scale, unit = (1e9, "GB") if total >= 1e9 else (1e6, "MB")
        out = self.stream or sys.stderr
        out.write(f"\r{self.label} [{bar:<{self.width}}] {frac:4.0%}  {done / scale:.2f}/{total / scale:.2f} {unit}"
                  f"  {now - self.t0:.0f}s  {note}")
        if done >= total:
            out.write("\n")
        out.flush()
