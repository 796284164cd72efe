"""The supervisor of background loops: restarts what crashes, stops what runs."""

from __future__ import annotations

import asyncio

from urbanos.workers import Workers


async def test_a_crashing_loop_is_restarted() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        await asyncio.sleep(3600)

    workers = Workers(restart_min=0.01, restart_max=0.02)
    workers.add("flaky", flaky)
    workers.start()
    for _ in range(100):
        if len(runs) >= 3:
            break
        await asyncio.sleep(0.01)
    assert len(runs) == 3 and workers.running == ["flaky"]
    await workers.stop()
    assert workers.running == []


async def test_stop_cancels_loops_then_runs_closers_in_reverse() -> None:
    order: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            order.append("loop")

    async def closer(name: str) -> None:
        order.append(name)

    workers = Workers()
    workers.add("a", forever)
    workers.on_stop(lambda: closer("first"))
    workers.on_stop(lambda: closer("second"))
    workers.start()
    await asyncio.sleep(0)
    await workers.stop()
    assert order == ["loop", "second", "first"]


async def test_a_loop_that_swallows_one_cancellation_still_stops() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # as asyncio.wait_for may do on Python 3.11
        await asyncio.sleep(3600)

    workers = Workers()
    workers.add("stubborn", stubborn)
    workers.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(workers.stop(), 5)
    assert workers.running == []
