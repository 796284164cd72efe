"""The durable outbox on SQLite: two tables beside the entities, in the same file.

``outbox_changes`` gets one row per entity write, inside the write's own transaction (a
hook on ``SqliteStore.write_hooks``), and loses it when the worker has turned it into
``outbox_deliveries`` rows (same transaction as their insertion). A delivery row is
deleted once the receiver acknowledged it, so both tables only hold work still to do.
``outbox_dead_letters`` keeps the changes some subscription could not be matched against
(recorded with the consumption of the change), until a retry succeeds, and the
notifications whose sends were exhausted (moved there from ``outbox_deliveries`` in one
transaction), until an operator requeues or discards them.

A write to a tenant without any subscription records no change: nothing could be notified
of it (a subscription only hears of writes after its creation, and its row is written by
the same writer thread). The check needs the subscriptions table in the same file; an
outbox opened without it records every change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import orjson

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

if TYPE_CHECKING:
    from urbanos.storage.sqlite import SqliteStore

#: kind 'matching': a change (entity_id … at; subscription_id NULL: it could not be matched
#: at all), retried at next_at; kind 'delivery': a notification not delivered (lane …
#: mqtt_version, as it would be sent), next_at and first_failed being when it was given up
_DEAD_TABLE = """CREATE TABLE IF NOT EXISTS outbox_dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL DEFAULT 'matching',
        tenant TEXT NOT NULL,
        subscription_id TEXT,
        entity_id TEXT,
        before BLOB,
        after BLOB,
        at TEXT,
        attempts INTEGER NOT NULL,
        next_at REAL NOT NULL,
        first_failed REAL NOT NULL,
        last_error TEXT NOT NULL,
        lane TEXT,
        uri TEXT,
        headers BLOB,
        payload BLOB,
        qos INTEGER,
        mqtt_version TEXT
    )"""

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
    _DEAD_TABLE,
]

_COLUMNS = "id, tenant, subscription_id, lane, uri, headers, payload, qos, mqtt_version, attempts"
#: how many due rows one claim looks at, at most
_SCAN = 2000


def _delivery(row: tuple[Any, ...]) -> Delivery:
    id_, tenant, sub, lane, uri, headers, payload, qos, version, attempts = row
    envelope = Envelope(uri, orjson.loads(headers), bytes(payload), qos, version)
    return Delivery(id_, tenant, sub, lane, envelope, attempts)


_DEAD_COLUMNS = ("id, tenant, subscription_id, entity_id, before, after, at, attempts, next_at,"
                 " first_failed, last_error")
_DEAD_DELIVERY_COLUMNS = ("id, tenant, subscription_id, lane, uri, headers, payload, qos,"
                          " mqtt_version, last_error, attempts, next_at")


def _upgrade(conn: sqlite3.Connection) -> None:
    """A file from before delivery dead letters: rebuild the table (SQLite cannot drop a
    NOT NULL), keeping the rows and their ids."""
    declared = {row[1] for row in conn.execute("PRAGMA table_info(outbox_dead_letters)")}
    if not declared or "kind" in declared:
        return
    conn.execute("ALTER TABLE outbox_dead_letters RENAME TO old_outbox_dead_letters")
    conn.execute(_DEAD_TABLE)
    conn.execute(f"INSERT INTO outbox_dead_letters ({_DEAD_COLUMNS})"  # noqa: S608
                 f" SELECT {_DEAD_COLUMNS} FROM old_outbox_dead_letters")
    conn.execute("DROP TABLE old_outbox_dead_letters")


def _dead_delivery(row: tuple[Any, ...]) -> DeadDelivery:
    id_, tenant, sub, lane, uri, headers, payload, qos, version, error, attempts, at = row
    envelope = Envelope(uri, orjson.loads(headers), bytes(payload), qos, version)
    return DeadDelivery(tenant, sub, lane, envelope, error, attempts, at, id_)


def _loads(value: Any) -> Any:
    return orjson.loads(value) if value is not None else None


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    id_, tenant, sub, entity_id, before, after, at, attempts, next_at, first, error = row
    change = Change(tenant, entity_id, _loads(before), _loads(after), at)
    return DeadLetter(change, sub, error, attempts, next_at, first, id_)


def _bury(conn: sqlite3.Connection, dead: Sequence[DeadLetter]) -> None:
    conn.executemany(
        "INSERT INTO outbox_dead_letters (tenant, subscription_id, entity_id, before, after,"
        " at, attempts, next_at, first_failed, last_error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(d.change.tenant, d.subscription_id, d.change.entity_id, _dump(d.change.before),
          _dump(d.change.after), d.change.at, d.attempts, d.next_at, d.first_failed,
          d.error[:500]) for d in dead],
    )


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
            _upgrade(conn)
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
                Change(tenant, entity_id, _loads(before), _loads(after), at, seq)
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

    async def consume(
        self, seqs: list[int], new: list[NewDelivery], now: float,
        dead: Sequence[DeadLetter] = (),
    ) -> list[Delivery]:
        def run(conn: sqlite3.Connection) -> list[Delivery]:
            claimed = self._insert(conn, new, now)
            _bury(conn, dead)
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
            limit = max(0, min(_SCAN, room.total))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM outbox_deliveries"
                f" WHERE claimed = 0 AND next_at <= ?{lane_filter} ORDER BY next_at, id LIMIT ?",
                (now, *skipped, limit),
            ).fetchall()
            room.partial = len(rows) >= limit
            taken = [_delivery(r) for r in rows if room.take(r[3])]
            conn.executemany(
                "UPDATE outbox_deliveries SET claimed = 1 WHERE id = ?", [(d.id,) for d in taken]
            )
            return taken

        return await self.db.transact(run)

    async def done(self, ids: list[int]) -> list[int]:
        """Deletes the rows; every row is this process's (one process per file)."""
        if not ids:
            return []

        def run(conn: sqlite3.Connection) -> list[int]:
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"DELETE FROM outbox_deliveries WHERE id IN ({marks}) RETURNING id", ids
            ).fetchall()
            return [int(r[0]) for r in rows]

        return await self.db.transact(run)

    async def retry(self, delivery_id: int, attempts: int, next_at: float, error: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE outbox_deliveries SET claimed = 0, attempts = ?, next_at = ?,"
                " last_error = ? WHERE id = ?",
                (attempts, next_at, error[:500], delivery_id),
            ).rowcount > 0

        return await self.db.transact(run)

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

    async def dead_letters(self, limit: int, due_by: float | None = None) -> list[DeadLetter]:
        def run(conn: sqlite3.Connection) -> list[DeadLetter]:
            if due_by is None:
                rows = conn.execute(
                    f"SELECT {_DEAD_COLUMNS} FROM outbox_dead_letters WHERE kind = ?"
                    " ORDER BY id LIMIT ?",
                    (MATCHING, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_DEAD_COLUMNS} FROM outbox_dead_letters WHERE kind = ?"
                    " AND next_at <= ? ORDER BY next_at, id LIMIT ?",
                    (MATCHING, due_by, limit),
                ).fetchall()
            return [_dead_letter(r) for r in rows]

        return await self.db.read(run)

    async def dead_deliveries(self, limit: int) -> list[DeadDelivery]:
        def run(conn: sqlite3.Connection) -> list[DeadDelivery]:
            rows = conn.execute(
                f"SELECT {_DEAD_DELIVERY_COLUMNS} FROM outbox_dead_letters WHERE kind = ?"
                " ORDER BY id LIMIT ?",
                (DELIVERY, limit),
            ).fetchall()
            return [_dead_delivery(r) for r in rows]

        return await self.db.read(run)

    async def bury_delivery(self, letter: DeadDelivery, delivery_id: int) -> bool:
        e = letter.envelope

        def run(conn: sqlite3.Connection) -> bool:
            if conn.execute(
                "DELETE FROM outbox_deliveries WHERE id = ?", (delivery_id,)
            ).rowcount == 0:
                return False
            conn.execute(
                "INSERT INTO outbox_dead_letters (kind, tenant, subscription_id, attempts,"
                " next_at, first_failed, last_error, lane, uri, headers, payload, qos,"
                " mqtt_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (DELIVERY, letter.tenant, letter.subscription_id, letter.attempts,
                 letter.failed_at, letter.failed_at, letter.error[:500], letter.lane, e.uri,
                 orjson.dumps(e.headers), e.payload, e.qos, e.mqtt_version),
            )
            return True

        return await self.db.transact(run)

    async def resolve_dead_letter(
        self, dead_id: int, new: list[NewDelivery], dead: Sequence[DeadLetter], now: float
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            if conn.execute(
                "DELETE FROM outbox_dead_letters WHERE id = ? AND kind = ?", (dead_id, MATCHING)
            ).rowcount == 0:
                return False
            self._insert(conn, new, now)
            _bury(conn, dead)
            return True

        return await self.db.transact(run)

    async def defer_dead_letter(
        self, dead_id: int, attempts: int, next_at: float, error: str
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE outbox_dead_letters SET attempts = ?, next_at = ?, last_error = ?"
                " WHERE id = ? AND kind = ?",
                (attempts, next_at, error[:500], dead_id, MATCHING),
            ).rowcount > 0

        return await self.db.transact(run)

    async def requeue_dead_letter(self, dead_id: int, now: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            if conn.execute(
                "UPDATE outbox_dead_letters SET next_at = ? WHERE id = ? AND kind = ?",
                (now, dead_id, MATCHING),
            ).rowcount > 0:
                return True
            row = conn.execute(
                f"DELETE FROM outbox_dead_letters WHERE id = ? AND kind = ?"
                f" RETURNING {_DEAD_DELIVERY_COLUMNS}",
                (dead_id, DELIVERY),
            ).fetchone()
            if row is None:
                return False
            d = _dead_delivery(row)
            self._insert(conn, [NewDelivery(d.tenant, d.subscription_id, d.lane, d.envelope)],
                         now)
            return True

        return await self.db.transact(run)

    async def discard_dead_letter(self, dead_id: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "DELETE FROM outbox_dead_letters WHERE id = ?", (dead_id,)
            ).rowcount > 0

        return await self.db.transact(run)

    async def dead_letter_count(self, kind: str | None = None) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute(
                "SELECT count(*) FROM outbox_dead_letters WHERE ? IS NULL OR kind = ?",
                (kind, kind),
            ).fetchone()[0])

        return await self.db.read(run)
