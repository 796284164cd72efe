"""This process as one node among several on one PostgreSQL database.

A node keeps one dedicated connection (outside the pool, so a busy pool never delays it)
that does two things:

* it holds a session advisory lock ``(NODE_LOCK, node_id)`` for as long as the process
  lives. Rows claimed by a node (outbox changes and deliveries) carry its id; a claim whose
  node no longer holds its lock was left by a dead process and may be taken over at once,
  with no lease to wait out;
* it LISTENs on the cluster channels and calls the handlers registered for them, so other
  nodes learn of changes to subscriptions and to the @context registry (their in-memory
  indexes and caches go stale) and of new outbox rows (their delivery loop wakes without
  waiting for its poll). NOTIFY is sent inside the writing transaction, so it arrives only
  once the change has committed. Every channel but the outbox's carries one payload,
  ``{"node": <writer>, "tenant": <tenant>}`` (``announcement``). ``services.cluster.listen``
  turns them into invalidations of the caches; it starts listening before any cache loads.
  After a lost connection the node listens again first and then reports ``"*"`` on every
  channel, so what was missed meanwhile is reloaded, never the other way round.

Jobs that one node of the cluster must run alone (periodic notifications) are led by the
node that holds a session advisory lock ``(LEAD_LOCK, job)`` (``try_lead``), on a second
dedicated connection (the first one is busy listening): when the leader dies its session
ends, the lock is released, and the next node that asks takes the job over.

One node per ``PostgresStore`` (``node_for``): the outbox, the subscription and @context
stores of a process share it; the app lifespan and ``PostgresStore.close`` stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
import psycopg
from psycopg import AsyncConnection, sql

if TYPE_CHECKING:
    from urbanos.storage.postgres import PostgresStore

__all__ = [
    "ACCESS_CHANNEL",
    "CONTEXTS_CHANNEL",
    "LEAD_LOCK",
    "LIVE_NODES",
    "NODE_LOCK",
    "OUTBOX_CHANNEL",
    "REGISTRATIONS_CHANNEL",
    "SUBSCRIPTIONS_CHANNEL",
    "PostgresNode",
    "announcement",
    "node_for",
    "parse_announcement",
    "subscription_payload",
]

log = logging.getLogger("urbanos.postgres.node")

#: first key of every node's liveness lock ("urb0"); the second key is the node id
NODE_LOCK = 0x75726230
#: first key of the lock a job's leader holds ("urb1"); the second key is the job's hash
LEAD_LOCK = 0x75726231
SUBSCRIPTIONS_CHANNEL = "urbanos_subscriptions"
CONTEXTS_CHANNEL = "urbanos_contexts"
OUTBOX_CHANNEL = "urbanos_outbox"
#: grants, API keys and identity providers (``storage.postgres.access``)
ACCESS_CHANNEL = "urbanos_access"
#: context source registrations (``storage.postgres.registrations``)
REGISTRATIONS_CHANNEL = "urbanos_registrations"
CHANNELS = (SUBSCRIPTIONS_CHANNEL, CONTEXTS_CHANNEL, OUTBOX_CHANNEL, ACCESS_CHANNEL,
            REGISTRATIONS_CHANNEL)
#: how long a leader waits for the database to confirm it still holds its session
LEAD_CHECK_TIMEOUT = 5.0

#: the ids of the nodes alive on this database, one row each (``x <> ALL (LIVE_NODES)``)
LIVE_NODES = f"""SELECT objid::bigint FROM pg_locks
    WHERE locktype = 'advisory' AND classid = {NODE_LOCK}::oid AND objsubid = 2 AND granted
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""

Handler = Callable[[str], None]

_NODES: weakref.WeakKeyDictionary[PostgresStore, PostgresNode] = weakref.WeakKeyDictionary()


def node_for(store: PostgresStore) -> PostgresNode:
    """The node of a store, the same object for every caller in this process."""
    node = _NODES.get(store)
    if node is None:
        node = _NODES[store] = PostgresNode(store.db.url)
    return node


