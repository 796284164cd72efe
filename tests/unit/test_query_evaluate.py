"""Evaluating parsed q, type and scopeQ trees against entities in the stored form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from urbanos.core.model import NGSI_LD
from urbanos.core.query import (
    attribute_names,
    linked_depth,
    matches_q,
    matches_scope,
    matches_type,
    parse_q,
    parse_scope_q,
    parse_type_expr,
)
from urbanos.core.query.evaluate import compiled_pattern

EX = "https://example.org/"
_CORE = {n: NGSI_LD + n for n in ("observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt")}


def expand(term: str) -> str:
    if term in _CORE:
        return _CORE[term]
    return term if ":" in term else EX + term


def prop(value: Any, **members: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **members}


def rel(obj: Any, **members: Any) -> dict[str, Any]:
    return {"type": "Relationship", "object": obj, **members}


VEHICLE: dict[str, Any] = {
    "id": "urn:ngsi-ld:Vehicle:A4567",
    "type": [EX + "Vehicle"],
    "scope": ["/Madrid/Gardens/ParqueNorte", "/CompanyA/OrganizationB/UnitC"],
    "createdAt": "2024-01-01T00:00:00.000Z",
    "modifiedAt": "2024-03-01T12:00:00.000Z",
    "attrs": {
        EX + "brandName": [prop("Mercedes")],
        # a multi-attribute: the default instance and one with a datasetId
        EX + "speed": [
            prop(
                80,
                observedAt="2024-03-01T11:59:00.000Z",
                unitCode="KMH",
                **{EX + "accuracy": prop(0.95, unitCode="P1")},
            ),
            prop(
                20.5,
                datasetId="urn:ngsi-ld:Dataset:gps",
                observedAt="2024-02-01T08:00:00.000Z",
            ),
        ],
        EX + "isParked": [
            rel(
                "urn:ngsi-ld:OffStreetParking:Downtown1",
                observedAt="2024-03-01T10:00:00.000Z",
                **{EX + "providedBy": rel("urn:ngsi-ld:Person:Bob")},
            )
        ],
        EX + "passengers": [rel(["urn:ngsi-ld:Person:Ann", "urn:ngsi-ld:Person:Bob"])],
        EX + "route": [
            {
                "type": "ListRelationship",
                "objectList": [{"object": "urn:ngsi-ld:Stop:1"}, {"object": "urn:ngsi-ld:Stop:2"}],
            }
        ],
        EX + "tags": [prop(["electric", "fleet"])],
        EX + "readings": [{"type": "ListProperty", "valueList": [12, 15, 19]}],
        EX + "almostFull": [prop(False)],
        EX + "licence": [prop("1234")],
        EX + "serviceDate": [prop("2024-02-29")],
        EX + "opens": [prop("08:30:00Z")],
        EX + "location": [
            {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.7, 40.4]}}
        ],
    },
}

BUILDING: dict[str, Any] = {
    "id": "urn:ngsi-ld:Building:qlFeatures",
    "type": [EX + "Building", EX + "Landmark"],
    "attrs": {
        EX + "name": [prop("Eiffel Tower")],
        EX + "address": [prop({"city": "Berlin", "street": "Ulrich Strasse"})],
        EX + "sensor": [
            prop(
                40,
                **{EX + "rawdata": prop({"airquality": {"particulate": 40, "PM20": 85}})},
            )
        ],
        EX + "color": [
            {"type": "LanguageProperty", "languageMap": {"fr": "rouge", "en": "red", "de": "rot"}}
        ],
        EX + "motto": [
            {
                "type": "LanguageProperty",
                "languageMap": {"en": ["red", "cat"], "fr": ["chat", "rouge"]},
            }
        ],
        EX + "category": [{"type": "VocabProperty", "vocab": EX + "commercial"}],
        EX + "parkingTickets": [
            {"type": "JsonProperty", "json": {"id": "85a6", "value": "Overstay 60 minutes"}}
        ],
        EX + "floors": [prop([{"level": 1, "use": "shop"}, {"level": 2, "use": "office"}])],
        EX + "managedBy": [rel("urn:ngsi-ld:Building:qlTarget")],
        EX + "airQualityLevel": [prop(4)],
    },
}

TARGET: dict[str, Any] = {
    "id": "urn:ngsi-ld:Building:qlTarget",
    "type": [EX + "Building"],
    "attrs": {
        EX + "name": [prop("Pisa Tower")],
        EX + "owner": [rel("urn:ngsi-ld:Person:Bob")],
    },
}
BOB: dict[str, Any] = {
    "id": "urn:ngsi-ld:Person:Bob",
    "type": [EX + "Person"],
    "attrs": {EX + "age": [prop(41)]},
}
STORE: dict[str, Mapping[str, Any]] = {e["id"]: e for e in (VEHICLE, BUILDING, TARGET, BOB)}


def m(
    query: str, entity: Mapping[str, Any], *, expand_values: tuple[str, ...] = (), **kw: Any
) -> bool:
    return matches_q(parse_q(query, expand, expand_values=expand_values), entity, **kw)


# --------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('brandName=="Mercedes"', True),
        ('brandName!="Mercedes"', False),
        ('brandName!="Audi"', True),
        ('brandName>"L"', True),
        ('brandName<"L"', False),
        # multi-attribute: any datasetId instance may satisfy the term
        ("speed>50", True),
        ("speed<30", True),
        ("speed>100", False),
        ("speed==20.5", True),
        ("speed==80;speed==20.5", True),
        ("speed>=80", True),
        ("speed<=20.5", True),
        ("speed<20.5", False),
        ("speed!=80", True),  # the gps instance differs
        # ranges are inclusive
        ("speed==80..90", True),
        ("speed==81..90", False),
        ("speed==10..20.5", True),
        ("speed!=0..100", False),
        ("speed!=21..79", True),
        # value lists
        ("speed==1,2,80", True),
        ("speed==1,2,3", False),
        ('brandName!="Audi","BMW"', True),
        ('brandName!="Audi","Mercedes"', False),
        # types never mix
        ("licence==1234", False),
        ('licence=="1234"', True),
        ("licence!=1234", True),
        ("licence>1000", False),
        ("almostFull==false", True),
        ("almostFull==0", False),
        ('almostFull=="false"', False),
        ('speed=="80"', False),
        # missing attributes match nothing, not even !=
        ("missing!=1", False),
        ('missing!="x"', False),
        ("missing==1..2", False),
    ],
)
def test_property_comparisons(query: str, expected: bool) -> None:
    assert m(query, VEHICLE) is expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("speed.observedAt>=2024-03-01T00:00:00Z", True),
        ("speed.observedAt>2024-03-01T12:00:00+02:00", True),  # 10:00Z < 11:59Z
        ("speed.observedAt>2024-03-01T14:00:00+02:00", False),  # 12:00Z
        ("speed.observedAt==2024-02-01T08:00:00Z", True),  # .000 does not matter
        ('speed.observedAt=="2024-02-01T08:00:00Z"', True),  # nor for quoted dateTimes
        ("speed.observedAt==2024-02-01T00:00:00Z..2024-02-28T00:00:00Z", True),
        ("speed.observedAt<2020-01-01T00:00:00Z", False),
        ("speed.observedAt==2024-02-01", False),  # a date is not a dateTime
        ('speed.unitCode=="KMH"', True),
        ('speed.datasetId=="urn:ngsi-ld:Dataset:gps"', True),
        ("speed.datasetId==urn:ngsi-ld:Dataset:gps", True),
        ("speed.datasetId", True),
        ("speed.accuracy>0.9", True),
        ('speed.accuracy.unitCode=="P1"', True),
        ("speed.accuracy.observedAt", False),
        ("speed.missing", False),
        ("speed.missing!=1", False),
        ("isParked.observedAt<2024-03-01T10:00:01Z", True),
        ("isParked.providedBy==urn:ngsi-ld:Person:Bob", True),
        ("serviceDate==2024-02-29", True),
        ("serviceDate>2024-02-28;serviceDate<2024-03-01", True),
        ("serviceDate==2024-01-01..2024-02-28", False),
        ("opens<09:00:00Z", True),
        ("opens==09:30:00+01:00", True),  # times are compared in UTC
        ("opens==09:30:00Z", False),
        ("opens==07:30:00-01:00", True),
    ],
)
def test_sub_attributes_core_members_and_dates(query: str, expected: bool) -> None:
    assert m(query, VEHICLE) is expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('modifiedAt>"2024-01-15T00:00:00Z"', True),
        ("modifiedAt>2024-01-15T00:00:00Z", True),
        ("createdAt>=2024-03-01T00:00:00Z", False),
        ("createdAt", True),
        ("deletedAt", False),
    ],
)
def test_entity_level_system_members(query: str, expected: bool) -> None:
    assert m(query, VEHICLE) is expected


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("isParked==urn:ngsi-ld:OffStreetParking:Downtown1", True),
        ('isParked=="urn:ngsi-ld:OffStreetParking:Downtown1"', True),
        ("isParked!=urn:ngsi-ld:OffStreetParking:Downtown1", False),
        ("isParked!=urn:ngsi-ld:OffStreetParking:Other", True),
        ('isParked>"urn:a"', False),  # ordering never matches a Relationship
        ('isParked~="Downtown"', False),  # nor does a pattern
        ("passengers==urn:ngsi-ld:Person:Bob", True),
        ("passengers!=urn:ngsi-ld:Person:Bob", False),
        ("passengers!=urn:ngsi-ld:Person:Eve", True),
        ("passengers==urn:ngsi-ld:Person:Eve,urn:ngsi-ld:Person:Ann", True),
        ("route==urn:ngsi-ld:Stop:2", True),
        ("route!=urn:ngsi-ld:Stop:1,urn:ngsi-ld:Stop:9", False),
        ('route<="urn:ngsi-ld:Stop:9"', False),
        ('tags=="fleet"', True),
        ('tags!="fleet"', False),  # != must hold for every element
        ('tags!="taxi"', True),
        ('tags=="taxi","electric"', True),
        ("readings==15", True),
        ("readings>18", True),
        ("readings>19", False),
        ("readings!=12", False),
        ("readings==13..14", False),
        ('location[type]=="Point"', True),
        ('location=="Point"', False),
        ('location!="Point"', True),
    ],
)
def test_relationships_lists_and_arrays(query: str, expected: bool) -> None:
    assert m(query, VEHICLE) is expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('address[city]=="Berlin"', True),
        ('address[postcode]=="Berlin"', False),
        ("address[postcode]", False),
        ('address[postcode]!="Berlin"', False),  # undefined member: non-existent target
        ("address[city]", True),
        ('address=="Berlin"', False),
        ("sensor.rawdata[airquality.particulate]==40", True),
        ("sensor.rawdata[airquality.PM20]>80", True),
        ("sensor.rawdata[airquality.PM10]", False),
        ("sensor==40", True),
        ('floors[use]=="office"', True),  # keys map over arrays of objects
        ("floors[level]>1", True),
        ("floors[level]>2", False),
        ('parkingTickets[value]=="Overstay 60 minutes"', True),
        ('parkingTickets[id]~="^85"', True),
    ],
)
def test_compound_values(query: str, expected: bool) -> None:
    assert m(query, BUILDING) is expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('color[en]=="red"', True),
        ('color[en]=="rouge"', False),
        ('color[*]=="rouge"', True),
        ('color[*]!="red"', False),
        ('color[*]!="blue"', True),
        ('color[en]!="red"', False),
        ('color[es]=="rojo"', False),
        ('color[es]!="rojo"', False),
        ('color=="rot"', True),
        ("color[en]~=^r", True),
        ('motto[en]=="cat"', True),
        ('motto[en]=="chat"', False),
        ('motto[*]=="chat"', True),
        ('motto[fr]!="rouge"', False),
    ],
)
def test_language_properties(query: str, expected: bool) -> None:
    assert m(query, BUILDING) is expected


def test_lang_argument_picks_the_language_without_brackets() -> None:
    assert m('color=="red"', BUILDING, lang="en")
    assert not m('color=="rouge"', BUILDING, lang="en")
    assert not m('color=="red"', BUILDING, lang="es")
    assert m('color=="rouge"', BUILDING, lang="*")
    # an explicit [tag] wins over lang
    assert m('color[fr]=="rouge"', BUILDING, lang="en")


def test_vocab_values_compare_expanded() -> None:
    assert not m("category==commercial", BUILDING)
    assert m("category==commercial", BUILDING, expand_values=("category",))
    assert m(f"category=={EX}commercial", BUILDING)
    assert m('category!="residential"', BUILDING, expand_values=("category",))
    assert not m("category!=commercial", BUILDING, expand_values=("category",))


# --------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('name~="Tower"', True),  # search: anywhere in the string
        ('name~="^Tower"', False),
        ('name~="^Eiffel"', True),
        ('name~="(?i)^eiffel tower$"', True),
        ('name!~="^Eiffel"', False),
        ('name!~="^Pisa"', True),
        ("airQualityLevel~=4", False),  # not a string
        ("airQualityLevel!~=4", False),
        ("missing!~=x", False),
        ('category~="commercial$"', True),
    ],
)
def test_patterns(query: str, expected: bool) -> None:
    assert m(query, BUILDING) is expected


def test_patterns_over_arrays() -> None:
    assert m('tags~="^fl"', VEHICLE)
    assert not m('tags!~="^fl"', VEHICLE)
    assert m('tags!~="^taxi"', VEHICLE)


def test_patterns_are_compiled_once() -> None:
    expr = parse_q('name~="^Eif+el"', expand)
    matches_q(expr, BUILDING)
    before = compiled_pattern.cache_info()
    for _ in range(200):
        matches_q(expr, BUILDING)
    after = compiled_pattern.cache_info()
    assert after.misses == before.misses
    assert compiled_pattern("^Eif+el") is compiled_pattern("^Eif+el")


# --------------------------------------------------------------------------- logic


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('speed>50;brandName!="Mercedes"', False),
        ('speed>50|brandName!="Mercedes"', True),
        ('((speed>100|tags=="fleet");brandName=="Mercedes")', True),
        ("(speed>100|missing);brandName", False),
        ("missing|speed>100;brandName", False),
        ("brandName|speed>100;missing", True),  # ; binds tighter than |
        ("(brandName|speed>100);missing", False),
        ("!missing", True),
        ("!speed", False),
        ("!missing;speed>50", True),
        ("speed", True),
        ("isParked", True),
    ],
)
def test_logical_combinations(query: str, expected: bool) -> None:
    assert m(query, VEHICLE) is expected


def test_entity_without_attributes() -> None:
    bare = {"id": "urn:ngsi-ld:Thing:1", "type": [EX + "Thing"]}
    assert not m("speed", bare)
    assert not m("speed!=1", bare)
    assert m("!speed", bare)


# --------------------------------------------------------------------------- linked entities


def test_linked_entity_terms_follow_relationships() -> None:
    resolve = STORE.get
    assert m('managedBy{name}=="Pisa Tower"', BUILDING, linked=resolve)
    assert m('managedBy{Building:name}=="Pisa Tower"', BUILDING, linked=resolve)
    assert m('managedBy{Vehicle,Building:name}=="Pisa Tower"', BUILDING, linked=resolve)
    assert not m('managedBy{Vehicle:name}=="Pisa Tower"', BUILDING, linked=resolve)
    assert not m('managedBy{name}=="Eiffel Tower"', BUILDING, linked=resolve)
    assert m("managedBy{owner{age}}>40", BUILDING, linked=resolve)
    assert not m("managedBy{owner{age}}>41", BUILDING, linked=resolve)
    assert m("passengers{age}==41", VEHICLE, linked=resolve)  # one of two objects resolves
    # without a resolver linked terms never match
    assert not m('managedBy{name}=="Pisa Tower"', BUILDING)
    # following a Property (not a Relationship) finds nothing
    assert not m("name{name}", BUILDING, linked=resolve)


# --------------------------------------------------------------------------- metadata


def test_attribute_names_and_linked_depth() -> None:
    expr = parse_q(
        'speed>1;(name=="x"|!tags);modifiedAt>"2020-01-01T00:00:00Z";owner{works{name}}', expand
    )
    assert attribute_names(expr) == frozenset(
        {EX + "speed", EX + "name", EX + "tags", EX + "owner"}
    )
    assert linked_depth(expr) == 2
    assert linked_depth(parse_q("a.b[c]==1", expand)) == 0
    assert attribute_names(parse_q("createdAt", expand)) == frozenset()


# --------------------------------------------------------------------------- type, scope


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ("Building", True),
        ("Vehicle", False),
        ("Vehicle|Building", True),
        ("Vehicle,Building", True),
        ("(Building;Landmark)", True),
        ("(Building;Vehicle)", False),
        ("(Building;Vehicle)|Landmark", True),
        ("(Building;Vehicle),Motorhome", False),
        (f"{EX}Landmark", True),
        ("*", True),
    ],
)
def test_matches_type(types: str, expected: bool) -> None:
    assert matches_type(parse_type_expr(types, expand), BUILDING["type"]) is expected


@pytest.mark.parametrize(
    ("scope_q", "expected"),
    [
        ("/Madrid/Gardens/ParqueNorte", True),
        ("/Madrid/Gardens", False),
        ("/Madrid/+/ParqueNorte", True),
        ("/+/Gardens", False),
        ("/+/+/+", True),
        ("/Madrid/#", True),
        ("/Madrid/Gardens/ParqueNorte/#", True),  # the scope itself is included
        ("/Madrid/Gardens/ParqueNorte/Parterre1", False),
        ("/CompanyA/#", True),
        ("/CompanyB/#", False),
        ("/#", True),
        ("/Madrid/Gardens/ParqueNorte;/CompanyA/OrganizationB/UnitC", True),
        ("(/Madrid/Gardens/ParqueNorte;/Nowhere/AtAll)", False),
        ("/Nowhere/AtAll,/CompanyA/OrganizationB/UnitC", True),
        ("/Nowhere/AtAll|/Else", False),
        ("(/Madrid/Gardens/ParqueNorte;/Nowhere)|/CompanyA/+/UnitC", True),
    ],
)
def test_matches_scope(scope_q: str, expected: bool) -> None:
    assert matches_scope(parse_scope_q(scope_q), VEHICLE["scope"]) is expected


def test_scope_edge_cases() -> None:
    anything = parse_scope_q("/#")
    assert not matches_scope(anything, None)
    assert not matches_scope(anything, [])
    assert matches_scope(parse_scope_q("/Madrid"), ["Madrid"])  # stored without leading /
    assert not matches_scope(parse_scope_q("/Madrid"), ["/Madrid/Gardens"])
    assert matches_scope(parse_scope_q("/Madrid/#"), ["/Madrid"])
    assert not matches_scope(anything, ["urn:ngsi-ld:null"])
