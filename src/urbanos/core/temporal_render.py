"""Temporal evolutions out to the representations of clauses 4.5.7 - 4.5.9 and 4.5.19.

Stores answer with ``Series`` (instances of one attribute and datasetId, in the order of
the query) or ``AggregatedSeries`` (buckets); this module shapes them into normalized,
concise, simplified (``temporalValues``) or aggregated JSON, and applies the temporal
pagination rule (GS CIM 009 clause 6.3.10): when a series was cut at the instance limit,
every series of the response is clipped to one common time range, sent back in a
``Content-Range: date-time <start>-<end>/<size>`` header. The aggregation maths on plain
lists lives here too, for stores that cannot push it into SQL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from urbanos.core.projection import Projection
from urbanos.core.render import RenderOptions, render_instance
from urbanos.core.temporal import (
    SCOPE,
    Aggregation,
    Duration,
    Interval,
    TemporalQuery,
    format_instant,
    in_intervals,
    numeric_value,
    time_of,
    value_key,
    value_of,
)
from urbanos.types import JSON, JSONObject, Terms

#: attribute kind -> the member holding the pairs in the simplified representation (4.5.9)
PLURAL: dict[str, str] = {
    "Property": "values",
    "GeoProperty": "values",
    "Relationship": "objects",
    "LanguageProperty": "languageMaps",
    "VocabProperty": "vocabs",
    "JsonProperty": "jsons",
    "ListProperty": "valueLists",
    "ListRelationship": "objectLists",
}
_PLAIN = {"Property": "value", "GeoProperty": "value", "Relationship": "object",
          "ListProperty": "valueList"}
_WRAPPED = {"LanguageProperty": "languageMap", "VocabProperty": "vocab", "JsonProperty": "json"}


@dataclass(frozen=True, slots=True)
class Series:
    """One attribute's instances for one datasetId; ``truncated`` when the limit cut it.

    ``times`` may give each instance's time for the query's timeproperty (microseconds),
    as stores already know it, so that paging does not parse date-times again.
    """

    attr: str
    dataset_id: str | None
    instances: list[JSONObject]
    truncated: bool = False
    times: list[int | None] | None = None

    def times_of(self, prop: str) -> list[int | None]:
        if self.times is not None and len(self.times) == len(self.instances):
            return self.times
        return [time_of(i, prop) for i in self.instances]


@dataclass(frozen=True, slots=True)
class Bucket:
    """One aggregation period ``[start, end)`` and the aggregates of its instances."""

    start: int
    end: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AggregatedSeries:
    attr: str
    dataset_id: str | None
    kind: str
    buckets: list[Bucket]
    truncated: bool = False


@dataclass(slots=True)
class EntityHistory:
    """What a store returns per entity: its identity and the series asked for."""

    id: str
    types: list[str]
    series: list[Series] = field(default_factory=list)
    aggregated: list[AggregatedSeries] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TemporalView:
    """How to show a temporal evolution: representation, projections, system members."""

    fmt: str = "normalized"  # normalized | concise | temporalValues | aggregatedValues
    sys_attrs: bool = False
    timeproperty: str = "observedAt"
    pick: Projection | None = None
    omit: Projection | None = None
    lang: str | None = None
    aggregation: Aggregation | None = None


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The time range of a partial response: ``start`` is where the page begins in the
    direction of the query (so after ``end`` when paging backwards with lastN)."""

    start: int
    end: int
    size: int | None

    def header(self) -> str:
        size = "*" if self.size is None else str(self.size)
        return f"date-time {format_instant(self.start)}-{format_instant(self.end)}/{size}"

    def contains(self, micros: int) -> bool:
        low, high = min(self.start, self.end), max(self.start, self.end)
        return low <= micros <= high


# ---- the temporal pagination rule (clause 6.3.10) ------------------------------------------


def _series_times(history: EntityHistory, prop: str) -> Iterator[tuple[bool, list[int]]]:
    for s in history.series:
        yield s.truncated, [t for t in s.times_of(prop) if t is not None]
    for a in history.aggregated:
        yield a.truncated, [b.start for b in a.buckets]


def entity_range(history: EntityHistory, query: TemporalQuery) -> TimeRange | None:
    """The range one entity's truncated series allow, or None when nothing was cut."""
    cut = [times for truncated, times in _series_times(history, query.timeproperty)
           if truncated and times]
    if not cut:
        return None
    if query.last_n is None:
        end = min(max(t) for t in cut)
        start = query.time_at if query.timerel in ("after", "between") else None
        return TimeRange(start if start is not None else min(min(t) for t in cut), end, None)
    lower = max(min(t) for t in cut)
    if query.timerel == "before":
        upper = query.time_at
    elif query.timerel == "between":
        upper = query.end_time_at
    else:
        upper = None
    return TimeRange(upper if upper is not None else max(max(t) for t in cut), lower,
                     query.last_n)


