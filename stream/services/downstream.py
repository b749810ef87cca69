"""What the services downstream of the worker share: their Faust app, and reading shifts.

``shiftwatch triggers`` and ``shiftwatch demand`` are Faust apps of their own (consumer
group ``<app id>-<service>``, state under ``<data dir>/<service>``) that consume
``interest.shifts``. A message there that is not a shift is dead-lettered with reason
``not_a_shift``, never dropped. Their counters are on ``/metrics`` next to Faust's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, cast

import faust
import jsonschema
from faust.types import EventT, Message
from prometheus_client.core import CounterMetricFamily

from stream.runtime.app import batches, new_app
from stream.settings import Settings
from stream.worker.validation import Rejection, parse, printable
from topics.records import DeadLetter
from topics.schema import validator
from topics.specs import INVALID, SHIFTS

SHIFT_MAX_BYTES = 262_144  # a shift of the worker's is a few KiB
Stats = dict[str, Any]  # counter name -> count, or -> {label value -> count}


class StatsCollector:
    """A service's counters as Prometheus counters ``shiftwatch_<service>_<name>_total``; a
    counter held as a dict becomes one series per key, under the label ``labels[name]``."""

    def __init__(self, service: str, stats: Stats, help: Mapping[str, str], labels: Mapping[str, str]) -> None:
        self.service, self.stats, self.help, self.labels = service, stats, help, labels

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, doc in self.help.items():
            metric = f"shiftwatch_{self.service}_{name}"
            value = self.stats[name]
            if isinstance(value, dict):
                family = CounterMetricFamily(metric, doc, labels=[self.labels[name]])
                for label, count in value.items():
                    family.add_metric([label], count)
            else:
                family = CounterMetricFamily(metric, doc, value=value)
            yield family


def downstream_app(
    settings: Settings, service: str, stats: Stats, help: Mapping[str, str], labels: Mapping[str, str]
) -> faust.App:
    """The service's app; ``/metrics`` serves Faust's sensor and the service's ``stats``."""
    app, registry = new_app(settings, f"{settings.app_id}-{service}", settings.data_dir / service)
    registry.register(StatsCollector(service, stats, help, labels))
    return app


def shifts_topic(app: faust.App) -> faust.TopicT:
    """``interest.shifts`` as raw bytes."""
    return app.topic(SHIFTS.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


async def shift_batches(
    app: faust.App, stream: faust.StreamT, settings: Settings, stats: Stats
) -> AsyncIterator[list[tuple[EventT, dict | None]]]:
    """The stream in batches of ``(event, shift)``, in order; ``(event, None)`` for a tombstone,
    which the worker publishes, keyed by the user as stored, when it forgets a user. What is
    neither is dead-lettered and counted in ``stats["unreadable"]``; the shifts in ``stats["shifts"]``."""
    async for batch in batches(stream, settings):
        items: list[tuple[EventT, dict | None]] = []
        for event in batch:
            if event.message.value is None:
                items.append((event, None))
                continue
            shift = await read_shift(app, event.message)
            if shift is None:
                stats["unreadable"] += 1
            else:
                items.append((event, shift))
                stats["shifts"] += 1
        yield items


async def read_shift(app: faust.App, message: Message) -> dict | None:
    """The shift a message carries as JSON data, or ``None`` once it is dead-lettered: parsed
    within the input's limits and valid against the shift schema, so no value a service reads
    has a type it does not expect."""
    data = parse(message.value or b"", SHIFT_MAX_BYTES)
    if isinstance(data, Rejection):
        problem = data.detail
    else:
        error = jsonschema.exceptions.best_match(validator(SHIFTS).iter_errors(cast(Any, data)))
        if error is None:
            return data  # type: ignore[return-value]
        problem = f"{'/'.join(map(str, error.absolute_path)) or 'the value'}: {error.message}"
    letter = DeadLetter.of(
        "not_a_shift", printable(problem), SHIFTS.name, message.partition, message.offset, message.value or b""
    )
    await (
        await app.producer.send(INVALID.name, message.key, letter.dumps(), partition=None, timestamp=None, headers=None)
    )
    return None
