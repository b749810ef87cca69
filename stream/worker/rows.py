"""The bytes of a user's table row: a compact, versioned binary encoding of :class:`UserState`.

A row is one version byte, then a MessagePack array (:mod:`msgspec`). Everything in it comes
back exactly, so a worker that reads a user's row behaves as one that kept the state in
memory:

* raw item, category and behaviour ids are written once per row and referred to by index
  (a decimal id without leading zeros as an integer);
* event ids that share a prefix followed by lowercase hexadecimal of one length (the replay's
  ids, the pseudonymiser's ``e-...``), or that are all canonical UUIDs, are packed as their
  bytes; any others are written as they are;
* event times as a first time and differences, in seconds when every time is a whole second;
* the detector's distributions as float64 values in their order (a tie keeps its order).

Rows written before this format (JSON objects, version 1) are read as they are and written
back in the current version on the user's next event: no migration step is needed.

>>> state = UserState.empty()
>>> for n in range(3):
...     _ = state.accept(StoredEvent(f"e-{n:04x}", "1328010", "959452", "view", 1_505_117_799_000 + 60_000 * n), keep=50)
>>> raw = encode_row(state)
>>> raw[0], len(raw), decode_row(raw) == state
(2, 50, True)
"""

from __future__ import annotations

import json
import operator
import uuid
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, starmap
from typing import Any

import msgspec

from model.data.events import StoredEvent
from model.online.detector import DetectorState, Moved
from model.online.distribution import Distribution
from stream.worker.state import ShiftBrief, UserState

VERSION = 2
_JSON = ord("{")  # version 1: a JSON object
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()
_HEX = frozenset("0123456789abcdef")

Names = dict[str, int]  # raw id -> its index in the row's list of names


class RowFormatError(ValueError):
    """Bytes that are no user row of a version this code reads."""


def encode_row(state: UserState) -> bytes:
    """The row of ``state``, in the current version."""
    names: Names = {}
    events = state.events
    ids, items, categories, behaviours, times = zip(*events, strict=True) if events else ((),) * 5
    columns = [_indices(column, names) for column in (items, categories, behaviours)]
    detector = state.detector
    by_id = {event_id: i for i, event_id in enumerate(ids)}
    recent = [_recent_event(moved.event, by_id, events, names) for moved in detector.recent]
    gains = _distributions([moved.gains for moved in detector.recent], names)
    distributions = _distributions([detector.short, detector.long, detector.previous], names)
    body = [
        state.length,
        state.before_ts,
        state.duplicates,
        state.late,
        state.reordered,
        state.source_partition,
        state.source_offset,
        _pack_ids(ids),
        columns,
        _pack_times(times),
        [detector.events, detector.statistic, detector.armed, detector.since_alarm, distributions, recent, gains],
        [_brief(shift, names) for shift in state.shifts],
        [int(name) if _is_plain_number(name) else name for name in names],  # last: the fields before add names
    ]
    return bytes((VERSION,)) + _ENCODER.encode(body)


