"""The pure side of the Temporal API: history derivation, temporal query, durations, ranges."""

from __future__ import annotations

from typing import Any

import pytest

from urbanos.core.model import NULL_URN
from urbanos.core.query.parse import parse_scope_q
from urbanos.core.temporal import (
    SCOPE,
    Duration,
    derive_instances,
    format_instant,
    instance_id,
    instance_number,
    latest_instances,
    newer_than,
    parse_aggr_methods,
    parse_aggregation,
    parse_duration,
    parse_temporal_query,
    scope_intervals,
    to_micros,
    valid_scope_instances,
)
from urbanos.errors import BadRequestData

X = "https://ex.org/"
T0 = "2024-01-01T00:00:00.000Z"
T1 = "2024-01-01T00:01:00.000Z"


def prop(value: Any, at: str = T0, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "createdAt": at, "modifiedAt": at, **extra}


def entity(attrs: dict[str, list[dict[str, Any]]], at: str = T0, **extra: Any) -> dict[str, Any]:
    return {"id": "urn:e:1", "type": [X + "T"], "attrs": attrs, "createdAt": T0,
            "modifiedAt": at, **extra}


def us(text: str) -> int:
    return to_micros(text)


# ---- derivation ---------------------------------------------------------------------------


def test_creation_records_every_instance_and_the_scope() -> None:
    after = entity({X + "speed": [prop(1), prop(2, datasetId="urn:d:1")]}, scope=["/a"])
    found = derive_instances(None, after, T0)
    assert [(n.attr, n.dataset_id, n.instance["value"]) for n in found] == [
        (X + "speed", None, 1), (X + "speed", "urn:d:1", 2), (SCOPE, None, ["/a"])]
    assert found[2].instance["observedAt"] == T0  # scope: observedAt copies the change time


def test_only_changed_instances_are_recorded() -> None:
    before = entity({X + "a": [prop(1)], X + "b": [prop(2)]})
    after = entity({X + "a": [prop(1)], X + "b": [prop(3, T1)]}, T1)
    found = derive_instances(before, after, T1)
    assert [(n.attr, n.instance["value"], n.instance["createdAt"]) for n in found] == [
        (X + "b", 3, T1)]


def test_same_value_written_again_is_an_instance() -> None:
    before = entity({X + "a": [prop(1)]})
    after = entity({X + "a": [prop(1, T1)]}, T1)
    assert len(derive_instances(before, after, T1)) == 1


def test_deleted_attribute_and_entity_leave_null_instances() -> None:
    before = entity({X + "a": [prop(1)], X + "r": [{"type": "Relationship", "object": "urn:x",
                                                   "datasetId": "urn:d:1"}]}, scope=["/s"])
    found = derive_instances(before, None, T1)
    assert {n.attr for n in found} == {X + "a", X + "r", SCOPE}
    by_attr = {n.attr: n.instance for n in found}
    assert by_attr[X + "a"] == {"type": "Property", "value": NULL_URN, "createdAt": T1,
                                "modifiedAt": T1, "deletedAt": T1}
    assert by_attr[X + "r"]["object"] == NULL_URN
    assert by_attr[X + "r"]["datasetId"] == "urn:d:1"
    assert by_attr[SCOPE]["value"] == [] and by_attr[SCOPE]["deletedAt"] == T1


def test_language_property_deletion_uses_its_null() -> None:
    before = entity({X + "n": [{"type": "LanguageProperty", "languageMap": {"en": "x"}}]})
    (found,) = derive_instances(before, entity({}), T1)
    assert found.instance["languageMap"] == {"@none": NULL_URN}


def test_skip_leaves_attributes_to_the_caller() -> None:
    after = entity({X + "a": [prop(1)], X + "b": [prop(2)]})
    assert [n.attr for n in derive_instances(None, after, T0, skip=frozenset({X + "a"}))] == [
        X + "b"]


def test_latest_instance_per_dataset_by_observed_at() -> None:
    attrs = {X + "s": [prop(1, observedAt="2024-01-02T00:00:00Z"),
                       prop(2, observedAt="2024-01-01T00:00:00Z"),
                       prop(3, datasetId="urn:d:1")]}
    latest = latest_instances(attrs)[X + "s"]
    assert sorted(i["value"] for i in latest) == [1, 3]


def test_older_observation_does_not_replace_the_current_value() -> None:
    current = prop(1, observedAt="2024-01-02T00:00:00Z")
    assert not newer_than(prop(2, observedAt="2024-01-01T00:00:00Z"), current)
    assert newer_than(prop(2, observedAt="2024-01-03T00:00:00Z"), current)
    assert newer_than(prop(2), current) and newer_than(prop(2), None)


# ---- the temporal query -------------------------------------------------------------------


def test_window_bounds() -> None:
    after = parse_temporal_query("after", "2020-01-01T00:00:00Z")
    assert after.contains(us("2020-01-01T00:00:00.000Z")) and not after.contains(us(T0) - 10**15)
    before = parse_temporal_query("before", "2020-01-01T00:00:00Z")
    assert not before.contains(us("2020-01-01T00:00:00Z"))
    between = parse_temporal_query("between", "2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z")
    assert (between.start, between.end) == (us("2020-01-01T00:00:00Z"),
                                            us("2020-01-02T00:00:00Z"))
    assert not between.contains(None)


