"""Temporal representations, the aggregation maths and the temporal pagination rule."""

from __future__ import annotations

import math
from typing import Any

import pytest

from urbanos.core.jsonld import core_term_map
from urbanos.core.temporal import (
    SCOPE,
    Aggregation,
    Duration,
    format_instant,
    parse_temporal_query,
    to_micros,
)
from urbanos.core.temporal_render import (
    AggregatedSeries,
    Bucket,
    EntityHistory,
    Series,
    TemporalView,
    aggregate,
    aggregate_series,
    bucket_start,
    clip,
    page_range,
    render_history,
)

X = "https://ex.org/"
TERMS = core_term_map()


def at(minute: int, day: int = 1) -> str:
    return f"2020-01-{day:02d}T01:{minute:02d}:00Z"


def inst(value: Any, when: str, kind: str = "Property", **extra: Any) -> dict[str, Any]:
    member = {"Property": "value", "Relationship": "object", "LanguageProperty": "languageMap",
              "ListRelationship": "objectList", "VocabProperty": "vocab",
              "JsonProperty": "json", "ListProperty": "valueList"}[kind]
    return {"type": kind, member: value, "observedAt": when, "instanceId": "urn:i:" + when,
            **extra}


def history(**series: list[dict[str, Any]]) -> EntityHistory:
    return EntityHistory("urn:e:1", [X + "Vehicle"],
                         [Series(X + name, None, items) for name, items in series.items()])


def test_normalized_lists_every_instance_and_keeps_deletions() -> None:
    h = history(speed=[inst(1, at(1)), {"type": "Property", "value": "urn:ngsi-ld:null",
                                         "deletedAt": at(2), "createdAt": at(2)}])
    out = render_history(h, TERMS, TemporalView())
    assert out["id"] == "urn:e:1" and out["type"] == X + "Vehicle"
    assert out[X + "speed"][1] == {"type": "Property", "value": "urn:ngsi-ld:null",
                                   "deletedAt": at(2)}
    with_sys = render_history(h, TERMS, TemporalView(sys_attrs=True))
    assert with_sys[X + "speed"][1]["createdAt"] == at(2)


def test_simplified_pairs_per_kind() -> None:
    h = EntityHistory("urn:e:1", [X + "V"], [
        Series(X + "p", None, [inst(3, at(1))]),
        Series(X + "p", "urn:d:1", [inst(4, at(2))]),
        Series(X + "r", None, [inst("urn:x:1", at(1), "Relationship")]),
        Series(X + "l", None, [inst({"en": "a"}, at(1), "LanguageProperty")]),
        Series(X + "lr", None, [inst([{"object": "urn:x:1"}], at(1), "ListRelationship")]),
        Series(X + "j", None, [inst({"k": 1}, at(1), "JsonProperty")]),
        Series(SCOPE, None, [inst(["/a"], at(1))]),
    ])
    out = render_history(h, TERMS, TemporalView(fmt="temporalValues"))
    assert out[X + "p"] == [{"type": "Property", "values": [[3, at(1)]]},
                            {"type": "Property", "datasetId": "urn:d:1", "values": [[4, at(2)]]}]
    assert out[X + "r"] == {"type": "Relationship", "objects": [["urn:x:1", at(1)]]}
    assert out[X + "l"]["languageMaps"] == [[{"languageMap": {"en": "a"}}, at(1)]]
    assert out[X + "lr"]["objectLists"] == [[["urn:x:1"], at(1)]]
    assert out[X + "j"]["jsons"] == [[{"json": {"k": 1}}, at(1)]]
    assert out["scope"] == {"type": "Property", "values": [[["/a"], at(1)]]}


def test_pick_and_omit_apply_to_members() -> None:
    from urbanos.core.projection import parse_projection

    h = history(speed=[inst(1, at(1))], fuel=[inst(2, at(1))])
    pick = parse_projection("speed", lambda n: X + n, label="pick")
    assert set(render_history(h, TERMS, TemporalView(pick=pick))) == {X + "speed"}
    omit = parse_projection("id,type,speed,fuel", lambda n: X + n, label="omit")
    assert render_history(h, TERMS, TemporalView(omit=omit)) == {}


