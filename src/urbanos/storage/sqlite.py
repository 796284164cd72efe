"""The embedded store: one SQLite file in WAL mode, one writer thread, reader connections.

Documents are kept whole (orjson) beside small index tables: types, attribute names and an
R*Tree of GeoProperty bounding boxes. Queries select candidates with those indexes in SQL
(bound parameters only) and evaluate what SQL cannot decide exactly with
``core.selection.matches``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from urbanos.core import geo
from urbanos.core.ordering import sort_entities
from urbanos.core.query import EntityResolver
from urbanos.core.render import relationship_targets
from urbanos.core.selection import EntityQuery, linked_steps, matches, simple_type_set
from urbanos.storage.base import DEFAULT_TENANT, AttributeInfo, Page, TypeInfo, Write
from urbanos.types import JSONObject

T = TypeVar("T")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY)""",
    """CREATE TABLE IF NOT EXISTS entities (
        pk INTEGER PRIMARY KEY, tenant TEXT NOT NULL, id TEXT NOT NULL, doc BLOB NOT NULL,
        UNIQUE (tenant, id))""",
    """CREATE TABLE IF NOT EXISTS entity_types (
        tenant TEXT NOT NULL, type TEXT NOT NULL, pk INTEGER NOT NULL,
        PRIMARY KEY (tenant, type, pk)) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS entity_types_pk ON entity_types (pk)""",
    """CREATE TABLE IF NOT EXISTS entity_attrs (
        tenant TEXT NOT NULL, attr TEXT NOT NULL, kind TEXT NOT NULL, pk INTEGER NOT NULL,
        PRIMARY KEY (tenant, attr, pk, kind)) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS entity_attrs_pk ON entity_attrs (pk)""",
    """CREATE TABLE IF NOT EXISTS geo_keys (
        gid INTEGER PRIMARY KEY, tenant TEXT NOT NULL, pk INTEGER NOT NULL, attr TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS geo_keys_pk ON geo_keys (pk)""",
    """CREATE VIRTUAL TABLE IF NOT EXISTS geo_index USING rtree (gid, minx, maxx, miny, maxy)""",
]


