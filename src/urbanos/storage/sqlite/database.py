"""One SQLite file in WAL mode: a writer thread that commits in groups, and reader threads.

Concurrent writers hand their work to ``transact``; the writer thread runs everything that
is waiting in one transaction, each piece inside its own SAVEPOINT, so one commit (one
fsync) serves many requests while a failing piece rolls back alone. A third thread copies
the WAL back into the file (checkpoints), so that the writer does not stop for it.

Durability is ``synchronous``: with ``FULL`` (the default) every commit syncs the WAL before
``transact`` returns, so a write acknowledged to a client survives power loss and OS crashes;
the group commit shares that one sync among the writes waiting together. ``NORMAL`` syncs
the WAL only at checkpoints: a commit survives a killed process, but the last commits before
a power loss or OS crash can roll back even though they were acknowledged.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]
#: a piece of write work, the future its caller awaits, and that future's loop
Piece = tuple[Work, "asyncio.Future[Any]", asyncio.AbstractEventLoop]


#: the ``synchronous`` levels a store may run at (see the module docstring)
SYNCHRONOUS = ("full", "normal")


class Database:
    def __init__(
        self,
        path: str | Path,
        *,
        readers: int = 4,
        max_group: int = 256,
        synchronous: str = "full",
    ) -> None:
        if synchronous.lower() not in SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}"
            )
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.max_group = max_group
        self._readers = max(1, readers)
        self._writer: threading.Thread | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: guards ``_pending`` and ``_closing``; the writer thread waits on it
        self._queue = threading.Condition(threading.Lock())
        self._pending: list[Piece] = []
        self._closing = False
        #: called on the writer thread after each commit / each rollback (of a piece or all)
        self.on_commit: list[Callable[[], None]] = []
        self.on_rollback: list[Callable[[], None]] = []
        self._checkpointer: _Checkpointer | None = None

    async def open(self, schema: Iterable[str]) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self._writer is None:  # opened once: one writer thread, whoever opens again
            self._closing = False
            self._writer = threading.Thread(
                target=self._write_loop, name="sqlite-writer", daemon=True
            )
            self._writer.start()
            self._reader = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")
            if self.path != ":memory:":
                self._checkpointer = _Checkpointer(self._connect)
                self.on_commit.append(self._checkpointer.written)
        statements = list(schema)

        def migrate(conn: sqlite3.Connection) -> None:
            for stmt in statements:
                conn.execute(stmt)

        await self.transact(migrate)

    async def close(self) -> None:
        if self._writer is not None:
            with self._queue:
                self._closing = True
                self._queue.notify()
            self._writer.join()  # what was handed in before close still runs
            self._writer = None
        if self._checkpointer is not None:
            self.on_commit.remove(self._checkpointer.written)
            self._checkpointer.stop()
            self._checkpointer = None
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader = None
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._write_conn = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")  # one of SYNCHRONOUS
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
        with self._queue:
            self._pending.append((fn, future, loop))
            self._queue.notify()
        return await future

    def _write_loop(self) -> None:
        """The writer thread: a dedicated thread woken by a condition, not an executor job
        per call, so a write costs no work item, no chained future and no extra wake-up of
        the event loop."""
        while True:
            with self._queue:
                while not self._pending and not self._closing:
                    self._queue.wait()
                if not self._pending:
                    return
                group = self._pending[: self.max_group]
                del self._pending[: self.max_group]
            try:
                outcomes = self._run_group(group)
            except BaseException as exc:  # noqa: BLE001 - the thread must outlive any failure
                outcomes = [(None, exc)] * len(group)
            _hand_back(group, outcomes)

    def _run_group(self, group: list[Piece]) -> list[tuple[Any, BaseException | None]]:
        if self._write_conn is None:
            self._write_conn = self._connect()
            # the checkpoint thread keeps the WAL short; this bounds it should that fall behind
            self._write_conn.execute(f"PRAGMA wal_autocheckpoint={WAL_BOUND_PAGES}")
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
                    _notify(self.on_rollback)
                    outcomes.append((None, exc))
            conn.execute("COMMIT")
            _notify(self.on_commit)
        except BaseException as exc:  # the transaction itself failed: everyone fails
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            _notify(self.on_rollback)
            outcomes = [(None, exc)] * len(group)
        return outcomes


#: WAL pages after which the writer checkpoints itself (80 MB at 4 KB pages)
WAL_BOUND_PAGES = 20_000


class _Checkpointer:
    """Passive checkpoints on a thread and connection of their own, a moment after commits.

    Checkpointing inside the writer's commit (SQLite's default, every 1,000 pages) cost the
    writer a fifth of its time; here it overlaps the next transactions instead, and pages
    written by several commits in the meantime are copied once.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], pause: float = 0.05) -> None:
        self._connect, self._pause = connect, pause
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def written(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stopping:  # stop() sets it before waking this thread
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            time.sleep(self._pause)  # let a burst of commits pile up: one checkpoint for all
            try:
                conn = conn or self._connect()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:  # the writer's own checkpoints still bound the WAL
                continue


def _notify(listeners: list[Callable[[], None]]) -> None:
    for listener in listeners:
        listener()


def _hand_back(group: list[Piece], outcomes: list[tuple[Any, BaseException | None]]) -> None:
    """Settle a group's futures with one call into each event loop (one wake-up each)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any,
                                                        BaseException | None]]] = {}
    for (_, future, loop), (result, error) in zip(group, outcomes, strict=True):
        by_loop.setdefault(loop, []).append((future, result, error))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
