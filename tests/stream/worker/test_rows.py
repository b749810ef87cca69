from __future__ import annotations

import contextlib
import json
import statistics
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.data.events import StoredEvent
from model.online.detector import DetectorState, Moved, ShiftDetector
from stream.settings import Settings
from stream.worker.pipeline import InterestPipeline
from stream.worker.rows import VERSION, RowFormatError, decode_row, encode_row
from stream.worker.state import ShiftBrief, UserState
from tests.model.online.test_detector import SETTINGS, feed
from tests.stream.helpers import raw_messages, run_pipeline


def v1_row(state: UserState) -> bytes:
    """The JSON row a worker wrote before binary rows (what the table may still hold)."""
    detector = state.detector
    row = {
        "length": state.length,
        "before_ts": state.before_ts,
        "duplicates": state.duplicates,
        "late": state.late,
        "reordered": state.reordered,
        "source_partition": state.source_partition,
        "source_offset": state.source_offset,
        "shifts": state.shifts,
        "events": state.events,
        "detector": [
            detector.events,
            detector.statistic,
            detector.armed,
            detector.since_alarm,
            detector.short,
            detector.long,
            detector.previous,
            [[*moved.event, moved.gains] for moved in detector.recent],
        ],
    }
    return json.dumps(row, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def pipeline_states(stream_log, stream_checkpoint) -> list[UserState]:
    checkpoint, _ = stream_checkpoint
    _, _, states, _ = run_pipeline(InterestPipeline(checkpoint, Settings()), raw_messages(stream_log), batch_size=64)
    return list(states.values())


def test_the_worker_s_rows_come_back_exactly_and_a_third_of_their_json_size(pipeline_states) -> None:
    assert any(state.shifts for state in pipeline_states) and any(state.detector.recent for state in pipeline_states)
    for state in pipeline_states:
        raw = encode_row(state)
        assert raw[0] == VERSION and decode_row(raw) == state
    binary = statistics.median(len(encode_row(state)) for state in pipeline_states)
    assert binary < statistics.median(len(v1_row(state)) for state in pipeline_states) / 3


def test_json_rows_are_read_and_written_back_in_the_current_version(pipeline_states) -> None:
    for state in pipeline_states:
        migrated = decode_row(v1_row(state))
        assert migrated == state and decode_row(encode_row(migrated)) == state
    before_detection = json.dumps({"length": 1, "before_ts": None, "duplicates": 0, "late": 0, "reordered": 0,
                                   "source_partition": 0, "source_offset": 3, "shifts": [],
                                   "events": [["e1", "i1", "c1", "view", 1000]]}).encode()  # fmt: skip
    assert decode_row(before_detection).detector == DetectorState()


def test_the_detector_continues_the_same_from_a_row_read_back_after_every_event() -> None:
    categories = ["a"] * 20 + ["b"] * 20
    detector = ShiftDetector(SETTINGS)
    whole = feed(detector, categories)
    state = UserState.empty()
    restored = []
    for i, category in enumerate(categories):
        event = StoredEvent(f"e{i}", f"item{i}", category, "view", 1000 * i)
        state.accept(event, keep=10, source=(0, i))
        state = decode_row(encode_row(state))
        shift = detector.update(state.detector, {category: 0.8, "x": 0.05, "y": 0.05}, event)
        restored += [shift] if shift else []
    assert restored == whole
    assert len(state.detector.recent) == SETTINGS.evidence_events


texts = st.text(max_size=12)
ids = st.one_of(
    texts,
    st.integers(0, 10**20).map(str),
    st.from_regex(r"0[0-9]{1,5}", fullmatch=True),  # leading zeros: not a number
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.binary(min_size=1, max_size=16).map(bytes.hex),
    st.binary(min_size=1, max_size=16).map(lambda b: "e-" + b.hex()),
    st.binary(min_size=1, max_size=16).map(lambda b: b.hex().upper()),
)
times = st.integers(-(2**62), 2**62)
events = st.builds(StoredEvent, ids, ids, ids, ids, times)
floats = st.floats(allow_nan=False)
distributions = st.dictionaries(ids, st.one_of(floats, st.floats(width=32, allow_nan=False)), max_size=6)
briefs = st.fixed_dictionaries(
    {
        "shift_id": st.one_of(st.uuids().map(str), texts),
        "event_id": ids,
        "ts": times,
        "sequence_length": st.integers(0, 2**40),
        "from": st.lists(ids, max_size=3),
        "to": st.lists(ids, max_size=3),
        "confidence": st.one_of(st.none(), floats),
    }
)


@st.composite
def user_states(draw: st.DrawFn) -> UserState:
    kept = draw(st.one_of(st.lists(events, max_size=12), st.lists(ids, max_size=12, unique=True).map(
        lambda names: [StoredEvent(name, "1", "2", "view", 1000 * n) for n, name in enumerate(names)])))  # fmt: skip
    recent = [Moved(draw(st.one_of(st.sampled_from(kept), events) if kept else events), draw(distributions))
              for _ in range(draw(st.integers(0, 4)))]  # fmt: skip
    detector = DetectorState(
        draw(st.integers(0, 2**40)), draw(floats), draw(st.booleans()), draw(st.integers(0, 2**40)),
        draw(distributions), draw(distributions), draw(distributions), recent,
    )  # fmt: skip
    length, duplicates, late, reordered, partition, offset = draw(
        st.lists(st.integers(-1, 2**62), min_size=6, max_size=6)
    )
    before = draw(st.one_of(st.none(), times))
    shifts = cast(list[ShiftBrief], draw(st.lists(briefs, max_size=3)))
    return UserState(kept, length, before, duplicates, late, reordered, partition, offset, detector, shifts)


@settings(max_examples=150, deadline=None)
@given(user_states())
def test_any_state_comes_back_exactly(state: UserState) -> None:
    assert decode_row(encode_row(state)) == state


@settings(max_examples=100, deadline=None)
@given(user_states(), st.data())
def test_a_damaged_row_is_refused_with_a_reason_or_read_as_some_state(state: UserState, data: st.DataObject) -> None:
    raw = bytearray(encode_row(state))
    cut = data.draw(st.integers(1, len(raw)))
    damaged = bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw[:cut] + data.draw(st.binary(max_size=8)))
    with contextlib.suppress(RowFormatError):
        assert isinstance(decode_row(damaged), UserState)


@pytest.mark.parametrize("raw", [b"", b"\x07whatever", b"{not json", b'{"length": 1}', b"\x02\xc1"])
def test_bytes_that_are_no_row_are_refused(raw: bytes) -> None:
    with pytest.raises(RowFormatError):
        decode_row(raw)
