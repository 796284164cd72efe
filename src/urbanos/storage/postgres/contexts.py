"""The @context registry in PostgreSQL (``urbanos.jsonld_contexts``, catalog migration 0004).

Every write (add, cache, delete) NOTIFYs ``urbanos_contexts`` with the tenant in its own
transaction, so the other nodes reload their cache of that tenant once it has committed
(``listen.PostgresNode``; the app lifespan wires the handler). Counting uses does not
announce anything: counts are read from the table when asked for. Bound parameters only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg.types.json import Json

from urbanos.storage.base import ContextEntry, ContextUse
from urbanos.storage.postgres.listen import CONTEXTS_CHANNEL, announcement, node_for

if TYPE_CHECKING:
    from urbanos.storage.postgres import PostgresStore

__all__ = ["PostgresContextStore"]

_COLUMNS = "tenant, local_id, kind, document, created_at, url, expires_at, last_usage, hits, key"
_SELECT = f"SELECT {_COLUMNS} FROM urbanos.jsonld_contexts"
_INSERT = (
    f"INSERT INTO urbanos.jsonld_contexts ({_COLUMNS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _row(row: tuple[Any, ...]) -> tuple[str, ContextEntry]:
    tenant, local_id, kind, document, created, url, expires, last, hits, key = row
    entry = ContextEntry(
        local_id=local_id, kind=kind, document=document, created_at=created, url=url,
        expires_at=expires, last_usage=last, hits=int(hits),
        key=bytes(key) if key is not None else None,
    )
    return str(tenant), entry


def _values(tenant: str, e: ContextEntry) -> tuple[Any, ...]:
    return (tenant, e.local_id, e.kind, Json(e.document), e.created_at, e.url, e.expires_at,
            e.last_usage, e.hits, e.key)


class PostgresContextStore:
    """Shares the entity store's pool; its table comes with the catalog migrations."""

    def __init__(self, store: PostgresStore) -> None:
        self.db = store.db
        self._store = store

    async def _announce(self, conn: AsyncConnection, tenant: str) -> None:
        """Delivered to every listening node (this one too) once the transaction commits."""
        node = node_for(self._store)
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (CONTEXTS_CHANNEL, announcement(node.node_id, tenant))
        )

    async def load(self, tenant: str | None = None) -> list[tuple[str, ContextEntry]]:
        async with self.db.connection() as conn:
            if tenant is None:
                cur = await conn.execute(_SELECT)
            else:
                cur = await conn.execute(_SELECT + " WHERE tenant = %s", (tenant,))
            return [_row(r) for r in await cur.fetchall()]

    async def get(self, tenant: str, local_id: str) -> ContextEntry | None:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                _SELECT + " WHERE tenant = %s AND local_id = %s", (tenant, local_id)
            )
            row = await cur.fetchone()
        return _row(row)[1] if row else None

    async def add(self, tenant: str, entry: ContextEntry) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(_INSERT, _values(tenant, entry))
            await self._announce(conn, tenant)

    async def cache(self, tenant: str, entry: ContextEntry) -> ContextEntry:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                _INSERT + """ ON CONFLICT (tenant, url) WHERE kind = 'Cached' DO UPDATE SET
                    document = EXCLUDED.document, created_at = EXCLUDED.created_at,
                    expires_at = EXCLUDED.expires_at
                RETURNING """ + _COLUMNS,
                _values(tenant, entry),
            )
            row = await cur.fetchone()
            await self._announce(conn, tenant)
        assert row is not None
        return _row(row)[1]

    async def delete(self, tenant: str, local_id: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM urbanos.jsonld_contexts WHERE tenant = %s AND local_id = %s",
                (tenant, local_id),
            )
            if cur.rowcount == 0:
                return False
            await self._announce(conn, tenant)
        return True

    async def count_uses(self, uses: list[ContextUse]) -> None:
        if not uses:
            return
        async with self.db.transaction() as conn, conn.cursor() as cur:
            await cur.executemany(
                """UPDATE urbanos.jsonld_contexts SET hits = hits + %s,
                    last_usage = GREATEST(last_usage, %s)
                WHERE tenant = %s AND local_id = %s""",
                [(u.hits, u.last_usage, u.tenant, u.local_id)  # one row order on every node:
                 for u in sorted(uses, key=lambda u: (u.tenant, u.local_id))],  # no deadlock
            )
