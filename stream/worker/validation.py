"""Turn the raw bytes of an input message into a :class:`ClickEvent`, or say why not.

Total over bytes: whatever arrives, :func:`validate` returns an event or a
:class:`Rejection` and never raises. Every refusal has a short machine-readable ``reason``
(a Prometheus label and the dead-letter field) and a human ``detail``. The limits, and why
they hold together:

- a message has at most ``max_bytes`` bytes (``SHIFTWATCH_MAX_EVENT_BYTES``, 16 KiB), and a
  dead letter copies at most :data:`topics.records.DEAD_LETTER_COPY_BYTES` (64 KiB) of it,
  so every refusal of a message of an accepted size carries it whole, and a dead letter
  always fits the producer's 1 MiB request;
- arrays and objects nest at most :data:`MAX_DEPTH` deep (an event is one flat object):
  deeper input is refused before the parser recurses;
- a number literal has at most :data:`MAX_NUMBER_CHARS` characters (any 64-bit integer, any
  float) and is finite as a float (``number_out_of_range``); ``NaN`` and ``Infinity`` are
  not JSON and are refused;
- the bytes must be UTF-8 and the strings the event uses valid Unicode (no lone surrogate
  from a ``\\ud800`` escape); ids have at most ``max_string_length`` characters.

>>> raw = b'{"event_id": "e1", "user_id": "u1", "item_id": "i9", "category_id": "c3", "event_type": "pv", "ts": 1511658000}'
>>> validate(raw, now_ms=1_700_000_000_000)
ClickEvent(event_id='e1', user_id='u1', item_id='i9', category_id='c3', event_type='view', ts=1511658000000)
>>> validate(b"\\xff not json", now_ms=0).reason
'not_json'
>>> validate(b"[" * 6000 + b"]" * 6000, now_ms=0).reason
'too_deep'
>>> validate(b'{"ts": ' + b"9" * 5000 + b"}", now_ms=0).reason
'number_out_of_range'
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

import numpy as np

from model.data.events import canonical_event_type
from topics.records import EARLIEST_MS, SECONDS_CUTOFF, ClickEvent, InputRefusal

REASONS: tuple[str, ...] = get_args(InputRefusal)
ID_FIELDS = ("event_id", "user_id", "item_id", "category_id")
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000
MAX_DEPTH = 16
MAX_NUMBER_CHARS = 32
MAX_TIMESTAMP_CHARS = 64
DETAIL_CHARS = 200
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: InputRefusal
    detail: str


class _Refused(Exception):
    """Raised by the parser's hooks to stop at the first bad literal."""

    def __init__(self, reason: InputRefusal, detail: str):
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


def _int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused("number_out_of_range", f"a number of {len(literal)} characters (limit {MAX_NUMBER_CHARS})")
    return int(literal)


def _float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused("number_out_of_range", f"a number of {len(literal)} characters (limit {MAX_NUMBER_CHARS})")
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused("number_out_of_range", f"the number {printable(literal, 40)} overflows a float")
    return value


def _constant(literal: str) -> None:
    raise _Refused("not_json", f"{literal} is not JSON")


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in ``raw`` (brackets inside strings do not count).

    >>> nesting_depth(b'{"a": [[1], "]]]"]}'), nesting_depth(b'["[[", 1]'), nesting_depth(b"")
    (3, 1, 0)
    """
    steps = _OPEN[np.frombuffer(_STRING.sub(b"", raw), dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def printable(text: str, limit: int = DETAIL_CHARS) -> str:
    """``text`` cut to ``limit`` characters and safe to encode as UTF-8 (a lone surrogate escaped).

    >>> printable("ab\\ud800c", 3)
    'ab\\\\ud800'
    """
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _timestamp_ms(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw * 1000 if abs(raw) < SECONDS_CUTOFF else raw
    if isinstance(raw, float):
        if not math.isfinite(raw) or abs(raw) >= 1e15:  # past the year 33,000 in milliseconds
            return None
        return int(raw * 1000) if abs(raw) < SECONDS_CUTOFF else int(raw)
    if isinstance(raw, str) and len(raw) <= MAX_TIMESTAMP_CHARS:
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                return None  # a wall-clock time without a zone is ambiguous
            return int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError, OSError):  # not ISO 8601, or out of datetime's range
            return None
    return None


def parse(raw: bytes, max_bytes: int) -> object | Rejection:
    """The JSON value of ``raw`` within the limits above, or why not (never raises).

    >>> parse(b'{"a": NaN}', 100).reason, parse(b'[1e999]', 100).reason, parse(b"[1]", 100)
    ('not_json', 'number_out_of_range', [1])
    """
    if len(raw) > max_bytes:
        return Rejection("oversized", f"the message has {len(raw)} bytes (limit {max_bytes})")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and (depth := nesting_depth(raw)) > MAX_DEPTH:
        return Rejection("too_deep", f"arrays and objects nest {depth} deep (limit {MAX_DEPTH})")
    try:
        data: object = json.loads(raw.decode("utf-8"), parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _Refused as refused:
        return refused.rejection
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return Rejection("not_json", printable(str(error)))
    return data


def validate(raw: bytes, now_ms: int, max_string_length: int = 256, max_bytes: int = 16_384) -> ClickEvent | Rejection:
    """Parse and check one message; ``now_ms`` bounds timestamps from the future."""
    data = parse(raw, max_bytes)
    if isinstance(data, Rejection):
        return data
    if not isinstance(data, dict):
        return Rejection("not_object", f"a JSON {type(data).__name__}, not an object")
    missing = [name for name in (*ID_FIELDS, "event_type", "ts") if data.get(name) is None]
    if missing:
        return Rejection("missing_field", f"missing {', '.join(missing)}")
    ids = {}
    for name in ID_FIELDS:
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return Rejection("wrong_type", f"{name} is a {type(value).__name__}, not a string or integer")
        value = str(value)
        if not value.strip():
            return Rejection("missing_field", f"{name} is empty")
        if len(value) > max_string_length:
            return Rejection("oversized", f"{name} has {len(value)} characters (limit {max_string_length})")
        if not _valid_unicode(value):
            return Rejection("invalid_unicode", f"{name} holds a lone surrogate")
        ids[name] = value
    if not isinstance(data["event_type"], str):
        return Rejection("wrong_type", f"event_type is a {type(data['event_type']).__name__}, not a string")
    event_type = canonical_event_type(data["event_type"][:max_string_length])
    if event_type is None:
        return Rejection("unknown_event_type", f"unknown event_type {printable(data['event_type'], 40)!r}")
    ts = _timestamp_ms(data["ts"])
    if ts is None:
        shown = printable(
            str(data["ts"]) if not isinstance(data["ts"], (list, dict)) else type(data["ts"]).__name__, 40
        )
        return Rejection("bad_timestamp", f"ts {shown!r} is not epoch seconds/ms or ISO 8601 with a zone")
    if not EARLIEST_MS <= ts <= now_ms + FUTURE_TOLERANCE_MS:
        return Rejection("bad_timestamp", f"ts {ts} ms is before 2000 or more than a day in the future")
    return ClickEvent(event_type=event_type, ts=ts, **ids)
