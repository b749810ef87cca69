"""JSON Schemas (draft 2020-12) generated from the topic records, for downstream consumers.

>>> from topics.records import CategoryProbability
>>> json_schema(CategoryProbability)["properties"]["probability"]
{'type': 'number'}
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path

import faust

from topics.specs import ALL_TOPICS, EVENTS, INPUT_SCHEMA, TopicSpec

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_schema(annotation: object) -> dict[str, object]:
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}  # type: ignore[index]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        return {"anyOf": [_type_schema(a) for a in args]}
    if annotation is type(None):
        return {"type": "null"}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0])}
    if isinstance(annotation, type) and issubclass(annotation, faust.Record):
        return _object_schema(annotation)
    raise TypeError(f"no JSON Schema for {annotation!r}")


def _object_schema(record: type[faust.Record]) -> dict[str, object]:
    hints = typing.get_type_hints(record)
    fields = record._options.fields  # type: ignore[attr-defined]
    defaults = record._options.defaults  # type: ignore[attr-defined]
    return {
        "type": "object",
        "properties": {name: _type_schema(hints[name]) for name in fields},
        "required": [name for name in fields if name not in defaults],
    }


def json_schema(record: type[faust.Record], title: str | None = None) -> dict[str, object]:
    return {"$schema": DRAFT, "title": title or record.__name__, **_object_schema(record)}


def topic_schema(spec: TopicSpec) -> dict[str, object] | None:
    """The schema of a topic's values; ``None`` for a topic without a record yet."""
    if spec is EVENTS:
        schema = json_schema(INPUT_SCHEMA, "ClickEvent (input)")
        schema["properties"]["ts"] = {  # type: ignore[index]
            "anyOf": [{"type": "integer", "description": "epoch milliseconds"}, {"type": "string", "format": "date-time"}]
        }
        schema["properties"]["event_type"] = {  # type: ignore[index]
            "type": "string",
            "enum": ["view", "click", "cart", "fav", "purchase", "pv", "buy"],
        }
        return schema
    return json_schema(spec.value) if spec.value is not None else None


def rendered(schema: dict[str, object]) -> str:
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
