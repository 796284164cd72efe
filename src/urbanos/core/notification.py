"""Notification bodies (clauses 5.2.19, 5.3.1, 5.8.6): the entities as a subscription shows
them, with ``showChanges`` previous values and deletions, and the HTTP headers to send.

Pure: the caller hands in the change, the linked entities a ``join`` shows and the
processed @context of the subscription, and gets back JSON ready to send.

How changes show (``entity_for_change``):

* creations and updates show the entity as it is now, rendered with the subscription's
  format, attributes, pick/omit, sysAttrs, lang and datasetId;
* a deleted attribute instance shows as the NGSI-LD Null of its kind (``"value":
  "urn:ngsi-ld:null"``, ``"languageMap": {"@none": "urn:ngsi-ld:null"}``, ...) with its
  ``deletedAt``, when the subscription waits for attribute deletions;
* a deleted entity shows its id, type and ``deletedAt``; with the attributeDeleted trigger
  or ``showChanges`` also its (watched) attributes, as Nulls;
* ``showChanges`` adds ``previousValue`` (``previousObject``, ``previousLanguageMap``,
  ``previousVocab``, ``previousJson``, ``previousValueList``, ``previousObjectList``) to
  every instance the write changed or deleted, never to one it created.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from urbanos.core.change import Change
from urbanos.core.model import NULL_URN, VALUE_MEMBER
from urbanos.core.render import (
    DEFAULT_DATASET,
    Linked,
    RenderOptions,
    render_entity,
    render_feature,
    render_flat,
)
from urbanos.core.subscription import (
    AttributeChanges,
    Subscription,
    instances_by_dataset,
    relevant,
)
from urbanos.types import JSONObject, Terms

__all__ = [
    "entity_for_change",
    "notification_body",
    "notification_headers",
    "null_instance",
    "render_options",
]

JSON_MT = "application/json"
JSONLD_MT = "application/ld+json"
GEOJSON_MT = "application/geo+json"
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
_PREVIOUS = {
    "value": "previousValue",
    "object": "previousObject",
    "languageMap": "previousLanguageMap",
    "vocab": "previousVocab",
    "json": "previousJson",
    "valueList": "previousValueList",
    "objectList": "previousObjectList",
}
_KEPT_ON_DELETE = ("datasetId", "createdAt", "modifiedAt")


def render_options(sub: Subscription) -> RenderOptions:
    """How a subscription shows entities (NotificationParams, clause 5.2.14)."""
    return RenderOptions(
        fmt=sub.fmt,
        sys_attrs=sub.sys_attrs,
        attrs=sub.attributes,
        pick=sub.pick,
        omit=sub.omit,
        lang=sub.doc.get("lang"),
        dataset_ids=sub.dataset_ids,
        join=sub.join,
        join_level=sub.join_level,
    )


def null_instance(inst: Mapping[str, Any], deleted_at: str) -> JSONObject:
    """The NGSI-LD Null of an instance's kind, standing for its deletion."""
    kind = str(inst.get("type", "Property"))
    member = VALUE_MEMBER.get(kind, "value")
    value: Any = NULL_URN
    if member == "languageMap":
        value = {"@none": NULL_URN}
    elif member == "valueList":
        value = [NULL_URN]
    elif member == "objectList":
        value = [{"object": NULL_URN}]
    out: JSONObject = {"type": kind, member: value}
    out.update({k: inst[k] for k in _KEPT_ON_DELETE if k in inst})
    out["deletedAt"] = deleted_at
    return out


def _previous(inst: JSONObject, old: Mapping[str, Any], terms: Terms) -> None:
    member = VALUE_MEMBER.get(str(old.get("type", "Property")), "value")
    if member not in old:
        return
    value = copy.deepcopy(old[member])
    if member == "vocab":
        value = [terms.compact(v) for v in value] if isinstance(value, list) else (
            terms.compact(value) if isinstance(value, str) else value)
    inst[_PREVIOUS[member]] = value


