"""Train / validation / test splits that respect time.

Every event gets a *phase*: the split in which it is a prediction target. A target is
always predicted from all of the user's earlier events, whatever their phase, so nothing
from the future is ever an input.

* ``time``: ``ts < t1`` -> train, ``t1 <= ts < t2`` -> validation, ``ts >= t2`` -> test.
  When ``t1``/``t2`` are not given they default to the 70% and 85% quantiles of all event
  times in the log.
* ``leave_one_out`` (logs without timestamps): a user's last event is test, the one
  before it validation, the rest train.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from model.data.loaders import EventLog, UserSequence

TRAIN, VALIDATION, TEST = 0, 1, 2
DEFAULT_TIME_QUANTILES = (0.70, 0.85)


@dataclass(frozen=True)
class SplitSpec:
    kind: Literal["time", "leave_one_out"]
    t1: int | None = None
    t2: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "time" and (self.t1 is None or self.t2 is None or self.t1 >= self.t2):
            raise ValueError("a time split needs t1 < t2")

    @classmethod
    def for_log(cls, log: EventLog, t1: int | None = None, t2: int | None = None) -> SplitSpec:
        """The split a log calls for: by time when it has timestamps, else leave-one-out."""
        if not log.has_timestamps:
            if t1 is not None or t2 is not None:
                raise ValueError(f"{log.name} has no timestamps: it can only be split leave-one-out")
            return cls("leave_one_out")
        if t1 is None or t2 is None:
            times = np.concatenate([np.asarray(u.timestamps) for u in log.users])
            q1, q2 = np.quantile(times, DEFAULT_TIME_QUANTILES)
            t1 = int(q1) if t1 is None else t1
            t2 = int(q2) if t2 is None else t2
        return cls("time", t1, t2)

    def phases(self, user: UserSequence) -> np.ndarray:
        """Per event, its phase. (A user's first event is never a target: nothing precedes it.)"""
        n = len(user)
        if self.kind == "time":
            assert self.t1 is not None and self.t2 is not None  # __post_init__ refuses a time split without them
            ts = np.asarray(user.timestamps, dtype=np.int64)
            phases = np.where(ts < self.t1, TRAIN, np.where(ts < self.t2, VALIDATION, TEST))
        else:
            phases = np.full(n, TRAIN)
            phases[-1] = TEST
            if n >= 3:
                phases[-2] = VALIDATION
        return phases.astype(np.int8)

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "t1": self.t1, "t2": self.t2}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SplitSpec:
        return cls(data["kind"], data.get("t1"), data.get("t2"))  # type: ignore[arg-type]


def before_test(log: EventLog, split: SplitSpec) -> list[UserSequence]:
    """Every user's events that precede the test phase (phases only grow along a sequence)."""
    return [user.head(int(np.sum(split.phases(user) < TEST))) for user in log.users]


def parse_time(value: str) -> int:
    """Epoch seconds from an ISO 8601 string (with offset) or an integer string.

    >>> parse_time("2017-12-01T00:00:00+08:00"), parse_time("1512057600")
    (1512057600, 1512057600)
    """
    if value.lstrip("-").isdigit():
        return int(value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r}: give a UTC offset, e.g. 2017-12-01T00:00:00+08:00")
    return int(moment.timestamp())
