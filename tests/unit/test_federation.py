"""The pure part of distributed operations (core.federation): which registrations a request
goes to, how the sources' fragments merge (clause 4.5.5.3 and the modes of 4.3.6.2), Via
and NGSILD-Warning values."""

from __future__ import annotations

from typing import Any

import pytest

from urbanos.core.federation import (
    LoopDetected,
    Target,
    add_via,
    merge_entities,
    merge_sources,
    parse_via,
    select_targets,
    warning,
)
from urbanos.core.query.parse import parse_q

V = "https://example.org/Vehicle"
SPEED = "https://example.org/speed"
BRAND = "https://example.org/brand"
NOW = "2026-01-01T00:00:00.000Z"


def reg(rid: str = "urn:r:1", *, mode: str = "inclusive", ops: list[str] | None = None,
        entities: list[dict[str, Any]] | None = None, names: list[str] | None = None,
        **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"entities": entities or [{"type": V}]}
    if names:
        info["propertyNames"] = names
    return {"id": rid, "type": "ContextSourceRegistration", "endpoint": "http://cs",
            "information": [info], "mode": mode, "operations": ops or ["federationOps"],
            **extra}


def test_only_registrations_supporting_the_operation_are_chosen() -> None:
    docs = [reg("urn:r:1", ops=["updateOps"]), reg("urn:r:2", ops=["retrieveEntity"])]
    found = select_targets(docs, "retrieveEntity", now=NOW, ids={"urn:V:1"}, types={V})
    assert [t.id for t in found] == ["urn:r:2"]


def test_expired_registrations_and_other_types_are_left_out() -> None:
    docs = [reg("urn:r:1", expiresAt="2020-01-01T00:00:00Z"),
            reg("urn:r:2", entities=[{"type": "https://example.org/Lamp"}]),
            reg("urn:r:3")]
    assert [t.id for t in select_targets(docs, "queryEntity", now=NOW, types={V})] == ["urn:r:3"]


def test_attributes_are_narrowed_to_what_the_registration_holds() -> None:
    doc = reg(names=[SPEED])
    (target,) = select_targets([doc], "retrieveEntity", now=NOW, ids={"urn:V:1"})
    assert target.attrs == frozenset({SPEED})
    (target,) = select_targets([doc], "retrieveEntity", now=NOW, attrs={SPEED, BRAND})
    assert target.attrs == frozenset({SPEED})
    assert select_targets([doc], "retrieveEntity", now=NOW, attrs={BRAND}) == []
    (whole,) = select_targets([reg()], "retrieveEntity", now=NOW)
    assert whole.attrs is None


def test_a_registration_already_in_via_is_skipped_or_a_loop() -> None:
    alias = [{"key": "alias", "value": "peer-a"}]
    inclusive = reg("urn:r:1", contextSourceInfo=alias)
    assert select_targets([inclusive], "queryEntity", now=NOW, via=["peer-a"]) == []
    assert len(select_targets([inclusive], "queryEntity", now=NOW, via=["other"])) == 1
    redirect = reg("urn:r:2", mode="redirect", contextSourceInfo=alias)
    with pytest.raises(LoopDetected) as caught:
        select_targets([redirect], "queryEntity", now=NOW, via=["peer-a"])
    assert caught.value.status == 508


def test_a_request_that_came_back_is_forwarded_nowhere() -> None:
    docs = [reg("urn:r:1")]
    assert select_targets(docs, "queryEntity", now=NOW, via=["me"], own_alias="me") == []
    with pytest.raises(LoopDetected):
        select_targets([reg("urn:r:2", mode="exclusive",
                            entities=[{"id": "urn:V:1", "type": V}], names=[SPEED])],
                       "retrieveEntity", now=NOW, ids={"urn:V:1"}, via=["x", "me"],
                       own_alias="me")


def test_csf_picks_registrations_by_their_properties() -> None:
    kind = "https://example.org/sourceType"
    docs = [reg("urn:r:1", **{kind: {"type": "Property", "value": "sensor"}}),
            reg("urn:r:2", **{kind: "archive"})]
    csf = parse_q('sourceType=="sensor"', lambda n: f"https://example.org/{n}")
    assert [t.id for t in select_targets(docs, "queryEntity", now=NOW, csf=csf)] == ["urn:r:1"]


