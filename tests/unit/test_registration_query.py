"""Query Context Source Registrations as a pure predicate (clause 5.10.2.4): every filter
on stored registration documents, and the parameters that are refused."""

from __future__ import annotations

from typing import Any

import pytest

from urbanos.core.jsonld import build_term_map, core_term_map
from urbanos.core.registration import parse_registration
from urbanos.core.registration_query import RegistrationQuery, parse_registration_query
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject

NOW = "2030-01-01T00:00:00.000Z"
CORE = core_term_map()
EX = "https://example.org/city#"
USER = build_term_map({"Gauge": EX + "Gauge", "level": EX + "level",
                       "owner": EX + "owner"}, {})
#: a polygon around Hitoyoshi, and points inside and outside it
AREA = "[[[130.70,32.15],[130.80,32.15],[130.80,32.25],[130.70,32.25],[130.70,32.15]]]"
INSIDE = {"type": "Point", "coordinates": [130.76, 32.21]}
OUTSIDE = {"type": "Point", "coordinates": [139.69, 35.69]}


def reg(rid: str, terms: Any = USER, **members: Any) -> JSONObject:
    payload: JSONObject = {
        "id": f"urn:ngsi-ld:ContextSourceRegistration:{rid}", "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Gauge"}]}],
        "endpoint": f"http://{rid}.example:1026",
    }
    payload.update(members)
    return parse_registration(payload, terms, NOW, new_id=lambda: "unused")


def query(terms: Any = USER, **params: str) -> RegistrationQuery:
    return parse_registration_query(params, terms)


def found(docs: list[JSONObject], terms: Any = USER, **params: str) -> list[str]:
    wanted = query(terms, **params)
    return [d["id"].rsplit(":", 1)[1] for d in docs if wanted.matches(d)]


# --------------------------------------------------------------------------- information


def test_type_selection_language_and_ids_match_entity_infos() -> None:
    docs = [
        reg("gauges"),
        reg("one", information=[{"entities": [{"id": "urn:ngsi-ld:Gauge:1", "type": "Gauge"}]}]),
        reg("pattern", information=[{"entities": [{"idPattern": ".*:river$", "type": "Gauge"}]}]),
        reg("both", information=[{"entities": [{"type": ["Gauge", "Camera"]}]}]),
        reg("names", information=[{"propertyNames": ["level"]}]),  # no EntityInfo: any entity
    ]
    assert found(docs, type="Gauge") == ["gauges", "one", "pattern", "both", "names"]
    assert found(docs, type="Gauge;Camera") == ["both", "names"]
    assert found(docs, type="Camera|Lamp") == ["both", "names"]
    assert found(docs, type="*") == ["gauges", "one", "pattern", "both", "names"]
    assert found(docs, type="Gauge", id="urn:ngsi-ld:Gauge:2") == [
        "gauges", "both", "names"]  # "one" is registered for another id of the type
    assert found(docs, id="urn:ngsi-ld:Gauge:1,urn:ngsi-ld:Gauge:x:river") == [
        "gauges", "one", "pattern", "both", "names"]
    assert found(docs, type="Gauge", idPattern=".*:1$") == [
        "gauges", "one", "pattern", "both", "names"]  # a pattern may meet any pattern


def test_attributes_of_attrs_q_and_the_geo_query_match_registered_names() -> None:
    docs = [reg("level", information=[{"entities": [{"type": "Gauge"}],
                                       "propertyNames": ["level"]}]),
            reg("any"),
            reg("owner", information=[{"relationshipNames": ["owner"]}])]
    assert found(docs, attrs="level") == ["level", "any"]
    assert found(docs, attrs="level,owner") == ["level", "any", "owner"]
    # q is about entities: its attributes select registrations the way attrs do
    assert found(docs, q="level>3.0") == ["level", "any"]
    assert found(docs, q="owner==urn:ngsi-ld:City:1|level>3") == ["level", "any", "owner"]
    # a q on system attributes only names no attribute: every RegistrationInfo answers
    assert found(docs, q="createdAt>2020-01-01T00:00:00Z", type="Gauge") == [
        "level", "any", "owner"]


