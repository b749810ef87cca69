"""``shiftwatch detect-eval``: interest-shift detectors compared on real histories.

Two benchmarks (:mod:`model.shift_eval.benchmark`): spliced histories with known change points
(plus unspliced controls), and real histories with change points from the offline
labeller. Each detector's parameters are tuned for F1 on the validation users, then scored
on the test users; precision-recall curves sweep each detector's threshold on the test
users. The transformer detector's confidence is calibrated on its validation alarms and
checked on its test alarms. The tuned, calibrated transformer detector is what the worker
loads (``detector.json`` in the checkpoint directory).
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from model.data.loaders import EventLog
from model.data.splits import TEST
from model.net.checkpoint import Checkpoint
from model.online.calibration import IsotonicCalibration
from model.online.detector import DetectorSettings, ShiftDetector
from model.online.scorer import recent_interest_along
from model.shift_eval.benchmark import (
    NATURAL_THRESHOLD,
    NATURAL_WINDOW,
    Split,
    Track,
    control_tracks,
    natural_tracks,
    spliced_tracks,
    users_of,
)
from model.shift_eval.detectors import (
    AlwaysFire,
    ChangeDetector,
    DistributionDetector,
    MarkovSurprisal,
    SurprisalDetector,
    TrackInputs,
)
from model.shift_eval.scoring import DetectionScore, match, score_alarms

Params = dict[str, Any]
Grid = dict[str, tuple[float, ...]]

GRIDS: dict[str, Grid] = {
    "transformer": {
        "short_alpha": (0.3, 0.6, 1.0),
        "long_alpha": (0.02, 0.05),
        "drift": (0.01, 0.02, 0.05, 0.1, 0.15, 0.3),
        "threshold": (0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
    },
    "page_hinkley": {"delta": (0.05, 0.5, 1.0), "threshold": (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)},
    "adwin": {"delta": (0.002, 0.01, 0.05, 0.2, 0.5, 0.9)},
    "always_fire": {},
}
GRIDS["frequency_jsd"] = GRIDS["transformer"]
DETECTORS = ("transformer", "frequency_jsd", "page_hinkley", "adwin", "always_fire")
MIN_PART = 20  # events of each side of a splice, at least
SWEEP_KEY = {"transformer": "threshold", "frequency_jsd": "threshold", "page_hinkley": "threshold", "adwin": "delta"}


@dataclass(frozen=True)
class EvalSettings:
    tolerance: int = 10  # events after a change point within which an alarm detects it
    spliced: int = 250  # spliced histories per split (and as many controls)
    seed: int = 0
    natural_window: int = NATURAL_WINDOW
    natural_threshold: float = NATURAL_THRESHOLD
    detector: DetectorSettings = DetectorSettings()  # guards and sizes shared by all detectors
    grids: dict[str, Grid] = field(default_factory=lambda: GRIDS)
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    progress: bool = True  # progress bars on stderr


@dataclass(frozen=True)
class Benchmark:
    name: str
    validation: list[TrackInputs]
    test: list[TrackInputs]


def markov_for(checkpoint: Checkpoint, log: EventLog) -> MarkovSurprisal:
    """The Markov baseline, fitted on the events the checkpoint could learn from (before test)."""
    split = checkpoint.split
    return MarkovSurprisal.fit(
        [c for c, phase in zip(u.categories, split.phases(u)) if phase < TEST] for u in log.users
    )


def spliced_split(log: EventLog, split: Split, settings: EvalSettings) -> list[Track]:
    users = users_of(log, split, MIN_PART)
    seed = settings.seed + (0 if split == "validation" else 2)
    return spliced_tracks(users, settings.spliced, seed, MIN_PART) + control_tracks(
        users, settings.spliced, seed + 1, MIN_PART
    )


def natural_split(log: EventLog, split: Split, settings: EvalSettings) -> list[Track]:
    return natural_tracks(users_of(log, split, MIN_PART), settings.natural_window, settings.natural_threshold)


def with_inputs(
    checkpoint: Checkpoint, log: EventLog, tracks: Sequence[Track], settings: EvalSettings
) -> list[TrackInputs]:
    """Everything the detectors read, computed once per track."""
    shared = settings.detector
    distributions = recent_interest_along(
        checkpoint, [t.sequence for t in tracks], shared.recent_events, shared.top_m, progress=settings.progress
    )
    markov = markov_for(checkpoint, log)
    return [TrackInputs(t, d, markov.surprisal(t.sequence.categories)) for t, d in zip(tracks, distributions)]


def build_benchmarks(checkpoint: Checkpoint, log: EventLog, settings: EvalSettings) -> list[Benchmark]:
    splits: tuple[Split, Split] = ("validation", "test")
    tracks = {
        "spliced": [spliced_split(log, split, settings) for split in splits],
        "natural": [natural_split(log, split, settings) for split in splits],
    }
    inputs = iter(
        with_inputs(checkpoint, log, [t for parts in tracks.values() for part in parts for t in part], settings)
    )
    return [Benchmark(name, *([next(inputs) for _ in part] for part in parts)) for name, parts in tracks.items()]


def make_detector(name: str, params: Params, shared: DetectorSettings) -> ChangeDetector:
    if name in ("transformer", "frequency_jsd"):
        return DistributionDetector(name, replace(shared, **params), use_model=name == "transformer")
    if name in ("page_hinkley", "adwin"):
        return SurprisalDetector(name, name, params, shared.min_events, shared.cooldown)
    if name == "always_fire":
        return AlwaysFire()
    raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")


def grid(values: Grid) -> list[Params]:
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


Job = tuple[str, tuple[tuple[str, Any], ...]]  # detector name, parameters (hashable)
_inputs: Sequence[TrackInputs] = ()  # what forked scorers read, set before the pool forks


def _score_job(job: Job, shared: DetectorSettings, tolerance: int) -> DetectionScore:
    name, params = job
    detector = make_detector(name, dict(params), shared)
    return score_alarms(((detector.alarms(i), i.track.changes, len(i.track)) for i in _inputs), tolerance)


def score_jobs(
    jobs: Sequence[Job],
    inputs: Sequence[TrackInputs],
    settings: EvalSettings,
    desc: str,
    deadline: float | None = None,
) -> dict[Job, DetectionScore]:
    """Score each (detector, parameters) job on ``inputs``, on ``settings.workers`` processes;
    past ``deadline`` (``time.monotonic()``), only the jobs scored so far (at least one)."""
    global _inputs
    _inputs = inputs
    work = functools.partial(_score_job, shared=settings.detector, tolerance=settings.tolerance)
    scores: dict[Job, DetectionScore] = {}
    try:
        # fork: the children read the inputs without pickling them (and never run torch)
        with (
            multiprocessing.get_context("fork").Pool(settings.workers)
            if settings.workers > 1
            else nullcontext() as pool
        ):
            results = map(work, jobs) if pool is None else pool.imap(work, jobs)
            for job, score in zip(
                jobs, tqdm(results, total=len(jobs), desc=desc, leave=False, disable=not settings.progress)
            ):
                scores[job] = score
                if deadline is not None and time.monotonic() > deadline:
                    break
        return scores
    finally:
        _inputs = ()


def _preference(score: DetectionScore) -> tuple[float, float]:
    """Best F1 first, then the shorter mean delay."""
    return score.f1, -(score.mean_delay if score.mean_delay is not None else float("inf"))


def evaluate_benchmark(benchmark: Benchmark, settings: EvalSettings) -> tuple[dict[str, Any], dict[str, Params]]:
    """Tune every detector on validation, score it on test; precision-recall curves on test."""
    options = {name: [tuple(p.items()) for p in grid(settings.grids[name])] for name in DETECTORS}
    validation = score_jobs(
        [(name, p) for name, ps in options.items() for p in ps],
        benchmark.validation,
        settings,
        f"{benchmark.name}: tuning",
    )
    tuned = {name: max(ps, key=lambda p: _preference(validation[(name, p)])) for name, ps in options.items()}
    sweeps = {
        name: [p for p in ps if all(v == dict(tuned[name])[k] for k, v in p if k != SWEEP_KEY[name])]
        for name, ps in options.items()
        if name in SWEEP_KEY
    }
    test_jobs = set(tuned.items()) | {(name, p) for name, ps in sweeps.items() for p in ps}
    test = score_jobs(sorted(test_jobs), benchmark.test, settings, f"{benchmark.name}: testing")
    results: dict[str, Any] = {}
    for name, params in tuned.items():
        curve = [
            {
                SWEEP_KEY[name]: dict(p)[SWEEP_KEY[name]],
                "precision": test[(name, p)].precision,
                "recall": test[(name, p)].recall,
            }
            for p in sweeps.get(name, [])
        ]
        results[name] = {
            **test[(name, params)].as_dict(),
            "params": dict(params),
            "validation_f1": validation[(name, params)].f1,
            "pr_curve": curve,
        }
    return results, {name: dict(p) for name, p in tuned.items()}


def calibrate(detector: ShiftDetector, inputs: Sequence[TrackInputs], tolerance: int) -> tuple[list[float], list[int]]:
    """Each alarm's divergence and whether it detected a change point."""
    scores: list[float] = []
    labels: list[int] = []
    wrapped = DistributionDetector("transformer", detector.settings, use_model=True)
    for i in inputs:
        shifts = wrapped.shifts(i)
        _, used = match([s.events_seen - 1 for s in shifts], i.track.changes, tolerance)
        scores += [s.divergence for s in shifts]
        labels += [int(u) for u in used]
    return scores, labels


