"""History in SQLite, in the entity store's file and transactions.

Tables (created on open)::

    temporal_entities  (pk, tenant, id, types, scope, created_at, modified_at, deleted_at)
    temporal_series    (pk, entity -> temporal_entities, attr, dataset)   one per
                       (tenant, entity, attribute, datasetId); '' is the default instance;
                       attribute and datasetId are interned names (``names``)
    temporal_instances (pk AUTOINCREMENT, series -> temporal_series, observed_ts,
                        created_ts, modified_ts, deleted_ts, num, val, doc)

Times are integer microseconds, so range scans compare numbers whatever the spelling of the
instant; ``doc`` keeps the instance as recorded (``observedAt`` verbatim) and the pk is its
instanceId (``urn:ngsi-ld:Instance:<pk>``, never reused). The index ``(series,
observed_ts)`` serves range scans of a (tenant, entity, attribute, datasetId) series by
observation time, the default and by far the common case; queries on ``createdAt``,
``modifiedAt`` or ``deletedAt`` read the series through the same prefix and filter (one
index fewer to maintain on every write).

Aggregates are computed by SQLite, per series::

    SELECT (ts - :origin) / :period AS b, count(*), avg(num), ...
    FROM temporal_instances WHERE series = ? AND ts >= ? AND ts < ?
    GROUP BY b ORDER BY b LIMIT :n

scanning only as many periods as the page needs (the scanned span grows until it holds
``limit + 1`` non-empty periods). Calendar periods (months, years) bucket through a small
SQL function, since their length varies.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson

import urbanos.storage.temporal_plans as plans
from urbanos.core.temporal import (
    Duration,
    NewInstance,
    derive_instances,
)
from urbanos.core.temporal_render import (
    Bucket,
    EntityHistory,
    bucket_start,
)
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import Write
from urbanos.storage.sqlite.names import ID, Names, ids_in
from urbanos.storage.sqlite.names import SCHEMA as NAMES_SCHEMA
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
    from urbanos.storage.sqlite import SqliteStore

SERIES_TABLE = """CREATE TABLE IF NOT EXISTS temporal_series (
        pk INTEGER PRIMARY KEY, entity INTEGER NOT NULL, attr INTEGER NOT NULL,
        dataset INTEGER NOT NULL, UNIQUE (entity, attr, dataset))"""
SCHEMA = [
    *NAMES_SCHEMA,
    """CREATE TABLE IF NOT EXISTS temporal_entities (
        pk INTEGER PRIMARY KEY, tenant TEXT NOT NULL, id TEXT NOT NULL, types TEXT NOT NULL,
        scope TEXT, created_at TEXT NOT NULL, modified_at TEXT NOT NULL, deleted_at TEXT,
        UNIQUE (tenant, id))""",
    SERIES_TABLE,
    """CREATE TABLE IF NOT EXISTS temporal_instances (
        pk INTEGER PRIMARY KEY AUTOINCREMENT, series INTEGER NOT NULL,
        observed_ts INTEGER, created_ts INTEGER NOT NULL, modified_ts INTEGER NOT NULL,
        deleted_ts INTEGER, num REAL, val TEXT, doc TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS temporal_instances_observed
        ON temporal_instances (series, observed_ts)""",
]
DIALECT = plans.Dialect(
    instances="temporal_instances", mark="?",
    aggregates={
        "totalCount": "count(*)", "distinctCount": "count(DISTINCT coalesce(num, val))",
        "sum": "sum(num)", "avg": "avg(num)", "min": "min(num)", "max": "max(num)",
        "sumsq": "sum(num * num)",
    },
    period_number="({col} - ?) / ?",
)
R = TypeVar("R")


class SqliteTemporalStore:
    """History tables in the SQLite store's file; registers its hook on the store."""

    def __init__(self, store: SqliteStore, clock: Callable[[], str] = now_iso) -> None:
        self.db = store.db
        self.names = store.names  # the entity store's: writes run on the same writer thread
        self.clock = clock
        self.directives = Directives()
        store.write_hooks.append(self.record)

    async def open(self) -> None:
        def migrate(conn: sqlite3.Connection) -> None:
            for stmt in SCHEMA:
                conn.execute(stmt)
            _upgrade(conn)

        await self.db.transact(migrate)

    async def close(self) -> None:
        return None

    # -- the write hook (runs inside the entity store's transaction) ----------------------
    def record(self, conn: sqlite3.Connection, tenant: str, writes: list[Write]) -> None:
        """Record a batch of writes: entity rows one by one, then every series and instance
        of the batch in a few set-wise statements."""
        pending: list[tuple[int, list[NewInstance], bool]] = []
        for w in writes:
            d = self.directives.take(w)
            if d is not None and d.purge_entity:
                _purge_entity(conn, tenant, w.entity_id)
                continue
            pk, now = self._entity_row(conn, tenant, w)
            d = d or Directive()
            for attr, dataset in d.purge:
                _purge_series(conn, pk, attr, dataset)
            pending.append((pk, derive_instances(w.before, w.entity, now, skip=d.skip), False))
            if d.explicit:
                pending.append((pk, d.explicit, d.replace_observed))
        if pending:
            _insert(conn, self.names, pending)

    def _entity_row(self, conn: sqlite3.Connection, tenant: str, w: Write) -> tuple[int, str]:
        now, types, scope, created, deleted = entity_row(w, self.clock())
        (pk,) = conn.execute(
            """INSERT INTO temporal_entities
                   (tenant, id, types, scope, created_at, modified_at, deleted_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (tenant, id) DO UPDATE SET types = excluded.types,
                   scope = excluded.scope, modified_at = excluded.modified_at,
                   deleted_at = excluded.deleted_at
               RETURNING pk""",
            (tenant, w.entity_id, orjson.dumps(types).decode(),
             orjson.dumps(scope).decode() if scope else None, created, now, deleted),
        ).fetchone()
        return pk, now

    # -- reads ---------------------------------------------------------------------------
    async def entity(self, tenant: str, entity_id: str) -> TemporalEntity | None:
        found = await self.db.read(lambda c: _headers(c, tenant, [entity_id]))
        return found[0][1] if found else None

    async def select(
        self, tenant: str, ids: tuple[str, ...] | None, types: frozenset[str] | None
    ) -> list[TemporalEntity]:
        def run(conn: sqlite3.Connection) -> list[TemporalEntity]:
            sql = ("SELECT pk, id, types, scope, created_at, modified_at, deleted_at"
                   " FROM temporal_entities WHERE tenant = ?")
            params: list[Any] = [tenant]
            if ids is not None:
                sql += f" AND id IN ({','.join('?' * len(ids))})"
                params.extend(ids)
            if types is not None:
                sql += (" AND EXISTS (SELECT 1 FROM json_each(types) WHERE value IN"
                        f" ({','.join('?' * len(types))}))")
                params.extend(types)
            return [_header(row) for row in conn.execute(sql + " ORDER BY pk", params)]

        if ids is not None and not ids:
            return []
        return await self.db.read(run)

    async def series_names(self, tenant: str, entity_id: str) -> set[tuple[str, str | None]]:
        def run(conn: sqlite3.Connection) -> set[tuple[str, str | None]]:
            rows = conn.execute(
                """SELECT a.name, d.name FROM temporal_series s
                   JOIN temporal_entities e ON e.pk = s.entity
                   JOIN names a ON a.id = s.attr JOIN names d ON d.id = s.dataset
                   WHERE e.tenant = ? AND e.id = ?
                   AND EXISTS (SELECT 1 FROM temporal_instances i WHERE i.series = s.pk)""",
                (tenant, entity_id),
            )
            return {(a, d or None) for a, d in rows}

        return await self.db.read(run)

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
        def run(conn: sqlite3.Connection) -> R:
            series = list(_series(conn, tenant, entity_ids, request))
            return _run(conn, plan(series, request, DIALECT))

        return await self.db.read(run)

    async def history(
        self, tenant: str, entity_ids: list[str], request: HistoryRequest
    ) -> list[EntityHistory]:
        return await self.db.read(lambda conn: _history(conn, tenant, entity_ids, request))

    # -- temporal API writes -------------------------------------------------------------
    async def update_instance(
        self, tenant: str, entity_id: str, attr: str, number: int,
        change: Callable[[JSONObject], JSONObject],
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = _find_instance(conn, tenant, entity_id, attr, number)
            if row is None:
                return False
            new = change(instance_from_row(number, row[1]))
            conn.execute(
                """UPDATE temporal_instances SET observed_ts = ?, created_ts = ?,
                   modified_ts = ?, deleted_ts = ?, num = ?, val = ?, doc = ? WHERE pk = ?""",
                (*instance_columns(new), number),
            )
            return True

        return await self.db.transact(run)

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, number: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            if _find_instance(conn, tenant, entity_id, attr, number) is None:
                return False
            conn.execute("DELETE FROM temporal_instances WHERE pk = ?", (number,))
            return True

        return await self.db.transact(run)

    async def delete_series(
        self, tenant: str, entity_id: str, attr: str, dataset_id: str | None
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT pk FROM temporal_entities WHERE tenant = ? AND id = ?",
                               (tenant, entity_id)).fetchone()
            return row is not None and _purge_series(conn, row[0], attr, dataset_id)

        return await self.db.transact(run)

    async def delete_entity(self, tenant: str, entity_id: str) -> bool:
        return await self.db.transact(lambda conn: _purge_entity(conn, tenant, entity_id))

    async def tenants(self) -> list[str]:
        return await self.db.read(lambda conn: [r[0] for r in conn.execute(
            "SELECT DISTINCT tenant FROM temporal_entities")])

    async def expire(self, tenant: str, before: int, *, batch: int = 5000) -> int:
        series = await self.db.read(lambda conn: [r[0] for r in conn.execute(
            """SELECT s.pk FROM temporal_series s JOIN temporal_entities e ON e.pk = s.entity
               WHERE e.tenant = ?""", (tenant,))])
        gone = 0
        for i in range(0, len(series), 64):
            chunk = series[i:i + 64]

            def run(conn: sqlite3.Connection, chunk: list[int] = chunk) -> int:
                n = 0
                for spk in chunk:
                    n += conn.execute(
                        "DELETE FROM temporal_instances WHERE series = ? AND observed_ts < ?",
                        (spk, before)).rowcount
                    n += conn.execute(
                        """DELETE FROM temporal_instances WHERE series = ?
                           AND observed_ts IS NULL AND created_ts < ?""",
                        (spk, before)).rowcount
                return n

            gone += await self.db.transact(run)
        return gone


# ---- SQL helpers (run on the writer or a reader thread) -------------------------------------


def _header(row: tuple[Any, ...]) -> TemporalEntity:
    _, eid, types, scope, created, modified, deleted = row
    return TemporalEntity(eid, orjson.loads(types), orjson.loads(scope) if scope else None,
                          created, modified, deleted)


def _headers(conn: sqlite3.Connection, tenant: str,
             ids: list[str]) -> list[tuple[int, TemporalEntity]]:
    rows = conn.execute(
        "SELECT pk, id, types, scope, created_at, modified_at, deleted_at"
        f" FROM temporal_entities WHERE tenant = ? AND id IN ({','.join('?' * len(ids))})",
        (tenant, *ids),
    ).fetchall()
    found = {row[1]: (row[0], _header(row)) for row in rows}
    return [found[i] for i in ids if i in found]


def _series(conn: sqlite3.Connection, tenant: str, entity_ids: list[str],
            request: HistoryRequest) -> Iterable[tuple[str, str, str | None, int]]:
    """(entity id, attribute, datasetId, series pk) of the series a request selects."""
    for chunk in (entity_ids[i:i + 500] for i in range(0, len(entity_ids), 500)):
        sql = ("SELECT e.id, a.name, d.name, s.pk FROM temporal_series s"
               " JOIN temporal_entities e ON e.pk = s.entity"
               " JOIN names a ON a.id = s.attr JOIN names d ON d.id = s.dataset"
               f" WHERE e.tenant = ? AND e.id IN ({','.join('?' * len(chunk))})")
        params: list[Any] = [tenant, *chunk]
        if request.attrs is not None:
            sql += f" AND s.attr IN {ids_in(len(request.attrs))}"
            params.extend(request.attrs)
        if request.datasets is not None:
            wanted = ["" if d == "@none" else d for d in request.datasets]
            sql += f" AND s.dataset IN {ids_in(len(wanted))}"
            params.extend(wanted)
        for eid, attr, dataset, spk in conn.execute(sql + " ORDER BY s.pk", params):
            yield eid, attr, dataset or None, spk


def _history(conn: sqlite3.Connection, tenant: str, entity_ids: list[str],
             request: HistoryRequest) -> list[EntityHistory]:
    if not entity_ids:
        return []
    if request.aggregation is not None and request.aggregation.period.months:
        conn.create_function("temporal_bucket", 4, _calendar_bucket, deterministic=True)
    headers = _headers(conn, tenant, entity_ids)
    series = list(_series(conn, tenant, entity_ids, request))
    return _run(conn, plans.history(entity_ids, headers, series, request, DIALECT, _calendar))


def _run(conn: sqlite3.Connection, plan: plans.Plan[R]) -> R:
    """Answer a shared plan's reads on this connection; its result."""
    try:
        sql, params, every = next(plan)
        while True:
            cur = conn.execute(sql, params)
            sql, params, every = plan.send(cur.fetchall() if every else cur.fetchone())
    except StopIteration as done:
        return cast(R, done.value)


def _calendar(p: plans.Periods) -> plans.Plan[list[Bucket]]:
    """Calendar periods bucketed in SQL by ``temporal_bucket`` (registered for the read)."""
    period = p.aggregation.period
    order = "DESC" if p.backwards else "ASC"
    rows = yield (
        f"SELECT temporal_bucket({p.col}, ?, ?, ?) AS b, {p.select} FROM temporal_instances"
        f" WHERE series = ?{p.where} GROUP BY b ORDER BY b {order} LIMIT ?",
        (p.origin, period.months, period.micros, p.series, *p.params, p.wanted), True)
    return [plans.bucket(r[0], period.add_to(r[0]), r[1:], p.aggregation.methods, DIALECT)
            for r in rows]












def _calendar_bucket(ts: int, origin: int, months: int, micros: int) -> int:
    return bucket_start(ts, origin, Duration(months, micros))


def _insert(conn: sqlite3.Connection, names: Names,
            pending: list[tuple[int, list[NewInstance], bool]]) -> None:
    """Insert instances for (entity pk, instances, replace same observation) groups: the
    series they need in one pass, then the rows."""
    def key(pk: int, new: NewInstance) -> tuple[int, int, int]:
        return pk, names.id(conn, new.attr), names.id(conn, dataset_key(new.dataset_id))

    keys = {key(pk, new) for pk, items, _ in pending for new in items}
    if not keys:
        return
    conn.executemany(
        "INSERT OR IGNORE INTO temporal_series (entity, attr, dataset) VALUES (?, ?, ?)", keys)
    entities = sorted({pk for pk, _, _ in pending})
    series: dict[tuple[int, int, int], int] = {}
    for i in range(0, len(entities), 500):
        chunk = entities[i:i + 500]
        for spk, entity, attr, dataset in conn.execute(
            "SELECT pk, entity, attr, dataset FROM temporal_series"
            f" WHERE entity IN ({','.join('?' * len(chunk))})", chunk,
        ):
            series[(entity, attr, dataset)] = spk
    rows = []
    replaced = []
    for pk, items, replace_observed in pending:
        for new in items:
            spk = series[key(pk, new)]
            cols = instance_columns(new.instance)
            if replace_observed and cols[0] is not None:
                replaced.append((spk, cols[0]))
            rows.append((spk, *cols))
    if replaced:
        conn.executemany("DELETE FROM temporal_instances WHERE series = ? AND observed_ts = ?",
                         replaced)
    conn.executemany(
        """INSERT INTO temporal_instances
               (series, observed_ts, created_ts, modified_ts, deleted_ts, num, val, doc)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )


def _purge_series(conn: sqlite3.Connection, entity: int, attr: str, dataset: str | None) -> bool:
    sql = f"SELECT pk FROM temporal_series WHERE entity = ? AND attr = {ID}"
    params: list[Any] = [entity, attr]
    if dataset != ALL_DATASETS:
        sql += f" AND dataset = {ID}"
        params.append(dataset_key(dataset))
    pks = [r[0] for r in conn.execute(sql, params)]
    found = False
    for spk in pks:
        found |= conn.execute("DELETE FROM temporal_instances WHERE series = ?",
                              (spk,)).rowcount > 0
        conn.execute("DELETE FROM temporal_series WHERE pk = ?", (spk,))
    return found


def _purge_entity(conn: sqlite3.Connection, tenant: str, entity_id: str) -> bool:
    row = conn.execute("SELECT pk FROM temporal_entities WHERE tenant = ? AND id = ?",
                       (tenant, entity_id)).fetchone()
    if row is None:
        return False
    conn.execute("""DELETE FROM temporal_instances WHERE series IN
                    (SELECT pk FROM temporal_series WHERE entity = ?)""", (row[0],))
    conn.execute("DELETE FROM temporal_series WHERE entity = ?", (row[0],))
    conn.execute("DELETE FROM temporal_entities WHERE pk = ?", (row[0],))
    return True


def _find_instance(conn: sqlite3.Connection, tenant: str, entity_id: str, attr: str,
                   number: int) -> tuple[int, str] | None:
    row = conn.execute(
        f"""SELECT i.pk, i.doc FROM temporal_instances i
           JOIN temporal_series s ON s.pk = i.series
           JOIN temporal_entities e ON e.pk = s.entity
           WHERE i.pk = ? AND s.attr = {ID} AND e.tenant = ? AND e.id = ?""",
        (number, attr, tenant, entity_id),
    ).fetchone()
    return (row[0], row[1]) if row else None


def _upgrade(conn: sqlite3.Connection) -> None:
    """Series of files written before names were interned: rebuilt once, pks kept."""
    declared = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(temporal_series)")}
    if declared.get("attr") != "TEXT":
        return
    conn.execute("""INSERT OR IGNORE INTO names (name)
                    SELECT attr FROM temporal_series UNION SELECT dataset FROM temporal_series""")
    conn.execute("ALTER TABLE temporal_series RENAME TO old_temporal_series")
    conn.execute(SERIES_TABLE)
    conn.execute(
        """INSERT INTO temporal_series (pk, entity, attr, dataset)
           SELECT o.pk, o.entity, a.id, d.id FROM old_temporal_series o
           JOIN names a ON a.name = o.attr JOIN names d ON d.name = o.dataset"""
    )
    conn.execute("DROP TABLE old_temporal_series")
