from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.vocab import OOV_ID, PAD_ID, TokenSequence
from model.net.batching import pad_sequences
from model.net.config import ModelConfig
from model.net.transformer import InterestTransformer
from model.online.engine import EventTokens, IncrementalEngine, InMemoryHistory, UserEvent, bytes_per_user

WINDOW = 6
TOLERANCE = 1e-5


@pytest.fixture
def config() -> ModelConfig:
    return ModelConfig(
        n_items=50,
        n_categories=12,
        d_model=16,
        n_layers=2,
        n_heads=2,
        d_ff=32,
        window=WINDOW,
        copy_window=9,
        dropout=0.0,
    )


def trained_looking(config: ModelConfig, seed: int) -> InterestTransformer:
    torch.manual_seed(seed)
    model = InterestTransformer(config).eval()
    with torch.no_grad():  # make both mixture parts and the recency prior matter
        model.copy_recency.normal_()
        model.copy_gate.bias.fill_(0.3)
        model.item_bias.normal_()
    return model


def random_sequences(config: ModelConfig, n_users: int, max_length: int, seed: int) -> dict[str, TokenSequence]:
    """Users with 1..max_length events; ids include OOV (1) for unknown items and categories."""
    rng = np.random.default_rng(seed)
    sequences = {}
    for u in range(n_users):
        n = int(rng.integers(1, max_length + 1))
        sequences[f"user-{u}"] = TokenSequence(
            rng.integers(OOV_ID, config.n_items, n),
            rng.integers(OOV_ID, config.n_categories, n),
            rng.integers(2, config.n_behaviors, n),
            rng.integers(0, config.n_gap_buckets, n),
        )
    return sequences


@torch.no_grad()
def full_forward(model: InterestTransformer, sequence: TokenSequence) -> tuple[np.ndarray, np.ndarray]:
    """Interest distributions and item logits at every event, from one forward over all of it."""
    batch = pad_sequences([sequence], [0])
    encoding = model.encode(batch)
    logits = model.item_logits(encoding.hidden)[0]
    logits[:, [PAD_ID, OOV_ID]] = float("-inf")
    return model.category_probs(encoding)[0].numpy(), logits.numpy()


def event(sequences: dict[str, TokenSequence], user: str, position: int) -> UserEvent:
    s = sequences[user]
    tokens = EventTokens(
        int(s.items[position]), int(s.categories[position]), int(s.behaviors[position]), int(s.gaps[position])
    )
    return UserEvent(user, position, tokens)


def random_schedule(sequences: dict[str, TokenSequence], seed: int, max_batch: int) -> list[list[UserEvent]]:
    """All events, each user's in order, cut into batches of random size and composition.

    A batch may hold several events of one user.
    """
    rng = np.random.default_rng(seed)
    remaining = dict.fromkeys(sequences, 0)
    stream = []
    while remaining:
        user = str(rng.choice(sorted(remaining)))
        stream.append(event(sequences, user, remaining[user]))
        remaining[user] += 1
        if remaining[user] == len(sequences[user]):
            del remaining[user]
    batches = []
    while stream:
        size = int(rng.integers(1, max_batch + 1))
        batches.append(stream[:size])
        stream = stream[size:]
    return batches


class Checker:
    """Feeds batches to an engine and records the worst difference from the full forward."""

    def __init__(
        self,
        engine: IncrementalEngine,
        model: InterestTransformer,
        sequences: dict[str, TokenSequence],
        history: InMemoryHistory | None = None,
    ):
        self.engine = engine
        self.history = history or InMemoryHistory(sequences)
        self.references = {user: full_forward(model, s) for user, s in sequences.items()}
        self.worst = 0.0
        self.steps = 0

    def feed(self, batch: list[UserEvent]) -> None:
        result = self.engine.step(batch, self.history)
        for row, e in enumerate(batch):
            probs, logits = self.references[e.user]
            expected_top = np.sort(logits[e.position])[::-1][: self.engine.top_k]
            self.worst = max(
                self.worst,
                float(np.abs(result.category_probs[row] - probs[e.position]).max()),
                float(np.abs(result.top_item_scores[row] - expected_top).max()),
                float(np.abs(logits[e.position][result.top_items[row]] - result.top_item_scores[row]).max()),
            )
            self.steps += 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_equals_full_forward_across_batches_evictions_and_rebuilds(config, seed) -> None:
    model = trained_looking(config, seed)
    sequences = random_sequences(config, n_users=14, max_length=5 * WINDOW, seed=seed)
    budget = 5 * bytes_per_user(model)  # 5 of 14 users fit: constant eviction and rebuild
    engine = IncrementalEngine(model, "v1", budget_bytes=budget, top_k=5)
    checker = Checker(engine, model, sequences)
    for batch in random_schedule(sequences, seed, max_batch=9):
        checker.feed(batch)
    assert checker.steps == sum(len(s) for s in sequences.values())
    assert checker.worst <= TOLERANCE
    stats = engine.stats
    assert stats.evictions > 0 and stats.rebuilds > 0 and stats.hits > 0
    assert stats.first_events == len(sequences)
    assert stats.hits + stats.rebuilds + stats.first_events == checker.steps
    assert len(engine) <= 5


