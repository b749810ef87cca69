"""Loading real event logs into per-user sequences, counting every dirty row.

Two source shapes are supported:

* ``taobao``: a CSV of ``user_id,item_id,category_id,behavior_type,timestamp`` rows
  (Taobao UserBehavior), plain or gzip-compressed, no header;
* ``s3rec``: S3-Rec sequence files, one ``user_id item_1 item_2 ...`` line per user in
  time order, with ``<Name>_item2attributes.json`` beside it. These logs carry no
  timestamps and no behaviour, so every event is a ``purchase`` with unknown time gap.

Bad rows never raise: they are dropped (or, when only out of order, re-sorted) and
counted in a :class:`DirtyReport`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from model.data.events import canonical_event_type

DataFormat = Literal["taobao", "s3rec"]

MIN_PLAUSIBLE_TS = 946_684_800  # 2000-01-01T00:00:00Z
MAX_PLAUSIBLE_TS = 4_102_444_800  # 2100-01-01T00:00:00Z
MAX_FIELD_CHARS = 256


class DataFormatError(ValueError):
    """The file is not in any supported format (or not in the forced one)."""


@dataclass
class DirtyReport:
    """Counts of rows read, kept, and set aside by reason.

    ``out_of_order`` rows are kept (each user's events are stably re-sorted by time);
    every other reason drops the row.
    """

    rows_read: int = 0
    rows_kept: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def count(self, reason: str) -> None:
        self.reasons[reason] += 1

    @property
    def rows_dropped(self) -> int:
        return self.rows_read - self.rows_kept

    def as_dict(self) -> dict[str, object]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped,
            "reasons": dict(sorted(self.reasons.items())),
        }

    def summary(self) -> str:
        parts = ", ".join(f"{reason} {n:,}" for reason, n in sorted(self.reasons.items()))
        return f"{self.rows_read:,} rows read, {self.rows_kept:,} kept" + (f" ({parts})" if parts else " (all clean)")


@dataclass(frozen=True, slots=True)
class UserSequence:
    """One user's events in time order. ``timestamps`` is ``None`` for order-only logs."""

    user_id: str
    items: tuple[str, ...]
    categories: tuple[str, ...]
    behaviors: tuple[str, ...]
    timestamps: tuple[int, ...] | None

    def __len__(self) -> int:
        return len(self.items)

    def head(self, n: int) -> UserSequence:
        """The first ``n`` events."""
        return UserSequence(
            self.user_id,
            self.items[:n],
            self.categories[:n],
            self.behaviors[:n],
            None if self.timestamps is None else self.timestamps[:n],
        )


@dataclass(frozen=True)
class EventLog:
    """A whole dataset: per-user sequences plus what loading it found wrong."""

    name: str
    format: DataFormat
    users: tuple[UserSequence, ...]
    report: DirtyReport

    @property
    def has_timestamps(self) -> bool:
        return self.format == "taobao"

    @property
    def n_events(self) -> int:
        return sum(len(user) for user in self.users)

    def first_users(self, n: int) -> EventLog:
        """The log restricted to its first ``n`` users (in file order)."""
        return replace(self, users=self.users[:n])


def open_text(path: Path) -> io.TextIOBase:
    """Open a plain or gzip-compressed text file (detected by its magic bytes)."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return path.open("r", encoding="utf-8", errors="replace", newline="")


def detect_format(path: Path) -> DataFormat:
    """Guess the format from the first non-empty line.

    A Taobao row has five comma-separated fields; an S3-Rec line is space-separated integers.
    """
    with open_text(path) as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            if line.count(",") == 4:
                return "taobao"
            if all(token.isdigit() for token in line.split()):
                return "s3rec"
            break
    raise DataFormatError(
        f"{path}: cannot tell the format from its first line; "
        "expected Taobao CSV (user,item,category,behavior,timestamp) or S3-Rec 'user item item ...'"
    )


def load_event_log(path: str | Path, data_format: DataFormat | None = None) -> EventLog:
    """Load ``path`` in ``data_format`` (detected when ``None``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    data_format = data_format or detect_format(path)
    if data_format == "taobao":
        return load_taobao(path)
    if data_format == "s3rec":
        return load_s3rec(path)
    raise DataFormatError(f"unknown format {data_format!r}; choose 'taobao' or 's3rec'")


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= MAX_FIELD_CHARS and value.isprintable()


def parse_taobao_rows(rows: Iterable[list[str]], name: str = "taobao") -> EventLog:
    """Turn raw CSV rows into an :class:`EventLog`, counting dirty rows."""
    report = DirtyReport()
    per_user: dict[str, list[tuple[int, int, str, str, str]]] = {}
    seen: set[tuple[str, str, str, str, int]] = set()
    for row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        report.rows_read += 1
        if len(row) != 5 or any(not cell.strip() for cell in row):
            report.count("missing_field")
            continue
        user_id, item_id, category_id, raw_behavior, raw_ts = (cell.strip() for cell in row)
        if not (_valid_id(user_id) and _valid_id(item_id) and _valid_id(category_id)):
            report.count("bad_id")
            continue
        behavior = canonical_event_type(raw_behavior)
        if behavior is None:
            report.count("unknown_behavior")
            continue
        try:
            ts = int(raw_ts)
        except ValueError:
            report.count("bad_timestamp")
            continue
        if not MIN_PLAUSIBLE_TS <= ts < MAX_PLAUSIBLE_TS:
            report.count("bad_timestamp")
            continue
        key = (user_id, item_id, category_id, behavior, ts)
        if key in seen:
            report.count("duplicate")
            continue
        seen.add(key)
        events = per_user.setdefault(user_id, [])
        if events and ts < events[-1][0]:
            report.count("out_of_order")
        events.append((ts, len(events), item_id, category_id, behavior))
        report.rows_kept += 1
    users = []
    for user_id, events in per_user.items():
        events.sort()  # by (ts, arrival index): a stable time sort
        users.append(
            UserSequence(
                user_id=user_id,
                items=tuple(e[2] for e in events),
                categories=tuple(e[3] for e in events),
                behaviors=tuple(e[4] for e in events),
                timestamps=tuple(e[0] for e in events),
            )
        )
    return EventLog(name=name, format="taobao", users=tuple(users), report=report)


def load_taobao(path: Path) -> EventLog:
    with open_text(path) as handle:
        return parse_taobao_rows(csv.reader(handle), name=_dataset_name(path))


def attributes_path_for(sequence_path: Path) -> Path:
    """``Beauty.txt[.gz]`` -> ``Beauty_item2attributes.json[.gz]`` beside it (either compression)."""
    stem = sequence_path.name.split(".")[0]
    for suffix in (".json.gz", ".json"):
        candidate = sequence_path.with_name(f"{stem}_item2attributes{suffix}")
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{sequence_path}: S3-Rec data needs {stem}_item2attributes.json[.gz] beside it")


def item_category_from_attributes(attributes: list[int]) -> str:
    """An S3-Rec item's category: its last attribute id.

    S3-Rec lists an item's brand (when known) and then every level of each category path,
    so the last id is the deepest level of its last path, the most specific category it has.
    """
    return str(attributes[-1])


def parse_s3rec_lines(lines: Iterable[str], item_attributes: dict[str, list[int]], name: str = "s3rec") -> EventLog:
    report = DirtyReport()
    users = []
    seen_users: set[str] = set()
    for line in lines:
        tokens = line.split()
        if not tokens:
            continue
        user_id, items = tokens[0], tokens[1:]
        if user_id in seen_users:
            report.rows_read += len(items)
            report.reasons["duplicate"] += len(items)
            continue
        seen_users.add(user_id)
        kept_items, categories = [], []
        for item in items:
            report.rows_read += 1
            if not item.isdigit():
                report.count("bad_id")
                continue
            attributes = item_attributes.get(item)
            if not attributes:
                report.count("missing_field")
                continue
            kept_items.append(item)
            categories.append(item_category_from_attributes(attributes))
            report.rows_kept += 1
        if kept_items:
            users.append(
                UserSequence(
                    user_id=user_id,
                    items=tuple(kept_items),
                    categories=tuple(categories),
                    behaviors=("purchase",) * len(kept_items),
                    timestamps=None,
                )
            )
    return EventLog(name=name, format="s3rec", users=tuple(users), report=report)


def load_s3rec(path: Path) -> EventLog:
    with open_text(attributes_path_for(path)) as handle:
        item_attributes = json.load(handle)
    with open_text(path) as handle:
        return parse_s3rec_lines(handle, item_attributes, name=_dataset_name(path))


def _dataset_name(path: Path) -> str:
    return path.name.split(".")[0]