class SqliteStore:
    def __init__(self, path: str | Path, *, readers: int = 4) -> None:
        self.path = str(path)
        self._readers = max(1, readers)
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._tenants: set[str] = {DEFAULT_TENANT}
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")
        await self._write(self._init_schema)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=OFF")
        with self._conns_lock:
            self._all_conns.append(conn)
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for stmt in _SCHEMA:
            conn.execute(stmt)
        conn.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (DEFAULT_TENANT,))
        conn.execute("COMMIT")
        self._tenants.update(r[0] for r in conn.execute("SELECT name FROM tenants"))

    async def close(self) -> None:
        for pool in (self._writer, self._reader):
            if pool is not None:
                pool.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._all_conns:
                conn.close()
            self._all_conns.clear()

    # -- threads ---------------------------------------------------------------------------
    def _writer_conn(self) -> sqlite3.Connection:
        if self._write_conn is None:
            self._write_conn = self._connect()
        return self._write_conn

    def _reader_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._writer is not None, "store not opened"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: fn(self._writer_conn()))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._reader is not None, "store not opened"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: fn(self._reader_conn()))

    # -- interface -------------------------------------------------------------------------
    async def ping(self) -> bool:
        return await self._read(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)

    async def tenant_exists(self, tenant: str) -> bool:
        return tenant in self._tenants

    async def get(self, tenant: str, entity_id: str) -> JSONObject | None:
        def run(conn: sqlite3.Connection) -> JSONObject | None:
            row = conn.execute(
                "SELECT doc FROM entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
            ).fetchone()
            return orjson.loads(row[0]) if row else None

        return await self._read(run)

    async def get_many(self, tenant: str, ids: list[str]) -> dict[str, JSONObject]:
        return await self._read(lambda conn: _get_many(conn, tenant, ids))

    async def apply(self, tenant: str, writes: list[Write]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if tenant not in self._tenants:
                    conn.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (tenant,))
                for w in writes:
                    if w.op == "put":
                        assert w.entity is not None
                        _put(conn, tenant, w.entity)
                    else:
                        _delete(conn, tenant, w.entity_id)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._tenants.add(tenant)

        await self._write(run)

    async def query(self, tenant: str, query: EntityQuery) -> Page:
        return await self._read(lambda conn: _query(conn, tenant, query))

    async def types(self, tenant: str) -> list[TypeInfo]:
        def run(conn: sqlite3.Connection) -> list[TypeInfo]:
            counts = dict(
                conn.execute(
                    "SELECT type, count(*) FROM entity_types WHERE tenant = ? GROUP BY type",
                    (tenant,),
                ).fetchall()
            )
            infos = {t: TypeInfo(t, n, {}) for t, n in counts.items()}
            for t, attr, kind in conn.execute(
                """SELECT DISTINCT t.type, a.attr, a.kind FROM entity_types t
                   JOIN entity_attrs a ON a.tenant = t.tenant AND a.pk = t.pk
                   WHERE t.tenant = ?""",
                (tenant,),
            ):
                infos[t].attributes.setdefault(attr, set()).add(kind)
            return list(infos.values())

        return await self._read(run)

    async def attributes(self, tenant: str) -> list[AttributeInfo]:
        def run(conn: sqlite3.Connection) -> list[AttributeInfo]:
            infos: dict[str, AttributeInfo] = {}
            for attr, n in conn.execute(
                """SELECT attr, count(DISTINCT pk) FROM entity_attrs WHERE tenant = ?
                   GROUP BY attr""",
                (tenant,),
            ):
                infos[attr] = AttributeInfo(attr, n, set(), set())
            for attr, kind in conn.execute(
                "SELECT DISTINCT attr, kind FROM entity_attrs WHERE tenant = ?", (tenant,)
            ):
                infos[attr].kinds.add(kind)
            for attr, etype in conn.execute(
                """SELECT DISTINCT a.attr, t.type FROM entity_attrs a
                   JOIN entity_types t ON t.tenant = a.tenant AND t.pk = a.pk
                   WHERE a.tenant = ?""",
                (tenant,),
            ):
                infos[attr].types.add(etype)
            return list(infos.values())

        return await self._read(run)


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _get_many(conn: sqlite3.Connection, tenant: str, ids: Iterable[str]) -> dict[str, JSONObject]:
    found: dict[str, JSONObject] = {}
    for chunk in _chunks(list(dict.fromkeys(ids)), 500):
        marks = ",".join("?" * len(chunk))
        for eid, doc in conn.execute(
            f"SELECT id, doc FROM entities WHERE tenant = ? AND id IN ({marks})",
            (tenant, *chunk),
        ):
            found[eid] = orjson.loads(doc)
    return found


def _put(conn: sqlite3.Connection, tenant: str, entity: JSONObject) -> None:
    (pk,) = conn.execute(
        """INSERT INTO entities (tenant, id, doc) VALUES (?, ?, ?)
           ON CONFLICT (tenant, id) DO UPDATE SET doc = excluded.doc RETURNING pk""",
        (tenant, entity["id"], orjson.dumps(entity)),
    ).fetchone()
    _unindex(conn, pk)
    conn.executemany(
        "INSERT OR IGNORE INTO entity_types (tenant, type, pk) VALUES (?, ?, ?)",
        [(tenant, t, pk) for t in entity.get("type", [])],
    )
    rows = {
        (tenant, name, inst.get("type", "Property"), pk)
        for name, instances in entity["attrs"].items()
        for inst in instances
    }
    conn.executemany(
        "INSERT OR IGNORE INTO entity_attrs (tenant, attr, kind, pk) VALUES (?, ?, ?, ?)", rows
    )
    for name, instances in entity["attrs"].items():
        for inst in instances:
            if inst.get("type") != "GeoProperty":
                continue
            try:
                minx, miny, maxx, maxy = geo.geometry_bbox(inst.get("value"))
            except Exception:  # noqa: BLE001 - an unindexable shape is still stored
                continue
            gid = conn.execute(
                "INSERT INTO geo_keys (tenant, pk, attr) VALUES (?, ?, ?)", (tenant, pk, name)
            ).lastrowid
            conn.execute(
                "INSERT INTO geo_index (gid, minx, maxx, miny, maxy) VALUES (?, ?, ?, ?, ?)",
                (gid, minx, maxx, miny, maxy),
            )


