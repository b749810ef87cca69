"""Interest-shift detection on a user's successive interest distributions.

For every event the detector compares the user's *short-term view* (the newest
distributions, smoothed with a fast EWMA) with their *long-term profile* (a slow EWMA) by
Jensen-Shannon divergence, and feeds the divergence to a one-sided CUSUM test::

    S = max(0, S + divergence - drift)        alarm when S >= threshold

with four guards: no test before ``min_events`` events (a new user's interest is still
forming); after an alarm the test is disarmed until the divergence has fallen back to
``release`` (hysteresis: one move raises one alarm, not one per event while the profile
catches up) and for at least ``cooldown`` events; and a shift must name a category that
gained at least ``min_change`` of mass. An alarm makes the short-term view the user's new
profile, so a second move is measured from the first one's destination.

A shift says which categories lost mass (``from``) and gained it (``to``), profile against
view; the divergence; a confidence, when a calibration fitted on validation alarms is
given; and its evidence: the recent events whose steps raised the ``to`` categories most.

The detector keeps no per-user state of its own: each user's :class:`DetectorState` is
small and bounded (three distributions of at most ``top_m`` categories, ``evidence_events``
recent events) and lives in the user's table row, so it is recovered with the row.

>>> from model.data.events import StoredEvent
>>> detector = ShiftDetector(DetectorSettings(min_events=3, cooldown=3))
>>> state = DetectorState()
>>> shifts = []
>>> for i in range(12):
...     category = "shoes" if i < 6 else "books"
...     event = StoredEvent(f"e{i}", f"item{i}", category, "view", 1_000 * i)
...     shift = detector.update(state, {category: 0.9}, event)
...     shifts += [shift] if shift else []
>>> [(s.event.event_id, s.from_categories[0].category_id, s.to_categories[0].category_id) for s in shifts]
[('e9', 'shoes', 'books')]
>>> [(e.event.event_id, round(e.weight, 2)) for e in shifts[0].evidence]
[('e6', 0.9)]
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model.data.events import StoredEvent
from model.net.checkpoint import META_FILE
from model.online.calibration import IsotonicCalibration
from model.online.distribution import Distribution, blend, gains, jensen_shannon

DETECTOR_FILE = "detector.json"


@dataclass(frozen=True)
class DetectorSettings:
    """The detector's parameters; :mod:`model.shift_eval.harness` tunes ``drift`` and ``threshold``."""

    short_alpha: float = 0.5  # EWMA weight of the newest distribution in the short-term view
    long_alpha: float = 0.05  # ... in the long-term profile (an average while events < 1/long_alpha)
    drift: float = 0.15  # divergence the CUSUM allows per event without counting it as change
    threshold: float = 0.5  # CUSUM level that raises an alarm
    release: float = 0.05  # divergence at or below which a disarmed test re-arms
    cooldown: int = 10  # events after an alarm before the next one
    min_events: int = 10  # events a user needs before the first alarm
    min_change: float = 0.05  # smallest mass change a from/to category needs
    top_m: int = 20  # categories kept per distribution
    recent_events: int = 10  # events the model reads for each input distribution (model/online/scorer.py)
    max_categories: int = 3  # from/to categories listed per shift
    evidence_events: int = 8  # recent events kept as evidence
    evidence_listed: int = 5  # events listed per shift

    def __post_init__(self) -> None:
        if not (0 < self.long_alpha <= self.short_alpha <= 1):
            raise ValueError("need 0 < long_alpha <= short_alpha <= 1")
        if self.threshold <= 0 or self.drift < 0 or self.release < 0:
            raise ValueError("need threshold > 0, drift >= 0 and release >= 0")
        if (
            min(self.cooldown, self.min_events, self.recent_events) < 1
            or min(self.top_m, self.max_categories, self.evidence_listed) < 1
        ):
            raise ValueError(
                "cooldown, min_events, recent_events, top_m, max_categories and evidence_listed must be >= 1"
            )


@dataclass
class Moved:
    """A recent event and the categories its step raised (up to three, by mass gained)."""

    event: StoredEvent
    gains: Distribution


@dataclass
class DetectorState:
    """One user's detector state: bounded (``top_m`` categories per distribution, ``evidence_events`` events)."""

    events: int = 0
    statistic: float = 0.0
    armed: bool = True
    since_alarm: int = 0
    short: Distribution = field(default_factory=dict)
    long: Distribution = field(default_factory=dict)
    previous: Distribution = field(default_factory=dict)
    recent: list[Moved] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CategoryMove:
    category_id: str
    before: float  # long-term profile
    after: float  # short-term view


@dataclass(frozen=True, slots=True)
class Evidence:
    event: StoredEvent
    weight: float  # probability mass its step added to the shift's "to" categories


@dataclass(frozen=True, slots=True)
class Shift:
    event: StoredEvent  # the event after which the alarm was raised
    from_categories: tuple[CategoryMove, ...]
    to_categories: tuple[CategoryMove, ...]
    divergence: float
    statistic: float
    confidence: float | None  # None without a calibration
    evidence: tuple[Evidence, ...]
    events_seen: int


