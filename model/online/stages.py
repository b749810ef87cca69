"""Wall time per stage of the scoring path, summed: what ``bench/scoring.py`` and the
worker's metrics report.

>>> times = StageTimes()
>>> with times.stage("engine"):
...     pass
>>> list(times.seconds), times.seconds["engine"] >= 0.0
(['engine'], True)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter


class StageTimes:
    """Seconds spent in each named stage since the last :meth:`reset` (a few calls per batch,
    not per event: the clock costs nothing worth counting)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += perf_counter() - start

    def reset(self) -> dict[str, float]:
        """The seconds so far, by stage; the clock starts again from zero."""
        taken, self.seconds = dict(self.seconds), defaultdict(float)
        return taken
