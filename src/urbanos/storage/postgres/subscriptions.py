"""Subscriptions in PostgreSQL (``urbanos.subscriptions``, catalog migrations 0001, 0010).

Same rows as the SQLite store: the document, and the delivery counters in their own
columns. Every insert, replace and delete also NOTIFYs ``urbanos_subscriptions`` in its own
transaction, so the other nodes drop their index of that tenant once it has committed
(``listen.PostgresNode``; the app lifespan wires the handler). ``kind`` tells entity
subscriptions from context source registration subscriptions (``storage.subscriptions``).
Bound parameters only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Json

from urbanos.core.subscription import DeliveryStats
from urbanos.errors import AlreadyExists
from urbanos.storage.postgres.listen import (
    SUBSCRIPTIONS_CHANNEL,
    node_for,
    subscription_payload,
)
from urbanos.storage.subscriptions import ENTITY, StoredSubscription
from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.storage.postgres import PostgresStore

__all__ = ["PostgresSubscriptionStore"]

_SELECT = (
    "SELECT tenant, doc, times_sent, times_failed, last_notification, last_success,"
    " last_failure, last_status FROM urbanos.subscriptions"
)


def _row(row: tuple[Any, ...]) -> StoredSubscription:
    tenant, doc, sent, failed, last, success, failure, status = row
    stats = DeliveryStats(
        times_sent=int(sent), times_failed=int(failed), last_notification=last,
        last_success=success, last_failure=failure, status=status,
    )
    return StoredSubscription(str(tenant), doc, stats)


class PostgresSubscriptionStore:
    """Shares the entity store's pool; its table comes with the catalog migrations."""

    def __init__(self, store: PostgresStore, kind: str = ENTITY) -> None:
        self.store = store
        self.db = store.db
        self.node = node_for(store)
        self.kind = kind

    def of_kind(self, kind: str) -> PostgresSubscriptionStore:
        return PostgresSubscriptionStore(self.store, kind)

    async def open(self) -> None:
        return None  # the catalog migrations ran when the entity store opened

    async def close(self) -> None:
        return None

    async def _announce(self, conn: AsyncConnection, tenant: str) -> None:
        """Delivered to every listening node when (and only if) the transaction commits."""
        await conn.execute(
            "SELECT pg_notify(%s, %s)",
            (SUBSCRIPTIONS_CHANNEL, subscription_payload(self.node.node_id, tenant)),
        )

    async def insert(self, tenant: str, doc: JSONObject) -> None:
        try:
            async with self.db.transaction() as conn:
                await conn.execute(
                    "INSERT INTO urbanos.subscriptions (tenant, id, doc, kind)"
                    " VALUES (%s, %s, %s, %s)",
                    (tenant, doc["id"], Json(doc), self.kind),
                )
                await self._announce(conn, tenant)
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists(f"subscription {doc['id']} already exists") from exc

    async def replace(self, tenant: str, doc: JSONObject) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE urbanos.subscriptions SET doc = %s"
                " WHERE tenant = %s AND id = %s AND kind = %s",
                (Json(doc), tenant, doc["id"], self.kind),
            )
            if cur.rowcount > 0:
                await self._announce(conn, tenant)
            return cur.rowcount > 0

    async def delete(self, tenant: str, subscription_id: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM urbanos.subscriptions WHERE tenant = %s AND id = %s AND kind = %s",
                (tenant, subscription_id, self.kind),
            )
            if cur.rowcount > 0:
                await self._announce(conn, tenant)
            return cur.rowcount > 0

    async def get(self, tenant: str, subscription_id: str) -> StoredSubscription | None:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                _SELECT + " WHERE tenant = %s AND id = %s AND kind = %s",
                (tenant, subscription_id, self.kind),
            )
            row = await cur.fetchone()
        return _row(row) if row else None

    async def page(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[StoredSubscription], int]:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                _SELECT + " WHERE tenant = %s AND kind = %s ORDER BY seq LIMIT %s OFFSET %s",
                (tenant, self.kind, limit, offset),
            )
            rows = await cur.fetchall()
            cur = await conn.execute(
                "SELECT count(*) FROM urbanos.subscriptions WHERE tenant = %s AND kind = %s",
                (tenant, self.kind),
            )
            total = await cur.fetchone()
        return [_row(r) for r in rows], int(total[0]) if total else 0

    async def load(self, tenant: str | None = None) -> list[StoredSubscription]:
        async with self.db.connection() as conn:
            if tenant is None:
                cur = await conn.execute(_SELECT + " WHERE kind = %s ORDER BY seq", (self.kind,))
            else:
                cur = await conn.execute(_SELECT + " WHERE tenant = %s AND kind = %s ORDER BY seq",
                                         (tenant, self.kind))
            rows = await cur.fetchall()
        return [_row(r) for r in rows]

    async def record_delivery(
        self, tenant: str, subscription_id: str, *, ok: bool, at: str, error: str | None
    ) -> None:
        async with self.db.connection() as conn:
            if ok:
                await conn.execute(
                    "UPDATE urbanos.subscriptions SET times_sent = times_sent + 1,"
                    " last_notification = %s, last_success = %s, last_status = 'ok'"
                    " WHERE tenant = %s AND id = %s",
                    (at, at, tenant, subscription_id),
                )
            else:
                await conn.execute(
                    "UPDATE urbanos.subscriptions SET times_sent = times_sent + 1,"
                    " times_failed = times_failed + 1, last_notification = %s,"
                    " last_failure = %s, last_status = 'failed', last_error = %s"
                    " WHERE tenant = %s AND id = %s",
                    (at, at, error, tenant, subscription_id),
                )
