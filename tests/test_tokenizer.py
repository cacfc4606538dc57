"""ggml_bind.tokenizer against the original SentencePiece model it was rebuilt from.

The "original" is a LLaMA-style BPE tokenizer.model trained here with sentencepiece (LLaMA's
trainer settings); the GGUF vocabulary is produced from it by the `gguf` package's
SentencePieceVocab (llama.cpp's converter logic) and, end to end, by our converter."""
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sentencepiece as spm
import gguf

from ggml_bind.tokenizer import StreamDecoder, Tokenizer, TokenizerError  # noqa: E402

CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "USER: Describe the image. ASSISTANT: a red circle left of a blue square",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "numbers 0123456789, symbols !?()[]{}<>, accents naïve café, 東京 and emoji 🙂",
    "    indented code\n\tand tabs\n\n",
]


def train_spm(vocab_size=420, add_dummy_prefix=True) -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 40), model_writer=out, model_type="bpe",
        vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=add_dummy_prefix, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        num_threads=1, minloglevel=2)
    return out.getvalue()


def gguf_vocab(folder):
    """tokens/scores/types as llama.cpp's converter makes them (gguf.vocab.SentencePieceVocab)."""
    vocab = gguf.vocab.SentencePieceVocab(folder)
    tokens, scores, types = [], [], []
    for text, score, typ in vocab.all_tokens():
        tokens.append(text.decode("utf-8"))
        scores.append(score)
        types.append(int(typ))
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, np.float32),
        "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    (folder / "tokenizer.model").write_bytes(train_spm())
    return folder


@pytest.fixture(scope="module")
def original(model_dir):
    return spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))


@pytest.fixture(scope="module")
def tok(model_dir):
    return Tokenizer.from_metadata(gguf_vocab(model_dir))


@pytest.fixture(scope="module")
def tok_with_image(tmp_path_factory, model_dir):
    # llava-hf style: <image> added after the trained pieces (added_tokens.json)
    folder = tmp_path_factory.mktemp("spm_added")
    (folder / "tokenizer.model").write_bytes((model_dir / "tokenizer.model").read_bytes())
    n = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).vocab_size()
    (folder / "added_tokens.json").write_text(json.dumps({"<image>": n}))
    return Tokenizer.from_metadata(gguf_vocab(folder)), n


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_encoding_equals_the_original_tokenizer_model_on_any_text(tok, original, text):
    assert tok.encode(text, add_bos=False) == original.encode(text)


@given(st.text(alphabet=st.sampled_from(list(" \n\tabcdeé東🙂0123456789.<>/s")), max_size=80))
@settings(max_examples=300)
def test_encoding_equals_the_original_on_whitespace_and_digit_heavy_text(tok, original, text):
    assert tok.encode(text, add_bos=False) == original.encode(text)


@given(st.text(max_size=120))
def test_decoding_equals_the_original(tok, original, text):
    ids = original.encode(text)
    assert tok.decode(ids) == original.decode(ids)


def test_bos_is_added_by_default_and_control_tokens_decode_to_nothing(tok, original):
    ids = tok.encode("Describe the image.")
    assert ids[0] == 1 and ids[1:] == original.encode("Describe the image.")
    assert tok.decode(ids + [2]) == "Describe the image."


def test_control_tokens_in_text_are_parsed_only_when_asked(tok, original):
    text = "<s>hello</s> world"
    assert tok.encode(text, add_bos=False) == original.encode(text)
    special = tok.encode(text, add_bos=False, parse_special=True)
    assert special == [1] + original.encode("hello") + [2] + original.encode(" world")


def test_added_user_defined_token_is_matched_and_text_around_it_is_encoded_per_chunk(tok_with_image, original):
    tok, image_id = tok_with_image
    assert tok.n_vocab == image_id + 1
    text = "USER: <image>\nDescribe the image."
    before, after = text.split("<image>")
    # LLaVA's tokenizer_image_token: each chunk encoded on its own
    assert tok.encode(text, add_bos=False) == original.encode(before) + [image_id] + original.encode(after)
    # the chunk after the image got SentencePiece's space prefix, and decodes with it
    assert tok.decode(tok.encode(text)) == "USER: <image> \nDescribe the image."