def page_range(histories: Iterable[EntityHistory], query: TemporalQuery) -> TimeRange | None:
    """The common range of a response (forwards: the earliest end; backwards: the latest)."""
    ranges = [r for r in (entity_range(h, query) for h in histories) if r is not None]
    if not ranges:
        return None
    if query.last_n is None:
        return TimeRange(min(r.start for r in ranges), min(r.end for r in ranges), None)
    return TimeRange(max(r.start for r in ranges), max(r.end for r in ranges), query.last_n)


def clip(history: EntityHistory, window: TimeRange, prop: str) -> EntityHistory:
    """The history with only what lies in the page's range (series may become empty)."""
    series = []
    for s in history.series:
        kept = [(i, t) for i, t in zip(s.instances, s.times_of(prop), strict=True)
                if t is None or window.contains(t)]
        series.append(replace(s, instances=[i for i, _ in kept], times=[t for _, t in kept]))
    aggregated = [
        replace(a, buckets=[b for b in a.buckets if window.contains(b.start)])
        for a in history.aggregated
    ]
    return EntityHistory(history.id, history.types, series, aggregated)


def during_scope(history: EntityHistory, intervals: list[Interval],
                 scope: list[JSONObject], prop: str, *, with_scope: bool) -> EntityHistory:
    """The history restricted to when its scope matched a scopeQ (clause 4.18, annex
    C.5.16), with the scope instances in force during the window."""
    series = []
    for s in history.series:
        if s.attr != SCOPE:
            kept = [(i, t) for i, t in zip(s.instances, s.times_of(prop), strict=True)
                    if in_intervals(t, intervals)]
            series.append(replace(s, instances=[i for i, _ in kept], times=[t for _, t in kept]))
    if with_scope and scope:
        series.append(Series(SCOPE, None, scope))
    return EntityHistory(history.id, history.types, series, history.aggregated)


# ---- representations -----------------------------------------------------------------------


def _wanted(name: str, view: TemporalView) -> bool:
    if view.pick is not None and name not in view.pick.picked:
        return False
    return not (view.omit is not None and name in view.omit.omitted)


def _key(attr: str, terms: Terms) -> str:
    return SCOPE if attr == SCOPE else terms.compact(attr)


def render_history(history: EntityHistory, terms: Terms, view: TemporalView) -> JSONObject:
    """One entity's temporal evolution in the representation the view asks for."""
    out: JSONObject = {}
    if _wanted("id", view):
        out["id"] = history.id
    if _wanted("type", view) and history.types:
        types = [terms.compact(t) for t in history.types]
        out["type"] = types[0] if len(types) == 1 else types
    if view.fmt == "aggregatedValues":
        grouped_a: dict[str, list[JSONObject]] = {}
        for a in history.aggregated:
            if _wanted(a.attr, view):
                grouped_a.setdefault(a.attr, []).append(_aggregated(a, view))
        for attr, items in grouped_a.items():
            out[_key(attr, terms)] = items[0] if len(items) == 1 else items
        return out
    grouped: dict[str, list[Series]] = {}
    for s in history.series:
        if _wanted(s.attr, view):
            grouped.setdefault(s.attr, []).append(s)
    for attr, series in grouped.items():
        if view.fmt == "temporalValues":
            items = [_simplified(s, terms, view) for s in series]
            out[_key(attr, terms)] = items[0] if len(items) == 1 else items
        else:
            out[_key(attr, terms)] = [
                _instance(i, terms, view) for s in series for i in s.instances
            ]
    return out


def _instance(inst: JSONObject, terms: Terms, view: TemporalView) -> JSON:
    opts = RenderOptions(fmt="concise" if view.fmt == "concise" else "normalized",
                         sys_attrs=view.sys_attrs, lang=view.lang)
    rendered = render_instance(inst, terms, opts)
    if isinstance(rendered, dict) and "deletedAt" in inst:
        rendered["deletedAt"] = inst["deletedAt"]
    return rendered


def _kind(series: Series) -> str:
    for inst in reversed(series.instances):
        return str(inst.get("type", "Property"))
    return "Property"


