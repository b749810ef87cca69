"""Batches in flight: each batch's work is its own task, and its ordered steps go in batch order.

A worker's batch is admitted and scored, then published, then made durable (its outputs
acknowledged by Kafka, its rows written, its offsets acknowledged). Done one batch at a time,
the event loop waits on Kafka twice per batch while the scoring thread idles, and the scoring
thread works while the event loop idles. :class:`InFlight` runs each batch's remaining work
as a task, so that the agent admits batch N+1 (and the scoring thread scores it) while batch N
waits on Kafka, and keeps the order where it matters, by :class:`Turn`:

* :meth:`Turn.publishing`: a batch publishes only after the batch before it has, so that one
  user's updates and shifts reach Kafka in the order of their events;
* :meth:`Turn.writing`: a batch writes its rows only after the batch before it has its outputs
  acknowledged and its rows handed to the producer (:meth:`Turn.written`), so that no row
  lands before the outputs of the events it holds (a row holds every earlier event of its
  user, including those of earlier batches) and one user's rows reach the changelog in order.

At most ``depth`` batches are in flight (:meth:`InFlight.room`); :meth:`InFlight.published`
waits for the batch started last to publish. A batch that fails before one of its ordered
steps fails every later batch at that step (:class:`EarlierBatchFailed`), so nothing after a
failure publishes or writes a row on top of it; :meth:`InFlight.settle` waits for all of them
and raises :class:`FlightFailed` with the failed batches' items, in order, to be done again.

>>> import functools
>>> async def three_batches() -> list[str]:
...     flight, done = InFlight(depth=3), []
...     async def work(turn: Turn, name: str, scoring_s: float) -> None:
...         await asyncio.sleep(scoring_s)  # the later batches are scored sooner
...         await turn.publishing()
...         done.append(f"{name} published")
...         turn.published()
...         await turn.writing()
...         done.append(f"{name} written")
...     for name, scoring_s in (("a", 0.03), ("b", 0.01), ("c", 0.0)):
...         flight.start([name], functools.partial(work, name=name, scoring_s=scoring_s))
...     await flight.drained()
...     return done
>>> asyncio.run(three_batches())
['a published', 'a written', 'b published', 'b written', 'c published', 'c written']
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


class EarlierBatchFailed(Exception):
    """The batch before this one failed: this one may not publish or write on top of it."""


@dataclass(eq=False)
class _Batch:
    items: Sequence[Any]
    published: asyncio.Future[bool]  # True once published, False if the batch failed first
    written: asyncio.Future[bool]
    task: asyncio.Task[None] | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class Turn:
    """A batch's place in the order: what its work waits on before its ordered steps."""

    _batch: _Batch
    _previous: _Batch | None

    async def publishing(self) -> None:
        """Wait until the batch before this one has published."""
        if self._previous is not None and not await self._previous.published:
            raise EarlierBatchFailed

    def published(self) -> None:
        """This batch has handed its outputs to the producer: the next may publish."""
        if not self._batch.published.done():
            self._batch.published.set_result(True)

    def written(self) -> None:
        """This batch's outputs are acknowledged and its rows handed to the producer: the next
        may write its rows."""
        if not self._batch.written.done():
            self._batch.written.set_result(True)

    async def writing(self) -> None:
        """Wait until the batch before this one is :meth:`written`."""
        if self._previous is not None and not await self._previous.written:
            raise EarlierBatchFailed


class FlightFailed(Exception):
    """What :meth:`InFlight.settle` raises: the failed batches' ``items``, in order, and the first
    ``error`` that was not only an earlier batch's failure."""

    def __init__(self, items: Sequence[Any], error: Exception):
        super().__init__(f"{len(items)} items failed: {type(error).__name__}: {error}")
        self.items, self.error = list(items), error


class InFlight:
    """Batches whose work runs concurrently, at most ``depth`` at once, with ordered steps."""

    def __init__(self, depth: int, on_failure: Callable[[], object] = lambda: None):
        if depth < 1:
            raise ValueError("at least one batch must be in flight")
        self.depth = depth
        self.on_failure = on_failure
        self._batches: deque[_Batch] = deque()  # started and not yet done, or failed and not yet settled
        self._last: _Batch | None = None  # the batch started last, done or not

    @property
    def failed(self) -> bool:
        """Whether a batch has failed since the last :meth:`settle`."""
        return any(batch.error is not None for batch in self._batches)

    def start(self, items: Sequence[Any], work: Callable[[Turn], Awaitable[None]]) -> None:
        """Run ``work`` for the batch of ``items`` as a task, after the batches started before."""
        loop = asyncio.get_running_loop()
        batch = _Batch(items, loop.create_future(), loop.create_future())
        turn = Turn(batch, self._last)
        self._batches.append(batch)
        self._last = batch
        batch.task = asyncio.create_task(self._run(batch, turn, work))

    async def _run(self, batch: _Batch, turn: Turn, work: Callable[[Turn], Awaitable[None]]) -> None:
        try:
            await work(turn)
        except Exception as error:  # noqa: BLE001 - kept for settle(), which hands the batch back
            batch.error = error
        done = batch.error is None
        for step in (batch.published, batch.written):
            if not step.done():
                step.set_result(done)
        if done:
            self._batches.remove(batch)
        else:
            self.on_failure()

    def _running(self) -> set[asyncio.Task[None]]:
        return {batch.task for batch in self._batches if batch.task is not None and not batch.task.done()}

    @property
    def running(self) -> bool:
        """Whether a batch's work is still running."""
        return bool(self._running())

    async def room(self) -> None:
        """Wait until fewer than ``depth`` batches are in flight, or one has failed."""
        while not self.failed and len(running := self._running()) >= self.depth:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)

    async def published(self) -> None:
        """Wait until the batch started last has published (or failed)."""
        if self._last is not None:
            await asyncio.shield(self._last.published)

    async def drained(self) -> None:
        """Wait until every batch started has finished its work (done or failed)."""
        while running := self._running():
            await asyncio.wait(running)

    async def settle(self) -> None:
        """Wait for every batch, then forget them; raise :class:`FlightFailed` if any failed."""
        await self.drained()
        failed = [batch for batch in self._batches if batch.error is not None]
        self._batches.clear()
        self._last = None
        if failed:
            causes = [batch.error for batch in failed if not isinstance(batch.error, EarlierBatchFailed)]
            error = causes[0] if causes else failed[0].error
            assert error is not None
            raise FlightFailed([item for batch in failed for item in batch.items], error)
