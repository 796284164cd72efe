"""Delivering notifications: from recorded changes to acknowledged sends, at least once.

Three loops, run by ``workers.py``:

* **changes**: reads the outbox's changes in commit order, asks the subscription service
  what each one notifies, records those as delivery rows and consumes the changes in one
  transaction (a crash in between replays the changes: at-least-once, never zero). Each
  subscription is matched on its own: one whose matching raises is tried again, and if it
  still fails the change is recorded for it as a *dead letter* in that same transaction,
  while the other subscriptions are notified;
* **deliveries**: claims due delivery rows (new ones, retries, leftovers of a previous
  process) and sends them;
* **periodic**: once a second, records the notifications of ``timeInterval``
  subscriptions that are due. With several nodes on one database only the leader does
  (``leader``: the store's ``try_lead``), else each node would send each one; another
  node takes over within a tick or two when the leader dies. The same node retries the
  dead letters that are due, with exponential backoff and no limit: a dead letter leaves
  the store only once its retry has recorded the notifications it owes (or there are
  none, the subscription being gone); ``requeue_dead_letter`` makes one due at once.

Sends are grouped in *lanes*, one per endpoint origin: each lane sends at most
``concurrency`` at once and holds at most ``queue`` deliveries in memory, and all lanes
together at most ``inflight``; what does not fit stays in the store until there is room.
So a hanging receiver fills its own lane and nothing else, and writes never wait for
sends (they only add a row). The notifications of one subscription are sent one after
the other, in the order they were recorded (a failure sends the next one meanwhile: its
retry comes later); a new one skips the store's queue only while its lane has nothing
waiting there. A failed send is retried with exponential backoff and jitter up to
``max_attempts``; a notification whose attempts are exhausted, or whose answer is not
retried (4xx), becomes a dead letter (``bury_delivery``, replacing its delivery row in one
transaction) that waits for an operator to requeue or discard it. Every attempt is reported
to the subscription service (``timesSent``/``timesFailed``, ``lastSuccess``/``lastFailure``, ``status``), once the
outbox confirmed the row was still this process's. Recording an outcome that fails (the
database is away) is tried again with backoff until it succeeds, the row staying claimed
meanwhile, so no delivery waits for a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from urbanos.core.change import Change
from urbanos.core.timeutil import now_iso
from urbanos.errors import ResourceNotFound
from urbanos.services.senders import DeliveryError, Sender, lane_of
from urbanos.storage.outbox import (
    DELIVERY,
    MATCHING,
    DeadDelivery,
    DeadLetter,
    Delivery,
    Envelope,
    NewDelivery,
    Outbox,
    Room,
)

if TYPE_CHECKING:
    from urbanos.core.subscription import Outgoing

log = logging.getLogger("urbanos.notifications")

JSON_MT = "application/json"
#: the job one node of the cluster runs alone (``EntityStore.try_lead``): periodic
#: notifications and the retries of dead letters
PERIODIC_JOB = "notifications.periodic"
#: matchings of one subscription against one change before the change is dead-lettered
MATCH_TRIES = 3
#: dead letters retried per tick, at most
DEAD_LETTER_BATCH = 100


@dataclass(frozen=True, slots=True)
class Matched:
    """What one change fires: the notifications, and the subscriptions (by id) whose
    matching failed, with the error."""

    outgoing: list[Outgoing]
    failed: dict[str, str]


class SubscriptionSource(Protocol):
    """The part of SubscriptionService that delivery needs."""

    async def match(self, change: Change, only: str | None = None) -> Matched: ...

    def fired(self, outgoing: list[Outgoing], *, recorded: bool) -> None: ...

    async def periodic_due(self, now: str) -> list[Outgoing]: ...

    async def delivered(
        self, tenant: str, subscription_id: str, *, ok: bool, at: str, error: str | None = None
    ) -> None: ...

    async def get(self, tenant: str, subscription_id: str) -> dict[str, Any] | None: ...


class SubscriptionSources:
    """Several kinds of subscription (on entities, on context source registrations) as
    the one source the engine delivers for. They share one subscription table, whose ids
    are unique per tenant over every kind: the first source's ``delivered`` counts a
    delivery of any kind there (``SubscriptionStore.record_delivery``), the others only
    keep their own bookkeeping in memory."""

    def __init__(self, *sources: SubscriptionSource) -> None:
        self.sources = sources

    async def match(self, change: Change, only: str | None = None) -> Matched:
        outgoing: list[Outgoing] = []
        failed: dict[str, str] = {}
        for source in self.sources:
            matched = await source.match(change, only)
            outgoing.extend(matched.outgoing)
            failed.update(matched.failed)
        return Matched(outgoing, failed)

    def fired(self, outgoing: list[Outgoing], *, recorded: bool) -> None:
        for source in self.sources:
            source.fired(outgoing, recorded=recorded)

    async def periodic_due(self, now: str) -> list[Outgoing]:
        out: list[Outgoing] = []
        for source in self.sources:
            out.extend(await source.periodic_due(now))
        return out

    async def delivered(
        self, tenant: str, subscription_id: str, *, ok: bool, at: str, error: str | None = None
    ) -> None:
        for source in self.sources:
            await source.delivered(tenant, subscription_id, ok=ok, at=at, error=error)

    async def get(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        for source in self.sources:
            found = await source.get(tenant, subscription_id)
            if found is not None:
                return found
        return None


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    timeout: float = 10.0  # seconds for one send, connection included
    max_attempts: int = 10  # sends of one notification before it is dead-lettered
    backoff: float = 1.0  # delay before the first retry; doubles with each failure
    backoff_max: float = 300.0  # the longest delay between two attempts
    concurrency: int = 4  # sends at once per endpoint
    queue: int = 256  # deliveries per endpoint held in memory (the rest wait in the store)
    inflight: int = 10_000  # deliveries held in memory over all endpoints
    batch: int = 256  # changes consumed per transaction
    poll: float = 1.0  # longest sleep of an idle loop (retries come due, other nodes)
    idle_lane: float = 60.0  # seconds after which an unused lane drops its connections


def backoff_delay(attempts: int, config: DeliveryConfig, rand: Callable[[], float]) -> float:
    """Delay before attempt ``attempts + 1``: base * 2^(attempts-1), capped, ±20% jitter
    so that the retries of many notifications to one receiver spread out."""
    base = min(config.backoff_max, config.backoff * 2 ** max(0, attempts - 1))
    return base * (0.8 + 0.4 * rand())


def envelope_of(out: Outgoing) -> Envelope:
    """The bytes to send: the Notification as JSON (HTTP) or wrapped with its headers as
    ``{"metadata": ..., "body": ...}`` (MQTT binding)."""
    headers = dict(out.headers)
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = out.endpoint.accept or JSON_MT
    endpoint = out.endpoint
    if endpoint.is_mqtt:
        payload = orjson.dumps({"metadata": headers, "body": out.body})
        return Envelope(endpoint.uri, headers, payload, endpoint.mqtt_qos, endpoint.mqtt_version)
    return Envelope(endpoint.uri, headers, orjson.dumps(out.body))


@dataclass(slots=True)
class _Lane:
    key: str
    gate: asyncio.Semaphore
    held: int = 0  # claimed deliveries of this lane in memory (waiting or sending)
    used: float = field(default_factory=time.monotonic)


class NotificationEngine:
    def __init__(
        self,
        outbox: Outbox,
        subscriptions: SubscriptionSource,
        sender: Sender,
        config: DeliveryConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        leader: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """``leader(job)`` says whether this node runs ``job`` now (None: always)."""
        self.outbox = outbox
        self.leader = leader
        self.subscriptions = subscriptions
        self.sender = sender
        self.config = config or DeliveryConfig()
        self.clock = clock
        self.rand = rand
        self._lanes: dict[str, _Lane] = {}
        #: one lock per subscription with sends in memory: its notifications go in order
        self._order: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self._held = 0
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._backlog = asyncio.Event()
        self._due: list[float] = []  # when retries scheduled by this process come due
        self._overflow = True  # rows may wait in the store for room (at start: leftovers)
        #: lanes with rows waiting in the store (a count that changes with each new one);
        #: until a claim found room for everything, every lane (leftovers of a restart)
        self._waiting: dict[str, int] = {}
        self._all_waiting = True
        #: a lane is refilled from the store once it holds no more than this
        self._refill_at = self.config.queue // 2
        self._done_ids: list[int] = []
        self._done_flush: asyncio.Future[list[int]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: per subscription, the sends in memory: each future ends once its outcome is recorded
        self._outcomes: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
        self.sent = 0  # acknowledged sends since start (metrics, bench)
        self.failed = 0

    # -- wiring ----------------------------------------------------------------------------
    def attach(self) -> None:
        """Let the outbox wake the changes loop (from the writer thread, for SQLite)."""
        self._loop = asyncio.get_running_loop()
        self.outbox.on_change = self._signal

    def _signal(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed.set)

    # -- loops -----------------------------------------------------------------------------
    async def run_changes(self) -> None:
        while True:
            self._changed.clear()
            if await self.drain_changes() < self.config.batch:
                await _wait(self._changed, self.config.poll)

    async def run_deliveries(self) -> None:
        while True:
            self._backlog.clear()
            claimed = await self.pump()
            if claimed:
                continue
            timeout = self.config.poll
            if self._due:
                timeout = min(timeout, max(0.01, self._due[0] - self.clock()))
            await _wait(self._backlog, timeout)
            self._close_idle_lanes()

    async def run_periodic(self) -> None:
        while True:
            started = time.monotonic()
            try:
                leading = self.leader is None or await self.leader(PERIODIC_JOB)
            except Exception:  # noqa: BLE001 - logged; the next tick asks again
                log.exception("asking for the lead of %s failed", PERIODIC_JOB)
                leading = False
            if leading:
                try:
                    outgoing = await self.subscriptions.periodic_due(now_iso())
                    if outgoing:
                        await self._record(outgoing)
                except Exception:  # noqa: BLE001 - logged; the next tick tries again
                    log.exception("periodic notifications failed")
                try:
                    await self.retry_dead_letters()
                except Exception:  # noqa: BLE001 - logged; the next tick tries again
                    log.exception("retrying dead letters failed")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    # -- steps (the loops' bodies; tests call them directly) -------------------------------
    async def drain_changes(self) -> int:
        """Turn one batch of changes into deliveries; returns how many changes it took."""
        changes = await self.outbox.changes(self.config.batch)
        if not changes:
            return 0
        outgoing: list[Outgoing] = []
        dead: list[DeadLetter] = []
        for change in changes:
            found, failed = await self._match(change)
            outgoing.extend(found)
            dead.extend(self._dead_letters(change, failed, MATCH_TRIES))
        await self._record(outgoing, [c.seq for c in changes], dead)
        return len(changes)

    async def _match(
        self, change: Change, only: str | None = None
    ) -> tuple[list[Outgoing], dict[str | None, str]]:
        """Match ``change`` (against subscription ``only``), trying a failed subscription
        alone up to ``MATCH_TRIES`` times in all; returns the notifications and what still
        fails (None: the change as a whole, before any subscription was tried)."""
        outgoing: list[Outgoing] = []
        failed: dict[str | None, str] = {only: ""}
        for _ in range(MATCH_TRIES):
            still: dict[str | None, str] = {}
            for sub_id in failed:
                try:
                    matched = await self.subscriptions.match(change, sub_id)
                except Exception as exc:  # noqa: BLE001 - dead-lettered, never dropped
                    log.exception("matching change %s of %s failed", change.seq,
                                  change.entity_id)
                    still[sub_id] = f"{type(exc).__name__}: {exc}"
                    continue
                outgoing.extend(matched.outgoing)
                still.update(matched.failed)
            failed = still
            if not failed:
                break
        return outgoing, failed

    def _dead_letters(
        self, change: Change, failed: dict[str | None, str], attempts: int,
        first_failed: float | None = None,
    ) -> list[DeadLetter]:
        now = self.clock()
        letters = []
        for sub_id, error in failed.items():
            log.error("change %s of %s dead-lettered for %s after %d attempt(s): %s",
                      change.seq, change.entity_id, sub_id or "every subscription", attempts,
                      error)
            next_at = now + backoff_delay(attempts, self.config, self.rand)
            letters.append(DeadLetter(change, sub_id, error, attempts, next_at,
                                      first_failed if first_failed is not None else now))
        return letters

    async def retry_dead_letters(self) -> int:
        """Retry the dead letters that are due; returns how many were tried."""
        due = await self.outbox.dead_letters(DEAD_LETTER_BATCH, due_by=self.clock())
        for letter in due:
            outgoing, failed = await self._match(letter.change, letter.subscription_id)
            attempts = letter.attempts + MATCH_TRIES
            if not outgoing and list(failed) == [letter.subscription_id]:
                error = failed[letter.subscription_id]
                next_at = self.clock() + backoff_delay(attempts, self.config, self.rand)
                await self.outbox.defer_dead_letter(letter.id, attempts, next_at, error)
                log.warning("dead letter %s (change of %s for %s) failed again: %s",
                            letter.id, letter.change.entity_id,
                            letter.subscription_id or "every subscription", error)
                continue
            dead = self._dead_letters(letter.change, failed, attempts, letter.first_failed)
            new = [self._new_delivery(out) for out in outgoing]
            recorded = False
            try:
                recorded = await self.outbox.resolve_dead_letter(
                    letter.id, new, dead, self.clock())
            finally:
                self.subscriptions.fired(outgoing, recorded=recorded)
            if new:
                self._wake_pump()
            log.info("dead letter %s (change of %s) retried: %d notification(s)",
                     letter.id, letter.change.entity_id, len(new))
        return len(due)

    async def notify(self, outgoing: list[Outgoing]) -> None:
        """Record notifications that no entity change caused (a context source
        registration changed, a csource subscription was created) for delivery, as the
        periodic ones are: durable once this returns, then sent like every other."""
        if outgoing:
            await self._record(outgoing)

    def _new_delivery(self, out: Outgoing, claim: bool = False) -> NewDelivery:
        envelope = envelope_of(out)
        lane = self._lane(lane_of(envelope.uri))
        return NewDelivery(out.tenant, out.subscription_id, lane.key, envelope, claim)

    def _wake_pump(self) -> None:
        self._overflow = True
        self._backlog.set()

    async def _record(
        self, outgoing: list[Outgoing], seqs: list[int] | None = None,
        dead: list[DeadLetter] | None = None,
    ) -> None:
        new: list[NewDelivery] = []
        reserved: dict[str, int] = {}
        waiting = set(self._waiting) if not self._all_waiting else None
        for n, out in enumerate(outgoing, 1):
            if n % 500 == 0:
                await asyncio.sleep(0)  # a large fan-out must not stall request handling
            envelope = envelope_of(out)
            lane = self._lane(lane_of(envelope.uri))
            # behind rows of its lane that wait in the store, a new one waits too: in order
            claim = waiting is not None and lane.key not in waiting and self._has_room(lane)
            if claim:
                self._reserve(lane)
                reserved[lane.key] = reserved.get(lane.key, 0) + 1
            else:
                self._mark_waiting(lane.key)
                if waiting is not None:
                    waiting.add(lane.key)
            new.append(NewDelivery(out.tenant, out.subscription_id, lane.key, envelope, claim))
        try:
            if seqs is None:
                claimed = await self.outbox.add(new, self.clock())
            else:
                claimed = await self.outbox.consume(seqs, new, self.clock(), dead or [])
        except BaseException:
            self.subscriptions.fired(outgoing, recorded=False)
            for key, count in reserved.items():
                for _ in range(count):
                    self._unreserve(self._lane(key))
            raise
        self.subscriptions.fired(outgoing, recorded=True)
        for delivery in claimed:
            reserved[delivery.lane] -= 1
            self._start(delivery, check=False)
        # a claim the store declined (another node sends the subscription's notifications)
        for key, count in reserved.items():
            for _ in range(count):
                self._unreserve(self._lane(key))
                self._mark_waiting(key)
        if len(claimed) < len(new):
            self._wake_pump()

    def _mark_waiting(self, lane: str) -> None:
        """Rows of ``lane`` wait in the store: new ones queue behind them until a claim
        has taken them all."""
        self._waiting[lane] = self._waiting.get(lane, 0) + 1

    async def pump(self) -> int:
        """Claim the due deliveries that fit in memory and start sending them."""
        room_total = self.config.inflight - self._held
        if room_total <= 0:
            return 0
        per_lane = {k: self._room(lane) for k, lane in self._lanes.items()}
        skip = [k for k, lane in self._lanes.items() if lane.held > self._refill_at]
        room = Room(room_total, per_lane, self.config.queue)
        now = self.clock()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        marks = dict(self._waiting)
        claimed = await self.outbox.claim_due(now, room, skip)
        # rows may still be waiting if some lane (or everything) ran out of room
        self._overflow = (bool(skip) or room.total <= 0 or room.partial
                          or 0 in room.per_lane.values())
        if room.total > 0 and not room.partial:
            # a lane the claim did not fill has no row waiting any more (of those marked
            # before it: a mark made meanwhile stays)
            if self._all_waiting:
                self._all_waiting = False
                for key in [*skip, *(k for k, left in room.per_lane.items() if left <= 0)]:
                    self._mark_waiting(key)
            for key, mark in marks.items():
                if (key not in skip and room.per_lane.get(key, room.default) > 0
                        and self._waiting.get(key) == mark):
                    del self._waiting[key]
        for delivery in claimed:
            self._reserve(self._lane(delivery.lane))
            self._start(delivery, check=True)
        return len(claimed)

    # -- lanes -----------------------------------------------------------------------------
    def _lane(self, key: str) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key, asyncio.Semaphore(self.config.concurrency))
        lane.used = time.monotonic()
        return lane

    def _room(self, lane: _Lane) -> int:
        return self.config.queue - lane.held

    def _has_room(self, lane: _Lane) -> bool:
        return self._room(lane) > 0 and self._held < self.config.inflight

    def _reserve(self, lane: _Lane) -> None:
        lane.held += 1
        self._held += 1

    def _unreserve(self, lane: _Lane) -> None:
        lane.held -= 1
        self._held -= 1
        lane.used = time.monotonic()

    def _close_idle_lanes(self) -> None:
        cutoff = time.monotonic() - self.config.idle_lane
        for key, lane in list(self._lanes.items()):
            if lane.held == 0 and lane.used < cutoff:
                del self._lanes[key]
                task = asyncio.ensure_future(self.sender.forget(key))
                task.add_done_callback(_log_failure)

    # -- one delivery ----------------------------------------------------------------------
    def _start(self, delivery: Delivery, *, check: bool) -> None:
        task = asyncio.ensure_future(self._deliver(delivery, check))
        self._tasks[delivery.id] = task
        task.add_done_callback(functools.partial(self._finished, delivery.id))

    def _finished(self, delivery_id: int, _task: asyncio.Future[None]) -> None:
        self._tasks.pop(delivery_id, None)

    async def settled(self, tenant: str, subscription_id: str, bound: float = 0.5) -> None:
        """Wait, at most ``bound`` seconds, until the notifications of a subscription that
        are being sent now have their outcome recorded. A receiver that has answered may
        read the subscription at once: it should see its answer in ``timesSent`` and
        ``status``. Sends started later are not waited for."""
        pending = self._outcomes.get((tenant, subscription_id))
        if pending:
            await asyncio.wait(list(pending), timeout=bound)

    async def _deliver(self, d: Delivery, check: bool) -> None:
        lane = self._lane(d.lane)
        key = (d.tenant, d.subscription_id)
        outcome_recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.setdefault(key, set()).add(outcome_recorded)
        try:
            # only a retry can outlive its subscription by long: look before resending
            outcome, error = await self._send(d, lane, check and d.attempts > 0)
            if outcome == "gone":
                await self._until_recorded(d, lambda: self._mark_done(d.id))
            elif error is None:
                await self._succeeded(d)
            else:
                await self._failed(d, str(error), retry=error.retry)
        finally:
            outcome_recorded.set_result(None)
            pending = self._outcomes[key]
            pending.discard(outcome_recorded)
            if not pending:
                del self._outcomes[key]
            self._unreserve(lane)
            if self._overflow and lane.held <= self._refill_at:
                self._backlog.set()

    async def _send(
        self, d: Delivery, lane: _Lane, check: bool
    ) -> tuple[str, DeliveryError | None]:
        """Send in the subscription's order, within the lane's concurrency; only the send
        holds them (the bookkeeping afterwards does not)."""
        key = (d.tenant, d.subscription_id)
        lock, users = self._order.get(key) or (asyncio.Lock(), 0)
        self._order[key] = (lock, users + 1)
        try:
            async with lock, lane.gate:
                if check and await self._gone(d):
                    return "gone", None
                try:
                    async with asyncio.timeout(self.config.timeout + 5):
                        await self.sender.send(d.envelope, d.lane)
                except DeliveryError as exc:
                    return "failed", exc
                except TimeoutError:
                    return "failed", DeliveryError("timed out")
                except Exception as exc:  # noqa: BLE001 - a sender bug must not lose it
                    log.exception("sending notification %s failed", d.id)
                    return "failed", DeliveryError(f"{type(exc).__name__}: {exc}")
                return "sent", None
        finally:
            lock, users = self._order[key]
            if users > 1:
                self._order[key] = (lock, users - 1)
            else:
                del self._order[key]

    async def _until_recorded(self, d: Delivery, write: Callable[[], Awaitable[bool]]) -> bool:
        """Run ``write`` (an outcome for the outbox) until the store takes it, with backoff:
        the row stays claimed meanwhile, so nothing else sends it, and it is neither lost
        nor stuck until a restart. Returns what ``write`` says: whether the row was still
        this process's."""
        delay = self.config.backoff
        while True:
            try:
                return await write()
            except Exception:  # noqa: BLE001 - the store failed: try again
                log.exception("recording the outcome of notification %s failed; again in "
                              "%.1fs", d.id, delay)
            await asyncio.sleep(delay * (0.8 + 0.4 * self.rand()))
            delay = min(self.config.backoff_max, delay * 2)

    async def _mark_done(self, delivery_id: int) -> bool:
        """Delete the row; the deliveries finishing meanwhile share one transaction.
        False when another process had taken the row over."""
        self._done_ids.append(delivery_id)
        if self._done_flush is None:
            self._done_flush = asyncio.ensure_future(self._flush_done())
        return delivery_id in await asyncio.shield(self._done_flush)

    async def _flush_done(self) -> list[int]:
        await asyncio.sleep(0)  # let the other completions of this loop turn join
        ids, self._done_ids, self._done_flush = self._done_ids, [], None
        return await self.outbox.done(ids)

    async def _gone(self, d: Delivery) -> bool:
        """A subscription deleted since the notification was recorded gets no more sends."""
        try:
            return await self.subscriptions.get(d.tenant, d.subscription_id) is None
        except Exception:  # noqa: BLE001 - when in doubt, deliver
            log.exception("looking up subscription %s failed", d.subscription_id)
            return False

    async def _succeeded(self, d: Delivery) -> None:
        # counted only if the row was still ours: else the process that took it over
        # sends it again and counts that send
        if await self._until_recorded(d, lambda: self._mark_done(d.id)):
            self.sent += 1
            await self._report(d, ok=True)

    async def _failed(self, d: Delivery, error: str, *, retry: bool) -> None:
        attempts = d.attempts + 1
        if retry and attempts < self.config.max_attempts:
            next_at = self.clock() + backoff_delay(attempts, self.config, self.rand)
            if not await self._until_recorded(
                d, lambda: self.outbox.retry(d.id, attempts, next_at, error)
            ):
                return
            self.failed += 1
            await self._report(d, ok=False, error=error)
            if not self._due or next_at < self._due[0]:
                self._backlog.set()  # the deliveries loop sleeps too long: recompute
            heapq.heappush(self._due, next_at)
            log.info("notification %s to %s failed (%s), retry %d", d.id, d.envelope.uri,
                     error, attempts)
        else:
            letter = DeadDelivery(d.tenant, d.subscription_id, d.lane, d.envelope, error,
                                  attempts, self.clock())
            if not await self._until_recorded(
                d, lambda: self.outbox.bury_delivery(letter, d.id)
            ):
                return
            self.failed += 1
            await self._report(d, ok=False, error=error)
            log.error("notification %s of %s to %s dead-lettered after %d attempt(s): %s",
                      d.id, d.subscription_id, d.envelope.uri, attempts, error)

    async def _report(self, d: Delivery, *, ok: bool, error: str | None = None) -> None:
        try:
            await self.subscriptions.delivered(
                d.tenant, d.subscription_id, ok=ok, at=now_iso(), error=error
            )
        except Exception:  # noqa: BLE001 - statistics must not undo a delivery
            log.exception("reporting notification %s failed", d.id)

    # -- dead letters, for operators ------------------------------------------------------
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter | DeadDelivery]:
        """The dead letters of both kinds, oldest first."""
        matching = await self.outbox.dead_letters(limit)
        delivery = await self.outbox.dead_deliveries(limit)
        return heapq.nsmallest(limit, [*matching, *delivery], key=lambda d: d.id)

    async def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters by kind (``matching``, ``delivery``)."""
        return {kind: await self.outbox.dead_letter_count(kind) for kind in (MATCHING, DELIVERY)}

    async def requeue_dead_letter(self, dead_id: int) -> None:
        """Retry a dead letter now: a matching one is made due (the node that retries dead
        letters takes it within a tick), a delivery one becomes a fresh delivery, its
        attempts starting again from zero."""
        if not await self.outbox.requeue_dead_letter(dead_id, self.clock()):
            raise ResourceNotFound(f"dead letter {dead_id} not found")
        self._wake_pump()
        log.info("dead letter %s requeued", dead_id)

    async def discard_dead_letter(self, dead_id: int) -> None:
        """Drop a dead letter for good: what it owed is never sent."""
        if not await self.outbox.discard_dead_letter(dead_id):
            raise ResourceNotFound(f"dead letter {dead_id} not found")
        log.warning("dead letter %s discarded by an operator", dead_id)

    # -- shutdown --------------------------------------------------------------------------
    async def aclose(self, grace: float = 5.0) -> None:
        """Let sends in progress finish for up to ``grace`` seconds; the rest stay in the
        store and are sent by the next process."""
        if self.outbox.on_change == self._signal:
            self.outbox.on_change = None
        tasks = dict(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks.values(), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            unfinished = [i for i, t in tasks.items() if t in pending]
            try:
                if self._done_flush is not None:
                    await self._done_flush  # deliveries already acknowledged
                await self.outbox.release(unfinished)
            except Exception:  # noqa: BLE001 - the next process's open returns them to pending
                log.exception("releasing %d unfinished notifications failed", len(unfinished))
        await self.sender.aclose()

    async def idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is left to do (tests, bench); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            changes, deliveries = await self.outbox.counts()
            if changes == 0 and deliveries == 0 and not self._tasks:
                return True
            await asyncio.sleep(0.02)
        return False


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds. (Not ``asyncio.wait_for``: on
    Python 3.11 it can swallow a cancellation that coincides with the event, and a loop
    that should stop would go on.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("closing an idle lane failed: %s", task.exception())
