"""SentencePiece tokenizer → ``tokenizer.ggml.*`` metadata (llama.cpp's "llama" vocab).

Sources, all in the checkpoint folder and all optional except ``tokenizer.model``:

- ``tokenizer.model``: the SentencePiece model; pieces, scores and piece types are read
  through the ``sentencepiece`` package, ``normalizer_spec.add_dummy_prefix`` (for
  ``add_space_prefix``) from the protobuf directly (no protobuf dependency).
- ``added_tokens.json`` (``{content: id}``) and ``tokenizer_config.json``
  (``added_tokens_decoder``: ``{id: {content, special}}``; ``add_bos_token``,
  ``add_eos_token``): tokens added after training, e.g. llava-hf's ``<image>``/``<pad>``.

The vocabulary has exactly ``n_vocab`` entries (the embedding's row count): SentencePiece
pieces, then added tokens at their ids (score -1000, type CONTROL if special else
USER_DEFINED), and ``[PAD{i}]`` (score -10000, type UNUSED) for rows no one names.  An
added token whose id is past the embedding is an error, as is an id used twice with
different text.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import CheckpointError
from ..types import ValueType
from .checkpoint import read_json

# llama.cpp llama_token_type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def tokenizer_metadata(folder, n_vocab: int, pad_token_id: int | None = None) -> list[tuple[str, object, object]]:
    """``[(key, value, type)]`` for ``GGUFWriter.add`` describing the tokenizer of ``folder``."""
    import sentencepiece

    path = os.path.join(os.fspath(folder), "tokenizer.model")
    if not os.path.isfile(path):
        raise CheckpointError("tokenizer.model not found (a SentencePiece tokenizer is required)", path=path)
    with open(path, "rb") as f:
        blob = f.read()
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(blob)
    except Exception as e:  # sentencepiece raises RuntimeError/OSError with its own text
        raise CheckpointError(f"not a SentencePiece model: {e}", path=path) from None
    n_sp = sp.GetPieceSize()
    if n_sp > n_vocab:
        raise CheckpointError(f"tokenizer has {n_sp} pieces but the embedding has only {n_vocab} rows", path=path)

    tokens: list[str | None] = [None] * n_vocab
    scores = np.full(n_vocab, -10000.0, np.float32)
    types = np.full(n_vocab, UNUSED, np.int32)
    for i in range(n_sp):
        tokens[i] = sp.IdToPiece(i)
        scores[i] = sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else
                    UNUSED if sp.IsUnused(i) else BYTE if sp.IsByte(i) else NORMAL)

    cfg_path = os.path.join(os.fspath(folder), "tokenizer_config.json")
    tok_cfg = read_json(cfg_path) if os.path.exists(cfg_path) else {}
    for tid, content, special, source in _added_tokens(folder, tok_cfg):
        if not 0 <= tid < n_vocab:
            raise CheckpointError(f"added token {content!r} has id {tid}, outside the {n_vocab}-row embedding", path=source)
        if tid < n_sp:
            if tokens[tid] != content:
                raise CheckpointError(f"added token {content!r} reuses id {tid} of piece {tokens[tid]!r}", path=source)
            continue
        if tokens[tid] is not None and tokens[tid] != content:
            raise CheckpointError(f"id {tid} is given to both {tokens[tid]!r} and {content!r}", path=source)
        tokens[tid] = content
        scores[tid] = -1000.0
        types[tid] = CONTROL if special else USER_DEFINED
    for i in range(n_vocab):
        if tokens[i] is None:
            tokens[i] = f"[PAD{i}]"

    meta = [
        ("tokenizer.ggml.model", "llama", ValueType.STRING),
        ("tokenizer.ggml.pre", "default", ValueType.STRING),
        ("tokenizer.ggml.tokens", tokens, (ValueType.ARRAY, ValueType.STRING)),
        ("tokenizer.ggml.scores", scores, (ValueType.ARRAY, ValueType.FLOAT32)),
        ("tokenizer.ggml.token_type", types, (ValueType.ARRAY, ValueType.INT32)),
    ]
    for key, tid in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unknown", sp.unk_id())):
        if tid >= 0:
            meta.append((f"tokenizer.ggml.{key}_token_id", tid, ValueType.UINT32))
    pad = pad_token_id if pad_token_id is not None and 0 <= pad_token_id < n_vocab else sp.pad_id()
    if pad is not None and pad >= 0:
        meta.append(("tokenizer.ggml.padding_token_id", int(pad), ValueType.UINT32))
    meta.append(("tokenizer.ggml.add_bos_token", bool(tok_cfg.get("add_bos_token", True)), ValueType.BOOL))
    meta.append(("tokenizer.ggml.add_eos_token", bool(tok_cfg.get("add_eos_token", False)), ValueType.BOOL))
    meta.append(("tokenizer.ggml.add_space_prefix", _add_dummy_prefix(blob, path), ValueType.BOOL))
    return meta


def _added_tokens(folder, tok_cfg):
    """``(id, content, special, source_path)`` from added_tokens.json and tokenizer_config.json."""
    out = []
    path = os.path.join(os.fspath(folder), "added_tokens.json")
    if os.path.exists(path):
        for content, tid in read_json(path).items():
            if not isinstance(tid, int) or isinstance(tid, bool):
                raise CheckpointError(f"token {content!r} has a non-integer id {tid!r}", path=path)
            out.append((tid, content, False, path))
    decoder = tok_cfg.get("added_tokens_decoder") or {}
    cfg_path = os.path.join(os.fspath(folder), "tokenizer_config.json")
    for tid, entry in decoder.items():
        try:
            tid = int(tid)
            content = entry["content"]
        except (TypeError, ValueError, KeyError):
            raise CheckpointError(f"malformed added_tokens_decoder entry {tid!r}", path=cfg_path) from None
        out.append((tid, content, bool(entry.get("special", False)), cfg_path))
    # tokenizer_config.json (later) knows "special"; let it win for the same id
    merged = {}
    for tid, content, special, src in out:
        if tid in merged and merged[tid][1] != content:
            raise CheckpointError(f"id {tid} is given to both {merged[tid][1]!r} and {content!r}", path=src)
        merged[tid] = (tid, content, special, src)
    return sorted(merged.values())


def _add_dummy_prefix(blob: bytes, path) -> bool:
    """``ModelProto.normalizer_spec (field 3).add_dummy_prefix (field 3)``; default true."""
    try:
        spec = _proto_field(blob, 3, wire_type=2)
        if spec is None:
            return True
        value = _proto_field(spec, 3, wire_type=0)
        return True if value is None else bool(value)
    except IndexError:
        raise CheckpointError("truncated SentencePiece protobuf", path=path) from None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def _proto_field(buf: bytes, number: int, wire_type: int):
    """The last value of top-level field ``number`` in a protobuf message (bytes for
    length-delimited, int for varint), or None.  IndexError on truncation."""
    pos, found = 0, None
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise IndexError("length past end")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise IndexError(f"unsupported wire type {wt}")
        if num == number and wt == wire_type:
            found = val
    return found