def reliability(
    calibration: IsotonicCalibration, scores: Sequence[float], labels: Sequence[int], bins: int = 5
) -> dict[str, Any]:
    """How well test-alarm confidences match the rate of true alarms: per-bin table, ECE, Brier."""
    confidence = np.array([calibration(s) for s in scores])
    truth = np.array(labels, dtype=np.float64)
    table = []
    ece = 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    for low, high in itertools.pairwise(edges):
        inside = (confidence >= low) & ((confidence < high) if high < 1.0 else (confidence <= high))
        if inside.any():
            mean_confidence, observed = float(confidence[inside].mean()), float(truth[inside].mean())
            ece += inside.mean() * abs(mean_confidence - observed)
            table.append(
                {
                    "bin": [float(low), float(high)],
                    "alarms": int(inside.sum()),
                    "confidence": mean_confidence,
                    "observed": observed,
                }
            )
    brier = float(np.mean((confidence - truth) ** 2)) if len(truth) else None
    return {"bins": table, "ece": float(ece), "brier": brier, "alarms": len(truth)}


def calibrated_detector(
    checkpoint: Checkpoint, log: EventLog, histories: int, progress: bool = True, deadline: float | None = None
) -> tuple[ShiftDetector, dict[str, Any]]:
    """The transformer detector tuned and calibrated on ``histories`` spliced validation
    histories (and as many controls), with its provenance: what ``shiftwatch train`` and the
    demo save when no full ``detect-eval`` has run; ``deadline``: see :func:`tune_transformer`."""
    settings = EvalSettings(spliced=histories, progress=progress)
    validation = with_inputs(checkpoint, log, spliced_split(log, "validation", settings), settings)
    provenance = {"dataset": log.name, "tuned_on": f"{len(validation)} spliced validation histories"}
    return tune_transformer(validation, settings, deadline), provenance


