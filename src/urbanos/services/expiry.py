"""The sweeper of transient entities and attributes (clause 4.22).

Reads already hide what has expired (``core.expiry.live``); this worker makes it so in the
store: an expired entity is deleted, an entity with expired instances or sub-attributes is
written without them. Each is an ordinary write through ``EntityStore.modify``, so its
notifications (a deletion, or the attributes' removal) go through the outbox hook in the
same transaction, as for a client's delete. The history of an expired attribute instance
is forgotten with it; an expired entity's history stays exactly as it was (no deletion
instances: the values it held are its whole story).

With several nodes on one database, only the leader of ``SWEEP_JOB`` sweeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from urbanos.core.expiry import canonical, due, live
from urbanos.core.temporal import SCOPE
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import EntityStore, Write
from urbanos.storage.temporal import Directive, TemporalStore
from urbanos.types import JSONObject

log = logging.getLogger("urbanos.expiry")

#: the job one node of the cluster runs alone (``EntityStore.try_lead``)
SWEEP_JOB = "entities.expiry"

__all__ = ["SWEEP_JOB", "ExpirySweeper"]


def _gone_instances(
    before: JSONObject, after: JSONObject
) -> list[tuple[str, str | None]]:
    """(attribute, datasetId) of the instances ``after`` no longer holds."""
    out: list[tuple[str, str | None]] = []
    for name, instances in before["attrs"].items():
        kept = {i.get("datasetId") for i in after["attrs"].get(name, ())}
        out.extend((name, i.get("datasetId")) for i in instances
                   if i.get("datasetId") not in kept)
    return out


class ExpirySweeper:
    """Deletes what has expired, a batch at a time, every ``interval`` seconds."""

    def __init__(
        self, store: EntityStore, history: TemporalStore | None = None, *,
        clock: Callable[[], str] = now_iso,
        leader: Callable[[str], Awaitable[bool]] | None = None,
        batch: int = 500,
    ) -> None:
        self.store = store
        self.history = history
        self.clock = clock
        self.leader = leader
        self.batch = batch

    async def sweep(self) -> int:
        """One pass over everything due now; returns the entities written."""
        now = canonical(self.clock())
        swept = 0
        for _ in range(100):  # bounded: a pass never spins on what it cannot remove
            found = await self.store.expiring(now, self.batch)
            by_tenant: dict[str, list[str]] = defaultdict(list)
            for tenant, eid in found:
                by_tenant[tenant].append(eid)
            for tenant, ids in by_tenant.items():
                swept += await self._sweep(tenant, ids, now)
            if len(found) < self.batch:
                break
        return swept

    async def _sweep(self, tenant: str, ids: list[str], now: str) -> int:
        attached: list[Write] = []

        def plan(current: dict[str, JSONObject]) -> tuple[list[Write], int]:
            writes: list[Write] = []
            for eid, old in current.items():
                if not due(old, now):
                    continue  # changed since it was found
                kept = live(old, now)
                if kept is None:  # its history stays as it was: no deletion instances
                    write = Write("delete", eid, before=old)
                    directive = Directive(untouched=frozenset(old["attrs"]) | {SCOPE})
                else:  # an expired instance's history goes with it
                    write = Write("put", eid, kept, before=old)
                    directive = Directive(purge=_gone_instances(old, kept))
                if self.history is not None:
                    self.history.directives.attach(write, directive)
                    attached.append(write)
                writes.append(write)
            return writes, len(writes)

        try:
            return await self.store.modify(tenant, ids, plan)
        finally:
            if self.history is not None:
                self.history.directives.discard(attached)

    async def run(self, interval: float = 1.0) -> None:
        """A worker loop: sweep, then again every ``interval`` seconds."""
        while True:
            if self.leader is None or await self.leader(SWEEP_JOB):
                swept = await self.sweep()
                if swept:
                    log.debug("expiry: %d entities deleted or trimmed", swept)
            await asyncio.sleep(interval)
