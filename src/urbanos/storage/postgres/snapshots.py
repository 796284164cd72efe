"""Snapshots (clause 5.16) in the PostgreSQL catalog schema (migration catalog/0006)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg.types.json import Json, Jsonb

from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.storage.postgres.database import Database as PgDatabase

__all__ = ["PostgresSnapshotStore"]


class PostgresSnapshotStore:
    """Shares the entity store's pool; its table comes with the catalog migrations."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def open(self) -> None:
        return None

    async def put(self, tenant: str, doc: JSONObject,
                  entities: list[JSONObject] | None = None) -> None:
        async with self.db.connection() as conn:
            if entities is None:
                await conn.execute(
                    """INSERT INTO urbanos.snapshots (tenant, id, doc) VALUES (%s, %s, %s)
                       ON CONFLICT (tenant, id) DO UPDATE SET doc = excluded.doc""",
                    (tenant, doc["id"], Json(doc)),
                )
            else:
                await conn.execute(
                    """INSERT INTO urbanos.snapshots (tenant, id, doc, entities)
                       VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, id) DO UPDATE
                       SET doc = excluded.doc, entities = excluded.entities""",
                    (tenant, doc["id"], Json(doc), Jsonb(entities)),
                )

    async def _one(self, column: str, tenant: str, snapshot_id: str) -> object:
        query = ("SELECT doc FROM urbanos.snapshots WHERE tenant = %s AND id = %s"
                 if column == "doc" else
                 "SELECT entities FROM urbanos.snapshots WHERE tenant = %s AND id = %s")
        async with self.db.connection() as conn:
            cur = await conn.execute(query, (tenant, snapshot_id))
            row = await cur.fetchone()
        return row[0] if row else None

    async def get(self, tenant: str, snapshot_id: str) -> JSONObject | None:
        found = await self._one("doc", tenant, snapshot_id)
        return found if isinstance(found, dict) else None

    async def entities(self, tenant: str, snapshot_id: str) -> list[JSONObject] | None:
        found = await self._one("entities", tenant, snapshot_id)
        return found if isinstance(found, list) else None

    async def all(self, tenant: str) -> list[JSONObject]:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT doc FROM urbanos.snapshots WHERE tenant = %s ORDER BY seq", (tenant,)
            )
            return [doc for (doc,) in await cur.fetchall()]

    async def delete(self, tenant: str, snapshot_id: str) -> bool:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM urbanos.snapshots WHERE tenant = %s AND id = %s",
                (tenant, snapshot_id),
            )
            return cur.rowcount > 0
