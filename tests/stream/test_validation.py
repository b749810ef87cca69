from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.validation import REASONS, Rejection, validate
from topics.records import ClickEvent

NOW_MS = 1_800_000_000_000
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "category_id": "c1", "event_type": "cart", "ts": 1511658000000}


def with_(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\x01", "not_json"),
        (b'"just a string"', "not_object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "item_id"}).encode(), "missing_field"),
        (with_(user_id=None), "missing_field"),
        (with_(user_id="  "), "missing_field"),
        (with_(category_id={"a": 1}), "wrong_type"),
        (with_(user_id=True), "wrong_type"),
        (with_(event_type=3), "wrong_type"),
        (with_(event_type="like"), "unknown_event_type"),
        (with_(ts="yesterday"), "bad_timestamp"),
        (with_(ts="2017-11-25T10:00:00"), "bad_timestamp"),  # no zone
        (with_(ts=NOW_MS + 2 * 86_400_000), "bad_timestamp"),
        (with_(ts=-5), "bad_timestamp"),
        (with_(ts=float("inf")), "bad_timestamp"),
        (with_(item_id="x" * 257), "oversized"),
    ],
)
def test_each_kind_of_bad_input_is_named(raw: bytes, reason: str) -> None:
    result = validate(raw, NOW_MS)
    assert isinstance(result, Rejection) and result.reason == reason
    assert result.reason in REASONS and result.detail


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [(1511658000000, 1511658000000), (1511658000, 1511658000000), ("2017-11-26T01:00:00Z", 1511658000000),
     ("2017-11-26T09:00:00+08:00", 1511658000000)],
)  # fmt: skip
def test_timestamps_in_milliseconds_seconds_or_iso(ts: object, expected_ms: int) -> None:
    event = validate(with_(ts=ts), NOW_MS)
    assert isinstance(event, ClickEvent) and event.ts == expected_ms


def test_taobao_behaviours_and_integer_ids_are_normalised() -> None:
    event = validate(with_(event_type="buy", item_id=42), NOW_MS)
    assert isinstance(event, ClickEvent) and (event.event_type, event.item_id) == ("purchase", "42")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(validate(raw, NOW_MS), ClickEvent | Rejection)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(GOOD)), st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)))
def test_arbitrary_json_objects_never_raise(fields: dict) -> None:
    assert isinstance(validate(json.dumps(fields).encode(), NOW_MS), ClickEvent | Rejection)
