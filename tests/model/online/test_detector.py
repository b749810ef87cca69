"""The shift detector on deterministic sequences with known shift points."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from model.data.events import StoredEvent
from model.net.checkpoint import META_FILE
from model.online.calibration import IsotonicCalibration
from model.online.detector import (
    DETECTOR_FILE,
    DetectorMismatch,
    DetectorSettings,
    DetectorState,
    ShiftDetector,
    load_detector,
    save_detector,
    tuned_for,
)
from model.online.distribution import Distribution

SETTINGS = DetectorSettings(min_events=5, cooldown=5)


def feed(detector: ShiftDetector, categories: list[str], noise: float = 0.0, seed: int = 0) -> list:
    """Each event's distribution: 0.8 on its category, the rest spread over a few others
    (plus optional noise), as a model that believes in the latest category would give."""
    rng = np.random.default_rng(seed)
    state = DetectorState()
    shifts = []
    for i, category in enumerate(categories):
        distribution: Distribution = {category: 0.8}
        for other in ("x", "y"):
            distribution[other] = 0.05 + noise * float(rng.random())
        shift = detector.update(state, distribution, StoredEvent(f"e{i}", f"item{i}", category, "view", 1000 * i))
        if shift is not None:
            shifts.append(shift)
    return shifts


def test_a_clean_shift_is_found_once_with_its_categories_and_evidence() -> None:
    shifts = feed(ShiftDetector(SETTINGS), ["shoes"] * 30 + ["books"] * 30)
    assert len(shifts) == 1
    shift = shifts[0]
    position = shift.events_seen - 1
    assert 30 <= position <= 33
    assert [m.category_id for m in shift.from_categories] == ["shoes"]
    assert [m.category_id for m in shift.to_categories] == ["books"]
    assert shift.to_categories[0].after > shift.to_categories[0].before
    assert shift.evidence[0].event.event_id == "e30" and shift.evidence[0].event.category_id == "books"
    assert all(e.event.category_id == "books" and e.weight > 0 for e in shift.evidence)
    assert shift.confidence is None


def test_no_alarm_on_a_stationary_stream() -> None:
    rng = np.random.default_rng(1)
    categories = [str(c) for c in rng.choice(["a", "b", "c"], p=[0.7, 0.2, 0.1], size=500)]
    # a stationary user who mixes three categories: the profile absorbs the mix
    state, detector = DetectorState(), ShiftDetector(SETTINGS)
    alarms = 0
    for i, category in enumerate(categories):
        mix = {"a": 0.6, "b": 0.25, "c": 0.1}
        mix[category] += 0.05
        alarms += detector.update(state, mix, StoredEvent(f"e{i}", "i", category, "view", i)) is not None
    assert alarms == 0
    assert feed(ShiftDetector(SETTINGS), ["shoes"] * 300, noise=0.02) == []


def test_two_shifts_far_apart_are_both_found() -> None:
    shifts = feed(ShiftDetector(SETTINGS), ["a"] * 30 + ["b"] * 30 + ["c"] * 30)
    assert [(s.from_categories[0].category_id, s.to_categories[0].category_id) for s in shifts] == [
        ("a", "b"),
        ("b", "c"),
    ]


def test_cooldown_holds_back_the_next_alarm() -> None:
    categories = ["a"] * 30 + ["b"] * 4 + ["c"] * 30
    quick = feed(ShiftDetector(DetectorSettings(min_events=5, cooldown=1)), categories)
    slow = feed(ShiftDetector(DetectorSettings(min_events=5, cooldown=20)), categories)
    assert [(s.events_seen, s.to_categories[0].category_id) for s in quick] == [(33, "b"), (37, "c")]
    assert [(s.events_seen, s.to_categories[0].category_id) for s in slow] == [(33, "b"), (53, "c")]


def test_minimum_evidence_for_new_users() -> None:
    categories = ["a"] * 20 + ["b"] * 30
    assert [s.events_seen for s in feed(ShiftDetector(DetectorSettings(min_events=5, cooldown=5)), categories)] == [23]
    assert feed(ShiftDetector(DetectorSettings(min_events=60, cooldown=5)), categories) == []


def test_hysteresis_waits_for_calm_before_the_next_alarm() -> None:
    """A user who leaves category a for a new category at every event keeps the divergence
    high: without hysteresis (release=1) every cooldown ends in another alarm."""
    categories = ["a"] * 30 + [f"n{i}" for i in range(60)]
    with_hysteresis = feed(ShiftDetector(DetectorSettings(min_events=5, cooldown=5)), categories)
    without = feed(ShiftDetector(DetectorSettings(min_events=5, cooldown=5, release=1.0)), categories)
    assert [s.events_seen for s in with_hysteresis] == [33]
    assert [s.events_seen for s in without] == list(range(33, 90, 5))


def test_calibration_is_monotone_and_used_for_confidence(tmp_path) -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(400)
    labels = (rng.random(400) < scores).astype(int)  # truly more likely at higher scores
    calibration = IsotonicCalibration.fit(scores.tolist(), labels.tolist())
    grid = np.linspace(-0.5, 1.5, 201)
    values = [calibration(x) for x in grid]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert 0.0 < values[0] < 0.2 and 0.8 < values[-1] < 1.0
    detector = ShiftDetector(SETTINGS, calibration)
    save_detector(detector, tmp_path, {"fitted_on": "a test"})
    loaded = load_detector(tmp_path)
    assert loaded.settings == SETTINGS and loaded.calibration == calibration
    shift = feed(loaded, ["a"] * 30 + ["b"] * 30)[0]
    assert shift.confidence == calibration(shift.divergence)


def test_calibration_needs_alarms() -> None:
    with pytest.raises(ValueError):
        IsotonicCalibration.fit([], [])


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        DetectorSettings(short_alpha=0.01, long_alpha=0.5)
    with pytest.raises(ValueError):
        DetectorSettings(threshold=0)


def test_a_detector_file_is_refused_by_a_model_it_was_not_tuned_for(tmp_path) -> None:
    (tmp_path / META_FILE).write_text(json.dumps({"model_version": "model-a"}))
    save_detector(ShiftDetector(SETTINGS), tmp_path, {"fitted_on": "a test"})
    assert {p.name for p in tmp_path.iterdir()} == {META_FILE, DETECTOR_FILE}, (
        "written atomically: no partial file left"
    )
    assert tuned_for(tmp_path) == "model-a"
    assert load_detector(tmp_path, "model-a").settings == SETTINGS
    with pytest.raises(DetectorMismatch, match=r"tuned for model version model-a, not for model-b.*detect-eval"):
        load_detector(tmp_path, "model-b")
