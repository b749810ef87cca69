"""Turn the raw bytes of an input message into a :class:`ClickEvent`, or say why not.

Every refusal has a short machine-readable ``reason`` (a Prometheus label and the
dead-letter field) and a human ``detail``.

>>> validate(b'{"event_id": "e1", "user_id": "u1", "item_id": "i9", "category_id": "c3", "event_type": "pv", "ts": 1511658000}', now_ms=1_700_000_000_000)
<ClickEvent: event_id='e1', user_id='u1', item_id='i9', category_id='c3', event_type='view', ts=1511658000000>
>>> validate(b"\\xff not json", now_ms=0).reason
'not_json'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from model.events import canonical_event_type
from topics.records import ClickEvent

Reason = Literal[
    "not_json", "not_object", "missing_field", "wrong_type", "oversized", "unknown_event_type", "bad_timestamp", "late", "wrong_key"
]
REASONS: tuple[str, ...] = get_args(Reason)
ID_FIELDS = ("event_id", "user_id", "item_id", "category_id")
EARLIEST_MS = 946_684_800_000  # 2000-01-01: anything older is a unit or clock error
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000
SECONDS_CUTOFF = 100_000_000_000  # integers below this are epoch seconds, above are milliseconds


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


def _timestamp_ms(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw * 1000 if abs(raw) < SECONDS_CUTOFF else raw
    if isinstance(raw, float) and math.isfinite(raw):
        return int(raw * 1000) if abs(raw) < SECONDS_CUTOFF else int(raw)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None  # a wall-clock time without a zone is ambiguous
        return int(parsed.timestamp() * 1000)
    return None


def validate(raw: bytes, now_ms: int, max_string_length: int = 256, max_bytes: int = 16_384) -> ClickEvent | Rejection:
    """Parse and check one message; ``now_ms`` bounds timestamps from the future."""
    if len(raw) > max_bytes:
        return Rejection("oversized", f"the message has {len(raw)} bytes (limit {max_bytes})")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return Rejection("not_json", str(error)[:200])
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
        ids[name] = value
    if not isinstance(data["event_type"], str):
        return Rejection("wrong_type", f"event_type is a {type(data['event_type']).__name__}, not a string")
    event_type = canonical_event_type(data["event_type"][:max_string_length])
    if event_type is None:
        return Rejection("unknown_event_type", f"unknown event_type {data['event_type'][:40]!r}")
    ts = _timestamp_ms(data["ts"])
    if ts is None:
        return Rejection("bad_timestamp", f"ts {str(data['ts'])[:40]!r} is not epoch seconds/ms or ISO 8601 with a zone")
    if not EARLIEST_MS <= ts <= now_ms + FUTURE_TOLERANCE_MS:
        return Rejection("bad_timestamp", f"ts {ts} ms is before 2000 or more than a day in the future")
    return ClickEvent(event_type=event_type, ts=ts, **ids)
