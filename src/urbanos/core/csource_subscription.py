"""Context source registration subscriptions (clauses 5.11, 5.2.12, 5.3.2): the model.

A csource subscription is a Subscription (5.2.12) whose selection applies to context
source registrations instead of entities, so it is kept as the same *document*
(``core.subscription_payload``) and compiled by the same ``compile_subscription``; this
module adds what only registrations have:

* ``temporalQ`` is matched against the registration's ``observationInterval``
  (timeproperty observedAt) or ``managementInterval`` (createdAt, modifiedAt);
* ``csf`` (and ``q``) are evaluated on the registration's Context Source Properties;
* ``geoQ`` is evaluated on its ``location`` (or the ``observationSpace``/``operationSpace``
  named as geoproperty);
* ``entities`` and ``watchedAttributes`` select RegistrationInfo elements: a notification
  carries, of each registration, only the elements that matched (5.11.7).

``trigger`` says what one registration change means to one subscription (newlyMatching,
updated, noLongerMatching) and ``notification_body`` builds the CsourceNotification.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from urbanos.core.model import NGSI_LD
from urbanos.core.notification import notification_body as entity_notification_body
from urbanos.core.query.ast import QExpr, TypeAnd, TypeAny, TypeExpr, TypeName, TypeOr
from urbanos.core.query.evaluate import matches_q
from urbanos.core.query.parse import parse_q
from urbanos.core.registration import render_registration
from urbanos.core.registration_info import covers
from urbanos.core.subscription import (
    DeliveryStats,
    Subscription,
    compile_subscription,
    q_text,
)
from urbanos.core.subscription_payload import (
    parse_subscription,
    patch_subscription,
    render_subscription,
)
from urbanos.core.temporal import TemporalQuery, parse_temporal_query, to_micros
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject, Terms

__all__ = [
    "NEWLY_MATCHING",
    "NOTIFICATION_TYPE",
    "NO_LONGER_MATCHING",
    "UPDATED",
    "CsourceSubscription",
    "compile_csource_subscription",
    "matching",
    "notification_body",
    "notification_data",
    "parse_csource_subscription",
    "patch_csource_subscription",
    "relevant_information",
    "render_csource_subscription",
    "trigger",
]

#: the type of a CsourceNotification (clause 5.3.2)
NOTIFICATION_TYPE = "ContextSourceNotification"
NEWLY_MATCHING, UPDATED, NO_LONGER_MATCHING = "newlyMatching", "updated", "noLongerMatching"
_TEMPORAL_MEMBERS = frozenset({"timerel", "timeAt", "endTimeAt", "timeproperty"})
#: the interval of a registration a temporalQ's timeproperty is matched against
_INTERVAL_OF = {"observedAt": "observationInterval", "createdAt": "managementInterval",
                "modifiedAt": "managementInterval", "deletedAt": "managementInterval"}
#: registration members a geoQ may name as geoproperty (expanded IRI -> member)
_GEO_MEMBERS = {NGSI_LD + name: name for name in ("location", "observationSpace",
                                                  "operationSpace")}


@dataclass(frozen=True, slots=True)
class CsourceSubscription:
    """A csource subscription ready to match registrations: the compiled Subscription,
    its temporal query and its csf."""

    sub: Subscription
    temporal: TemporalQuery | None
    csf: QExpr | None

    @property
    def id(self) -> str:
        return self.sub.id


# --------------------------------------------------------------------------- payloads


def _temporal(value: object) -> TemporalQuery:
    if not isinstance(value, dict):
        raise BadRequestData("temporalQ must be an object")
    extra = sorted(k for k in value if k not in _TEMPORAL_MEMBERS)
    if extra:
        raise BadRequestData(f"temporalQ: unknown member(s) {', '.join(extra)}")
    if "timerel" not in value:
        raise BadRequestData("temporalQ needs timerel")
    return parse_temporal_query(value.get("timerel"), value.get("timeAt"),
                                value.get("endTimeAt"), value.get("timeproperty"))


def _csf_terms(doc: JSONObject, terms: Terms) -> None:
    """Remember the expansion of each name in ``csf`` (as for ``q``), so the document
    compiles alike under any later @context."""
    if "csf" not in doc:
        doc.get("_terms", {}).pop("csf", None)
        return
    seen: dict[str, str] = {}

    def expand(term: str) -> str:
        seen[term] = terms.expand(term)
        return seen[term]

    parse_q(q_text(str(doc["csf"])), expand)
    doc.setdefault("_terms", {})["csf"] = seen


def _checked(doc: JSONObject, terms: Terms) -> JSONObject:
    if "temporalQ" in doc:
        _temporal(doc["temporalQ"])
    _csf_terms(doc, terms)
    return doc


def parse_csource_subscription(
    payload: object, terms: Terms, now: str, *, new_id: Callable[[], str]
) -> JSONObject:
    """A Create Csource Registration Subscription body (5.11.2) as a document; the
    rules of 5.2.12 are those of entity subscriptions, plus a valid ``temporalQ``."""
    return _checked(parse_subscription(payload, terms, now, new_id=new_id), terms)


def patch_csource_subscription(
    doc: JSONObject, fragment: object, terms: Terms, now: str
) -> JSONObject:
    """Update Csource Registration Subscription (5.11.3)."""
    return _checked(patch_subscription(doc, fragment, terms, now), terms)


def render_csource_subscription(
    doc: Mapping[str, Any], terms: Terms, stats: DeliveryStats, now: str
) -> JSONObject:
    """A csource subscription as the API shows it: what the subscriber gave, the status
    and the delivery bookkeeping present so far (no entity-only default such as
    notificationTrigger, no jsonldContext the subscriber did not give)."""
    out = render_subscription(doc, terms, stats, now)
    if "notificationTrigger" not in doc:
        out.pop("notificationTrigger", None)
    if not doc.get("_explicitContext"):
        out.pop("jsonldContext", None)
    if not stats.times_failed:
        out["notification"].pop("timesFailed", None)
    return out


# --------------------------------------------------------------------------- matching


def compile_csource_subscription(doc: JSONObject) -> CsourceSubscription:
    temporal = _temporal(doc["temporalQ"]) if "temporalQ" in doc else None
    csf = None
    if "csf" in doc:
        table = doc.get("_terms", {}).get("csf", {})
        csf = parse_q(q_text(str(doc["csf"])), lambda term: table.get(term, term))
    return CsourceSubscription(compile_subscription(doc), temporal, csf)


def _type_names(expr: TypeExpr | None) -> set[str] | None:
    """The entity types a selector's type expression names (None: any type). A
    registration covering one of them may hold matching entities."""
    if expr is None or isinstance(expr, TypeAny):
        return None
    if isinstance(expr, TypeName):
        return {expr.iri}
    assert isinstance(expr, TypeAnd | TypeOr)
    names: set[str] = set()
    for child in expr.children:
        found = _type_names(child)
        if found is None:
            return None
        names |= found
    return names


def _info_selected(cs: CsourceSubscription, info: Mapping[str, Any]) -> bool:
    watched = set(cs.sub.watched) if cs.sub.watched else None
    selectors = cs.sub.query.selectors
    if not selectors:
        return covers(info, ids=None, types=None, attrs=watched)
    return any(
        covers(info, ids=set(sel.ids) if sel.ids else None, types=_type_names(sel.types),
               attrs=watched, id_pattern=sel.id_pattern)
        for sel in selectors
    )


def _overlaps(query: TemporalQuery, interval: Mapping[str, Any]) -> bool:
    """Whether [startAt, endAt) of a registration meets the query's [start, end)."""
    start = to_micros(interval["startAt"])
    end = to_micros(interval["endAt"]) if "endAt" in interval else None
    return ((query.end is None or start < query.end)
            and (query.start is None or end is None or end > query.start))


