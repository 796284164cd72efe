"""Subscription documents: validation, patching, rendering and the trigger rules (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from urbanos.core.change import Change
from urbanos.core.jsonld import core_term_map
from urbanos.core.query.parse import parse_type_expr
from urbanos.core.subscription import (
    DeliveryStats,
    attribute_changes,
    compile_subscription,
    status_of,
    trigger_reason,
    type_text,
)
from urbanos.core.subscription_payload import (
    parse_subscription,
    patch_subscription,
    render_subscription,
)
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject

D = "https://uri.etsi.org/ngsi-ld/default-context/"
NOW = "2030-01-01T00:00:00.000Z"
TERMS = core_term_map()


def parse(**members: Any) -> JSONObject:
    payload: JSONObject = {"type": "Subscription", "entities": [{"type": "Building"}],
                           "notification": {"endpoint": {"uri": "http://r.example/n"}}}
    payload.update(members)
    doc = parse_subscription(payload, TERMS, NOW, new_id=lambda: "urn:ngsi-ld:Subscription:x")
    doc["jsonldContext"] = "https://example.org/ctx.jsonld"
    return doc


def test_names_are_kept_expanded_and_shown_compacted() -> None:
    doc = parse(entities=[{"type": "(Building|Tower);Museum", "idPattern": "^urn:b"}],
                watchedAttributes=["height", "height"], q="height>100",
                geoQ={"georel": "near;maxDistance==10", "geometry": "Point",
                      "coordinates": "[1, 2]", "geoproperty": "entrance"})
    assert doc["entities"][0]["type"] == f"({D}Building|{D}Tower);{D}Museum"
    assert doc["watchedAttributes"] == [D + "height"]
    assert doc["geoQ"]["geoproperty"] == D + "entrance"
    assert doc["_terms"]["q"] == {"height": D + "height"}
    shown = render_subscription(doc, TERMS, DeliveryStats(), NOW)
    assert shown["entities"] == [{"type": "(Building|Tower);Museum", "idPattern": "^urn:b"}]
    assert shown["watchedAttributes"] == ["height"]
    assert shown["geoQ"] == {"georel": "near;maxDistance==10", "geometry": "Point",
                             "coordinates": [1, 2], "geoproperty": "entrance"}
    assert shown["q"] == "height>100"
    assert shown["status"] == "active"
    assert not [k for k in shown if k.startswith("_") or k in ("createdAt", "modifiedAt")]


def test_type_text_round_trip() -> None:
    for text in ("Building", "A|B", "A;B", "(A|B);C", "A;B|C", "*"):
        expr = parse_type_expr(text, lambda t: t)
        assert parse_type_expr(type_text(expr, str), lambda t: t) == expr


def test_status() -> None:
    assert status_of({}, NOW) == "active"
    assert status_of({"isActive": False}, NOW) == "paused"
    assert status_of({"isActive": False, "expiresAt": "2029-01-01T00:00:00Z"}, NOW) == "expired"
    assert status_of({"expiresAt": "2031-01-01T00:00:00Z"}, NOW) == "active"


def test_percent_encoded_q_is_decoded() -> None:
    sub = compile_subscription(parse(q='name=="Eiffel%20Tower"'))
    entity = {"id": "urn:b:1", "type": [D + "Building"],
              "attrs": {D + "name": [{"type": "Property", "value": "Eiffel Tower"}]}}
    from urbanos.core.selection import matches

    assert matches(entity, sub.query)


def test_patch_replaces_members_and_checks_the_whole() -> None:
    doc = parse(q="a>1", throttling=5)
    out = patch_subscription(doc, {"q": None, "isActive": False}, TERMS, NOW)
    assert "q" not in out and "q" not in out["_terms"] and out["isActive"] is False
    assert doc["q"] == "a>1"  # the original is left alone
    with pytest.raises(BadRequestData):
        patch_subscription(doc, {"timeInterval": 10}, TERMS, NOW)  # with throttling
    with pytest.raises(BadRequestData):
        patch_subscription(doc, {"entities": None}, TERMS, NOW)  # nothing left to watch


def test_endpoint_compiled_for_delivery() -> None:
    doc = parse(notification={"endpoint": {
        "uri": "mqtts://user:pw@mq.example:8883/city/lamps%20red", "cooldown": 500,
        "receiverInfo": [{"key": "K", "value": "v"}],
        "notifierInfo": [{"key": "MQTT-QoS", "value": "2"},
                         {"key": "MQTT-Version", "value": "mqtt3.1.1"}]}})
    ep = compile_subscription(doc).endpoint
    assert ep.is_mqtt and ep.topic == "city/lamps red"
    assert (ep.mqtt_qos, ep.mqtt_version, ep.cooldown_ms) == (2, "mqtt3.1.1", 500)
    assert ep.receiver_info == (("K", "v"),) and ep.accept == "application/json"


def entity(**attrs: Any) -> JSONObject:
    return {"id": "urn:b:1", "type": [D + "Building"],
            "attrs": {D + k: [{"type": "Property", "value": v}] for k, v in attrs.items()}}


@pytest.mark.parametrize(
    ("triggers", "before", "after", "reason"),
    [
        (None, None, entity(a=1), "attributeCreated"),
        (["entityCreated"], None, entity(a=1), "entityCreated"),
        (["entityUpdated"], None, entity(a=1), "attributeCreated"),
        (["attributeUpdated"], None, entity(a=1), None),
        (None, entity(a=1), entity(a=2), "attributeUpdated"),
        (None, entity(a=1), entity(a=1, b=2), "attributeCreated"),
        (None, entity(a=1, b=2), entity(a=1), None),
        (["attributeDeleted"], entity(a=1, b=2), entity(a=1), "attributeDeleted"),
        (["entityUpdated"], entity(a=1, b=2), entity(a=1), "entityUpdated"),
        (["entityDeleted"], entity(a=1), None, "entityDeleted"),
        (["attributeDeleted"], entity(a=1), None, "attributeDeleted"),
        (None, entity(a=1), None, None),
    ],
)
def test_trigger_reasons(
    triggers: list[str] | None, before: JSONObject | None, after: JSONObject | None,
    reason: str | None,
) -> None:
    members = {"notificationTrigger": triggers} if triggers else {}
    sub = compile_subscription(parse(**members))
    change = Change("", "urn:b:1", before, after, NOW)
    assert trigger_reason(sub, change, attribute_changes(change)) == reason


def test_watched_attributes_and_dataset_ids_narrow_triggers() -> None:
    sub = compile_subscription(parse(watchedAttributes=["b"], datasetId=["urn:ds:1"]))
    before = entity(a=1)
    after = entity(a=2, b=1)
    change = Change("", "urn:b:1", before, after, NOW)
    assert trigger_reason(sub, change, attribute_changes(change)) is None
    after["attrs"][D + "b"][0]["datasetId"] = "urn:ds:1"
    change = Change("", "urn:b:1", before, after, NOW)
    assert trigger_reason(sub, change, attribute_changes(change)) == "attributeCreated"
