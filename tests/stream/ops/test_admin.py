"""Topic creation against the real broker: idempotent, and refusing another partition count."""

from __future__ import annotations

import asyncio

import pytest

from stream.ops.admin import PartitionCountMismatch, create_topics
from stream.settings import Settings
from tests.stream.helpers import PARTITIONS
from topics.specs import ALL_TOPICS


@pytest.mark.kafka
def test_topics_are_updated_in_place_but_never_repartitioned(kafka_bootstrap, fresh_topics) -> None:
    deadline = Settings().erasure_deadline_s
    outcome = asyncio.run(create_topics(kafka_bootstrap, deadline, PARTITIONS))
    assert outcome == {spec.name: "updated" for spec in ALL_TOPICS}
    with pytest.raises(PartitionCountMismatch, match=f"SHIFTWATCH_PARTITIONS=12, but .* has {PARTITIONS}"):
        asyncio.run(create_topics(kafka_bootstrap, deadline, 12))