def tune_transformer(
    validation: Sequence[TrackInputs], settings: EvalSettings, deadline: float | None = None
) -> ShiftDetector:
    """The transformer detector alone: tuned for F1 on ``validation``, calibrated on its alarms there.

    What ``detect-eval`` fits for the worker, without the baselines and the test split. With a
    ``deadline`` the grid is searched in a seeded random order until it passes: the best of the
    points scored by then.
    """
    options = [("transformer", tuple(p.items())) for p in grid(settings.grids["transformer"])]
    if deadline is not None:
        random.Random(settings.seed).shuffle(options)
    scores = score_jobs(options, validation, settings, "tuning the transformer detector", deadline)
    best = max(scores, key=lambda job: _preference(scores[job]))
    return calibrated(replace(settings.detector, **dict(best[1])), validation, settings.tolerance)


def calibrated(tuned: DetectorSettings, validation: Sequence[TrackInputs], tolerance: int) -> ShiftDetector:
    scores, labels = calibrate(ShiftDetector(tuned), validation, tolerance)
    if not scores:
        return ShiftDetector(tuned)  # no alarms to calibrate on: confidence stays unknown
    return ShiftDetector(tuned, IsotonicCalibration.fit(scores, labels))


def detect_eval(
    checkpoint: Checkpoint, log: EventLog, settings: EvalSettings = EvalSettings()
) -> tuple[dict[str, Any], ShiftDetector]:
    """The whole evaluation; returns the results and the tuned, calibrated transformer detector."""
    spliced, natural = build_benchmarks(checkpoint, log, settings)
    result: dict[str, Any] = {
        "checkpoint": checkpoint.model_version,
        "dataset": log.name,
        "settings": asdict(settings),
    }
    for benchmark in (spliced, natural):
        result[benchmark.name], tuned = evaluate_benchmark(benchmark, settings)
        result[f"{benchmark.name}_data"] = _describe(benchmark)
        if benchmark is spliced:
            detector = calibrated(
                replace(settings.detector, **tuned["transformer"]), spliced.validation, settings.tolerance
            )
            result["timeline"] = timeline(spliced.test, tuned, settings)
            if detector.calibration is not None:
                test_scores, test_labels = calibrate(detector, spliced.test, settings.tolerance)
                result["calibration"] = {
                    "fitted_on": "spliced validation alarms",
                    "curve": detector.calibration.to_dict(),
                    "test": reliability(detector.calibration, test_scores, test_labels),
                }
    return result, detector


