"""Representations of clause 4.5 rendered from the stored form, without any I/O."""

from __future__ import annotations

from dataclasses import replace

from urbanos.core.jsonld import core_term_map
from urbanos.core.model import DEFAULT_VOCAB, LOCATION
from urbanos.core.projection import parse_projection
from urbanos.core.render import (
    RenderOptions,
    needs_legacy_rewrite,
    render_entity,
    render_feature,
    render_flat,
)
from urbanos.types import JSONObject

V = DEFAULT_VOCAB
TERMS = core_term_map()


def entity(eid: str, etype: str, **attrs: list[JSONObject]) -> JSONObject:
    return {"id": eid, "type": [V + etype], "attrs": {V + k: v for k, v in attrs.items()}}


def proj(text: str):  # type: ignore[no-untyped-def]
    return parse_projection(text, TERMS.expand, label="pick")


def test_simplified_keeps_member_names_for_maps_and_uses_a_dataset_map() -> None:
    e = entity(
        "urn:a", "Vehicle",
        speed=[{"type": "Property", "value": 55},
               {"type": "Property", "value": 11, "datasetId": "urn:ds:gps"}],
        brand=[{"type": "LanguageProperty", "languageMap": {"en": "hi"}}],
        blob=[{"type": "JsonProperty", "json": {"a": 1}}],
        category=[{"type": "VocabProperty", "vocab": V + "commercial"}],
        route=[{"type": "ListRelationship", "objectList": [{"object": "urn:r1"}, "urn:r2"]}],
    )
    out = render_entity(e, TERMS, RenderOptions(fmt="keyValues"))
    assert out["speed"] == {"dataset": {"@none": 55, "urn:ds:gps": 11}}
    assert out["brand"] == {"languageMap": {"en": "hi"}}
    assert out["blob"] == {"json": {"a": 1}}
    assert out["category"] == {"vocab": "commercial"}
    assert out["route"] == ["urn:r1", "urn:r2"]


def test_dataset_filter_keeps_matching_instances_and_drops_emptied_attributes() -> None:
    e = entity("urn:a", "Building",
               name=[{"type": "Property", "value": "Eiffel Tower"},
                     {"type": "Property", "value": "Tour Eiffel", "datasetId": "urn:ds:fr"}],
               height=[{"type": "Property", "value": 300}])
    out = render_entity(e, TERMS, RenderOptions(dataset_ids=frozenset({"urn:ds:fr"})))
    assert out == {"id": "urn:a", "type": "Building",
                   "name": {"type": "Property", "value": "Tour Eiffel", "datasetId": "urn:ds:fr"}}


def test_lang_star_picks_the_first_language() -> None:
    e = entity("urn:a", "Building",
               street=[{"type": "LanguageProperty", "languageMap": {"fr": "Grand Place",
                                                                     "nl": "Grote Markt"}}])
    out = render_entity(e, TERMS, RenderOptions(lang="*"))
    assert out["street"] == {"type": "Property", "value": "Grand Place", "lang": "fr"}
    assert render_entity(e, TERMS, RenderOptions(lang="*", fmt="keyValues"))["street"] == (
        "Grand Place"
    )


def test_inline_join_nests_linked_entities_with_their_own_projection() -> None:
    building = entity("urn:b", "Building",
                      name=[{"type": "Property", "value": "B"}],
                      locatedAt=[{"type": "Relationship", "object": "urn:c"}])
    city = entity("urn:c", "City", name=[{"type": "Property", "value": "Paris"}],
                  isIn=[{"type": "Relationship", "object": "urn:f"}])
    country = entity("urn:f", "Country")
    linked = {"urn:c": city, "urn:f": country}
    opts = RenderOptions(join="inline", join_level=1, pick=proj("id,locatedAt{id,name}"))
    assert render_entity(building, TERMS, opts, linked) == {
        "id": "urn:b",
        "locatedAt": {"type": "Relationship", "object": "urn:c",
                      "entity": {"id": "urn:c", "name": {"type": "Property", "value": "Paris"}}},
    }
    deep = render_entity(building, TERMS, RenderOptions(join="inline", join_level=2,
                                                         fmt="keyValues"), linked)
    assert deep["locatedAt"]["isIn"] == {"id": "urn:f", "type": "Country"}


def test_flat_join_lists_each_linked_entity_once_after_the_results() -> None:
    b1 = entity("urn:b1", "Building", locatedAt=[{"type": "Relationship", "object": "urn:c"}])
    b2 = entity("urn:b2", "Building", locatedAt=[{"type": "Relationship", "object": "urn:c"}])
    city = entity("urn:c", "City")
    out = render_flat([b1, b2], TERMS, RenderOptions(join="flat"), {"urn:c": city})
    assert [e["id"] for e in out] == ["urn:b1", "urn:b2", "urn:c"]
    assert "entity" not in out[0]["locatedAt"]


def test_omit_on_linked_entity_keeps_the_relationship() -> None:
    building = entity("urn:b", "Building", name=[{"type": "Property", "value": "B"}],
                      locatedAt=[{"type": "Relationship", "object": "urn:c"}])
    city = entity("urn:c", "City", name=[{"type": "Property", "value": "Paris"}])
    omit = parse_projection("name,locatedAt{name}", TERMS.expand, label="omit")
    out = render_entity(building, TERMS, RenderOptions(join="inline", omit=omit),
                        {"urn:c": city})
    assert out == {"id": "urn:b", "type": "Building",
                   "locatedAt": {"type": "Relationship", "object": "urn:c",
                                 "entity": {"id": "urn:c", "type": "City"}}}


def test_feature_geometry_is_the_default_instance() -> None:
    e = {"id": "urn:v", "type": [V + "Vehicle"], "attrs": {LOCATION: [
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [9, 9]},
         "datasetId": "urn:ds:gps"},
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
    ]}}
    feature = render_feature(e, TERMS, RenderOptions())
    assert feature["geometry"] == {"type": "Point", "coordinates": [1, 2]}
    assert "id" not in feature["properties"]
    simplified = render_feature(e, TERMS, RenderOptions(fmt="keyValues"))
    assert set(simplified["properties"]["location"]["dataset"]) == {"@none", "urn:ds:gps"}


def test_legacy_consumers_get_newer_kinds_as_property() -> None:
    e = entity("urn:a", "Building", category=[{"type": "VocabProperty", "vocab": V + "shop"}])
    assert needs_legacy_rewrite(e)
    out = render_entity(e, TERMS, replace(RenderOptions(), legacy=True))
    assert out["category"] == {"type": "Property", "value": "shop"}
