"""Calibrated confidence: isotonic regression of "this alarm was a true shift" on a score.

Fitted on the alarms a detector raises on validation data, each labelled true or false
(:mod:`model.shift_eval.scoring`); the result maps any score to a probability and never
decreases as the score grows. Each block's rate is smoothed towards 1/2 with one pseudo
alarm of each kind, so that a block of three alarms does not claim certainty.

>>> calibration = IsotonicCalibration.fit([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 0, 1, 0, 1, 1])
>>> [round(calibration(x), 3) for x in (0.0, 0.25, 0.45, 0.9)]
[0.25, 0.25, 0.5, 0.75]
>>> IsotonicCalibration.from_dict(calibration.to_dict()) == calibration
True
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IsotonicCalibration:
    """A non-decreasing step function: ``probabilities[i]`` from ``scores[i]`` up."""

    scores: tuple[float, ...]
    probabilities: tuple[float, ...]
    n_alarms: int

    @classmethod
    def fit(cls, scores: Sequence[float], labels: Sequence[int | bool]) -> IsotonicCalibration:
        """Pool adjacent violators over the alarms sorted by score."""
        if len(scores) != len(labels):
            raise ValueError("one label per score")
        if not scores:
            raise ValueError("no alarms to calibrate on")
        pairs = sorted(zip(scores, labels))
        blocks: list[list[float]] = []  # [first score, positives, count]
        for score, label in pairs:
            blocks.append([score, float(bool(label)), 1.0])
            while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
                last = blocks.pop()
                blocks[-1][1] += last[1]
                blocks[-1][2] += last[2]
        probabilities, level = [], 0.0
        for _, positives, count in blocks:
            level = max(level, (positives + 1.0) / (count + 2.0))  # smoothing may break order: keep it
            probabilities.append(level)
        return cls(tuple(b[0] for b in blocks), tuple(probabilities), len(pairs))

    def __call__(self, score: float) -> float:
        block = max(0, bisect.bisect_right(self.scores, score) - 1)
        return self.probabilities[block]

    def to_dict(self) -> dict[str, object]:
        return {"scores": list(self.scores), "probabilities": list(self.probabilities), "n_alarms": self.n_alarms}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsotonicCalibration:
        return cls(tuple(data["scores"]), tuple(data["probabilities"]), int(data["n_alarms"]))
