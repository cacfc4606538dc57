"""ggml_bind.sampling against transformers' logits processors (the chain of ``generate``)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggml_bind.sampling import Sampler, SamplingParams, StopStrings

import torch
from transformers.generation import logits_process as lp


def hf_probs(logits, history, *, temperature, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
    """transformers' processor chain, in generate's order, then softmax."""
    ids = torch.tensor([list(history)], dtype=torch.long)
    x = torch.tensor(logits, dtype=torch.float64)[None]
    procs = []
    if repeat_penalty != 1.0:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(repeat_penalty))
    procs.append(lp.TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(lp.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(lp.TopPLogitsWarper(top_p))
    if min_p > 0.0:
        procs.append(lp.MinPLogitsWarper(min_p))
    for p in procs:
        x = p(ids, x)
    return torch.softmax(x, -1)[0].numpy()


@given(
    seed=st.integers(0, 2**31),
    temperature=st.floats(0.1, 3.0),
    top_k=st.sampled_from([0, 1, 5, 40]),
    top_p=st.sampled_from([1.0, 0.95, 0.5, 0.1]),
    min_p=st.sampled_from([0.0, 0.05, 0.3]),
    repeat_penalty=st.sampled_from([1.0, 1.1, 1.5]),
)
@settings(max_examples=150)
def test_distribution_equals_transformers_processor_chain(seed, temperature, top_k, top_p, min_p, repeat_penalty):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(200) * 3).astype(np.float32)
    history = rng.integers(0, 200, 30).tolist()
    s = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                repeat_penalty=repeat_penalty, repeat_last_n=-1)
    got = s.probs(logits, history)
    ref = hf_probs(logits, history, temperature=temperature, top_k=top_k, top_p=top_p,
                   min_p=min_p, repeat_penalty=repeat_penalty)
    assert ((got > 0) == (ref > 0)).all()
    np.testing.assert_allclose(got, ref, atol=1e-9, rtol=1e-6)


def test_greedy_is_the_argmax_after_the_repetition_penalty():
    logits = np.array([0.0, 5.0, 4.9, -1.0], np.float32)
    assert Sampler().sample(logits) == 1
    # token 1 was just generated: 5.0/1.1 < 4.9
    assert Sampler(repeat_penalty=1.1).sample(logits, [1]) == 2
    # outside the window it is not penalised
    assert Sampler(repeat_penalty=1.1, repeat_last_n=1).sample(logits, [1, 3]) == 1


def test_the_same_seed_gives_the_same_tokens_and_another_seed_differs():
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal(1000).astype(np.float32) for _ in range(50)]

    def run(seed):
        s = Sampler(temperature=1.5, seed=seed)
        return [s.sample(x) for x in logits]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_draws_follow_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    s = Sampler(temperature=1.0, seed=1)
    n = 20000
    counts = np.bincount([s.sample(logits) for _ in range(n)], minlength=4) / n
    # 5 standard deviations of a binomial proportion
    sd = np.sqrt(np.array([0.5, 0.3, 0.15, 0.05]) * (1 - np.array([0.5, 0.3, 0.15, 0.05])) / n)
    assert (np.abs(counts - [0.5, 0.3, 0.15, 0.05]) < 5 * sd).all()


def test_top_k_one_always_gives_the_argmax():
    rng = np.random.default_rng(3)
    s = Sampler(temperature=2.0, top_k=1, seed=0)
    for _ in range(20):
        x = rng.standard_normal(50)
        assert s.sample(x) == int(np.argmax(x))


def test_bad_parameters_are_rejected():
    for kw in ({"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"min_p": 2.0}, {"repeat_penalty": 0.0}):
        with pytest.raises(ValueError):
            SamplingParams(**kw)
    with pytest.raises(ValueError, match="no token"):
        Sampler(temperature=1.0).probs(np.full(4, -np.inf))


def feed_all(stops, pieces):
    ss = StopStrings(stops)
    out = []
    for p in pieces:
        text, stopped = ss.feed(p)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(ss.flush())
    return "".join(out), False


@given(
    text=st.text(alphabet="abcAS:U \n</>", max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=10),
    stops=st.lists(st.sampled_from(["USER:", "</s>", "###", "a", "ab"]), max_size=3),
)
@settings(max_examples=300)
def test_stop_strings_cut_the_stream_at_the_first_occurrence_whatever_the_pieces(text, cuts, stops):
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    got, stopped = feed_all(stops, pieces)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if hits:
        assert stopped and got == text[: min(hits)]
    else:
        assert not stopped and got == text


def test_text_that_may_start_a_stop_string_is_held_back_until_decided():
    ss = StopStrings(["USER:"])
    assert ss.feed("Hello US") == ("Hello ", False)
    assert ss.feed("A") == ("USA", False)
    assert ss.feed(" ok USE") == (" ok ", False)
    assert ss.feed("R: more") == ("", True)
