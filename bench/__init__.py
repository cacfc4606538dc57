"""Benchmarks: each ``bench/bench_*.py`` module has a ``main(argv=None) -> int``; run them
all with ``python -m bench`` (or ``make bench``), or one with ``python -m bench.bench_gguf``."""
