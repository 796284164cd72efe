"""The notification outbox: entity changes and pending deliveries, kept by the store.

Every entity write records a :class:`~urbanos.core.change.Change` in the same transaction
(a write hook), so a change that committed is never lost, whatever happens to the process
afterwards. The delivery worker turns changes into :class:`Delivery` rows and consumes the
changes in one transaction, then sends the deliveries and deletes each one only once the
receiver acknowledged it: at-least-once, with the rows as the source of truth and memory
only as a bounded cache of what is being sent right now.

A delivery row is either *pending* (due at ``next_at``) or *claimed* (handed to a sender
by this process). Claims do not survive a restart: ``open`` returns them to pending.
``done`` and ``retry`` act only on rows this process still holds, and say so.

A change that some subscription could not be matched against is never dropped: the worker
records a :class:`DeadLetter` (the change, the subscription, the error) in the transaction
that consumes the change, and retries it with backoff until it yields its notifications
(``resolve_dead_letter``); operators list and requeue them.

A notification is never dropped either: one whose sends are exhausted (or refused by an
answer that is not retried) moves, in one transaction, from the deliveries to the same
dead-letter table as a :class:`DeadDelivery` (``bury_delivery``). Those wait for an
operator: ``requeue_dead_letter`` turns one back into a fresh delivery, ``discard_dead_letter``
drops it. The two kinds share one id sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from urbanos.core.change import Change
from urbanos.storage.base import Write
from urbanos.types import JSONObject


@dataclass(frozen=True, slots=True)
class Envelope:
    """A notification ready for the wire: where, which headers (HTTP) or metadata (MQTT),
    the payload bytes, and the MQTT options. Built once, stored, resent unchanged."""

    uri: str
    headers: dict[str, str]
    payload: bytes
    qos: int = 0
    mqtt_version: str = "mqtt5.0"


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery to record; ``claimed`` ones are handed to a sender straight away."""

    tenant: str
    subscription_id: str
    lane: str
    envelope: Envelope
    claimed: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    tenant: str
    subscription_id: str
    lane: str
    envelope: Envelope
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A change whose matching failed for ``subscription_id`` (None: for the change as a
    whole, before any subscription was tried), kept to be retried at ``next_at``.
    ``id`` is 0 until the store has recorded it; times are seconds since the epoch."""

    change: Change
    subscription_id: str | None
    error: str
    attempts: int
    next_at: float
    first_failed: float
    id: int = 0


@dataclass(frozen=True, slots=True)
class DeadDelivery:
    """A notification not delivered: its envelope as it would be sent, the subscription,
    the last error, the sends it took, and when it was given up (seconds since the epoch).
    ``id`` is 0 until the store has recorded it."""

    tenant: str
    subscription_id: str
    lane: str
    envelope: Envelope
    error: str
    attempts: int
    failed_at: float
    id: int = 0


#: the ``kind`` of a dead letter: a change whose matching failed, a notification not delivered
MATCHING, DELIVERY = "matching", "delivery"


class Room:
    """How many more deliveries this process may claim, per lane and in all; ``take``
    counts one claim down (claims are picked inside the store's transaction). A store that
    looked at only part of the due rows sets ``partial``."""

    def __init__(self, total: int, per_lane: Mapping[str, int], default: int) -> None:
        self.total = total
        self.per_lane = dict(per_lane)
        self.default = default
        self.partial = False

    def take(self, lane: str) -> bool:
        left = self.per_lane.get(lane, self.default)
        if self.total <= 0 or left <= 0:
            return False
        self.total -= 1
        self.per_lane[lane] = left - 1
        return True


class Outbox(Protocol):
    """What the delivery engine needs from storage (SQLite: durable; memory: for tests)."""

    #: called (from any thread) after a write recorded changes; wakes the worker
    on_change: Callable[[], None] | None

    async def open(self) -> None:
        """Create tables and return claims left by a previous process to pending."""
        ...

    async def changes(self, limit: int) -> list[Change]:
        """The oldest unconsumed changes, in commit order."""
        ...

    async def consume(
        self, seqs: list[int], new: list[NewDelivery], now: float,
        dead: Sequence[DeadLetter] = (),
    ) -> list[Delivery]:
        """Record ``new`` (due ``now``) and the dead letters ``dead``, and drop the changes
        ``seqs``, in one transaction.

        Returns the claimed deliveries, in order. A store shared by several processes may
        record a delivery asked to be claimed as pending instead (another process is
        sending the subscription's notifications): it is then not among those returned."""
        ...

    async def add(self, new: list[NewDelivery], now: float) -> list[Delivery]:
        """Record deliveries that no change caused (periodic notifications)."""
        ...

    async def claim_due(self, now: float, room: Room, skip: Collection[str]) -> list[Delivery]:
        """Claim pending deliveries due by ``now``, oldest first, as far as ``room`` allows,
        leaving lanes in ``skip`` alone."""
        ...

    async def done(self, ids: list[int]) -> list[int]:
        """Forget delivered deliveries (or those of a deleted subscription); returns those this process held
        (the others were taken over by another process, which sends them again)."""
        ...

    async def retry(self, delivery_id: int, attempts: int, next_at: float, error: str) -> bool:
        """Return a failed delivery to pending, due again at ``next_at``; False when this
        process no longer held it."""
        ...

    async def release(self, ids: list[int]) -> None:
        """Return claims to pending without counting an attempt (shutdown)."""
        ...

    async def counts(self) -> tuple[int, int]:
        """(unconsumed changes, deliveries not yet done): for metrics and tests."""
        ...

    async def bury_delivery(self, letter: DeadDelivery, delivery_id: int) -> bool:
        """Delete delivery ``delivery_id`` and record it as dead letter ``letter``, in one
        transaction; False (and nothing recorded) when this process no longer held it."""
        ...

    async def dead_letters(self, limit: int, due_by: float | None = None) -> list[DeadLetter]:
        """Matching dead letters oldest first (by ``next_at`` when ``due_by`` is given:
        only those due by then)."""
        ...

    async def dead_deliveries(self, limit: int) -> list[DeadDelivery]:
        """Delivery dead letters, oldest first."""
        ...

    async def resolve_dead_letter(
        self, dead_id: int, new: list[NewDelivery], dead: Sequence[DeadLetter], now: float
    ) -> bool:
        """Drop dead letter ``dead_id`` and record what retrying it gave (deliveries due
        ``now``, pending; dead letters left), in one transaction; False when it was gone."""
        ...

    async def defer_dead_letter(
        self, dead_id: int, attempts: int, next_at: float, error: str
    ) -> bool:
        """Count one more failed retry of a dead letter; False when it was gone."""
        ...

    async def requeue_dead_letter(self, dead_id: int, now: float) -> bool:
        """Make a matching dead letter due at ``now``, or turn a delivery one back into a
        pending delivery due ``now`` with no attempt counted (one transaction); False when
        there is none with that id."""
        ...

    async def discard_dead_letter(self, dead_id: int) -> bool:
        """Drop a dead letter of either kind; False when there is none with that id."""
        ...

    async def dead_letter_count(self, kind: str | None = None) -> int:
        """Dead letters of ``kind`` (None: both)."""
        ...


def changes_of(tenant: str, writes: list[Write], at: str) -> list[Change]:
    """One Change per Write: what it replaced and what it left (None when deleted)."""
    out: list[Change] = []
    for w in writes:
        after: JSONObject | None = w.entity if w.op == "put" else None
        out.append(Change(tenant, w.entity_id, w.before, after, at))
    return out