def _unindex(conn: sqlite3.Connection, pk: int) -> None:
    conn.execute("DELETE FROM entity_types WHERE pk = ?", (pk,))
    conn.execute("DELETE FROM entity_attrs WHERE pk = ?", (pk,))
    conn.execute(
        "DELETE FROM geo_index WHERE gid IN (SELECT gid FROM geo_keys WHERE pk = ?)", (pk,)
    )
    conn.execute("DELETE FROM geo_keys WHERE pk = ?", (pk,))


def _delete(conn: sqlite3.Connection, tenant: str, entity_id: str) -> None:
    row = conn.execute(
        "DELETE FROM entities WHERE tenant = ? AND id = ? RETURNING pk", (tenant, entity_id)
    ).fetchone()
    if row:
        _unindex(conn, row[0])


def _query(conn: sqlite3.Connection, tenant: str, query: EntityQuery) -> Page:
    where = ["e.tenant = ?"]
    params: list[Any] = [tenant]
    exact = query.id_pattern is None and query.q is None and query.scope_q is None
    exact = exact and query.geo is None and query.selectors is None
    if query.ids is not None:
        if not query.ids:
            return Page([], 0 if query.count else None)
        where.append(f"e.id IN ({','.join('?' * len(query.ids))})")
        params.extend(query.ids)
    if query.types is not None:
        names = simple_type_set(query.types)
        if names is None:
            exact = False
        else:
            where.append(
                "e.pk IN (SELECT pk FROM entity_types WHERE tenant = ? AND type IN "
                f"({','.join('?' * len(names))}))"
            )
            params.extend([tenant, *names])
    if query.attrs is not None:
        where.append(
            "e.pk IN (SELECT pk FROM entity_attrs WHERE tenant = ? AND attr IN "
            f"({','.join('?' * len(query.attrs))}))"
        )
        params.extend([tenant, *query.attrs])
    if query.geo is not None:
        box = query.geo.candidate_bbox()
        if box is not None:
            minx, miny, maxx, maxy = box
            where.append(
                """e.pk IN (SELECT k.pk FROM geo_index g JOIN geo_keys k ON k.gid = g.gid
                   WHERE k.tenant = ? AND k.attr = ? AND g.minx <= ? AND g.maxx >= ?
                   AND g.miny <= ? AND g.maxy >= ?)"""
            )
            params.extend([tenant, query.geo.geoproperty, maxx, minx, maxy, miny])
    sql_where = " AND ".join(where)
    if exact and query.order is None:
        rows = conn.execute(
            f"SELECT doc FROM entities e WHERE {sql_where} ORDER BY e.pk LIMIT ? OFFSET ?",
            (*params, query.limit, query.offset),
        ).fetchall()
        total = None
        if query.count:
            total = conn.execute(
                f"SELECT count(*) FROM entities e WHERE {sql_where}", params
            ).fetchone()[0]
        return Page([orjson.loads(r[0]) for r in rows], total)
    steps = linked_steps(query.q) if query.q is not None else []
    cursor = conn.execute(f"SELECT doc FROM entities e WHERE {sql_where} ORDER BY e.pk", params)
    selected: list[JSONObject] = []
    seen = 0
    while rows := cursor.fetchmany(256):
        batch = [orjson.loads(doc) for (doc,) in rows]
        resolver = _prefetch_linked(conn, tenant, batch, steps) if steps else None
        for entity in batch:
            if not matches(entity, query, resolver):
                continue
            if query.order is not None:
                selected.append(entity)
                continue
            if query.offset <= seen < query.offset + query.limit:
                selected.append(entity)
            seen += 1
            if not query.count and seen >= query.offset + query.limit:
                return Page(selected, None)
    if query.order is not None:
        ordered = sort_entities(selected, query.order, query.lang)
        page = ordered[query.offset : query.offset + query.limit]
        return Page(page, len(ordered) if query.count else None)
    return Page(selected, seen if query.count else None)


def _prefetch_linked(
    conn: sqlite3.Connection, tenant: str, batch: list[JSONObject], steps: list[frozenset[str]]
) -> EntityResolver:
    """The entities a batch's linked q terms reach, fetched one query per hop."""
    cache: dict[str, JSONObject] = {}
    frontier = batch
    for names in steps:
        targets = {
            target
            for entity in frontier
            for name in names
            for inst in entity["attrs"].get(name, ())
            for target in relationship_targets(inst)
        }
        cache.update(_get_many(conn, tenant, [t for t in targets if t not in cache]))
        frontier = [cache[t] for t in targets if t in cache]
    return cache.get
