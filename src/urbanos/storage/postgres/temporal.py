"""History in PostgreSQL, written in the entity store's transactions (catalog migration 0003).

The same three tables and the same row shapes as ``storage/sqlite/temporal.py`` (whose
docstring explains them), in the ``urbanos`` schema with a tenant column: history is read
per (tenant, entity) and the tables stay few. Times are integer microseconds; ``doc`` keeps
the instance as recorded and the pk is its instanceId. Aggregates over fixed periods are
grouped by PostgreSQL (``(ts - origin) / period``), scanning only the periods a page needs;
calendar periods (months, years) aggregate one period after the other.

Column names come from the closed ``COLUMN`` table and aggregate expressions from
``DIALECT.aggregates``; every value is a bound parameter. The history reads (pages, lastN,
periods) are the plans of ``storage/temporal_plans.py``, shared with SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from psycopg import AsyncConnection

import urbanos.storage.temporal_plans as plans
from urbanos.core.temporal import (
    NewInstance,
    derive_instances,
)
from urbanos.core.temporal_render import Bucket, EntityHistory
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import Write
from urbanos.storage.temporal import (
    ALL_DATASETS,
    Directive,
    Directives,
    HistoryRequest,
    TemporalEntity,
)
from urbanos.storage.temporal_rows import (
    dataset_key,
    entity_row,
    instance_columns,
    instance_from_row,
)
from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.storage.postgres import PostgresStore

__all__ = ["PostgresTemporalStore"]

_I = "urbanos.temporal_instances"
_S = "urbanos.temporal_series"
_E = "urbanos.temporal_entities"
R = TypeVar("R")


def _number(value: Any) -> Any:
    """numeric/bigint aggregates as Python numbers like SQLite's (int counts, float sums)."""
    if value is None or isinstance(value, int | float):
        return value
    return float(value)


DIALECT = plans.Dialect(
    instances=_I, mark="%s",
    aggregates={
        "totalCount": "count(*)", "distinctCount": "count(DISTINCT coalesce(num::text, val))",
        "sum": "sum(num)", "avg": "avg(num)", "min": "min(num)", "max": "max(num)",
        "sumsq": "sum(num * num)",
    },
    period_number="floor(({col} - %s)::numeric / %s)::bigint",
    number=_number,
)


async def _all(conn: AsyncConnection, query: str, params: Iterable[Any] = ()) -> list[Any]:
    cur = await conn.execute(query, tuple(params))  # type: ignore[arg-type]
    return await cur.fetchall()


async def _one(conn: AsyncConnection, query: str, params: Iterable[Any] = ()) -> Any:
    cur = await conn.execute(query, tuple(params))  # type: ignore[arg-type]
    return await cur.fetchone()


