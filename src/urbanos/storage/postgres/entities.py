"""Entities in PostgreSQL: JSONB documents in the tenant's schema, GIN and PostGIS indexes.

Every function takes the tenant's schema; table names are composed with
``psycopg.sql.Identifier`` and every value is a bound parameter. ``query`` narrows
candidates in SQL (``filters``) and evaluates what SQL cannot decide exactly with
``core.selection.matches``, in insertion (``pk``) order, like the SQLite store.

PostgreSQL text and JSONB cannot hold the character U+0000, which JSON allows in strings:
a write carrying one is refused as bad request data rather than failing as a server error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import psycopg
import shapely
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from shapely.geometry import shape

from urbanos.core import geo
from urbanos.core.query import EntityResolver
from urbanos.core.selection import EntityQuery, Pager, hop_targets, linked_steps
from urbanos.errors import BadRequestData
from urbanos.storage.base import AttributeInfo, Page, TypeInfo, Write
from urbanos.storage.index_values import scalars
from urbanos.storage.postgres import filters
from urbanos.types import JSONObject

#: candidates fetched per round trip when Python decides the rest of the query
BATCH = 500


def _t(schema: str, table: str = "entities") -> sql.Identifier:
    return sql.Identifier(schema, table)


async def get(conn: AsyncConnection, schema: str, entity_id: str) -> JSONObject | None:
    cur = await conn.execute(
        sql.SQL("SELECT doc FROM {} WHERE id = %s").format(_t(schema)), (entity_id,)
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def get_many(
    conn: AsyncConnection, schema: str, ids: Iterable[str], *, for_update: bool = False
) -> dict[str, JSONObject]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    lock = sql.SQL(" ORDER BY id FOR UPDATE") if for_update else sql.SQL("")
    cur = await conn.execute(
        sql.SQL("SELECT id, doc FROM {} WHERE id = ANY(%s::text[]){}").format(_t(schema), lock),
        (wanted,),
    )
    return {eid: doc for eid, doc in await cur.fetchall()}


# --------------------------------------------------------------------------- writes


async def write(conn: AsyncConnection, schema: str, writes: list[Write]) -> None:
    """Apply writes in order; consecutive puts (and deletes) go as one batch."""
    try:
        run: list[Write] = []
        for w in writes:
            if run and run[-1].op != w.op:
                await _flush(conn, schema, run)
                run = []
            run.append(w)
        if run:
            await _flush(conn, schema, run)
    except psycopg.DataError as exc:
        # checked only once a write failed: the successful path pays nothing for it
        if any(w.entity is not None and has_nul(w.entity) for w in writes):
            raise BadRequestData(
                "strings containing the character U+0000 cannot be stored"
            ) from exc
        raise


def has_nul(value: Any) -> bool:
    """Whether U+0000 occurs in any key or string of a JSON value."""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any("\0" in k or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


async def _flush(conn: AsyncConnection, schema: str, run: list[Write]) -> None:
    if run[0].op == "delete":
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE id = ANY(%s::text[])").format(_t(schema)),
            ([w.entity_id for w in run],),
        )
        return
    docs = [w.entity for w in run if w.entity is not None]
    rows = [(d["id"], list(d.get("type", [])), list(d["attrs"]), Jsonb(d)) for d in docs]
    upsert = sql.SQL(
        """INSERT INTO {} (id, types, attrs, doc) VALUES (%s, %s, %s, %s)
           ON CONFLICT (id) DO UPDATE
           SET types = excluded.types, attrs = excluded.attrs, doc = excluded.doc"""
    ).format(_t(schema))
    unindex = sql.SQL(
        "DELETE FROM {} WHERE pk IN (SELECT pk FROM {} WHERE id = ANY(%s::text[]))"
    ).format(_t(schema, "geo_values"), _t(schema))
    latest = {d["id"]: d for d in docs}  # an id put twice in one run keeps its last shapes
    shapes = [row for doc in latest.values() for row in _geo_rows(doc)]
    index = sql.SQL(
        """INSERT INTO {} (pk, attr, geom, point, valid)
           SELECT (SELECT pk FROM {} WHERE id = %s), %s, g, CASE WHEN %s THEN g::geography END, %s
           FROM (SELECT ST_SetSRID(ST_Force2D(ST_GeomFromGeoJSON(%s::text)), 4326) AS g) s"""
    ).format(_t(schema, "geo_values"), _t(schema))
    values = _value_rows(latest.values())
    unindex_values = sql.SQL(
        "DELETE FROM {} WHERE pk IN (SELECT pk FROM {} WHERE id = ANY(%s::text[]))"
    ).format(_t(schema, "attr_values"), _t(schema))
    index_values = sql.SQL(
        """INSERT INTO {} (pk, attr, num, str)
           SELECT e.pk, v.attr, v.num, v.str
           FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[]) AS v(id, attr, num, str)
           JOIN {} e ON e.id = v.id"""
    ).format(_t(schema, "attr_values"), _t(schema))
    # no statement needs another's result: one round trip for all of them
    async with conn.pipeline(), conn.cursor() as cur:
        await cur.executemany(upsert, rows)
        await cur.execute(unindex, (list(latest),))
        if shapes:
            await cur.executemany(index, shapes)
        await cur.execute(unindex_values, (list(latest),))
        if values[0]:
            await cur.execute(index_values, values)


def _value_rows(docs: Iterable[JSONObject]) -> tuple[list[Any], ...]:
    """Columns (ids, attrs, nums, strs) of the ``attr_values`` rows of ``docs``."""
    ids: list[str] = []
    attrs: list[str] = []
    nums: list[float | None] = []
    strs: list[str | None] = []
    for doc in docs:
        for name, instances in doc["attrs"].items():
            for inst in instances:
                if inst.get("type") == "GeoProperty":
                    continue
                for num, text in scalars(inst):
                    ids.append(doc["id"])
                    attrs.append(name)
                    nums.append(num)
                    strs.append(text)
    return ids, attrs, nums, strs


def _geo_rows(doc: JSONObject) -> list[tuple[Any, ...]]:
    """(id, attr, is point, valid, GeoJSON) per GeoProperty instance with a valid geometry;
    others are stored but never selected by a geo-query, as with core.geo."""
    rows: list[tuple[Any, ...]] = []
    for name, instances in doc["attrs"].items():
        for inst in instances:
            if inst.get("type") != "GeoProperty":
                continue
            value = inst.get("value")
            try:
                geo.validate_geometry(value)
            except BadRequestData:
                continue
            # collections stay on the bounding box: GEOS before 3.13 may refuse to relate them
            valid = value["type"] != "GeometryCollection" and bool(shapely.is_valid(shape(value)))
            is_point = value["type"] == "Point"
            rows.append((doc["id"], name, is_point, valid, orjson.dumps(value).decode()))
    return rows


# --------------------------------------------------------------------------- queries


async def query(conn: AsyncConnection, schema: str, query: EntityQuery) -> Page:
    where: list[filters.Cond] = []
    exact = query.scope_q is None and query.q is None and query.geo is None
    exact = exact and query.view is None  # what the caller may see is decided in Python
    if query.ids is not None:
        if not query.ids:
            return Page([], 0 if query.count else None)
        where.append((sql.SQL("e.id = ANY(%s::text[])"), [list(query.ids)]))
    elif query.id_pattern is not None:
        exact = False
    if query.types is not None:
        where.append(filters.type_condition(query.types))
    if query.attrs is not None:
        where.append((sql.SQL("e.attrs && %s::text[]"), [sorted(query.attrs)]))
    if query.selectors is not None:
        cond, selectors_exact = filters.selectors_condition(query.selectors)
        exact = exact and selectors_exact
        if cond is not None:
            where.append(cond)
    if query.scope_q is not None:
        where.append((sql.SQL("e.doc ? 'scope'"), []))
    if query.q is not None and (cond := filters.q_condition(query.q, schema)) is not None:
        where.append(cond)
    if query.geo is not None and (cond := filters.geo_condition(query.geo, schema)) is not None:
        where.append(cond)
    clause = sql.SQL(" AND ").join([c for c, _ in where]) if where else sql.SQL("TRUE")
    params = [p for _, ps in where for p in ps]
    table = _t(schema)
    if exact and query.alive_at is not None:
        exact = not await expiring(conn, schema, query.alive_at, 1)  # Python hides those
    if exact and query.order is None:
        cur = await conn.execute(
            sql.SQL("SELECT e.doc FROM {} e WHERE {} ORDER BY e.pk LIMIT %s OFFSET %s").format(
                table, clause
            ),
            [*params, query.limit, query.offset],
        )
        docs = [doc for (doc,) in await cur.fetchall()]
        total = None
        if query.count:
            cur = await conn.execute(
                sql.SQL("SELECT count(*) FROM {} e WHERE {}").format(table, clause), params
            )
            row = await cur.fetchone()
            total = row[0] if row else 0
        return Page(docs, total)
    return await _evaluate(conn, schema, query, clause, params, exact)


async def _evaluate(
    conn: AsyncConnection,
    schema: str,
    query: EntityQuery,
    clause: sql.Composable,
    params: list[Any],
    exact: bool,
) -> Page:
    """Walk the candidates in pk order, a batch per round trip, and let Python decide."""
    steps = linked_steps(query.q) if query.q is not None else []
    select = sql.SQL(
        "SELECT e.pk, e.doc FROM {} e WHERE {} AND e.pk > %s ORDER BY e.pk LIMIT %s"
    ).format(_t(schema), clause)
    pager = Pager(query, exact=exact)
    last = 0
    while True:
        size = pager.batch_size(BATCH)
        cur = await conn.execute(select, [*params, last, size])
        rows = await cur.fetchall()
        if not rows:
            break
        last = rows[-1][0]
        batch = [doc for _, doc in rows]
        resolver = await _prefetch_linked(conn, schema, batch, steps) if steps else None
        if pager.feed(batch, resolver) or len(rows) < size:
            break
    return Page(*pager.result())


async def _prefetch_linked(
    conn: AsyncConnection, schema: str, batch: list[JSONObject], steps: list[frozenset[str]]
) -> EntityResolver:
    """The entities a batch's linked q terms reach, fetched one query per hop."""
    cache: dict[str, JSONObject] = {}
    frontier = batch
    for names in steps:
        targets = hop_targets(frontier, names)
        cache.update(await get_many(conn, schema, [t for t in targets if t not in cache]))
        frontier = [cache[t] for t in targets if t in cache]
    return cache.get


