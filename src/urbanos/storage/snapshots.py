"""Where snapshots (clause 5.16) are kept: the SnapshotStore interface and every backend.

A snapshot is its resource document (``services.snapshots``) plus the frozen copy of the
entities its queries selected, in the stored form (``core.model``). The copy is written
with the document when the snapshot is filled and never changes; the document alone is
replaced on updates. SQLite keeps them in the entity store's file, PostgreSQL in the
catalog schema (migration catalog/0005), the memory store in dicts. Bound parameters only.
"""

from __future__ import annotations

import copy
import sqlite3
from typing import TYPE_CHECKING, Protocol

import orjson
from psycopg.types.json import Json, Jsonb

from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.storage.postgres.database import Database as PgDatabase
    from urbanos.storage.sqlite.database import Database

__all__ = ["MemorySnapshotStore", "SnapshotStore", "snapshot_store_for"]


class SnapshotStore(Protocol):
    async def open(self) -> None: ...

    async def put(self, tenant: str, doc: JSONObject,
                  entities: list[JSONObject] | None = None) -> None:
        """Insert or replace the document; ``entities`` (the frozen copy) when given."""
        ...

    async def get(self, tenant: str, snapshot_id: str) -> JSONObject | None: ...

    async def entities(self, tenant: str, snapshot_id: str) -> list[JSONObject] | None: ...

    async def all(self, tenant: str) -> list[JSONObject]:
        """Every document of the tenant, in creation order."""
        ...

    async def delete(self, tenant: str, snapshot_id: str) -> bool: ...


class MemorySnapshotStore:
    def __init__(self) -> None:
        self._docs: dict[tuple[str, str], JSONObject] = {}
        self._entities: dict[tuple[str, str], list[JSONObject]] = {}

    async def open(self) -> None:
        return None

    async def put(self, tenant: str, doc: JSONObject,
                  entities: list[JSONObject] | None = None) -> None:
        key = (tenant, doc["id"])
        self._docs[key] = copy.deepcopy(doc)
        if entities is not None or key not in self._entities:
            self._entities[key] = copy.deepcopy(entities or [])

    async def get(self, tenant: str, snapshot_id: str) -> JSONObject | None:
        found = self._docs.get((tenant, snapshot_id))
        return copy.deepcopy(found) if found is not None else None

    async def entities(self, tenant: str, snapshot_id: str) -> list[JSONObject] | None:
        found = self._entities.get((tenant, snapshot_id))
        return copy.deepcopy(found) if found is not None else None

    async def all(self, tenant: str) -> list[JSONObject]:
        return [copy.deepcopy(d) for (t, _), d in self._docs.items() if t == tenant]

    async def delete(self, tenant: str, snapshot_id: str) -> bool:
        self._entities.pop((tenant, snapshot_id), None)
        return self._docs.pop((tenant, snapshot_id), None) is not None


_SQLITE_SCHEMA = """CREATE TABLE IF NOT EXISTS snapshots (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, id TEXT NOT NULL,
    doc TEXT NOT NULL, entities BLOB NOT NULL DEFAULT '[]', UNIQUE (tenant, id))"""


class SqliteSnapshotStore:
    """In the SQLite file of the entity store (shares its ``Database``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.transact(lambda conn: conn.execute(_SQLITE_SCHEMA))

    async def put(self, tenant: str, doc: JSONObject,
                  entities: list[JSONObject] | None = None) -> None:
        text = orjson.dumps(doc).decode()

        def run(conn: sqlite3.Connection) -> None:
            if entities is None:
                conn.execute(
                    """INSERT INTO snapshots (tenant, id, doc) VALUES (?, ?, ?)
                       ON CONFLICT (tenant, id) DO UPDATE SET doc = excluded.doc""",
                    (tenant, doc["id"], text),
                )
            else:
                conn.execute(
                    """INSERT INTO snapshots (tenant, id, doc, entities) VALUES (?, ?, ?, ?)
                       ON CONFLICT (tenant, id) DO UPDATE
                       SET doc = excluded.doc, entities = excluded.entities""",
                    (tenant, doc["id"], text, orjson.dumps(entities)),
                )

        await self.db.transact(run)

    async def get(self, tenant: str, snapshot_id: str) -> JSONObject | None:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT doc FROM snapshots WHERE tenant = ? AND id = ?", (tenant, snapshot_id)
        ).fetchone())
        return orjson.loads(row[0]) if row else None

    async def entities(self, tenant: str, snapshot_id: str) -> list[JSONObject] | None:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT entities FROM snapshots WHERE tenant = ? AND id = ?",
            (tenant, snapshot_id),
        ).fetchone())
        return orjson.loads(row[0]) if row else None

    async def all(self, tenant: str) -> list[JSONObject]:
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT doc FROM snapshots WHERE tenant = ? ORDER BY seq", (tenant,)
        ).fetchall())
        return [orjson.loads(doc) for (doc,) in rows]

    async def delete(self, tenant: str, snapshot_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM snapshots WHERE tenant = ? AND id = ?", (tenant, snapshot_id)
            )
            return cur.rowcount > 0

        return await self.db.transact(run)


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


def snapshot_store_for(entity_store: object) -> SnapshotStore:
    """The snapshot store beside an entity store: its SQLite file, its PostgreSQL database
    (catalog schema), memory otherwise."""
    from urbanos.storage.postgres import PostgresStore
    from urbanos.storage.sqlite import SqliteStore

    if isinstance(entity_store, SqliteStore):
        return SqliteSnapshotStore(entity_store.db)
    if isinstance(entity_store, PostgresStore):
        return PostgresSnapshotStore(entity_store.db)
    return MemorySnapshotStore()
