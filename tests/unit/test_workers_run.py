"""Supervised loops: a loop added late runs at once and stops with the others; an outage
is logged as one line, a crash with its traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from urbanos.errors import ServiceUnavailable
from urbanos.workers import Workers


async def test_run_starts_a_late_loop_and_stop_cancels_it() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def loop() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    workers = Workers()
    workers.start()
    workers.run("late", loop)
    await asyncio.wait_for(started.wait(), 1)
    assert workers.running == ["late"]
    await workers.stop()
    assert cancelled.is_set() and workers.running == []


async def test_an_outage_is_one_warning_a_bug_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop stopped by an unreachable database is restarted with one line in the log; a
    loop that crashes on anything else keeps its traceback."""
    runs = {"outage": 0, "bug": 0}
    both_ran_twice = asyncio.Event()

    def failing(name: str, error: Exception) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            runs[name] += 1
            if min(runs.values()) >= 2:
                both_ran_twice.set()
            raise error
        return loop

    workers = Workers(restart_min=0.01, restart_max=0.01)
    with caplog.at_level(logging.WARNING, logger="urbanos.workers"):
        workers.run("outage", failing("outage", ServiceUnavailable("database unavailable")))
        workers.run("bug", failing("bug", RuntimeError("a bug")))
        await asyncio.wait_for(both_ran_twice.wait(), 10)
        await workers.stop()
    outage = [r for r in caplog.records if "outage" in r.getMessage()]
    bug = [r for r in caplog.records if "worker bug crashed" in r.getMessage()]
    assert outage and all(r.levelno == logging.WARNING and r.exc_info is None for r in outage)
    assert "database unavailable" in outage[0].getMessage()
    assert bug and all(r.exc_info is not None for r in bug)