# --------------------------------------------------------------------------- discovery


async def expiring(conn: AsyncConnection, schema: str, now: str, limit: int) -> list[str]:
    """Ids whose earliest expiresAt is due (the partial index of migration 0003)."""
    cur = await conn.execute(
        sql.SQL(
            """SELECT id FROM {} WHERE doc ? 'nextExpiry' AND doc ->> 'nextExpiry' <= %s
               ORDER BY doc ->> 'nextExpiry' LIMIT %s"""
        ).format(_t(schema)),
        (now, limit),
    )
    return [row[0] for row in await cur.fetchall()]


async def types(conn: AsyncConnection, schema: str) -> list[TypeInfo]:
    table = _t(schema)
    cur = await conn.execute(
        sql.SQL("SELECT t, count(*) FROM {} e, unnest(e.types) t GROUP BY t").format(table)
    )
    infos = {t: TypeInfo(t, n, {}) for t, n in await cur.fetchall()}
    cur = await conn.execute(
        sql.SQL(
            """SELECT DISTINCT t, a.key, coalesce(i->>'type', 'Property')
               FROM {} e, unnest(e.types) t, jsonb_each(e.doc->'attrs') a,
                    jsonb_array_elements(a.value) i"""
        ).format(table)
    )
    for t, attr, kind in await cur.fetchall():
        infos[t].attributes.setdefault(attr, set()).add(kind)
    return list(infos.values())


async def attributes(conn: AsyncConnection, schema: str) -> list[AttributeInfo]:
    table = _t(schema)
    cur = await conn.execute(
        sql.SQL("SELECT a, count(*) FROM {} e, unnest(e.attrs) a GROUP BY a").format(table)
    )
    infos = {a: AttributeInfo(a, n, set(), set()) for a, n in await cur.fetchall()}
    cur = await conn.execute(
        sql.SQL(
            """SELECT DISTINCT a.key, coalesce(i->>'type', 'Property')
               FROM {} e, jsonb_each(e.doc->'attrs') a, jsonb_array_elements(a.value) i"""
        ).format(table)
    )
    for attr, kind in await cur.fetchall():
        infos[attr].kinds.add(kind)
    cur = await conn.execute(
        sql.SQL("SELECT DISTINCT a, t FROM {} e, unnest(e.attrs) a, unnest(e.types) t").format(
            table
        )
    )
    for attr, etype in await cur.fetchall():
        infos[attr].types.add(etype)
    return list(infos.values())
