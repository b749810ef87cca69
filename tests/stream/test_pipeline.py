"""The worker's logic without Kafka: admission, ordering, dedup, and exactness of scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.pipeline import Admitted, Ignored, InterestPipeline, Refused
from stream.settings import Settings
from stream.state import UserState
from tests.stream.helpers import (
    assert_update_matches,
    offline_probabilities,
    raw_messages,
    small_checkpoint,
    taobao_users,
)
from topics.records import InterestUpdate

NOW_MS = 1_800_000_000_000


@pytest.fixture(scope="module")
def log():
    return taobao_users(12)


@pytest.fixture(scope="module")
def checkpoint(log):
    return small_checkpoint(log)


def run(pipeline: InterestPipeline, stream: list[tuple[bytes, bytes]], batch_size: int) -> tuple[list, list, dict]:
    states: dict[bytes, UserState] = {}
    updates, refused = [], []
    pending: list[Admitted] = []
    for offset, (key, value) in enumerate(stream):
        state = states.setdefault(key, UserState.empty())
        outcome = pipeline.admit(value, key, 0, offset, state, NOW_MS)
        if isinstance(outcome, Refused):
            refused.append(outcome.dead_letter)
        elif isinstance(outcome, Admitted):
            pending.append(outcome)
        if len(pending) == batch_size:
            updates.extend(pipeline.score(pending))
            pending = []
    updates.extend(pipeline.score(pending))
    return updates, refused, states


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_updates_equal_the_offline_model_in_any_batching(log, checkpoint, batch_size) -> None:
    settings = Settings(cache_mb=1)  # a small cache: some users are evicted and rebuilt
    pipeline = InterestPipeline(checkpoint, settings)
    updates, refused, _ = run(pipeline, raw_messages(log), batch_size)
    reference = offline_probabilities(checkpoint, log)
    assert not refused
    assert len(updates) == log.n_events
    seen: dict[str, int] = {}
    for update in updates:
        payload = json.loads(InterestUpdate.from_data(update).dumps())  # the record's exact fields
        assert payload == update
        assert payload["sequence_length"] == seen.get(payload["user_id"], 0) + 1  # per-user order
        seen[payload["user_id"]] = payload["sequence_length"]
        assert_update_matches(payload, checkpoint, reference[payload["user_id"]])
        assert len(payload["top_categories"]) == settings.top_k
        assert payload["model_version"] == checkpoint.model_version


def test_a_message_or_an_event_id_seen_before_is_ignored_and_changes_nothing(log, checkpoint) -> None:
    pipeline = InterestPipeline(checkpoint, Settings())
    stream = raw_messages(log.first_users(2))
    key = stream[0][0]
    own = [(i, v) for i, (k, v) in enumerate(stream) if k == key]
    state = UserState.empty()
    for offset, value in own:
        assert isinstance(pipeline.admit(value, key, 0, offset, state, NOW_MS), Admitted)
    kept = list(state.events)
    for offset, value in own[:3]:  # redelivered after a crash: long out of the kept events, known by offset
        assert pipeline.admit(value, key, 0, offset, state, NOW_MS) == Ignored(key.decode(), json.loads(value)["event_id"], "redelivered")
    offset, value = own[-2]  # the same event in a new message, as a producer's retry sends it
    assert pipeline.admit(value, key, 0, 10_000, state, NOW_MS) == Ignored(key.decode(), json.loads(value)["event_id"], "duplicate")
    assert state.events == kept and state.length == len(own) and state.duplicates == 1


def test_late_events_are_refused_and_slightly_late_ones_reordered(log, checkpoint) -> None:
    pipeline = InterestPipeline(checkpoint, Settings(lateness_s=60))
    user = log.users[0]
    state = UserState.empty()

    def message(i: int, ts_s: int) -> bytes:
        fields = {"event_id": f"e{i}", "user_id": user.user_id, "item_id": user.items[i],
                  "category_id": user.categories[i], "event_type": user.behaviors[i], "ts": ts_s * 1000}  # fmt: skip
        return json.dumps(fields).encode()

    key = user.user_id.encode()
    base = user.timestamps[0]
    assert isinstance(pipeline.admit(message(0, base), key, 0, 0, state, NOW_MS), Admitted)
    assert isinstance(pipeline.admit(message(1, base + 100), key, 0, 1, state, NOW_MS), Admitted)
    late = pipeline.admit(message(2, base + 100 - 61), key, 0, 2, state, NOW_MS)
    assert isinstance(late, Refused) and late.dead_letter.reason == "late"
    reordered = pipeline.admit(message(3, base + 50), key, 0, 3, state, NOW_MS)
    assert isinstance(reordered, Admitted) and reordered.reorder
    assert [e.event_id for e in state.events] == ["e0", "e3", "e1"]
    update = pipeline.score([reordered])[0]
    assert update["event_id"] == "e3" and update["sequence_length"] == 3


def test_messages_keyed_by_something_else_are_refused(log, checkpoint) -> None:
    pipeline = InterestPipeline(checkpoint, Settings())
    key, value = raw_messages(log.first_users(1))[0]
    for wrong in (None, b"someone-else"):
        outcome = pipeline.admit(value, wrong, 2, 7, UserState.empty(), NOW_MS)
        assert isinstance(outcome, Refused) and outcome.dead_letter.reason == "wrong_key"
        assert (outcome.dead_letter.source_partition, outcome.dead_letter.source_offset) == (2, 7)


def test_publish_threshold_suppresses_small_moves(log, checkpoint) -> None:
    stream = raw_messages(log.first_users(3))
    every, _, _ = run(InterestPipeline(checkpoint, Settings()), stream, 16)
    some, _, _ = run(InterestPipeline(checkpoint, Settings(publish_threshold=0.05)), stream, 16)
    published = [u for u in some if u is not None]
    assert all(u is not None for u in every)
    assert 0 < len(published) < len(every)
    assert np.all([u in every for u in published])
