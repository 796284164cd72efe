"""PostgreSQL connections and schema migrations, shared by every PostgreSQL store.

One psycopg 3 async pool per process, connections in autocommit: a read is one statement,
a write is an explicit ``transaction()``. JSONB goes through orjson both ways.

Schemas: ``urbanos`` is the catalog (``tenants``, ``schema_migrations``); each tenant owns a
schema built from the numbered files ``migrations/NNNN_name.sql``, run in order with
``search_path`` set to that schema (then ``public``, where PostGIS lives), so the files use
unqualified names. Files in ``migrations/catalog/`` (subscriptions, outbox, temporal) run once, in ``urbanos``.
Connections the server dropped (a restart, a crash) never reach a request: the pool checks
each one before handing it out (an empty query, one round trip; the first failed check
checks every idle connection, so a restart costs one discard cycle, not one per connection),
and a read whose connection the server broke mid-statement runs once more on a fresh one
(``read``). A write is never run again: its commit outcome is unknown. A database that
cannot be reached, or went away mid-request, becomes ``DatabaseUnavailable`` (a
``ServiceUnavailable``: HTTP 503), logged once per outage rather than once per request.

Every schema change takes one transaction-scoped advisory lock, so nodes that start
together, or create the same tenant at the same moment, apply each migration once; each
applied file is recorded in ``urbanos.schema_migrations``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import select
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from urbanos.errors import ServiceUnavailable

log = logging.getLogger("urbanos.storage.postgres")
R = TypeVar("R")

#: seconds a request waits for a pooled connection before it is answered 503
ACQUIRE_TIMEOUT = 5.0
#: SQLSTATE classes of a connection the server ended: connection exception, operator
#: intervention (admin/crash shutdown, cannot connect now); 57014 (query canceled) is not one
_GONE_STATES = ("08", "57P")

CATALOG = "urbanos"
#: advisory lock key held by every transaction that changes schemas
DDL_LOCK = 0x75726261_6E6F7331  # "urbanos1"
MIGRATIONS = Path(__file__).with_name("migrations")
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_BOOTSTRAP = [
    "CREATE EXTENSION IF NOT EXISTS postgis",
    "CREATE SCHEMA IF NOT EXISTS urbanos",
    """CREATE TABLE IF NOT EXISTS urbanos.schema_migrations (
        schema text NOT NULL, version integer NOT NULL, name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (schema, version))""",
    """CREATE TABLE IF NOT EXISTS urbanos.tenants (
        name text PRIMARY KEY, schema text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now())""",
]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(folder: Path) -> list[Migration]:
    """The numbered ``.sql`` files of a folder, in order; a duplicate number is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
        m = _FILE.fullmatch(path.name)
        if m is None:
            raise RuntimeError(f"migration file {path.name!r}: expected NNNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise RuntimeError(f"two migrations numbered {version:04d} in {folder}")
        found[version] = Migration(version, m.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def _configure(conn: AsyncConnection) -> None:
    set_json_loads(orjson.loads, conn)
    set_json_dumps(orjson.dumps, conn)


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached, or the connection broke during the request."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server is unreachable or ended the session, as opposed to
    an error of the statement (constraint, deadlock, cancellation) on a live session."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith(_GONE_STATES)


class Database:
    """The pool, the migrations, and transactions with a tenant's ``search_path``."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self.url = url
        self.tenant_migrations = load_migrations(MIGRATIONS)
        self.catalog_migrations = load_migrations(MIGRATIONS / "catalog")
        self._pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max(min_size, max_size),
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 2},
            configure=_configure,
            check=self._check,
            timeout=ACQUIRE_TIMEOUT,
            name="urbanos",
        )
        self._down = False  # an outage was logged; the next success logs the recovery
        self._purge: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=30)
        async with self.transaction() as conn:
            await self.lock_ddl(conn)
            for stmt in _BOOTSTRAP:
                await conn.execute(stmt)
            await self._migrate(conn, CATALOG, self.catalog_migrations)
            cur = await conn.execute("SELECT schema FROM urbanos.tenants")
            for (schema,) in await cur.fetchall():
                await self.migrate_tenant(conn, schema)

    async def close(self) -> None:
        if self._purge is not None:
            self._purge.cancel()
        await self._pool.close()

    async def _check(self, conn: AsyncConnection) -> None:
        """The pool's check before it hands ``conn`` out. An idle session has nothing to
        say: one whose socket is readable got the server's goodbye (shutdown, crash: a
        FATAL message or EOF) and gets the full check, a round trip the quiet ones are
        spared. A dead one means the server restarted or went away, so every idle
        connection is checked now, not one per request (the pool pauses between two
        failed checks)."""
        if not conn.closed and not _readable(conn):
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self._purge is None or self._purge.done():
                self._purge = asyncio.create_task(self._pool.check(), name="postgres.purge")
            raise

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        """The error a request gets; the outage is logged when it starts, not per request."""
        if not self._down:
            self._down = True
            log.warning("database unavailable: %s", str(exc).strip() or type(exc).__name__)
        return DatabaseUnavailable("the database is unavailable; try again shortly")

    def _reachable(self) -> None:
        if self._down:
            self._down = False
            log.warning("database reachable again")

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit mode: each statement commits on its own."""
        try:
            async with self._pool.connection(timeout=timeout) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            if is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise
        self._reachable()

    async def read(
        self, work: Callable[[AsyncConnection], Awaitable[R]], timeout: float | None = None
    ) -> R:
        """``work(conn)``: statements that change nothing, run once more on a fresh
        connection if the server broke the first one under them (a restart racing the
        pool's check). Never for writes: a broken commit may have happened."""
        try:
            async with self._pool.connection(timeout=timeout) as conn:
                result = await work(conn)
        except PoolTimeout as exc:
            raise self._unavailable(exc) from exc
        except psycopg.OperationalError as exc:
            if not is_unavailable(exc):
                raise
            async with self.connection(timeout=timeout) as conn:
                return await work(conn)
        self._reachable()
        return result

    @asynccontextmanager
    async def transaction(self, schema: str | None = None) -> AsyncIterator[AsyncConnection]:
        """A connection inside one transaction; with ``schema``, unqualified names resolve
        there first (write hooks of other stores rely on it). A commit the server cut off
        is reported unavailable, never run again."""
        async with self.connection() as conn, conn.transaction():
            if schema is not None:
                await set_search_path(conn, schema)
            yield conn

    @staticmethod
    async def lock_ddl(conn: AsyncConnection) -> None:
        """Serialise schema changes across nodes until the transaction ends."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))

    async def migrate_tenant(self, conn: AsyncConnection, schema: str) -> None:
        """Create the schema if needed and apply its pending migrations (lock held)."""
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await self._migrate(conn, schema, self.tenant_migrations)

    async def _migrate(self, conn: AsyncConnection, schema: str, todo: list[Migration]) -> None:
        cur = await conn.execute(
            "SELECT version FROM urbanos.schema_migrations WHERE schema = %s", (schema,)
        )
        done = {v for (v,) in await cur.fetchall()}
        pending = [m for m in todo if m.version not in done]
        if not pending:
            return
        await set_search_path(conn, schema)
        for migration in pending:
            await conn.execute(migration.sql.encode(), prepare=False)
            await conn.execute(
                "INSERT INTO urbanos.schema_migrations (schema, version, name) VALUES (%s, %s, %s)",
                (schema, migration.version, migration.name),
            )


def _readable(conn: AsyncConnection) -> bool:
    """Whether the server sent something to an idle connection (no wait, no round trip)."""
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


async def set_search_path(conn: AsyncConnection, schema: str) -> None:
    """``search_path`` = schema, public until the transaction ends (value bound, quoted)."""
    quoted = sql.Identifier(schema).as_string(conn)
    await conn.execute("SELECT set_config('search_path', %s, true)", (f"{quoted}, public",))


def is_missing_table(exc: BaseException) -> bool:
    """A tenant schema dropped under a running node (tests, manual cleanup)."""
    return isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName)
