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
from urbanos.core.expiry import EXPIRY_KEY
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
from urbanos.storage.sqlite.names import ID, Names, ids_in
from urbanos.storage.sqlite.names import SCHEMA as NAMES_SCHEMA
from urbanos.types import JSONObject

T = TypeVar("T")

#: the index tables; names (types, attributes, kinds) are interned ids (``names``)
TABLES = [
    """CREATE TABLE IF NOT EXISTS entity_types (
        tenant TEXT NOT NULL, type INTEGER NOT NULL, pk INTEGER NOT NULL,
        PRIMARY KEY (tenant, type, pk)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS entity_attrs (
        tenant TEXT NOT NULL, attr INTEGER NOT NULL, kind INTEGER NOT NULL, pk INTEGER NOT NULL,
        PRIMARY KEY (tenant, attr, pk, kind)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS geo_keys (
        gid INTEGER PRIMARY KEY, tenant TEXT NOT NULL, pk INTEGER NOT NULL,
        attr INTEGER NOT NULL)""",
    q_sql.VALUES_TABLE,
]
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY)""",
    """CREATE TABLE IF NOT EXISTS entities (
        pk INTEGER PRIMARY KEY, tenant TEXT NOT NULL, id TEXT NOT NULL, doc BLOB NOT NULL,
        UNIQUE (tenant, id))""",
    *NAMES_SCHEMA,
    *TABLES,
    """CREATE VIRTUAL TABLE IF NOT EXISTS geo_index USING rtree (gid, minx, maxx, miny, maxy)""",
    *q_sql.SCHEMA,
    # entities with an expiresAt (core.expiry): when the earliest of them falls due
    """CREATE TABLE IF NOT EXISTS entity_expiry (
        pk INTEGER PRIMARY KEY, tenant TEXT NOT NULL, at TEXT NOT NULL)""",
]
#: created by ``upgrade`` once the tables have their current shape
INDEXES = [
    """CREATE INDEX IF NOT EXISTS entity_types_pk ON entity_types (pk)""",
    """CREATE INDEX IF NOT EXISTS entity_attrs_pk ON entity_attrs (pk)""",
    """CREATE INDEX IF NOT EXISTS geo_keys_pk ON geo_keys (pk)""",
    *q_sql.VALUE_INDEXES,
    """CREATE INDEX IF NOT EXISTS entity_expiry_at ON entity_expiry (at)""",
]


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring the index tables of a file written by an earlier version to this shape, then
    create the indexes (idempotent; runs at every open)."""
    declared = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(entity_attrs)")}
    if declared.get("attr") == "TEXT":
        _intern(conn)
    for statement in INDEXES:
        conn.execute(statement)


def _intern(conn: sqlite3.Connection) -> None:
    """Rebuild index tables that spell names out (files of versions before ``names``);
    value rows older still, without the entity's types, gain them on the way."""
    old = ("entity_types", "entity_attrs", "geo_keys", "attr_values")
    for table in old:
        conn.execute(f"ALTER TABLE {table} RENAME TO old_{table}")  # its indexes go with it
    typed = any(row[1] == "type" for row in conn.execute("PRAGMA table_info(old_attr_values)"))
    conn.execute(
        """INSERT OR IGNORE INTO names (name)
           SELECT type FROM old_entity_types UNION SELECT attr FROM old_entity_attrs
           UNION SELECT kind FROM old_entity_attrs UNION SELECT attr FROM old_geo_keys
           UNION SELECT attr FROM old_attr_values"""
    )
    for statement in TABLES:
        conn.execute(statement)
    conn.execute(
        """INSERT INTO entity_types (tenant, type, pk)
           SELECT o.tenant, n.id, o.pk FROM old_entity_types o JOIN names n ON n.name = o.type"""
    )
    conn.execute(
        """INSERT INTO entity_attrs (tenant, attr, kind, pk)
           SELECT o.tenant, a.id, k.id, o.pk FROM old_entity_attrs o
           JOIN names a ON a.name = o.attr JOIN names k ON k.name = o.kind"""
    )
    conn.execute(
        """INSERT INTO geo_keys (gid, tenant, pk, attr)
           SELECT o.gid, o.tenant, o.pk, n.id FROM old_geo_keys o JOIN names n ON n.name = o.attr"""
    )
    if typed:
        conn.execute(
            """INSERT INTO attr_values (tenant, attr, type, num, str, pk)
               SELECT o.tenant, a.id, t.id, o.num, o.str, o.pk FROM old_attr_values o
               JOIN names a ON a.name = o.attr LEFT JOIN names t ON t.name = o.type"""
        )
    else:
        conn.execute(
            """INSERT INTO attr_values (tenant, attr, type, num, str, pk)
               SELECT o.tenant, a.id, t.type, o.num, o.str, o.pk FROM old_attr_values o
               JOIN names a ON a.name = o.attr LEFT JOIN entity_types t ON t.pk = o.pk"""
        )
    for table in old:
        conn.execute(f"DROP TABLE old_{table}")


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


