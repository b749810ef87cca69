"""Streaming next-token baselines over integer ids (categories or items).

Each recommender follows one tiny interface: :meth:`start_user` for a new user,
:meth:`scores` for the ranking of the next token given what it has seen, :meth:`update`
with the token that actually came. Every score vector ends with a tiny global-popularity
term, so ties are broken the same deterministic way for every baseline.

>>> pop = np.array([5.0, 1.0, 3.0])
>>> rec = RepeatLast(pop)
>>> rec.start_user(); rec.update(1); rec.update(2)
>>> np.argsort(-rec.scores()).tolist()
[2, 1, 0]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

TIEBREAK = 1e-6


def popularity_scores(counts: np.ndarray) -> np.ndarray:
    """Counts scaled into ``[0, 1)``."""
    return counts.astype(np.float64) / (counts.max(initial=0) + 1.0)


class Recommender:
    """Base class: keeps the current user's history of token ids."""

    name = "recommender"

    def __init__(self, counts: np.ndarray):
        self.popularity = popularity_scores(counts)
        self.history: list[int] = []

    def start_user(self) -> None:
        self.history = []

    def update(self, token: int) -> None:
        self.history.append(token)

    def scores(self) -> np.ndarray:
        raise NotImplementedError


class Popularity(Recommender):
    """Global popularity in the training events."""

    name = "popularity"

    def scores(self) -> np.ndarray:
        return self.popularity


class MostFrequent(Recommender):
    """The user's most frequent tokens so far; ties by recency, then popularity."""

    name = "most_frequent"

    def scores(self) -> np.ndarray:
        scores = TIEBREAK * self.popularity
        if self.history:
            history = np.asarray(self.history)
            np.add.at(scores, history, 1.0)
            recency = np.zeros_like(scores)
            recency[history] = (np.arange(len(history)) + 1.0) / (len(history) + 1.0)
            scores += 0.5 * recency
        return scores


class RepeatLast(Recommender):
    """The last token first, then earlier distinct tokens by recency, then popularity."""

    name = "repeat_last"

    def scores(self) -> np.ndarray:
        scores = TIEBREAK * self.popularity
        if self.history:
            scores[np.asarray(self.history)] += np.arange(len(self.history)) + 1.0
        return scores


class DecayedFrequency(Recommender):
    """Repeat + frequency mixture: exponentially decayed counts of the user's tokens.

    ``decay -> 0`` is repeat-last, ``decay -> 1`` is most-frequent; the evaluation picks
    ``decay`` on the validation split.
    """

    name = "mixture"

    def __init__(self, counts: np.ndarray, decay: float):
        super().__init__(counts)
        self.decay = decay

    def scores(self) -> np.ndarray:
        scores = TIEBREAK * self.popularity
        if self.history:
            ages = np.arange(len(self.history) - 1, -1, -1, dtype=np.float64)
            np.add.at(scores, np.asarray(self.history), self.decay**ages)
        return scores


class Markov(Recommender):
    """First-order Markov chain fitted on training transitions, smoothed towards popularity.

    ``p(next | last) = (n(last -> next) + alpha * pop(next)) / (n(last) + alpha)``.
    """

    name = "markov"

    def __init__(self, counts: np.ndarray, transitions: Iterable[tuple[int, int]], alpha: float = 1.0):
        super().__init__(counts)
        self.alpha = alpha
        self.prior = counts.astype(np.float64) / max(counts.sum(), 1)
        rows: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for source, target in transitions:
            rows[source][target] += 1
        self.rows = {
            source: (np.fromiter(row.keys(), dtype=np.int64), np.fromiter(row.values(), dtype=np.float64))
            for source, row in rows.items()
        }

    def scores(self) -> np.ndarray:
        scores = self.alpha * self.prior
        total = self.alpha
        if self.history and self.history[-1] in self.rows:
            targets, counts = self.rows[self.history[-1]]
            scores = scores.copy()
            scores[targets] += counts
            total += counts.sum()
        return scores / total + TIEBREAK * self.popularity
