"""The ``gguflite`` command.

    gguflite dump FILE [--json | --markdown]     metadata and tensors
    gguflite get FILE KEY                        one value (arrays as JSON)
    gguflite set FILE KEY VALUE [--type T]       set a key (an existing key keeps its type)
    gguflite rm FILE KEY [KEY ...]               delete keys
    gguflite diff A B [--no-data]                exit 1 when the files differ
    gguflite convert-endian FILE [--to ORDER] [-o OUT]
    gguflite split FILE [--max-tensors N] [--max-size SIZE] [-o STEM]
    gguflite merge FIRST_SHARD OUT

Subcommands come from ``SUBCOMMANDS``: modules exposing ``register(subparsers)``, each
parser setting ``func(args) -> int``.  They are imported when ``main()`` runs, and a
module that is not installed is left out without breaking the others.  Bad input prints
one line on stderr and exits 2 (``diff`` uses 1 for "different"); never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

import numpy as np

from .errors import GGUFError
from .types import TYPE_TRAITS, ValueType, type_name

# (module, what it adds): every module exposes register(subparsers)
SUBCOMMANDS = [
    ("gguflite.cli", "dump, get, set, rm, diff, convert-endian, split, merge"),
    ("gguflite.quant.cli", "requantize"),
    ("gguflite.convert.cli", "convert-llava"),
]

V = ValueType
EXIT_ERROR = 2


def _open(path):
    from .reader import open as gguf_open

    return gguf_open(path)


# --------------------------------------------------------------------------- values


def jsonable(v):
    """A metadata value as JSON-ready Python (arrays become lists)."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)) or type(v).__name__ in ("StringArray", "NestedArray"):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _short(v, limit: int = 6) -> str:
    if isinstance(v, (np.ndarray, list)) or type(v).__name__ in ("StringArray", "NestedArray"):
        items = [jsonable(x) for x in v[:limit]]
        more = f", ... ({len(v)} items)" if len(v) > limit else ""
        return "[" + ", ".join(json.dumps(x, ensure_ascii=False) for x in items) + more + "]"
    if isinstance(v, str):
        s = json.dumps(v, ensure_ascii=False)
        return s if len(s) <= 80 else s[:77] + '..."'
    return repr(v)


def _type_str(field) -> str:
    if field.type == V.ARRAY:
        return f"ARRAY[{field.elem_type.name}]"
    return field.type.name


_TYPE_ALIASES = {"u8": V.UINT8, "i8": V.INT8, "u16": V.UINT16, "i16": V.INT16, "u32": V.UINT32,
                 "i32": V.INT32, "f32": V.FLOAT32, "u64": V.UINT64, "i64": V.INT64, "f64": V.FLOAT64,
                 "str": V.STRING, "bool": V.BOOL}


def parse_type_arg(text: str):
    """``uint32``/``u32``, ``string``/``str``, ``array:u32`` -> ValueType or (ARRAY, elem)."""
    t = text.strip().lower()
    if t.startswith("array:") or t.startswith("array[") and t.endswith("]"):
        return (V.ARRAY, parse_type_arg(t[6:].rstrip("]")))
    if t in _TYPE_ALIASES:
        return _TYPE_ALIASES[t]
    try:
        return V[t.upper()]
    except KeyError:
        names = ", ".join(sorted(set(_TYPE_ALIASES) | {v.name.lower() for v in V}))
        raise ValueError(f"unknown value type {text!r}; use one of {names}, or array:TYPE") from None


def parse_value_text(text: str, vtype, etype=None):
    """The command-line text of a value, for a known type (None: guess from JSON)."""
    if vtype is None:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    if vtype == V.ARRAY:
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"an array value must be a JSON list: {e}") from None
        if not isinstance(items, list):
            raise ValueError("an array value must be a JSON list")
        return items
    if vtype == V.STRING:
        return text
    if vtype == V.BOOL:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"not a bool: {text!r} (true/false)")
    if vtype in (V.FLOAT32, V.FLOAT64):
        return float(text)
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


# --------------------------------------------------------------------------- commands


