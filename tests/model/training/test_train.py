from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.data.loaders import EventLog, load_event_log
from model.data.splits import SplitSpec, parse_time
from model.net.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.training.evaluate import evaluate
from model.training.train import TrainConfig, train
from tests.conftest import TAOBAO_SAMPLE

TINY_MODEL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "window": 8, "copy_window": 8}
TINY_TRAINING = TrainConfig(epochs=2, batch_size=16, max_outputs=64, seed=7)


@pytest.fixture(scope="module")
def small_log() -> EventLog:
    log = load_event_log(TAOBAO_SAMPLE)
    return EventLog(log.name, log.format, log.users[:60], log.report)


@pytest.fixture(scope="module")
def split(small_log: EventLog) -> SplitSpec:
    return SplitSpec.for_log(
        small_log, parse_time("2017-12-01T00:00:00+08:00"), parse_time("2017-12-02T00:00:00+08:00")
    )


@pytest.fixture(scope="module")
def trained(small_log, split):
    return train(small_log, split, TINY_MODEL, TINY_TRAINING, progress=False)


def test_same_seed_gives_the_same_model(small_log, split, trained) -> None:
    again = train(small_log, split, TINY_MODEL, TINY_TRAINING, progress=False)
    assert again.checkpoint.model_version == trained.checkpoint.model_version
    for name, tensor in trained.checkpoint.model.state_dict().items():
        assert torch.equal(tensor, again.checkpoint.model.state_dict()[name]), name
    assert again.history == trained.history


def test_training_reduces_the_loss_and_records_validation(trained) -> None:
    history = trained.history
    assert history[-1]["loss"] < history[0]["loss"]
    assert set(trained.checkpoint.metrics["validation"]) == {"hr@1", "hr@5", "hr@10", "ndcg@10", "mrr"}


def test_checkpoint_round_trip(tmp_path, small_log, trained) -> None:
    version = save_checkpoint(trained.checkpoint, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.model_version == version == trained.checkpoint.model_version
    assert loaded.split == trained.checkpoint.split
    assert loaded.tokenizer.categories.tokens == trained.checkpoint.tokenizer.categories.tokens
    assert (
        evaluate(loaded, small_log, n_resamples=50)["models"]
        == evaluate(trained.checkpoint, small_log, n_resamples=50)["models"]
    )


def test_corrupt_checkpoints_give_clear_errors(tmp_path, trained) -> None:
    directory = tmp_path / "ck"
    save_checkpoint(trained.checkpoint, directory)
    weights = (directory / "weights.pt").read_bytes()

    (directory / "weights.pt").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="corrupt weights"):
        load_checkpoint(directory)

    state = {k: v.clone() for k, v in trained.checkpoint.model.state_dict().items()}
    state["item_bias"] += 1.0
    torch.save(state, directory / "weights.pt")
    with pytest.raises(CheckpointError, match="does not match the recorded model_version"):
        load_checkpoint(directory)

    (directory / "weights.pt").write_bytes(weights)
    meta = json.loads((directory / "checkpoint.json").read_text())
    (directory / "checkpoint.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format 99 is not supported"):
        load_checkpoint(directory)

    (directory / "checkpoint.json").write_text(json.dumps({**meta, "config": {**meta["config"], "d_model": 32}}))
    with pytest.raises(CheckpointError, match="weights do not fit the config"):
        load_checkpoint(directory)

    (directory / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt metadata"):
        load_checkpoint(directory)

    with pytest.raises(CheckpointError, match=r"not a checkpoint .checkpoint.json is missing"):
        load_checkpoint(tmp_path / "nowhere")


def test_evaluation_json_shape(small_log, trained) -> None:
    result = evaluate(trained.checkpoint, small_log, n_resamples=50)
    assert result["protocol"] == "next_category_streaming"
    assert set(result["models"]) == {"transformer", "popularity", "most_frequent", "repeat_last", "markov", "mixture"}
    for metrics in result["models"].values():
        assert set(metrics) == {"hr@1", "hr@5", "hr@10", "ndcg@10", "mrr"}
        assert 0.0 <= metrics["hr@1"] <= metrics["hr@5"] <= metrics["hr@10"] <= 1.0
    assert result["ci95"]["low"] <= result["ci95"]["high"]
    assert result["n_predictions"] > 0


def test_sampled_softmax_trains_when_the_item_vocabulary_is_large(small_log, split) -> None:
    config = TrainConfig(epochs=1, batch_size=16, max_outputs=64, full_softmax_max_items=10, sampled_negatives=32)
    result = train(small_log, split, TINY_MODEL, config, progress=False)
    assert np.isfinite(result.history[0]["loss"])


def test_the_time_budget_leaves_room_for_the_refit(small_log, split) -> None:
    """A budget that one epoch already spends stops selection there, and the refit is one epoch:
    selection never runs an epoch whose refit would not fit."""
    budgeted = TrainConfig(epochs=50, patience=50, batch_size=16, max_outputs=64, seed=7, max_minutes=1e-6)
    result = train(small_log, split, TINY_MODEL, budgeted, progress=False)
    assert result.checkpoint.training["epochs_run"] == 1 and result.checkpoint.training["best_epoch"] == 1
