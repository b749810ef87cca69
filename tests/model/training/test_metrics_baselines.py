from __future__ import annotations

import numpy as np
import pytest

from model.training.baselines import DecayedFrequency, Markov, MostFrequent, Popularity, RepeatLast
from model.training.evaluate import evaluate_recommender
from model.training.metrics import PerPrediction, bootstrap_difference, target_ranks

COUNTS = np.array([0.0, 0.0, 9.0, 5.0, 3.0, 1.0])


def ranking(recommender, history: list[int]) -> list[int]:
    recommender.start_user()
    for token in history:
        recommender.update(token)
    return np.argsort(-recommender.scores(), kind="stable").tolist()


def test_baseline_rankings() -> None:
    history = [4, 5, 4, 3]
    assert ranking(Popularity(COUNTS), history)[:4] == [2, 3, 4, 5]
    assert ranking(RepeatLast(COUNTS), history)[:4] == [3, 4, 5, 2]
    assert ranking(MostFrequent(COUNTS), history)[:4] == [4, 3, 5, 2]
    assert ranking(DecayedFrequency(COUNTS, 0.1), history)[:2] == [3, 4]
    assert ranking(DecayedFrequency(COUNTS, 0.99), history)[:2] == [4, 3]
    markov = Markov(COUNTS, [(3, 5), (3, 5), (3, 4)])
    assert ranking(markov, history)[:3] == [5, 4, 2]


def test_ranks_metrics_and_ties() -> None:
    scores = np.array([[0.0, 3.0, 2.0, 2.0], [1.0, 0.0, 0.0, -np.inf]])
    assert target_ranks(scores, np.array([2, 3])).tolist() == [3, 4]
    result = PerPrediction(np.array([0, 1, 1]), np.array([1, 2, 11]))
    summary = result.summary()
    assert summary["hr@1"] == pytest.approx(1 / 3)
    assert summary["hr@10"] == pytest.approx(2 / 3)
    assert summary["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 3, abs=1e-6)
    assert summary["mrr"] == pytest.approx((1 + 0.5 + 1 / 11) / 3, abs=1e-6)


def test_bootstrap_interval_brackets_the_difference() -> None:
    users = np.repeat(np.arange(50), 4)
    better = PerPrediction(users, np.ones(200, dtype=np.int64))
    worse = PerPrediction(users, np.where(np.arange(200) % 2 == 0, 1, 20))
    low, high = bootstrap_difference(better, worse, n_resamples=200)
    assert 0 < low <= 0.5 <= high
    assert bootstrap_difference(better, better, n_resamples=50) == (0.0, 0.0)
    with pytest.raises(ValueError):
        bootstrap_difference(better, PerPrediction(users[::-1], worse.ranks))


def test_streaming_evaluation_ranks_each_target_from_its_past_only() -> None:
    ids = [np.array([2, 3, 3, 4]), np.array([5, 5])]
    positions = [np.array([2, 3]), np.array([1])]
    result = evaluate_recommender(RepeatLast(COUNTS), ids, positions, mask_seen=False)
    assert result.users.tolist() == [0, 0, 1]
    # 3 after [2, 3] is the last token: rank 1; 4 after [2, 3, 3] ranks behind 3 and 2.
    assert result.ranks.tolist() == [1, 3, 1]
    masked = evaluate_recommender(Popularity(COUNTS), ids, positions, mask_seen=True)
    # Seen tokens are masked, a repeated target too: it can never be recommended.
    assert masked.ranks.tolist() == [6, 1, 6]
