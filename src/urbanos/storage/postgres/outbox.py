"""The durable outbox on PostgreSQL, drained by every node without double delivery.

Tables ``urbanos.outbox_changes`` and ``urbanos.outbox_deliveries`` (catalog migration
0002). The write hook inserts the changes inside the entity write's transaction and sends
``NOTIFY urbanos_outbox`` there too: every node's delivery loop wakes once it has committed.

Several nodes share the rows, so both reading changes and claiming deliveries *claim*:
``SELECT … FOR UPDATE SKIP LOCKED`` picks rows nobody else is picking, and ``claimed_by``
(this node's id) keeps them ours after the transaction. A claim is taken over only when its
node no longer holds its liveness lock (it died: ``listen.LIVE_NODES``), so a process that
restarts, or any other node, resumes a dead node's work at once and never a live one's.
Changes this node claimed but did not consume (a failure in between) are returned to it
again by ``changes``; consuming them and recording their deliveries is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Json

from urbanos.core.change import Change
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import Write
from urbanos.storage.outbox import Delivery, Envelope, NewDelivery, Room, changes_of
from urbanos.storage.postgres.listen import LIVE_NODES, OUTBOX_CHANNEL, node_for

if TYPE_CHECKING:
    from urbanos.storage.postgres import PostgresStore

__all__ = ["PostgresOutbox"]

_COLUMNS = "id, tenant, subscription_id, lane, uri, headers, payload, qos, mqtt_version, attempts"
#: how many due rows one claim looks at, at most
_SCAN = 2000

#: the changes travel as one JSON array of [entity id, before, after]: one parameter to
#: encode, where arrays of jsonb cost a conversion per element
#: a tenant without subscriptions has nobody to notify: its writes record no change
_RECORD = """WITH ins AS (
    INSERT INTO urbanos.outbox_changes (tenant, entity_id, before, after, at)
    SELECT %(tenant)s, c->>0, NULLIF(c->1, 'null'), NULLIF(c->2, 'null'), %(at)s
    FROM jsonb_array_elements(%(changes)s::jsonb) AS c
    WHERE EXISTS (SELECT 1 FROM urbanos.subscriptions WHERE tenant = %(tenant)s)
    RETURNING 1)
