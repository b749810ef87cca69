"""The change detectors that :mod:`model.shift_eval.harness` compares, behind one interface.

Each takes a :class:`TrackInputs` (a history with everything a detector may read, computed
once) and returns the positions of its alarms.

* ``transformer``: :class:`~model.online.detector.ShiftDetector` on the model's recent interest
  (:mod:`model.online.scorer`, as the worker feeds it).
* ``frequency_jsd``: the same detector on raw category frequencies (each event's category
  as a one-hot distribution, so its short-term view is an EWMA of recent categories):
  the same test without the model.
* ``page_hinkley`` and ``adwin``: River's detectors on the surprisal of each event's
  category under :class:`MarkovSurprisal`.
* ``always_fire``: an alarm after every event.

All of them share the guards: no alarm before ``min_events`` events, and none within
``cooldown`` events of the last.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from river import drift

from model.online.detector import DetectorSettings, DetectorState, Shift, ShiftDetector
from model.online.distribution import Distribution
from model.shift_eval.benchmark import Track


@dataclass(frozen=True)
class TrackInputs:
    """A benchmark history and what the detectors read, one entry per event."""

    track: Track
    model: list[Distribution]  # the model's recent interest after each event (model/online/scorer.py)
    surprisal: np.ndarray  # bits, of each event's category under the Markov baseline


class ChangeDetector(Protocol):
    name: str

    def alarms(self, inputs: TrackInputs) -> list[int]: ...


class DistributionDetector:
    """A :class:`ShiftDetector` fed the model's recent interest, or one-hot categories."""

    def __init__(self, name: str, settings: DetectorSettings, use_model: bool):
        self.name = name
        self.detector = ShiftDetector(settings)
        self.use_model = use_model

    def shifts(self, inputs: TrackInputs) -> list[Shift]:
        state = DetectorState()
        events = inputs.track.events()
        distributions = inputs.model if self.use_model else ({e.category_id: 1.0} for e in events)
        found = (self.detector.update(state, distribution, event) for distribution, event in zip(distributions, events))
        return [shift for shift in found if shift is not None]

    def alarms(self, inputs: TrackInputs) -> list[int]:
        return [shift.events_seen - 1 for shift in self.shifts(inputs)]


class AlwaysFire:
    name = "always_fire"

    def alarms(self, inputs: TrackInputs) -> list[int]:
        return list(range(len(inputs.track)))


class SurprisalDetector:
    """A River drift detector on the surprisal stream, restarted after each alarm."""

    def __init__(self, name: str, kind: str, params: dict[str, float], min_events: int, cooldown: int):
        self.name = name
        self.kind = kind
        self.params = params
        self.min_events = min_events
        self.cooldown = cooldown

    def _fresh(self) -> drift.PageHinkley | drift.ADWIN:
        if self.kind == "page_hinkley":
            return drift.PageHinkley(min_instances=self.min_events, mode="up", **self.params)
        return drift.ADWIN(clock=1, **self.params)  # test at every event, not every 32nd

    def alarms(self, inputs: TrackInputs) -> list[int]:
        test = self._fresh()
        alarms: list[int] = []
        for t, value in enumerate(inputs.surprisal):
            test.update(float(value))
            if not test.drift_detected or t + 1 < self.min_events:
                continue
            if not alarms or t - alarms[-1] >= self.cooldown:
                alarms.append(t)
            test = self._fresh()
        return alarms


class MarkovSurprisal:
    """A first-order Markov model of categories that also adapts to the user.

    ``P(c | previous, user) = mix * P_T(c | previous) + (1 - mix) * P_U(c)``: ``P_T`` the
    transitions counted on training histories, smoothed towards the category frequencies;
    ``P_U`` the user's own categories so far, smoothed the same way. An event's surprisal
    is ``-log2 P`` of its category: high when a user turns to categories that neither
    follow their last one nor appear in their history.

    >>> model = MarkovSurprisal.fit([["a", "a", "b"], ["a", "b", "b"]])
    >>> [round(float(x), 2) for x in model.surprisal(["a", "a", "c"])]
    [1.17, 0.88, 4.95]
    """

    def __init__(
        self, transitions: dict[str, Counter[str]], counts: Counter[str], mix: float = 0.5, smoothing: float = 1.0
    ):
        self.transitions = transitions
        self.leaving = {previous: sum(following.values()) for previous, following in transitions.items()}
        self.counts = counts
        self.total = sum(counts.values())
        self.unseen = 1.0 / (self.total + len(counts) + 1)  # an add-one share for a category never seen
        self.mix = mix
        self.smoothing = smoothing

    @classmethod
    def fit(cls, histories: Iterable[Sequence[str]]) -> MarkovSurprisal:
        transitions: dict[str, Counter[str]] = {}
        counts: Counter[str] = Counter()
        for categories in histories:
            counts.update(categories)
            for previous, current in itertools.pairwise(categories):
                transitions.setdefault(previous, Counter())[current] += 1
        return cls(transitions, counts)

    def _prior(self, category: str) -> float:
        seen = self.counts.get(category, 0)
        return (seen + 1.0) / (self.total + len(self.counts) + 1) if seen else self.unseen

    def surprisal(self, categories: Sequence[str]) -> np.ndarray:
        out = np.empty(len(categories))
        own: Counter[str] = Counter()
        previous: str | None = None
        for t, category in enumerate(categories):
            prior = self._prior(category)
            following: Mapping[str, int] = self.transitions.get(previous, Counter()) if previous is not None else {}
            leaving = self.leaving.get(previous, 0) if previous is not None else 0
            transition = (following.get(category, 0) + self.smoothing * prior) / (leaving + self.smoothing)
            user = (own[category] + self.smoothing * prior) / (t + self.smoothing)
            out[t] = -math.log2(self.mix * transition + (1.0 - self.mix) * user)
            own[category] += 1
            previous = category
        return out
