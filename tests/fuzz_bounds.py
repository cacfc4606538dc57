"""The bounds every fuzzer in tests/fuzz_*.py holds a reader to, on one input.

``run_bounded`` runs a reader over one file and asserts what the fuzzers promise for
every input, whatever its bytes: the reader either returns or raises its own error class
(nothing else), spends less than ``TIME_LIMIT`` seconds of CPU time (a wall-clock timer
stops runaway inputs at 10x), allocates no more than the file's size plus
``ALLOC_SLACK`` bytes (tracemalloc peak), and an error it raises names the file.  Each
fuzzer passes its own reader, error class and rule for "names the file".

No tests here (pytest collects fuzz_*.py; this module only holds the shared check).
"""
from __future__ import annotations

import os
import signal
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

TIME_LIMIT = 1.0  # CPU seconds per input (CPU, not wall-clock: the test machines are shared)
ALLOC_SLACK = 512 * 1024  # bytes allocated beyond the file's size (Python objects, parse state)


class InputTooSlow(Exception):
    """Raised from the interval timer when one input runs past TIME_LIMIT."""


@contextmanager
def time_limit(seconds: float):
    """Interrupt Python code running past ``seconds`` (SIGALRM; main thread only)."""

    def on_alarm(signum, frame):
        raise InputTooSlow(f"input took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def names_the_file(error: Exception, path) -> None:
    """The default rule: the error's message contains the file's path."""
    assert str(path) in str(error), f"error does not name the file: {error}"


@dataclass
class Bounded:
    """What one bounded run gave: the reader's result or its error (one is None)."""

    result: Any
    error: Exception | None
    peak: int  # tracemalloc peak, bytes
    seconds: float  # process CPU time


def run_bounded(path, use_everything: Callable[[Any], Any], error_class: type[Exception],
                names_file: Callable[[Exception, Any], None] = names_the_file) -> Bounded:
    """Run ``use_everything(path)`` under the bounds and assert them.

    An ``error_class`` exception is the reader refusing the file: it is returned (after
    ``names_file(error, path)`` checks that it says which file); any other exception
    propagates and fails the caller.
    """
    size = os.path.getsize(path)
    result = error = None
    tracemalloc.start()
    t0 = time.process_time()
    try:
        with time_limit(TIME_LIMIT * 10):  # wall-clock hard stop; the CPU-time bound is asserted below
            try:
                result = use_everything(path)
            except error_class as e:
                error = e
        seconds = time.process_time() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < TIME_LIMIT, f"{path}: {seconds:.2f} s"
    assert peak <= size + ALLOC_SLACK, f"{path}: peak allocation {peak} bytes for a {size}-byte file"
    if error is not None:
        names_file(error, path)
    return Bounded(result, error, peak, seconds)
