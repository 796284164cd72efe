"""The durable outbox on PostgreSQL, drained by every node without double delivery.

Tables ``urbanos.outbox_changes`` and ``urbanos.outbox_deliveries`` (catalog migration
0002), ``urbanos.outbox_dead_letters`` (0005; notifications not delivered: 0007). The write hook inserts the changes inside the entity write's transaction and sends
``NOTIFY urbanos_outbox`` there too: every node's delivery loop wakes once it has committed.

Several nodes share the rows, so both reading changes and claiming deliveries *claim*:
``SELECT … FOR UPDATE SKIP LOCKED`` picks rows nobody else is picking, and ``claimed_by``
(this node's id) keeps them ours after the transaction. A claim is taken over only when its
node no longer holds its liveness lock (it died: ``listen.LIVE_NODES``), so a process that
restarts, or any other node, resumes a dead node's work at once and never a live one's.
Changes this node claimed but did not consume (a failure in between) are returned to it
again by ``changes``; consuming them and recording their deliveries is one transaction.
``done`` and ``retry`` touch a delivery only while this node's id is still in its
``claimed_by``: a node whose listener reconnected after another took its claims over
neither deletes the other's work nor counts the send twice.

Order across nodes, as on one node: the notifications of a subscription are sent in the
order of the changes that caused them (retries aside). Two claims make it so, each taken
under a transaction-scoped advisory lock (``CLAIM_LOCK``) so that claims of several nodes
never interleave: changes are claimed in ``seq`` order and never past a change another live
node holds, so the deliveries of a subscription are recorded in the order of the changes;
and a node claims deliveries of a subscription (``claim_due``, or at once when it records
them) only while no other live node holds some, and records a new one claimed only when no
earlier one waits: one lane per subscription across the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Json

from urbanos.core.change import Change
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import Write
from urbanos.storage.outbox import (
    DELIVERY,
    MATCHING,
    DeadDelivery,
    DeadLetter,
    Delivery,
    Envelope,
    NewDelivery,
    Room,
    changes_of,
)
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

#: first key of the transaction-scoped locks that serialise claims ("urb2"); second key:
#: 1 for changes, 2 for deliveries
CLAIM_LOCK = 0x75726232
_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"

#: the oldest changes nobody else works on, never past one another live node holds
_CHANGES = f"""UPDATE urbanos.outbox_changes SET claimed_by = %(me)s WHERE seq IN (
    SELECT seq FROM urbanos.outbox_changes
    WHERE (claimed_by IS NULL OR claimed_by = %(me)s OR claimed_by <> ALL({LIVE_NODES}))
    AND seq < coalesce((SELECT min(seq) FROM urbanos.outbox_changes
                        WHERE claimed_by <> %(me)s AND claimed_by IN ({LIVE_NODES})),
                       9223372036854775807)
    ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING seq, tenant, entity_id, before, after, at"""

#: another live node holds deliveries of the subscription of ``d``
_HELD_ELSEWHERE = f"""EXISTS (SELECT 1 FROM urbanos.outbox_deliveries o
    WHERE o.tenant = {{t}} AND o.subscription_id = {{s}} AND o.claimed_by IS NOT NULL
    AND o.claimed_by <> %(me)s AND o.claimed_by IN ({LIVE_NODES}))"""

_CLAIM = f"""SELECT {_COLUMNS} FROM urbanos.outbox_deliveries d
    WHERE next_at <= %(now)s AND lane <> ALL(%(skip)s::text[])
    AND (claimed_by IS NULL OR claimed_by <> ALL({LIVE_NODES}))
    AND NOT {_HELD_ELSEWHERE.format(t="d.tenant", s="d.subscription_id")}
    ORDER BY next_at, id LIMIT %(limit)s FOR UPDATE"""

#: a new delivery, claimed by this node if asked and if no other node holds the
#: subscription's deliveries and none of them waits, due, unclaimed
_INSERT = f"""INSERT INTO urbanos.outbox_deliveries (tenant, subscription_id, lane, uri, headers,
    payload, qos, mqtt_version, claimed_by, next_at)
SELECT %(tenant)s, %(sub)s, %(lane)s, %(uri)s, %(headers)s, %(payload)s, %(qos)s, %(version)s,
    CASE WHEN %(claim)s AND NOT {_HELD_ELSEWHERE.format(t="%(tenant)s", s="%(sub)s")}
        AND NOT EXISTS (SELECT 1 FROM urbanos.outbox_deliveries w
            WHERE w.tenant = %(tenant)s AND w.subscription_id = %(sub)s
            AND w.next_at <= %(now)s
            AND (w.claimed_by IS NULL OR w.claimed_by <> ALL({LIVE_NODES})))
    THEN %(me)s::bigint END,
    %(now)s
RETURNING id, claimed_by"""

_DEAD_COLUMNS = ("id, tenant, subscription_id, entity_id, before, after, at, attempts, next_at,"
                 " first_failed, last_error")
_DEAD_DELIVERY_COLUMNS = ("id, tenant, subscription_id, lane, uri, headers, payload, qos,"
                          " mqtt_version, last_error, attempts, next_at")


def _delivery(row: tuple[Any, ...]) -> Delivery:
    id_, tenant, sub, lane, uri, headers, payload, qos, version, attempts = row
    envelope = Envelope(uri, headers, bytes(payload), qos, version)
    return Delivery(id_, tenant, sub, lane, envelope, attempts)


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    id_, tenant, sub, entity_id, before, after, at, attempts, next_at, first, error = row
    return DeadLetter(Change(tenant, entity_id, before, after, at), sub, error, attempts,
                      next_at, first, id_)


async def _bury(conn: AsyncConnection, dead: Sequence[DeadLetter]) -> None:
    for d in dead:
        c = d.change
        await conn.execute(
            "INSERT INTO urbanos.outbox_dead_letters (tenant, subscription_id, entity_id,"
            " before, after, at, attempts, next_at, first_failed, last_error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (c.tenant, d.subscription_id, c.entity_id, _json(c.before), _json(c.after), c.at,
             d.attempts, d.next_at, d.first_failed, d.error[:500]),
        )


def _dead_delivery(row: tuple[Any, ...]) -> DeadDelivery:
    id_, tenant, sub, lane, uri, headers, payload, qos, version, error, attempts, at = row
    envelope = Envelope(uri, headers, bytes(payload), qos, version)
    return DeadDelivery(tenant, sub, lane, envelope, error, attempts, at, id_)


def _json(value: Any) -> Json | None:
    return None if value is None else Json(value)


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
        async with self.db.transaction() as conn:
            await conn.execute(_LOCK, (CLAIM_LOCK, 1))
            cur = await conn.execute(_CHANGES, {"me": self._me, "limit": limit})
            rows = await cur.fetchall()
        rows.sort(key=lambda r: r[0])
        return [Change(t, e, before, after, at, seq) for seq, t, e, before, after, at in rows]

    async def _insert(
        self, conn: AsyncConnection, new: list[NewDelivery], now: float
    ) -> list[Delivery]:
        """Insert ``new``; claims, if any is asked for, are decided under the claim lock."""
        claimed: list[Delivery] = []
        if any(d.claimed for d in new):
            await conn.execute(_LOCK, (CLAIM_LOCK, 2))
        for d in new:
            e = d.envelope
            cur = await conn.execute(
                _INSERT,
                {"tenant": d.tenant, "sub": d.subscription_id, "lane": d.lane, "uri": e.uri,
                 "headers": Json(e.headers), "payload": e.payload, "qos": e.qos,
                 "version": e.mqtt_version, "claim": d.claimed, "me": self._me, "now": now},
            )
            row = await cur.fetchone()
            if row is not None and row[1] is not None:
                claimed.append(Delivery(int(row[0]), d.tenant, d.subscription_id, d.lane, e))
        return claimed

    async def consume(
        self, seqs: list[int], new: list[NewDelivery], now: float,
        dead: Sequence[DeadLetter] = (),
    ) -> list[Delivery]:
        async with self.db.transaction() as conn:
            claimed = await self._insert(conn, new, now)
            await _bury(conn, dead)
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
            room.partial = True
            return []
        async with self.db.transaction() as conn:
            await conn.execute(_LOCK, (CLAIM_LOCK, 2))
            cur = await conn.execute(
                _CLAIM, {"now": now, "skip": list(skip), "limit": limit, "me": self._me}
            )
            rows = await cur.fetchall()
            room.partial = len(rows) >= limit
            taken = [_delivery(r) for r in rows if room.take(r[3])]
            if taken:
                await conn.execute(
                    "UPDATE urbanos.outbox_deliveries SET claimed_by = %s WHERE id = ANY(%s::bigint[])",
                    (self._me, [d.id for d in taken]),
                )
        return taken

    async def done(self, ids: list[int]) -> list[int]:
        if not ids:
            return []
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM urbanos.outbox_deliveries WHERE id = ANY(%s::bigint[])"
                " AND claimed_by = %s RETURNING id",
                (ids, self._me),
            )
            return [int(r[0]) for r in await cur.fetchall()]

    async def retry(self, delivery_id: int, attempts: int, next_at: float, error: str) -> bool:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE urbanos.outbox_deliveries SET claimed_by = NULL, attempts = %s,"
                " next_at = %s, last_error = %s WHERE id = %s AND claimed_by = %s",
                (attempts, next_at, error[:500], delivery_id, self._me),
            )
            return cur.rowcount > 0

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

    async def bury_delivery(self, letter: DeadDelivery, delivery_id: int) -> bool:
        e = letter.envelope
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM urbanos.outbox_deliveries WHERE id = %s AND claimed_by = %s",
                (delivery_id, self._me),
            )
            if cur.rowcount == 0:
                return False
            await conn.execute(
                "INSERT INTO urbanos.outbox_dead_letters (kind, tenant, subscription_id,"
                " attempts, next_at, first_failed, last_error, lane, uri, headers, payload,"
                " qos, mqtt_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (DELIVERY, letter.tenant, letter.subscription_id, letter.attempts,
                 letter.failed_at, letter.failed_at, letter.error[:500], letter.lane, e.uri,
                 Json(e.headers), e.payload, e.qos, e.mqtt_version),
            )
            return True

    async def dead_deliveries(self, limit: int) -> list[DeadDelivery]:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_DEAD_DELIVERY_COLUMNS} FROM urbanos.outbox_dead_letters"  # noqa: S608
                " WHERE kind = %s ORDER BY id LIMIT %s",
                (DELIVERY, limit),
            )
            return [_dead_delivery(r) for r in await cur.fetchall()]

    async def dead_letters(self, limit: int, due_by: float | None = None) -> list[DeadLetter]:
        where, order = ("", "id") if due_by is None else (" AND next_at <= %s", "next_at, id")
        params: tuple[Any, ...] = (
            (MATCHING, limit) if due_by is None else (MATCHING, due_by, limit))
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_DEAD_COLUMNS} FROM urbanos.outbox_dead_letters"  # noqa: S608
                f" WHERE kind = %s{where}"
                f" ORDER BY {order} LIMIT %s",
                params,
            )
            return [_dead_letter(r) for r in await cur.fetchall()]

    async def resolve_dead_letter(
        self, dead_id: int, new: list[NewDelivery], dead: Sequence[DeadLetter], now: float
    ) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM urbanos.outbox_dead_letters WHERE id = %s AND kind = %s",
                (dead_id, MATCHING),
            )
            if cur.rowcount == 0:
                return False
            await self._insert(conn, new, now)
            await _bury(conn, dead)
            return True

    async def defer_dead_letter(
        self, dead_id: int, attempts: int, next_at: float, error: str
    ) -> bool:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE urbanos.outbox_dead_letters SET attempts = %s, next_at = %s,"
                " last_error = %s WHERE id = %s AND kind = %s",
                (attempts, next_at, error[:500], dead_id, MATCHING),
            )
            return cur.rowcount > 0

    async def requeue_dead_letter(self, dead_id: int, now: float) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE urbanos.outbox_dead_letters SET next_at = %s WHERE id = %s AND kind = %s",
                (now, dead_id, MATCHING),
            )
            if cur.rowcount > 0:
                return True
            cur = await conn.execute(
                "DELETE FROM urbanos.outbox_dead_letters WHERE id = %s AND kind = %s"
                f" RETURNING {_DEAD_DELIVERY_COLUMNS}",
                (dead_id, DELIVERY),
            )
            row = await cur.fetchone()
            if row is None:
                return False
            d = _dead_delivery(row)
            await self._insert(
                conn, [NewDelivery(d.tenant, d.subscription_id, d.lane, d.envelope)], now)
            return True

    async def discard_dead_letter(self, dead_id: int) -> bool:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM urbanos.outbox_dead_letters WHERE id = %s", (dead_id,)
            )
            return cur.rowcount > 0

    async def dead_letter_count(self, kind: str | None = None) -> int:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM urbanos.outbox_dead_letters"
                " WHERE %s::text IS NULL OR kind = %s::text",
                (kind, kind),
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0
