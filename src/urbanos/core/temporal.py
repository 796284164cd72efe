"""The temporal evolution of entities (GS CIM 009 clauses 4.5.7 - 4.5.9, 4.5.19, 4.11, 5.7.3).

What history is, as plain data: which attribute instances an entity write produces
(``derive_instances``, from the stored form before and after), the temporal query
(``TemporalQuery``, clause 4.11 / 5.2.21) and aggregation parameters (``Aggregation``,
clause 4.5.19 / 5.2.44), each validated into frozen dataclasses so that stores and
renderers never see raw parameters. Times travel as integer microseconds since the epoch;
the strings the client sent (``observedAt``) are kept verbatim inside the instance.

A *series* is one (attribute, datasetId) pair of an entity; the entity's scope has a series
of its own named ``scope`` (clause 4.18: scope changes are temporal Property instances
whose ``observedAt`` copies the change time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from urbanos.core.model import NULL_URN, VALUE_MEMBER
from urbanos.core.query.ast import ScopeExpr
from urbanos.core.query.evaluate import matches_scope
from urbanos.core.timeutil import parse_datetime
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject

TIMERELS = ("before", "after", "between")
TIME_PROPERTIES = ("observedAt", "createdAt", "modifiedAt", "deletedAt")
AGGREGATE_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev",
                     "sumsq")
#: the series that records an entity's scope (not an IRI, so it never clashes)
SCOPE = "scope"
#: the datasetId key of the default instance (clause 4.5.5)
DEFAULT_DATASET = "@none"
INSTANCE_PREFIX = "urn:ngsi-ld:Instance:"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NULL_VALUE: dict[str, Any] = {
    "languageMap": {"@none": NULL_URN},
    "valueList": [NULL_URN],
    "objectList": [{"object": NULL_URN}],
}


# ---- times ---------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def to_micros(text: str) -> int:
    """Microseconds since the epoch of a date-time string already validated (cached: the
    instances of one write share their timestamps)."""
    parsed = parse_datetime(text)
    if parsed is None:
        raise BadRequestData(f"{text!r} is not a date-time")
    return (parsed - _EPOCH) // timedelta(microseconds=1)


@lru_cache(maxsize=8192)
def format_instant(micros: int) -> str:
    """An instant in UTC with ``Z``; fractions only when the instant has them."""
    v = _EPOCH + timedelta(microseconds=micros)
    base = f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    if micros % 1_000_000 == 0:
        return base + "Z"
    if micros % 1000 == 0:
        return f"{base}.{v.microsecond // 1000:03d}Z"
    return f"{base}.{v.microsecond:06d}Z"


def instance_id(number: int) -> str:
    """The instanceId of the n-th recorded instance: unique per broker, cheap to look up."""
    return f"{INSTANCE_PREFIX}{number}"


def instance_number(text: str) -> int | None:
    """The number behind an instanceId this broker issued, else None (never issued)."""
    if not text.startswith(INSTANCE_PREFIX):
        return None
    tail = text[len(INSTANCE_PREFIX):]
    return int(tail) if tail.isdigit() and len(tail) < 19 else None


# ---- the temporal query (clause 4.11, 5.2.21) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class TemporalQuery:
    """A validated temporal query; ``start`` is inclusive and ``end`` exclusive (4.11)."""

    timerel: str | None = None
    time_at: int | None = None
    end_time_at: int | None = None
    timeproperty: str = "observedAt"
    last_n: int | None = None

    @property
    def start(self) -> int | None:
        return self.time_at if self.timerel in ("after", "between") else None

    @property
    def end(self) -> int | None:
        if self.timerel == "before":
            return self.time_at
        return self.end_time_at if self.timerel == "between" else None

    def contains(self, micros: int | None) -> bool:
        if micros is None:
            return False
        start, end = self.start, self.end
        return (start is None or micros >= start) and (end is None or micros < end)


def _date_time(value: object, name: str) -> int:
    if not isinstance(value, str) or parse_datetime(value) is None:
        raise BadRequestData(f"{name} must be a date-time (clause 4.6.3), got {value!r}")
    return to_micros(value)


def parse_last_n(value: object) -> int | None:
    """``lastN``: a positive integer, given as a query string or a JSON number."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise BadRequestData(f"lastN must be a positive integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequestData(f"lastN must be a positive integer, got {value!r}")
    return value


def parse_temporal_query(
    timerel: object = None, time_at: object = None, end_time_at: object = None,
    timeproperty: object = None, last_n: object = None,
) -> TemporalQuery:
    """Validate the members of a temporal query (query parameters or a TemporalQuery)."""
    prop = "observedAt" if timeproperty is None else timeproperty
    if prop not in TIME_PROPERTIES:
        raise BadRequestData(
            f"timeproperty must be one of {', '.join(TIME_PROPERTIES)}, got {prop!r}"
        )
    n = parse_last_n(last_n)
    if timerel is None:
        if time_at is not None or end_time_at is not None:
            raise BadRequestData("timeAt and endTimeAt need timerel")
        return TemporalQuery(timeproperty=str(prop), last_n=n)
    if timerel not in TIMERELS:
        raise BadRequestData(f"timerel must be before, after or between, got {timerel!r}")
    if time_at is None:
        raise BadRequestData(f"timerel={timerel} needs timeAt")
    start = _date_time(time_at, "timeAt")
    end = None
    if timerel == "between":
        if end_time_at is None:
            raise BadRequestData("timerel=between needs endTimeAt")
        end = _date_time(end_time_at, "endTimeAt")
        if end <= start:
            raise BadRequestData("endTimeAt must be later than timeAt")
    return TemporalQuery(str(timerel), start, end, str(prop), n)


