"""Snapshots (clause 5.16) in the entity store's SQLite file."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import orjson

from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.storage.sqlite.database import Database

__all__ = ["SqliteSnapshotStore"]

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
