"""core.expiry: what a read shows of a transient entity at a given instant (clause 4.22)."""

from __future__ import annotations

from typing import Any

import pytest

from urbanos.core.expiry import EXPIRY_KEY, canonical, due, live, next_expiry, stamp_expiry

SPEED = "https://example.org/speed"
ACC = "https://example.org/accuracy"


def entity(**top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "urn:e:1", "type": ["urn:T"],
        "attrs": {SPEED: [
            {"type": "Property", "value": 1, "expiresAt": "2030-01-01T00:00:30Z",
             ACC: {"type": "Property", "value": 0.1, "expiresAt": "2030-01-01T00:00:10Z"}},
            {"type": "Property", "value": 2, "datasetId": "urn:d:a",
             "expiresAt": "2030-01-01T00:00:20.5Z"},
        ]},
        **top,
    }
    return stamp_expiry(doc)


def test_canonical_sorts_as_time() -> None:
    assert canonical("2030-01-01T00:00:00Z") == "2030-01-01T00:00:00.000000Z"
    assert canonical("2030-01-01T00:00:00.5Z") > canonical("2030-01-01T00:00:00Z")
    with pytest.raises(ValueError):
        canonical("soon")


def test_the_earliest_expiry_is_stamped_and_dropped() -> None:
    doc = entity(expiresAt="2030-01-01T00:01:00Z")
    assert doc[EXPIRY_KEY] == "2030-01-01T00:00:10.000000Z"  # the sub-attribute's
    doc["attrs"] = {}
    assert next_expiry(doc) == "2030-01-01T00:01:00.000000Z"
    del doc["expiresAt"]
    assert EXPIRY_KEY not in stamp_expiry(doc)


def test_live_hides_step_by_step() -> None:
    doc = entity(expiresAt="2030-01-01T00:01:00Z")
    early = canonical("2030-01-01T00:00:05Z")
    assert not due(doc, early) and live(doc, early) is doc
    shown = live(doc, canonical("2030-01-01T00:00:10Z"))  # at the instant: expired
    assert shown is not None and ACC not in shown["attrs"][SPEED][0]
    assert ACC in doc["attrs"][SPEED][0]  # the stored document is not changed
    assert shown[EXPIRY_KEY] == "2030-01-01T00:00:20.500000Z"
    shown = live(doc, canonical("2030-01-01T00:00:25Z"))
    assert shown is not None and [i["value"] for i in shown["attrs"][SPEED]] == [1]
    shown = live(doc, canonical("2030-01-01T00:00:40Z"))
    assert shown is not None and shown["attrs"] == {} and EXPIRY_KEY in shown
    assert live(doc, canonical("2030-01-01T00:01:00Z")) is None
    assert due(doc, canonical("2030-01-01T00:01:00Z")) and not due(doc, None)


def test_an_entity_without_expiry_is_always_live() -> None:
    doc = {"id": "urn:e:2", "type": ["urn:T"], "attrs": {SPEED: [{"value": 1}]}}
    assert next_expiry(doc) is None
    assert live(doc, canonical("2999-01-01T00:00:00Z")) is doc
