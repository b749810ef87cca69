"""The reference the scorer is held to: every reading recomputed from scratch, no cache.

:class:`FullRecompute` has the interface of :class:`~model.online.scorer.InterestScorer`
and computes the same readings the plain way: for the interest, a full forward of the model
over the user's last ``receptive_field`` events; for the recent interest, a full forward
over the last ``recent_events`` alone. Tests and ``bench/scoring.py`` compare the two
(outputs within 1e-5, the same shifts at the same events); the benchmark's ``naive_eps``
is this class at batch 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.net.batching import pad_sequences
from model.net.checkpoint import Checkpoint
from model.online.distribution import Distribution, copied_outside_vocabulary, entropy, from_model
from model.online.scorer import BatchInterest, Scorer, UserWindow, window_tokens
from model.online.stages import StageTimes


class FullRecompute:
    """Both readings of a batch of windows, each a fresh forward (see the module text)."""

    def __init__(self, checkpoint: Checkpoint, *, top_k: int, recent_events: int, top_m: int):
        self.checkpoint = checkpoint
        self.top_k = top_k
        self.recent_events = recent_events
        self.top_m = top_m
        self.times = StageTimes()

    def swap(self, checkpoint: Checkpoint, recent_events: int, top_m: int) -> None:
        self.checkpoint, self.recent_events, self.top_m = checkpoint, recent_events, top_m

    def forget(self, user_id: str) -> None:
        """Nothing is cached."""

    @torch.inference_mode()
    def score(self, windows: Sequence[UserWindow]) -> BatchInterest:
        with self.times.stage("engine"):
            context = self.checkpoint.config.receptive_field
            probs, interest = self._last_outputs(windows, context, opens_window=False, m=self.top_k)
        with self.times.stage("recent"):
            recent_probs, recent = self._last_outputs(windows, self.recent_events, opens_window=True, m=self.top_m)
        return BatchInterest(self.checkpoint.model_version, probs, entropy(probs), interest, recent_probs, recent)

    def _last_outputs(
        self, windows: Sequence[UserWindow], length: int, *, opens_window: bool, m: int
    ) -> tuple[np.ndarray, list[Distribution]]:
        """The model's distribution after each window's newest event, reading its last ``length``
        events (the first with no gap when ``opens_window``), and that distribution by raw category."""
        model, tokenizer = self.checkpoint.model, self.checkpoint.tokenizer
        starts = [max(0, w.index + 1 - length) for w in windows]
        tokens = [window_tokens(tokenizer, w, s, w.index + 1, opens_window) for w, s in zip(windows, starts)]
        batch = pad_sequences(tokens, [0] * len(tokens))
        encoding = model.encode(batch)
        rows = torch.arange(len(windows))
        last = torch.tensor([len(t) - 1 for t in tokens])
        generated, copy_weights = model.category_mixture_at(encoding, rows, last)
        probs = generated.scatter_add(-1, batch.categories, copy_weights).numpy()
        weights = copy_weights.numpy()
        out = []
        for row, (window, start) in enumerate(zip(windows, starts)):
            categories = [e.category_id for e in window.events[start : window.index + 1]]
            copied = copied_outside_vocabulary(weights[row, : len(categories)], categories, tokenizer.categories)
            best = np.argsort(-probs[row], kind="stable")[: m + 2]
            out.append(from_model(probs[row], best, tokenizer.categories, copied, m))
        return probs, out


class Recorded:
    """A scorer that keeps the readings it returned last, so that two scorers can be compared
    batch by batch through the pipeline that calls them."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.times = scorer.times
        self.last: BatchInterest | None = None

    def score(self, windows: Sequence[UserWindow]) -> BatchInterest:
        self.last = self.scorer.score(windows)
        return self.last

    def swap(self, checkpoint: Checkpoint, recent_events: int, top_m: int) -> None:
        self.scorer.swap(checkpoint, recent_events, top_m)

    def forget(self, user_id: str) -> None:
        self.scorer.forget(user_id)