def test_local_only_and_registered_ids() -> None:
    target = Target(reg(management={"localOnly": True},
                        entities=[{"id": "urn:V:1", "type": V}]), "inclusive", None)
    assert target.local_only
    assert target.registered_ids() == ["urn:V:1"]
    assert not Target(reg(), "inclusive", None).local_only
    assert Target(reg(), "inclusive", None).registered_ids() is None


def inst(value: Any, **stamps: str) -> dict[str, Any]:
    return {"type": "Property", "value": value, **stamps}


def entity(eid: str = "urn:V:1", **attrs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": eid, "type": [V], "attrs": {f"https://example.org/{k}": v
                                             for k, v in attrs.items()}}


def test_merge_keeps_the_latest_observation_then_the_latest_modification() -> None:
    a = entity(speed=[inst(1, observedAt="2025-01-01T00:00:00Z",
                            modifiedAt="2025-06-01T00:00:00Z")])
    b = entity(speed=[inst(2, observedAt="2025-02-01T00:00:00Z",
                            modifiedAt="2025-01-01T00:00:00Z")])
    assert merge_entities([a, b])["attrs"][SPEED][0]["value"] == 2
    c = entity(speed=[inst(3, modifiedAt="2025-01-01T00:00:00Z")])
    d = entity(speed=[inst(4, modifiedAt="2025-03-01T00:00:00Z")])
    assert merge_entities([c, d])["attrs"][SPEED][0]["value"] == 4
    assert merge_entities([d, c])["attrs"][SPEED][0]["value"] == 4


def test_merge_drops_expired_instances_and_keeps_datasets_apart() -> None:
    live = inst(1, modifiedAt="2025-01-01T00:00:00Z")
    dead = inst(2, modifiedAt="2025-09-01T00:00:00Z", expiresAt="2025-10-01T00:00:00Z")
    merged = merge_entities([entity(speed=[live]), entity(speed=[dead])], now=NOW)
    assert merged["attrs"][SPEED][0]["value"] == 1
    other = inst(5, datasetId="urn:ds:1")
    both = merge_entities([entity(speed=[live]), entity(speed=[other], brand=[inst("x")])])
    assert sorted(i.get("datasetId", "") for i in both["attrs"][SPEED]) == ["", "urn:ds:1"]
    assert BRAND in both["attrs"]


def test_modes_decide_who_gives_what() -> None:
    local = entity(speed=[inst(1, modifiedAt="2026-01-01T00:00:00Z")],
                   brand=[inst("local")])
    exclusive = Target(reg(mode="exclusive", entities=[{"id": "urn:V:1", "type": V}],
                           names=[SPEED]), "exclusive", frozenset({SPEED}))
    older = entity(speed=[inst(9, modifiedAt="2020-01-01T00:00:00Z")])
    merged = merge_sources(local, [(exclusive, older)])
    assert merged is not None
    assert merged["attrs"][SPEED][0]["value"] == 9  # the source alone holds speed
    assert merged["attrs"][BRAND][0]["value"] == "local"
    aux = Target(reg(mode="auxiliary"), "auxiliary", None)
    newer = entity(brand=[inst("aux", modifiedAt="2030-01-01T00:00:00Z")],
                   colour=[inst("red")])
    merged = merge_sources(local, [(aux, newer)])
    assert merged is not None
    assert merged["attrs"][BRAND][0]["value"] == "local"  # auxiliary only fills gaps
    assert merged["attrs"]["https://example.org/colour"][0]["value"] == "red"
    assert merge_sources(None, []) is None


def test_via_and_warning_values() -> None:
    assert parse_via(None) == []
    assert parse_via("1.1 a, HTTP/1.1 b (comment), c") == ["a", "b", "c"]
    assert add_via(None, "me") == "1.1 me"
    assert add_via("1.1 a", "me") == "1.1 a, 1.1 me"
    assert warning(199, "http://cs", 'no "answer"') == '199 http://cs "no \\"answer\\""'
