"""Entity ordering (clause 4.23): kinds, directions, collations, distances."""

from __future__ import annotations

import pytest

from urbanos.core.ordering import collation_key, parse_ordering, sort_entities
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject


def expand(name: str) -> str:
    return "https://ex.org/" + name


def ent(eid: str, **attrs: object) -> JSONObject:
    return {"id": eid, "type": ["https://ex.org/T"],
            "attrs": {expand(k): [v] for k, v in attrs.items()}}


def ids(entities: list[JSONObject]) -> list[str]:
    return [e["id"] for e in entities]


def test_numbers_before_strings_and_absent_last_in_both_directions() -> None:
    es = [ent("absent"), ent("str", rank={"type": "Property", "value": "abc"}),
          ent("num", rank={"type": "Property", "value": 5})]
    assert ids(sort_entities(es, parse_ordering("rank", expand))) == ["num", "str", "absent"]
    assert ids(sort_entities(es, parse_ordering("rank;desc", expand))) == ["str", "num", "absent"]


def test_multiple_terms_sub_attributes_and_compound_keys() -> None:
    def named(eid: str, name: str, sub: int, city: str) -> JSONObject:
        return ent(eid, name={"type": "Property", "value": name,
                              expand("sub"): {"type": "Property", "value": sub}},
                   address={"type": "Property", "value": {"city": city}})

    es = [named("a", "A", 3, "Zurich"), named("b", "A", 1, "Berlin"), named("c", "B", 2, "Oslo")]
    order = parse_ordering("name;asc,name.sub;desc", expand)
    assert ids(sort_entities(es, order)) == ["a", "b", "c"]
    assert ids(sort_entities(es, parse_ordering("address[city];desc", expand))) == ["a", "c", "b"]
    assert ids(sort_entities(es, parse_ordering("id;desc", expand))) == ["c", "b", "a"]


def test_collation_ranks_accents_with_their_base_letter() -> None:
    es = [ent(n, name={"type": "Property", "value": n}) for n in ("b", "á", "A")]
    assert ids(sort_entities(es, parse_ordering("name", expand))) == ["A", "b", "á"]
    assert ids(sort_entities(es, parse_ordering("name", expand, collation="und"))) == [
        "A", "á", "b"]
    assert collation_key("Ähre", "de-u-co-phonebk") < collation_key("Zebra", "de-u-co-phonebk")


def test_distance_needs_a_reference_and_orders_nearest_first() -> None:
    def at(eid: str, lon: float, lat: float) -> JSONObject:
        return ent(eid, location={"type": "GeoProperty",
                                  "value": {"type": "Point", "coordinates": [lon, lat]}})

    es = [at("far", 10, 45), at("near", 8.01, 40.01), at("mid", 9, 41)]
    order = parse_ordering("location;dist-asc", expand, coordinates="[8,40]")
    assert ids(sort_entities(es, order)) == ["near", "mid", "far"]
    with pytest.raises(BadRequestData):
        parse_ordering("location;dist-asc", expand)


@pytest.mark.parametrize("bad", ["name;sideways", "", "name[", "id;dist-asc"])
def test_bad_terms_are_refused(bad: str) -> None:
    with pytest.raises(BadRequestData):
        parse_ordering(bad, expand)


def test_bad_collation_is_refused() -> None:
    with pytest.raises(BadRequestData):
        parse_ordering("name", expand, collation="!!nope")