SELECT pg_notify(%(channel)s, '') FROM (SELECT 1 FROM ins LIMIT 1) AS one"""

_CHANGES = f"""UPDATE urbanos.outbox_changes SET claimed_by = %(me)s WHERE seq IN (
    SELECT seq FROM urbanos.outbox_changes
    WHERE claimed_by IS NULL OR claimed_by = %(me)s OR claimed_by <> ALL({LIVE_NODES})
    ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING seq, tenant, entity_id, before, after, at"""


def _delivery(row: tuple[Any, ...]) -> Delivery:
    id_, tenant, sub, lane, uri, headers, payload, qos, version, attempts = row
    envelope = Envelope(uri, headers, bytes(payload), qos, version)
    return Delivery(id_, tenant, sub, lane, envelope, attempts)


class PostgresOutbox:
    """Outbox rows beside the entities; registers its write hook on the store."""

    def __init__(self, store: PostgresStore) -> None:
        self.db = store.db
        self.node = node_for(store)
        self.on_change: Callable[[], None] | None = None
        self.node.on(OUTBOX_CHANNEL, self._woken)
        store.write_hooks.append(self._record)

    def _woken(self, _payload: str) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _record(self, conn: AsyncConnection, tenant: str, writes: list[Write]) -> None:
        """Runs inside the entity write's transaction: the changes commit with it."""
        changes = changes_of(tenant, writes, now_iso())
        if not changes:
            return
        rows = orjson.dumps([[c.entity_id, c.before, c.after] for c in changes]).decode()
        await conn.execute(
            _RECORD,
            {"tenant": tenant, "at": changes[0].at, "changes": rows, "channel": OUTBOX_CHANNEL},
        )

    async def open(self) -> None:
        """Start this node (its liveness lock guards our claims); the tables came with the
        catalog migrations. Claims of a previous process are a dead node's: taken over."""
        await self.node.start()

    @property
    def _me(self) -> int:
        return self.node.node_id

    async def changes(self, limit: int) -> list[Change]:
        async with self.db.connection() as conn:
            cur = await conn.execute(_CHANGES, {"me": self._me, "limit": limit})
            rows = await cur.fetchall()
        rows.sort(key=lambda r: r[0])
        return [Change(t, e, before, after, at, seq) for seq, t, e, before, after, at in rows]

    async def _insert(
        self, conn: AsyncConnection, new: list[NewDelivery], now: float
    ) -> list[Delivery]:
        claimed: list[Delivery] = []
        for d in new:
            e = d.envelope
            cur = await conn.execute(
                "INSERT INTO urbanos.outbox_deliveries (tenant, subscription_id, lane, uri,"
                " headers, payload, qos, mqtt_version, claimed_by, next_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (d.tenant, d.subscription_id, d.lane, e.uri, Json(e.headers), e.payload,
                 e.qos, e.mqtt_version, self._me if d.claimed else None, now),
            )
            row = await cur.fetchone()
            if d.claimed and row is not None:
                claimed.append(Delivery(int(row[0]), d.tenant, d.subscription_id, d.lane, e))
        return claimed

    async def consume(self, seqs: list[int], new: list[NewDelivery], now: float) -> list[Delivery]:
        async with self.db.transaction() as conn:
            claimed = await self._insert(conn, new, now)
            await conn.execute(
                "DELETE FROM urbanos.outbox_changes WHERE seq = ANY(%s::bigint[])", (seqs,)
            )
        return claimed

    async def add(self, new: list[NewDelivery], now: float) -> list[Delivery]:
        if not new:
            return []
        async with self.db.transaction() as conn:
            return await self._insert(conn, new, now)

    async def claim_due(self, now: float, room: Room, skip: Collection[str]) -> list[Delivery]:
        limit = max(0, min(_SCAN, room.total))
        if limit == 0:
            return []
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM urbanos.outbox_deliveries"  # noqa: S608 - constants
                f" WHERE next_at <= %s AND lane <> ALL(%s::text[])"
                f" AND (claimed_by IS NULL OR claimed_by <> ALL({LIVE_NODES}))"
                " ORDER BY next_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, list(skip), limit),
            )
            taken = [_delivery(r) for r in await cur.fetchall() if room.take(r[3])]
            if taken:
                await conn.execute(
                    "UPDATE urbanos.outbox_deliveries SET claimed_by = %s WHERE id = ANY(%s::bigint[])",
                    (self._me, [d.id for d in taken]),
                )
        return taken

    async def done(self, ids: list[int]) -> None:
        if ids:
            async with self.db.connection() as conn:
                await conn.execute(
                    "DELETE FROM urbanos.outbox_deliveries WHERE id = ANY(%s::bigint[])", (ids,)
                )

    async def retry(self, delivery_id: int, attempts: int, next_at: float, error: str) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE urbanos.outbox_deliveries SET claimed_by = NULL, attempts = %s,"
                " next_at = %s, last_error = %s WHERE id = %s",
                (attempts, next_at, error[:500], delivery_id),
            )

    async def release(self, ids: list[int]) -> None:
        if ids:
            async with self.db.connection() as conn:
                await conn.execute(
                    "UPDATE urbanos.outbox_deliveries SET claimed_by = NULL"
                    " WHERE id = ANY(%s::bigint[]) AND claimed_by = %s",
                    (ids, self._me),
                )

    async def counts(self) -> tuple[int, int]:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM urbanos.outbox_changes),"
                " (SELECT count(*) FROM urbanos.outbox_deliveries)"
            )
            row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)
