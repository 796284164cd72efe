"""Shared fixtures: an app on a real SQLite file, memory or PostgreSQL, driven in-process by
httpx.

The ``postgres`` store param uses the PostgreSQL at 127.0.0.1:5432 (trust auth, user
postgres; ``URBANOS_TEST_PG_ADMIN`` overrides the admin URL): one database per test session,
``urbanos_test_<pid>``, with PostGIS; after each test tenant schemas are dropped and the
default tenant's rows deleted (``reset_postgres``), so each test starts empty.
``URBANOS_TEST_POSTGRES=0`` skips that param.

Services outside the process (PostgreSQL + PostGIS, Mosquitto, chromium, curl) are looked
for once per session, when a test first needs one (``require``). One missing skips the tests
that need it, and the session ends with one line naming it and how to get it
(``scripts/test-services``, which ``make test`` runs, installs and starts them); with ``CI``
set those tests fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from starlette.types import ASGIApp

from urbanos.http.app import create_app
from urbanos.settings import Settings
from urbanos.storage.postgres import DEFAULT_SCHEMA

LD = "application/ld+json"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


PG_ADMIN = os.environ.get("URBANOS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_enabled() -> bool:
    return os.environ.get("URBANOS_TEST_POSTGRES", "1") != "0"


MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def _pg_problem() -> str | None:
    params = conninfo_to_dict(PG_ADMIN)
    where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
            ).fetchone()
    except psycopg.Error as e:
        return f"no PostgreSQL at {where}: {str(e).strip().splitlines()[0].rsplit(': ', 1)[-1]}"
    return None if row else f'extension "postgis" is not available at {where}'


def _mqtt_problem() -> str | None:
    with socket.socket() as s:
        s.settimeout(2)
        if s.connect_ex((MQTT_HOST, MQTT_PORT)) == 0:
            return None
    return f"nothing listens on {MQTT_HOST}:{MQTT_PORT}"


def _command_problem(name: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(name) else f"no {name} on PATH"


OIDC_DIR = Path(__file__).parent / "oidc"


def _oidc_problem() -> str | None:
    """node, and the oidc-provider package of tests/oidc that it can load."""
    if shutil.which("node") is None:
        return "no node on PATH"
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return "tests/oidc/node_modules has no oidc-provider"
    probe = subprocess.run(["node", "-e", "import('oidc-provider')"], cwd=OIDC_DIR,
                           capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"node cannot load it: {probe.stderr[-200:]}"


@dataclass(frozen=True)
class Service:
    title: str
    problem: Callable[[], str | None]
    remedy: str


HOW = "`scripts/test-services` as root (make test runs it) installs"
SERVICES = {
    "postgres": Service("PostgreSQL + PostGIS", _pg_problem,
                        HOW + " and starts it; URBANOS_TEST_POSTGRES=0 leaves these tests out"),
    "mosquitto": Service("Mosquitto (MQTT)", _mqtt_problem, HOW + " and starts it"),
    "chromium": Service("chromium (headless browser)", _command_problem("chromium"),
                        HOW + " it"),
    "curl": Service("curl", _command_problem("curl"), HOW + " it"),
    "oidc-provider": Service("node + oidc-provider (OpenID Connect provider)", _oidc_problem,
                             HOW + " node and npm, and runs npm ci in tests/oidc"),
}
_problems: dict[str, str | None] = {}  # service -> why it is unavailable, once per session


def _tag(name: str) -> str:
    """What a skipped or failed test's report says, so the summary can count them."""
    return f"urbanos: {name} unavailable"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require(name: str) -> None:
    """Skip the calling test when a service it needs is missing (fail it under CI): looked
    for once per session; the session's summary names it once (``pytest_terminal_summary``)."""
    if name not in _problems:
        _problems[name] = SERVICES[name].problem()
    problem = _problems[name]
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"{_tag(name)}: {problem} (CI needs it)", pytrace=False)
    pytest.skip(_tag(name))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One loud line for each missing service: what, why, how many tests it cost, the cure.
    Counted from the tests' reports, so it also works when workers (pytest-xdist) ran them."""
    for name in SERVICES:
        count = sum(
            1 for kind in ("skipped", "failed", "error")
            for r in terminalreporter.stats.get(kind, [])
            if _tag(name) in str(getattr(r, "longrepr", ""))
        )
        if not count:
            continue
        problem = _problems.get(name) or SERVICES[name].problem() or "unavailable in a worker"
        service = SERVICES[name]
        outcome = "failed" if in_ci() else "skipped"
        terminalreporter.write_line(
            f"UNAVAILABLE {service.title}: {problem}; {count} test(s) {outcome}. {service.remedy}.",
            red=True, bold=True,
        )


@pytest.fixture
def mosquitto() -> tuple[str, int]:
    """The MQTT broker the notification tests publish through: (host, port)."""
    require("mosquitto")
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def chromium() -> str:
    """The headless browser's executable."""
    return _command("chromium")


@pytest.fixture
def curl() -> str:
    """curl's executable, for the README's commands."""
    return _command("curl")


def _command(name: str) -> str:
    require(name)
    path = shutil.which(name)
    assert path is not None
    return path


@contextlib.contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new database with PostGIS, dropped afterwards; its URL. Skips the test when
    PostgreSQL tests are switched off or PostgreSQL + PostGIS is missing (``require``)."""
    if not postgres_enabled():
        pytest.skip("URBANOS_TEST_POSTGRES=0")
    require("postgres")
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