def _as_entity(reg: Mapping[str, Any]) -> JSONObject:
    """The registration's Context Source Properties (members under an IRI) as the
    Properties of an entity, for q and csf."""
    attrs = {key: [{"type": "Property", "value": copy.deepcopy(value)}]
             for key, value in reg.items() if "://" in key or key.startswith("urn:")}
    return {"id": reg["id"], "type": [], "attrs": attrs}


def relevant_information(cs: CsourceSubscription, reg: Mapping[str, Any]) -> list[JSONObject] | None:
    """The RegistrationInfo elements of ``reg`` the subscription selects, or None when
    it does not select the registration at all."""
    geo = cs.sub.query.geo
    if geo is not None:
        value = reg.get(_GEO_MEMBERS.get(geo.geoproperty, ""))
        if value is None or not geo.matches(value):
            return None
    if cs.temporal is not None and cs.temporal.timerel is not None:
        interval = reg.get(_INTERVAL_OF[cs.temporal.timeproperty])
        if not isinstance(interval, dict) or not _overlaps(cs.temporal, interval):
            return None
    for expr in (cs.sub.query.q, cs.csf):
        if expr is not None and not matches_q(expr, _as_entity(reg)):
            return None
    infos = [copy.deepcopy(i) for i in reg.get("information", ()) if _info_selected(cs, i)]
    return infos or None


def trigger(
    cs: CsourceSubscription, before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None, now: str,
) -> tuple[str, JSONObject] | None:
    """What one registration change (None before: created; None after: deleted) notifies
    to an active subscription without timeInterval: the trigger reason and the
    registration to send (of a matching one, only its matching information)."""
    if cs.sub.time_interval is not None or not cs.sub.active_at(now):
        return None
    was = relevant_information(cs, before) if before is not None else None
    is_now = relevant_information(cs, after) if after is not None else None
    if after is not None and is_now is not None:
        return (UPDATED if was is not None else NEWLY_MATCHING), {**after, "information": is_now}
    if was is not None:
        gone = after if after is not None else before
        assert gone is not None
        return NO_LONGER_MATCHING, dict(gone)
    return None


def matching(cs: CsourceSubscription, registrations: Iterable[Mapping[str, Any]]) -> list[JSONObject]:
    """The registrations the subscription selects now, each with its matching information
    only (the initial notification, a timeInterval one, the one after an update)."""
    out: list[JSONObject] = []
    for reg in registrations:
        infos = relevant_information(cs, reg)
        if infos is not None:
            out.append({**reg, "information": infos})
    return out


# --------------------------------------------------------------------------- notifications


def notification_data(registrations: Iterable[Mapping[str, Any]], terms: Terms,
                      now: str) -> list[JSONObject]:
    """The registrations as a notification carries them, compacted with the subscription's
    @context; entity types are given as arrays (EntityInfo allows one or several), so a
    receiver reads every entry alike."""
    out: list[JSONObject] = []
    for reg in registrations:
        shown = render_registration(reg, terms, now)
        for info in shown.get("information", ()):
            for entity in info.get("entities", ()):
                if isinstance(entity.get("type"), str):
                    entity["type"] = [entity["type"]]
        out.append(shown)
    return out


def notification_body(cs: CsourceSubscription, data: list[JSONObject], *,
                      notification_id: str, notified_at: str, reason: str | None) -> JSONObject:
    """The CsourceNotification (clause 5.3.2): as an entity Notification, typed
    ContextSourceNotification, its data the registrations."""
    body = entity_notification_body(cs.sub, data, notification_id=notification_id,
                                    notified_at=notified_at, trigger=reason)
    body["type"] = NOTIFICATION_TYPE
    return body
