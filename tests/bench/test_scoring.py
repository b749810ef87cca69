"""The scoring benchmark's contract: its keys, and that what it compares agrees."""

from __future__ import annotations

import json

from bench.scoring import ScoringBenchConfig, run_scoring_bench, write_markdown
from model.data.loaders import load_event_log
from model.online.detector import ShiftDetector
from tests.conftest import ROOT
from tests.stream.helpers import SMALL_MODEL_DETECTOR, small_checkpoint, taobao_users

KEYS = {
    "scoring_eps",
    "naive_eps",
    "speedup_vs_naive",
    "stage_us",
    "cache_hit_rate",
    "cache_bytes_per_user",
    "max_abs_diff",
    "shifts_equal",
}


def test_a_small_run_reports_every_key_and_agrees_with_the_full_recompute(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("bench.scoring.tune_for_scoring", lambda threads: None)  # not this process's settings
    head = taobao_users(8)
    timeslice = load_event_log(ROOT / "data" / "taobao" / "UserBehavior_timeslice_20171126_0900-1110.csv.gz")
    checkpoint = small_checkpoint(head)
    config = ScoringBenchConfig(batch_size=64, naive_events=20, threads=1, max_events=400, repeats=1)
    results = run_scoring_bench(
        checkpoint, ShiftDetector(SMALL_MODEL_DETECTOR), {"head": head, "timeslice": timeslice}, config
    )
    assert set(results) >= KEYS
    assert set(results["stage_us"]) == {"engine", "recent", "detector", "records"}
    assert results["shifts_equal"] and results["max_abs_diff"] < 1e-5
    assert results["datasets"]["timeslice"]["events"] == 400 and results["scoring_eps"] > 0
    results["commit"] = "test"
    json.dumps(results, allow_nan=False)
    write_markdown(results, tmp_path / "scoring.md", baseline=None)
    assert "| head (" in (tmp_path / "scoring.md").read_text()
