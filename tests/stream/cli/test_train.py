"""``shiftwatch train``: a checkpoint and, by default, a calibrated detector beside it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from model.net.checkpoint import load_checkpoint
from model.online.detector import DETECTOR_FILE, load_detector, tuned_for
from stream.cli.main import main
from tests.conftest import TAOBAO_SAMPLE

TINY_MODEL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "window": 8, "copy_window": 8}


def head_of_sample(path: Path, rows: int) -> Path:
    """The first ``rows`` rows of the shipped sample (it is sorted by user: whole users)."""
    with gzip.open(TAOBAO_SAMPLE, "rt") as source:
        path.write_text("".join(line for _, line in zip(range(rows), source)))
    return path


def test_train_calibrates_the_detector_unless_told_not_to(tmp_path, capsys) -> None:
    data = head_of_sample(tmp_path / "head.csv", 20_000)
    common = ["--data", str(data), "--epochs", "2", "--model", json.dumps(TINY_MODEL), "--quiet"]
    out = tmp_path / "calibrated"
    assert main(["train", "--out", str(out), *common, "--calibration-histories", "40"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["detector"] == str(out / DETECTOR_FILE)
    version = load_checkpoint(out).model_version
    assert tuned_for(out) == version
    detector = load_detector(out, version)
    assert detector.calibration is not None, "a worker serving this checkpoint gives shifts a confidence"

    bare = tmp_path / "bare"
    assert main(["train", "--out", str(bare), *common, "--no-calibrate"]) == 0
    assert json.loads(capsys.readouterr().out)["detector"] is None
    assert not (bare / DETECTOR_FILE).exists()
