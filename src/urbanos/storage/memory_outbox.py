"""The outbox for the memory store: same behaviour as SQLite's, without the durability.

Used by unit tests and ``memory://`` brokers; a restart loses what it held, as it loses
the entities themselves.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from urbanos.core.change import Change
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import Write
from urbanos.storage.memory import MemoryStore
from urbanos.storage.outbox import (
    DELIVERY,
    MATCHING,
    DeadDelivery,
    DeadLetter,
    Delivery,
    NewDelivery,
    Room,
    changes_of,
)


@dataclass(slots=True)
class _Row:
    delivery: Delivery
    next_at: float
    claimed: bool = False
    error: str = ""


class MemoryOutbox:
    def __init__(self, store: MemoryStore) -> None:
        self.on_change: Callable[[], None] | None = None
        self._changes: dict[int, Change] = {}
        self._rows: dict[int, _Row] = {}
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._dead: dict[int, DeadLetter | DeadDelivery] = {}
        self._dead_ids = itertools.count(1)
        store.write_hooks.append(self._record)

    def _record(self, tenant: str, writes: list[Write]) -> None:
        for change in changes_of(tenant, copy.deepcopy(writes), now_iso()):
            seq = next(self._seq)
            self._changes[seq] = replace(change, seq=seq)
        if writes and self.on_change is not None:
            self.on_change()

    async def open(self) -> None:
        for row in self._rows.values():
            row.claimed = False

    async def changes(self, limit: int) -> list[Change]:
        return [self._changes[s] for s in sorted(self._changes)[:limit]]

    def _insert(self, new: list[NewDelivery], now: float) -> list[Delivery]:
        claimed: list[Delivery] = []
        for d in new:
            delivery = Delivery(next(self._ids), d.tenant, d.subscription_id, d.lane, d.envelope)
            self._rows[delivery.id] = _Row(delivery, now, d.claimed)
            if d.claimed:
                claimed.append(delivery)
        return claimed

    def _bury(self, dead: Sequence[DeadLetter]) -> None:
        for letter in dead:
            dead_id = next(self._dead_ids)
            self._dead[dead_id] = replace(letter, id=dead_id)

    async def consume(
        self, seqs: list[int], new: list[NewDelivery], now: float,
        dead: Sequence[DeadLetter] = (),
    ) -> list[Delivery]:
        claimed = self._insert(new, now)
        self._bury(dead)
        for s in seqs:
            self._changes.pop(s, None)
        return claimed

    async def add(self, new: list[NewDelivery], now: float) -> list[Delivery]:
        return self._insert(new, now)

    async def claim_due(self, now: float, room: Room, skip: Collection[str]) -> list[Delivery]:
        due = sorted(
            (r for r in self._rows.values()
             if not r.claimed and r.next_at <= now and r.delivery.lane not in skip),
            key=lambda r: (r.next_at, r.delivery.id),
        )
        taken: list[Delivery] = []
        for row in due:
            if room.take(row.delivery.lane):
                row.claimed = True
                taken.append(row.delivery)
        return taken

    async def done(self, ids: list[int]) -> list[int]:
        return [i for i in ids if self._rows.pop(i, None) is not None]

    async def retry(self, delivery_id: int, attempts: int, next_at: float, error: str) -> bool:
        row = self._rows.get(delivery_id)
        if row is None:
            return False
        row.delivery = replace(row.delivery, attempts=attempts)
        row.next_at, row.claimed, row.error = next_at, False, error
        return True

    async def release(self, ids: list[int]) -> None:
        for i in ids:
            if i in self._rows:
                self._rows[i].claimed = False

    async def counts(self) -> tuple[int, int]:
        return len(self._changes), len(self._rows)

    async def bury_delivery(self, letter: DeadDelivery, delivery_id: int) -> bool:
        if self._rows.pop(delivery_id, None) is None:
            return False
        dead_id = next(self._dead_ids)
        self._dead[dead_id] = replace(letter, id=dead_id)
        return True

    def _matching(self) -> list[DeadLetter]:
        return [d for d in self._dead.values() if isinstance(d, DeadLetter)]

    async def dead_letters(self, limit: int, due_by: float | None = None) -> list[DeadLetter]:
        if due_by is None:
            return sorted(self._matching(), key=lambda d: d.id)[:limit]
        due = [d for d in self._matching() if d.next_at <= due_by]
        return sorted(due, key=lambda d: (d.next_at, d.id))[:limit]

    async def dead_deliveries(self, limit: int) -> list[DeadDelivery]:
        dead = [d for d in self._dead.values() if isinstance(d, DeadDelivery)]
        return sorted(dead, key=lambda d: d.id)[:limit]

    async def resolve_dead_letter(
        self, dead_id: int, new: list[NewDelivery], dead: Sequence[DeadLetter], now: float
    ) -> bool:
        if not isinstance(self._dead.get(dead_id), DeadLetter):
            return False
        del self._dead[dead_id]
        self._insert(new, now)
        self._bury(dead)
        return True

    async def defer_dead_letter(
        self, dead_id: int, attempts: int, next_at: float, error: str
    ) -> bool:
        letter = self._dead.get(dead_id)
        if not isinstance(letter, DeadLetter):
            return False
        self._dead[dead_id] = replace(letter, attempts=attempts, next_at=next_at, error=error)
        return True

    async def requeue_dead_letter(self, dead_id: int, now: float) -> bool:
        letter = self._dead.get(dead_id)
        if letter is None:
            return False
        if isinstance(letter, DeadLetter):
            self._dead[dead_id] = replace(letter, next_at=now)
        else:
            del self._dead[dead_id]
            self._insert([NewDelivery(letter.tenant, letter.subscription_id, letter.lane,
                                      letter.envelope)], now)
        return True

    async def discard_dead_letter(self, dead_id: int) -> bool:
        return self._dead.pop(dead_id, None) is not None

    async def dead_letter_count(self, kind: str | None = None) -> int:
        wanted = {MATCHING: DeadLetter, DELIVERY: DeadDelivery}.get(kind or "", object)
        return sum(isinstance(d, wanted) for d in self._dead.values())
