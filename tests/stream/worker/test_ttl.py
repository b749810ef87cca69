from __future__ import annotations

from stream.worker.ttl import ActivityIndex


def test_rows_expire_against_their_own_partitions_latest_event() -> None:
    index = ActivityIndex()
    index.touch(b"a", partition=0, last_ts=1_000)
    index.touch(b"b", partition=1, last_ts=1_000)
    index.touch(b"c", partition=0, last_ts=10_000)
    assert index.expired(ttl_ms=5_000) == [(0, b"a")], "partition 1 has seen nothing later than b"
    index.add_scanned({b"a": (0, 9_999), b"d": (1, 500)})  # a scan does not overwrite what batches wrote
    assert index.scanned and sorted(index.expired(ttl_ms=5_000)) == [(0, b"a")]
    index.clear()
    assert len(index) == 0 and not index.scanned
