"""Choosing the next token from logits, in numpy, and cutting the text at stop strings.

The chain follows transformers' ``generate`` (so it can be checked against its logits
processors): repetition penalty over the last ``repeat_last_n`` tokens, then temperature,
top-k, top-p, min-p, then a draw with the sampler's own seeded generator.
``temperature <= 0`` is greedy: argmax after the repetition penalty, no randomness.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0            # 0: off
    top_p: float = 1.0        # 1.0: off
    min_p: float = 0.0        # 0.0: off
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64   # -1: the whole history
    seed: int | None = None

    def __post_init__(self):
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.repeat_last_n < -1:
            raise ValueError(f"repeat_last_n must be >= -1, got {self.repeat_last_n}")


class Sampler:
    """Stateful only through its random generator: same seed, same logits -> same tokens."""

    def __init__(self, params: SamplingParams | None = None, **kw):
        self.params = params if params is not None else SamplingParams(**kw)
        self.rng = np.random.default_rng(self.params.seed)

    def penalized(self, logits: np.ndarray, history) -> np.ndarray:
        """float64 copy of ``logits`` [n_vocab] with the repetition penalty applied."""
        x = np.array(logits, dtype=np.float64).reshape(-1)
        p = self.params
        if p.repeat_penalty != 1.0 and len(history):
            recent = history if p.repeat_last_n == -1 else history[max(0, len(history) - p.repeat_last_n):]
            ids = np.unique(np.asarray(recent, dtype=np.int64))
            ids = ids[(ids >= 0) & (ids < x.size)]
            v = x[ids]
            x[ids] = np.where(v < 0, v * p.repeat_penalty, v / p.repeat_penalty)
        return x

    def probs(self, logits: np.ndarray, history=()) -> np.ndarray:
        """The distribution the next token is drawn from (float64 [n_vocab], zeros outside
        the kept set).  Greedy puts all mass on the argmax."""
        p = self.params
        x = self.penalized(logits, history)
        if p.temperature <= 0:
            out = np.zeros_like(x)
            out[int(np.argmax(x))] = 1.0
            return out
        x = x / p.temperature
        keep = ~np.isnan(x)
        if p.top_k > 0 and p.top_k < x.size:
            kth = np.partition(x, x.size - p.top_k)[x.size - p.top_k]
            keep &= x >= kth  # ties with the k-th value stay, as in transformers
        x = np.where(keep, x, -np.inf)
        if p.top_p < 1.0:
            order = np.argsort(x, kind="stable")  # ascending
            sp = _softmax(x[order])
            cum = np.cumsum(sp)
            drop = cum <= 1.0 - p.top_p
            drop[-1] = False  # always keep the most likely token
            x[order[drop]] = -np.inf
        if p.min_p > 0.0:
            pr = _softmax(x)
            x = np.where(pr >= p.min_p * pr.max(), x, -np.inf)
        return _softmax(x)

    def sample(self, logits: np.ndarray, history=()) -> int:
        if self.params.temperature <= 0:
            return int(np.argmax(self.penalized(logits, history)))
        pr = self.probs(logits, history)
        cum = np.cumsum(pr)
        u = self.rng.random() * cum[-1]
        return int(min(np.searchsorted(cum, u, side="right"), pr.size - 1))


def _softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x)
    if not np.isfinite(m):
        raise ValueError("no token left to sample from (all logits are -inf or NaN)")
    e = np.exp(x - m)
    return e / e.sum()


class StopStrings:
    """Cuts streamed text at the first stop string, never emitting any part of it.

    ``feed(piece)`` returns ``(text_to_emit, stopped)``; text that might be the start of a
    stop string is held back until the next piece decides; ``flush()`` releases it."""

    def __init__(self, stops=()):
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> tuple:
        if self.stopped:
            return "", True
        self.buffer += piece
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer, self.stopped = self.buffer[:cut], "", True
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buffer)), 0, -1):
                if self.buffer.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.buffer[: len(self.buffer) - hold]
        self.buffer = self.buffer[len(self.buffer) - hold:]
        return out, False

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return "" if self.stopped else out
