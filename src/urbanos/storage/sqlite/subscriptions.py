"""Subscriptions in the SQLite file of the entity store (shares its ``Database``).

One row per subscription: the document as JSON, and the delivery counters in their own
columns, so counting a delivery never rewrites (or races with) the document. ``seq`` keeps
creation order for paging. ``kind`` tells entity subscriptions from context source
registration subscriptions (``storage.subscriptions``); files from before it get the
column at open, their rows being entity subscriptions. Bound parameters only.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from urbanos.core.subscription import DeliveryStats
from urbanos.errors import AlreadyExists
from urbanos.storage.sqlite.database import Database
from urbanos.storage.subscriptions import ENTITY, StoredSubscription
from urbanos.types import JSONObject

__all__ = ["SCHEMA", "SqliteSubscriptionStore"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS subscriptions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        doc TEXT NOT NULL,
        times_sent INTEGER NOT NULL DEFAULT 0,
        times_failed INTEGER NOT NULL DEFAULT 0,
        last_notification TEXT,
        last_success TEXT,
        last_failure TEXT,
        last_status TEXT,
        last_error TEXT,
        kind TEXT NOT NULL DEFAULT 'entity',
        UNIQUE (tenant, id)
    )""",
]
_COLUMNS = ("tenant, doc, times_sent, times_failed, last_notification, last_success, "
            "last_failure, last_status")


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _row(row: tuple[Any, ...]) -> StoredSubscription:
    tenant, doc, sent, failed, last, success, failure, status = row
    stats = DeliveryStats(
        times_sent=int(sent), times_failed=int(failed), last_notification=_text(last),
        last_success=_text(success), last_failure=_text(failure), status=_text(status),
    )
    return StoredSubscription(str(tenant), orjson.loads(doc), stats)


class SqliteSubscriptionStore:
    def __init__(self, db: Database, kind: str = ENTITY) -> None:
        self.db = db
        self.kind = kind

    def of_kind(self, kind: str) -> SqliteSubscriptionStore:
        return SqliteSubscriptionStore(self.db, kind)

    async def open(self) -> None:
        """Create the table (or add the kind column to one of an earlier version); the
        Database itself is opened by the entity store."""

        def migrate(conn: sqlite3.Connection) -> None:
            for stmt in SCHEMA:
                conn.execute(stmt)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(subscriptions)")}
            if "kind" not in columns:
                conn.execute("ALTER TABLE subscriptions ADD COLUMN kind TEXT NOT NULL"
                             " DEFAULT 'entity'")

        await self.db.transact(migrate)

    async def close(self) -> None:
        return None

    async def insert(self, tenant: str, doc: JSONObject) -> None:
        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO subscriptions (tenant, id, doc, kind) VALUES (?, ?, ?, ?)",
                    (tenant, doc["id"], orjson.dumps(doc).decode(), self.kind),
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"subscription {doc['id']} already exists") from exc

        await self.db.transact(run)

    async def replace(self, tenant: str, doc: JSONObject) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE subscriptions SET doc = ? WHERE tenant = ? AND id = ? AND kind = ?",
                (orjson.dumps(doc).decode(), tenant, doc["id"], self.kind),
            )
            return cur.rowcount > 0

        return await self.db.transact(run)

    async def delete(self, tenant: str, subscription_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM subscriptions WHERE tenant = ? AND id = ? AND kind = ?",
                (tenant, subscription_id, self.kind),
            )
            return cur.rowcount > 0

        return await self.db.transact(run)

    async def get(self, tenant: str, subscription_id: str) -> StoredSubscription | None:
        def run(conn: sqlite3.Connection) -> StoredSubscription | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM subscriptions"  # noqa: S608
                " WHERE tenant = ? AND id = ? AND kind = ?",
                (tenant, subscription_id, self.kind),
            ).fetchone()
            return _row(row) if row else None

        return await self.db.read(run)

    async def page(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[StoredSubscription], int]:
        def run(conn: sqlite3.Connection) -> tuple[list[StoredSubscription], int]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM subscriptions WHERE tenant = ?"  # noqa: S608
                " AND kind = ? ORDER BY seq LIMIT ? OFFSET ?",
                (tenant, self.kind, limit, offset),
            ).fetchall()
            total = conn.execute(
                "SELECT COUNT(*) FROM subscriptions WHERE tenant = ? AND kind = ?",
                (tenant, self.kind),
            ).fetchone()[0]
            return [_row(r) for r in rows], int(total)

        return await self.db.read(run)

    async def load(self, tenant: str | None = None) -> list[StoredSubscription]:
        def run(conn: sqlite3.Connection) -> list[StoredSubscription]:
            if tenant is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM subscriptions WHERE kind = ?"  # noqa: S608
                    " ORDER BY seq",
                    (self.kind,),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM subscriptions WHERE tenant = ?"  # noqa: S608
                    " AND kind = ? ORDER BY seq",
                    (tenant, self.kind),
                ).fetchall()
            return [_row(r) for r in rows]

        return await self.db.read(run)

    async def record_delivery(
        self, tenant: str, subscription_id: str, *, ok: bool, at: str, error: str | None
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if ok:
                conn.execute(
                    "UPDATE subscriptions SET times_sent = times_sent + 1,"
                    " last_notification = ?, last_success = ?, last_status = 'ok'"
                    " WHERE tenant = ? AND id = ?",
                    (at, at, tenant, subscription_id),
                )
            else:
                conn.execute(
                    "UPDATE subscriptions SET times_sent = times_sent + 1,"
                    " times_failed = times_failed + 1, last_notification = ?,"
                    " last_failure = ?, last_status = 'failed', last_error = ?"
                    " WHERE tenant = ? AND id = ?",
                    (at, at, error, tenant, subscription_id),
                )

        await self.db.transact(run)
