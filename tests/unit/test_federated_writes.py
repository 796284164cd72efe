"""The pure part of distributed writes: the split by registration mode, what a source is
sent, and how the parts' outcomes make one answer (clauses 4.3.6.2, 4.3.6.3, 6.3.17)."""

from __future__ import annotations

from typing import Any

from urbanos.core.distributed_writes import (
    Conflict,
    Outcome,
    batch_result,
    forward_body,
    keep_attrs,
    plan_write,
    problem_of,
    refusing,
    update_result,
)
from urbanos.core.federation import Target
from urbanos.core.jsonld import core_term_map
from urbanos.services.federated_writes import Written, batch_outcomes, single_outcome
from urbanos.services.federation import Reply

V = "https://uri.etsi.org/ngsi-ld/default-context/Vehicle"
SPEED = "https://uri.etsi.org/ngsi-ld/default-context/speed"
BRAND = "https://uri.etsi.org/ngsi-ld/default-context/brand"
NOW = "2026-01-01T00:00:00.000Z"


def doc(mode: str, *, rid: str = "urn:r:1", ids: list[str] | None = None,
        names: list[str] | None = None, operations: list[str] | None = None,
        **more: Any) -> dict[str, Any]:
    entities = [{"id": i, "type": V} for i in ids] if ids else [{"type": V}]
    info: dict[str, Any] = {"entities": entities}
    if names:
        info["propertyNames"] = names
    return {"id": rid, "mode": mode, "information": [info], "endpoint": "http://s.example",
            "operations": operations or ["redirectionOps"], **more}


def target(mode: str, attrs: frozenset[str] | None = None, rid: str = "urn:r:1") -> Target:
    return Target(doc=doc(mode, rid=rid), mode=mode, attrs=attrs)


# --------------------------------------------------------------------------- planning


def test_no_source_means_local_only() -> None:
    plan = plan_write([], [], frozenset({SPEED}))
    assert plan.local and plan.kept is None and not plan.distributed


def test_inclusive_writes_here_and_there() -> None:
    t = target("inclusive")
    plan = plan_write([t], [], frozenset({SPEED, BRAND}))
    assert plan.local and plan.kept is None and plan.forward == (t,)


def test_exclusive_takes_its_attributes_away() -> None:
    t = target("exclusive", frozenset({SPEED}))
    plan = plan_write([t], [], frozenset({SPEED, BRAND}))
    assert plan.local and plan.kept == frozenset({BRAND}) and plan.forward == (t,)
    only = plan_write([t], [], frozenset({SPEED}))
    assert not only.local and only.kept == frozenset()


def test_exclusive_deletion_of_the_entity_is_done_here_too() -> None:
    plan = plan_write([target("exclusive", frozenset({SPEED}))], [], None, whole_entity=True)
    assert plan.local and plan.kept is None


def test_redirect_keeps_nothing_here() -> None:
    for attrs, whole in ((frozenset({SPEED}), False), (None, True)):
        plan = plan_write([target("redirect")], [], attrs, whole_entity=whole)
        assert not plan.local


def test_auxiliary_is_never_written_to() -> None:
    assert not plan_write([target("auxiliary")], [], frozenset({SPEED})).distributed


def test_a_refusing_holder_keeps_its_part_from_here() -> None:
    refused = target("exclusive", frozenset({SPEED}))
    plan = plan_write([], [refused], frozenset({SPEED, BRAND}))
    assert plan.local and plan.kept == frozenset({BRAND}) and plan.refused == (refused,)
    assert not plan.forward


def test_refusing_lists_holders_that_do_not_take_the_operation() -> None:
    docs = [doc("exclusive", rid="urn:e", ids=["urn:v:1"], names=[SPEED],
                operations=["retrieveOps"]),
            doc("redirect", rid="urn:r", operations=["createEntity"]),
            doc("inclusive", rid="urn:i", operations=["retrieveOps"]),
            doc("redirect", rid="urn:old", operations=["retrieveOps"],
                expiresAt="2020-01-01T00:00:00Z")]
    found = refusing(docs, "createEntity", now=NOW, ids={"urn:v:1"}, types={V},
                     attrs={SPEED, BRAND})
    assert [(t.id, t.attrs) for t in found] == [("urn:e", frozenset({SPEED}))]
    assert refusing(docs, "createEntity", now=NOW, ids={"urn:v:2"}, attrs={SPEED}) == []
    cooling = refusing(docs, "createEntity", now=NOW, ids={"urn:v:1"}, attrs={SPEED},
                       selected=set())  # the redirect one takes it, but was not selected
    assert [t.id for t in cooling] == ["urn:e", "urn:r"]


# --------------------------------------------------------------------------- payloads


def test_forward_body_keeps_what_the_source_holds_as_written() -> None:
    terms = core_term_map()
    raw = {"id": "urn:v:1", "type": "Vehicle", "@context": "http://c.example",
           "speed": {"type": "Property", "value": 1}, "brand": {"type": "Property", "value": 2}}
    assert forward_body(raw, terms, frozenset({SPEED})) == {
        "id": "urn:v:1", "type": "Vehicle", "speed": {"type": "Property", "value": 1}}
    assert "@context" not in forward_body(raw, terms, None)
    assert set(forward_body(raw, terms, None)) == {"id", "type", "speed", "brand"}