class PostgresTemporalStore:
    """History tables beside the entities; registers its write hook on the store."""

    def __init__(self, store: PostgresStore, clock: Callable[[], str] = now_iso) -> None:
        self.db = store.db
        self.clock = clock
        self.directives = Directives()
        store.write_hooks.append(self.record)

    async def open(self) -> None:
        return None  # the catalog migrations ran when the entity store opened

    async def close(self) -> None:
        return None

    # -- the write hook (runs inside the entity store's transaction) ----------------------
    async def record(self, conn: AsyncConnection, tenant: str, writes: list[Write]) -> None:
        pending: list[tuple[int, list[NewInstance], bool]] = []
        segment: list[tuple[Write, Directive]] = []
        ids: set[str] = set()

        async def flush() -> None:
            """The entity rows of the writes so far, in one statement, then their purges."""
            rows = await self._entity_rows(conn, tenant, [w for w, _ in segment])
            for (w, d), (pk, now) in zip(segment, rows, strict=True):
                for attr, dataset in d.purge:
                    await _purge_series(conn, pk, attr, dataset)
                pending.append((pk, derive_instances(w.before, w.entity, now, skip=d.skip), False))
                if d.explicit:
                    pending.append((pk, d.explicit, d.replace_observed))
            segment.clear()
            ids.clear()

        for w in writes:
            d = self.directives.take(w)
            if d is not None and d.purge_entity:
                await flush()  # the writes before it keep their order
                await _purge_entity(conn, tenant, w.entity_id)
                continue
            if w.entity_id in ids:
                await flush()  # one statement may upsert an id once
            segment.append((w, d or Directive()))
            ids.add(w.entity_id)
        await flush()
        if pending:
            await _insert(conn, pending)

    async def _entity_rows(
        self, conn: AsyncConnection, tenant: str, writes: list[Write]
    ) -> list[tuple[int, str]]:
        """(pk, time) of each write's ``temporal_entities`` row, upserted in one statement;
        the rows travel as one JSON array (arrays of jsonb are encoded per element)."""
        if not writes:
            return []
        items: list[list[Any]] = []
        times: list[str] = []
        for w in writes:
            now, types, scope, created, deleted = entity_row(w, self.clock())
            items.append([w.entity_id, types, scope, created, now, deleted])
            times.append(now)
        rows = await _all(
            conn,
            f"""INSERT INTO {_E} (tenant, id, types, scope, created_at, modified_at, deleted_at)
               SELECT %s, x->>0, x->1, NULLIF(x->2, 'null'), x->>3, x->>4, x->>5
               FROM jsonb_array_elements(%s::jsonb) AS x
               ON CONFLICT (tenant, id) DO UPDATE SET types = excluded.types,
                   scope = excluded.scope, modified_at = excluded.modified_at,
                   deleted_at = excluded.deleted_at
               RETURNING id, pk""",
            (tenant, orjson.dumps(items).decode()),
        )
        pks = {eid: int(pk) for eid, pk in rows}
        return [(pks[w.entity_id], now) for w, now in zip(writes, times, strict=True)]

    # -- reads ---------------------------------------------------------------------------
    async def entity(self, tenant: str, entity_id: str) -> TemporalEntity | None:
        async with self.db.connection() as conn:
            found = await _headers(conn, tenant, [entity_id])
        return found[0][1] if found else None

    async def select(
        self, tenant: str, ids: tuple[str, ...] | None, types: frozenset[str] | None
    ) -> list[TemporalEntity]:
        if ids is not None and not ids:
            return []
        query = ("SELECT pk, id, types, scope, created_at, modified_at, deleted_at"
                 f" FROM {_E} WHERE tenant = %s")
        params: list[Any] = [tenant]
        if ids is not None:
            query += " AND id = ANY(%s::text[])"
            params.append(list(ids))
        if types is not None:
            query += " AND types ?| %s::text[]"
            params.append(list(types))
        async with self.db.connection() as conn:
            return [_header(r) for r in await _all(conn, query + " ORDER BY pk", params)]

    async def series_names(self, tenant: str, entity_id: str) -> set[tuple[str, str | None]]:
        async with self.db.connection() as conn:
            rows = await _all(
                conn,
                f"""SELECT s.attr, s.dataset FROM {_S} s JOIN {_E} e ON e.pk = s.entity
                   WHERE e.tenant = %s AND e.id = %s
                   AND EXISTS (SELECT 1 FROM {_I} i WHERE i.series = s.pk)""",
                (tenant, entity_id),
            )
        return {(a, d or None) for a, d in rows}

    async def window(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> dict[str, dict[str, list[JSONObject]]]:
        return await self._over_series(tenant, entity_ids, request, plans.window)

    async def with_instances(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> set[str]:
        return await self._over_series(tenant, entity_ids, request, plans.with_instances)

    async def _over_series(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest,
        plan: Callable[[list[plans.SeriesRow], HistoryRequest, plans.Dialect], plans.Plan[R]],
    ) -> R:
        async with self.db.connection() as conn:
            series = await _series(conn, tenant, entity_ids, request)
            return await _run(conn, plan(series, request, DIALECT))

    async def history(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> list[EntityHistory]:
        if not entity_ids:
            return []
        async with self.db.connection() as conn:
            return await _history(conn, tenant, entity_ids, request)

    # -- temporal API writes -------------------------------------------------------------
    async def update_instance(
        self, tenant: str, entity_id: str, attr: str, number: int,
        change: Callable[[JSONObject], JSONObject],
    ) -> bool:
        async with self.db.transaction() as conn:
            row = await _find_instance(conn, tenant, entity_id, attr, number, for_update=True)
            if row is None:
                return False
            new = change(instance_from_row(number, row[1]))
            await conn.execute(
                f"""UPDATE {_I} SET observed_ts = %s, created_ts = %s, modified_ts = %s,
                   deleted_ts = %s, num = %s, val = %s, doc = %s WHERE pk = %s""",
                (*instance_columns(new), number),
            )
            return True

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, number: int) -> bool:
        async with self.db.transaction() as conn:
            if await _find_instance(conn, tenant, entity_id, attr, number) is None:
                return False
            await conn.execute(f"DELETE FROM {_I} WHERE pk = %s", (number,))
            return True

    async def delete_series(
        self, tenant: str, entity_id: str, attr: str, dataset_id: str | None
    ) -> bool:
        async with self.db.transaction() as conn:
            row = await _one(conn, f"SELECT pk FROM {_E} WHERE tenant = %s AND id = %s",
                             (tenant, entity_id))
            return row is not None and await _purge_series(conn, row[0], attr, dataset_id)

    async def delete_entity(self, tenant: str, entity_id: str) -> bool:
        async with self.db.transaction() as conn:
            return await _purge_entity(conn, tenant, entity_id)

    async def tenants(self) -> list[str]:
        async with self.db.connection() as conn:
            return [r[0] for r in await _all(conn, f"SELECT DISTINCT tenant FROM {_E}")]

    async def expire(self, tenant: str, before: int, *, batch: int = 5000) -> int:
        async with self.db.connection() as conn:
            series = [r[0] for r in await _all(
                conn, f"SELECT s.pk FROM {_S} s JOIN {_E} e ON e.pk = s.entity"
                " WHERE e.tenant = %s", (tenant,))]
        gone = 0
        for i in range(0, len(series), 64):
            async with self.db.transaction() as conn:
                cur = await conn.execute(
                    f"""DELETE FROM {_I} WHERE series = ANY(%s::bigint[])
                       AND coalesce(observed_ts, created_ts) < %s""",
                    (series[i:i + 64], before),
                )
                gone += cur.rowcount
        return gone


# ---- SQL helpers ------------------------------------------------------------------------------


def _header(row: tuple[Any, ...]) -> TemporalEntity:
    _, eid, types, scope, created, modified, deleted = row
    return TemporalEntity(eid, list(types), list(scope) if scope else None,
                          created, modified, deleted)


async def _headers(conn: AsyncConnection, tenant: str,
                   ids: list[str]) -> list[tuple[int, TemporalEntity]]:
    rows = await _all(
        conn,
        "SELECT pk, id, types, scope, created_at, modified_at, deleted_at"
        f" FROM {_E} WHERE tenant = %s AND id = ANY(%s::text[])",
        (tenant, ids),
    )
    found = {row[1]: (row[0], _header(row)) for row in rows}
    return [found[i] for i in ids if i in found]


async def _series(conn: AsyncConnection, tenant: str, entity_ids: list[str],
                  request: HistoryRequest) -> list[tuple[str, str, str | None, int]]:
    """(entity id, attribute, datasetId, series pk) of the series a request selects."""
    query = (f"SELECT e.id, s.attr, s.dataset, s.pk FROM {_S} s JOIN {_E} e ON e.pk = s.entity"
             " WHERE e.tenant = %s AND e.id = ANY(%s::text[])")
    params: list[Any] = [tenant, entity_ids]
    if request.attrs is not None:
        query += " AND s.attr = ANY(%s::text[])"
        params.append(list(request.attrs))
    if request.datasets is not None:
        query += " AND s.dataset = ANY(%s::text[])"
        params.append(["" if d == "@none" else d for d in request.datasets])
    rows = await _all(conn, query + " ORDER BY s.pk", params)
    return [(eid, attr, dataset or None, spk) for eid, attr, dataset, spk in rows]


async def _history(conn: AsyncConnection, tenant: str, entity_ids: list[str],
                   request: HistoryRequest) -> list[EntityHistory]:
    headers = await _headers(conn, tenant, entity_ids)
    series = await _series(conn, tenant, entity_ids, request)
    return await _run(conn, plans.history(entity_ids, headers, series, request, DIALECT,
                                          _calendar))


async def _run(conn: AsyncConnection, plan: plans.Plan[R]) -> R:
    """Answer a shared plan's reads on this connection; its result."""
    try:
        query, params, every = next(plan)
        while True:
            found = await (_all if every else _one)(conn, query, params)
            query, params, every = plan.send(found)
    except StopIteration as done:
        return cast(R, done.value)


def _calendar(p: plans.Periods) -> plans.Plan[list[Bucket]]:
    """Months and years have no fixed length: walk the periods from the origin over the
    series' extent and aggregate each non-empty one (a handful per page)."""
    period, query = p.aggregation.period, p.query
    edges = [p.origin]
    while edges[-1] <= p.extent[1]:
        edges.append(period.add_to(edges[-1]))
    spans = [(lo, hi) for lo, hi in zip(edges, edges[1:], strict=False) if hi > p.extent[0]]
    if p.backwards:
        spans.reverse()
    out: list[Bucket] = []
    for lo, hi in spans:
        floor = max(lo, query.start) if query.start is not None else lo
        ceiling = min(hi, query.end) if query.end is not None else hi
        row = yield (f"SELECT count(*), {p.select} FROM {_I} WHERE series = %s"
                     f" AND {p.col} >= %s AND {p.col} < %s", (p.series, floor, ceiling), False)
        if row[0]:
            out.append(plans.bucket(lo, hi, row[1:], p.aggregation.methods, DIALECT))
            if len(out) >= p.wanted:
                break
    return out














async def _insert(conn: AsyncConnection,
                  pending: list[tuple[int, list[NewInstance], bool]]) -> None:
    """Insert instances for (entity pk, instances, replace same observation) groups: the
    series they need in one statement, then the rows."""
    keys = sorted({(pk, new.attr, dataset_key(new.dataset_id))
                   for pk, items, _ in pending for new in items})
    if not keys:
        return
    rows = await _all(
        conn,
        f"""WITH k AS (SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[])
                          AS k(entity, attr, dataset)),
               ins AS (INSERT INTO {_S} (entity, attr, dataset) SELECT * FROM k
                       ON CONFLICT DO NOTHING RETURNING pk, entity, attr, dataset)
           SELECT pk, entity, attr, dataset FROM ins
           UNION ALL
           SELECT s.pk, s.entity, s.attr, s.dataset FROM {_S} s
           JOIN k ON (s.entity, s.attr, s.dataset) = (k.entity, k.attr, k.dataset)""",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    )
    series = {(entity, attr, dataset): spk for spk, entity, attr, dataset in rows}
    if len(series) < len(keys):  # created by a transaction that committed meanwhile
        rows = await _all(
            conn, f"SELECT pk, entity, attr, dataset FROM {_S} WHERE entity = ANY(%s::bigint[])",
            (sorted({k[0] for k in keys}),))
        series = {(entity, attr, dataset): spk for spk, entity, attr, dataset in rows}
    values: list[tuple[Any, ...]] = []
    replaced: list[tuple[int, int]] = []
    for pk, items, replace_observed in pending:
        for new in items:
            spk = series[(pk, new.attr, dataset_key(new.dataset_id))]
            cols = instance_columns(new.instance)
            if replace_observed and cols[0] is not None:
                replaced.append((spk, cols[0]))
            values.append((spk, *cols))
    async with conn.cursor() as cur:
        if replaced:
            await cur.executemany(
                f"DELETE FROM {_I} WHERE series = %s AND observed_ts = %s", replaced)
        await cur.executemany(
            f"""INSERT INTO {_I} (series, observed_ts, created_ts, modified_ts, deleted_ts,
                   num, val, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            values,
        )


async def _purge_series(conn: AsyncConnection, entity: int, attr: str,
                        dataset: str | None) -> bool:
    query = f"DELETE FROM {_S} WHERE entity = %s AND attr = %s"
    params: list[Any] = [entity, attr]
    if dataset != ALL_DATASETS:
        query += " AND dataset = %s"
        params.append(dataset_key(dataset))
    async with conn.transaction():  # a savepoint: the count and the delete agree
        found = await _one(
            conn, f"SELECT count(*) FROM {_I} i JOIN ({query.replace('DELETE', 'SELECT pk', 1)})"
            " s ON s.pk = i.series", params)
        await conn.execute(query, tuple(params))  # type: ignore[arg-type]
    return bool(found[0])


async def _purge_entity(conn: AsyncConnection, tenant: str, entity_id: str) -> bool:
    cur = await conn.execute(f"DELETE FROM {_E} WHERE tenant = %s AND id = %s",
                             (tenant, entity_id))
    return cur.rowcount > 0


async def _find_instance(conn: AsyncConnection, tenant: str, entity_id: str, attr: str,
                         number: int, *, for_update: bool = False) -> tuple[int, str] | None:
    row = await _one(
        conn,
        f"""SELECT i.pk, i.doc FROM {_I} i JOIN {_S} s ON s.pk = i.series
           JOIN {_E} e ON e.pk = s.entity
           WHERE i.pk = %s AND s.attr = %s AND e.tenant = %s AND e.id = %s"""
        + (" FOR UPDATE OF i" if for_update else ""),
        (number, attr, tenant, entity_id),
    )
    return (row[0], row[1]) if row else None
