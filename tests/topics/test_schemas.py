from __future__ import annotations

import json

from topics.records import CategoryProbability, InterestUpdate
from topics.schema import SCHEMA_DIR, stale_schema_files, topic_schema
from topics.specs import ALL_TOPICS, EVENTS, INVALID, PARTITIONS, UPDATES


def test_schema_files_are_in_sync_with_the_records() -> None:
    assert stale_schema_files() == [], "run: shiftwatch topics schemas"


def test_a_serialised_update_has_exactly_the_schema_fields() -> None:
    update = InterestUpdate(
        user_id="u", event_id="u:0", ts=1, model_version="v",
        top_categories=[CategoryProbability(category_id="c", probability=0.5)], entropy=0.1, sequence_length=1,
    )  # fmt: skip
    payload = json.loads(update.dumps())
    schema = json.loads((SCHEMA_DIR / UPDATES.schema_file).read_text())
    assert set(payload) == set(schema["properties"]) == set(schema["required"])
    assert set(payload["top_categories"][0]) == set(schema["properties"]["top_categories"]["items"]["properties"])


def test_every_user_keyed_topic_is_co_partitioned() -> None:
    assert {spec.partitions for spec in ALL_TOPICS} == {PARTITIONS}
    assert UPDATES.config == {"cleanup.policy": "compact"}
    assert INVALID.config["cleanup.policy"] == "delete" and int(INVALID.config["retention.ms"]) > 0
    assert topic_schema(EVENTS)["properties"]["ts"]["anyOf"][1]["type"] == "string"  # type: ignore[index]
