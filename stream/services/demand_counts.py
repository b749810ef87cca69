"""Category demand from interest shifts: what ``shiftwatch demand`` counts, without Kafka.

A shift moves probability mass between categories. Each category in its ``to_categories``
gained ``after - before`` and counts one user shifting in; each category in its
``from_categories`` lost ``before - after`` and counts one user shifting out. A
:class:`Demand` sums those moves for one category over a window (a user who shifts into the
same category twice in one window counts twice: each shift is a decision to act on).

>>> shift = {"shift_id": "s1", "ts": 7_200_000, "model_version": "v1",
...          "from_categories": [{"category_id": "shoes", "before": 0.625, "after": 0.125}],
...          "to_categories": [{"category_id": "tents", "before": 0.0, "after": 0.5}]}
>>> [(move.category_id, move.direction, move.mass) for move in category_moves(shift)]
[('shoes', 'out', 0.5), ('tents', 'in', 0.5)]
>>> tents = Demand().add(category_moves(shift)[1])
>>> tents.users_in, tents.users_out, tents.net_mass
(1, 0, 0.5)
>>> rising, falling = top_movers({"tents": tents, "shoes": Demand().add(category_moves(shift)[0])}, 5)
>>> [category for category, _ in rising], [category for category, _ in falling]
(['tents'], ['shoes'])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Direction = Literal["in", "out"]


@dataclass(frozen=True)
class CategoryMove:
    """One category's part in one shift: the message ``shiftwatch demand`` keys by category (no user id)."""

    shift_id: str
    category_id: str
    direction: Direction
    mass: float
    ts: int
    model_version: str

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> CategoryMove:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Progress:
    """A shifts partition's event time so far, announced to every partition of the moves topic."""

    source_partition: int
    event_time: int

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


def parse_moves_message(raw: bytes) -> CategoryMove | Progress:
    data = json.loads(raw)
    return Progress(**data) if "event_time" in data else CategoryMove(**data)


def watermark(announced: Mapping[str, int], sources: int) -> int | None:
    """The event time every one of ``sources`` shifts partitions has reached, once all have announced one.

    >>> watermark({"0": 50, "1": 20}, 2), watermark({"0": 50}, 2)
    (20, None)
    """
    return min(announced.values()) if len(announced) >= sources else None


def category_moves(shift: Mapping[str, Any]) -> list[CategoryMove]:
    """The moves of a shift (JSON data of an ``InterestShift``): out of its from-categories, into its to-categories."""
    moves = []
    sides: tuple[tuple[list[dict[str, Any]], Direction], ...] = (
        (shift["from_categories"], "out"),
        (shift["to_categories"], "in"),
    )
    for changes, direction in sides:
        for change in changes:
            mass = change["before"] - change["after"] if direction == "out" else change["after"] - change["before"]
            moves.append(
                CategoryMove(
                    shift["shift_id"], change["category_id"], direction, mass, shift["ts"], shift["model_version"]
                )
            )
    return moves


@dataclass(frozen=True)
class Demand:
    """Users shifting into and out of one category, and the probability mass it gained and lost."""

    users_in: int = 0
    users_out: int = 0
    mass_gained: float = 0.0
    mass_lost: float = 0.0

    @property
    def net_mass(self) -> float:
        return self.mass_gained - self.mass_lost

    def add(self, move: CategoryMove) -> Demand:
        if move.direction == "in":
            return replace(self, users_in=self.users_in + 1, mass_gained=self.mass_gained + move.mass)
        return replace(self, users_out=self.users_out + 1, mass_lost=self.mass_lost + move.mass)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "net_mass": self.net_mass}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Demand:
        return cls(row["users_in"], row["users_out"], row["mass_gained"], row["mass_lost"])


def top_movers(demand: Mapping[str, Demand], n: int) -> tuple[list[tuple[str, Demand]], list[tuple[str, Demand]]]:
    """The ``n`` categories with the most net mass gained, and the ``n`` with the most lost (ties by category id)."""
    rising = sorted(((c, d) for c, d in demand.items() if d.net_mass > 0), key=lambda cd: (-cd[1].net_mass, cd[0]))
    falling = sorted(((c, d) for c, d in demand.items() if d.net_mass < 0), key=lambda cd: (cd[1].net_mass, cd[0]))
    return rising[:n], falling[:n]
