"""The LLaMA SentencePiece tokenizer, rebuilt from a GGUF vocabulary.

A GGUF file of a LLaMA-family model keeps the pieces of the original ``tokenizer.model``
(``tokenizer.ggml.tokens``), their scores and their types (1 normal, 2 unknown, 3 control,
4 user-defined, 5 unused, 6 byte: the same numbers SentencePiece uses).  From those we
serialise a SentencePiece ``ModelProto`` (BPE, byte fallback, identity normaliser, the
``add_space_prefix`` and ``remove_extra_whitespaces`` flags of the file) and let the
``sentencepiece`` library encode and decode: the result is the original tokenizer, not an
imitation of it.  The proto is written by hand (a dozen fields), so no protobuf package is
needed.

Tokens that are not part of the trained model (llava-hf's ``<image>``, other added tokens)
are matched in the text by us, as llama.cpp does: user-defined tokens always, control tokens
(``<s>``, ``</s>``, added specials) only with ``parse_special=True``.  Each piece of raw text
between them is encoded separately, so it gets SentencePiece's space prefix, as llama.cpp's
SPM tokenizer and LLaVA's per-chunk ``tokenizer_image_token`` do.
"""
from __future__ import annotations

import re
import struct
from typing import Iterable, Mapping

import numpy as np

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2  # TrainerSpec.ModelType


class TokenizerError(ValueError):
    """The vocabulary in a file cannot make a tokenizer (missing keys, wrong lengths, ...)."""


# --- a minimal protobuf writer (proto2 wire format) --------------------------------------