def test_aggregated_shape_and_bounds() -> None:
    start = to_micros("2020-08-01T12:03:00Z")
    a = AggregatedSeries(X + "s", None, "Property",
                         [Bucket(start, start + 3_600_000_000, {"avg": 100.0})])
    h = EntityHistory("urn:e:1", [X + "V"], aggregated=[a])
    view = TemporalView(fmt="aggregatedValues", aggregation=Aggregation(("avg",)))
    assert render_history(h, TERMS, view)[X + "s"] == {
        "type": "Property", "avg": [[100.0, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"]]}


def test_aggregate_maths() -> None:
    values = [inst(v, at(1)) for v in (1, 2, 2, 5)] + [inst("x", at(1))]
    out = aggregate(values, ("totalCount", "distinctCount", "sum", "avg", "min", "max",
                             "sumsq", "stddev"))
    assert out["totalCount"] == 5 and out["distinctCount"] == 4
    assert (out["sum"], out["avg"], out["min"], out["max"], out["sumsq"]) == (
        10.0, 2.5, 1.0, 5.0, 34.0)
    assert math.isclose(out["stddev"], math.sqrt(34 / 4 - 2.5**2))
    assert aggregate([inst("x", at(1))], ("avg", "totalCount")) == {"avg": None,
                                                                    "totalCount": 1}


def test_buckets_start_at_time_at_and_skip_empty_periods() -> None:
    items = [inst(67, "2020-08-01T12:03:00Z"), inst(53, "2020-08-01T13:05:00Z"),
             inst(40, "2020-08-01T14:07:00Z")]
    query = parse_temporal_query("after", "2020-01-01T12:03:00Z")
    buckets = aggregate_series(items, Aggregation(("avg",), Duration(0, 3_600_000_000)), query)
    assert [(format_instant(b.start), b.values["avg"]) for b in buckets] == [
        ("2020-08-01T12:03:00Z", 67.0), ("2020-08-01T13:03:00Z", 53.0),
        ("2020-08-01T14:03:00Z", 40.0)]
    whole = aggregate_series(items, Aggregation(("max",)), parse_temporal_query())
    assert [(b.values["max"], format_instant(b.end)) for b in whole] == [
        (67.0, "2020-08-01T14:07:00Z")]


def test_calendar_bucket_start() -> None:
    origin = to_micros("2024-01-15T00:00:00Z")
    month = Duration(1)
    assert format_instant(bucket_start(to_micros("2024-03-20T00:00:00Z"), origin, month)) == (
        "2024-03-15T00:00:00Z")
    assert format_instant(bucket_start(to_micros("2024-03-10T00:00:00Z"), origin, month)) == (
        "2024-02-15T00:00:00Z")


# ---- the temporal pagination rule ---------------------------------------------------------


def twenty() -> EntityHistory:
    """The suite's shape: speed at 01..20 and fuel at 03..22, both cut at ten instances."""
    return EntityHistory("urn:e:1", [X + "V"], [
        Series(X + "speed", None, [inst(i, at(i)) for i in range(1, 11)], True),
        Series(X + "fuel", None, [inst(i, at(i)) for i in range(3, 13)], True),
    ])


def test_forward_range_ends_at_the_earliest_cut() -> None:
    query = parse_temporal_query()
    window = page_range([twenty()], query)
    assert window is not None and window.header() == f"date-time {at(1)}-{at(10)}/*"
    clipped = clip(twenty(), window, "observedAt")
    assert [i["observedAt"] for i in clipped.series[1].instances][-1] == at(10)


def test_forward_range_starts_at_time_at() -> None:
    query = parse_temporal_query("after", "2019-01-01T01:01:00Z")
    window = page_range([twenty()], query)
    assert window is not None and window.header().startswith("date-time 2019-01-01T01:01:00Z-")


def test_backward_range_with_last_n() -> None:
    last = EntityHistory("urn:e:1", [X + "V"], [
        Series(X + "speed", None, [inst(i, at(i)) for i in range(11, 21)], True),
        Series(X + "fuel", None, [inst(i, at(i)) for i in range(13, 23)], True),
    ])
    query = parse_temporal_query(last_n="20")
    window = page_range([last], query)
    assert window is not None and window.header() == f"date-time {at(22)}-{at(13)}/20"
    before = parse_temporal_query("before", "2021-01-01T01:01:00Z", last_n="20")
    window = page_range([last], before)
    assert window is not None and window.header() == f"date-time 2021-01-01T01:01:00Z-{at(13)}/20"


def test_untruncated_histories_have_no_range() -> None:
    h = history(speed=[inst(1, at(1))])
    assert page_range([h], parse_temporal_query()) is None


@pytest.mark.parametrize("n", [1, 5])
def test_clipping_can_empty_a_series(n: int) -> None:
    h = EntityHistory("urn:e:1", [X + "V"], [
        Series(X + "speed", None, [inst(i, at(i)) for i in range(1, 11)], True),
        Series(X + "fuel", None, [inst(i, at(i, day=2)) for i in range(1, n + 1)]),
    ])
    query = parse_temporal_query("after", "2019-01-01T01:01:00Z")
    window = page_range([h], query)
    assert window is not None
    assert clip(h, window, "observedAt").series[1].instances == []
