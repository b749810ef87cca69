"""Sparse category distributions: a user's interest as ``{raw category id: probability}``.

Only the ``m`` most probable categories are kept; the mass of all others (and the model's
own out-of-vocabulary mass) is the *rest*, ``1 - sum(values)``, which every function here
treats as one more category. Raw ids, not model ids, so that a distribution means the same
under every checkpoint and for detectors that use no model at all.

The detector's per-event arithmetic is compiled (:mod:`model.online.sparse`) and exported
here: ``strongest(p, m)``, the ``m`` most probable categories (ties keep their order in
``p``); ``blend(old, new, weight, m)``, ``(1 - weight) * old + weight * new`` cut to its
``m`` strongest; ``jensen_shannon(p, q)``, in bits (0 = same, 1 = disjoint), the rest
counted as one category; ``gains(previous, p, n)``, the ``n`` categories that rose most.

>>> p = {"shoes": 0.75, "bags": 0.25}
>>> q = {"books": 1.0}
>>> jensen_shannon(p, p), jensen_shannon(p, q)
(0.0, 1.0)
>>> blend({"shoes": 1.0}, q, 0.25, m=2)
{'shoes': 0.75, 'books': 0.25}
>>> strongest({"a": 0.25, "b": 0.5, "c": 0.25}, m=2)
{'b': 0.5, 'a': 0.25}
>>> gains({"shoes": 0.75, "bags": 0.25}, {"shoes": 0.25, "bags": 0.5, "books": 0.25}, n=3)
{'books': 0.25, 'bags': 0.25}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from model.data.vocab import OOV_ID, Vocabulary
from model.online.sparse import blend, gains, jensen_shannon, strongest

__all__ = [
    "Distribution",
    "blend",
    "copied_outside_vocabulary",
    "entropy",
    "frequencies",
    "from_model",
    "from_model_rows",
    "gains",
    "jensen_shannon",
    "rest",
    "strongest",
]

Distribution = dict[str, float]


def rest(p: Mapping[str, float]) -> float:
    """The mass outside the kept categories."""
    return max(0.0, 1.0 - math.fsum(p.values()))


def from_model(
    probs: np.ndarray, best: np.ndarray, vocabulary: Vocabulary, copied: Mapping[str, float], m: int
) -> Distribution:
    """A model's interest distribution by raw category id.

    ``probs`` is the model's distribution over its category vocabulary; ``best`` some of its
    most probable ids (at least ``m``, or all); ``copied`` the mass the copy head puts on the
    user's events whose category is outside the vocabulary, by raw id. The vocabulary's own
    out-of-vocabulary entry is not a category: its mass stays in the rest.
    """
    return from_model_rows(probs[None], best[None], vocabulary, {0: copied}, m)[0]


def from_model_rows(
    probs: np.ndarray, best: np.ndarray, vocabulary: Vocabulary, copied: Mapping[int, Mapping[str, float]], m: int
) -> list[Distribution]:
    """:func:`from_model` of each row of ``probs (B, C)`` and ``best (B, k)``; ``copied`` by row,
    rows without copied mass left out.

    >>> from model.data.vocab import Vocabulary
    >>> vocabulary = Vocabulary.build(["shoes", "bags"])
    >>> probs = np.array([[0.0, 0.1, 0.6, 0.3], [0.0, 0.5, 0.25, 0.25]])
    >>> from_model_rows(probs, np.array([[2, 3], [1, 2]]), vocabulary, {1: {"new": 0.5}}, m=2)
    [{'bags': 0.6, 'shoes': 0.3}, {'bags': 0.25, 'new': 0.5}]
    """
    chosen = np.take_along_axis(probs, best, axis=1)
    names = vocabulary.token_array[best].tolist()
    kept = ((best > OOV_ID) & (chosen > 0.0)).tolist()
    out = []
    for row, (row_names, row_values, row_kept) in enumerate(zip(names, chosen.tolist(), kept, strict=True)):
        if all(row_kept):
            distribution = dict(zip(row_names, row_values, strict=True))
        else:
            distribution = {name: value for name, value, keep in zip(row_names, row_values, row_kept) if keep}
        for category, mass in copied.get(row, {}).items():
            distribution[category] = distribution.get(category, 0.0) + mass
        out.append(distribution if len(distribution) <= m else strongest(distribution, m))
    return out


def copied_outside_vocabulary(
    weights: np.ndarray, categories: Sequence[str], vocabulary: Vocabulary
) -> dict[str, float]:
    """The copy head's mass on copied events whose raw category is outside ``vocabulary``:
    ``weights[j]`` is the mass copied from an event of raw category ``categories[j]``. Such a
    category has no probability of its own in the model, only this.

    >>> from model.data.vocab import Vocabulary
    >>> copied_outside_vocabulary(np.array([0.25, 0.5, 0.125]), ["new", "known", "new"], Vocabulary.build(["known"], 1))
    {'new': 0.375}
    """
    out: dict[str, float] = {}
    for j in np.flatnonzero(weights > 0):
        category = categories[int(j)]
        if category not in vocabulary:
            out[category] = out.get(category, 0.0) + float(weights[j])
    return out


def entropy(probs: np.ndarray) -> np.ndarray:
    """Each row's entropy in nats (``0 log 0 = 0``).

    >>> entropy(np.array([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])).round(6).tolist()
    [0.693147, 0.562335]
    """
    p = probs.astype(np.float64)
    return -np.einsum("ij,ij->i", p, np.log(np.maximum(p, np.finfo(np.float64).tiny)))  # 0 log 0 -> 0 log tiny = 0


def frequencies(categories: list[str], m: int) -> Distribution:
    """The empirical distribution of ``categories``: what a detector without a model sees.

    >>> frequencies(["a", "b", "a", "c"], m=2)
    {'a': 0.5, 'b': 0.25}
    """
    if not categories:
        return {}
    share = 1.0 / len(categories)
    counts: Distribution = {}
    for category in categories:
        counts[category] = counts.get(category, 0.0) + share
    return strongest(counts, m)
