"""A PostgreSQL server of a test's own: ``initdb`` into a temporary directory, ``pg_ctl`` on a
free port, restarted or crashed at will, removed at the end.

The shared server at 127.0.0.1:5432 serves every test run on the machine, so a test that
needs the database to go away (a restart, a crash) starts one of these instead. The server
runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses root), with
trust authentication on 127.0.0.1 only and its socket in its own directory.

``fsync=off`` keeps it quick and loses nothing a test can observe: a crash of the server
(``pg_ctl stop -m immediate``) still finds every committed transaction in the WAL the
operating system holds; only a crash of the machine would not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.integration.broker_process import free_port

BINDIR = Path(os.environ.get("URBANOS_TEST_PG_BINDIR", "/usr/lib/postgresql/15/bin"))


class PrivatePostgres:
    """One PostgreSQL server in a temporary directory; ``url(name)`` for its databases."""

    def __init__(self, bindir: Path = BINDIR) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="urbanos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{tool} failed: {done.stdout}{done.stderr}{self._tail()}"

    def _tail(self) -> str:
        try:
            return "\n" + self.log.read_text()[-2000:]
        except OSError:
            return ""

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.root} -c fsync=off -c max_connections=100")
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", "30", "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """``mode``: fast (sessions ended cleanly), immediate (a crash: recovery at start)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30")

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast``, or ``immediate`` for a crash) and start again on the same port."""
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new database with PostGIS; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = self.url(name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        return url

    def remove(self) -> None:
        """Stop the server if it runs, delete its directory."""
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started server of one's own, removed afterwards. Skips when PostgreSQL tests are
    switched off or the server binaries are not installed."""
    from tests.conftest import postgres_enabled

    if not postgres_enabled():
        pytest.skip("URBANOS_TEST_POSTGRES=0")
    if not (BINDIR / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {BINDIR}")
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


def wait_for_server(url: str, timeout: float = 30) -> None:
    """Until ``url`` accepts connections (after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
