"""``python -m bench [NAME ...]``: run every ``bench/bench_*.py`` module's ``main()`` (or only
the named ones, e.g. ``python -m bench gguf``), one after the other."""
import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv=None) -> int:
    wanted = set(sys.argv[1:] if argv is None else argv)
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent))
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    unknown = sorted(w for w in wanted if w not in names and f"bench_{w}" not in names)
    if unknown:
        print(f"no benchmark named {', '.join(unknown)}; available: "
              + ", ".join(n[len("bench_"):] for n in names), file=sys.stderr)
        return 2
    status = 0
    for name in names:
        if wanted and name not in wanted and name[len("bench_"):] not in wanted:
            continue
        print(f"== bench.{name}", flush=True)
        rc = importlib.import_module(f"bench.{name}").main([])
        status = status or (rc or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
