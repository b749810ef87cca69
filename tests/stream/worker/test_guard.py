"""A batch that fails as a whole: retried after its memory is dropped, then the process ends at
once, with no shutdown code run (Faust's would commit the batch's offsets)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from stream.worker.guard import EXIT_CODE, BatchGuard


def test_each_retry_starts_from_a_reset_and_the_last_failure_stops() -> None:
    events: list[str] = []
    attempts = iter([OSError("the broker went away"), OSError("still away"), None])

    async def work() -> None:
        events.append("work")
        error = next(attempts)
        if error is not None:
            raise error

    guard = BatchGuard(attempts=3, backoff_s=0.0, stop=lambda code: events.append(f"stop {code}"))
    assert asyncio.run(guard.run(work, reset=lambda: events.append("reset")))
    assert events == ["work", "reset", "work", "reset", "work"]

    events.clear()
    once = BatchGuard(attempts=1, backoff_s=0.0, stop=lambda code: events.append(f"stop {code}"))  # exactly-once

    async def broken() -> None:
        raise ValueError("always")

    assert not asyncio.run(once.run(broken, reset=lambda: events.append("reset")))
    assert events == ["reset", f"stop {EXIT_CODE}"]


def test_a_failure_met_elsewhere_counts_as_the_first_attempt() -> None:
    events: list[str] = []

    async def work() -> None:
        events.append("work")

    guard = BatchGuard(attempts=2, backoff_s=0.0, stop=lambda code: events.append(f"stop {code}"))
    assert asyncio.run(guard.run(work, reset=lambda: events.append("reset"), failure=OSError("in flight")))
    assert events == ["reset", "work"]

    events.clear()
    once = BatchGuard(attempts=1, backoff_s=0.0, stop=lambda code: events.append(f"stop {code}"))
    assert not asyncio.run(once.run(work, reset=lambda: events.append("reset"), failure=OSError("in flight")))
    assert events == ["reset", f"stop {EXIT_CODE}"]


def test_the_stop_ends_the_process_without_running_its_shutdown() -> None:
    script = textwrap.dedent(
        """
        import asyncio, atexit
        from stream.worker.guard import BatchGuard
        atexit.register(lambda: print("shutdown ran"))
        async def broken():
            raise RuntimeError("the batch cannot be written")
        try:
            asyncio.run(BatchGuard(attempts=2, backoff_s=0.01).run(broken, reset=lambda: None))
        finally:
            print("finally ran")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CODE
    assert "shutdown ran" not in done.stdout and "finally ran" not in done.stdout
    assert "stopping the worker" in done.stderr and "RuntimeError" in done.stderr
