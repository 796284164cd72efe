"""Payloads into the stored form: what the spec accepts, how it is normalized, what it refuses.

The rules come from GS CIM 009: names (4.6.2), ids (4.5.1), attribute kinds (4.5.x),
DateTime (4.6.3), geometries (4.7), language maps (4.6.5) and the NGSI-LD Null (5.2.1,
5.5.4). Each refusal must be a ``BadRequestData`` raised before anything is stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from urbanos.core import entity as entity_module
from urbanos.core.entity import (
    Mode,
    check_entity_id,
    expand_attribute,
    expand_attributes,
    expand_entity,
)
from urbanos.core.jsonld import core_term_map
from urbanos.core.model import DEFAULT_VOCAB, NGSI_LD, NULL_URN
from urbanos.core.timeutil import parse_utc_datetime
from urbanos.core.validation import is_name, is_uri, merge_patch_nulls
from urbanos.errors import BadRequestData, InvalidRequest
from urbanos.types import JSONObject

NOW = "2024-01-01T00:00:00.000Z"
TERMS = core_term_map()
EID = "urn:ngsi-ld:Vehicle:1"
POINT = {"type": "Point", "coordinates": [8.0, 49.0]}


def create(**attrs: Any) -> JSONObject:
    return expand_entity({"id": EID, "type": "Vehicle", **attrs}, TERMS, NOW)


def attr(stored: JSONObject, name: str) -> JSONObject:
    instances = stored["attrs"][TERMS.expand(name)]
    assert len(instances) == 1
    result: JSONObject = instances[0]
    return result


def rejected(**attrs: Any) -> str:
    with pytest.raises(BadRequestData) as info:
        create(**attrs)
    return info.value.detail


# ---- names and identifiers


@pytest.mark.parametrize("name", ["speed", "výška_1", "Škola", "a1_b", "ex:speed",
                                  "https://example.org/speed", "urn:x:y"])
def test_valid_names(name: str) -> None:
    assert is_name(name)


@pytest.mark.parametrize("name", ["", "9Vehicle", "_x", "my attr", "@invalid", "a-b", "a.b", NULL_URN,
                                  "x" * 513])
def test_invalid_names(name: str) -> None:
    assert not is_name(name)


def test_a_type_must_start_with_a_letter_and_expand_to_an_iri() -> None:
    with pytest.raises(BadRequestData):
        expand_entity({"id": EID, "type": "9Vehicle"}, TERMS, NOW)
    with pytest.raises(BadRequestData):  # "type" is the core alias of @type, not a type
        expand_entity({"id": EID, "type": "type"}, TERMS, NOW)
    stored = expand_entity({"id": EID, "type": "Škola"}, TERMS, NOW)
    assert stored["type"] == [DEFAULT_VOCAB + "Škola"]


@pytest.mark.parametrize("codepoint", [0x202E, 0x200B, 0xFEFF, 0x2028, 0x00A0, 0xFE0F, 0xE0100,
                                       0xFDD0, 0xFFFE, 0x115F, 0x3164, 0xFFA0, 0x2800, 0x0001])
def test_ids_with_invisible_characters_are_not_uris(codepoint: int) -> None:
    """An id that shows like another would let two entities pass for one."""
    with pytest.raises(BadRequestData):
        check_entity_id(f"urn:ngsi-ld:Vehicle:A{chr(codepoint)}B")


def test_iri_letters_stay_valid_and_the_null_is_no_id() -> None:
    assert is_uri("urn:ngsi-ld:Ciudad:París")
    with pytest.raises(BadRequestData):
        check_entity_id(NULL_URN)


def test_a_payload_that_is_not_an_object_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        expand_entity([], TERMS, NOW)


@pytest.mark.parametrize("name", ["datasetId", "instanceId", "observedAt", "unitCode", "value",
                                  "object", "previousValue", "lang"])
def test_core_members_are_no_attribute_names(name: str) -> None:
    rejected(**{name: {"type": "Property", "value": 1}})


def test_an_attribute_cannot_embed_a_context() -> None:
    rejected(speed={"type": "Property", "value": 1, "@context": {"speed": "https://e.org/s"}})


def test_system_members_are_accepted_and_ignored() -> None:
    """What the broker renders with sysAttrs can be sent back."""
    stored = create(speed={"type": "Property", "value": 1, "createdAt": "x", "modifiedAt": "y"})
    assert attr(stored, "speed")["createdAt"] == NOW


# ---- members of each kind


@pytest.mark.parametrize("extra", [
    {"object": "urn:x:1"}, {"languageMap": {"en": "x"}}, {"valueList": [1]},
    {"previousValue": 0}, {"entityIdSealed": EID}, {"entity": {}},
])
def test_members_a_property_never_has(extra: JSONObject) -> None:
    rejected(speed={"type": "Property", "value": 1, **extra})


@pytest.mark.parametrize("extra", [
    {"unitCode": "MTR"}, {"value": 42}, {"previousObject": "urn:x:0"}, {"valueType": "x"},
])
def test_members_a_relationship_never_has(extra: JSONObject) -> None:
    rejected(isParked={"type": "Relationship", "object": "urn:x:1", **extra})


def test_object_type_is_a_type_name_of_relationships_only() -> None:
    stored = create(isParked={"type": "Relationship", "object": "urn:x:1",
                              "objectType": "OffStreetParking"})
    assert attr(stored, "isParked")["objectType"] == DEFAULT_VOCAB + "OffStreetParking"
    rejected(isParked={"type": "Relationship", "object": "urn:x:1", "objectType": "9P"})
    rejected(speed={"type": "Property", "value": 1, "objectType": "P"})


def test_json_property_is_unitless_and_holds_an_object_or_array() -> None:
    rejected(tickets={"type": "JsonProperty", "json": {"a": 1}, "unitCode": "MTR"})
    rejected(tickets={"type": "JsonProperty", "json": 5})
    rejected(tickets={"type": "JsonProperty", "json": {"a": 1}, "value": 1})
    stored = create(tickets={"json": {"speed": 3, "type": "raw", "none": None}})
    assert attr(stored, "tickets")["type"] == "JsonProperty"
    assert attr(stored, "tickets")["json"] == {"speed": 3, "type": "raw", "none": None}


def test_object_list_entries_are_stored_as_objects() -> None:
    stored = create(route={"type": "ListRelationship",
                           "objectList": ["urn:x:1", {"object": "urn:x:2"}]})
    assert attr(stored, "route")["objectList"] == [{"object": "urn:x:1"}, {"object": "urn:x:2"}]
    rejected(route={"type": "ListRelationship", "objectList": ["not a uri"]})
    rejected(route={"type": "ListRelationship", "objectList": [{"object": "urn:x:1", "x": 1}]})


def test_observed_at_is_a_utc_date_time_with_z() -> None:
    create(speed={"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00.5Z"})
    for bad in ("2026-08-10T12:00:00+02:00", "2026-08-10T12:00Z", "not-a-date",
                {"type": "Property", "value": "2026-08-10T12:00:00Z"}):
        rejected(speed={"type": "Property", "value": 1, "observedAt": bad})


def test_parse_utc_datetime() -> None:
    assert parse_utc_datetime("2026-01-01T00:00:00Z") is not None
    assert parse_utc_datetime("2026-01-01T00:00:00.123456789Z") is not None
    assert parse_utc_datetime("2026-01-01T00:00:00+00:00") is None
    assert parse_utc_datetime("2026-01-01T00:00:00z") is None
    assert parse_utc_datetime("2026-13-01T00:00:00Z") is None


def test_an_explicit_none_dataset_id_is_the_default_instance() -> None:
    stored = create(speed=[{"type": "Property", "value": 55, "datasetId": "@none"},
                           {"type": "Property", "value": 11, "datasetId": "urn:ds:gps"}])
    instances = stored["attrs"][TERMS.expand("speed")]
    assert [i.get("datasetId") for i in instances] == [None, "urn:ds:gps"]
    rejected(speed=[{"type": "Property", "value": 55},
                    {"type": "Property", "value": 11, "datasetId": "@none"}])


# ---- language maps


def test_language_maps() -> None:
    stored = create(street={"type": "LanguageProperty", "valueType": "langString",
                            "languageMap": {"sk": "škola", "en": ["a", "b"], "@none": "x"}})
    assert attr(stored, "street")["languageMap"]["en"] == ["a", "b"]
    for bad in ({"": "x"}, {"en": 5}, {"en": ["a", 5]}, {}, {"@none": NULL_URN}, NULL_URN):
        rejected(street={"type": "LanguageProperty", "languageMap": bad})
    rejected(street={"type": "LanguageProperty", "languageMap": {"en": "x"},
                     "valueType": "xsd:string"})


# ---- geometry


def test_geometries() -> None:
    stored = create(location={"type": "GeoProperty",
                              "value": '{"type": "Point", "coordinates": [17.1, 48.7]}'})
    assert attr(stored, "location")["value"] == {"type": "Point", "coordinates": [17.1, 48.7]}
    rejected(location={"type": "GeoProperty", "value": "not a geometry"})
    rejected(location={"type": "GeoProperty", "value": {
        "type": "GeometryCollection", "geometries": [POINT]}})
    rejected(location={"type": "Property", "value": 7})
    rejected(location=7)
    rejected(location={"type": "Relationship", "object": "urn:x:1"})
    promoted = create(location={"type": "Property", "value": POINT})
    assert attr(promoted, "location")["type"] == "GeoProperty"


def test_concise_input_infers_the_kind() -> None:
    stored = create(speed=55, location=POINT, area={"value": POINT},
                    brandName={"value": "Volvo", "observedAt": "2026-01-01T00:00:00Z"},
                    isParked={"object": "urn:x:1"}, address={"city": "Berlin"})
    kinds = {name: attr(stored, name)["type"] for name in
             ("speed", "location", "area", "brandName", "isParked", "address")}
    assert kinds == {"speed": "Property", "location": "GeoProperty", "area": "GeoProperty",
                     "brandName": "Property", "isParked": "Relationship", "address": "Property"}
    assert attr(stored, "address")["value"] == {"city": "Berlin"}
    rejected(speed={"value": 1, "object": "urn:x:1"})
    rejected(speed={"observedAt": "2026-01-01T00:00:00Z"})  # members but no value


# ---- the NGSI-LD Null


@pytest.mark.parametrize("attribute", [
    {"type": "Property", "value": NULL_URN},
    {"type": "Relationship", "object": NULL_URN},
    {"type": "Property", "value": 1, "sub": {"type": "Property", "value": NULL_URN}},
    {"type": "Property", "value": {"country": NULL_URN}},
    {"type": "Property", "value": {"geo": {"country": NULL_URN}}},
    {"type": "Property", "value": None},
    {"type": "ListProperty", "valueList": [NULL_URN]},
    NULL_URN,
    None,
])
def test_create_refuses_the_null(attribute: object) -> None:
    rejected(probe=attribute)


def test_create_refuses_a_null_scope() -> None:
    rejected(scope=NULL_URN)


def test_update_takes_a_null_attribute_as_a_deletion() -> None:
    attrs = expand_attributes({"speed": {"type": "Property", "value": NULL_URN},
                               "street": {"type": "LanguageProperty",
                                          "languageMap": {"@none": NULL_URN}}},
                              TERMS, NOW, merge=True)
    assert attrs[TERMS.expand("speed")][0]["value"] == NULL_URN
    assert attrs[TERMS.expand("street")][0]["languageMap"] == {"@none": NULL_URN}
    with pytest.raises(BadRequestData):  # only a merge patches inside a value
        expand_attributes({"a": {"type": "Property", "value": {"k": NULL_URN}}}, TERMS, NOW,
                          merge=True)


def test_partial_update() -> None:
    """Clause 5.6.4: a fragment may carry only some members or sub-attributes."""
    iri = TERMS.expand("isParked")
    [inst] = expand_attribute(iri, {"providedBy": {"type": "Relationship", "object": "urn:p:1"}},
                              TERMS, NOW, merge=True)
    assert "type" not in inst and inst[TERMS.expand("providedBy")]["object"] == "urn:p:1"
    [inst] = expand_attribute(iri, {"unitCode": NULL_URN}, TERMS, NOW, merge=True)
    assert inst["unitCode"] == NULL_URN
    for bad in ({"datasetId": NULL_URN}, {"value": {"country": NULL_URN}}, {}):
        with pytest.raises(BadRequestData):
            expand_attribute(iri, bad, TERMS, NOW, merge=True)


def test_merge_keeps_a_null_inside_a_value_for_the_merge_patch() -> None:
    fragment = expand_entity(
        {"address": {"type": "Property", "value": {"street": "P", "country": NULL_URN}}},
        TERMS, NOW, entity_id=EID, require_type=False, merge=True)
    assert attr(fragment, "address")["value"] == {"street": "P", "country": NULL_URN}
    with pytest.raises(BadRequestData):  # JSON null is not the NGSI-LD Null
        expand_entity({"name": {"type": "Property", "value": None}}, TERMS, NOW,
                      entity_id=EID, require_type=False, merge=True)


def test_merge_patch_json_nulls_become_the_ngsi_ld_null() -> None:
    body = {"a": None, "b": {"c": None, "d": [None]}}
    assert merge_patch_nulls(body) == {"a": NULL_URN, "b": {"c": NULL_URN, "d": [None]}}


def test_modes_follow_the_merge_flag() -> None:
    assert Mode.CREATE.deletes is False and Mode.UPDATE.partial is False
    assert Mode.PARTIAL.partial and Mode.MERGE.deletes


# ---- ngsildproof (clause 4.5.2.2)


PROOF = {"type": "DataIntegrityProof", "cryptosuite": "eddsa-rdfc-2022", "proofValue": "z1"}


def test_proof_rules() -> None:
    rejected(ngsildproof={"type": "Property", "value": "not-a-proof-object"})
    rejected(ngsildproof={"type": "Property", "value": PROOF, "entityTypeSealed": 42})
    rejected(ngsildproof={"type": "Relationship", "object": "urn:x:1"})
    rejected(speed={"type": "Property", "value": 1, "entityIdSealed": EID})
    rejected(ngsildproof={"type": "Property", "value": PROOF,
                          "sub": {"type": "Property", "value": 1, "entityIdSealed": EID}})


def test_sealed_members_are_non_reified_once_the_model_knows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extended = entity_module.CORE_MEMBERS | {"entityIdSealed", "entityTypeSealed", "valueType"}
    monkeypatch.setattr(entity_module, "CORE_MEMBERS", extended)
    stored = create(ngsildproof={"type": "Property", "value": PROOF, "entityIdSealed": EID,
                                 "entityTypeSealed": "Vehicle"},
                    speed={"type": "Property", "value": 1, "valueType": "xsd:double"})
    proof = attr(stored, "ngsildproof")
    assert proof["entityIdSealed"] == EID
    assert proof["entityTypeSealed"] == DEFAULT_VOCAB + "Vehicle"
    assert attr(stored, "speed")["valueType"] == "xsd:double"


def test_value_type_is_a_core_member() -> None:
    stored = create(speed={"type": "Property", "value": 1, "valueType": "xsd:double"})
    assert attr(stored, "speed")["valueType"] == "xsd:double"


def test_ngsi_ld_type_iris_are_accepted() -> None:
    stored = create(speed={"type": NGSI_LD + "Property", "value": 1})
    assert attr(stored, "speed")["type"] == "Property"
