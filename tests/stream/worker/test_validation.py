from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.worker.validation import REASONS, Rejection, validate
from tests.stream import hostile
from topics.records import DEAD_LETTER_COPY_BYTES, DEAD_LETTER_REASONS, ClickEvent, DeadLetter
from topics.schema import validator
from topics.specs import EVENTS

NOW_MS = 1_800_000_000_000
GOOD = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "category_id": "c1",
    "event_type": "cart",
    "ts": 1511658000000,
}


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
        (with_(ts=float("inf")), "not_json"),  # Infinity is not JSON
        (b"[" * 6000 + b"]" * 6000, "too_deep"),
        (b'{"a":' * 17 + b"1" + b"}" * 17, "too_deep"),
        (b'{"ts": ' + b"9" * 5000 + b"}", "number_out_of_range"),
        (with_(item_id=10**40), "number_out_of_range"),
        (with_(user_id="\ud800"), "invalid_unicode"),  # json.dumps writes the escape
        (with_(item_id="i\udfff"), "invalid_unicode"),
        (with_(ts=1e308), "bad_timestamp"),
        (with_(ts="0001-01-01T00:00:00+23:59"), "bad_timestamp"),
        (b'{"ts": NaN}', "not_json"),
        (with_(item_id="x" * 257), "oversized"),
    ],
)
def test_each_kind_of_bad_input_is_named(raw: bytes, reason: str) -> None:
    result = validate(raw, NOW_MS)
    assert isinstance(result, Rejection) and result.reason == reason
    assert result.reason in REASONS and result.detail


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        (1511658000000, 1511658000000),
        (1511658000, 1511658000000),
        ("2017-11-26T01:00:00Z", 1511658000000),
        ("2017-11-26T09:00:00+08:00", 1511658000000),
    ],
)
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
@given(
    st.dictionaries(
        st.sampled_from(sorted(GOOD)), st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    )
)
def test_arbitrary_json_objects_never_raise(fields: dict) -> None:
    assert isinstance(validate(json.dumps(fields).encode(), NOW_MS), ClickEvent | Rejection)


INPUT = validator(EVENTS)
BEYOND_THE_SCHEMA = {"bad_timestamp", "number_out_of_range", "too_deep", "invalid_unicode", "oversized"}
"""What a schema cannot say: a day past the worker's clock, literals' lengths, nesting in
ignored keys, lone surrogates in a decoded string, the message's size in bytes."""
PRODUCER_REQUEST_LIMIT = 1_048_576  # max.request.size: the most a dead letter may be
MUTANTS = 49  # per drawn message: 2,041 drawn, 100,000 cases in all


def mutants(raw: bytes, rng: random.Random) -> list[bytes]:
    """Byte-level variants of a structured message: cut, flipped, spliced, grown past a limit."""
    out = []
    for _ in range(MUTANTS):
        at = rng.randrange(len(raw) + 1)
        choice = rng.randrange(6)
        if choice == 0:
            out.append(raw[:at])
        elif choice == 1 and raw:
            out.append(raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1 :])
        elif choice == 2:
            out.append(raw[:at] + rng.choice(hostile.LITERALS) + raw[at:])
        elif choice == 3:
            depth = rng.choice([15, 16, 17, 1000, 7000])
            out.append(raw[:at] + b"[" * depth + raw[at:] + b"]" * depth)
        elif choice == 4:
            out.append(raw[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\\ud800", b"\xed\xa0\x80", b"\x00"]) + raw[at:])
        else:
            out.append(raw + b" " * rng.choice([0, 1, 16_384 - len(raw), 16_385 - len(raw)]))
    return out


def _not_json(literal: str) -> None:
    raise ValueError(literal)


def check_total(raw: bytes) -> None:
    """The properties every message has: an event or a named refusal, never an exception; an
    event carries what the contract promises; a refusal's dead letter fits the producer."""
    result = validate(raw, NOW_MS)
    try:  # JSON text as RFC 8259 has it: UTF-8, no NaN or Infinity
        data = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except Exception:  # noqa: BLE001 - not JSON to the standard library either (or too deep for it)
        data = None
    if isinstance(data, dict):  # the input schema and the code agree
        valid = INPUT.is_valid(data)
        if isinstance(result, ClickEvent):
            assert valid, "accepted, so the schema admits it"
        elif valid:  # 1.0 is an integer to JSON Schema, a float (no id) to the worker
            assert result.reason in BEYOND_THE_SCHEMA or (
                result.reason == "wrong_type" and "is a float" in result.detail
            ), result
    if isinstance(result, ClickEvent):
        for name in ("event_id", "user_id", "item_id", "category_id"):
            value = getattr(result, name)
            assert 0 < len(value) <= 256 and value.strip() and value.encode("utf-8")
        assert result.event_type in ("view", "click", "cart", "fav", "purchase")
        assert 946_684_800_000 <= result.ts <= NOW_MS + 86_400_000
    else:
        assert isinstance(result, Rejection) and result.reason in REASONS and result.detail
        assert len(result.detail) <= 200 and result.detail.encode("utf-8")
        letter = DeadLetter.of(result.reason, result.detail, "clickstream.events", 0, 0, raw)
        assert len(letter.dumps()) < PRODUCER_REQUEST_LIMIT
        assert letter.original_truncated == (len(raw) > DEAD_LETTER_COPY_BYTES)


def test_a_hundred_thousand_hostile_messages_by_class_never_raise() -> None:
    """Structured messages of every class (Hypothesis, derandomised), each with byte-level
    mutants: 100,000 cases in a few seconds."""
    drawn = hostile.corpus(100_000 // (MUTANTS + 1) + 1)
    rng = random.Random(0)
    cases = 0
    reasons: set[str] = set()
    for raw in drawn:
        for case in (raw, *mutants(raw, rng)):
            check_total(case)
            result = validate(case, NOW_MS)
            reasons.add(result.reason if isinstance(result, Rejection) else "accepted")
            cases += 1
    assert cases >= 100_000
    assert reasons >= {
        "accepted",
        "not_json",
        "too_deep",
        "number_out_of_range",
        "invalid_unicode",
        "oversized",
        "missing_field",
        "wrong_type",
        "bad_timestamp",
        "not_object",
        "unknown_event_type",
    }, "the corpus reaches every class"


@settings(max_examples=2_000, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile.messages)
def test_any_hostile_message_is_an_event_or_a_named_refusal(raw: bytes) -> None:
    """The same properties, randomised and shrinking, so a failure comes back minimal."""
    check_total(raw)


def test_every_refusal_reason_is_a_dead_letter_reason() -> None:
    assert set(REASONS) <= set(DEAD_LETTER_REASONS)