@pytest.mark.parametrize(
    "args",
    [
        ("during", "2020-01-01T00:00:00Z"),
        ("after", None),
        ("after", "2020-01-01"),
        ("after", "yesterday"),
        ("between", "2020-01-01T00:00:00Z"),
        ("between", "2020-01-02T00:00:00Z", "2020-01-01T00:00:00Z"),
        ("after", "2020-01-01T00:00:00Z", None, "expiresAt"),
        ("after", "2020-01-01T00:00:00Z", None, None, "0"),
        ("after", "2020-01-01T00:00:00Z", None, None, "-2"),
        ("after", "2020-01-01T00:00:00Z", None, None, 2.5),
        ("after", "2020-01-01T00:00:00Z", None, None, True),
        (None, "2020-01-01T00:00:00Z"),
    ],
)
def test_bad_temporal_queries(args: tuple[Any, ...]) -> None:
    with pytest.raises(BadRequestData):
        parse_temporal_query(*args)


def test_last_n_from_text_and_json() -> None:
    assert parse_temporal_query(last_n="3").last_n == 3
    assert parse_temporal_query(last_n=3).last_n == 3


@pytest.mark.parametrize(
    ("text", "months", "micros"),
    [("PT1S", 0, 10**6), ("PT1H30M", 0, 5400 * 10**6), ("P1D", 0, 86_400 * 10**6),
     ("P2W", 0, 14 * 86_400 * 10**6), ("P1Y2M", 14, 0), ("PT0S", 0, 0), ("PT0.5S", 0, 500_000),
     ("P1DT1H", 0, 90_000 * 10**6)],
)
def test_durations(text: str, months: int, micros: int) -> None:
    assert parse_duration(text) == Duration(months, micros)


@pytest.mark.parametrize("text", ["bogus", "P", "PT", "P1DT", "1D", "PT-1S", "P1.5D", 5, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(BadRequestData, match="aggrPeriodDuration"):
        parse_duration(text)


def test_aggregation_methods() -> None:
    assert parse_aggr_methods("avg, max") == ("avg", "max")
    assert parse_aggr_methods(["sum", "sum"]) == ("sum",)
    for bad in ("bogus", ["avg", "median"], [], 3):
        with pytest.raises(BadRequestData, match="aggrMethods"):
            parse_aggr_methods(bad)
    assert parse_aggregation("avg", None).period.zero
    with pytest.raises(BadRequestData):
        parse_aggregation(None, "PT1H")


def test_calendar_durations_step_by_month() -> None:
    jan31 = us("2024-01-31T00:00:00Z")
    assert format_instant(Duration(1).add_to(jan31)) == "2024-02-29T00:00:00Z"
    assert format_instant(Duration(12).add_to(jan31, 2)) == "2026-01-31T00:00:00Z"


def test_instants_and_instance_ids() -> None:
    assert format_instant(us("2020-08-01T12:03:00Z")) == "2020-08-01T12:03:00Z"
    assert format_instant(us("2020-08-01T12:03:00.120Z")) == "2020-08-01T12:03:00.120Z"
    assert format_instant(us("2020-08-01T12:03:00.000123Z")) == "2020-08-01T12:03:00.000123Z"
    assert instance_number(instance_id(42)) == 42
    assert instance_number("urn:ngsi-ld:01234567890123456789") is None
    assert instance_number("urn:ngsi-ld:Instance:abc") is None


# ---- scope validity (clause 4.18) ---------------------------------------------------------


def test_scope_holds_until_it_changes() -> None:
    history = [{"type": "Property", "value": ["/R"], "observedAt": "2026-03-01T10:00:00Z"},
               {"type": "Property", "value": ["/S"], "observedAt": "2026-03-01T12:30:00Z"}]
    window = parse_temporal_query("between", "2026-03-01T12:00:00Z", "2026-03-01T13:00:00Z")
    old = scope_intervals(history, parse_scope_q("/R"), window.start, window.end)
    assert old == [(us("2026-03-01T12:00:00Z"), us("2026-03-01T12:30:00Z"))]
    new = scope_intervals(history, parse_scope_q("/S"), window.start, window.end)
    assert new == [(us("2026-03-01T12:30:00Z"), us("2026-03-01T13:00:00Z"))]
    assert scope_intervals(history, parse_scope_q("/X"), window.start, window.end) == []
    assert [i["value"] for i in valid_scope_instances(history, window)] == [["/R"], ["/S"]]


def test_removed_scope_stops_matching() -> None:
    history = [{"type": "Property", "value": ["/A"], "observedAt": "2026-03-01T10:00:00Z"},
               {"type": "Property", "value": [], "deletedAt": "2026-03-01T11:00:00Z"}]
    late = parse_temporal_query("after", "2026-03-01T12:00:00Z")
    assert scope_intervals(history, parse_scope_q("/#"), late.start, late.end) == []
