"""Context source registration subscriptions: validation, rendering, which registrations
a subscription selects and what a registration change notifies (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from urbanos.core.csource_subscription import (
    NOTIFICATION_TYPE,
    compile_csource_subscription,
    matching,
    notification_body,
    notification_data,
    parse_csource_subscription,
    patch_csource_subscription,
    relevant_information,
    render_csource_subscription,
    trigger,
)
from urbanos.core.jsonld import build_term_map, core_term_map
from urbanos.core.registration import parse_registration
from urbanos.core.subscription import DeliveryStats
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject

EX = "https://example.org/city#"
NOW = "2030-01-01T00:00:00.000Z"
LATER = "2030-01-02T00:00:00.000Z"
CORE = core_term_map()
USER = build_term_map({"Building": EX + "Building", "Bus": EX + "Bus", "name": EX + "name",
                       "speed": EX + "speed", "provider": EX + "provider"}, {})


def sub_body(**members: Any) -> JSONObject:
    payload: JSONObject = {
        "id": "urn:ngsi-ld:Subscription:cs1",
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"format": "keyValues",
                         "endpoint": {"uri": "http://receiver.example/n",
                                      "accept": "application/json"}},
    }
    payload.update(members)
    return payload


def sub(**members: Any) -> JSONObject:
    doc = parse_csource_subscription(sub_body(**members), USER, NOW,
                                     new_id=lambda: "urn:ngsi-ld:Subscription:new")
    doc["jsonldContext"] = "http://contexts.example/user.jsonld"  # as the service sets it
    return doc


def reg(rid: str = "urn:ngsi-ld:ContextSourceRegistration:r1", **members: Any) -> JSONObject:
    payload: JSONObject = {
        "id": rid, "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Building"}], "propertyNames": ["name"]}],
        "endpoint": "http://source.example:1026",
    }
    payload.update(members)
    return parse_registration(payload, USER, NOW, new_id=lambda: rid)


def invalid(**members: Any) -> str:
    with pytest.raises(BadRequestData) as caught:
        sub(**members)
    return caught.value.detail


# --------------------------------------------------------------------------- payloads


def test_invalid_subscriptions_are_bad_request_data() -> None:
    assert "type" in invalid(type="RandomType")
    assert invalid(q="speed>")
    assert "watchedAttributes" in invalid(watchedAttributes=[])
    assert "expiresAt" in invalid(expiresAt="2018-08-01T22:07:00Z")
    assert "timerel" in invalid(temporalQ={"timerel": "sometime", "timeAt": NOW})
    assert "timerel" in invalid(temporalQ={"timeAt": NOW})
    assert "unknown" in invalid(temporalQ={"timerel": "after", "timeAt": NOW, "x": 1})
    assert "timeproperty" in invalid(
        temporalQ={"timerel": "after", "timeAt": NOW, "timeproperty": "seenAt"})
    with pytest.raises(BadRequestData):
        parse_csource_subscription({"type": "Subscription", "entities": [{"type": "Building"}]},
                                   USER, NOW, new_id=lambda: "urn:x")


def test_rendering_shows_what_was_given_and_the_status() -> None:
    doc = sub()
    out = render_csource_subscription(doc, USER, DeliveryStats(), NOW)
    assert out == {"id": "urn:ngsi-ld:Subscription:cs1", "type": "Subscription",
                   "entities": [{"type": "Building"}],
                   "notification": {"format": "keyValues",
                                    "endpoint": {"uri": "http://receiver.example/n",
                                                 "accept": "application/json"}},
                   "status": "active"}
    stats = DeliveryStats(times_sent=1, last_notification=NOW, last_success=NOW, status="ok")
    shown = render_csource_subscription(doc, USER, stats, NOW)["notification"]
    assert shown["timesSent"] == 1 and shown["status"] == "ok" and "timesFailed" not in shown
    failed = DeliveryStats(times_sent=1, times_failed=1, last_failure=NOW, status="failed")
    assert render_csource_subscription(doc, USER, failed, NOW)["notification"]["timesFailed"] == 1


def test_paused_and_expired_status() -> None:
    assert render_csource_subscription(sub(isActive=False), USER, DeliveryStats(),
                                       NOW)["status"] == "paused"
    expiring = sub(expiresAt="2030-01-01T12:00:00Z")
    assert render_csource_subscription(expiring, USER, DeliveryStats(), LATER)["status"] == "expired"


def test_patch_replaces_members_and_keeps_checking() -> None:
    doc = patch_csource_subscription(sub(), {"entities": [{"type": "Bus"}]}, USER, LATER)
    assert doc["entities"] == [{"type": EX + "Bus"}] and doc["modifiedAt"] == LATER
    with pytest.raises(BadRequestData):
        patch_csource_subscription(sub(), {"type": None, "notification": {"format": "x"}},
                                   USER, LATER)
    with pytest.raises(BadRequestData):
        patch_csource_subscription(sub(), {"notification": {"format": "keyValues"}}, USER, LATER)


# --------------------------------------------------------------------------- matching


def cs(**members: Any) -> Any:
    return compile_csource_subscription(sub(**members))


def test_entities_select_registration_information() -> None:
    both = reg(information=[{"entities": [{"type": "Building"}]},
                            {"entities": [{"type": "Bus"}]}])
    assert relevant_information(cs(), both) == [{"entities": [{"type": EX + "Building"}]}]
    assert relevant_information(cs(entities=[{"type": "Bus"}]), reg()) is None
    assert relevant_information(cs(entities=[{"type": "Building|Bus"}]), both) is not None
    by_id = cs(entities=[{"id": "urn:ngsi-ld:Building:1", "type": "Building"}])
    assert relevant_information(by_id, reg()) is not None  # a group of the type
    pinned = reg(information=[{"entities": [{"id": "urn:ngsi-ld:Building:2",
                                             "type": "Building"}]}])
    assert relevant_information(by_id, pinned) is None
    pattern = cs(entities=[{"idPattern": "^urn:ngsi-ld:Building:2$", "type": "Building"}])
    assert relevant_information(pattern, pinned) is not None


def test_watched_attributes_select_by_property_names() -> None:
    assert relevant_information(cs(watchedAttributes=["name"]), reg()) is not None
    assert relevant_information(cs(watchedAttributes=["speed"]), reg()) is None
    every = reg(information=[{"entities": [{"type": "Building"}]}])  # every attribute
    assert relevant_information(cs(watchedAttributes=["speed"]), every) is not None


def test_geoq_on_the_location() -> None:
    near = {"georel": "near;maxDistance==2000", "geometry": "Point", "coordinates": [-8.52, 41.2]}
    here = reg(location={"type": "Point", "coordinates": [-8.521, 41.2]})
    far = reg(location={"type": "Point", "coordinates": [2.35, 48.85]})
    assert relevant_information(cs(geoQ=near), here) is not None
    assert relevant_information(cs(geoQ=near), far) is None
    assert relevant_information(cs(geoQ=near), reg()) is None  # no location
    space = cs(geoQ={**near, "geoproperty": "observationSpace"})
    assert relevant_information(space, here) is None
    assert relevant_information(space, reg(observationSpace=here["location"])) is not None


def test_temporalq_on_the_intervals() -> None:
    interval = {"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"}
    observed = reg(observationInterval=interval)
    managed = reg(managementInterval=interval)
    after = {"timerel": "after", "timeAt": "2020-06-01T22:07:00Z"}
    assert relevant_information(cs(temporalQ=after), observed) is not None
    assert relevant_information(cs(temporalQ=after), managed) is None
    created = cs(temporalQ={**after, "timeproperty": "createdAt"})
    assert relevant_information(created, managed) is not None
    too_late = cs(temporalQ={"timerel": "after", "timeAt": "2022-01-01T00:00:00Z"})
    assert relevant_information(too_late, observed) is None
    before = cs(temporalQ={"timerel": "before", "timeAt": "2020-09-01T00:00:00Z"})
    assert relevant_information(before, observed) is not None


def test_csf_and_q_on_context_source_properties() -> None:
    tagged = reg(provider="city")
    assert relevant_information(cs(csf='provider=="city"'), tagged) is not None
    assert relevant_information(cs(csf='provider=="region"'), tagged) is None
    assert relevant_information(cs(q='provider=="city"'), tagged) is not None
    assert relevant_information(cs(csf='provider=="city"'), reg()) is None


def test_a_change_is_newly_matching_updated_or_no_longer_matching() -> None:
    s = cs()
    first, changed = reg(), reg(endpoint="http://other.example:1026")
    other = reg(information=[{"entities": [{"type": "Bus"}]}])
    created = trigger(s, None, first, NOW)
    assert created is not None and created[0] == "newlyMatching"
    updated = trigger(s, first, changed, NOW)
    assert updated is not None and updated[0] == "updated"
    assert updated[1]["endpoint"] == "http://other.example:1026"
    gone = trigger(s, first, other, NOW)
    assert gone is not None and gone[0] == "noLongerMatching"
    assert gone[1]["information"] == other["information"]
    deleted = trigger(s, first, None, NOW)
    assert deleted is not None and deleted[0] == "noLongerMatching"
    assert trigger(s, other, other, NOW) is None
    assert trigger(s, None, other, NOW) is None
    back = trigger(s, other, first, NOW)
    assert back is not None and back[0] == "newlyMatching"


def test_inactive_expired_and_periodic_subscriptions_fire_on_no_change() -> None:
    assert trigger(cs(isActive=False), None, reg(), NOW) is None
    assert trigger(cs(expiresAt="2030-01-01T12:00:00Z"), None, reg(), LATER) is None
    assert trigger(cs(timeInterval=10), None, reg(), NOW) is None


def test_matching_and_the_notification_body() -> None:
    s = cs()
    found = matching(s, [reg("urn:r:1"), reg("urn:r:2", information=[
        {"entities": [{"type": "Bus"}]}])])
    assert [r["id"] for r in found] == ["urn:r:1"]
    data = notification_data(found, USER, NOW)
    assert data[0]["information"] == [{"entities": [{"type": ["Building"]}],
                                       "propertyNames": ["name"]}]
    body = notification_body(s, data, notification_id="urn:n:1", notified_at=NOW,
                             reason="newlyMatching")
    assert body == {"id": "urn:n:1", "type": NOTIFICATION_TYPE,
                    "subscriptionId": "urn:ngsi-ld:Subscription:cs1", "notifiedAt": NOW,
                    "data": data, "triggerReason": "newlyMatching"}
    ld = compile_csource_subscription(sub(notification={
        "endpoint": {"uri": "http://receiver.example/n", "accept": "application/ld+json"}}))
    body = notification_body(ld, data, notification_id="urn:n:2", notified_at=NOW, reason=None)
    assert body["@context"] == "http://contexts.example/user.jsonld"
    assert "triggerReason" not in body