def cmd_dump(args) -> int:
    with _open(args.file) as f:
        if args.json:
            out = {
                "metadata": {k: jsonable(f.metadata[k]) for k in f.metadata},
                "tensors": [{"name": t.name, "shape": list(t.shape), "type": type_name(t.type), "offset": t.offset}
                            for t in f.tensors.values()],
            }
            json.dump(out, sys.stdout, ensure_ascii=True)
            print()
            return 0
        md = args.markdown
        print(f"# {f.path}" if md else f"{f.path}: GGUF v{f.version}, "
              f"{'big' if f.endian == '>' else 'little'}-endian, alignment {f.alignment}, "
              f"{len(f.fields)} keys, {len(f.tensors)} tensors")
        if md:
            print(f"\nGGUF v{f.version}, {'big' if f.endian == '>' else 'little'}-endian, alignment {f.alignment}\n")
            print("| key | type | value |\n|---|---|---|")
        for k, fld in f.fields.items():
            v = _short(f.metadata[k])
            if md:
                print(f"| {k} | {_type_str(fld)} | {v.replace('|', chr(92) + '|')} |")
            else:
                print(f"  {k:<40} {_type_str(fld):<16} {v}")
        if md:
            print("\n| # | tensor | type | shape | offset | bytes |\n|---|---|---|---|---|---|")
        for i, t in enumerate(f.tensors.values()):
            shape = "x".join(str(d) for d in t.shape) or "scalar"
            if md:
                print(f"| {i} | {t.name} | {t.type_name} | {shape} | {t.offset} | {t.nbytes} |")
            else:
                print(f"  {i:>4} {t.name:<48} {t.type_name:<8} {shape:<20} offset {t.offset:<12} {t.nbytes} bytes")
    return 0


def cmd_get(args) -> int:
    with _open(args.file) as f:
        if args.key not in f.fields:
            raise GGUFError("no such key", path=f.path, key=args.key)
        v = f.metadata[args.key]
        if isinstance(v, str):
            print(v)
        else:
            print(json.dumps(jsonable(v), ensure_ascii=False))
    return 0


def cmd_set(args) -> int:
    from .edit import Editor

    with Editor(args.file) as e:
        vtype = parse_type_arg(args.type) if args.type else None
        if vtype is None and args.key in e._kv:
            old = e._src.fields.get(args.key)
            vtype = old.type if old is not None else None
        etype = vtype[1] if isinstance(vtype, tuple) else None
        value = parse_value_text(args.value, vtype[0] if isinstance(vtype, tuple) else vtype, etype)
        e.set(args.key, value, vtype if args.type else None)
        e.commit()
    print(f"{args.file}: set {args.key} ({e.mode})", file=sys.stderr)
    return 0


def cmd_rm(args) -> int:
    from .edit import Editor

    with Editor(args.file) as e:
        for k in args.keys:
            e.delete(k)
        e.commit()
    return 0


def _values_equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return jsonable(a) == jsonable(b)


def cmd_diff(args) -> int:
    lines = []
    with _open(args.a) as fa, _open(args.b) as fb:
        for k in fa.fields:
            if k not in fb.fields:
                lines.append(f"- {k} = {_short(fa.metadata[k])}")
            elif _type_str(fa.fields[k]) != _type_str(fb.fields[k]):
                lines.append(f"~ {k}: type {_type_str(fa.fields[k])} -> {_type_str(fb.fields[k])}")
            elif not _values_equal(fa.metadata[k], fb.metadata[k]):
                lines.append(f"~ {k}: {_short(fa.metadata[k])} -> {_short(fb.metadata[k])}")
        lines += [f"+ {k} = {_short(fb.metadata[k])}" for k in fb.fields if k not in fa.fields]
        for name, ta in fa.tensors.items():
            tb = fb.tensors.get(name)
            if tb is None:
                lines.append(f"- tensor {name} {ta.type_name} {list(ta.shape)}")
            elif (ta.type, ta.shape) != (tb.type, tb.shape):
                lines.append(f"~ tensor {name}: {ta.type_name} {list(ta.shape)} -> {tb.type_name} {list(tb.shape)}")
            elif not args.no_data and not _tensor_data_equal(ta, tb):
                lines.append(f"~ tensor {name}: data differs")
        lines += [f"+ tensor {n} {t.type_name} {list(t.shape)}" for n, t in fb.tensors.items() if n not in fa.tensors]
    for line in lines:
        print(line)
    return 1 if lines else 0


def _tensor_data_equal(ta, tb) -> bool:
    if ta.file.endian == tb.file.endian or TYPE_TRAITS.get(ta.type) is None or TYPE_TRAITS[ta.type].dtype is None:
        if ta.file.endian != tb.file.endian:
            from .endian import can_swap, swap_tensor_bytes

            if not can_swap(ta.type):
                return False
            return np.array_equal(swap_tensor_bytes(ta.raw, ta.type), tb.raw)
        return np.array_equal(ta.raw, tb.raw)
    return np.array_equal(ta.data, tb.data, equal_nan=ta.data.dtype.kind == "f")


