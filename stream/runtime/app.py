"""How every ShiftWatch service builds its Faust app: one configuration, the recovery fixes, Prometheus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry

from stream.runtime.recovery import QueueSafeTableManager, SafeConsumer
from stream.settings import Settings
from topics.specs import PARTITIONS


def new_app(settings: Settings, app_id: str, datadir: Path, **options: Any) -> tuple[faust.App, CollectorRegistry]:
    """A Faust app on the settings' Kafka and store, and the registry its ``/metrics`` serves
    (Faust's sensor as ``faust_*``; services add their own collectors)."""
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=settings.kafka_url,
        store=settings.store,
        datadir=str(datadir),
        topic_partitions=PARTITIONS,
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
    app.transport.Consumer = SafeConsumer  # the class Faust's transport builds its consumer from
    registry = CollectorRegistry()
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="faust")
    return app, registry
