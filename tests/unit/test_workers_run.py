"""A loop added after the workers started runs at once and stops with the others."""

from __future__ import annotations

import asyncio

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