class ShiftDetector:
    """Feeds each user's distributions, one event at a time, to the test; see the module text."""

    def __init__(self, settings: DetectorSettings | None = None, calibration: IsotonicCalibration | None = None):
        self.settings = settings or DetectorSettings()
        self.calibration = calibration

    def update(self, state: DetectorState, distribution: Distribution, event: StoredEvent) -> Shift | None:
        """Take the user's distribution just after ``event``; return the shift it completes, if any."""
        s = self.settings
        state.recent.append(Moved(event, gains(state.previous, distribution, 3)))
        del state.recent[: -s.evidence_events]
        state.previous = distribution
        state.events += 1
        state.since_alarm += 1
        if state.events == 1:
            state.short = state.long = distribution
            return None
        state.short = blend(state.short, distribution, s.short_alpha, s.top_m)
        divergence = jensen_shannon(state.short, state.long)
        shift = None
        if not state.armed and divergence <= s.release:
            state.armed = True
        if state.armed and state.events >= s.min_events:
            state.statistic = max(0.0, state.statistic + divergence - s.drift)
            if state.statistic >= s.threshold and state.since_alarm >= s.cooldown:
                shift = self._shift(state, event, divergence)
        if shift is None:
            state.long = blend(state.long, distribution, max(s.long_alpha, 1.0 / state.events), s.top_m)
        else:  # the new interest is the profile from now on
            state.long = state.short
            state.armed = False
            state.statistic = 0.0
            state.since_alarm = 0
        return shift

    def _shift(self, state: DetectorState, event: StoredEvent, divergence: float) -> Shift | None:
        s = self.settings
        moves = [
            CategoryMove(c, state.long.get(c, 0.0), state.short.get(c, 0.0))
            for c in sorted(state.long.keys() | state.short.keys())
        ]
        gained = sorted((m for m in moves if m.after - m.before >= s.min_change), key=lambda m: m.before - m.after)
        if not gained:
            return None
        lost = sorted((m for m in moves if m.before - m.after >= s.min_change), key=lambda m: m.after - m.before)
        to = tuple(gained[: s.max_categories])
        targets = {m.category_id for m in to}
        weighted = [
            Evidence(moved.event, sum(g for c, g in moved.gains.items() if c in targets)) for moved in state.recent
        ]
        evidence = sorted((e for e in weighted if e.weight > 0), key=lambda e: (-e.weight, -e.event.ts))[
            : s.evidence_listed
        ]
        return Shift(
            event=event,
            from_categories=tuple(lost[: s.max_categories]),
            to_categories=to,
            divergence=divergence,
            statistic=state.statistic,
            confidence=None if self.calibration is None else self.calibration(divergence),
            evidence=tuple(evidence),
            events_seen=state.events,
        )


class DetectorMismatch(ValueError):
    """``detector.json`` was tuned for another model version than the checkpoint beside it."""


def tuned_for(directory: str | Path) -> str | None:
    """The model version the directory's ``detector.json`` was tuned for (``None``: no file, or
    one written before detectors recorded it)."""
    path = Path(directory) / DETECTOR_FILE
    return json.loads(path.read_text()).get("model_version") if path.exists() else None


def save_detector(detector: ShiftDetector, directory: str | Path, provenance: Mapping[str, object]) -> Path:
    """Write ``detector.json`` (settings, calibration, how they were fitted, and the model
    version of the checkpoint in ``directory``) atomically: a reader sees the old file or the new."""
    directory = Path(directory)
    meta = directory / META_FILE
    document = {
        "model_version": json.loads(meta.read_text()).get("model_version") if meta.exists() else None,
        "settings": asdict(detector.settings),
        "calibration": None if detector.calibration is None else detector.calibration.to_dict(),
        "provenance": provenance,
    }
    path = directory / DETECTOR_FILE
    partial = path.with_name(f".{DETECTOR_FILE}.{os.getpid()}.partial")
    partial.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(partial, path)
    return path


def load_detector(directory: str | Path, model_version: str | None = None) -> ShiftDetector:
    """The detector tuned for a checkpoint, or the defaults (uncalibrated) when it has none.

    Raises :class:`DetectorMismatch` when the file says it was tuned for a model version other
    than ``model_version``: its thresholds and calibration mean nothing for another model."""
    path = Path(directory) / DETECTOR_FILE
    if not path.exists():
        return ShiftDetector()
    document = json.loads(path.read_text())
    tuned = document.get("model_version")
    if model_version is not None and tuned is not None and tuned != model_version:
        raise DetectorMismatch(
            f"{path} was tuned for model version {tuned}, not for {model_version}, the checkpoint beside it: "
            f"run `shiftwatch detect-eval --checkpoint {directory} ...` (make detect-eval) to tune it for this model, "
            "or delete the file to serve the uncalibrated defaults"
        )
    calibration = document.get("calibration")
    return ShiftDetector(
        DetectorSettings(**document["settings"]),
        None if calibration is None else IsotonicCalibration.from_dict(calibration),
    )
