"""The Python API: a LLaVA model pair (LLM GGUF + mmproj GGUF) loaded once, then images to
embeddings and prompts to answers.

    from ggml_bind.llava import LlavaModel

    m = LlavaModel.load("llava-v1.5-7b-f16.gguf", "mmproj-llava-v1.5-7b-f16.gguf", device="cpu")
    emb = m.encode_image("cat.jpg")                      # numpy (n_tokens, n_embd)
    for piece in m.generate("What is in the picture?", images=["cat.jpg"], max_tokens=64, stream=True):
        print(piece, end="", flush=True)
    print(m.generate("Describe it.", images=[emb]))      # precomputed embeddings work too
    m.logits("The capital of France is")                 # text only, last position

``generate`` wraps the prompt in the model's template (LLaVA-1.5/1.6-vicuna/MobileVLM:
``vicuna_v1``; LLaVA-1.6-mistral: ``mistral_instruct``; ``template="raw"`` sends the text as
it is, ``<image>`` marking where each image goes).  The prompt is evaluated chunk by chunk,
text tokens and image embeddings in order, BOS first, as LLaVA's ``tokenizer_image_token``
and llama.cpp's mtmd helper do.  ``m.timings`` holds the last call's load / encode / prompt /
eval times.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from .errors import GGMLError
from .llama import ContextFullError
from .prompts import ImageSlot, get_template, split_prompt
from .sampling import Sampler, SamplingParams, StopStrings
from .tokenizer import StreamDecoder


class LlavaError(GGMLError, ValueError):
    """A model pair that does not fit together, or a call that cannot be served."""


_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed")


class LlavaModel:
    """A loaded LLM + mmproj pair.  Build with :meth:`load`."""

    def __init__(self, llm, encoder, tokenizer, template: str, timings: dict):
        self.llm = llm
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.timings = dict(timings)

    @classmethod
    def load(cls, llm_gguf, mmproj_gguf, device: str = "cpu", n_threads: int | None = None, *,
             n_ctx: int | None = None, template: str | None = None, image_mode: str | None = None,
             kv_type: str = "f16", flash_attn: bool | None = None) -> "LlavaModel":
        """Load both files on ``device`` ("cpu", "cuda", "cuda:N").

        Raises LlavaError when the projector's output width is not the LLM's embedding width,
        GGMLError subclasses for files ggml cannot run, gguflite.GGUFError for broken files.
        """
        from .backend import Backend
        from .clip import ClipEncoder
        from .llama import LlamaModel
        from .tokenizer import Tokenizer

        t0 = time.perf_counter()
        backend = Backend(device, n_threads=n_threads)
        encoder = ClipEncoder(mmproj_gguf, backend, image_mode=image_mode)
        try:
            llm = LlamaModel(llm_gguf, backend, n_ctx=n_ctx, kv_type=kv_type, flash_attn=flash_attn)
        except BaseException:
            encoder.free()
            raise
        if encoder.params.n_out != llm.params.n_embd:
            encoder.free()
            llm.free()
            raise LlavaError(
                f"the projector of {mmproj_gguf} outputs {encoder.params.n_out}-wide embeddings but the LLM "
                f"{llm_gguf} is {llm.params.n_embd} wide: these files do not belong together")
        try:
            tokenizer = Tokenizer.from_gguf(llm_gguf)
            if tokenizer.n_vocab != llm.params.n_vocab:
                raise LlavaError(f"{llm_gguf}: {tokenizer.n_vocab} tokens in the vocabulary but "
                                 f"{llm.params.n_vocab} embedding rows")
        except BaseException:
            encoder.free()
            llm.free()
            raise
        if template is None:
            name = str(llm.metadata.get("general.name", "")).lower()
            template = "mistral_instruct" if "mistral" in name and "bakllava" not in name else "vicuna_v1"
        return cls(llm, encoder, tokenizer, template, {"load_ms": (time.perf_counter() - t0) * 1e3})

    # ------------------------------------------------------------------ images
    def encode_image(self, image) -> np.ndarray:
        """Embeddings the LLM receives for one image (a path, bytes, PIL image or uint8
        array): float32 (n_tokens, n_embd)."""
        from .preprocess import preprocess

        t0 = time.perf_counter()
        out = self.encoder.encode(preprocess(image, self.encoder.params.image))
        self.timings["image_encode_ms"] = self.timings.get("image_encode_ms", 0.0) + (time.perf_counter() - t0) * 1e3
        return out

    def _image_embeddings(self, image) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.dtype.kind == "f":
            if image.ndim != 2 or image.shape[1] != self.llm.params.n_embd:
                raise LlavaError(f"image embeddings must be (n, {self.llm.params.n_embd}) float, got {image.shape}")
            return image.astype(np.float32)
        return self.encode_image(image)

    # ------------------------------------------------------------------ prompts
    def format_prompt(self, prompt: str, n_images: int, template: str | None = None, system: str | None = None) -> str:
        t = self.template if template is None else get_template(template)
        return t.render(prompt, n_images, system=system)

    def _evaluate_prompt(self, text: str, images: list) -> tuple:
        """Reset the cache and evaluate the prompt; returns (last logits, prompt token ids)."""
        parts = split_prompt(text, len(images))
        embeds = {i: self._image_embeddings(img) for i, img in enumerate(images)}
        seq: list = []
        ids = [self.tokenizer.bos_id] if self.tokenizer.add_bos else []
        for part in parts:
            if isinstance(part, ImageSlot):
                if ids:
                    seq.append(("tokens", ids))
                    ids = []
                seq.append(("embd", embeds[part.index]))
            else:
                ids += self.tokenizer.encode(part, add_bos=False, add_eos=False)
        if ids:
            seq.append(("tokens", ids))
        total = sum(len(x) for _, x in seq)
        if total == 0:
            raise LlavaError("the prompt is empty")
        if total > self.llm.n_ctx:
            raise ContextFullError(
                f"the prompt needs {total} tokens (images included) but the context holds {self.llm.n_ctx}")
        self.llm.reset()
        t0 = time.perf_counter()
        logits = None
        for kind, x in seq:
            logits = self.llm.eval_tokens(x) if kind == "tokens" else self.llm.eval_embeddings(x)
        self.timings["prompt_ms"] = (time.perf_counter() - t0) * 1e3
        self.timings["prompt_tokens"] = total
        history = [t for kind, x in seq if kind == "tokens" for t in x]
        return logits, history

    # ------------------------------------------------------------------ generation
    def generate_tokens(self, prompt: str, images=(), max_tokens: int = 256, template: str | None = None,
                        **sampling) -> Iterator[int]:
        """Token ids of the answer, one at a time, until EOS (not yielded), ``max_tokens``
        or a full context."""
        unknown = set(sampling) - set(_SAMPLING_KEYS)
        if unknown:
            raise TypeError(f"unknown sampling options {sorted(unknown)}; known: {', '.join(_SAMPLING_KEYS)}")
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        sampler = Sampler(SamplingParams(**sampling))
        images = list(images)
        self.timings["image_encode_ms"] = 0.0
        text = self.format_prompt(prompt, len(images), template)
        logits, history = self._evaluate_prompt(text, images)
        n_eval, t_eval = 0, 0.0
        try:
            for _ in range(max_tokens):
                tok = sampler.sample(logits, history)
                if tok == self.tokenizer.eos_id:
                    return
                history.append(tok)
                yield tok
                if self.llm.n_past >= self.llm.n_ctx:
                    return
                t0 = time.perf_counter()
                logits = self.llm.eval_tokens([tok])
                t_eval += time.perf_counter() - t0
                n_eval += 1
        finally:
            self.timings["eval_ms"] = t_eval * 1e3
            self.timings["eval_tokens"] = n_eval

    def generate(self, prompt: str, images=(), max_tokens: int = 256, stream: bool = False,
                 template: str | None = None, stop=(), **sampling):
        """The answer as a string, or with ``stream=True`` an iterator of text pieces.
        Stops at EOS, at a stop string (the template's and ``stop``), or after ``max_tokens``."""
        t = self.template if template is None else get_template(template)
        pieces = self._stream(prompt, images, max_tokens, t.name, tuple(t.stop) + tuple(stop), sampling)
        return pieces if stream else "".join(pieces)

    def _stream(self, prompt, images, max_tokens, template, stops, sampling):
        dec = StreamDecoder(self.tokenizer)
        cut = StopStrings(stops)
        for tok in self.generate_tokens(prompt, images, max_tokens, template, **sampling):
            out, stopped = cut.feed(dec.push(tok))
            if out:
                yield out
            if stopped:
                return
        out, stopped = cut.feed(dec.flush())
        if out:
            yield out
        if not stopped:
            rest = cut.flush()
            if rest:
                yield rest

    def logits(self, text: str, add_bos: bool = True) -> np.ndarray:
        """Logits (n_vocab,) after ``text`` alone (no template, no image)."""
        ids = self.tokenizer.encode(text, add_bos=add_bos, add_eos=False)
        if not ids:
            raise LlavaError("no tokens to evaluate")
        if len(ids) > self.llm.n_ctx:
            raise ContextFullError(f"{len(ids)} tokens do not fit in the context of {self.llm.n_ctx}")
        self.llm.reset()
        return self.llm.eval_tokens(ids)

    def free(self) -> None:
        self.encoder.free()
        self.llm.free()