def timeline(
    inputs: Sequence[TrackInputs], tuned: dict[str, Params], settings: EvalSettings, categories: int = 4
) -> dict[str, Any]:
    """One spliced test history for the report's plot: the probabilities of its main
    categories after each event, the true change point, and each detector's alarms.
    The first history whose change the transformer detects (else the first one)."""
    spliced = [i for i in inputs if i.track.kind == "spliced"]
    detectors = {
        name: make_detector(name, tuned[name], settings.detector)
        for name in ("transformer", "frequency_jsd", "page_hinkley")
    }

    def detected(i: TrackInputs) -> bool:
        return bool(match(detectors["transformer"].alarms(i), i.track.changes, settings.tolerance)[0])

    chosen = next((i for i in spliced if detected(i)), spliced[0])
    peak: dict[str, float] = {}
    for distribution in chosen.model:
        for category, mass in distribution.items():
            peak[category] = max(peak.get(category, 0.0), mass)
    shown = sorted(peak, key=lambda c: (-peak[c], c))[:categories]
    return {
        "track": chosen.track.name,
        "events": len(chosen.track),
        "change_points": list(chosen.track.changes),
        "categories": {c: [round(d.get(c, 0.0), 4) for d in chosen.model] for c in shown},
        "event_categories": list(chosen.track.sequence.categories),
        "alarms": {name: detector.alarms(chosen) for name, detector in detectors.items()},
    }


def _describe(benchmark: Benchmark) -> dict[str, Any]:
    def count(inputs: Sequence[TrackInputs]) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for i in inputs:
            kinds[i.track.kind] = kinds.get(i.track.kind, 0) + 1
        return {
            **kinds,
            "events": sum(len(i.track) for i in inputs),
            "change_points": sum(len(i.track.changes) for i in inputs),
        }

    return {"validation": count(benchmark.validation), "test": count(benchmark.test)}
