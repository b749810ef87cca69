"""Model hot-swap: a new checkpoint version in the served directory replaces the model without a restart."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from model.net.checkpoint import META_FILE, save_checkpoint
from model.online.detector import ShiftDetector, save_detector
from stream.settings import Settings
from stream.worker.hotswap import CheckpointWatcher
from stream.worker.pipeline import InterestPipeline
from tests.stream.conftest import consume, produce
from tests.stream.helpers import (
    SMALL_MODEL_DETECTOR,
    assert_update_matches,
    offline_probabilities,
    raw_messages,
    run_pipeline,
    small_checkpoint,
)
from tests.stream.worker.test_worker import get_json
from topics.specs import EVENTS, UPDATES


@pytest.fixture(scope="module")
def second_checkpoint(stream_log):
    """Another model for the same data: other weights, so another version."""
    return small_checkpoint(stream_log, seed=1)


def test_the_watcher_loads_a_new_version_once_and_skips_a_torn_one(
    stream_checkpoint, second_checkpoint, tmp_path
) -> None:
    first, source = stream_checkpoint
    served = tmp_path / "served"
    shutil.copytree(source, served)
    watcher = CheckpointWatcher(served, first.model_version)
    assert watcher.poll() is None
    (served / META_FILE).write_text('{"model_version": "torn')  # a writer caught mid-way
    assert watcher.poll() is None
    save_checkpoint(second_checkpoint, served)
    assert watcher.poll() is None, "its detector.json was tuned for the first model: not served with the second"
    save_detector(ShiftDetector(SMALL_MODEL_DETECTOR), served, {"tuned_on": "nothing: the tests' setting"})
    loaded = watcher.poll()
    assert (
        loaded is not None and loaded.checkpoint.model_version == second_checkpoint.model_version != first.model_version
    )
    assert loaded.detector.settings == SMALL_MODEL_DETECTOR, "the detector file in the directory comes along"
    assert watcher.poll() is None, "loaded once"


def test_after_a_swap_updates_are_the_new_models_over_the_whole_history(
    stream_log, stream_checkpoint, second_checkpoint
) -> None:
    first, _ = stream_checkpoint
    stream = raw_messages(stream_log)
    half = len(stream) // 2
    pipeline = InterestPipeline(first, Settings(), ShiftDetector(SMALL_MODEL_DETECTOR))
    before, _, states, _ = run_pipeline(pipeline, stream[:half], batch_size=64)
    pipeline.swap(second_checkpoint, ShiftDetector(SMALL_MODEL_DETECTOR))
    after, _, _, _ = run_pipeline(pipeline, stream[half:], batch_size=64, states=states, first_offset=half)
    assert {u["model_version"] for u in before} == {first.model_version}
    assert {u["model_version"] for u in after} == {second_checkpoint.model_version}
    reference = offline_probabilities(second_checkpoint, stream_log)
    for update in after:
        assert_update_matches(update, second_checkpoint, reference[update["user_id"]])


@pytest.mark.kafka
def test_a_worker_swaps_models_mid_replay(
    kafka_bootstrap, worker_factory, stream_log, stream_checkpoint, second_checkpoint, tmp_path
) -> None:
    first, source = stream_checkpoint
    served = tmp_path / "served"
    shutil.copytree(source, served)
    stream = raw_messages(stream_log)
    half = len(stream) // 2
    worker = worker_factory(checkpoint=served, checkpoint_poll_s="0.5").start()
    produce(kafka_bootstrap, EVENTS.name, stream[:half])
    assert len(consume(kafka_bootstrap, UPDATES.name, half, worker=worker)) == half

    save_checkpoint(second_checkpoint, served)
    save_detector(ShiftDetector(SMALL_MODEL_DETECTOR), served, {"tuned_on": "nothing: the tests' setting"})
    deadline = time.monotonic() + 60
    while get_json(worker.web_port, "/readyz")[1]["model_version"] != second_checkpoint.model_version:
        assert time.monotonic() < deadline and not worker.exited(), worker.tail()
        time.sleep(0.3)
    produce(kafka_bootstrap, EVENTS.name, stream[half:])
    updates = [json.loads(r.value) for r in consume(kafka_bootstrap, UPDATES.name, len(stream), worker=worker)]
    assert len(updates) == len(stream)
    assert not worker.exited(), "no restart"
    early = {json.loads(value)["event_id"] for _, value in stream[:half]}
    first_half = [u for u in updates if u["event_id"] in early]
    second_half = [u for u in updates if u["event_id"] not in early]
    assert {u["model_version"] for u in first_half} == {first.model_version}
    assert {u["model_version"] for u in second_half} == {second_checkpoint.model_version}
    reference = offline_probabilities(second_checkpoint, stream_log)
    for update in second_half:  # every cached user rebuilt: exactly the new model over each whole history
        assert_update_matches(update, second_checkpoint, reference[update["user_id"]])
