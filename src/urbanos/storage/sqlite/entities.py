"""Entities in SQLite: whole documents (orjson) beside small index tables.

Index tables: types, attribute names and an R*Tree of GeoProperty bounding boxes. Queries
select candidates with those indexes in SQL (bound parameters only) and evaluate what SQL
cannot decide exactly with ``core.selection.matches``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any, TypeVar

import orjson

from urbanos.core import geo
from urbanos.core.query import EntityResolver
from urbanos.core.selection import (
    EntityQuery,
    Pager,
    hop_targets,
    linked_steps,
    simple_type_set,
)
from urbanos.storage.base import AttributeInfo, Page, TypeInfo
from urbanos.storage.index_values import scalars
from urbanos.storage.sqlite import q_sql
from urbanos.types import JSONObject

T = TypeVar("T")

SCHEMA = [
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
    *q_sql.SCHEMA,
]


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring the index tables of a file written by an earlier version to this shape, then
    create the value indexes (idempotent; runs at every open)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(attr_values)")}
    if "type" not in columns:  # value rows gained the entity's types
        conn.execute("ALTER TABLE attr_values RENAME TO attr_values_old")
        conn.execute(q_sql.VALUES_TABLE)
        conn.execute(
            """INSERT INTO attr_values (tenant, attr, type, num, str, pk)
               SELECT v.tenant, v.attr, t.type, v.num, v.str, v.pk
               FROM attr_values_old v LEFT JOIN entity_types t ON t.pk = v.pk"""
        )
        conn.execute("DROP TABLE attr_values_old")
    for statement in q_sql.VALUE_INDEXES:
        conn.execute(statement)


def get_many(conn: sqlite3.Connection, tenant: str, ids: Iterable[str]) -> dict[str, JSONObject]:
    found: dict[str, JSONObject] = {}
    for chunk in _chunks(list(dict.fromkeys(ids)), 500):
        marks = ",".join("?" * len(chunk))
        for eid, doc in conn.execute(
            f"SELECT id, doc FROM entities WHERE tenant = ? AND id IN ({marks})",
            (tenant, *chunk),
        ):
            found[eid] = orjson.loads(doc)
    return found


def put(conn: sqlite3.Connection, tenant: str, entity: JSONObject) -> None:
    """Store a document and keep its index rows in step with it.

    Index rows are a function of the types and of each attribute's instances, so only what
    differs from the stored document is rewritten: a new entity has no rows to remove, and
    an update rewrites the rows of the attributes whose rows differ (a new modifiedAt alone
    changes none).
    """
    doc = orjson.dumps(entity)
    types: list[str] = entity.get("type", [])
    attrs: dict[str, list[JSONObject]] = entity["attrs"]
    row = conn.execute(
        "SELECT pk, doc FROM entities WHERE tenant = ? AND id = ?", (tenant, entity["id"])
    ).fetchone()
    if row is None:
        pk = conn.execute(
            "INSERT INTO entities (tenant, id, doc) VALUES (?, ?, ?)", (tenant, entity["id"], doc)
        ).lastrowid
        assert pk is not None
        _index_types(conn, tenant, pk, types)
        _index_attrs(conn, _attr_rows(tenant, pk, types, attrs))
        return
    pk, stored = row
    conn.execute("UPDATE entities SET doc = ? WHERE pk = ?", (doc, pk))
    old: JSONObject = orjson.loads(stored)
    retyped = old.get("type", []) != types  # value rows carry the types: all rewritten
    if retyped:
        conn.execute("DELETE FROM entity_types WHERE pk = ?", (pk,))
        _index_types(conn, tenant, pk, types)
    old_attrs: dict[str, list[JSONObject]] = old["attrs"]
    changed = {
        name: insts for name, insts in attrs.items()
        if retyped or old_attrs.get(name) != insts and (
            name not in old_attrs
            or _attr_rows(tenant, pk, types, {name: old_attrs[name]})
            != _attr_rows(tenant, pk, types, {name: insts})
        )
    }
    stale = [name for name in old_attrs if name in changed or name not in attrs]
    if stale:
        _unindex_attrs(conn, tenant, pk, stale)
    _index_attrs(conn, _attr_rows(tenant, pk, types, changed))


def _index_types(conn: sqlite3.Connection, tenant: str, pk: int, types: list[str]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO entity_types (tenant, type, pk) VALUES (?, ?, ?)",
        [(tenant, t, pk) for t in types],
    )


#: an entity's attribute-name, scalar-value and bounding-box rows
AttrRows = tuple[
    set[tuple[str, str, str, int]],
    list[tuple[str, str, str | None, float | None, str | None, int]],
    list[tuple[str, int, str, tuple[float, float, float, float]]],
]


def _attr_rows(
    tenant: str, pk: int, types: list[str], attrs: dict[str, list[JSONObject]]
) -> AttrRows:
    kinds: set[tuple[str, str, str, int]] = set()
    values: list[tuple[str, str, str | None, float | None, str | None, int]] = []
    typed: list[str | None] = [*types] or [None]
    shapes: list[tuple[str, int, str, tuple[float, float, float, float]]] = []
    for name, instances in attrs.items():
        for inst in instances:
            kind = inst.get("type", "Property")
            kinds.add((tenant, name, kind, pk))
            if kind != "GeoProperty":
                values.extend((tenant, name, t, num, text, pk)
                              for num, text in scalars(inst) for t in typed)
                continue
            try:
                shapes.append((tenant, pk, name, geo.geometry_bbox(inst["value"])))
            except Exception:  # noqa: BLE001 - an unindexable shape is still stored
                continue
    return kinds, values, shapes


def _index_attrs(conn: sqlite3.Connection, rows: AttrRows) -> None:
    kinds, values, shapes = rows
    if kinds:
        conn.executemany(
            "INSERT OR IGNORE INTO entity_attrs (tenant, attr, kind, pk) VALUES (?, ?, ?, ?)",
            kinds,
        )
    if values:
        conn.executemany(
            "INSERT INTO attr_values (tenant, attr, type, num, str, pk) VALUES (?, ?, ?, ?, ?, ?)",
            values,
        )
    for tenant, pk, name, (minx, miny, maxx, maxy) in shapes:
        gid = conn.execute(
            "INSERT INTO geo_keys (tenant, pk, attr) VALUES (?, ?, ?)", (tenant, pk, name)
        ).lastrowid
        conn.execute(
            "INSERT INTO geo_index (gid, minx, maxx, miny, maxy) VALUES (?, ?, ?, ?, ?)",
            (gid, minx, maxx, miny, maxy),
        )


def _unindex_attrs(conn: sqlite3.Connection, tenant: str, pk: int, names: list[str]) -> None:
    """Drop the index rows of some attributes of one entity (each a seek on pk)."""
    keys = [(pk, name) for name in names]
    conn.executemany(
        "DELETE FROM entity_attrs WHERE tenant = ? AND attr = ? AND pk = ?",
        [(tenant, name, pk) for name in names],
    )
    conn.executemany("DELETE FROM attr_values WHERE pk = ? AND attr = ?", keys)
    conn.executemany(
        "DELETE FROM geo_index WHERE gid IN (SELECT gid FROM geo_keys WHERE pk = ? AND attr = ?)",
        keys,
    )
    conn.executemany("DELETE FROM geo_keys WHERE pk = ? AND attr = ?", keys)


def _unindex(conn: sqlite3.Connection, pk: int) -> None:
    conn.execute("DELETE FROM entity_types WHERE pk = ?", (pk,))
    conn.execute("DELETE FROM entity_attrs WHERE pk = ?", (pk,))
    conn.execute("DELETE FROM attr_values WHERE pk = ?", (pk,))
    conn.execute(
        "DELETE FROM geo_index WHERE gid IN (SELECT gid FROM geo_keys WHERE pk = ?)", (pk,)
    )
    conn.execute("DELETE FROM geo_keys WHERE pk = ?", (pk,))


def delete(conn: sqlite3.Connection, tenant: str, entity_id: str) -> None:
    row = conn.execute(
        "DELETE FROM entities WHERE tenant = ? AND id = ? RETURNING pk", (tenant, entity_id)
    ).fetchone()
    if row:
        _unindex(conn, row[0])


def query(
    conn: sqlite3.Connection, tenant: str, query: EntityQuery,
    counts: ProbeCounts | None = None,
) -> Page:
    where = ["e.tenant = ?"]
    params: list[Any] = [tenant]
    exact = query.id_pattern is None and query.q is None and query.scope_q is None
    exact = exact and query.geo is None and query.selectors is None
    if query.ids is not None:
        if not query.ids:
            return Page([], 0 if query.count else None)
        where.append(f"e.id IN ({','.join('?' * len(query.ids))})")
        params.extend(query.ids)
    filters: list[q_sql.Filter] = []
    if query.types is not None:
        names = simple_type_set(query.types)
        if names is None:
            exact = False
        else:
            filters.append(q_sql.Filter.of(
                "entity_types", f"tenant = ? AND type IN ({','.join('?' * len(names))})",
                [tenant, *names],
            ))
    if query.attrs is not None:
        filters.append(q_sql.Filter.of(
            "entity_attrs", f"tenant = ? AND attr IN ({','.join('?' * len(query.attrs))})",
            [tenant, *query.attrs],
        ))
    if query.geo is not None:
        box = query.geo.candidate_bbox()
        if box is not None:
            minx, miny, maxx, maxy = box
            filters.append(q_sql.Filter.of(
                "geo_keys k JOIN geo_index g ON g.gid = k.gid",
                "k.tenant = ? AND k.attr = ? AND g.minx <= ? AND g.maxx >= ? "
                "AND g.miny <= ? AND g.maxy >= ?",
                [tenant, query.geo.geoproperty, maxx, minx, maxy, miny],
            ))
    if query.q is not None:
        typed = simple_type_set(query.types) if query.types is not None else None
        filters.extend(q_sql.q_filter(query.q, tenant, typed))
    driver, checks = _plan(conn, filters, counts)
    if driver is not None:  # tenant-scoped already; dropping e.tenant lets SQLite seek by pk
        where, params = where[1:], params[1:]
        where.append(f"e.pk IN ({driver.select})")
        params.extend(driver.params)
    elif checks:  # a scan in pk order, stopped early by LIMIT: no tenant index, no sort
        where[0] = "+e.tenant = ?"
    for check in checks:
        where.append(check.check)
        params.extend(check.check_params)
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
    pager = Pager(query)
    while rows := cursor.fetchmany(pager.batch_size(256)):
        batch = [orjson.loads(doc) for (doc,) in rows]
        resolver = _prefetch_linked(conn, tenant, batch, steps) if steps else None
        if pager.feed(batch, resolver):
            break
    return Page(*pager.result())


#: count-probe caps, smallest first: the first cap under which a filter's count falls ends
#: the search; when every filter admits more rows than the last, none drives (``_plan``)
PROBE_CAPS = (1_000, 4_000, 16_000)


class ProbeCounts:
    """Recent count probes, so that a query asked again plans without probing.

    A count only chooses the plan, never the result: one a few seconds stale costs speed at
    worst. Each entry is a count (exact, or "at least" when its probe hit its bound).
    """

    def __init__(self, ttl: float = 5.0, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self._known: dict[tuple[Any, ...], tuple[int, bool, float]] = {}

    def count(self, conn: sqlite3.Connection, f: q_sql.Filter, bound: int) -> int:
        """min(rows ``f`` admits, ``bound``)."""
        key = (f.select, *f.params)
        now = time.monotonic()
        known = self._known.get(key)
        if known is not None and now - known[2] < self.ttl:
            n, exact, _ = known
            if exact or n >= bound:
                return min(n, bound)
        sql = f"SELECT count(*) FROM ({f.select} LIMIT {bound})"
        n = int(conn.execute(sql, f.params).fetchone()[0])
        if len(self._known) >= self.size:
            self._known.clear()
        self._known[key] = (n, n < bound, now)
        return n


def _plan(
    conn: sqlite3.Connection, filters: list[q_sql.Filter], counts: ProbeCounts | None = None
) -> tuple[q_sql.Filter | None, list[q_sql.Filter]]:
    """Which filter drives the query (its pks are listed from an index) and which are
    checked per candidate (one index seek each).

    Bounded count probes find the most selective filter; each probe stops at the best count
    so far, so a broad filter costs no more than the best one. When every filter admits
    more rows than the largest cap, none drives: entities are read in pk order and the
    checks stop the scan as soon as a page is full.
    """
    if len(filters) <= 1:
        return (filters[0] if filters else None), []
    probes = counts or ProbeCounts(ttl=0)
    best: tuple[int, int] | None = None  # (count, index)
    for cap in PROBE_CAPS:
        for i, f in enumerate(filters):
            bound = cap if best is None else min(cap, best[0])
            n = probes.count(conn, f, bound)
            if n < bound:
                best = (n, i)
        if best is not None:
            i = best[1]
            return filters[i], filters[:i] + filters[i + 1 :]
    return None, filters


def _prefetch_linked(
    conn: sqlite3.Connection, tenant: str, batch: list[JSONObject], steps: list[frozenset[str]]
) -> EntityResolver:
    """The entities a batch's linked q terms reach, fetched one query per hop."""
    cache: dict[str, JSONObject] = {}
    frontier = batch
    for names in steps:
        targets = hop_targets(frontier, names)
        cache.update(get_many(conn, tenant, [t for t in targets if t not in cache]))
        frontier = [cache[t] for t in targets if t in cache]
    return cache.get


def types(conn: sqlite3.Connection, tenant: str) -> list[TypeInfo]:
    counts = dict(
        conn.execute(
            "SELECT type, count(*) FROM entity_types WHERE tenant = ? GROUP BY type", (tenant,)
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


def attributes(conn: sqlite3.Connection, tenant: str) -> list[AttributeInfo]:
    infos: dict[str, AttributeInfo] = {}
    for attr, n in conn.execute(
        "SELECT attr, count(DISTINCT pk) FROM entity_attrs WHERE tenant = ? GROUP BY attr",
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
