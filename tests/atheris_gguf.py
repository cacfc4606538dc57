"""Coverage-guided fuzzing of the GGUF reader with atheris (libFuzzer for Python).

    pip install atheris          # not a project dependency; builds a wheel on Linux x86-64
    mkdir -p /tmp/gguf-corpus && cp tests/fuzz_corpus/*.gguf /tmp/gguf-corpus/
    python tests/atheris_gguf.py /tmp/gguf-corpus -max_total_time=600 -timeout=1 -rss_limit_mb=2048 \
        -artifact_prefix=/tmp/gguf-crash-

(Give libFuzzer a scratch copy of the corpus: it writes the new inputs it finds into the
first corpus folder.)  Each input goes through the same property as tests/fuzz_gguf.py
(``run_input``: open, touch every value and tensor, validate; only GGUFError; within one
second and the file's size plus a constant of allocations); anything else is reported as
a crash with the input saved by libFuzzer.  Set ATHERIS_FAST=1 to skip the tracemalloc
and gguf-py checks (several times more inputs per second).

``TestOneInput`` is importable without atheris (tests/fuzz_gguf.py runs it over the corpus).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_DIR = Path(tempfile.mkdtemp(prefix="atheris_gguf_"))
_PATH = _DIR / "input.gguf"
FAST = bool(os.environ.get("ATHERIS_FAST"))


def TestOneInput(data: bytes) -> None:  # noqa: N802  (the name atheris looks for)
    from gguflite import GGUFError
    from tests.fuzz_gguf import check_bytes, use_everything

    if FAST:
        _PATH.write_bytes(data)
        try:
            use_everything(_PATH)
        except GGUFError:
            pass
    else:
        check_bytes(data, _PATH)


def main(argv=None) -> None:
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install atheris (Linux x86-64 wheels; else a clang build)")
    with atheris.instrument_imports(include=["gguflite"]):
        import gguflite  # noqa: F401
        import gguflite.reader  # noqa: F401
        import gguflite.split  # noqa: F401
    import tests.fuzz_gguf  # noqa: F401  (imported once, outside the timed inputs)

    atheris.Setup(sys.argv if argv is None else argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