def test_long_histories_rebuild_from_the_receptive_field_only(config) -> None:
    """A user of 5W events, evicted after each step, is rebuilt from their last L(W-1) events."""
    model = trained_looking(config, 3)
    sequences = random_sequences(config, n_users=1, max_length=1, seed=0)
    rng = np.random.default_rng(3)
    n = 5 * WINDOW
    sequences["long"] = TokenSequence(
        rng.integers(2, 50, n), rng.integers(2, 12, n), rng.integers(2, 7, n), rng.integers(0, 24, n)
    )
    requested: list[int] = []

    class RecordingHistory(InMemoryHistory):
        def events_before(self, user: str, position: int, count: int) -> TokenSequence:
            requested.append(count)
            return super().events_before(user, position, count)

    engine = IncrementalEngine(model, "v1", budget_bytes=bytes_per_user(model), top_k=3)
    checker = Checker(engine, model, sequences, RecordingHistory(sequences))
    for position in range(n):
        checker.feed([event(sequences, "long", position)])
        checker.feed([event(sequences, "user-0", 0)])  # evicts "long"
    assert checker.worst <= TOLERANCE
    assert set(requested) == {config.receptive_field - 1}
    assert engine.stats.rebuilds == n - 1


def test_checkpoint_swap_invalidates_every_cache(config) -> None:
    old, new = trained_looking(config, 0), trained_looking(config, 1)
    sequences = random_sequences(config, n_users=8, max_length=4 * WINDOW, seed=4)
    engine = IncrementalEngine(old, "old", top_k=4)
    schedule = random_schedule(sequences, seed=4, max_batch=6)
    half = len(schedule) // 2
    before = Checker(engine, old, sequences)
    for batch in schedule[:half]:
        before.feed(batch)
    assert len(engine) > 0
    engine.swap(new, "new")
    assert len(engine) == 0 and engine.model_version == "new" and engine.stats.swaps == 1
    after = Checker(engine, new, sequences)
    for batch in schedule[half:]:
        after.feed(batch)
    assert before.worst <= TOLERANCE and after.worst <= TOLERANCE


def test_an_out_of_order_position_rebuilds_instead_of_reusing_the_cache(config) -> None:
    model = trained_looking(config, 5)
    rng = np.random.default_rng(5)
    sequences = {"u": TokenSequence(*(rng.integers(2, 7, 20) for _ in range(4)))}
    engine = IncrementalEngine(model, "v1", top_k=2)
    checker = Checker(engine, model, sequences)
    for position in [0, 1, 2, 3, 7, 8, 8, 2]:  # a gap, a redelivery, a rewind
        checker.feed([event(sequences, "u", position)])
    assert checker.worst <= TOLERANCE
    assert engine.stats.rebuilds == 3


def test_copy_evidence_accounts_for_the_distribution(config) -> None:
    model = trained_looking(config, 6)
    sequences = random_sequences(config, n_users=3, max_length=3 * WINDOW, seed=6)
    engine = IncrementalEngine(model, "v1", top_k=1)
    history = InMemoryHistory(sequences)
    for batch in random_schedule(sequences, seed=6, max_batch=3):
        result = engine.step(batch, history)
        for row, e in enumerate(batch):
            positions = result.copy_positions[row]
            weights = result.copy_weights[row]
            assert np.all(weights[positions < 0] == 0)
            inside = positions[positions >= 0]
            assert np.all((e.position - inside >= 0) & (e.position - inside < config.copy_window))
            assert sorted(inside.tolist()) == list(range(max(0, e.position - config.copy_window + 1), e.position + 1))
            copied = np.zeros(config.n_categories)
            np.add.at(copied, sequences[e.user].categories[positions[positions >= 0]], weights[positions >= 0])
            assert np.all(result.category_probs[row] >= copied - 1e-6)


def test_reduced_precision_cache_holds_more_users_at_a_small_error(config) -> None:
    model = trained_looking(config, 7)
    sequences = random_sequences(config, n_users=6, max_length=5 * WINDOW, seed=7)
    schedule = random_schedule(sequences, seed=7, max_batch=4)
    exact = IncrementalEngine(model, "v1")
    half = IncrementalEngine(model, "v1", cache_dtype=torch.float16)
    assert half.bytes_per_user < 0.7 * exact.bytes_per_user  # keys and values halved, copy keys kept float32
    history = InMemoryHistory(sequences)
    worst = 0.0
    for batch in schedule:
        difference = exact.step(batch, history).category_probs - half.step(batch, history).category_probs
        worst = max(worst, float(np.abs(difference).max()))
    assert 0.0 < worst < 1e-3


def test_first_event_and_unknown_ids(config) -> None:
    model = trained_looking(config, 8)
    engine = IncrementalEngine(model, "v1", top_k=3)
    result = engine.step([UserEvent("new", 0, EventTokens(OOV_ID, OOV_ID, 2, 0))])
    assert result.category_probs.shape == (1, config.n_categories)
    assert abs(float(result.category_probs.sum()) - 1.0) < 1e-5
    assert PAD_ID not in result.top_items and OOV_ID not in result.top_items
    assert result.copy_positions[0].tolist().count(0) == 1 and not result.rebuilt[0]


def test_rejects_a_budget_below_one_user_and_empty_steps(config) -> None:
    model = trained_looking(config, 0)
    with pytest.raises(ValueError, match="holds no user"):
        IncrementalEngine(model, "v1", budget_bytes=100)
    engine = IncrementalEngine(model, "v1")
    with pytest.raises(ValueError, match="at least one event"):
        engine.step([])


def test_slabs_grow_with_users_up_to_the_budget(config) -> None:
    model = trained_looking(config, 0)
    per_user = bytes_per_user(model)
    engine = IncrementalEngine(model, "v1", budget_bytes=100 * per_user)
    small = engine.cache_bytes
    engine.step([UserEvent(f"u{i}", 0, EventTokens(2, 2, 2, 0)) for i in range(100)])
    assert len(engine) == 100 and engine.stats.evictions == 0
    assert small < engine.cache_bytes <= 100 * per_user
    engine.step([UserEvent("one-more", 0, EventTokens(2, 2, 2, 0))])
    assert len(engine) == 100 and engine.stats.evictions == 1 and "u0" not in engine
