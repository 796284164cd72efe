"""The durable outbox on SQLite: two tables beside the entities, in the same file.

``outbox_changes`` gets one row per entity write, inside the write's own transaction (a
hook on ``SqliteStore.write_hooks``), and loses it when the worker has turned it into
``outbox_deliveries`` rows (same transaction as their insertion). A delivery row is
deleted once the receiver acknowledged it, so both tables only hold work still to do.

A write to a tenant without any subscription records no change: nothing could be notified
of it (a subscription only hears of writes after its creation, and its row is written by
the same writer thread). The check needs the subscriptions table in the same file; an
outbox opened without it records every change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import orjson

from urbanos.core.change import Change
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import Write
from urbanos.storage.outbox import Delivery, Envelope, NewDelivery, Room, changes_of

if TYPE_CHECKING:
    from urbanos.storage.sqlite import SqliteStore

SCHEMA: list[str] = [
    """CREATE TABLE IF NOT EXISTS outbox_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        before BLOB,
        after BLOB,
        at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS outbox_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        lane TEXT NOT NULL,
        uri TEXT NOT NULL,
        headers BLOB NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL DEFAULT 0,
        mqtt_version TEXT NOT NULL DEFAULT 'mqtt5.0',
        claimed INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_deliveries_due ON outbox_deliveries (claimed, next_at)",
]

_COLUMNS = "id, tenant, subscription_id, lane, uri, headers, payload, qos, mqtt_version, attempts"
#: how many due rows one claim looks at, at most
_SCAN = 2000


def _delivery(row: tuple[Any, ...]) -> Delivery:
    id_, tenant, sub, lane, uri, headers, payload, qos, version, attempts = row
    envelope = Envelope(uri, orjson.loads(headers), bytes(payload), qos, version)
    return Delivery(id_, tenant, sub, lane, envelope, attempts)


def _run_many(conn: sqlite3.Connection, sql: str, ids: list[int]) -> None:
    """executemany, returning nothing: a cursor handed back to the event loop would be
    finalized there, resetting a cached statement the writer thread may be using."""
    conn.executemany(sql, [(i,) for i in ids])


def _dump(value: Any) -> bytes | None:
    return None if value is None else orjson.dumps(value)


class SqliteOutbox:
    """Outbox tables in the SQLite store's file; registers its hook on the store."""

    def __init__(self, store: SqliteStore) -> None:
        self.db = store.db
        self.on_change: Callable[[], None] | None = None
        #: whether writes are checked against the subscriptions table (set on open)
        self._gated = False
        store.write_hooks.append(self._record)

    def _record(self, conn: sqlite3.Connection, tenant: str, writes: list[Write]) -> None:
        """Runs inside the entity write's transaction: the change commits with it."""
        if self._gated and conn.execute(
            "SELECT 1 FROM subscriptions WHERE tenant = ? LIMIT 1", (tenant,)
        ).fetchone() is None:
            return
        rows = [
            (c.tenant, c.entity_id, _dump(c.before), _dump(c.after), c.at)
            for c in changes_of(tenant, writes, now_iso())
        ]
        conn.executemany(
            "INSERT INTO outbox_changes (tenant, entity_id, before, after, at)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        if rows and self.on_change is not None:
            # the worker reads through the writer, after this transaction has committed
            self.on_change()

    async def open(self) -> None:
        def run(conn: sqlite3.Connection) -> bool:
            for stmt in SCHEMA:
                conn.execute(stmt)
            conn.execute("UPDATE outbox_deliveries SET claimed = 0 WHERE claimed = 1")
            return conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'subscriptions'"
            ).fetchone() is not None

        self._gated = await self.db.transact(run)

    async def changes(self, limit: int) -> list[Change]:
        def run(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute(
                "SELECT seq, tenant, entity_id, before, after, at FROM outbox_changes"
                " ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                Change(
                    tenant,
                    entity_id,
                    orjson.loads(before) if before is not None else None,
                    orjson.loads(after) if after is not None else None,
                    at,
                    seq,
                )
                for seq, tenant, entity_id, before, after, at in rows
            ]

        # through the writer: it runs after any write transaction that signalled us
        return await self.db.transact(run)

    def _insert(self, conn: sqlite3.Connection, new: list[NewDelivery], now: float) -> list[Delivery]:
        claimed: list[Delivery] = []
        for d in new:
            e = d.envelope
            cur = conn.execute(
                "INSERT INTO outbox_deliveries (tenant, subscription_id, lane, uri, headers,"
                " payload, qos, mqtt_version, claimed, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (d.tenant, d.subscription_id, d.lane, e.uri, orjson.dumps(e.headers),
                 e.payload, e.qos, e.mqtt_version, int(d.claimed), now),
            )
            if d.claimed:
                assert cur.lastrowid is not None
                claimed.append(Delivery(cur.lastrowid, d.tenant, d.subscription_id, d.lane, e))
        return claimed

    async def consume(self, seqs: list[int], new: list[NewDelivery], now: float) -> list[Delivery]:
        def run(conn: sqlite3.Connection) -> list[Delivery]:
            claimed = self._insert(conn, new, now)
            conn.executemany("DELETE FROM outbox_changes WHERE seq = ?", [(s,) for s in seqs])
            return claimed

        return await self.db.transact(run)

    async def add(self, new: list[NewDelivery], now: float) -> list[Delivery]:
        if not new:
            return []
        return await self.db.transact(lambda conn: self._insert(conn, new, now))

    async def claim_due(self, now: float, room: Room, skip: Collection[str]) -> list[Delivery]:
        skipped = list(skip)

        def run(conn: sqlite3.Connection) -> list[Delivery]:
            marks = ",".join("?" * len(skipped))
            lane_filter = f" AND lane NOT IN ({marks})" if skipped else ""
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM outbox_deliveries"
                f" WHERE claimed = 0 AND next_at <= ?{lane_filter} ORDER BY next_at, id LIMIT ?",
                (now, *skipped, max(0, min(_SCAN, room.total))),
            ).fetchall()
            taken = [_delivery(r) for r in rows if room.take(r[3])]
            conn.executemany(
                "UPDATE outbox_deliveries SET claimed = 1 WHERE id = ?", [(d.id,) for d in taken]
            )
            return taken

        return await self.db.transact(run)

    async def done(self, ids: list[int]) -> None:
        if ids:
            await self.db.transact(
                lambda conn: _run_many(conn, "DELETE FROM outbox_deliveries WHERE id = ?", ids)
            )

    async def retry(self, delivery_id: int, attempts: int, next_at: float, error: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox_deliveries SET claimed = 0, attempts = ?, next_at = ?,"
                " last_error = ? WHERE id = ?",
                (attempts, next_at, error[:500], delivery_id),
            )

        await self.db.transact(run)

    async def release(self, ids: list[int]) -> None:
        if ids:
            await self.db.transact(
                lambda conn: _run_many(
                    conn, "UPDATE outbox_deliveries SET claimed = 0 WHERE id = ?", ids
                )
            )

    async def counts(self) -> tuple[int, int]:
        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            changes = conn.execute("SELECT count(*) FROM outbox_changes").fetchone()[0]
            deliveries = conn.execute("SELECT count(*) FROM outbox_deliveries").fetchone()[0]
            return changes, deliveries

        return await self.db.read(run)