def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int32/int64 negatives are 10-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_varint(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(int(value))


def _field_bytes(num: int, data: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def _field_float(num: int, value: float) -> bytes:
    return _varint((num << 3) | 5) + struct.pack("<f", value)


def build_model_proto(tokens, scores, types, *, unk_id: int, bos_id: int, eos_id: int,
                      pad_id: int = -1, add_dummy_prefix: bool = True,
                      remove_extra_whitespaces: bool = False, byte_fallback: bool = True) -> bytes:
    """Serialise a SentencePiece BPE ``ModelProto`` with these pieces (sentencepiece_model.proto:
    ModelProto.pieces 1, trainer_spec 2, normalizer_spec 3; SentencePiece piece 1, score 2,
    type 3)."""
    out = bytearray()
    for piece, score, typ in zip(tokens, scores, types):
        sp = _field_bytes(1, piece.encode("utf-8")) + _field_float(2, float(score))
        if typ != NORMAL:
            sp += _field_varint(3, typ)
        out += _field_bytes(1, sp)
    trainer = (
        _field_varint(3, _BPE)                       # model_type
        + _field_varint(4, len(tokens))               # vocab_size
        + _field_varint(35, bool(byte_fallback))      # byte_fallback
        + _field_varint(40, unk_id) + _field_varint(41, bos_id)
        + _field_varint(42, eos_id) + _field_varint(43, pad_id)
    )
    normalizer = (
        _field_bytes(1, b"identity")                  # name
        + _field_varint(3, bool(add_dummy_prefix))
        + _field_varint(4, bool(remove_extra_whitespaces))
        + _field_varint(5, True)                      # escape_whitespaces ("▁")
    )
    out += _field_bytes(2, trainer) + _field_bytes(3, normalizer)
    return bytes(out)


# --- the tokenizer -----------------------------------------------------------------------

class Tokenizer:
    """Encode/decode with the vocabulary of a GGUF file.  Ids are plain Python ints."""

    def __init__(self, tokens: list, scores, types, *, bos_id: int, eos_id: int, unk_id: int,
                 add_bos: bool = True, add_eos: bool = False, add_space_prefix: bool = True,
                 remove_extra_whitespaces: bool = False, pad_id: int | None = None):
        import sentencepiece

        n = len(tokens)
        scores = np.asarray(scores, dtype=np.float32)
        types = np.asarray(types, dtype=np.int64)
        if scores.shape != (n,) or types.shape != (n,):
            raise TokenizerError(f"{n} tokens but {scores.size} scores and {types.size} types")
        bad = sorted(set(types.tolist()) - {NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE})
        if bad:
            raise TokenizerError(f"unknown token types {bad}")
        for name, tid in (("bos", bos_id), ("eos", eos_id), ("unknown", unk_id)):
            if not 0 <= tid < n:
                raise TokenizerError(f"{name} token id {tid} outside the vocabulary of {n}")
        if int((types == UNKNOWN).sum()) != 1:
            raise TokenizerError(f"the vocabulary needs exactly one unknown token, has {int((types == UNKNOWN).sum())}")
        self.tokens = list(tokens)
        self.types = types
        self.bos_id, self.eos_id, self.unk_id, self.pad_id = int(bos_id), int(eos_id), int(unk_id), pad_id
        self.add_bos, self.add_eos = bool(add_bos), bool(add_eos)
        proto = build_model_proto(
            self.tokens, scores, types.tolist(), unk_id=self.unk_id, bos_id=self.bos_id,
            eos_id=self.eos_id, add_dummy_prefix=add_space_prefix,
            remove_extra_whitespaces=remove_extra_whitespaces,
            byte_fallback=bool((types == BYTE).any()))
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(proto)
        except Exception as e:  # sentencepiece reports duplicates etc. as RuntimeError/OSError
            raise TokenizerError(f"sentencepiece rejected the vocabulary: {e}") from None
        if self._sp.GetPieceSize() != n:
            raise TokenizerError(f"sentencepiece kept {self._sp.GetPieceSize()} of {n} pieces")
        self._user = self._matcher(types == USER_DEFINED)
        self._user_and_control = self._matcher((types == USER_DEFINED) | (types == CONTROL))

    def _matcher(self, mask: np.ndarray):
        texts = {self.tokens[i]: i for i in np.flatnonzero(mask).tolist() if self.tokens[i]}
        if not texts:
            return None
        pattern = "|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True))
        return re.compile(pattern), texts

    @classmethod
    def from_metadata(cls, meta: Mapping, path=None) -> "Tokenizer":
        """From ``tokenizer.ggml.*`` metadata (a ``GGUFFile.metadata`` or a plain dict)."""
        where = f"{path}: " if path else ""
        model = meta.get("tokenizer.ggml.model")
        if model != "llama":
            raise TokenizerError(f"{where}tokenizer.ggml.model is {model!r}; only SentencePiece 'llama' is supported")
        try:
            tokens = list(meta["tokenizer.ggml.tokens"])
            scores = np.asarray(meta["tokenizer.ggml.scores"], dtype=np.float32)
            types = np.asarray(meta["tokenizer.ggml.token_type"], dtype=np.int64)
        except KeyError as e:
            raise TokenizerError(f"{where}missing key {e.args[0]}") from None
        try:
            return cls(
                tokens, scores, types,
                bos_id=int(meta.get("tokenizer.ggml.bos_token_id", 1)),
                eos_id=int(meta.get("tokenizer.ggml.eos_token_id", 2)),
                unk_id=int(meta.get("tokenizer.ggml.unknown_token_id", 0)),
                pad_id=meta.get("tokenizer.ggml.padding_token_id"),
                add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
                add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
                add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)),
                remove_extra_whitespaces=bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False)),
            )
        except TokenizerError as e:
            raise TokenizerError(f"{where}{e}") from None

    @classmethod
    def from_gguf(cls, path) -> "Tokenizer":
        import gguflite

        with gguflite.open(path) as f:
            return cls.from_metadata(f.metadata, path=path)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False,
               add_eos: bool | None = None) -> list:
        """Token ids of ``text``; ``add_bos``/``add_eos`` default to the file's
        ``add_bos_token``/``add_eos_token``."""
        ids = [self.bos_id] if (self.add_bos if add_bos is None else add_bos) else []
        matcher = self._user_and_control if parse_special else self._user
        if matcher is None:
            ids += self._sp.EncodeAsIds(text) if text else []
        else:
            pattern, texts = matcher
            pos = 0
            for m in pattern.finditer(text):
                if m.start() > pos:
                    ids += self._sp.EncodeAsIds(text[pos:m.start()])
                ids.append(texts[m.group()])
                pos = m.end()
            if pos < len(text):
                ids += self._sp.EncodeAsIds(text[pos:])
        if self.add_eos if add_eos is None else add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; control tokens (BOS, EOS, ...) decode to nothing."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < len(self.tokens):
                raise TokenizerError(f"token id {i} outside the vocabulary of {len(self.tokens)}")
        return self._sp.DecodeIds(ids)

    def piece(self, token_id: int) -> str:
        return self.tokens[token_id]

    def is_control(self, token_id: int) -> bool:
        return int(self.types[token_id]) == CONTROL


class StreamDecoder:
    """Turns generated ids into text pieces as they arrive.

    SentencePiece decodes a sequence, not a token (the leading "▁" is dropped only at the
    start; byte pieces form characters together), so we decode everything so far and emit
    the new suffix, holding back an incomplete UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list = []
        self.text = ""

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        full = self.tokenizer.decode(self.ids)
        if full.endswith("\ufffd"):
            return ""
        new = full[len(self.text):]
        self.text = full
        return new

    def flush(self) -> str:
        full = self.tokenizer.decode(self.ids)
        new = full[len(self.text):]
        self.text = full
        return new
