"""What the state TTL sweeper knows: each live row's partition and last event time.

Kept only when a TTL is set, and only for rows that exist: an entry goes when its row is
expired or forgotten, and all go when the partitions are revoked, so its size follows the
live state, not the users ever seen.

>>> index = ActivityIndex()
>>> index.touch(b"a", partition=0, last_ts=1_000); index.touch(b"b", partition=0, last_ts=9_000)
>>> index.expired(ttl_ms=5_000)
[(0, b'a')]
>>> index.drop(b"a"); len(index)
1
"""

from __future__ import annotations

from collections.abc import Mapping


class ActivityIndex:
    def __init__(self) -> None:
        self._last: dict[bytes, tuple[int, int]] = {}  # row key -> (partition, last event time)
        self.stream_time: dict[int, int] = {}  # partition -> latest event time of its rows
        self.scanned = False  # whether it holds every row of the assigned partitions

    def __len__(self) -> int:
        return len(self._last)

    def touch(self, key: bytes, partition: int, last_ts: int) -> None:
        self._last[key] = (partition, last_ts)
        self.stream_time[partition] = max(self.stream_time.get(partition, last_ts), last_ts)

    def add_scanned(self, rows: Mapping[bytes, tuple[int, int]]) -> None:
        """The rows found by a scan of the store, ``key -> (partition, last event time)``."""
        for key, (partition, last_ts) in rows.items():
            self._last.setdefault(key, (partition, last_ts))
        self.scanned = True

    def drop(self, key: bytes) -> None:
        self._last.pop(key, None)

    def clear(self) -> None:
        """After a revocation: rows may have moved; the next sweep scans again."""
        self._last.clear()
        self.scanned = False

    def expired(self, ttl_ms: float) -> list[tuple[int, bytes]]:
        """``(partition, key)`` of the rows whose last event is more than ``ttl_ms`` before their
        partition's latest."""
        return [
            (partition, key)
            for key, (partition, last_ts) in self._last.items()
            if partition in self.stream_time and last_ts < self.stream_time[partition] - ttl_ms
        ]
