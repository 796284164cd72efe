"""Context source registration documents: validation, patching, rendering, discovery (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from urbanos.core.jsonld import build_term_map, core_term_map
from urbanos.core.registration import (
    parse_registration,
    patch_registration,
    registration_matches,
    render_registration,
)
from urbanos.core.registration_info import conflicts, expand_operations, supports
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject

D = "https://uri.etsi.org/ngsi-ld/default-context/"
EX = "https://example.org/city#"
NOW = "2030-01-01T00:00:00.000Z"
LATER = "2030-01-02T00:00:00.000Z"
CORE = core_term_map()
USER = build_term_map({"Vehicle": EX + "Vehicle", "speed": EX + "speed",
                       "isParked": EX + "isParked", "owner": EX + "owner"}, {})


def body(**members: Any) -> JSONObject:
    payload: JSONObject = {
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"id": "urn:ngsi-ld:Vehicle:A1", "type": "Vehicle"}],
                         "propertyNames": ["speed"], "relationshipNames": ["isParked"]}],
        "endpoint": "http://source.example:1026",
    }
    payload.update(members)
    return payload


def parse(payload: object, terms: Any = CORE) -> JSONObject:
    return parse_registration(payload, terms, NOW, new_id=lambda: "urn:ngsi-ld:CSR:new")


def invalid(payload: object, terms: Any = CORE) -> str:
    with pytest.raises(BadRequestData) as caught:
        parse(payload, terms)
    return caught.value.detail


# --------------------------------------------------------------------------- parse


def test_names_stored_expanded_defaults_filled_and_times_set() -> None:
    doc = parse(body(id="urn:ngsi-ld:CSR:1"), USER)
    assert doc["id"] == "urn:ngsi-ld:CSR:1"
    info = doc["information"][0]
    assert info["entities"] == [{"id": "urn:ngsi-ld:Vehicle:A1", "type": EX + "Vehicle"}]
    assert info["propertyNames"] == [EX + "speed"]
    assert info["relationshipNames"] == [EX + "isParked"]
    assert doc["mode"] == "inclusive" and doc["operations"] == ["federationOps"]
    assert doc["createdAt"] == doc["modifiedAt"] == NOW


def test_id_generated_when_absent() -> None:
    assert parse(body())["id"] == "urn:ngsi-ld:CSR:new"


def test_every_optional_member_is_accepted() -> None:
    doc = parse(body(
        registrationName="city", description="flood sensors", tenant="sendai",
        observationInterval={"startAt": "2020-01-01T00:00:00Z"},
        managementInterval={"startAt": "2020-01-01T00:00:00Z", "endAt": "2021-01-01T00:00:00Z"},
        location={"type": "Point", "coordinates": [140.87, 38.26]},
        observationSpace={"type": "Point", "coordinates": [140.87, 38.26]},
        operationSpace={"type": "Point", "coordinates": [140.87, 38.26]},
        expiresAt="2031-01-01T00:00:00Z",
        contextSourceInfo=[{"key": "X-Auth-Token", "value": "abc"}],
        scope=["/Sendai/River"], mode="redirect", operations=["retrieveOps", "createEntity"],
        refreshRate="PT1M",
        management={"localOnly": True, "cacheDuration": "PT5M", "timeout": 3000,
                    "cooldown": 500},
    ))
    assert doc["mode"] == "redirect"
    assert doc["management"]["timeout"] == 3000
    assert doc["scope"] == ["/Sendai/River"]
    assert parse(body(scope="/Sendai"))["scope"] == "/Sendai"


def test_entity_type_keeps_its_shape() -> None:
    doc = parse(body(information=[{"entities": [{"type": ["Vehicle", "Bus"]}]}]), USER)
    assert doc["information"][0]["entities"][0]["type"] == [EX + "Vehicle", D + "Bus"]
    shown = render_registration(doc, USER, NOW)
    assert shown["information"][0]["entities"][0]["type"] == ["Vehicle", "Bus"]


@pytest.mark.parametrize(("members", "expected"), [
    ({"type": "Registration"}, "type"),
    ({"type": None}, "type"),
    ({"id": "not a uri"}, "id"),
    ({"information": None}, "information"),
    ({"information": []}, "information"),
    ({"information": [{}]}, "RegistrationInfo needs"),
    ({"information": [{"entities": []}]}, "entities"),
    ({"information": [{"entities": [{"id": "urn:a:1"}]}]}, "needs a type"),
    ({"information": [{"entities": [{"type": "A", "id": "nope"}]}]}, "not a URI"),
    ({"information": [{"entities": [{"type": "A", "idPattern": "(a"}]}]}, "idPattern"),
    ({"information": [{"entities": [{"type": "A", "colour": "red"}]}]}, "unknown"),
    ({"information": [{"entities": [{"type": 5}]}]}, "type"),
    ({"information": [{"propertyNames": []}]}, "propertyNames"),
    ({"information": [{"propertyNames": ["bad name"]}]}, "propertyNames"),
    ({"information": [{"relationshipNames": ["createdAt"]}]}, "core NGSI-LD member"),
    ({"information": [{"propertyNames": ["a"], "attrs": ["b"]}]}, "unknown"),
    ({"endpoint": "my.csource.org"}, "endpoint"),
    ({"endpoint": "ftp://source.example/"}, "http"),
    ({"endpoint": "http://source.example:99999/"}, "endpoint"),
    ({"endpoint": "http:///path"}, "endpoint"),
    ({"endpoint": 1026}, "endpoint"),
    ({"mode": "shared"}, "mode"),
    ({"operations": ["fly"]}, "operation"),
    ({"operations": []}, "operations"),
    ({"operations": "federationOps"}, "operations"),
    ({"registrationName": ""}, "registrationName"),
    ({"description": 3}, "description"),
    ({"tenant": ["a"]}, "tenant"),
    ({"observationInterval": {"endAt": "2020-01-01T00:00:00Z"}}, "startAt"),
    ({"observationInterval": {"startAt": "yesterday"}}, "startAt"),
    ({"managementInterval": {"startAt": "2021-01-01T00:00:00Z",
                             "endAt": "2020-01-01T00:00:00Z"}}, "endAt"),
    ({"managementInterval": {"startAt": "2021-01-01T00:00:00Z", "step": 1}}, "unknown"),
    ({"location": {"type": "Point", "coordinates": [1]}}, "location"),
    ({"operationSpace": "nowhere"}, "operationSpace"),
    ({"expiresAt": "2018-11-29T14:53:15Z"}, "future"),
    ({"expiresAt": " 2018-11-29T14:53:15Z"}, "expiresAt"),
    ({"contextSourceInfo": [{"key": "X-Custom", "value": 123}]}, "string"),
    ({"contextSourceInfo": [{"key": "X-Custom"}]}, "key and a value"),
    ({"contextSourceInfo": [{"key": "bad header", "value": "v"}]}, "header"),
    ({"scope": "no-slash"}, "scope"),
    ({"refreshRate": "often"}, "refreshRate"),
    ({"management": "yes"}, "management"),
    ({"management": {"cacheDuration": "bogus"}}, "cacheDuration"),
    ({"management": {"cooldown": 0}}, "cooldown"),
    ({"management": {"timeout": -5}}, "timeout"),
    ({"management": {"localOnly": "yes"}}, "localOnly"),
    ({"management": {"retries": 3}}, "unknown"),
    ({"status": "ok"}, "status"),
    ({"timesSent": 3}, "timesSent"),
    ({"timesFailed": 0}, "timesFailed"),
    ({"lastSuccess": NOW}, "lastSuccess"),
    ({"lastFailure": NOW}, "lastFailure"),
    ({"bad name": 1}, "Context Source Property"),
    ({"colour": None}, "null"),
])
def test_invalid_members_are_bad_request_data(members: dict[str, Any], expected: str) -> None:
    assert expected in invalid(body(**members))


def test_mandatory_members() -> None:
    for key in ("information", "endpoint"):
        payload = body()
        del payload[key]
        assert "mandatory" in invalid(payload)
    assert "JSON object" in invalid([body()])


@pytest.mark.parametrize(("info", "expected"), [
    ({"entities": [{"id": "urn:ngsi-ld:Vehicle:A1", "type": "Vehicle"}]}, "propertyNames"),
    ({"entities": [{"type": "Vehicle"}], "propertyNames": ["speed"]}, "id"),
    ({"entities": [{"idPattern": "^urn:a", "type": "Vehicle"}], "propertyNames": ["speed"]},
     "idPattern"),
    ({"entities": [{"id": "urn:a:1", "idPattern": "^urn:a", "type": "Vehicle"}],
      "propertyNames": ["speed"]}, "idPattern"),
    ({"propertyNames": ["speed"]}, "entities"),
])
def test_exclusive_rules(info: JSONObject, expected: str) -> None:
    assert expected in invalid(body(mode="exclusive", information=[info]))


def test_exclusive_with_ids_and_names_is_accepted() -> None:
    assert parse(body(mode="exclusive"))["mode"] == "exclusive"


def test_auxiliary_serves_reads_only() -> None:
    assert "auxiliary" in invalid(body(mode="auxiliary", operations=["updateEntity"]))
    assert "auxiliary" in invalid(body(mode="auxiliary", operations=["redirectionOps"]))
    doc = parse(body(mode="auxiliary", operations=["retrieveOps", "querySubscription"]))
    assert doc["operations"] == ["retrieveOps", "querySubscription"]
    assert parse(body(mode="auxiliary"))["operations"] == ["federationOps"]


def test_operation_groups_expand() -> None:
    assert expand_operations(["retrieveOps"]) == {"retrieveEntity", "queryEntity"}
    assert "replaceAttrs" in expand_operations(["updateOps"])
    assert "createEntity" in expand_operations(["redirectionOps"])
    fed = expand_operations(["federationOps"])
    assert {"queryEntity", "retrieveEntityTypes", "createSubscription"} <= fed
    assert "createEntity" not in fed
    assert expand_operations(["queryTemporal", "updateOps"]) >= {"queryTemporal", "updateAttrs"}
    assert supports(parse(body()), "queryEntity")
    assert not supports(parse(body()), "createEntity")
    assert supports(parse(body(operations=["createEntity"])), "createEntity")


# --------------------------------------------------------------------------- render


def test_round_trip_with_a_user_context() -> None:
    payload = body(id="urn:ngsi-ld:CSR:1", owner="city", location={
        "type": "Point", "coordinates": [1.0, 2.0]}, mode="redirect", operations=["retrieveOps"])
    doc = parse(payload, USER)
    assert doc[EX + "owner"] == "city"
    shown = render_registration(doc, USER, NOW)
    expected = {k: v for k, v in payload.items()}
    assert shown == expected
    with_core = render_registration(doc, CORE, NOW)
    assert with_core["information"][0]["entities"][0]["type"] == EX + "Vehicle"
    assert with_core["information"][0]["propertyNames"] == [EX + "speed"]
    assert with_core[EX + "owner"] == "city"


def test_round_trip_with_the_core_context() -> None:
    payload = body(id="urn:ngsi-ld:CSR:2", csourceProperty1="aValue")
    doc = parse(payload)
    assert doc["information"][0]["entities"][0]["type"] == D + "Vehicle"
    assert doc[D + "csourceProperty1"] == "aValue"
    shown = render_registration(doc, CORE, NOW)
    assert shown == {**payload, "mode": "inclusive", "operations": ["federationOps"]}
    seen_by_user = render_registration(doc, USER, NOW)
    # the prefix form a reader without the default vocabulary gets (as entity types do)
    assert seen_by_user["information"][0]["entities"][0]["type"] == "ngsi-ld:default-context/Vehicle"


def test_render_hides_internal_and_system_members_unless_asked() -> None:
    doc = parse(body())
    doc["_context"] = ["https://example.org/ctx.jsonld"]
    shown = render_registration(doc, CORE, NOW)
    assert not [k for k in shown if k.startswith("_") or k in ("createdAt", "modifiedAt")]
    assert "status" not in shown and "timesSent" not in shown
    full = render_registration(doc, CORE, NOW, sys_attrs=True)
    assert full["createdAt"] == full["modifiedAt"] == NOW


def test_render_shows_counters_the_broker_wrote() -> None:
    doc = parse(body())
    doc.update(status="failed", timesSent=3, timesFailed=1, lastFailure=LATER)
    shown = render_registration(doc, CORE, NOW)
    assert (shown["status"], shown["timesSent"], shown["timesFailed"]) == ("failed", 3, 1)
    assert shown["lastFailure"] == LATER


# --------------------------------------------------------------------------- patch


def test_patch_replaces_members_and_keeps_the_rest() -> None:
    doc = parse(body(id="urn:ngsi-ld:CSR:1", expiresAt="2031-01-01T00:00:00Z"), USER)
    doc["_context"] = "https://example.org/ctx.jsonld"
    before = copy.deepcopy(doc)
    out = patch_registration(doc, {"endpoint": "https://new.example/ngsi-ld",
                                   "information": [{"entities": [{"type": "Bus"}]}],
                                   "expiresAt": None, "@context": ["x"]}, USER, LATER)
    assert doc == before
    assert out["endpoint"] == "https://new.example/ngsi-ld"
    assert out["information"] == [{"entities": [{"type": D + "Bus"}]}]
    assert "expiresAt" not in out
    assert out["_context"] == "https://example.org/ctx.jsonld"
    assert (out["createdAt"], out["modifiedAt"]) == (NOW, LATER)


def test_patch_null_resets_defaults_and_removes_properties() -> None:
    doc = parse(body(mode="redirect", operations=["retrieveOps"], colour="red"))
    out = patch_registration(doc, {"mode": None, "operations": None, "colour": None},
                             CORE, LATER)
    assert out["mode"] == "inclusive" and out["operations"] == ["federationOps"]
    assert D + "colour" not in out


@pytest.mark.parametrize(("fragment", "expected"), [
    ({"type": "building"}, "type"),
    ({"id": "urn:ngsi-ld:CSR:other", "endpoint": "http://a.example"}, "id"),
    ({"information": None}, "mandatory"),
    ({"endpoint": None}, "mandatory"),
    ({"endpoint": "not-a-url"}, "endpoint"),
    ({"mode": "exclusive", "information": [{"entities": [{"type": "Vehicle"}]}]}, "exclusive"),
    ({"mode": "auxiliary", "operations": ["updateOps"]}, "auxiliary"),
    ({"timesSent": 1}, "timesSent"),
    ({"status": None}, "status"),
    ({"expiresAt": "2020-01-01T00:00:00Z"}, "future"),
    ({}, "nothing"),
    ({"@context": ["x"]}, "nothing"),
])
def test_patch_refusals_leave_the_document_unchanged(
    fragment: JSONObject, expected: str
) -> None:
    doc = parse(body(id="urn:ngsi-ld:CSR:1"))
    before = copy.deepcopy(doc)
    with pytest.raises(BadRequestData) as caught:
        patch_registration(doc, fragment, CORE, LATER)
    assert expected in caught.value.detail
    assert doc == before


def test_patch_revalidates_the_whole_registration() -> None:
    doc = parse(body(mode="exclusive"))
    with pytest.raises(BadRequestData, match="idPattern"):
        patch_registration(doc, {"information": [
            {"entities": [{"idPattern": ".*", "type": "Vehicle"}], "propertyNames": ["a"]}]},
            CORE, LATER)
    assert patch_registration(doc, {"mode": "inclusive", "information": [
        {"entities": [{"idPattern": ".*", "type": "Vehicle"}]}]}, CORE, LATER)["mode"] == "inclusive"
    with pytest.raises(BadRequestData):
        patch_registration(doc, "endpoint", CORE, LATER)


# --------------------------------------------------------------------------- discovery


def matches(doc: JSONObject, ids: set[str] | None = None, types: set[str] | None = None,
            attrs: set[str] | None = None, id_pattern: str | None = None) -> bool:
    return registration_matches(doc, ids=ids, types=types, attrs=attrs, id_pattern=id_pattern)


def test_matches_by_type_id_pattern_and_attributes() -> None:
    doc = parse(body(information=[
        {"entities": [{"id": "urn:ngsi-ld:Vehicle:A1", "type": "Vehicle"}],
         "propertyNames": ["speed"]},
        {"entities": [{"idPattern": ".*downtown$", "type": "OffStreetParking"}],
         "relationshipNames": ["isNextTo"]},
    ]))
    vehicle, parking = D + "Vehicle", D + "OffStreetParking"
    assert matches(doc, types={vehicle})
    assert not matches(doc, types={D + "Building"})
    assert matches(doc, ids={"urn:ngsi-ld:Vehicle:A1"})
    assert not matches(doc, ids={"urn:ngsi-ld:Vehicle:B2"}, types={vehicle})
    assert matches(doc, ids={"urn:p:downtown"}, types={parking})
    assert not matches(doc, ids={"urn:p:uptown"}, types={parking})
    assert matches(doc, types={vehicle}, attrs={D + "speed"})
    assert not matches(doc, types={vehicle}, attrs={D + "isNextTo"})
    assert matches(doc, attrs={D + "isNextTo"})
    assert matches(doc, types={parking}, id_pattern=".*downtown$")
    assert matches(doc, types={vehicle}, id_pattern="A1$")
    assert not matches(doc, types={vehicle}, id_pattern="B2$")
    assert matches(doc)


def test_matches_entries_without_entities_or_names() -> None:
    names_only = parse(body(information=[{"propertyNames": ["name"]}]))
    assert matches(names_only, types={D + "OffStreetParking"}, id_pattern=".*downtown$")
    assert matches(names_only, attrs={D + "name", D + "other"})
    assert not matches(names_only, attrs={D + "other"})
    type_only = parse(body(information=[{"entities": [{"type": "Building"}]}]))
    assert matches(type_only, ids={"urn:ngsi-ld:Building:1"}, attrs={D + "anything"})
    assert matches(type_only, types={D + "Building", D + "Shop"})


def test_exclusive_conflicts() -> None:
    exclusive = parse(body(mode="exclusive"))
    assert conflicts(parse(body(mode="exclusive")), exclusive)
    assert conflicts(parse(body(mode="redirect")), exclusive)
    assert conflicts(parse(body(mode="redirect", information=[
        {"entities": [{"type": "Vehicle"}]}])), exclusive)
    assert not conflicts(exclusive, parse(body(mode="redirect")))
    assert not conflicts(parse(body(mode="inclusive")), exclusive)
    assert not conflicts(parse(body(mode="redirect")), parse(body(mode="redirect")))
    other_attr = parse(body(mode="exclusive", information=[
        {"entities": [{"id": "urn:ngsi-ld:Vehicle:A1", "type": "Vehicle"}],
         "propertyNames": ["colour"]}]))
    assert not conflicts(other_attr, exclusive)
    other_entity = parse(body(mode="redirect", information=[
        {"entities": [{"id": "urn:ngsi-ld:Vehicle:B2", "type": "Vehicle"}]}]))
    assert not conflicts(other_entity, exclusive)
