"""The notification outbox: entity changes and pending deliveries, kept by the store.

Every entity write records a :class:`~urbanos.core.change.Change` in the same transaction
(a write hook), so a change that committed is never lost, whatever happens to the process
afterwards. The delivery worker turns changes into :class:`Delivery` rows and consumes the
changes in one transaction, then sends the deliveries and deletes each one only once the
receiver acknowledged it: at-least-once, with the rows as the source of truth and memory
only as a bounded cache of what is being sent right now.

A delivery row is either *pending* (due at ``next_at``) or *claimed* (handed to a sender
by this process). Claims do not survive a restart: ``open`` returns them to pending.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
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


class Room:
    """How many more deliveries this process may claim, per lane and in all; ``take``
    counts one claim down (claims are picked inside the store's transaction)."""

    def __init__(self, total: int, per_lane: Mapping[str, int], default: int) -> None:
        self.total = total
        self.per_lane = dict(per_lane)
        self.default = default

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

    async def consume(self, seqs: list[int], new: list[NewDelivery], now: float) -> list[Delivery]:
        """Record ``new`` (due ``now``) and drop the changes ``seqs``, in one transaction.

        Returns the claimed deliveries, in order."""
        ...

    async def add(self, new: list[NewDelivery], now: float) -> list[Delivery]:
        """Record deliveries that no change caused (periodic notifications)."""
        ...

    async def claim_due(self, now: float, room: Room, skip: Collection[str]) -> list[Delivery]:
        """Claim pending deliveries due by ``now``, oldest first, as far as ``room`` allows,
        leaving lanes in ``skip`` alone."""
        ...

    async def done(self, ids: list[int]) -> None:
        """Forget delivered (or abandoned) deliveries."""
        ...

    async def retry(self, delivery_id: int, attempts: int, next_at: float, error: str) -> None:
        """Return a failed delivery to pending, due again at ``next_at``."""
        ...

    async def release(self, ids: list[int]) -> None:
        """Return claims to pending without counting an attempt (shutdown)."""
        ...

    async def counts(self) -> tuple[int, int]:
        """(unconsumed changes, deliveries not yet done): for metrics and tests."""
        ...


def changes_of(tenant: str, writes: list[Write], at: str) -> list[Change]:
    """One Change per Write: what it replaced and what it left (None when deleted)."""
    out: list[Change] = []
    for w in writes:
        after: JSONObject | None = w.entity if w.op == "put" else None
        out.append(Change(tenant, w.entity_id, w.before, after, at))
    return out

