"""The values on ShiftWatch's topics, as Faust records (JSON on the wire).

Downstream teams read the JSON Schemas in ``topics/schemas/``, generated from these
classes (``shiftwatch topics schemas --write``) and kept in sync by a test.
"""

from __future__ import annotations

import faust


class ClickEvent(faust.Record, serializer="json", include_metadata=False):
    """An accepted input event, normalised: ``event_type`` canonical, ``ts`` in epoch milliseconds."""

    event_id: str
    user_id: str
    item_id: str
    category_id: str
    event_type: str
    ts: int


class CategoryProbability(faust.Record, serializer="json", include_metadata=False):
    category_id: str
    probability: float


class InterestUpdate(faust.Record, serializer="json", include_metadata=False):
    """A user's interest distribution after one accepted event (its top categories)."""

    user_id: str
    event_id: str
    ts: int
    model_version: str
    top_categories: list[CategoryProbability]
    entropy: float
    sequence_length: int


class DeadLetter(faust.Record, serializer="json", include_metadata=False):
    """An input message the worker refused: why, where it came from, and its exact bytes."""

    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_base64: str
    user_id: str | None = None
    event_id: str | None = None