def _with_deletions(
    sub: Subscription, base: JSONObject, old: Mapping[tuple[str, str], JSONObject],
    deleted: frozenset[tuple[str, str]], at: str, terms: Terms,
) -> None:
    """Add the Nulls of deleted instances; an attribute gone altogether shows as one Null
    (of its default instance, else its first), however many instances it had."""
    gone: dict[str, list[str]] = {}
    for name, dataset in sorted(deleted):
        gone.setdefault(name, []).append(dataset)
    for name, datasets in gone.items():
        if name not in base["attrs"] and len(datasets) > 1:
            datasets = [DEFAULT_DATASET if DEFAULT_DATASET in datasets else datasets[0]]
        for dataset in datasets:
            inst = null_instance(old[(name, dataset)], at)
            if sub.show_changes:
                _previous(inst, old[(name, dataset)], terms)
            base["attrs"].setdefault(name, []).append(inst)


def entity_for_change(
    sub: Subscription, change: Change, reason: str, changes: AttributeChanges, terms: Terms,
) -> JSONObject:
    """The entity, in the stored form, that a notification for ``change`` shows."""
    old = instances_by_dataset(change.before)
    watches_deletions = bool(sub.triggers & {"attributeDeleted", "entityUpdated"})
    if change.after is None:
        assert change.before is not None
        base = {k: copy.deepcopy(v) for k, v in change.before.items() if k != "attrs"}
        base["attrs"] = {}
        base["deletedAt"] = change.at
        if reason == "attributeDeleted" or sub.show_changes:
            shown = relevant(sub, changes.deleted) if reason == "attributeDeleted" else (
                changes.deleted)
            _with_deletions(sub, base, old, shown, change.at, terms)
        return base
    base = copy.deepcopy(change.after)
    if sub.show_changes and change.before is not None and sub.fmt != "keyValues":
        for name, instances in base["attrs"].items():
            for inst in instances:
                key = (name, inst.get("datasetId", DEFAULT_DATASET))
                if key in changes.updated:
                    _previous(inst, old[key], terms)
    if watches_deletions and changes.deleted:
        _with_deletions(sub, base, old, relevant(sub, changes.deleted), change.at, terms)
    return base


def render_data(
    sub: Subscription, entities: list[JSONObject], terms: Terms, linked: Linked | None = None,
    *, deleted: bool = False,
) -> Any:
    """The ``data`` member: the entities rendered, a FeatureCollection for GeoJSON."""
    opts = render_options(sub)
    if deleted:
        opts = replace(opts, join=None)
    if sub.endpoint.accept == GEOJSON_MT:
        return {"type": "FeatureCollection",
                "features": [render_feature(e, terms, opts, linked) for e in entities]}
    if opts.join == "flat" and linked:
        return render_flat(entities, terms, opts, linked)
    out = []
    for entity in entities:
        shown = render_entity(entity, terms, opts, linked)
        if "deletedAt" in entity and "deletedAt" not in shown:
            shown["deletedAt"] = entity["deletedAt"]
        out.append(shown)
    return out


def notification_body(
    sub: Subscription, data: Any, *, notification_id: str, notified_at: str,
    trigger: str | None,
) -> JSONObject:
    """The Notification data type (clause 5.3.1); JSON-LD carries its @context inline,
    in the body and in each entity."""
    body: JSONObject = {
        "id": notification_id,
        "type": "Notification",
        "subscriptionId": sub.id,
        "notifiedAt": notified_at,
        "data": data,
    }
    if trigger is not None:
        body["triggerReason"] = trigger
    if sub.endpoint.accept == JSONLD_MT:
        body["@context"] = sub.jsonld_context
        if isinstance(data, list):
            body["data"] = [{**e, "@context": sub.jsonld_context} if isinstance(e, dict) else e
                            for e in data]
    return body


def notification_headers(sub: Subscription, tenant: str) -> dict[str, str]:
    """Content-Type, Link (plain JSON and GeoJSON), NGSILD-Tenant and receiverInfo."""
    accept = sub.endpoint.accept
    headers = {"Content-Type": accept}
    if accept != JSONLD_MT:
        headers["Link"] = (
            f'<{sub.jsonld_context}>; rel="{CONTEXT_REL}"; type="application/ld+json"'
        )
    if tenant:
        headers["NGSILD-Tenant"] = tenant
    for key, value in sub.endpoint.receiver_info:
        headers[key] = value
    return headers
