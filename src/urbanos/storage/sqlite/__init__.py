"""The embedded store: SQLite in WAL mode behind the EntityStore interface.

``database`` owns connections and the group-committing writer; ``entities`` holds the entity
SQL, ``contexts`` the @context registry (``SqliteStore.contexts``). Work that must happen
in the same transaction as an entity write (history, the notification outbox) registers in
``SqliteStore.write_hooks``; other stores (temporal, subscriptions, outbox) share
``SqliteStore.db`` and create their own tables on open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson

from urbanos.core.selection import EntityQuery
from urbanos.storage.base import DEFAULT_TENANT, AttributeInfo, Page, Plan, T, TypeInfo, Write
from urbanos.storage.sqlite import contexts, entities
from urbanos.storage.sqlite.database import Database
from urbanos.storage.sqlite.names import Names
from urbanos.types import JSONObject

#: called inside the write transaction after the entity rows are written
WriteHook = Callable[[sqlite3.Connection, str, list[Write]], None]
SCHEMA: list[str] = [
    "CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY)",
    *entities.SCHEMA,
    *contexts.SCHEMA,
]


class SqliteStore:
    def __init__(self, path: str | Path, *, readers: int = 4, synchronous: str = "full") -> None:
        self.db = Database(path, readers=readers, synchronous=synchronous)
        self.contexts = contexts.SqliteContextStore(self.db)
        self.write_hooks: list[WriteHook] = []
        self._probe_counts = entities.ProbeCounts()  # shared by the reader threads
        self._tenants: set[str] = {DEFAULT_TENANT}
        self.names = Names()  # the writer thread's, shared with the history store
        self.db.on_commit.append(self.names.committed)
        self.db.on_rollback.append(self.names.rolled_back)

    async def open(self) -> None:
        await self.db.open(SCHEMA)
        await self.db.transact(entities.upgrade)

        def tenants(conn: sqlite3.Connection) -> set[str]:
            conn.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (DEFAULT_TENANT,))
            return {r[0] for r in conn.execute("SELECT name FROM tenants")}

        self._tenants |= await self.db.transact(tenants)

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> bool:
        return await self.db.read(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)

    async def try_lead(self, name: str) -> bool:
        return True  # one file, one process: it leads everything

    async def tenant_exists(self, tenant: str) -> bool:
        return tenant in self._tenants

    async def get(self, tenant: str, entity_id: str) -> JSONObject | None:
        def run(conn: sqlite3.Connection) -> JSONObject | None:
            row = conn.execute(
                "SELECT doc FROM entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
            ).fetchone()
            return orjson.loads(row[0]) if row else None

        return self.db.read_now(run)

    async def get_many(self, tenant: str, ids: list[str]) -> dict[str, JSONObject]:
        return await self.db.read(lambda conn: entities.get_many(conn, tenant, ids))

    def _write(self, conn: sqlite3.Connection, tenant: str, writes: list[Write]) -> None:
        if not writes:
            return
        if tenant not in self._tenants:
            conn.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (tenant,))
        for w in writes:
            if w.op == "put":
                assert w.entity is not None
                entities.put(conn, self.names, tenant, w.entity)
            else:
                entities.delete(conn, tenant, w.entity_id)
        for hook in self.write_hooks:
            hook(conn, tenant, writes)

    async def apply(self, tenant: str, writes: list[Write]) -> None:
        await self.db.transact(lambda conn: self._write(conn, tenant, writes))
        if writes:
            self._tenants.add(tenant)

    async def modify(self, tenant: str, ids: list[str], plan: Plan[T]) -> T:
        def run(conn: sqlite3.Connection) -> tuple[T, bool]:
            writes, result = plan(entities.get_many(conn, tenant, ids))
            self._write(conn, tenant, writes)
            return result, bool(writes)

        result, wrote = await self.db.transact(run)
        if wrote:
            self._tenants.add(tenant)
        return result

    async def query(self, tenant: str, query: EntityQuery) -> Page:
        return await self.db.read(
            lambda conn: entities.query(conn, tenant, query, self._probe_counts)
        )

    async def expiring(self, now: str, limit: int) -> list[tuple[str, str]]:
        return await self.db.read(lambda conn: entities.expiring(conn, now, limit))

    async def types(self, tenant: str) -> list[TypeInfo]:
        return await self.db.read(lambda conn: entities.types(conn, tenant))

    async def attributes(self, tenant: str) -> list[AttributeInfo]:
        return await self.db.read(lambda conn: entities.attributes(conn, tenant))
