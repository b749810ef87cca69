"""How every ShiftWatch service builds its Faust app: one configuration, the recovery fixes, Prometheus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types import EventT
from prometheus_client import CollectorRegistry

from stream.runtime.recovery import QueueSafeTableManager, SafeConsumer
from stream.settings import Settings
from topics.specs import changelog_config


def new_app(settings: Settings, app_id: str, datadir: Path, **options: Any) -> tuple[faust.App, CollectorRegistry]:
    """A Faust app on the settings' Kafka and store, and the registry its ``/metrics`` serves
    (Faust's sensor as ``faust_*``; services add their own collectors)."""
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=settings.kafka_url,
        store=settings.store,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_bind,
        web_tables_enabled=False,  # Faust's /table/... pages would serve every row to anyone
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 10,
        TableManager=QueueSafeTableManager,
        **options,
    )
    # the class this app's transport builds its consumer from (a class attribute, set on the instance)
    app.transport.Consumer = SafeConsumer  # type: ignore[misc]
    registry = CollectorRegistry()
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="faust")
    return app, registry


def store_options(settings: Settings) -> dict[str, int]:
    """RocksDB options of each partition of a table, within ``settings.store_memory_mb``: two
    write buffers of a quarter each and a block cache of half. Faust's own (three write buffers
    of 64 MiB and a 2 GiB block cache, each partition) let the soak's worker grow by about
    190 MiB every 250,000 events, with no bound in sight (``make soak``)."""
    budget = settings.store_memory_mb * 2**20
    return {"write_buffer_size": budget // 4, "max_write_buffer_number": 2, "block_cache_size": budget // 2}


def new_table(app: faust.App, name: str, settings: Settings, **options: Any) -> faust.Table:
    """``app.Table(name, **options)`` on the settings' partitions and store memory, typed as the
    class it is: the durable writes (:mod:`stream.runtime.durable`) use its store and
    serializers, which ``TableT`` does not declare."""
    table = app.Table(name, partitions=settings.partitions, options=store_options(settings), **options)
    return cast(faust.Table, table)


def new_user_table(app: faust.App, name: str, settings: Settings, help: str) -> faust.Table:
    """A table of rows about users, raw bytes in and out, whose changelog forgets a deleted row
    within the erasure deadline (:func:`topics.specs.changelog_config`)."""
    return new_table(
        app,
        name,
        settings,
        key_type=bytes,
        value_type=bytes,
        help=help,
        extra_topic_configs=changelog_config(int(settings.erasure_deadline_s * 1000)),
    )


def batches(stream: faust.StreamT, settings: Settings) -> AsyncIterator[Sequence[EventT]]:
    """An agent's input in micro-batches of at most ``batch_size`` events, ``batch_within_s`` apart."""
    return cast(faust.Stream, stream).take_events(settings.batch_size, within=settings.batch_within_s)
