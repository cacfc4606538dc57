"""Prompt templates of the LLaVA family and the split of a prompt into text and image slots.

Templates (LLaVA ``llava/conversation.py``):

``vicuna_v1``         LLaVA-1.5, LLaVA-1.6-vicuna, MobileVLM (``conv_vicuna_v1``/``llava_v1``,
                      sep_style TWO, seps " " and "</s>"):
                      ``{system} USER: <image>\\n{q} ASSISTANT:``
``mistral_instruct``  LLaVA-1.6-mistral (sep_style LLAMA_2, empty system):
                      ``[INST] <image>\\n{q} [/INST]``
``raw``               the text as given; ``<image>`` marks where each image goes, and images
                      without a marker go first.

The LLM sees the chunks between image slots tokenized one by one, BOS only on the first,
as LLaVA's ``tokenizer_image_token`` does (so each chunk gets SentencePiece's space prefix).
"""
from __future__ import annotations

from dataclasses import dataclass

IMAGE = "<image>"

VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@dataclass(frozen=True)
class ImageSlot:
    """The place of image number ``index`` in a split prompt."""

    index: int


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    stop: tuple  # strings that end the answer besides EOS

    def render(self, question: str, n_images: int = 0, system: str | None = None,
               history=()) -> str:
        """The prompt for ``question`` after the ``history`` turns ((user, assistant) pairs).
        The images go at the start of the first user message, one ``<image>\\n`` each; a
        question that already holds ``<image>`` markers is left as it is."""
        if n_images < 0:
            raise ValueError("n_images must be >= 0")
        system = self.system if system is None else system
        turns = [list(t) for t in history] + [[question, None]]
        first = turns[0][0]
        if n_images and IMAGE not in "".join(t[0] for t in turns):
            turns[0][0] = (IMAGE + "\n") * n_images + first
        if self.name == "raw":
            return "".join(u + (a or "") for u, a in turns)
        if self.name == "vicuna_v1":
            out = system + " "
            for user, answer in turns:
                out += "USER: " + user + " "
                out += "ASSISTANT:" if answer is None else "ASSISTANT: " + answer + "</s>"
            return out
        if self.name == "mistral_instruct":
            out = ""
            for i, (user, answer) in enumerate(turns):
                if i == 0 and system:
                    user = f"<<SYS>>\n{system}\n<</SYS>>\n\n" + user
                out += f"[INST] {user} [/INST]"
                if answer is not None:
                    out += " " + answer + " </s>"
            return out
        raise ValueError(f"unknown template {self.name!r}")


TEMPLATES = {
    "vicuna_v1": Template("vicuna_v1", VICUNA_SYSTEM, ("</s>",)),
    "mistral_instruct": Template("mistral_instruct", "", ("</s>",)),
    "raw": Template("raw", "", ()),
}
TEMPLATES["llava_v1"] = TEMPLATES["vicuna_v1"]


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; known: {sorted(TEMPLATES)}") from None


def split_prompt(text: str, n_images: int) -> list:
    """``text`` as a list of str chunks and :class:`ImageSlot` s, in order.

    The number of ``<image>`` markers must equal ``n_images``, except that a text with no
    marker at all gets its images at the start (llava-cli's behaviour).  Empty text chunks
    are dropped."""
    count = text.count(IMAGE)
    if count == 0 and n_images:
        text = IMAGE * n_images + text
        count = n_images
    if count != n_images:
        raise ValueError(f"the prompt has {count} {IMAGE} markers but {n_images} images were given")
    parts = text.split(IMAGE)
    out: list = []
    for i, chunk in enumerate(parts):
        if chunk:
            out.append(chunk)
        if i < len(parts) - 1:
            out.append(ImageSlot(i))
    return out
