"""Offline evaluation of the interest model against streaming baselines.

Two protocols, chosen by the data:

* ``next_category_streaming`` (logs with timestamps, time split): at every test event,
  rank all categories given all the user's earlier events. Models: ``transformer``,
  ``popularity``, ``most_frequent``, ``repeat_last``, ``markov``, ``mixture``.
* ``next_item_leave_one_out_full`` (order-only logs): rank all items for the user's last
  event, items the user has already seen masked (the S3-Rec protocol). Models:
  ``transformer``, ``popularity``, ``markov``; the repeat-based baselines only recommend
  seen items, which this protocol masks, so they would equal popularity and are left out.
  A repeated target is masked too (it cannot be recommended), so the label never leaks.

A target the model's vocabulary does not know counts as a miss for the model, while the
baselines rank raw ids and may still hit it: the comparison is conservative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from model.data.loaders import EventLog
from model.data.splits import TEST, TRAIN, VALIDATION, SplitSpec
from model.data.vocab import OOV_ID, PAD_ID, TokenSequence, Vocabulary
from model.net.checkpoint import Checkpoint
from model.net.predict import score_outputs
from model.net.transformer import NEG_INF
from model.online.scorer import copied_mass
from model.training.baselines import DecayedFrequency, Markov, MostFrequent, Popularity, Recommender, RepeatLast
from model.training.metrics import PerPrediction, bootstrap_difference, target_ranks

Level = Literal["category", "item"]
MIXTURE_DECAYS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Protocol:
    name: str
    level: Level
    mask_seen: bool

    @classmethod
    def for_split(cls, split: SplitSpec) -> Protocol:
        if split.kind == "time":
            return cls("next_category_streaming", "category", mask_seen=False)
        return cls("next_item_leave_one_out_full", "item", mask_seen=True)


def raw_tokens(log: EventLog, level: Level) -> list[tuple[str, ...]]:
    return [user.categories if level == "category" else user.items for user in log.users]


def target_positions(log: EventLog, split: SplitSpec, phase: int) -> list[np.ndarray]:
    """Per user, the event indices that are targets in ``phase`` (never a first event)."""
    positions = []
    for user in log.users:
        phases = split.phases(user)
        phases[0] = -1
        positions.append(np.flatnonzero(phases == phase))
    return positions


def evaluate_transformer(
    checkpoint: Checkpoint,
    log: EventLog,
    phase: int,
    protocol: Protocol,
    tokens: Sequence[TokenSequence] | None = None,
) -> PerPrediction:
    """Rank of every ``phase`` target under the model, ordered by (user, event).

    A category outside the model's vocabulary can still be predicted through the copy
    head: the mass copied from events of that raw category is credited to it.
    """
    tokenizer = checkpoint.tokenizer
    tokens = tokens if tokens is not None else [tokenizer.encode(u) for u in log.users]
    positions = target_positions(log, checkpoint.split, phase)
    vocabulary = tokenizer.categories if protocol.level == "category" else tokenizer.items
    raw = raw_tokens(log, protocol.level)
    parts = []
    for scored in score_outputs(checkpoint.model, tokens, [p - 1 for p in positions], protocol.level):
        scores = scored.scores.astype(np.float64)
        scores[:, PAD_ID] = NEG_INF
        scores[:, OOV_ID] = NEG_INF
        ranks = np.empty(len(scores), dtype=np.int64)
        for row, (s, output) in enumerate(zip(scored.sequences, scored.outputs)):
            target_raw = raw[s][output + 1]
            target = vocabulary.encode(target_raw)
            if protocol.mask_seen:
                scores[row, tokens[s].items[: output + 1]] = NEG_INF
            extra = copied_mass(scored, row, raw[s], vocabulary)
            target_score = scores[row, target] if target != OOV_ID else extra.get(target_raw, NEG_INF)
            if target_score == NEG_INF:
                ranks[row] = scores.shape[1]
            else:
                ranks[row] = int((scores[row] >= target_score).sum()) + sum(v >= target_score for v in extra.values())
        parts.append((scored.sequences, scored.outputs, ranks))
    return _ordered(parts)


def _ordered(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> PerPrediction:
    if not parts:
        return PerPrediction.empty()
    sequences, outputs, ranks = (np.concatenate(column) for column in zip(*parts))
    order = np.lexsort((outputs, sequences))
    return PerPrediction(sequences[order], ranks[order])


def evaluate_recommender(
    recommender: Recommender,
    ids: Sequence[np.ndarray],
    positions: Sequence[np.ndarray],
    mask_seen: bool,
) -> PerPrediction:
    """Stream every user's history through ``recommender``, ranking each target position."""
    users, ranks = [], []
    for u, (history, wanted) in enumerate(zip(ids, positions)):
        if not len(wanted):
            continue
        wanted_set = set(wanted.tolist())
        recommender.start_user()
        for i, token in enumerate(history[: wanted.max() + 1]):
            if i in wanted_set:
                scores = recommender.scores()
                if mask_seen:
                    scores = scores.copy()
                    scores[history[:i]] = NEG_INF
                users.append(u)
                ranks.append(int(target_ranks(scores[None, :], np.array([token]))[0]))
            recommender.update(int(token))
    return PerPrediction(np.asarray(users, dtype=np.int64), np.asarray(ranks, dtype=np.int64))