def put(conn: sqlite3.Connection, names: Names, tenant: str, entity: JSONObject) -> None:
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
    rows = _Rows(conn, names, tenant, types)
    if row is None:
        pk = conn.execute(
            "INSERT INTO entities (tenant, id, doc) VALUES (?, ?, ?)", (tenant, entity["id"], doc)
        ).lastrowid
        assert pk is not None
        _index_types(conn, tenant, pk, rows.type_ids)
        _index_attrs(conn, rows.of(pk, attrs))
        _index_expiry(conn, tenant, pk, entity.get(EXPIRY_KEY), None)
        return
    pk, stored = row
    conn.execute("UPDATE entities SET doc = ? WHERE pk = ?", (doc, pk))
    old: JSONObject = orjson.loads(stored)
    _index_expiry(conn, tenant, pk, entity.get(EXPIRY_KEY), old.get(EXPIRY_KEY))
    retyped = old.get("type", []) != types  # value rows carry the types: all rewritten
    if retyped:
        conn.execute("DELETE FROM entity_types WHERE pk = ?", (pk,))
        _index_types(conn, tenant, pk, rows.type_ids)
    old_attrs: dict[str, list[JSONObject]] = old["attrs"]
    for name in {**old_attrs, **attrs}:
        before, after = old_attrs.get(name), attrs.get(name)
        if before != after or retyped:
            _reindex_attr(conn, pk, names.id(conn, name),
                          rows.of(pk, {name: before} if before else {}),
                          rows.of(pk, {name: after} if after else {}), retyped)


def _reindex_attr(
    conn: sqlite3.Connection, pk: int, attr: int, old: AttrRows, new: AttrRows, retyped: bool
) -> None:
    """Rewrite only the index rows of one attribute that differ: a new value leaves its
    name and kind rows alone, and a non-geo attribute never touches the R*Tree."""
    (old_kinds, old_values, old_shapes), (kinds, values, shapes) = old, new
    if old_kinds != kinds:
        conn.executemany(
            "DELETE FROM entity_attrs WHERE tenant = ? AND attr = ? AND kind = ? AND pk = ?",
            old_kinds - kinds,
        )
    if old_values != values or retyped:  # value rows carry the entity's types
        conn.execute("DELETE FROM attr_values WHERE pk = ? AND attr = ?", (pk, attr))
    else:
        values = []
    if old_shapes != shapes:
        conn.execute(
            "DELETE FROM geo_index WHERE gid IN (SELECT gid FROM geo_keys WHERE pk = ? AND attr = ?)",
            (pk, attr),
        )
        conn.execute("DELETE FROM geo_keys WHERE pk = ? AND attr = ?", (pk, attr))
    else:
        shapes = []
    _index_attrs(conn, (kinds - old_kinds, values, shapes))


def _index_types(conn: sqlite3.Connection, tenant: str, pk: int, type_ids: list[int]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO entity_types (tenant, type, pk) VALUES (?, ?, ?)",
        [(tenant, t, pk) for t in type_ids],
    )


#: an entity's attribute-name, scalar-value and bounding-box rows
AttrRows = tuple[
    set[tuple[str, int, int, int]],
    list[tuple[str, int, int | None, float | None, str | None, int]],
    list[tuple[str, int, int, tuple[float, float, float, float]]],
]


class _Rows:
    """The index rows of one entity's attributes, names as their ids."""

    def __init__(self, conn: sqlite3.Connection, names: Names, tenant: str,
                 types: list[str]) -> None:
        self.conn, self.names, self.tenant = conn, names, tenant
        self.type_ids = [names.id(conn, t) for t in types]

    def of(self, pk: int, attrs: dict[str, list[JSONObject]]) -> AttrRows:
        tenant, conn, intern = self.tenant, self.conn, self.names.id
        kinds: set[tuple[str, int, int, int]] = set()
        values: list[tuple[str, int, int | None, float | None, str | None, int]] = []
        typed: list[int | None] = [*self.type_ids] or [None]
        shapes: list[tuple[str, int, int, tuple[float, float, float, float]]] = []
        for name, instances in attrs.items():
            attr = intern(conn, name)
            for inst in instances:
                kind = inst.get("type", "Property")
                kinds.add((tenant, attr, intern(conn, kind), pk))
                if kind != "GeoProperty":
                    values.extend((tenant, attr, t, num, text, pk)
                                  for num, text in scalars(inst) for t in typed)
                    continue
                try:
                    shapes.append((tenant, pk, attr, geo.geometry_bbox(inst["value"])))
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
    for tenant, pk, attr, (minx, miny, maxx, maxy) in shapes:
        gid = conn.execute(
            "INSERT INTO geo_keys (tenant, pk, attr) VALUES (?, ?, ?)", (tenant, pk, attr)
        ).lastrowid
        conn.execute(
            "INSERT INTO geo_index (gid, minx, maxx, miny, maxy) VALUES (?, ?, ?, ?, ?)",
            (gid, minx, maxx, miny, maxy),
        )


