"""Context source registrations in PostgreSQL (``urbanos.registrations``, catalog migration
0009), one table for every node of the database.

Same rows as the SQLite store: the document, and the counters of forwarded requests in
their own columns. Every insert, replace and delete that changed something also NOTIFYs
``urbanos_registrations`` in its own transaction, so the other nodes drop what they derived
from that tenant's registrations once it has committed. Counting a request announces
nothing: it changes no registration's matching. Bound parameters only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from urbanos.errors import AlreadyExists, BadRequestData
from urbanos.storage.postgres.entities import has_nul
from urbanos.storage.postgres.listen import REGISTRATIONS_CHANNEL, announcement, node_for
from urbanos.storage.registrations import RegistrationUse, with_use, without_use
from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.storage.postgres import PostgresStore

__all__ = ["PostgresRegistrationStore"]

_SELECT = (
    "SELECT doc, times_sent, times_failed, last_success, last_failure, status"
    " FROM urbanos.registrations WHERE tenant = %s"
)


def _row(row: tuple[Any, ...]) -> JSONObject:
    doc, sent, failed, success, failure, status = row
    return with_use(dict(doc), RegistrationUse(int(sent), int(failed), success, failure, status))


class PostgresRegistrationStore:
    """Shares the entity store's pool; its table comes with the catalog migrations."""

    def __init__(self, store: PostgresStore) -> None:
        self.db = store.db
        self.node = node_for(store)

    async def open(self) -> None:
        return None  # the catalog migrations ran when the entity store opened

    async def close(self) -> None:
        return None

    async def _announce(self, conn: AsyncConnection, tenant: str) -> None:
        """Delivered to every listening node when (and only if) the transaction commits."""
        await conn.execute(
            "SELECT pg_notify(%s, %s)",
            (REGISTRATIONS_CHANNEL, announcement(self.node.node_id, tenant)),
        )

    async def insert(self, tenant: str, doc: JSONObject) -> None:
        try:
            async with self.db.transaction() as conn:
                await conn.execute(
                    "INSERT INTO urbanos.registrations (tenant, id, doc) VALUES (%s, %s, %s)",
                    (tenant, doc["id"], Jsonb(without_use(doc))),
                )
                await self._announce(conn, tenant)
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists(f"registration {doc['id']} already exists") from exc
        except psycopg.DataError as exc:
            _refuse_nul(doc, exc)
            raise

    async def replace(self, tenant: str, doc: JSONObject) -> bool:
        try:
            async with self.db.transaction() as conn:
                cur = await conn.execute(
                    "UPDATE urbanos.registrations SET doc = %s WHERE tenant = %s AND id = %s",
                    (Jsonb(without_use(doc)), tenant, doc["id"]),
                )
                if cur.rowcount > 0:
                    await self._announce(conn, tenant)
                return cur.rowcount > 0
        except psycopg.DataError as exc:
            _refuse_nul(doc, exc)
            raise

    async def delete(self, tenant: str, registration_id: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM urbanos.registrations WHERE tenant = %s AND id = %s",
                (tenant, registration_id),
            )
            if cur.rowcount > 0:
                await self._announce(conn, tenant)
            return cur.rowcount > 0

    async def get(self, tenant: str, registration_id: str) -> JSONObject | None:
        async with self.db.connection() as conn:
            cur = await conn.execute(_SELECT + " AND id = %s", (tenant, registration_id))
            row = await cur.fetchone()
        return _row(row) if row else None

    async def all(self, tenant: str) -> list[JSONObject]:
        async with self.db.connection() as conn:
            cur = await conn.execute(_SELECT + " ORDER BY seq", (tenant,))
            rows = await cur.fetchall()
        return [_row(r) for r in rows]

    async def page(self, tenant: str, limit: int, offset: int) -> tuple[list[JSONObject], int]:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                _SELECT + " ORDER BY seq LIMIT %s OFFSET %s", (tenant, limit, offset)
            )
            rows = await cur.fetchall()
            cur = await conn.execute(
                "SELECT count(*) FROM urbanos.registrations WHERE tenant = %s", (tenant,)
            )
            total = await cur.fetchone()
        return [_row(r) for r in rows], int(total[0]) if total else 0

    async def record_use(self, tenant: str, registration_id: str, use: RegistrationUse) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE urbanos.registrations SET times_sent = times_sent + %s,"
                " times_failed = times_failed + %s,"
                " last_success = COALESCE(%s, last_success),"
                " last_failure = COALESCE(%s, last_failure), status = COALESCE(%s, status)"
                " WHERE tenant = %s AND id = %s",
                (use.times_sent, use.times_failed, use.last_success, use.last_failure,
                 use.status, tenant, registration_id),
            )


def _refuse_nul(doc: JSONObject, exc: Exception) -> None:
    """A string holding U+0000 (JSON allows it, PostgreSQL text does not) is bad request
    data, not a server error."""
    if has_nul(doc):
        raise BadRequestData("strings containing the character U+0000 cannot be stored") from exc
