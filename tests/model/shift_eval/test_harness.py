"""Shift benchmarks, alarm scoring, the baselines and ``detect-eval`` end to end."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from model.data.loaders import UserSequence, load_event_log
from model.net.checkpoint import save_checkpoint
from model.online.detector import DetectorSettings
from model.shift_eval.benchmark import (
    Track,
    control_tracks,
    dominant,
    natural_changes,
    splice,
    spliced_tracks,
    user_split,
    users_of,
)
from model.shift_eval.detectors import AlwaysFire, DistributionDetector, MarkovSurprisal, SurprisalDetector, TrackInputs
from model.shift_eval.harness import DETECTORS, GRIDS, EvalSettings, detect_eval, grid, score_jobs
from model.shift_eval.scoring import match, score_alarms
from stream.cli.main import main
from tests.conftest import TAOBAO_SAMPLE
from tests.stream.helpers import small_checkpoint


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    checkpoint = small_checkpoint(load_event_log(TAOBAO_SAMPLE).first_users(25))
    directory = tmp_path_factory.mktemp("checkpoint")
    save_checkpoint(checkpoint, directory)
    return checkpoint, directory


def user(name: str, categories: str, start: int = 1_500_000_000) -> UserSequence:
    n = len(categories)
    return UserSequence(
        name,
        tuple(f"i{k}" for k in range(n)),
        tuple(categories),
        ("view",) * n,
        tuple(start + 60 * k for k in range(n)),
    )


def test_splice_joins_a_prefix_to_a_suffix_and_keeps_the_gaps() -> None:
    a, b = user("a", "aaaaab"), user("b", "xyzzzz", start=1_600_000_000)
    joined = splice(a, 4, b, 3)
    assert joined.categories == tuple("aaaazzz")
    assert joined.user_id == "a+b"
    assert (
        joined.timestamps is not None and np.diff(joined.timestamps).tolist() == [60] * 6
    )  # B's own gap across the seam


def test_spliced_tracks_differ_in_dominant_categories_and_are_deterministic() -> None:
    log = load_event_log(TAOBAO_SAMPLE).first_users(120)
    users = users_of(log, "validation", 20)
    tracks = spliced_tracks(users, 30, seed=3)
    assert len(tracks) == 30 and tracks == spliced_tracks(users, 30, seed=3)
    for track in tracks:
        (seam,) = track.changes
        before, after = track.sequence.categories[:seam], track.sequence.categories[seam:]
        assert 20 <= seam <= 60 and 20 <= len(after) <= 60
        assert dominant(before, 1)[0] not in dominant(after, 3)
        assert dominant(after, 1)[0] not in dominant(before, 3)
    assert all(user_split(u.user_id) == "validation" for u in users)
    controls = control_tracks(users, 10, seed=4)
    assert all(not c.changes and 40 <= len(c) <= 120 for c in controls)


def test_natural_labeller_finds_a_persisting_change_only() -> None:
    window = 5
    assert natural_changes("aaaaaaaaaabbbbbbbbbbbb", window, 0.6) == (10,)
    assert natural_changes("aaaaaaaaaabbbaaaaaaaaaaaa", window, 0.6) == ()  # a burst shorter than the window
    assert natural_changes("a" * 30, window, 0.6) == ()


def test_matching_and_scores_by_hand() -> None:
    assert match([3, 12, 14], [10], tolerance=5) == ([2], [False, True, False])
    assert match([9], [10], tolerance=5) == ([], [False])  # before the change: not a detection
    assert match([15], [10], tolerance=5) == ([5], [True])
    score = score_alarms([([12, 14], [10], 100), ([], [20], 50)], tolerance=5)
    assert (score.precision, score.recall, score.f1) == (0.5, 0.5, 0.5)
    assert score.false_alarms_per_1k == 1000 / 150
    assert score.median_delay == 2.0


def inputs_for(categories: str, changes: tuple[int, ...]) -> TrackInputs:
    sequence = user("u", categories)
    model = [{c: 0.8} for c in categories]
    return TrackInputs(Track("t", "spliced", sequence, changes), model, np.zeros(len(categories)))


def test_baselines_on_a_clean_change() -> None:
    clean = inputs_for("a" * 30 + "b" * 30, (30,))
    assert AlwaysFire().alarms(clean) == list(range(60))
    settings = DetectorSettings(min_events=5, cooldown=5)
    for use_model in (True, False):
        alarms = DistributionDetector("d", settings, use_model).alarms(clean)
        assert len(alarms) == 1 and 30 <= alarms[0] <= 35
    markov = MarkovSurprisal.fit(["aaaaabbbbb", "ababab"])
    surprisal = markov.surprisal(list("a" * 30 + "c" * 30))
    assert surprisal[30] > surprisal[29] and surprisal[31] < surprisal[30]  # new to the user, then familiar
    spiky = replace(clean, surprisal=np.r_[np.zeros(30), np.full(30, 5.0)])
    for kind, params in (("page_hinkley", {"delta": 0.5, "threshold": 4.0}), ("adwin", {"delta": 0.01})):
        alarms = SurprisalDetector(kind, kind, params, min_events=5, cooldown=5).alarms(spiky)
        assert alarms and 30 <= alarms[0] <= 40, (kind, alarms)


@pytest.mark.slow
def test_detect_eval_end_to_end_on_real_histories(tmp_path, saved_checkpoint) -> None:
    checkpoint, directory = saved_checkpoint
    log = load_event_log(TAOBAO_SAMPLE).first_users(100)
    grids = {name: {k: v[:2] for k, v in GRIDS[name].items()} for name in DETECTORS}
    result, detector = detect_eval(checkpoint, log, EvalSettings(spliced=15, grids=grids, workers=2))
    for benchmark in ("spliced", "natural"):
        assert set(result[benchmark]) == set(DETECTORS)
        for row in result[benchmark].values():
            assert {"precision", "recall", "f1", "median_delay", "false_alarms_per_1k"} <= set(row)
            assert 0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0
        assert result[benchmark]["always_fire"]["recall"] == 1.0
    assert result["spliced_data"]["test"]["change_points"] == 15
    assert detector.settings.threshold in GRIDS["transformer"]["threshold"][:2]
    if detector.calibration is not None:
        assert list(detector.calibration.probabilities) == sorted(detector.calibration.probabilities)

    # the command: JSON contract, report with plots, detector.json for the worker
    out = tmp_path / "detect.json"
    report = tmp_path / "report" / "detect.md"
    code = main(
        [
            "detect-eval",
            "--checkpoint",
            str(directory),
            "--data",
            str(TAOBAO_SAMPLE),
            "--users",
            "60",
            "--spliced",
            "8",
            "--workers",
            "2",
            "--json",
            str(out),
            "--report",
            str(report),
        ]
    )
    assert code == 0
    written = json.loads(out.read_text())
    assert set(written["spliced"]) == set(DETECTORS) and set(written["natural"]) == set(DETECTORS)
    assert (
        report.exists()
        and (report.parent / "detect_timeline.png").exists()
        and (report.parent / "detect_pr.png").exists()
    )
    assert (directory / "detector.json").exists()


def test_a_search_past_its_deadline_keeps_what_it_scored() -> None:
    jobs = [("transformer", tuple(p.items())) for p in grid(GRIDS["transformer"])]
    settings = EvalSettings(workers=1, progress=False)
    assert list(score_jobs(jobs, [], settings, "search", deadline=time.monotonic() - 1)) == jobs[:1]
    assert list(score_jobs(jobs, [], settings, "search")) == jobs