class PostgresNode:
    def __init__(self, url: str) -> None:
        self.url = url
        #: positive int4: the second key of the liveness lock, stored in claimed rows
        self.node_id = secrets.randbelow(2**31 - 2) + 1
        self._handlers: dict[str, list[Handler]] = {c: [] for c in CHANNELS}
        self._conn: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lead_conn: AsyncConnection | None = None
        self._leading: set[int] = set()  # job keys whose lock _lead_conn holds
        self._lead_guard = asyncio.Lock()

    def on(self, channel: str, handler: Handler) -> None:
        """Call ``handler(payload)`` for every notification on ``channel`` (also after a
        reconnection, with payload ``"*"``: anything may have changed meanwhile)."""
        self._handlers[channel].append(handler)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Connect, take the liveness lock and listen; idempotent."""
        if self._task is not None:
            return
        await self._connect()
        self._task = asyncio.create_task(self._run(), name="postgres.node")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in (self._conn, self._lead_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()  # ends the session: its advisory locks go with it
        self._conn = self._lead_conn = None
        self._leading.clear()

    async def try_lead(self, job: str) -> bool:
        """Whether this node leads ``job`` now: it holds the job's lock, or takes it if no
        live node does. Never waits for another leader; a lost or unresponsive session
        answers False (and a new one is tried next time), so a node cut off from the
        database stops leading rather than run the job twice."""
        key = _job_key(job)
        async with self._lead_guard:
            try:
                async with asyncio.timeout(LEAD_CHECK_TIMEOUT):
                    if self._lead_conn is None or self._lead_conn.closed:
                        self._leading.clear()
                        self._lead_conn = await self._session("leader")
                    if key in self._leading:  # held while the session lives: check it does
                        await self._lead_conn.execute("SELECT 1")
                        return True
                    cur = await self._lead_conn.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (LEAD_LOCK, key)
                    )
                    row = await cur.fetchone()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if self._leading:
                    log.warning("leadership lost with the database session (%s)", exc)
                conn, self._lead_conn = self._lead_conn, None
                self._leading.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                return False
            if row is not None and row[0]:
                self._leading.add(key)
                log.info("this node now leads %s", job)
                return True
            return False

    async def _session(self, role: str) -> AsyncConnection:
        """A dedicated connection, named for operators (and tests) in pg_stat_activity."""
        return await AsyncConnection.connect(
            self.url, autocommit=True, application_name=f"urbanos {role} pid={os.getpid()}"
        )

    async def _connect(self) -> None:
        conn = await self._session("node")
        try:
            while True:  # a random id another live node holds: pick another, never wait
                cur = await conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (NODE_LOCK, self.node_id)
                )
                row = await cur.fetchone()
                if row is not None and row[0]:
                    break
                self.node_id = secrets.randbelow(2**31 - 2) + 1
            for channel in CHANNELS:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def _run(self) -> None:
        pause = 0.2
        while True:
            conn = self._conn
            try:
                if conn is None:
                    await self._connect()
                    self._dispatch_all("*")  # notifications may have been missed
                    conn = self._conn
                    pause = 0.2
                assert conn is not None
                async for n in conn.notifies():
                    self._dispatch(n.channel, n.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("cluster connection lost (%s); reconnecting in %.1fs", exc, pause)
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                self._conn = None
                await asyncio.sleep(pause)
                pause = min(10.0, pause * 2)

    def _dispatch(self, channel: str, payload: str) -> None:
        for handler in self._handlers.get(channel, []):
            try:
                handler(payload)
            except Exception:  # noqa: BLE001 - one handler must not stop the listener
                log.exception("handling a notification on %s failed", channel)

    def _dispatch_all(self, payload: str) -> None:
        for channel in CHANNELS:
            self._dispatch(channel, payload)


def _job_key(job: str) -> int:
    """The second key of a job's lead lock: an int4, identical on every node."""
    return int.from_bytes(hashlib.blake2b(job.encode(), digest_size=4).digest(), "big",
                          signed=True)


def announcement(node_id: int, tenant: str) -> str:
    """What a change announces: who changed it (to skip its own) and where."""
    return orjson.dumps({"node": node_id, "tenant": tenant}).decode()


def parse_announcement(payload: str) -> tuple[int | None, str | None]:
    """(node, tenant) of an announcement; (None, None) for ``"*"``: every tenant."""
    if payload == "*":
        return None, None
    data = orjson.loads(payload)
    return int(data["node"]), str(data["tenant"])


#: the name the subscription store first used for the same payload
subscription_payload = announcement
