"""The worker's logic without Kafka: admission, ordering, dedup, exactness of scoring, shifts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.online.detector import DetectorState, ShiftDetector
from model.online.engine import bytes_per_user
from model.online.reference import FullRecompute, Recorded
from model.online.scorer import InterestScorer, recent_interest_along
from model.shift_eval.benchmark import Track
from stream.settings import Settings
from stream.worker.pipeline import Admitted, Ignored, InterestPipeline, Refused, shift_id
from stream.worker.rows import decode_row, encode_row
from stream.worker.state import UserState
from tests.stream.helpers import (
    NOW_MS,
    SMALL_MODEL_DETECTOR,
    assert_update_matches,
    offline_probabilities,
    raw_messages,
    run_pipeline,
    small_checkpoint,
    spliced_history,
    taobao_users,
)
from topics.records import InterestShift, InterestUpdate

TOLERANCE = 10  # events after the seam within which the shift must come


@pytest.fixture(scope="module")
def log():
    return taobao_users(12)


@pytest.fixture(scope="module")
def checkpoint(log):
    return small_checkpoint(log)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_updates_equal_the_offline_model_in_any_batching(log, checkpoint, batch_size) -> None:
    settings = Settings(cache_mb=1)  # a small cache: some users are evicted and rebuilt
    pipeline = InterestPipeline(checkpoint, settings)
    updates, refused, _, _ = run_pipeline(pipeline, raw_messages(log), batch_size)
    reference = offline_probabilities(checkpoint, log)
    assert not refused
    assert len(updates) == log.n_events
    seen: dict[str, int] = {}
    for update in updates:
        payload = json.loads(InterestUpdate.loads(json.dumps(update).encode()).dumps())  # the record's exact fields
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
        assert pipeline.admit(value, key, 0, offset, state, NOW_MS) == Ignored(
            key.decode(), json.loads(value)["event_id"], "redelivered"
        )
    offset, value = own[-2]  # the same event in a new message, as a producer's retry sends it
    assert pipeline.admit(value, key, 0, 10_000, state, NOW_MS) == Ignored(
        key.decode(), json.loads(value)["event_id"], "duplicate"
    )
    assert state.events == kept and state.length == len(own) and state.duplicates == 1


def test_late_events_are_refused_and_slightly_late_ones_reordered(log, checkpoint) -> None:
    pipeline = InterestPipeline(checkpoint, Settings(lateness_s=60))
    user = log.users[0]
    state = UserState.empty()

    def message(i: int, ts_s: int) -> bytes:
        fields = {
            "event_id": f"e{i}",
            "user_id": user.user_id,
            "item_id": user.items[i],
            "category_id": user.categories[i],
            "event_type": user.behaviors[i],
            "ts": ts_s * 1000,
        }
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
    update = pipeline.score([reordered]).updates[0]
    assert update is not None and update.event_id == "e3" and update.sequence_length == 3


def test_messages_keyed_by_something_else_are_refused(log, checkpoint) -> None:
    pipeline = InterestPipeline(checkpoint, Settings())
    _, value = raw_messages(log.first_users(1))[0]
    for wrong in (None, b"someone-else"):
        outcome = pipeline.admit(value, wrong, 2, 7, UserState.empty(), NOW_MS)
        assert isinstance(outcome, Refused) and outcome.dead_letter.reason == "wrong_key"
        assert (outcome.dead_letter.source_partition, outcome.dead_letter.source_offset) == (2, 7)


def test_publish_threshold_suppresses_small_moves(log, checkpoint) -> None:
    stream = raw_messages(log.first_users(3))
    every, _, _, _ = run_pipeline(InterestPipeline(checkpoint, Settings()), stream, 16)
    some, _, _, _ = run_pipeline(InterestPipeline(checkpoint, Settings(publish_threshold=0.05)), stream, 16)
    published = [u for u in some if u is not None]
    assert all(u is not None for u in every)
    assert 0 < len(published) < len(every)
    assert np.all([u in every for u in published])


def test_a_spliced_history_raises_one_shift_at_the_seam(checkpoint) -> None:
    spliced = spliced_history(taobao_users(60))
    pipeline = InterestPipeline(checkpoint, Settings(), ShiftDetector(SMALL_MODEL_DETECTOR))
    _, refused, _, shifts = run_pipeline(pipeline, raw_messages(spliced.log), batch_size=16)
    assert not refused
    assert len(shifts) == 1
    shift = shifts[0]
    position = shift["sequence_length"] - 1
    assert spliced.seam <= position <= spliced.seam + TOLERANCE
    assert spliced.before in [c["category_id"] for c in shift["from_categories"]]
    assert spliced.after in [c["category_id"] for c in shift["to_categories"]]
    assert shift["evidence"] and all(e["ts"] <= shift["ts"] for e in shift["evidence"])
    assert shift["shift_id"] == shift_id(shift["user_id"], shift["event_id"])
    InterestShift.loads(json.dumps(shift).encode())  # the record's contract


def test_the_detector_is_fed_the_recent_interest_detect_eval_scores(log, checkpoint) -> None:
    """The worker's detector input is :func:`model.online.scorer.recent_interest_along`, the input
    ``detect-eval`` tunes and scores the detector on: the same shifts at the same events."""
    detector = ShiftDetector(SMALL_MODEL_DETECTOR)
    shifts = run_pipeline(InterestPipeline(checkpoint, Settings(), detector), raw_messages(log), 16)[3]
    settings = SMALL_MODEL_DETECTOR
    offline = []
    for user, recent in zip(
        log.users, recent_interest_along(checkpoint, log.users, settings.recent_events, settings.top_m, progress=False)
    ):
        state = DetectorState()
        for event, distribution in zip(Track(user.user_id, "natural", user, ()).events(), recent):
            shift = detector.update(state, distribution, event)
            if shift is not None:
                offline.append(
                    (user.user_id, shift.events_seen, [m.category_id for m in shift.to_categories], shift.divergence)
                )
    assert offline, "the sample should hold shifts"
    published = [
        (s["user_id"], s["sequence_length"], [c["category_id"] for c in s["to_categories"]], s["divergence"])
        for s in shifts
    ]
    published, offline = sorted(published), sorted(offline)
    assert [p[:3] for p in published] == [o[:3] for o in offline]
    assert [p[3] for p in published] == pytest.approx(
        [o[3] for o in offline], abs=1e-4
    )  # batched windows: float rounding


@pytest.mark.parametrize("batch_size", [1, 64])
def test_shifts_survive_batching_and_a_restart_of_the_rows(log, checkpoint, batch_size) -> None:
    """Same shifts, one event at a time or in batches, and when every row is written and
    read back (as after a restart) halfway through."""
    stream = raw_messages(log)
    detector = ShiftDetector(SMALL_MODEL_DETECTOR)
    reference = run_pipeline(InterestPipeline(checkpoint, Settings(), detector), stream, 16)[3]
    pipeline = InterestPipeline(checkpoint, Settings(), detector)
    half = len(stream) // 2
    _, _, states, first = run_pipeline(pipeline, stream[:half], batch_size)
    restarted = InterestPipeline(checkpoint, Settings(), detector)
    rows = {key: decode_row(encode_row(state)) for key, state in states.items()}
    _, _, _, second = run_pipeline(restarted, stream[half:], batch_size, states=rows, first_offset=half)
    assert reference, "the sample should hold shifts"
    assert [s["shift_id"] for s in first + second] == [s["shift_id"] for s in reference]


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float16])
def test_every_reading_equals_a_full_recompute_and_raises_the_same_shifts(log, checkpoint, cache_dtype) -> None:
    """The cached scorer against :class:`FullRecompute` in lockstep, each on its own rows: a cache
    of three users (evictions and rebuilds every batch), batches of 48 (bursts of a user's
    events) and a model swap halfway; every reading within 1e-5, the same shifts at the same events."""
    detector = ShiftDetector(SMALL_MODEL_DETECTOR)
    settings = Settings()
    d = detector.settings
    three_users = 3 * bytes_per_user(checkpoint.model, cache_dtype)
    cached = InterestScorer(
        checkpoint,
        budget_bytes=three_users,
        top_k=settings.top_k,
        recent_events=d.recent_events,
        top_m=d.top_m,
        cache_dtype=cache_dtype,
    )
    scorers = [
        Recorded(cached),
        Recorded(FullRecompute(checkpoint, top_k=settings.top_k, recent_events=d.recent_events, top_m=d.top_m)),
    ]
    pipelines = [InterestPipeline(checkpoint, settings, detector, scorer) for scorer in scorers]
    other = small_checkpoint(log, seed=1)
    stream = raw_messages(log)
    states: list[dict] = [{}, {}]
    shifts: list[list[str]] = [[], []]
    worst = 0.0
    for start in range(0, len(stream), 48):
        if start == 480:
            for pipeline in pipelines:
                pipeline.swap(other, detector)
        for run, pipeline in enumerate(pipelines):
            batch = []
            for offset, (key, value) in enumerate(stream[start : start + 48], start=start):
                state = states[run].setdefault(key, UserState.empty())
                admitted = pipeline.admit(value, key, 0, offset, state, NOW_MS)
                assert isinstance(admitted, Admitted)
                batch.append(admitted)
            shifts[run] += [s.shift_id for s in pipeline.score(batch).shifts]
        fast, slow = scorers[0].last, scorers[1].last
        assert fast is not None and slow is not None and fast.model_version == slow.model_version
        worst = max(
            worst,
            float(np.abs(fast.probs - slow.probs).max()),
            float(np.abs(fast.recent_probs - slow.recent_probs).max()),
        )
        assert np.abs(fast.entropy - slow.entropy).max() < 1e-4
    assert cached.engine.stats.evictions > 0 and cached.engine.stats.rebuilds > 0 and cached.engine.stats.swaps == 1
    assert worst < 1e-5
    assert shifts[0] and shifts[0] == shifts[1]
