"""One SQLite file in WAL mode: a writer thread that commits in groups, and reader threads.

Concurrent writers hand their work to ``transact``; the writer thread runs everything that
is waiting in one transaction, each piece inside its own SAVEPOINT, so one commit (one
fsync) serves many requests while a failing piece rolls back alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]


class Database:
    def __init__(self, path: str | Path, *, readers: int = 4, max_group: int = 256) -> None:
        self.path = str(path)
        self.max_group = max_group
        self._readers = max(1, readers)
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pending: list[tuple[Work, asyncio.Future[Any], asyncio.AbstractEventLoop]] = []

    async def open(self, schema: Iterable[str]) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")
        statements = list(schema)

        def migrate(conn: sqlite3.Connection) -> None:
            for stmt in statements:
                conn.execute(stmt)

        await self.transact(migrate)

    async def close(self) -> None:
        for pool in (self._writer, self._reader):
            if pool is not None:
                pool.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        with self._lock:
            self._all.append(conn)
        return conn

    def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short, bounded read (a primary-key lookup) on the calling thread: cheaper
        than a hop to a reader thread, and WAL readers never wait for the writer."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return fn(conn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._reader is not None, "store not opened"

        def run() -> T:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect()
            return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction (shared with other waiting writers)."""
        assert self._writer is not None, "store not opened"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._pending.append((fn, future, loop))
        loop.run_in_executor(self._writer, self._drain)
        return await future

    def _drain(self) -> None:
        while True:
            with self._lock:
                group = self._pending[: self.max_group]
                del self._pending[: self.max_group]
            if not group:
                return
            self._run_group(group)

    def _run_group(
        self, group: list[tuple[Work, asyncio.Future[Any], asyncio.AbstractEventLoop]]
    ) -> None:
        if self._write_conn is None:
            self._write_conn = self._connect()
        conn = self._write_conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _ in group:
                conn.execute("SAVEPOINT piece")
                try:
                    outcomes.append((fn(conn), None))
                    conn.execute("RELEASE piece")
                except Exception as exc:  # noqa: BLE001 - handed back to its caller
                    conn.execute("ROLLBACK TO piece")
                    conn.execute("RELEASE piece")
                    outcomes.append((None, exc))
            conn.execute("COMMIT")
        except BaseException as exc:  # the transaction itself failed: everyone fails
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(None, exc)] * len(group)
        for (_, future, loop), (result, error) in zip(group, outcomes, strict=True):
            loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
