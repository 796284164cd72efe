"""Shared fixtures: an app on a real SQLite file, memory or PostgreSQL, driven in-process by
httpx.

The ``postgres`` store param uses the PostgreSQL at 127.0.0.1:5432 (trust auth, user
postgres; ``URBANOS_TEST_PG_ADMIN`` overrides the admin URL): one database per test session,
``urbanos_test_<pid>``, with PostGIS; after each test tenant schemas are dropped and the
default tenant's rows deleted (``reset_postgres``), so each test starts empty.
``URBANOS_TEST_POSTGRES=0`` skips that param.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from starlette.types import ASGIApp

from urbanos.http.app import create_app
from urbanos.settings import Settings
from urbanos.storage.postgres import DEFAULT_SCHEMA

LD = "application/ld+json"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


PG_ADMIN = os.environ.get("URBANOS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_enabled() -> bool:
    return os.environ.get("URBANOS_TEST_POSTGRES", "1") != "0"


@contextlib.contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new database with PostGIS, dropped afterwards; its URL. Skips the test when
    PostgreSQL tests are switched off."""
    if not postgres_enabled():
        pytest.skip("URBANOS_TEST_POSTGRES=0")
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(drop)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh database with PostGIS for this test session; its URL."""
    with scratch_database(f"urbanos_test_{os.getpid()}") as url:
        yield url


def reset_postgres(url: str) -> None:
    """Empty the database for the next test, cheaper than rebuilding it: drop tenant schemas
    and forget them, keep the catalog and the default tenant's tables but delete their rows
    (foreign keys off meanwhile), so the next store opens with nothing left to migrate."""
    keep = ("urbanos", DEFAULT_SCHEMA)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        rows = conn.execute(
            """SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema')
               AND nspname NOT LIKE 'pg\\_%'"""
        ).fetchall()
        drop = [n for (n,) in rows if n not in keep]
        if drop:
            names = sql.SQL(", ").join(sql.Identifier(n) for n in drop)
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(names))
        if len(drop) == len(rows):
            return
        conn.execute("DELETE FROM urbanos.tenants WHERE schema <> %s", (DEFAULT_SCHEMA,))
        conn.execute(
            "DELETE FROM urbanos.schema_migrations WHERE schema <> ALL(%s::text[])", (list(keep),)
        )
        conn.execute("SET LOCAL session_replication_role = replica")
        tables = conn.execute(
            """SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s::text[])
               AND (schemaname, tablename) NOT IN
                   (('urbanos', 'tenants'), ('urbanos', 'schema_migrations'))""",
            (list(keep),),
        ).fetchall()
        for schema, table in tables:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, table)))


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_database")
        yield url
        reset_postgres(url)
    else:
        yield f"sqlite:///{tmp_path}/test.db" if request.param == "sqlite" else "memory://"


@pytest.fixture
def settings(store_url: str) -> Settings:
    return Settings(store=store_url, max_body_bytes=65536, max_limit=100)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with _lifespan(app):
        async with httpx.AsyncClient(
            transport=transport, base_url="http://broker/ngsi-ld/v1/"
        ) as c:
            yield c


class _lifespan:
    """Run the ASGI lifespan protocol around a test, as uvicorn does around a server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _expect(self, wanted: str) -> None:
        message = await self.outbox.get()
        assert message["type"] == wanted, message

    async def __aenter__(self) -> None:
        self.task = asyncio.create_task(
            self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                     self.inbox.get, self.outbox.put)  # type: ignore[arg-type]
        )
        await self.inbox.put({"type": "lifespan.startup"})
        await self._expect("lifespan.startup.complete")

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self._expect("lifespan.shutdown.complete")
        assert self.task is not None
        await self.task
