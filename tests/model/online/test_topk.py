"""The compiled best-k selection against a full sort, on real-shaped rows and on ties."""

from __future__ import annotations

import numpy as np
import pytest

from model.online.topk import MAX_K, best_ids


@pytest.mark.parametrize("k, skip", [(1, 0), (10, 2), (20, 0), (64, 5)])
def test_best_ids_are_the_largest_entries_largest_first(k: int, skip: int) -> None:
    rng = np.random.default_rng(k)
    logits = rng.normal(scale=3.0, size=(300, 2742)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = best_ids(probs.astype(np.float32), k, skip)
    expected = skip + np.argsort(-probs[:, skip:], axis=1, kind="stable")[:, :k]
    assert ids.dtype == np.int64 and ids.shape == (300, k)
    np.testing.assert_array_equal(ids, expected)


def test_ties_are_taken_in_column_order() -> None:
    probs = np.array([[0.1, 0.3, 0.1, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert best_ids(probs, 3).tolist() == [[1, 3, 4], [0, 1, 2]]
    assert best_ids(probs, 3, skip=2).tolist() == [[3, 4, 2], [2, 3, 4]]


def test_impossible_requests_are_errors() -> None:
    probs = np.zeros((2, 4), dtype=np.float32)
    for k, skip in [(0, 0), (5, 0), (3, 2), (MAX_K + 1, 0), (1, -1)]:
        with pytest.raises(ValueError):
            best_ids(probs, k, skip)
    with pytest.raises(ValueError):  # not contiguous float32 rows
        best_ids(np.zeros((2, 4)), 1)
