"""Model hot-swap: notice a new checkpoint version in the served directory and load it.

The worker polls (``SHIFTWATCH_CHECKPOINT_POLL_S``) with :class:`CheckpointWatcher` in a
thread, and applies a loaded checkpoint as soon as the batch in flight is done
(:meth:`stream.worker.pipeline.InterestPipeline.swap`): no batch is scored half by one model and
half by another, every output names the version that scored it, and every user's KV cache is
rebuilt from their stored events under the new model. A checkpoint caught mid-write fails
its content-hash check and is retried at the next poll; the old model serves meanwhile.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from model.net.checkpoint import META_FILE, Checkpoint, CheckpointError, load_checkpoint
from model.online.detector import ShiftDetector, load_detector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    checkpoint: Checkpoint
    detector: ShiftDetector

    @cached_property
    def info(self) -> dict[str, str]:
        """What is served, as ``/readyz`` and ``shiftwatch_model_info`` name it (the version is a
        hash of the weights: computed once)."""
        calibrated = "yes" if self.detector.calibration is not None else "no"
        return {"model_version": self.checkpoint.model_version, "detector_calibrated": calibrated}

    @property
    def warnings(self) -> list[str]:
        """What an operator should fix in what is served (``/readyz`` and the start log say it)."""
        if self.detector.calibration is None:
            return [
                "the shift detector is uncalibrated: every shift has confidence null and rules with min_confidence "
                "never fire; run `shiftwatch detect-eval --checkpoint <dir>` (or `shiftwatch train`, which "
                "calibrates by default)"
            ]
        return []


class CheckpointWatcher:
    """``poll()`` returns the directory's checkpoint once its version differs from ``current``."""

    def __init__(self, directory: Path, current: str):
        self.directory = directory
        self.current = current
        self._seen: tuple[int, int] | None = None

    def poll(self) -> Loaded | None:
        meta = self.directory / META_FILE
        try:
            stat = meta.stat()
            if (stat.st_mtime_ns, stat.st_size) == self._seen:
                return None
            self._seen = (stat.st_mtime_ns, stat.st_size)
            recorded = json.loads(meta.read_text()).get("model_version")
            if recorded == self.current:
                return None
            checkpoint = load_checkpoint(self.directory)
            loaded = Loaded(checkpoint, load_detector(self.directory, checkpoint.model_version))
        except (OSError, ValueError, CheckpointError) as error:  # mid-write, broken, or its detector not retuned yet
            log.warning("checkpoint %s not loadable yet: %s", self.directory, error)
            self._seen = None
            return None
        self.current = loaded.checkpoint.model_version
        log.info("checkpoint %s: new model version %s", self.directory, self.current)
        return loaded