# ---- aggregation parameters (clause 4.5.19, 5.2.44) ----------------------------------------

_DURATION = re.compile(
    r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
    r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d{1,6})?)S)?)?$"
)


@dataclass(frozen=True, slots=True)
class Duration:
    """An ISO 8601 duration: calendar months plus an exact number of microseconds."""

    months: int = 0
    micros: int = 0

    @property
    def zero(self) -> bool:
        return self.months == 0 and self.micros == 0

    def add_to(self, micros: int, times: int = 1) -> int:
        """``micros`` moved forward by this duration ``times`` times (calendar aware)."""
        if self.months:
            moment = _EPOCH + timedelta(microseconds=micros)
            total = moment.year * 12 + moment.month - 1 + self.months * times
            year, month = divmod(total, 12)
            day = min(moment.day, _days_in(year, month + 1))
            moment = moment.replace(year=year, month=month + 1, day=day)
            micros = (moment - _EPOCH) // timedelta(microseconds=1)
        return micros + self.micros * times


def _days_in(year: int, month: int) -> int:
    nxt = datetime(year + month // 12, month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


def parse_duration(text: object, name: str = "aggrPeriodDuration") -> Duration:
    """An ISO 8601 duration (``P1D``, ``PT1H30M``, ``P1M``, ``PT0S``); else BadRequestData."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or text in ("P", "PT") or (isinstance(text, str) and text.endswith("T")):
        raise BadRequestData(f"{name} must be an ISO 8601 duration such as PT1H, got {text!r}")
    years, months, weeks, days, hours, minutes, seconds = match.groups()
    micros = round(float(seconds or 0) * 1_000_000)
    micros += (int(minutes or 0) * 60 + int(hours or 0) * 3600) * 1_000_000
    micros += (int(days or 0) + int(weeks or 0) * 7) * 86_400_000_000
    return Duration(int(years or 0) * 12 + int(months or 0), micros)


@dataclass(frozen=True, slots=True)
class Aggregation:
    """Which aggregates to compute (in the order asked) and over which periods."""

    methods: tuple[str, ...]
    period: Duration = Duration()


def parse_aggr_methods(raw: object) -> tuple[str, ...]:
    """``aggrMethods``: a comma-separated string or a JSON array of method names."""
    items: list[object]
    if isinstance(raw, str):
        items = [m.strip() for m in raw.split(",")]
    elif isinstance(raw, list) and raw:
        items = list(raw)
    else:
        raise BadRequestData(f"aggrMethods must be a list of aggregation methods, got {raw!r}")
    out: list[str] = []
    for item in items:
        if item not in AGGREGATE_METHODS:
            raise BadRequestData(
                f"unknown aggrMethods {item!r}; allowed: {', '.join(AGGREGATE_METHODS)}"
            )
        if item not in out:
            out.append(str(item))
    return tuple(out)


def parse_aggregation(methods: object, period: object) -> Aggregation:
    if methods is None:
        raise BadRequestData("the aggregated representation needs aggrMethods")
    duration = Duration() if period is None else parse_duration(period)
    return Aggregation(parse_aggr_methods(methods), duration)


# ---- instances -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewInstance:
    """One instance to record in a series; ``instance`` is the stored form with its times."""

    attr: str
    instance: JSONObject

    @property
    def dataset_id(self) -> str | None:
        return self.instance.get("datasetId")


def numeric_value(instance: JSONObject) -> float | None:
    """The number an aggregate works on: a Property whose value is a number."""
    value = instance.get("value")
    if instance.get("type", "Property") != "Property" or isinstance(value, bool):
        return None
    return float(value) if isinstance(value, int | float) else None


def value_key(instance: JSONObject) -> str:
    """A canonical text of the instance's value, for distinctCount."""
    member = VALUE_MEMBER.get(instance.get("type", "Property"), "value")
    return orjson.dumps(instance.get(member), option=orjson.OPT_SORT_KEYS).decode()


def value_of(instance: JSONObject) -> Any:
    return instance.get(VALUE_MEMBER.get(instance.get("type", "Property"), "value"))


def time_of(instance: JSONObject, prop: str) -> int | None:
    text = instance.get(prop)
    return to_micros(text) if isinstance(text, str) else None


def deletion_instance(instance: JSONObject, now: str) -> JSONObject:
    """What the history records when an instance is deleted: its kind's NGSI-LD Null."""
    kind = instance.get("type", "Property")
    member = VALUE_MEMBER.get(kind, "value")
    out: JSONObject = {"type": kind, member: _NULL_VALUE.get(member, NULL_URN)}
    if "datasetId" in instance:
        out["datasetId"] = instance["datasetId"]
    out.update(createdAt=now, modifiedAt=now, deletedAt=now)
    return out


def scope_instance(scope: list[str] | None, now: str) -> JSONObject:
    """A scope change as a temporal Property instance (clause 4.18); None records removal."""
    if scope is None:
        return {"type": "Property", "value": [], "createdAt": now, "modifiedAt": now,
                "deletedAt": now}
    return {"type": "Property", "value": list(scope), "observedAt": now, "createdAt": now,
            "modifiedAt": now}


def recorded(instance: JSONObject, now: str) -> JSONObject:
    """A current instance as history: stamped with the time its value was set."""
    out = dict(instance)
    stamp = instance.get("modifiedAt") or now
    out["createdAt"] = stamp
    out["modifiedAt"] = stamp
    return out


def derive_instances(
    before: JSONObject | None, after: JSONObject | None, now: str,
    *, skip: frozenset[str] = frozenset(),
) -> list[NewInstance]:
    """The instances one entity write adds to history: every instance that is new or
    changed in ``after``, a deletion instance for every one gone from ``before``, and the
    scope when it changed. ``skip`` names attributes whose history the caller records."""
    old_attrs: dict[str, list[JSONObject]] = before["attrs"] if before else {}
    new_attrs: dict[str, list[JSONObject]] = after["attrs"] if after else {}
    out: list[NewInstance] = []
    for name, instances in new_attrs.items():
        if name in skip:
            continue
        previous = {i.get("datasetId"): i for i in old_attrs.get(name, ())}
        for inst in instances:
            if previous.get(inst.get("datasetId")) != inst:
                out.append(NewInstance(name, recorded(inst, now)))
    for name, instances in old_attrs.items():
        if name in skip:
            continue
        kept = {i.get("datasetId") for i in new_attrs.get(name, ())}
        out.extend(NewInstance(name, deletion_instance(i, now))
                   for i in instances if i.get("datasetId") not in kept)
    old_scope = before.get("scope") if before else None
    new_scope = after.get("scope") if after else None
    if new_scope != old_scope and SCOPE not in skip:
        if new_scope:
            out.append(NewInstance(SCOPE, scope_instance(new_scope, now)))
        elif old_scope:
            out.append(NewInstance(SCOPE, scope_instance(None, now)))
    return out


def latest_instances(attrs: dict[str, list[JSONObject]]) -> dict[str, list[JSONObject]]:
    """Per attribute and datasetId, the most recent instance (by observedAt, then position):
    what the current state becomes after a temporal write."""
    out: dict[str, list[JSONObject]] = {}
    for name, instances in attrs.items():
        best: dict[str | None, tuple[int, int, JSONObject]] = {}
        for pos, inst in enumerate(instances):
            stamp = time_of(inst, "observedAt")
            rank = (stamp if stamp is not None else -(2**62), pos)
            key = inst.get("datasetId")
            if key not in best or rank >= best[key][:2]:
                best[key] = (*rank, inst)
        out[name] = [entry[2] for entry in best.values()]
    return out


def newer_than(candidate: JSONObject, current: JSONObject | None) -> bool:
    """Whether a temporal write's instance should replace the current one (not older)."""
    if current is None:
        return True
    new, old = time_of(candidate, "observedAt"), time_of(current, "observedAt")
    return new is None or old is None or new >= old


# ---- scope validity (clause 4.18: a scope holds from when it is set until it changes) -------

Interval = tuple[int, int | None]


def scope_intervals(
    instances: list[JSONObject], expr: ScopeExpr, start: int | None, end: int | None
) -> list[Interval]:
    """The parts of ``[start, end)`` during which the entity's scope matched ``expr``;
    ``instances`` is the scope's history (a removal holds an empty value)."""
    timed = sorted(
        ((t, inst.get("value")) for inst in instances
         if (t := time_of(inst, "observedAt") or time_of(inst, "deletedAt")) is not None),
        key=lambda pair: pair[0],
    )
    out: list[Interval] = []
    for k, (t, value) in enumerate(timed):
        until = timed[k + 1][0] if k + 1 < len(timed) else None
        scopes = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        if not scopes or not matches_scope(expr, scopes):
            continue
        lo = t if start is None else max(t, start)
        hi = until if end is None else (end if until is None else min(until, end))
        if hi is None or lo < hi:
            out.append((lo, hi))
    return out


def in_intervals(micros: int | None, intervals: list[Interval]) -> bool:
    return micros is not None and any(
        micros >= lo and (hi is None or micros < hi) for lo, hi in intervals
    )


def valid_scope_instances(instances: list[JSONObject], query: TemporalQuery) -> list[JSONObject]:
    """The scope instances in force at some point of the query's window: the one set
    before the window began, and those set inside it."""
    timed = sorted(((t, i) for i in instances if (t := time_of(i, "observedAt")) is not None),
                   key=lambda pair: pair[0])
    start, end = query.start, query.end
    out = [i for t, i in timed if (start is None or t >= start) and (end is None or t < end)]
    before = [i for t, i in timed if start is not None and t < start]
    return ([before[-1]] if before else []) + out
