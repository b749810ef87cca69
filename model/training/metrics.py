"""Ranking metrics per prediction, their means, and a bootstrap over users."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("hr@1", "hr@5", "hr@10", "ndcg@10", "mrr")


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target among its row's scores; ties count against the target.

    A target whose score is ``-inf`` (never rankable) gets rank ``n_columns``.

    >>> target_ranks(np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]]), np.array([2, 1]))
    array([2, 2])
    """
    target_scores = np.take_along_axis(scores, targets[:, None], axis=1)
    ranks = (scores >= target_scores).sum(axis=1)
    return np.where(np.isneginf(target_scores[:, 0]), scores.shape[1], ranks)


@dataclass
class PerPrediction:
    """Aligned per-prediction arrays: the user it belongs to and its target's rank."""

    users: np.ndarray
    ranks: np.ndarray

    @classmethod
    def empty(cls) -> PerPrediction:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @classmethod
    def concat(cls, parts: list[PerPrediction]) -> PerPrediction:
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.users for p in parts]), np.concatenate([p.ranks for p in parts]))

    def values(self, metric: str) -> np.ndarray:
        ranks = self.ranks.astype(np.float64)
        if metric.startswith("hr@"):
            return (ranks <= int(metric[3:])).astype(np.float64)
        if metric == "ndcg@10":
            return np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)
        if metric == "mrr":
            return 1.0 / ranks
        raise KeyError(metric)

    def summary(self) -> dict[str, float]:
        if len(self.ranks) == 0:
            return {name: float("nan") for name in METRIC_NAMES}
        return {name: round(float(self.values(name).mean()), 6) for name in METRIC_NAMES}


def bootstrap_difference(
    a: PerPrediction,
    b: PerPrediction,
    metric: str = "ndcg@10",
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of ``mean(a) - mean(b)`` over predictions, resampling users.

    ``a`` and ``b`` must score the same predictions in the same order.
    """
    if not np.array_equal(a.users, b.users):
        raise ValueError("both models must be scored on the same predictions")
    users, inverse = np.unique(a.users, return_inverse=True)
    diff_sum = np.bincount(inverse, a.values(metric) - b.values(metric), minlength=len(users))
    count = np.bincount(inverse, minlength=len(users)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(users), size=(n_resamples, len(users)))
    estimates = diff_sum[draws].sum(axis=1) / count[draws].sum(axis=1)
    low, high = np.quantile(estimates, [0.025, 0.975])
    return round(float(low), 6), round(float(high), 6)
