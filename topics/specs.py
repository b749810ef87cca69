"""Every topic ShiftWatch reads or writes: name, key, value, cleanup, retention.

Input and table changelogs are co-partitioned: every topic has the same number of partitions,
the setting ``SHIFTWATCH_PARTITIONS`` (:attr:`stream.settings.Settings.partitions`: topics
are created with it, :func:`stream.ops.admin.create_topics`), and producers use Kafka's
default (murmur2) partitioner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from topics.records import (
    CategoryDemand,
    DeadLetter,
    ForgetRequest,
    InterestShift,
    InterestUpdate,
    MarketingTrigger,
    Record,
)

DAY_MS = 24 * 3600 * 1000


def erasure_config(cleanup_policy: Literal["delete", "compact"], deadline_ms: int) -> dict[str, str]:
    """Kafka configs under which a record of a user, once forgotten, is gone within ``deadline_ms``.

    A compacted topic: a segment is rolled (on the next append) after a quarter of the deadline
    and compacted a quarter after its records were written, so a record followed by a newer
    value (a tombstone) goes within about five eighths of the deadline, given an append every
    eighth (:func:`stream.runtime.durable.schedule_segment_rolls`); tombstones stay a quarter. A
    deleted one: a segment is rolled after an eighth and deleted half the deadline after its
    last record, so within five eighths; half, not less, because the input topic is one of
    them and an event must wait there for a worker that is down or behind. The broker's
    ``log.retention.check.interval.ms`` and ``log.cleaner.backoff.ms`` must be well under a
    quarter of the deadline (their defaults, 5 minutes and 15 s, are, for the default of a day).

    >>> erasure_config("compact", 86_400_000)["max.compaction.lag.ms"], erasure_config("delete", 86_400_000)["retention.ms"]
    ('21600000', '43200000')
    """
    quarter, eighth = max(1000, deadline_ms // 4), max(500, deadline_ms // 8)
    if cleanup_policy == "compact":
        return {
            "cleanup.policy": "compact",
            "segment.ms": str(quarter),
            "max.compaction.lag.ms": str(quarter),
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": str(quarter),
        }
    return {"cleanup.policy": "delete", "segment.ms": str(eighth), "retention.ms": str(2 * quarter)}


def changelog_config(deadline_ms: int) -> dict[str, str]:
    """The extra configs of a table changelog of a ShiftWatch service (compacted by Faust): rows
    are users' state, so they are erased within the deadline like any compacted user topic."""
    return erasure_config("compact", deadline_ms)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: type[Record] | None
    cleanup_policy: Literal["delete", "compact"]
    retention_ms: int | None  # of a topic without user data; one with is kept per the erasure deadline
    description: str
    user_data: bool = True  # holds ids or events of users, so erased within the deadline

    def config(self, erasure_deadline_ms: int) -> dict[str, str]:
        """Kafka topic configs for creation."""
        if self.user_data:
            return erasure_config(self.cleanup_policy, erasure_deadline_ms)
        config: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config

    @property
    def schema_file(self) -> str:
        return f"{self.name}.schema.json"


EVENTS = TopicSpec(
    name="clickstream.events",
    key="user_id (UTF-8)",
    value=None,  # raw bytes: validated by the worker into ClickEvent, or dead-lettered
    cleanup_policy="delete",
    retention_ms=None,
    description="Input: click, view, cart, fav and purchase events, JSON, keyed by user id.",
)
UPDATES = TopicSpec(
    name="interest.updates",
    key="user_id (UTF-8)",
    value=InterestUpdate,
    cleanup_policy="compact",
    retention_ms=None,
    description="Each user's latest interest distribution (top categories); compacted to the last per user.",
)
SHIFTS = TopicSpec(
    name="interest.shifts",
    key="user_id (UTF-8)",
    value=InterestShift,
    cleanup_policy="delete",
    retention_ms=None,
    description="Interest-shift events: from which categories to which, confidence and evidence; a tombstone (null "
    "value, keyed by the user) when the worker forgets a user, on which downstream services drop theirs.",
)
INVALID = TopicSpec(
    name="clickstream.events.invalid",
    key="user_id when known, else none",
    value=DeadLetter,
    cleanup_policy="delete",
    retention_ms=None,
    description="Dead letters: refused input with the reason, the source offset and the original bytes.",
)

TRIGGERS = TopicSpec(
    name="marketing.triggers",
    key="user_id (UTF-8)",
    value=MarketingTrigger,
    cleanup_policy="delete",
    retention_ms=None,
    description="Marketing actions due: a rule of `shiftwatch triggers` matched a user's shift.",
)

DEMAND = TopicSpec(
    name="inventory.category-demand",
    key="category_id (UTF-8)",
    value=CategoryDemand,
    cleanup_policy="delete",
    retention_ms=90 * DAY_MS,
    description="Per category and closed event-time window (tumbling and hopping): users shifting in and out, mass gained and lost.",
    user_data=False,  # counts per category: no user id
)

FORGET = TopicSpec(
    name="privacy.forget-requests",
    key="user_id (UTF-8, raw: the same partition as the user's events)",
    value=ForgetRequest,
    cleanup_policy="delete",
    retention_ms=None,
    description="Requests to erase a user (`shiftwatch forget`), read by the worker and the triggers service.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (EVENTS, FORGET, UPDATES, SHIFTS, INVALID, TRIGGERS, DEMAND)
OUTPUT_TOPICS: tuple[TopicSpec, ...] = (UPDATES, SHIFTS, INVALID, TRIGGERS, DEMAND)
