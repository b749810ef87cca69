"""The Faust app and tables every service builds: the store's memory is bounded by the settings."""

from __future__ import annotations

from pathlib import Path

from faust.stores import rocksdb

from stream.runtime.app import new_app, new_user_table, store_options
from stream.settings import Settings


def test_a_rocksdb_table_opens_each_partition_within_the_store_memory(tmp_path: Path) -> None:
    settings = Settings(store_memory_mb=8, partitions=3)
    app, _ = new_app(settings, "shiftwatch-test-app", tmp_path / "app")
    table = new_user_table(app, "rows", settings, "test rows")
    assert store_options(settings) == {
        "write_buffer_size": 2 * 2**20,
        "max_write_buffer_number": 2,
        "block_cache_size": 4 * 2**20,
    }
    store = table.data
    assert isinstance(store, rocksdb.Store)
    options = store.rocksdb_options  # what Faust opens each partition's database with
    assert (options.write_buffer_size, options.max_write_buffer_number, options.block_cache_size) == (
        2 * 2**20,
        2,
        4 * 2**20,
    )
    assert table.partitions == 3