def _simple_value(inst: JSONObject, terms: Terms) -> JSON:
    kind = inst.get("type", "Property")
    value = value_of(inst)
    if kind == "ListRelationship" and isinstance(value, list):
        return [v.get("object") if isinstance(v, dict) else v for v in value]
    if kind == "VocabProperty":
        value = [terms.compact(v) for v in value] if isinstance(value, list) else (
            terms.compact(value) if isinstance(value, str) else value)
    if kind in _WRAPPED:
        return {_WRAPPED[kind]: value}
    return value


def _simplified(series: Series, terms: Terms, view: TemporalView) -> JSONObject:
    kind = _kind(series)
    out: JSONObject = {"type": kind}
    if series.dataset_id is not None:
        out["datasetId"] = series.dataset_id
    prop = view.timeproperty
    if kind in _PLAIN:  # the value is shown as it is: skip the per-kind shaping
        member = _PLAIN[kind]
        pairs = [[i.get(member), i.get(prop)] if i.get("type") == kind else
                 [_simple_value(i, terms), i.get(prop)] for i in series.instances]
    else:
        pairs = [[_simple_value(i, terms), i.get(prop)] for i in series.instances]
    out[PLURAL.get(kind, "values")] = pairs
    return out


def _aggregated(series: AggregatedSeries, view: TemporalView) -> JSONObject:
    out: JSONObject = {"type": series.kind}
    if series.dataset_id is not None:
        out["datasetId"] = series.dataset_id
    methods = view.aggregation.methods if view.aggregation else ()
    for method in methods:
        out[method] = [
            [b.values.get(method), format_instant(b.start), format_instant(b.end)]
            for b in series.buckets
        ]
    return out


# ---- aggregation on plain lists (clause 4.5.19) --------------------------------------------


def bucket_start(micros: int, origin: int, period: Duration) -> int:
    """The start of the period holding ``micros`` when periods are laid from ``origin``."""
    if period.zero:
        return origin
    if not period.months:
        return origin + (micros - origin) // period.micros * period.micros
    # calendar periods: step an estimate, then correct it
    approx_days = period.months * 30.44 + period.micros / 86_400_000_000
    k = max(0, int((micros - origin) / (approx_days * 86_400_000_000)) - 1)
    while period.add_to(origin, k + 1) <= micros:
        k += 1
    while k > 0 and period.add_to(origin, k) > micros:
        k -= 1
    return period.add_to(origin, k)


def aggregate(values: list[JSONObject], methods: Iterable[str]) -> dict[str, Any]:
    """The aggregates of one period's instances (numeric ones for the arithmetic methods);
    ``stddev`` is the population standard deviation."""
    numbers = [n for n in (numeric_value(v) for v in values) if n is not None]
    out: dict[str, Any] = {}
    for method in methods:
        if method == "totalCount":
            out[method] = len(values)
        elif method == "distinctCount":
            out[method] = len({value_key(v) for v in values})
        elif not numbers:
            out[method] = None
        elif method == "sum":
            out[method] = float(sum(numbers))
        elif method == "avg":
            out[method] = sum(numbers) / len(numbers)
        elif method == "min":
            out[method] = min(numbers)
        elif method == "max":
            out[method] = max(numbers)
        elif method == "sumsq":
            out[method] = float(sum(n * n for n in numbers))
        elif method == "stddev":
            mean = sum(numbers) / len(numbers)
            out[method] = math.sqrt(sum((n - mean) ** 2 for n in numbers) / len(numbers))
    return out


def aggregate_series(
    instances: list[JSONObject], aggregation: Aggregation, query: TemporalQuery,
) -> list[Bucket]:
    """Buckets of a series' in-window instances, earliest first, empty periods left out."""
    prop = query.timeproperty
    timed = sorted(((t, i) for t, i in ((time_of(i, prop), i) for i in instances)
                    if t is not None), key=lambda pair: pair[0])
    if not timed:
        return []
    origin = query.start if query.start is not None else timed[0][0]
    period = aggregation.period
    groups: dict[int, list[JSONObject]] = {}
    for t, inst in timed:
        groups.setdefault(bucket_start(t, origin, period), []).append(inst)
    last = timed[-1][0]
    out = []
    for start, members in sorted(groups.items()):
        end = (query.end if query.end is not None else last) if period.zero else (
            period.add_to(start))
        out.append(Bucket(start, end, aggregate(members, aggregation.methods)))
    return out


def kind_of(instances: list[JSONObject]) -> str:
    return str(instances[-1].get("type", "Property")) if instances else "Property"


__all__ = [
    "PLURAL",
    "AggregatedSeries",
    "Bucket",
    "EntityHistory",
    "Series",
    "TemporalView",
    "TimeRange",
    "aggregate",
    "aggregate_series",
    "bucket_start",
    "clip",
    "page_range",
    "render_history",
]
