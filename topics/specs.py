"""Every topic ShiftWatch reads or writes: name, partitions, key, value, cleanup, retention.

Input and table changelogs are co-partitioned: every topic keyed by user id has
:data:`PARTITIONS` partitions and producers use Kafka's default (murmur2) partitioner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faust

from topics.records import CategoryDemand, ClickEvent, DeadLetter, ForgetRequest, InterestShift, InterestUpdate, MarketingTrigger

PARTITIONS = 4
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    value: type[faust.Record] | None
    cleanup_policy: Literal["delete", "compact"]
    retention_ms: int | None
    description: str

    @property
    def config(self) -> dict[str, str]:
        """Kafka topic configs for creation."""
        config = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config

    @property
    def schema_file(self) -> str:
        return f"{self.name}.schema.json"


EVENTS = TopicSpec(
    name="clickstream.events",
    partitions=PARTITIONS,
    key="user_id (UTF-8)",
    value=None,  # raw bytes: validated by the worker into ClickEvent, or dead-lettered
    cleanup_policy="delete",
    retention_ms=7 * DAY_MS,
    description="Input: click, view, cart, fav and purchase events, JSON, keyed by user id.",
)
UPDATES = TopicSpec(
    name="interest.updates",
    partitions=PARTITIONS,
    key="user_id (UTF-8)",
    value=InterestUpdate,
    cleanup_policy="compact",
    retention_ms=None,
    description="Each user's latest interest distribution (top categories); compacted to the last per user.",
)
SHIFTS = TopicSpec(
    name="interest.shifts",
    partitions=PARTITIONS,
    key="user_id (UTF-8)",
    value=InterestShift,
    cleanup_policy="delete",
    retention_ms=30 * DAY_MS,
    description="Interest-shift events: from which categories to which, confidence and evidence.",
)
INVALID = TopicSpec(
    name="clickstream.events.invalid",
    partitions=PARTITIONS,
    key="user_id when known, else none",
    value=DeadLetter,
    cleanup_policy="delete",
    retention_ms=30 * DAY_MS,
    description="Dead letters: refused input with the reason, the source offset and the original bytes.",
)

TRIGGERS = TopicSpec(
    name="marketing.triggers",
    partitions=PARTITIONS,
    key="user_id (UTF-8)",
    value=MarketingTrigger,
    cleanup_policy="delete",
    retention_ms=30 * DAY_MS,
    description="Marketing actions due: a rule of `shiftwatch triggers` matched a user's shift.",
)

DEMAND = TopicSpec(
    name="inventory.category-demand",
    partitions=PARTITIONS,
    key="category_id (UTF-8)",
    value=CategoryDemand,
    cleanup_policy="delete",
    retention_ms=90 * DAY_MS,
    description="Per category and closed event-time window (tumbling and hopping): users shifting in and out, mass gained and lost.",
)

FORGET = TopicSpec(
    name="privacy.forget-requests",
    partitions=PARTITIONS,
    key="user_id (UTF-8, raw: the same partition as the user's events)",
    value=ForgetRequest,
    cleanup_policy="delete",
    retention_ms=7 * DAY_MS,
    description="Requests to erase a user (`shiftwatch forget`), read by the worker and the triggers service.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (EVENTS, FORGET, UPDATES, SHIFTS, INVALID, TRIGGERS, DEMAND)
OUTPUT_TOPICS: tuple[TopicSpec, ...] = (UPDATES, SHIFTS, INVALID, TRIGGERS, DEMAND)

INPUT_SCHEMA = ClickEvent  # what producers send on EVENTS (ts may also be an ISO 8601 string)
