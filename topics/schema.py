"""JSON Schemas (draft 2020-12) generated from the topic records, for downstream consumers.

>>> from topics.records import CategoryProbability
>>> json_schema(CategoryProbability)["properties"]["probability"]
{'type': 'number', 'minimum': 0, 'maximum': 1}
"""

from __future__ import annotations

import functools
import json
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import msgspec

from model.data.events import BEHAVIOR_ALIASES
from topics.records import DEAD_LETTER_REASONS, EARLIEST_MS, SECONDS_CUTOFF
from topics.specs import ALL_TOPICS, EVENTS, TopicSpec

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_schema(annotation: object) -> dict[str, Any]:
    if isinstance(annotation, type) and annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        return {"anyOf": [_type_schema(a) for a in args]}
    if annotation is type(None):
        return {"type": "null"}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0])}
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _object_schema(annotation)
    raise TypeError(f"no JSON Schema for {annotation!r}")


PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}
NON_NEGATIVE = {"type": "number", "minimum": 0}
COUNT = {"type": "integer", "minimum": 0}
CONSTRAINTS: dict[tuple[str, str], dict[str, Any]] = {
    # (record, field) -> the schema the worker's output keeps to, narrower than the field's type
    ("CategoryProbability", "probability"): PROBABILITY,
    ("CategoryChange", "before"): PROBABILITY,
    ("CategoryChange", "after"): PROBABILITY,
    ("InterestUpdate", "entropy"): NON_NEGATIVE,
    ("InterestUpdate", "sequence_length"): {"type": "integer", "minimum": 1},
    ("InterestShift", "sequence_length"): {"type": "integer", "minimum": 1},
    ("InterestShift", "divergence"): NON_NEGATIVE,
    ("InterestShift", "statistic"): NON_NEGATIVE,
    ("InterestShift", "confidence"): {"anyOf": [PROBABILITY, {"type": "null"}]},
    ("MarketingTrigger", "confidence"): {"anyOf": [PROBABILITY, {"type": "null"}]},
    ("CategoryDemand", "window"): {"type": "string", "enum": ["tumbling", "hopping"]},
    ("CategoryDemand", "users_in"): COUNT,
    ("CategoryDemand", "users_out"): COUNT,
    ("CategoryDemand", "mass_gained"): NON_NEGATIVE,
    ("CategoryDemand", "mass_lost"): NON_NEGATIVE,
    ("DeadLetter", "reason"): {"type": "string", "enum": list(DEAD_LETTER_REASONS)},
    ("DeadLetter", "source_partition"): COUNT,
    ("DeadLetter", "source_offset"): COUNT,
    ("DeadLetter", "original_size"): COUNT,
    ("DeadLetter", "original_base64"): {"type": "string", "contentEncoding": "base64"},
    ("DeadLetter", "original_sha256"): {"anyOf": [{"type": "string", "pattern": "^[0-9a-f]{64}$"}, {"type": "null"}]},
}


def _object_schema(record: type[msgspec.Struct]) -> dict[str, Any]:
    hints = typing.get_type_hints(record)
    fields = record.__struct_fields__
    required = fields[: len(fields) - len(record.__struct_defaults__)]  # defaults come last

    def field_schema(name: str) -> dict[str, Any]:
        narrower = CONSTRAINTS.get((record.__name__, name), {})
        return {**_type_schema(hints[name]), **narrower} if "anyOf" not in narrower else dict(narrower)

    return {
        "type": "object",
        "properties": {name: field_schema(name) for name in fields},
        "required": list(required),
        "additionalProperties": False,
    }


def json_schema(record: type[msgspec.Struct], title: str | None = None) -> dict[str, Any]:
    return {"$schema": DRAFT, "title": title or record.__name__, **_object_schema(record)}


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


def input_schema() -> dict[str, Any]:
    """What the worker accepts on the input topic (:mod:`stream.worker.validation`): other keys are
    ignored, ids are strings or integers, behaviours are matched ignoring case and surrounding
    space, and ``ts`` is epoch seconds or milliseconds or ISO 8601 with a zone."""
    identifier = {
        "anyOf": [{"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S"}, {"type": "integer"}],
        "description": "at most SHIFTWATCH_MAX_STRING_LENGTH characters (256 by default)",
    }
    behaviours = "|".join(_any_case(alias) for alias in BEHAVIOR_ALIASES)
    return {
        "$schema": DRAFT,
        "title": "ClickEvent (input)",
        "type": "object",
        "properties": {
            **dict.fromkeys(("event_id", "user_id", "item_id", "category_id"), identifier),
            "event_type": {
                "type": "string",
                "pattern": f"^\\s*({behaviours})\\s*$",
                "description": f"one of {', '.join(BEHAVIOR_ALIASES)}, in any case",
            },
            "ts": {
                "anyOf": [
                    {
                        "type": "number",
                        "minimum": EARLIEST_MS // 1000,
                        "description": f"epoch seconds below {SECONDS_CUTOFF}, epoch milliseconds from there; from 2000 "
                        "to a day after the worker's clock",
                    },
                    {"type": "string", "format": "date-time", "maxLength": 64, "description": "ISO 8601 with a zone"},
                ]
            },
        },
        "required": ["event_id", "user_id", "item_id", "category_id", "event_type", "ts"],
        "additionalProperties": True,
    }


def topic_schema(spec: TopicSpec) -> dict[str, Any] | None:
    """The schema of a topic's values; ``None`` for a topic without a record yet."""
    if spec is EVENTS:
        return input_schema()
    return json_schema(spec.value) if spec.value is not None else None


@functools.cache
def validator(spec: TopicSpec) -> jsonschema.protocols.Validator:
    """A validator of the topic's values against its schema (which every message must meet)."""
    schema = topic_schema(spec)
    if schema is None:
        raise ValueError(f"{spec.name} has no schema")
    return jsonschema.Draft202012Validator(schema)


def rendered(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2) + "\n"


def stale_schema_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Schema files that differ from the records (empty when in sync)."""
    stale = []
    for spec in ALL_TOPICS:
        schema = topic_schema(spec)
        if schema is None:
            continue
        path = directory / spec.schema_file
        if not path.exists() or path.read_text() != rendered(schema):
            stale.append(spec.schema_file)
    return stale


def write_schema_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in ALL_TOPICS:
        schema = topic_schema(spec)
        if schema is not None:
            path = directory / spec.schema_file
            path.write_text(rendered(schema))
            written.append(path)
    return written