def cmd_convert_endian(args) -> int:
    from .endian import convert_endian

    out = convert_endian(args.file, args.output or args.file, args.to)
    print(out)
    return 0


def _size(text: str) -> int:
    t = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G)") from None


def cmd_split(args) -> int:
    from .split import split_file

    if not args.max_tensors and not args.max_size:
        raise ValueError("give --max-tensors or --max-size")
    for p in split_file(args.file, args.output, max_tensors=args.max_tensors, max_size=args.max_size):
        print(p)
    return 0


def cmd_merge(args) -> int:
    from .split import merge_files

    print(merge_files(args.first, args.out))
    return 0


def register(subparsers) -> None:
    """The built-in subcommands."""
    p = subparsers.add_parser("dump", help="show metadata and tensors")
    p.add_argument("file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help='{"metadata": {...}, "tensors": [{name, shape, type, offset}]}')
    g.add_argument("--markdown", action="store_true", help="markdown tables")
    p.set_defaults(func=cmd_dump)

    p = subparsers.add_parser("get", help="print one metadata value")
    p.add_argument("file")
    p.add_argument("key")
    p.set_defaults(func=cmd_get)

    p = subparsers.add_parser("set", help="set a metadata key (in place when the size allows)")
    p.add_argument("file")
    p.add_argument("key")
    p.add_argument("value", help="the value; arrays as a JSON list")
    p.add_argument("--type", help="uint8..float64 (u32, i32, f32, ...), bool, string, array:TYPE; "
                                  "default: the key's current type, else guessed from the value")
    p.set_defaults(func=cmd_set)

    p = subparsers.add_parser("rm", help="delete metadata keys")
    p.add_argument("file")
    p.add_argument("keys", nargs="+", metavar="key")
    p.set_defaults(func=cmd_rm)

    p = subparsers.add_parser("diff", help="compare two files; exit 1 when they differ")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--no-data", action="store_true", help="compare tensor names, types and shapes only")
    p.set_defaults(func=cmd_diff)

    p = subparsers.add_parser("convert-endian", help="rewrite a file in another byte order")
    p.add_argument("file")
    p.add_argument("--to", default="swap", choices=["little", "big", "native", "swap"])
    p.add_argument("-o", "--output", help="output file (default: replace FILE atomically)")
    p.set_defaults(func=cmd_convert_endian)

    p = subparsers.add_parser("split", help="split into -0000i-of-0000N.gguf shards")
    p.add_argument("file")
    p.add_argument("--max-tensors", type=int, default=None)
    p.add_argument("--max-size", type=_size, default=None, help="max tensor bytes per shard, e.g. 2G")
    p.add_argument("-o", "--output", help="shard name stem (default: FILE without .gguf)")
    p.set_defaults(func=cmd_split)

    p = subparsers.add_parser("merge", help="merge a split model into one file")
    p.add_argument("first", help="any shard of the split model")
    p.add_argument("out")
    p.set_defaults(func=cmd_merge)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gguflite", description="Inspect, edit and convert GGUF files.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for modname, _ in SUBCOMMANDS:
        try:
            mod = sys.modules[__name__] if modname == __name__ else importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name and modname.startswith(e.name):
                continue  # that module is not there (yet): its subcommands are left out
            _register_broken(sub, modname, e)
            continue
        except Exception as e:  # noqa: BLE001  (a broken module must not break the others)
            _register_broken(sub, modname, e)
            continue
        mod.register(sub)
    return parser


def _register_broken(sub, modname: str, err: Exception) -> None:
    name = dict(SUBCOMMANDS)[modname]
    for cmd in [c.strip() for c in name.split(",")]:
        p = sub.add_parser(cmd, help=f"(unavailable: {modname} failed to import)")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, e=err, m=modname: _fail(f"{m} cannot be imported: {type(e).__name__}: {e}"))


def _fail(msg: str) -> int:
    print(f"gguflite: error: {msg}", file=sys.stderr)
    return EXIT_ERROR


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GGUFError as e:
        return _fail(str(e))
    except BrokenPipeError:  # `gguflite dump big.gguf | head`
        return 0
    except (OSError, ValueError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("gguflite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
