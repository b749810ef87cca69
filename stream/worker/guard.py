"""A batch that fails as a whole is retried, then the process stops: never acknowledged half done.

A batch whose scoring, publishing or row writes raised must not have its offsets committed
without its outputs, nor stay unacknowledged for ever (its partitions' commits would stop
there). :class:`BatchGuard` runs a batch's work, retries it after a failure (the caller
first drops what the attempt left in memory), and when the attempts are spent logs the
failure and ends the process at once, without Faust's shutdown (which commits). The batch
is then read again by whichever worker takes its partitions.

>>> import asyncio
>>> stopped = []
>>> guard = BatchGuard(attempts=2, backoff_s=0.0, stop=stopped.append)
>>> tries = []
>>> async def flaky() -> None:
...     tries.append(1)
...     if len(tries) < 2:
...         raise OSError("broker went away")
>>> asyncio.run(guard.run(flaky, reset=lambda: None)), len(tries), stopped
(True, 2, [])
>>> async def broken() -> None:
...     raise ValueError("always")
>>> asyncio.run(guard.run(broken, reset=lambda: None)), stopped
(False, [70])
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE: the batch could not be completed


def _exit_now(code: int) -> None:
    logging.shutdown()
    os._exit(code)


class BatchGuard:
    """``attempts`` tries of a batch, ``backoff_s`` doubling between them, then ``stop(EXIT_CODE)``."""

    def __init__(self, attempts: int = 3, backoff_s: float = 0.5, stop: Callable[[int], object] = _exit_now):
        if attempts < 1:
            raise ValueError("a batch needs at least one attempt")
        self.attempts, self.backoff_s, self.stop = attempts, backoff_s, stop

    async def run(
        self, work: Callable[[], Awaitable[None]], reset: Callable[[], None], failure: Exception | None = None
    ) -> bool:
        """Run ``work`` until it succeeds, ``reset()`` after each failure. ``False`` once stopped.
        ``failure``: the error of a first attempt made elsewhere, which counts as one."""
        attempt = 0
        while True:
            if failure is None:
                try:
                    await work()
                    return True
                except Exception as error:  # noqa: BLE001 - any failure of the batch is handled alike
                    failure = error
            attempt += 1
            reset()
            if attempt >= self.attempts:
                log.critical(
                    "A batch failed %d time(s) (%s); stopping the worker so that its offsets are not "
                    "committed without its outputs. It is read again on restart.",
                    attempt,
                    type(failure).__name__,
                    exc_info=failure,
                )
                self.stop(EXIT_CODE)
                return False
            log.error("A batch failed (%s, attempt %d of %d); retrying", type(failure).__name__, attempt, self.attempts)
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            failure = None
