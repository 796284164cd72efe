"""History reads both SQL stores share, written once as plans.

SQLite is read on a thread with blocking calls, PostgreSQL with awaits, so the reading
logic (pages, lastN, aggregation periods and the scan over them) cannot be one function
called by both. It is one *plan* instead: a generator that yields each read it needs as a
``Read`` (SQL, parameters, every row or only the first) and is sent the answer; each store
runs plans on its own connection (``run`` in its module). What differs between the two
SQL dialects is a ``Dialect``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from urbanos.core.temporal import Aggregation, TemporalQuery
from urbanos.core.temporal_render import AggregatedSeries, Bucket, EntityHistory, Series
from urbanos.storage.temporal import HistoryRequest, TemporalEntity
from urbanos.storage.temporal_rows import COLUMN, STDDEV_SQL, instance_from_row, window_sql
from urbanos.types import JSONObject

R = TypeVar("R")
#: one read a plan asks for: SQL, its parameters, and whether every row is wanted (or the
#: first, None when there is none)
Read = tuple[str, tuple[Any, ...], bool]
Plan = Generator[Read, Any, R]
#: (entity id, attribute, datasetId, series pk) of a series a request selects
SeriesRow = tuple[str, str, str | None, int]


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the SQL of the two stores spells differently."""

    #: the instances table as SQL names it
    instances: str
    #: the parameter placeholder, ``?`` or ``%s``
    mark: str
    #: aggregate method -> SQL expression over a period's rows
    aggregates: Mapping[str, str]
    #: SQL of a row's fixed-length period number, from ``{col}`` and two placeholders
    #: (origin, period length)
    period_number: str
    #: an aggregate as the database returns it -> the Python number the renderers expect
    number: Callable[[Any], Any] = _same


@dataclass(frozen=True, slots=True)
class Periods:
    """One series' aggregation over periods: what a period scan needs to know."""

    series: int
    col: str
    select: str
    where: str
    params: tuple[Any, ...]
    origin: int
    aggregation: Aggregation
    extent: tuple[int, int]
    query: TemporalQuery
    wanted: int
    backwards: bool


#: the store's way of aggregating calendar periods (months, years: no fixed length)
CalendarPlan = Callable[[Periods], Plan[list[Bucket]]]


def last_page(rows: list[R], keep: int, cut_by_limit: bool, backwards: bool
              ) -> tuple[list[R], bool]:
    """The ``keep`` rows of a page read ``keep + 1`` at a time, in time order, and whether
    the limit cut the series."""
    truncated = cut_by_limit and len(rows) > keep
    rows = rows[:keep]
    if backwards:
        rows.reverse()
    return rows, truncated


def bucket(start: int, end: int, row: Iterable[Any], methods: tuple[str, ...],
           dialect: Dialect) -> Bucket:
    """A period's bucket from the row of ``select_of(methods)``."""
    values = [dialect.number(v) for v in row]
    out: dict[str, Any] = {}
    pos = 0
    for m in methods:
        if m in dialect.aggregates:
            out[m] = values[pos]
            pos += 1
    if "stddev" in methods:
        n, total, squares = values[pos:pos + 3]
        out["stddev"] = (math.sqrt(max(0.0, squares / n - (total / n) ** 2)) if n else None)
    return Bucket(start, end, {m: out.get(m) for m in methods})


def select_of(methods: tuple[str, ...], dialect: Dialect) -> str:
    exprs = [dialect.aggregates[m] for m in methods if m in dialect.aggregates]
    if "stddev" in methods:
        exprs.extend(STDDEV_SQL)
    return ", ".join(exprs)


def window(series: list[SeriesRow], request: HistoryRequest, dialect: Dialect
           ) -> Plan[dict[str, dict[str, list[JSONObject]]]]:
    """Every instance of ``series`` in the request's window, by entity and attribute."""
    m = dialect.mark
    where, params = window_sql(request.query, m)
    col = COLUMN[request.query.timeproperty]
    out: dict[str, dict[str, list[JSONObject]]] = {}
    for eid, attr, _, spk in series:
        rows = yield (f"SELECT pk, doc FROM {dialect.instances} WHERE series = {m}{where}"
                      f" ORDER BY {col}, pk", (spk, *params), True)
        found = [instance_from_row(pk, doc) for pk, doc in rows]
        if found:
            out.setdefault(eid, {}).setdefault(attr, []).extend(found)
    return out


def with_instances(series: list[SeriesRow], request: HistoryRequest, dialect: Dialect
                   ) -> Plan[set[str]]:
    """The entities of ``series`` with at least one instance in the request's window."""
    m = dialect.mark
    where, params = window_sql(request.query, m)
    out: set[str] = set()
    for eid, _, _, spk in series:
        if eid not in out and (
            yield (f"SELECT 1 FROM {dialect.instances} WHERE series = {m}{where} LIMIT 1",
                   (spk, *params), False)
        ):
            out.add(eid)
    return out


