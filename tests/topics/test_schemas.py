from __future__ import annotations

import json

from topics.records import DEAD_LETTER_REASONS, CategoryProbability, InterestUpdate
from topics.schema import SCHEMA_DIR, stale_schema_files, topic_schema, validator
from topics.specs import ALL_TOPICS, DEMAND, EVENTS, INVALID, UPDATES


def test_schema_files_are_in_sync_with_the_records() -> None:
    assert stale_schema_files() == [], "run: shiftwatch topics schemas"


def test_a_serialised_update_has_exactly_the_schema_fields() -> None:
    update = InterestUpdate(
        user_id="u",
        event_id="u:0",
        ts=1,
        model_version="v",
        top_categories=[CategoryProbability(category_id="c", probability=0.5)],
        entropy=0.1,
        sequence_length=1,
    )
    payload = json.loads(update.dumps())
    schema = json.loads((SCHEMA_DIR / UPDATES.schema_file).read_text())
    assert set(payload) == set(schema["properties"]) == set(schema["required"])
    assert set(payload["top_categories"][0]) == set(schema["properties"]["top_categories"]["items"]["properties"])


def test_topic_configs_follow_the_erasure_deadline() -> None:
    day = 86_400_000
    assert UPDATES.config(day) == {
        "cleanup.policy": "compact",
        "segment.ms": str(day // 4),
        "max.compaction.lag.ms": str(day // 4),
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": str(day // 4),
    }
    assert INVALID.config(day) == {
        "cleanup.policy": "delete",
        "segment.ms": str(day // 8),
        "retention.ms": str(day // 2),
    }
    assert DEMAND.config(day) == {"cleanup.policy": "delete", "retention.ms": str(90 * day)}, (
        "no user data: kept 90 days"
    )
    assert all(spec.user_data for spec in ALL_TOPICS if spec is not DEMAND)
    assert topic_schema(EVENTS)["properties"]["ts"]["anyOf"][1]["type"] == "string"  # type: ignore[index]


def test_output_schemas_are_closed_and_bounded() -> None:
    updates = topic_schema(UPDATES)
    assert updates is not None
    assert updates["additionalProperties"] is False
    assert updates["properties"]["top_categories"]["items"]["properties"]["probability"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
    }
    letter = topic_schema(INVALID)
    assert set(letter["properties"]["reason"]["enum"]) == set(DEAD_LETTER_REASONS)  # type: ignore[index]
    assert not validator(UPDATES).is_valid(
        {
            "user_id": "u",
            "event_id": "e",
            "ts": 1,
            "model_version": "v",
            "entropy": 0.1,
            "top_categories": [{"category_id": "c", "probability": 1.5}],
            "sequence_length": 1,
        }
    )