# --------------------------------------------------------------------------- csf


def test_csf_filters_on_the_registrations_own_members_and_properties() -> None:
    docs = [reg("a", mode="auxiliary", operations=["retrieveOps"], csourceProperty1="aValue",
                region={"type": "Property", "value": "Kumamoto"}, registrationName="rivers",
                owner="Kuma"),
            reg("b", csourceProperty1="other", scope=["/Kyushu/Kumamoto", "/Japan"])]
    assert found(docs, csf='endpoint=="http://a.example:1026"') == ["a"]
    assert found(docs, csf='csourceProperty1=="aValue"') == ["a"]
    assert found(docs, csf="csourceProperty1") == ["a", "b"]
    assert found(docs, csf='region=="Kumamoto"') == ["a"]  # given as a Property
    assert found(docs, csf='mode=="inclusive"') == ["b"]
    assert found(docs, csf='operations=="retrieveOps"') == ["a"]
    assert found(docs, csf='registrationName~="^riv"') == ["a"]
    assert found(docs, csf="!registrationName") == ["b"]
    assert found(docs, csf='scope=="/Japan"') == ["b"]
    # names follow the caller's @context, as the registrant's did
    assert found(docs, csf='owner=="Kuma"') == ["a"]
    assert found(docs, CORE, csf='owner=="Kuma"') == []


# --------------------------------------------------------------------------- geo


def test_geo_query_on_location_or_the_named_geoproperty() -> None:
    square = {"type": "Polygon", "coordinates": [[[130.75, 32.20], [130.95, 32.20],
                                                  [130.95, 32.30], [130.75, 32.30],
                                                  [130.75, 32.20]]]}
    docs = [reg("inside", location=INSIDE), reg("outside", location=OUTSIDE),
            reg("overlapping", location=square), reg("nowhere"),
            reg("observes", observationSpace=INSIDE)]
    within = {"georel": "within", "geometry": "Polygon", "coordinates": AREA}
    # a region overlapping the area may hold entities within it
    assert found(docs, **within) == ["inside", "overlapping"]
    assert found(docs, **within, geoproperty="observationSpace") == ["observes"]
    near = {"georel": "near;maxDistance==2000", "geometry": "Point",
            "coordinates": "[130.765,32.21]"}
    assert found(docs, **near) == ["inside", "overlapping"]
    far = {"georel": "near;minDistance==500000", "geometry": "Point",
           "coordinates": "[130.765,32.21]"}
    assert found(docs, **far) == ["outside"]
    assert found(docs, georel="disjoint", geometry="Polygon", coordinates=AREA) == [
        "outside", "overlapping"]
    # a registration covering the point may hold an entity that contains it
    assert found(docs, georel="contains", geometry="Point", coordinates="[130.8,32.25]") == [
        "overlapping"]


def test_a_geo_query_names_an_attribute_for_registered_names_too() -> None:
    docs = [reg("named", location=INSIDE,
                information=[{"entities": [{"type": "Gauge"}], "propertyNames": ["level"]}]),
            reg("open", location=INSIDE, information=[{"entities": [{"type": "Gauge"}]}])]
    assert found(docs, georel="within", geometry="Polygon", coordinates=AREA) == ["open"]


# --------------------------------------------------------------------------- time


