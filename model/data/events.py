"""Canonical event types and the mapping from source datasets onto them."""

from __future__ import annotations

from typing import NamedTuple

EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "fav", "purchase")
"""The behaviour vocabulary, in a fixed order so that ids never change between checkpoints."""

BEHAVIOR_ALIASES: dict[str, str] = {
    # Taobao UserBehavior: pv is an item detail page view.
    "pv": "view",
    "buy": "purchase",
    **{name: name for name in EVENT_TYPES},
}


def canonical_event_type(raw: str) -> str | None:
    """Map a source behaviour label onto :data:`EVENT_TYPES`; ``None`` when unknown.

    >>> canonical_event_type("pv"), canonical_event_type("BUY"), canonical_event_type("like")
    ('view', 'purchase', None)
    """
    return BEHAVIOR_ALIASES.get(raw.strip().lower())


class StoredEvent(NamedTuple):
    """An accepted event, by raw ids: what a user's state keeps and a detector cites as evidence.

    A named tuple: cheap to build, compare and unpack by the thousand.
    """

    event_id: str
    item_id: str
    category_id: str
    event_type: str
    ts: int  # epoch milliseconds
