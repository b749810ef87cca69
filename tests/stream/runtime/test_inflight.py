"""Batches in flight: ordered steps, bounded depth, and a failure that fails what came after it."""

from __future__ import annotations

import asyncio
import functools

import pytest

from stream.runtime.inflight import EarlierBatchFailed, FlightFailed, InFlight, Turn


def test_depth_bounds_the_batches_running_at_once() -> None:
    async def scenario() -> list[int]:
        flight, running, most = InFlight(depth=2), [0], []
        release = asyncio.Event()

        async def work(turn: Turn) -> None:
            running[0] += 1
            most.append(running[0])
            await release.wait()
            await turn.writing()
            running[0] -= 1

        for name in "abc":
            flight.start([name], work)
            if name == "b":
                waiting = asyncio.ensure_future(flight.room())
                await asyncio.sleep(0.01)
                assert not waiting.done()  # two in flight: no room
                release.set()
                await waiting
        await flight.settle()
        return most

    assert max(asyncio.run(scenario())) == 2


def test_a_failure_fails_the_later_batches_and_comes_back_in_order() -> None:
    async def scenario() -> tuple[list[str], FlightFailed, bool]:
        durable: list[str] = []
        flight = InFlight(depth=4)

        async def work(turn: Turn, name: str) -> None:
            await turn.publishing()
            if name == "b":
                raise OSError("the broker went away")
            turn.published()
            await turn.writing()
            durable.append(name)

        for name in "abcd":
            flight.start([name], functools.partial(work, name=name))
        await flight.drained()
        failed_seen = flight.failed
        with pytest.raises(FlightFailed) as raised:
            await flight.settle()
        return durable, raised.value, failed_seen

    durable, failure, failed_seen = asyncio.run(scenario())
    assert durable == ["a"] and failed_seen
    assert failure.items == ["b", "c", "d"]
    assert isinstance(failure.error, OSError)  # the cause, not the EarlierBatchFailed that followed


def test_a_batch_after_an_unsettled_failure_fails_too() -> None:
    async def scenario() -> FlightFailed:
        flight, calls = InFlight(depth=4, on_failure=lambda: None), []

        async def broken(turn: Turn) -> None:
            raise ValueError("a bug")

        async def fine(turn: Turn) -> None:
            await turn.writing()
            calls.append("wrote")

        flight.start(["x"], broken)
        await flight.drained()
        flight.start(["y"], fine)
        await flight.drained()
        assert calls == []
        with pytest.raises(FlightFailed) as raised:
            await flight.settle()
        return raised.value

    failure = asyncio.run(scenario())
    assert failure.items == ["x", "y"] and isinstance(failure.error, ValueError)
    assert not isinstance(failure.error, EarlierBatchFailed)


def test_published_waits_for_the_batch_started_last_to_publish_or_fail() -> None:
    async def scenario() -> list[str]:
        flight, seen = InFlight(depth=2), []
        release = asyncio.Event()

        async def publishes(turn: Turn) -> None:
            await release.wait()
            seen.append("published")
            turn.published()
            await turn.writing()

        async def fails(turn: Turn) -> None:
            raise OSError("broker went away")

        await flight.published()  # nothing started: nothing to wait for
        flight.start(["a"], publishes)
        waiting = asyncio.ensure_future(flight.published())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        release.set()
        await waiting
        seen.append("waited")
        flight.start(["b"], fails)
        await flight.published()  # a failed batch will never publish: no wait for ever
        seen.append("failed")
        with pytest.raises(FlightFailed):
            await flight.settle()
        return seen

    assert asyncio.run(scenario()) == ["published", "waited", "failed"]
