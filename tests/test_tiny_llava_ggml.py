"""The shipped tiny LLaVA-1.5 through the whole route a user takes: the original checkpoint
folders → ``gguflite.convert.convert_llava`` → ``ggml_bind.LlavaModel``, judged on freshly
generated scenes against the PyTorch reference (fixtures/tiny_llava/reference.py, torch +
transformers) and against the true captions.
"""
from __future__ import annotations

import os

import pytest

from fixtures.tiny_llava import shapes
from fixtures.tiny_llava.reference import DEFAULT_QUESTION, LlavaReference
from ggml_bind import LlavaModel
from gguflite.convert import convert_llava

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "fixtures", "tiny-llava-v1.5")
CLIP = os.path.join(ROOT, "fixtures", "tiny-clip-vit")
# Neither the trainer's scenes (seed + 1) nor its validation seed (10000 + seed).
FRESH_SEED = 20261126
N_IMAGES = 200


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    """(true caption, reference answer, ggml answer) for each of 200 fresh scenes."""
    out = tmp_path_factory.mktemp("tiny-llava-gguf")
    llm, mmproj = convert_llava(MODEL, vision_tower=CLIP, outdir=str(out), outtype="f16", progress=False)
    ref = LlavaReference.load(MODEL, CLIP)
    model = LlavaModel.load(llm, mmproj, device="cpu", n_threads=1)
    try:
        rows = []
        for image, caption in shapes.generate(FRESH_SEED, N_IMAGES):
            ours = model.generate(DEFAULT_QUESTION, images=[image], max_tokens=32, temperature=0.0)
            rows.append((caption, ref.answer(image), ours.strip()))
        return rows
    finally:
        model.free()


@pytest.mark.slow
def test_ggml_answers_equal_the_pytorch_reference_for_at_least_99_percent(answers):
    differ = [(cap, r, g) for cap, r, g in answers if r != g]
    agreement = 1 - len(differ) / len(answers)
    assert agreement >= 0.99, f"{agreement:.3f} agree; first differences (truth, torch, ggml): {differ[:5]}"


@pytest.mark.slow
def test_ggml_captions_at_least_95_percent_of_fresh_scenes_exactly(answers):
    wrong = [(cap, g) for cap, _, g in answers if g != cap]
    accuracy = 1 - len(wrong) / len(answers)
    assert accuracy >= 0.95, f"{accuracy:.3f} exact; first misses (truth, ggml): {wrong[:5]}"
