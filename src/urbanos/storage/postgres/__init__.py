"""PostgreSQL + PostGIS behind the EntityStore interface, for several broker nodes.

``database`` owns the pool and the migrations; ``entities`` holds the entity SQL and
``filters`` turns query parts into SQL conditions. Each tenant lives in its own schema,
created (with its migrations) inside the first write transaction that needs it, so a new
tenant appears on every node without a restart.

Writes take a transaction-scoped advisory lock per entity id (sorted, so two batches never
deadlock) before reading the rows ``FOR UPDATE``: read-modify-writes from any number of
nodes are serialised per entity, including ids that do not exist yet. A plan that writes
ids it did not ask for makes its transaction roll back and take every lock again, sorted. Work that must commit
with an entity write (history, the notification outbox) registers in
``PostgresStore.write_hooks``: each hook is awaited inside the write transaction with
``(conn, tenant, writes)``, ``search_path`` set to the tenant's schema and then ``public``.
Other PostgreSQL stores (``PostgresStore.contexts`` among them) share ``PostgresStore.db``
and add their tables as numbered files in ``migrations/``. ``try_lead`` elects one node
per cluster-wide job (``listen.PostgresNode.try_lead``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import AsyncConnection

from urbanos.core.selection import EntityQuery
from urbanos.storage.base import DEFAULT_TENANT, AttributeInfo, Page, Plan, T, TypeInfo, Write
from urbanos.storage.postgres import entities, listen
from urbanos.storage.postgres.contexts import PostgresContextStore
from urbanos.storage.postgres.database import Database, DatabaseUnavailable, set_search_path
from urbanos.storage.postgres.statistics import Statistics
from urbanos.types import JSONObject

__all__ = ["DEFAULT_SCHEMA", "PostgresStore", "WriteHook", "schema_name"]

#: awaited inside the write transaction after the entity rows are written
WriteHook = Callable[[AsyncConnection, str, list[Write]], Awaitable[None]]
DEFAULT_SCHEMA = "tenant_default"


def schema_name(tenant: str) -> str:
    """The schema of a tenant: readable, at most 63 bytes, distinct per tenant name.

    Any NGSILD-Tenant value is accepted; the hash keeps names that fold to the same
    slug apart, and the name is always quoted as an identifier, never interpolated.
    """
    if tenant == DEFAULT_TENANT:
        return DEFAULT_SCHEMA
    slug = re.sub(r"[^a-z0-9]+", "_", tenant.lower()).strip("_")[:40]
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:12]
    return f"t_{slug}_{digest}" if slug else f"t_{digest}"


def _lock_keys(schema: str, ids: list[str]) -> list[int]:
    """One advisory lock key per entity id, identical on every node, in one global order."""
    keys = {
        int.from_bytes(
            hashlib.blake2b(f"{schema}\0{i}".encode(), digest_size=8).digest(), "big", signed=True
        )
        for i in ids
    }
    return sorted(keys)


async def _tenants(conn: AsyncConnection) -> dict[str, str]:
    cur = await conn.execute("SELECT name, schema FROM urbanos.tenants")
    return dict(await cur.fetchall())


class _Relock(Exception):
    """A plan wrote ids whose locks its transaction did not take first."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(ids)
        self.ids = ids


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.db = Database(url, max_size=pool_size)
        self.write_hooks: list[WriteHook] = []
        self._schemas: dict[str, str] = {}
        self.contexts = PostgresContextStore(self)
        self.statistics = Statistics(self.db)

    async def open(self) -> None:
        await self.db.open()
        async with self.db.transaction() as conn:
            await self._ensure(conn, DEFAULT_TENANT)
        await self._refresh()

    async def close(self) -> None:
        await listen.node_for(self).stop()  # its sessions end: locks and leadership go
        await self.statistics.close()
        await self.db.close()

    async def try_lead(self, name: str) -> bool:
        return await listen.node_for(self).try_lead(name)

    async def ping(self) -> bool:
        """Whether the database answers within a few seconds (health checks must not hang)."""
        try:
            async with self.db.connection(timeout=5) as conn:
                cur = await conn.execute("SELECT 1")
                row = await cur.fetchone()
        except (psycopg.Error, DatabaseUnavailable):
            return False
        return row is not None and row[0] == 1

    async def _refresh(self) -> None:
        self._schemas = await self.db.read(_tenants)

    async def _schema(self, tenant: str) -> str | None:
        """The tenant's schema from the cache; a miss re-reads the catalog (another node
        may have created the tenant since)."""
        if tenant not in self._schemas:
            await self._refresh()
        return self._schemas.get(tenant)

    async def tenant_exists(self, tenant: str) -> bool:
        return await self._schema(tenant) is not None

    async def _ensure(self, conn: AsyncConnection, tenant: str) -> str:
        """The tenant's schema, created with its migrations in this transaction if new.

        The cache learns a new tenant only after the transaction commits (``_created``).
        """
        if (known := self._schemas.get(tenant)) is not None:
            return known
        lookup = "SELECT schema FROM urbanos.tenants WHERE name = %s"
        row = await (await conn.execute(lookup, (tenant,))).fetchone()
        if row is None:
            await self.db.lock_ddl(conn)  # then look again: another node may have won
            row = await (await conn.execute(lookup, (tenant,))).fetchone()
        if row is not None:
            return str(row[0])
        schema = schema_name(tenant)
        await self.db.migrate_tenant(conn, schema)
        await conn.execute(
            "INSERT INTO urbanos.tenants (name, schema) VALUES (%s, %s)", (tenant, schema)
        )
        return schema

    async def get(self, tenant: str, entity_id: str) -> JSONObject | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        return await self.db.read(lambda conn: entities.get(conn, schema, entity_id))

    async def get_many(self, tenant: str, ids: list[str]) -> dict[str, JSONObject]:
        schema = await self._schema(tenant)
        if schema is None or not ids:
            return {}
        return await self.db.read(lambda conn: entities.get_many(conn, schema, ids))

    async def _begin_write(self, conn: AsyncConnection, tenant: str, ids: list[str]) -> str:
        schema = await self._ensure(conn, tenant)
        if self.write_hooks:
            await set_search_path(conn, schema)
        await conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k",
            (_lock_keys(schema, ids),),
        )
        return schema

    async def _write(
        self, conn: AsyncConnection, schema: str, tenant: str, writes: list[Write]
    ) -> None:
        await entities.write(conn, schema, writes)
        for hook in self.write_hooks:
            await hook(conn, tenant, writes)

    async def apply(self, tenant: str, writes: list[Write]) -> None:
        if not writes:
            return
        async with self.db.transaction() as conn:
            schema = await self._begin_write(conn, tenant, [w.entity_id for w in writes])
            await self._write(conn, schema, tenant, writes)
        self._schemas[tenant] = schema
        self.statistics.wrote(schema, len(writes))

    async def modify(self, tenant: str, ids: list[str], plan: Plan[T]) -> T:
        if await self._schema(tenant) is None:
            writes, result = plan({})  # pure: decide whether the tenant must appear at all
            if not writes:
                return result
        locked = list(ids)
        while True:
            try:
                async with self.db.transaction() as conn:
                    schema = await self._begin_write(conn, tenant, locked)
                    current = await entities.get_many(conn, schema, ids, for_update=True)
                    writes, result = plan(current)
                    taken = set(locked)
                    extra = list(dict.fromkeys(
                        w.entity_id for w in writes if w.entity_id not in taken))
                    if extra:
                        raise _Relock(extra)
                    if writes:
                        await self._write(conn, schema, tenant, writes)
            except _Relock as more:
                # a plan writing ids it did not ask for serialises on them too: locking
                # them now, after the others, would break the one global order; roll
                # back and take every lock again, sorted (the plan is pure: run it again)
                locked.extend(more.ids)
                continue
            break
        self._schemas[tenant] = schema
        self.statistics.wrote(schema, len(writes))
        return result

    async def query(self, tenant: str, query: EntityQuery) -> Page:
        schema = await self._schema(tenant)
        if schema is None:
            return Page([], 0 if query.count else None)
        return await self.db.read(lambda conn: entities.query(conn, schema, query))

    async def expiring(self, now: str, limit: int) -> list[tuple[str, str]]:
        await self._refresh()  # tenants other nodes created count too
        out: list[tuple[str, str]] = []
        async with self.db.connection() as conn:
            for tenant, schema in sorted(self._schemas.items()):
                if len(out) >= limit:
                    break
                ids = await entities.expiring(conn, schema, now, limit - len(out))
                out.extend((tenant, eid) for eid in ids)
        return out

    async def types(self, tenant: str) -> list[TypeInfo]:
        schema = await self._schema(tenant)
        if schema is None:
            return []
        return await self.db.read(lambda conn: entities.types(conn, schema))

    async def attributes(self, tenant: str) -> list[AttributeInfo]:
        schema = await self._schema(tenant)
        if schema is None:
            return []
        return await self.db.read(lambda conn: entities.attributes(conn, schema))