def test_special_ids_come_from_the_metadata(model_dir, original):
    meta = gguf_vocab(model_dir)
    meta["tokenizer.ggml.bos_token_id"] = 2
    meta["tokenizer.ggml.eos_token_id"] = 1
    meta["tokenizer.ggml.add_bos_token"] = False
    meta["tokenizer.ggml.add_eos_token"] = True
    tok = Tokenizer.from_metadata(meta)
    assert (tok.bos_id, tok.eos_id) == (2, 1)
    assert tok.encode("hi") == original.encode("hi") + [1]
    assert tok.encode("hi", add_bos=True, add_eos=False) == [2] + original.encode("hi")


def test_space_prefix_flag_is_honoured(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(train_spm(add_dummy_prefix=False))
    original = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    meta = gguf_vocab(tmp_path)
    meta["tokenizer.ggml.add_space_prefix"] = False
    tok = Tokenizer.from_metadata(meta)
    for text in ["hello world", " lead", "a\nb"]:
        assert tok.encode(text, add_bos=False) == original.encode(text)
    assert tok.encode("hello", add_bos=False) != Tokenizer.from_metadata(
        {**meta, "tokenizer.ggml.add_space_prefix": True}).encode("hello", add_bos=False)


@given(st.lists(st.integers(0, 419), max_size=60))
def test_streamed_text_concatenates_to_the_full_decode(tok, ids):
    ids = [i for i in ids if i < tok.n_vocab]
    dec = StreamDecoder(tok)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces[:-1]) or "\ufffd" in tok.decode(ids)


def test_a_gguf_file_written_by_the_gguf_package_loads(tmp_path, model_dir, original):
    meta = gguf_vocab(model_dir)
    w = gguf.GGUFWriter(tmp_path / "v.gguf", "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(meta["tokenizer.ggml.tokens"])
    w.add_token_scores(meta["tokenizer.ggml.scores"].tolist())
    w.add_token_types(meta["tokenizer.ggml.token_type"].tolist())
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = Tokenizer.from_gguf(tmp_path / "v.gguf")
    text = "A chat between a curious human 東京 🙂 123"
    assert tok.encode(text) == [1] + original.encode(text)


def test_our_converter_metadata_gives_the_same_tokenizer(model_dir, tok):
    from gguflite.convert import tokenizer as conv
    n = tok.n_vocab + 3  # an embedding with padding rows
    meta = {key: value for key, value, _ in conv.tokenizer_metadata(model_dir, n)}
    ours = Tokenizer.from_metadata(meta)
    assert ours.n_vocab == n
    for text in CORPUS + ["[PAD420] x", "  two  spaces"]:
        assert ours.encode(text) == tok.encode(text)


def test_bad_vocabularies_raise_tokenizer_error(model_dir):
    meta = gguf_vocab(model_dir)
    with pytest.raises(TokenizerError, match="tokenizer.ggml.scores"):
        Tokenizer.from_metadata({k: v for k, v in meta.items() if k != "tokenizer.ggml.scores"}, path="m.gguf")
    with pytest.raises(TokenizerError, match="gpt2"):
        Tokenizer.from_metadata({**meta, "tokenizer.ggml.model": "gpt2"})
    dup = list(meta["tokenizer.ggml.tokens"])
    dup[10] = dup[11]
    with pytest.raises(TokenizerError, match="sentencepiece rejected"):
        Tokenizer.from_metadata({**meta, "tokenizer.ggml.tokens": dup})
    with pytest.raises(TokenizerError, match="scores"):
        Tokenizer.from_metadata({**meta, "tokenizer.ggml.scores": meta["tokenizer.ggml.scores"][:-1]})
    with pytest.raises(TokenizerError, match="bos"):
        Tokenizer.from_metadata({**meta, "tokenizer.ggml.bos_token_id": 10**6})
    tok = Tokenizer.from_metadata(meta)
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([10**6])