def test_temporal_queries_match_the_interval_of_their_timeproperty() -> None:
    interval = {"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"}
    docs = [reg("latest"), reg("observed", observationInterval=interval),
            reg("managed", managementInterval=interval),
            reg("open", observationInterval={"startAt": "2021-01-01T00:00:00Z"})]
    # without a temporal query: sources of latest information only
    assert found(docs, type="Gauge") == ["latest"]
    assert found(docs, timerel="before", timeAt="2021-08-01T22:00:00Z") == ["observed", "open"]
    assert found(docs, timerel="before", timeAt="2021-08-01T22:00:00Z",
                 timeproperty="observedAt") == ["observed", "open"]
    for prop in ("createdAt", "modifiedAt", "deletedAt"):
        assert found(docs, timerel="before", timeAt="2021-08-01T22:00:00Z",
                     timeproperty=prop) == ["managed"]
    assert found(docs, timerel="before", timeAt="2020-08-01T22:07:00Z") == ["observed"]
    assert found(docs, timerel="before", timeAt="2020-01-01T00:00:00Z") == []
    assert found(docs, timerel="after", timeAt="2021-08-01T21:07:00Z") == ["observed", "open"]
    assert found(docs, timerel="after", timeAt="2025-01-01T00:00:00Z") == ["open"]
    assert found(docs, timerel="between", timeAt="2019-01-01T00:00:00Z",
                 endTimeAt="2020-09-01T00:00:00Z") == ["observed"]
    assert found(docs, timerel="between", timeAt="2021-02-01T00:00:00Z",
                 endTimeAt="2021-03-01T00:00:00Z", timeproperty="") == ["observed", "open"]


# --------------------------------------------------------------------------- scope


def test_scope_query_on_the_registration_scope() -> None:
    docs = [reg("centro", scope="/Madrid/Centro"), reg("berlin", scope="/Berlin"),
            reg("both", scope=["/Berlin", "/Madrid"]), reg("none")]
    assert found(docs, scopeQ="/Madrid/#") == ["centro", "both"]
    assert found(docs, scopeQ="/Madrid") == ["both"]
    assert found(docs, scopeQ="/Berlin;/Madrid") == ["both"]
    assert found(docs, scopeQ="/#") == ["centro", "berlin", "both"]


def test_every_condition_must_hold() -> None:
    docs = [reg("a", scope="/Madrid", location=INSIDE, csourceProperty1="x"),
            reg("b", scope="/Madrid", location=OUTSIDE, csourceProperty1="x")]
    assert found(docs, type="Gauge", scopeQ="/Madrid", csf='csourceProperty1=="x"',
                 georel="within", geometry="Polygon", coordinates=AREA) == ["a"]
    assert found(docs, type="Camera", scopeQ="/Madrid") == []


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize("params", [
    {},  # too wide
    {"count": "true"},
    {"id": "not a uri", "type": "Gauge"},
    {"type": ""},
    {"type": "Gauge;"},
    {"attrs": "level,,owner"},
    {"q": "(level>3"},
    {"csf": "endpoint=="},
    {"idPattern": "(a+)+", "type": "Gauge"},
    {"georel": "within"},
    {"georel": "within", "geometry": "Polygon", "coordinates": "[[1,2]"},
    {"georel": "near", "geometry": "Point", "coordinates": "[1,2]"},
    {"timerel": "before"},
    {"timerel": "during", "timeAt": "2021-01-01T00:00:00Z"},
    {"timerel": "between", "timeAt": "2021-01-01T00:00:00Z"},
    {"timerel": "after", "timeAt": "yesterday"},
    {"timerel": "after", "timeAt": "2021-01-01T00:00:00Z", "timeproperty": "observationInterval"},
    {"timeAt": "2021-01-01T00:00:00Z", "type": "Gauge"},
    {"scopeQ": "Madrid//x"},
])
def test_invalid_or_unrestricted_queries_are_bad_request_data(params: dict[str, str]) -> None:
    with pytest.raises(BadRequestData):
        parse_registration_query(params, USER)


@pytest.mark.parametrize("params", [
    {"type": "Gauge"}, {"attrs": "level"}, {"q": "level>1"},
    {"georel": "near;maxDistance==10", "geometry": "Point", "coordinates": "[1,2]"},
    {"id": "urn:ngsi-ld:Gauge:1"}, {"idPattern": ".*"}, {"csf": "mode"},
    {"scopeQ": "/Madrid"}, {"timerel": "after", "timeAt": "2021-01-01T00:00:00Z"},
    {"type": "Gauge", "q": "", "csf": "", "scopeQ": "", "geoproperty": "", "timeproperty": ""},
])
def test_each_filter_narrows_the_query_alone(params: dict[str, str]) -> None:
    assert parse_registration_query(params, USER).narrows