def decode_row(raw: bytes) -> UserState:
    """The state a row holds, of the current version or of an earlier one."""
    if not raw:
        raise RowFormatError("an empty row")
    if raw[0] == _JSON:
        return _from_json(raw)
    if raw[0] != VERSION:
        raise RowFormatError(f"row version {raw[0]}: this worker reads versions 1 and {VERSION}")
    try:
        body = _DECODER.decode(memoryview(raw)[1:])
        (
            length,
            before_ts,
            duplicates,
            late,
            reordered,
            partition,
            offset,
            ids,
            columns,
            times,
            detector,
            shifts,
            names,
        ) = body
        text = [str(name) for name in names]
        items, categories, behaviours = ([text[i] for i in column] for column in columns)
        fields = zip(_unpack_ids(ids), items, categories, behaviours, _unpack_times(times), strict=True)
        events = list(starmap(StoredEvent, fields))
        count, statistic, armed, since_alarm, distributions, recent, gains = detector
        short, long, previous = _read_distributions(distributions, text)
        moved = [
            Moved(_read_recent_event(event, events, text), gain)
            for event, gain in zip(recent, _read_distributions(gains, text), strict=True)
        ]
        return UserState(
            events,
            length,
            before_ts,
            duplicates,
            late,
            reordered,
            partition,
            offset,
            DetectorState(count, statistic, armed, since_alarm, short, long, previous, moved),
            [_read_brief(shift, text) for shift in shifts],
        )
    except (msgspec.DecodeError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise RowFormatError(f"a damaged version {VERSION} row: {type(error).__name__}: {error}") from error


def _indices(values: Iterable[str], names: Names) -> list[int]:
    return [names.setdefault(name, len(names)) for name in values]


def _is_plain_number(name: str) -> bool:
    """Whether ``name`` is an integer that MessagePack holds and that prints back as ``name``."""
    return 0 < len(name) <= 18 and name.isascii() and name.isdecimal() and (name == "0" or name[0] != "0")


def _pack_ids(ids: Sequence[str]) -> list[Any]:
    """``[kind, ...]``: 0 the ids as they are; 1 a shared prefix, the byte length of the
    hexadecimal rest of each, and those bytes; 2 canonical UUIDs as their 16 bytes each."""
    if ids:
        first = ids[0]
        rest = len(first)
        while rest > 0 and first[rest - 1] in _HEX:
            rest -= 1
        rest += (len(first) - rest) % 2  # a whole number of bytes
        prefix, size = first[:rest], (len(first) - rest) // 2
        if size and all(len(i) == len(first) and i.startswith(prefix) for i in ids):
            digits = "".join([i[rest:] for i in ids])
            try:
                packed = bytes.fromhex(digits)
            except ValueError:
                packed = b""
            if packed.hex() == digits:  # fromhex also reads capitals and spaces
                return [1, prefix, size, packed]
        if len(first) == 36:
            try:
                uuids = b"".join([uuid.UUID(i).bytes for i in ids])
            except ValueError:
                uuids = b""
            packed_ids = [2, uuids]
            if uuids and _unpack_ids(packed_ids) == list(ids):
                return packed_ids
    return [0, list(ids)]


def _unpack_ids(packed: list[Any]) -> list[str]:
    kind = packed[0]
    if kind == 0:
        return [str(i) for i in packed[1]]
    if kind == 1:
        _, prefix, size, raw = packed
        digits, step = raw.hex(), 2 * size
        return [prefix + digits[j : j + step] for j in range(0, len(digits), step)]
    if kind == 2:
        raw = packed[1]
        return [str(uuid.UUID(bytes=raw[j : j + 16])) for j in range(0, len(raw), 16)]
    raise ValueError(f"event ids of kind {kind}")


def _pack_times(times: Sequence[int]) -> list[int]:
    """``[unit, first, difference, ...]``, in seconds (unit 1000) when every time is a whole second."""
    unit = 1 if any(t % 1000 for t in times) else 1000
    scaled = [t // unit for t in times]
    return [unit, *scaled[:1], *map(operator.sub, scaled[1:], scaled)]


def _unpack_times(packed: list[int]) -> list[int]:
    unit = packed[0]
    return [t * unit for t in accumulate(packed[1:])]


def _distributions(distributions: Sequence[Distribution], names: Names) -> list[Any]:
    """``[categories, values]`` of each: the values as float32 where that holds every one of a
    distribution exactly (as it holds the model's own output), else as float64, in their order."""
    packed = []
    for p in distributions:
        exact = array("d", p.values())
        single = array("f", exact)
        values = single if single.tolist() == exact.tolist() else exact
        packed.append([_indices(p, names), values.tobytes()])
    return packed


def _read_distributions(packed: list[Any], names: list[str]) -> list[Distribution]:
    distributions = []
    for indices, raw in packed:
        values = array("f" if len(raw) == 4 * len(indices) else "d")
        values.frombytes(raw)
        if len(values) != len(indices):
            raise ValueError("a distribution of damaged length")
        distributions.append(dict(zip([names[i] for i in indices], values.tolist())))
    return distributions


def _recent_event(
    event: StoredEvent, by_id: dict[str, int], events: list[StoredEvent], names: Names
) -> int | list[Any]:
    """A detector's recent event as its index among the kept events, or written out when it is none of them."""
    at = by_id.get(event.event_id)
    if at is not None and events[at] == event:
        return at
    return [event.event_id, *_indices(event[1:4], names), event.ts]


def _read_recent_event(written: int | list[Any], events: list[StoredEvent], names: list[str]) -> StoredEvent:
    if isinstance(written, int):
        return events[written]
    event_id, item, category, behaviour, ts = written
    return StoredEvent(event_id, names[item], names[category], names[behaviour], ts)


def _brief(shift: ShiftBrief, names: Names) -> list[Any]:
    shift_id = shift["shift_id"]
    try:
        as_uuid = uuid.UUID(shift_id)
    except ValueError:
        as_uuid = None
    return [
        as_uuid.bytes if as_uuid is not None and str(as_uuid) == shift_id else shift_id,
        shift["event_id"],
        shift["ts"],
        shift["sequence_length"],
        _indices(shift["from"], names),
        _indices(shift["to"], names),
        shift["confidence"],
    ]


def _read_brief(packed: list[Any], names: list[str]) -> ShiftBrief:
    shift_id, event_id, ts, sequence_length, lost, gained, confidence = packed
    return {
        "shift_id": str(uuid.UUID(bytes=shift_id)) if isinstance(shift_id, bytes) else shift_id,
        "event_id": event_id,
        "ts": ts,
        "sequence_length": sequence_length,
        "from": [names[i] for i in lost],
        "to": [names[i] for i in gained],
        "confidence": confidence,
    }


def _from_json(raw: bytes) -> UserState:
    """A version 1 row: a JSON object, the detector's state as a list (absent in rows written
    before shift detection)."""
    try:
        row = json.loads(raw)
        detector_row = row.pop("detector", None)
        detector = DetectorState()
        if detector_row is not None:
            events, statistic, armed, since_alarm, short, long, previous, recent = detector_row
            moved = [Moved(StoredEvent(*r[:5]), r[5]) for r in recent]
            detector = DetectorState(events, statistic, armed, since_alarm, short, long, previous, moved)
        return UserState(events=[StoredEvent._make(e) for e in row.pop("events")], detector=detector, **row)
    except (ValueError, TypeError, KeyError) as error:
        raise RowFormatError(f"a damaged version 1 row: {type(error).__name__}: {error}") from error