def _index_expiry(
    conn: sqlite3.Connection, tenant: str, pk: int, at: str | None, was: str | None
) -> None:
    if at == was:
        return
    if at is None:
        conn.execute("DELETE FROM entity_expiry WHERE pk = ?", (pk,))
    else:
        conn.execute(
            "INSERT OR REPLACE INTO entity_expiry (pk, tenant, at) VALUES (?, ?, ?)",
            (pk, tenant, at),
        )


def expiring(conn: sqlite3.Connection, now: str, limit: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        """SELECT x.tenant, e.id FROM entity_expiry x JOIN entities e ON e.pk = x.pk
           WHERE x.at <= ? ORDER BY x.at LIMIT ?""",
        (now, limit),
    )
    return [(tenant, eid) for tenant, eid in rows]


def _unindex(conn: sqlite3.Connection, pk: int) -> None:
    conn.execute("DELETE FROM entity_expiry WHERE pk = ?", (pk,))
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
    exact = exact and query.view is None  # what the caller may see is decided in Python
    if query.ids is not None:
        if not query.ids:
            return Page([], 0 if query.count else None)
        where.append(f"e.id IN ({','.join('?' * len(query.ids))})")
        params.extend(query.ids)
    filters: list[q_sql.Filter] = []
    if query.types is not None:
        type_names = simple_type_set(query.types)
        if type_names is None:
            exact = False
        else:
            filters.append(q_sql.Filter.of(
                "entity_types", f"tenant = ? AND type IN {ids_in(len(type_names))}",
                [tenant, *type_names],
            ))
    if query.attrs is not None:
        filters.append(q_sql.Filter.of(
            "entity_attrs", f"tenant = ? AND attr IN {ids_in(len(query.attrs))}",
            [tenant, *query.attrs],
        ))
    if query.geo is not None:
        box = query.geo.candidate_bbox()
        if box is not None:
            minx, miny, maxx, maxy = box
            filters.append(q_sql.Filter.of(
                "geo_keys k JOIN geo_index g ON g.gid = k.gid",
                f"k.tenant = ? AND k.attr = {ID} AND g.minx <= ? AND g.maxx >= ? "
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
    if exact and query.alive_at is not None:
        exact = conn.execute(  # something of the tenant has expired: Python hides it
            "SELECT 1 FROM entity_expiry WHERE at <= ? AND tenant = ? LIMIT 1",
            (query.alive_at, tenant),
        ).fetchone() is None
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
            """SELECT n.name, c.n FROM names n JOIN (
                 SELECT type, count(*) AS n FROM entity_types WHERE tenant = ? GROUP BY type
               ) c ON c.type = n.id""",
            (tenant,),
        ).fetchall()
    )
    infos = {t: TypeInfo(t, n, {}) for t, n in counts.items()}
    for t, attr, kind in conn.execute(
        """SELECT tn.name, an.name, kn.name FROM (
             SELECT DISTINCT t.type, a.attr, a.kind FROM entity_types t
             JOIN entity_attrs a ON a.tenant = t.tenant AND a.pk = t.pk
             WHERE t.tenant = ?
           ) d JOIN names tn ON tn.id = d.type JOIN names an ON an.id = d.attr
           JOIN names kn ON kn.id = d.kind""",
        (tenant,),
    ):
        infos[t].attributes.setdefault(attr, set()).add(kind)
    return list(infos.values())


def attributes(conn: sqlite3.Connection, tenant: str) -> list[AttributeInfo]:
    infos: dict[str, AttributeInfo] = {}
    for attr, n in conn.execute(
        """SELECT n.name, c.n FROM names n JOIN (
             SELECT attr, count(DISTINCT pk) AS n FROM entity_attrs WHERE tenant = ?
             GROUP BY attr
           ) c ON c.attr = n.id""",
        (tenant,),
    ):
        infos[attr] = AttributeInfo(attr, n, set(), set())
    for attr, kind in conn.execute(
        """SELECT an.name, kn.name FROM (
             SELECT DISTINCT attr, kind FROM entity_attrs WHERE tenant = ?
           ) d JOIN names an ON an.id = d.attr JOIN names kn ON kn.id = d.kind""",
        (tenant,),
    ):
        infos[attr].kinds.add(kind)
    for attr, etype in conn.execute(
        """SELECT an.name, tn.name FROM (
             SELECT DISTINCT a.attr, t.type FROM entity_attrs a
             JOIN entity_types t ON t.tenant = a.tenant AND t.pk = a.pk
             WHERE a.tenant = ?
           ) d JOIN names an ON an.id = d.attr JOIN names tn ON tn.id = d.type""",
        (tenant,),
    ):
        infos[attr].types.add(etype)
    return list(infos.values())