def test_forward_body_recompacts_with_the_registered_context() -> None:
    class Into:
        def expand(self, term: str) -> str:
            return term

        def compact(self, iri: str) -> str:
            return {SPEED: "velocity", V: "Car"}.get(iri, iri)

    raw = {"id": "urn:v:1", "type": "Vehicle", "speed": {"type": "Property", "value": 1}}
    assert forward_body(raw, core_term_map(), None, into=Into()) == {
        "id": "urn:v:1", "type": "Car", "velocity": {"type": "Property", "value": 1}}


def test_keep_attrs() -> None:
    entity = {"id": "urn:v:1", "type": [V], "attrs": {SPEED: [{}], BRAND: [{}]}}
    assert keep_attrs(entity, None) is entity
    assert keep_attrs(entity, frozenset({BRAND}))["attrs"] == {BRAND: [{}]}
    assert entity["attrs"] == {SPEED: [{}], BRAND: [{}]}


# --------------------------------------------------------------------------- outcomes


def test_problem_of_a_source() -> None:
    own = {"type": "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists", "title": "x"}
    assert problem_of(409, own, "d") == {**own, "status": 409}
    made = problem_of(404, None, "the source answered 404")
    assert made["status"] == 404 and made["type"].endswith("/ResourceNotFound")
    assert problem_of(None, None, "no answer")["status"] == 504


def test_batch_result_names_the_registration() -> None:
    conflict = Conflict("no").problem()
    body = batch_result([Outcome(None, ["urn:v:1"]), Outcome("urn:r", ["urn:v:1"], conflict)])
    assert body == {"success": ["urn:v:1"], "errors": [
        {"entityId": "urn:v:1", "registrationId": "urn:r", "error": conflict}]}
    assert conflict["status"] == 409 and conflict["type"].endswith("/Conflict")


def test_update_result_of_parts() -> None:
    compact = core_term_map().compact
    body = update_result([
        Outcome(None, ["urn:v:1"], attrs=[BRAND], not_updated=[(SPEED, "exists")]),
        Outcome("urn:r", ["urn:v:1"], problem_of(500, None, "down"), attrs=[SPEED]),
    ], compact)
    assert body["updated"] == [BRAND]  # names as expanded, as a local UpdateResult has them
    assert body["notUpdated"] == [
        {"attributeName": compact(SPEED), "reason": "exists"},
        {"attributeName": compact(SPEED), "reason": "down", "registrationId": "urn:r"}]


def test_replies_become_outcomes() -> None:
    t = target("inclusive", rid="urn:r")
    assert single_outcome(Reply(t, 204), ["urn:v:1"], [SPEED]).complete
    failed = single_outcome(Reply(t, 409, warning='299 x "409"'), ["urn:v:1"], [])
    assert failed.problem is not None and failed.problem["status"] == 409
    partial = single_outcome(Reply(t, 207, body={"updated": [], "notUpdated": [
        {"attributeName": "speed", "reason": "r"}]}), ["urn:v:1"], [SPEED])
    assert partial.ok and not partial.complete and partial.not_updated == [("speed", "r")]
    silent = single_outcome(Reply(t, None, warning='199 x "no answer"'), ["urn:v:1"], [])
    assert silent.problem is not None and silent.problem["detail"] == '199 x "no answer"'


def test_batch_replies_become_outcomes_per_entity() -> None:
    t = target("redirect", rid="urn:r")
    [ok] = batch_outcomes(Reply(t, 201), ["a", "b"], creating=True)
    assert ok.ids == ["a", "b"] and ok.created == ["a", "b"]
    [upserted] = batch_outcomes(Reply(t, 201, body=["b"]), ["a", "b"], creating=False)
    assert upserted.created == ["b"]
    parts = batch_outcomes(Reply(t, 207, body={"success": ["a"], "errors": [
        {"entityId": "b", "error": {"type": "x", "status": 404}}]}), ["a", "b"], creating=False)
    assert [(o.ids, o.ok) for o in parts] == [(["a"], True), (["b"], False)]
    [down] = batch_outcomes(Reply(t, None, warning="199"), ["a", "b"], creating=False)
    assert not down.ok and down.ids == ["a", "b"]


def test_written_raises_as_a_local_write_when_nothing_was_forwarded() -> None:
    refused = target("redirect", rid="urn:r")
    written = Written(plan_write([], [refused], frozenset({SPEED})),
                      outcomes=[Outcome("urn:r", ["urn:v:1"], Conflict("no").problem())])
    try:
        written.check()
    except Conflict as exc:
        assert exc.status == 409
    else:
        raise AssertionError("a refused write alone is a Conflict")
    forwarded = Written(plan_write([refused], [], frozenset({SPEED})), forwarded=True,
                        outcomes=[Outcome("urn:r", ["urn:v:1"], problem_of(500, None, "x"))])
    forwarded.check()
    assert not forwarded.complete