def history(entity_ids: list[str], headers: list[tuple[int, TemporalEntity]],
            series: list[SeriesRow], request: HistoryRequest,
            dialect: Dialect, calendar: CalendarPlan) -> Plan[list[EntityHistory]]:
    """The histories of ``entity_ids`` (in that order), given their headers and the series
    the request selects."""
    out = {h.id: EntityHistory(h.id, h.types) for _, h in headers}
    for eid, attr, dataset, spk in series:
        found = out.get(eid)
        if found is None:
            continue
        if request.aggregation is not None:
            aggregated = yield from _aggregate(spk, request, request.aggregation, dialect,
                                               calendar)
            if aggregated is not None:
                buckets, truncated, kind = aggregated
                found.aggregated.append(AggregatedSeries(attr, dataset, kind, buckets,
                                                         truncated))
        else:
            instances, times, truncated = yield from _instances(spk, request, dialect)
            if instances:
                found.series.append(Series(attr, dataset, instances, truncated, times))
    return [out[i] for i in entity_ids if i in out]


def _instances(spk: int, request: HistoryRequest, dialect: Dialect
               ) -> Plan[tuple[list[JSONObject], list[int | None], bool]]:
    query, m = request.query, dialect.mark
    col = COLUMN[query.timeproperty]
    where, params = window_sql(query, m)
    keep, cut_by_limit = request.page_size()
    order = "DESC" if query.last_n else "ASC"
    rows = yield (f"SELECT pk, doc, {col} FROM {dialect.instances} WHERE series = {m}{where}"
                  f" ORDER BY {col} {order}, pk {order} LIMIT {m}", (spk, *params, keep + 1), True)
    rows, truncated = last_page(list(rows), keep, cut_by_limit, bool(query.last_n))
    return [instance_from_row(pk, doc) for pk, doc, _ in rows], [t for _, _, t in rows], truncated


def _aggregate(spk: int, request: HistoryRequest, aggregation: Aggregation, dialect: Dialect,
               calendar: CalendarPlan) -> Plan[tuple[list[Bucket], bool, str] | None]:
    query, m, table = request.query, dialect.mark, dialect.instances
    col = COLUMN[query.timeproperty]
    where, params = window_sql(query, m)
    first = yield (f"SELECT {col}, doc FROM {table} WHERE series = {m}{where}"
                   f" ORDER BY {col} LIMIT 1", (spk, *params), False)
    if first is None:
        return None
    last = yield (f"SELECT {col}, doc FROM {table} WHERE series = {m}{where}"
                  f" ORDER BY {col} DESC LIMIT 1", (spk, *params), False)
    kind = str(orjson.loads(last[1]).get("type", "Property"))
    methods = aggregation.methods
    select = select_of(methods, dialect)
    origin = query.start if query.start is not None else first[0]
    period = aggregation.period
    keep, cut_by_limit = request.page_size()
    backwards = bool(query.last_n)
    if period.zero:
        row = yield (f"SELECT 0, {select} FROM {table} WHERE series = {m}{where}",
                     (spk, *params), False)
        end = query.end if query.end is not None else last[0]
        return [bucket(origin, end, row[1:], methods, dialect)], False, kind
    periods = Periods(spk, col, select, where, tuple(params), origin, aggregation,
                      (first[0], last[0]), query, keep + 1, backwards)
    if period.months:
        buckets = yield from calendar(periods)
    else:
        rows = yield from _scan_periods(periods, dialect)
        buckets = [bucket(origin + b * period.micros, origin + (b + 1) * period.micros,
                          r, methods, dialect) for b, *r in rows]
    buckets, truncated = last_page(buckets, keep, cut_by_limit, backwards)
    return buckets, truncated, kind


def _scan_periods(p: Periods, dialect: Dialect) -> Plan[list[tuple[Any, ...]]]:
    """Group fixed-length periods, reading only as many periods as ``p.wanted`` still needs
    and seeking over gaps through the index, so a page costs ``wanted`` periods of rows
    whatever the length of the series."""
    m, table, col, query = dialect.mark, dialect.instances, p.col, p.query
    origin, period = p.origin, p.aggregation.period.micros
    first, last = p.extent
    low_edge = origin + (first - origin) // period * period
    high_edge = origin + ((last - origin) // period + 1) * period
    floor = max(low_edge, query.start) if query.start is not None else low_edge
    ceiling = min(high_edge, query.end) if query.end is not None else high_edge
    number = dialect.period_number.format(col=col)
    group = (f"SELECT {number} AS b, {p.select} FROM {table}"
             f" WHERE series = {m} AND {col} >= {m} AND {col} < {m} GROUP BY b ORDER BY b")
    rows: list[tuple[Any, ...]] = []
    if not p.backwards:
        lo = low_edge
        while len(rows) < p.wanted and lo < ceiling:
            hi = min(ceiling, lo + (p.wanted - len(rows)) * period)
            rows += yield group, (origin, period, p.series, max(lo, floor), hi), True
            following = yield (f"SELECT {col} FROM {table} WHERE series = {m} AND {col} >= {m}"
                               f" AND {col} < {m} ORDER BY {col} LIMIT 1",
                               (p.series, hi, ceiling), False)
            if following is None:
                break
            lo = origin + (following[0] - origin) // period * period
        return rows[:p.wanted]
    hi = high_edge
    while len(rows) < p.wanted and hi > floor:
        lo = max(floor, hi - (p.wanted - len(rows)) * period)
        rows += yield group + " DESC", (origin, period, p.series, lo, min(hi, ceiling)), True
        preceding = yield (f"SELECT {col} FROM {table} WHERE series = {m} AND {col} < {m}"
                           f" AND {col} >= {m} ORDER BY {col} DESC LIMIT 1",
                           (p.series, lo, floor), False)
        if preceding is None:
            break
        hi = origin + ((preceding[0] - origin) // period + 1) * period
    return rows[:p.wanted]
