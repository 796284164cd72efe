"""Temporal payloads into the stored form (clauses 5.6.11, 5.6.12, 5.6.14).

A temporal entity carries, per attribute, any number of instances, several of which may
share a datasetId (they differ in time). Each instance is validated with the rules of
``core.entity`` in the update mode, so an instance may be the NGSI-LD Null of its kind:
history keeps deletions too (clause 5.5.4 allows the Null as a value here). Entity-level
members are not fragments, so a Null there is refused.
"""

from __future__ import annotations

from urbanos.core.entity import (
    Mode,
    check_attribute_name,
    check_entity_id,
    check_scopes,
    expand_attribute,
    expand_types,
)
from urbanos.core.model import NULL_URN
from urbanos.core.temporal import latest_instances
from urbanos.core.validation import check_datetime
from urbanos.errors import BadRequestData
from urbanos.types import JSON, JSONObject, Terms

Attrs = dict[str, list[JSONObject]]
#: where an expanded temporal entity keeps the scope instances its payload gave
SCOPE_HISTORY = "scopeHistory"

#: entity members that are not attributes; system members are output only and ignored
_MEMBERS = frozenset({"id", "@id", "type", "@type", "scope", "@context", "createdAt",
                      "modifiedAt", "deletedAt", "expiresAt"})


def expand_temporal_attrs(body: JSONObject, terms: Terms, now: str) -> Attrs:
    """``{name: instance | [instances]}`` into expanded names and stored-form instances."""
    attrs: Attrs = {}
    for name, raw in body.items():
        iri = check_attribute_name(name, terms)
        if iri in attrs:
            raise BadRequestData(f"attribute {iri} is given twice")
        items = raw if isinstance(raw, list) and all(isinstance(r, dict) for r in raw) else [raw]
        if not items:
            raise BadRequestData(f"attribute {iri} has no instances")
        instances: list[JSONObject] = []
        for item in items:
            instances.extend(expand_attribute(iri, item, terms, now, mode=Mode.UPDATE))
        attrs[iri] = instances
    return attrs


def expand_temporal_entity(payload: JSON, terms: Terms, now: str) -> JSONObject:
    """A temporal entity: ``{"id", "type", "scope"?, "attrs": {iri: [instances]}}``."""
    if not isinstance(payload, dict):
        raise BadRequestData("a temporal entity must be a JSON object")
    eid = check_entity_id(payload.get("id", payload.get("@id")))
    raw_type = payload.get("type", payload.get("@type"))
    if raw_type is None:
        raise BadRequestData("a temporal entity must have a type")
    entity: JSONObject = {"id": eid, "type": expand_types(raw_type, terms)}
    if "scope" in payload:
        entity["scope"], history = expand_scope(payload["scope"], now)
        if history:
            entity[SCOPE_HISTORY] = history
    if "expiresAt" in payload:
        value = payload["expiresAt"]
        if value == NULL_URN:
            raise BadRequestData("expiresAt is an entity member: the NGSI-LD Null is not a value")
        check_datetime(value, "expiresAt")
    body = {k: v for k, v in payload.items() if k not in _MEMBERS}
    entity["attrs"] = expand_temporal_attrs(body, terms, now)
    return entity


def expand_scope(raw: JSON, now: str) -> tuple[list[str], list[JSONObject]]:
    """A temporal entity's scope: scopes as in an entity, or Property instances whose
    values are scopes (clause 4.18). Returns the latest scopes and the instances."""
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(i, dict) for i in items):
        return check_scopes(raw), []
    instances: list[JSONObject] = []
    for item in items:
        if item.get("type", "Property") != "Property" or "value" not in item:
            raise BadRequestData("scope instances must be Properties whose value is a scope")
        unknown = set(item) - {"type", "value", "observedAt", "createdAt", "modifiedAt",
                               "instanceId"}
        if unknown:
            raise BadRequestData(f"scope instances carry no {', '.join(sorted(unknown))}")
        inst: JSONObject = {"type": "Property", "value": check_scopes(item["value"])}
        if "observedAt" in item:
            inst["observedAt"] = check_datetime(item["observedAt"], "observedAt of scope")
        inst.update(createdAt=now, modifiedAt=now)
        instances.append(inst)
    (latest,) = latest_instances({"scope": instances})["scope"]
    return list(latest["value"]), instances


def expand_instance_fragment(iri: str, payload: JSON, terms: Terms, now: str) -> JSONObject:
    """The body of Modify Attribute Instance (clause 5.6.14): one partial instance."""
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k not in ("@context", "instanceId")}
    if not isinstance(payload, dict) or not payload:
        raise BadRequestData("an attribute instance fragment must be a non-empty JSON object")
    (instance,) = expand_attribute(iri, payload, terms, now, mode=Mode.PARTIAL)
    for key in ("createdAt", "modifiedAt", "datasetId"):
        instance.pop(key, None)
    return instance
