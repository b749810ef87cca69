"""Scoring alarms against known change points.

An alarm at position ``t`` (raised just after event ``t``) *detects* change point ``c``
when ``c <= t <= c + tolerance``: a causal detector cannot see a change before its first
event. Each change point is matched to its first unmatched alarm in that range; every
other alarm is a false alarm. The delay of a detection is ``t - c`` events.

>>> score = score_alarms([([5, 12, 30], (10,), 40), ([], (), 20)], tolerance=5)
>>> score.precision, score.recall, score.median_delay, score.false_alarms_per_1k
(0.3333333333333333, 1.0, 2.0, 33.333333333333336)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


def match(alarms: Sequence[int], changes: Sequence[int], tolerance: int) -> tuple[list[int], list[bool]]:
    """The delay of each detected change point, and for each alarm whether it detected one."""
    used = [False] * len(alarms)
    delays = []
    for change in changes:
        for i, alarm in enumerate(alarms):
            if not used[i] and change <= alarm <= change + tolerance:
                used[i] = True
                delays.append(alarm - change)
                break
    return delays, used


@dataclass(frozen=True)
class DetectionScore:
    precision: float
    recall: float
    f1: float
    median_delay: float | None
    mean_delay: float | None
    false_alarms_per_1k: float
    alarms: int
    changes: int
    events: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def score_alarms(runs: Iterable[tuple[Sequence[int], Sequence[int], int]], tolerance: int) -> DetectionScore:
    """Pool ``(alarms, change points, number of events)`` over sequences into one score."""
    delays: list[int] = []
    n_alarms = n_changes = n_events = true_alarms = 0
    for alarms, changes, events in runs:
        found, used = match(alarms, changes, tolerance)
        delays += found
        true_alarms += sum(used)
        n_alarms += len(alarms)
        n_changes += len(changes)
        n_events += events
    precision = true_alarms / n_alarms if n_alarms else 0.0
    recall = len(delays) / n_changes if n_changes else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return DetectionScore(
        precision=precision,
        recall=recall,
        f1=f1,
        median_delay=float(np.median(delays)) if delays else None,
        mean_delay=float(np.mean(delays)) if delays else None,
        false_alarms_per_1k=1000.0 * (n_alarms - true_alarms) / n_events if n_events else 0.0,
        alarms=n_alarms,
        changes=n_changes,
        events=n_events,
    )
