"""Faults of the store while delivering: an outcome that cannot be recorded is recorded
later, without a restart; a change that cannot be matched at all is kept, not dropped.

Real stores (memory, SQLite, PostgreSQL), the real engine and senders, real HTTP
receivers; the faults are injected by wrapping one outbox method of the running engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.integration import test_delivery_engine
from tests.integration.fake_subscriptions import FakeSubscriptions
from tests.integration.receiver import Receiver
from tests.integration.test_delivery_engine import Rig, entity
from urbanos.core.change import Change
from urbanos.services.notifications import MATCH_TRIES, Matched

#: the engine on every store, as in test_delivery_engine
reopen = test_delivery_engine.reopen
rig = test_delivery_engine.rig


def fail_once(rig: Rig, method: str) -> list[tuple[Any, ...]]:
    """Make the outbox's ``method`` raise the first time; returns the calls made."""
    outbox = rig.workers.outbox
    real: Callable[..., Awaitable[Any]] = getattr(outbox, method)
    calls: list[tuple[Any, ...]] = []

    async def flaky(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise OSError("injected: the database went away")
        return await real(*args)

    setattr(outbox, method, flaky)
    return calls


async def test_a_failed_retry_recording_is_retried_and_the_notification_sent_again(
    rig: Rig, receiver: Receiver
) -> None:
    """The first send fails (503) and returning the row to pending fails too: the row
    must not stay claimed until a restart."""
    calls = fail_once(rig, "retry")
    rig.subs.add("urn:s:1", f"{receiver.base}/flaky/1/r")
    await rig.entities.create("", entity(1))
    got = await receiver.await_("/flaky", 2)
    assert [r.json()["data"][0]["id"] for r in got] == ["urn:e:1"] * 2
    assert await rig.engine.idle()
    assert len(calls) == 2  # the failed recording, then the one that worked
    assert rig.subs.of("urn:s:1") == [False, True]  # each attempt counted once


async def test_a_failed_done_recording_is_retried(rig: Rig, receiver: Receiver) -> None:
    calls = fail_once(rig, "done")
    rig.subs.add("urn:s:1", f"{receiver.base}/ok")
    await rig.entities.create("", entity(1))
    await receiver.await_("/ok", 1)
    assert await rig.engine.idle()  # the row is gone: nothing waits for a restart
    assert len(calls) == 2
    assert rig.subs.of("urn:s:1") == [True]


class Unmatchable(FakeSubscriptions):
    """Matching a change as a whole (not one subscription) raises while ``broken``."""

    broken = True
    tries = 0

    async def match(self, change: Change, only: str | None = None) -> Matched:
        if only is None and self.broken:
            self.tries += 1
            raise RuntimeError("injected: the subscription index cannot be loaded")
        return await super().match(change, only)


async def test_a_change_that_cannot_be_matched_is_kept_and_retried(
    rig: Rig, receiver: Receiver
) -> None:
    subs = Unmatchable()
    subs.add("urn:s:1", f"{receiver.base}/late")
    rig.engine.subscriptions = subs
    await rig.entities.create("", entity(1))
    outbox = rig.workers.outbox
    assert outbox is not None
    for _ in range(500):
        if await outbox.dead_letter_count():
            break
        await asyncio.sleep(0.02)
    [letter] = await outbox.dead_letters(10)
    assert letter.subscription_id is None and letter.change.entity_id == "urn:e:1"
    assert subs.tries >= MATCH_TRIES and receiver.on("/late") == []
    assert await outbox.counts() == (0, 0)  # consumed: it lives on as the dead letter
    subs.broken = False  # the next retry (within a fraction of a second) matches it
    [got] = await receiver.await_("/late", 1)
    assert got.json()["data"][0]["id"] == "urn:e:1"
    assert await rig.engine.idle()
    assert await outbox.dead_letter_count() == 0