def fit_baselines(
    log: EventLog, split: SplitSpec, protocol: Protocol, ids: Sequence[np.ndarray], n_ids: int
) -> list[Recommender]:
    """Popularity counts and Markov transitions from training events only."""
    counts = np.zeros(n_ids)
    transitions: list[tuple[int, int]] = []
    for user, history in zip(log.users, ids):
        phases = split.phases(user)
        np.add.at(counts, history[phases == TRAIN], 1.0)
        train_targets = np.flatnonzero(phases[1:] == TRAIN) + 1
        transitions.extend(zip(history[train_targets - 1].tolist(), history[train_targets].tolist()))
    baselines: list[Recommender] = [Popularity(counts), Markov(counts, transitions)]
    if protocol.level == "category":
        baselines[1:1] = [MostFrequent(counts), RepeatLast(counts)]
        baselines.append(_tuned_mixture(counts, ids, target_positions(log, split, VALIDATION)))
    return baselines


def _tuned_mixture(counts: np.ndarray, ids: Sequence[np.ndarray], validation: list[np.ndarray]) -> DecayedFrequency:
    best = max(
        MIXTURE_DECAYS,
        key=lambda decay: (
            evaluate_recommender(DecayedFrequency(counts, decay), ids, validation, False).values("ndcg@10").mean()
        ),
    )
    return DecayedFrequency(counts, best)


def evaluate(checkpoint: Checkpoint, log: EventLog, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The full comparison as the JSON-ready dict documented in the README."""
    split = checkpoint.split
    protocol = Protocol.for_split(split)
    raw = raw_tokens(log, protocol.level)
    index = Vocabulary.build(token for history in raw for token in history)
    ids = [np.fromiter((index.encode(t) for t in history), dtype=np.int64, count=len(history)) for history in raw]
    test_positions = target_positions(log, split, TEST)

    per_model = {"transformer": evaluate_transformer(checkpoint, log, TEST, protocol)}
    mixture_decay = None
    for baseline in fit_baselines(log, split, protocol, ids, len(index)):
        per_model[baseline.name] = evaluate_recommender(baseline, ids, test_positions, protocol.mask_seen)
        if isinstance(baseline, DecayedFrequency):
            mixture_decay = baseline.decay
    models = {name: result.summary() for name, result in per_model.items()}
    best_baseline = max((n for n in models if n != "transformer"), key=lambda n: models[n]["ndcg@10"])
    low, high = bootstrap_difference(per_model["transformer"], per_model[best_baseline], "ndcg@10", n_resamples, seed)
    return {
        "dataset": log.name,
        "protocol": protocol.name,
        "split": split.to_dict(),
        "model_version": checkpoint.model_version,
        "n_predictions": len(per_model["transformer"].ranks),
        "n_users": len(np.unique(per_model["transformer"].users)),
        "models": models,
        "best_baseline": best_baseline,
        "mixture_decay": mixture_decay,
        "ci95": {"metric": "ndcg@10", "versus": best_baseline, "low": low, "high": high},
        "data_quality": log.report.as_dict(),
    }


def validation_score(checkpoint: Checkpoint, log: EventLog, tokens: Sequence[TokenSequence]) -> dict[str, float]:
    """The transformer's metrics on the validation phase (used for early stopping)."""
    protocol = Protocol.for_split(checkpoint.split)
    return evaluate_transformer(checkpoint, log, VALIDATION, protocol, tokens).summary()
