"""Subscriptions (GS CIM 009 clause 5.2.12) compiled for matching, and what to send.

A subscription is kept as a *document* (see ``subscription_payload``): the validated
request with every name expanded, plus the texts of ``q``/``pick``/``omit`` and the
expansions their names had when the subscriber sent them. ``compile_subscription`` turns
a document into a ``Subscription`` once (parsed trees, compiled patterns), which the
service indexes and evaluates against every entity change: ``trigger_reason`` decides
whether a change is one the subscription waits for, ``Subscription.query`` whether the
entity is one it selects.

``Outgoing`` and ``Endpoint`` are the contract between the subscription side (which decides
*what* to send *where*) and the delivery side (outbox, workers, HTTP/MQTT senders).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from urbanos.core.change import Change
from urbanos.core.geo import GeoQuery, parse_geoq
from urbanos.core.model import LOCATION
from urbanos.core.projection import Projection, parse_projection
from urbanos.core.query.ast import TypeAnd, TypeAny, TypeExpr, TypeName, TypeOr
from urbanos.core.query.evaluate import EntityResolver, linked_depth
from urbanos.core.query.parse import parse_q, parse_scope_q, parse_type_expr
from urbanos.core.selection import EntityQuery, EntitySelector
from urbanos.core.selection import matches as selects
from urbanos.core.timeutil import parse_datetime
from urbanos.types import JSONObject

__all__ = [
    "DEFAULT_TRIGGERS",
    "TRIGGERS",
    "DeliveryStats",
    "Endpoint",
    "Outgoing",
    "Subscription",
    "attribute_changes",
    "compile_subscription",
    "matches",
    "q_text",
    "status_of",
    "trigger_reason",
    "type_text",
]

TRIGGERS = ("entityCreated", "entityUpdated", "entityDeleted", "attributeCreated",
            "attributeUpdated", "attributeDeleted")
#: what a subscription without ``notificationTrigger`` waits for (Table 5.2.12-1)
DEFAULT_TRIGGERS = ("attributeCreated", "attributeUpdated")
#: the datasetId key of the default attribute instance
DEFAULT_DATASET = "@none"
MQTT_SCHEMES = ("mqtt", "mqtts")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how a notification goes (clause 5.2.15).

    ``uri`` is http(s) or mqtt(s); ``accept`` the media type of the body; ``receiver_info``
    the extra headers (HTTP) or metadata (MQTT) to send; ``mqtt_qos``/``mqtt_version`` come
    from ``notifierInfo`` (MQTT-QoS, MQTT-Version); ``topic`` is the MQTT topic (the URI
    path without its leading slash), empty for HTTP. ``timeout_ms`` and ``cooldown_ms`` are
    the endpoint's own ``timeout`` and ``cooldown`` members, None when not given.
    """

    uri: str
    accept: str = "application/json"
    receiver_info: tuple[tuple[str, str], ...] = ()
    mqtt_qos: int = 0
    mqtt_version: str = "mqtt5.0"
    topic: str = ""
    timeout_ms: float | None = None
    cooldown_ms: float | None = None

    @property
    def is_mqtt(self) -> bool:
        return self.uri.startswith(("mqtt://", "mqtts://"))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One notification to deliver: the body is final, ``headers`` are the HTTP headers
    (Content-Type, Link, NGSILD-Tenant and the receiverInfo pairs) the sender should set;
    over MQTT they are the message's metadata."""

    tenant: str
    subscription_id: str
    endpoint: Endpoint
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """The delivery bookkeeping of a subscription (NotificationParams, clause 5.2.14)."""

    times_sent: int = 0
    times_failed: int = 0
    last_notification: str | None = None
    last_success: str | None = None
    last_failure: str | None = None
    status: str | None = None  # "ok" | "failed", None before the first attempt


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription ready to evaluate; ``doc`` is the document it was compiled from."""

    id: str
    doc: JSONObject
    query: EntityQuery  # selectors, q, scopeQ, geoQ, lang: which entities are selected
    watched: frozenset[str] | None
    triggers: frozenset[str]
    is_active: bool
    expires_at: str | None
    throttling: float | None
    time_interval: float | None
    dataset_ids: frozenset[str] | None
    fmt: str
    sys_attrs: bool
    attributes: frozenset[str] | None
    pick: Projection | None
    omit: Projection | None
    join: str | None
    join_level: int
    show_changes: bool
    endpoint: Endpoint
    #: the @context notifications are compacted with: jsonldContext when the subscriber
    #: gave one, else the @context of the creating request
    context: Any
    jsonld_context: str
    created_at: str
    #: relationship hops linked q terms follow (0: the entity alone decides)
    linked_depth: int = 0

    def active_at(self, now: str) -> bool:
        return status_of(self.doc, now) == "active"


def status_of(doc: Mapping[str, Any], now: str) -> str:
    """``expired`` once expiresAt has passed, else ``paused`` when isActive is false."""
    expires = doc.get("expiresAt")
    if isinstance(expires, str):
        at, current = parse_datetime(expires), parse_datetime(now)
        if at is not None and current is not None and at <= current:
            return "expired"
    return "paused" if doc.get("isActive") is False else "active"


# --------------------------------------------------------------------------- type text


def type_text(expr: TypeExpr, name: Callable[[str], str], *, top: bool = True) -> str:
    """An entity type selection written back as text, each type name through ``name``."""
    if isinstance(expr, TypeName):
        return name(expr.iri)
    if isinstance(expr, TypeAny):
        return "*"
    if isinstance(expr, TypeAnd):
        return ";".join(type_text(c, name, top=False) for c in expr.children)
    assert isinstance(expr, TypeOr)
    text = "|".join(type_text(c, name, top=True) for c in expr.children)
    return text if top else f"({text})"


def _same(term: str) -> str:
    return term


def _lookup(table: Mapping[str, str]) -> Callable[[str], str]:
    return lambda term: table.get(term, term)


# --------------------------------------------------------------------------- compile


def compile_endpoint(raw: Mapping[str, Any]) -> Endpoint:
    uri = str(raw["uri"])
    notifier = {p["key"]: p["value"] for p in raw.get("notifierInfo", ())}
    qos = notifier.get("MQTT-QoS", "0")
    parts = urlsplit(uri)
    return Endpoint(
        uri=uri,
        accept=str(raw.get("accept", "application/json")),
        receiver_info=tuple((p["key"], p["value"]) for p in raw.get("receiverInfo", ())),
        mqtt_qos=int(qos) if str(qos).isdigit() else 0,
        mqtt_version=str(notifier.get("MQTT-Version", "mqtt5.0")),
        topic=unquote(parts.path.lstrip("/")) if parts.scheme in MQTT_SCHEMES else "",
        timeout_ms=raw.get("timeout"),
        cooldown_ms=raw.get("cooldown"),
    )


def compile_subscription(doc: JSONObject) -> Subscription:
    """Parse the trees of a stored document once; documents were validated on the way in,
    so this does not fail on anything the API accepted."""
    terms = doc.get("_terms", {})
    selectors = tuple(
        EntitySelector(
            ids=(e["id"],) if "id" in e else None,
            id_pattern=e.get("idPattern"),
            types=parse_type_expr(e["type"], _same) if "type" in e else None,
        )
        for e in doc.get("entities", ())
    )
    q = parse_q(q_text(doc["q"]), _lookup(terms.get("q", {}))) if "q" in doc else None
    geoq: GeoQuery | None = None
    if "geoQ" in doc:
        g = doc["geoQ"]
        geoq = parse_geoq(g["georel"], g["geometry"], g["coordinates"],
                          g.get("geoproperty", LOCATION), _same)
    scope_q = parse_scope_q(doc["scopeQ"]) if "scopeQ" in doc else None
    query = EntityQuery(selectors=selectors or None, q=q, scope_q=scope_q, geo=geoq,
                        lang=doc.get("lang"))
    n = doc["notification"]
    fmt = n.get("format", "normalized")
    pick = omit = None
    if "pick" in n:
        pick = parse_projection(_projection_text(n["pick"]), _lookup(terms.get("pick", {})),
                                label="pick")
    if "omit" in n:
        omit = parse_projection(_projection_text(n["omit"]), _lookup(terms.get("omit", {})),
                                label="omit")
    join = n.get("join")
    return Subscription(
        id=doc["id"],
        doc=doc,
        query=query,
        watched=frozenset(doc["watchedAttributes"]) if "watchedAttributes" in doc else None,
        triggers=frozenset(doc.get("notificationTrigger", DEFAULT_TRIGGERS)),
        is_active=doc.get("isActive", True) is not False,
        expires_at=doc.get("expiresAt"),
        throttling=doc.get("throttling"),
        time_interval=doc.get("timeInterval"),
        dataset_ids=frozenset(doc["datasetId"]) if "datasetId" in doc else None,
        fmt="keyValues" if fmt == "simplified" else fmt,
        sys_attrs=bool(n.get("sysAttrs", False)),
        attributes=frozenset(n["attributes"]) if "attributes" in n else None,
        pick=pick,
        omit=omit,
        join=join if join in ("inline", "flat") else None,
        join_level=int(n.get("joinLevel", 1)),
        show_changes=bool(n.get("showChanges", False)),
        endpoint=compile_endpoint(n["endpoint"]),
        context=doc["jsonldContext"] if doc.get("_explicitContext") else doc.get("_context"),
        jsonld_context=doc["jsonldContext"],
        created_at=doc.get("createdAt", ""),
        linked_depth=linked_depth(q) if q is not None else 0,
    )


def q_text(raw: str) -> str:
    """The query of a ``q`` member: percent-encoded characters decoded, as subscribers
    often send the form they would put in a URL (``name=="Eiffel%20Tower"``)."""
    return unquote(raw)


def _projection_text(raw: object) -> str:
    return ",".join(raw) if isinstance(raw, list) else str(raw)


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class AttributeChanges:
    """Attribute instances (attribute IRI, datasetId or @none) one write created, updated
    and deleted; ``other`` when type or scope changed."""

    created: frozenset[tuple[str, str]] = frozenset()
    updated: frozenset[tuple[str, str]] = frozenset()
    deleted: frozenset[tuple[str, str]] = frozenset()
    other: bool = False

    @property
    def names(self) -> frozenset[str]:
        return frozenset(a for a, _ in self.created | self.updated | self.deleted)


def instances_by_dataset(entity: Mapping[str, Any] | None) -> dict[tuple[str, str], JSONObject]:
    out: dict[tuple[str, str], JSONObject] = {}
    if entity is None:
        return out
    for name, instances in entity.get("attrs", {}).items():
        for inst in instances:
            out[(name, inst.get("datasetId", DEFAULT_DATASET))] = inst
    return out


def attribute_changes(change: Change) -> AttributeChanges:
    """What a write did to the entity's attribute instances."""
    old = instances_by_dataset(change.before)
    new = instances_by_dataset(change.after)
    updated = frozenset(k for k in old.keys() & new.keys() if old[k] != new[k])
    other = False
    if change.before is not None and change.after is not None:
        other = any(change.before.get(k) != change.after.get(k) for k in ("type", "scope"))
    return AttributeChanges(
        created=frozenset(new.keys() - old.keys()),
        updated=updated,
        deleted=frozenset(old.keys() - new.keys()),
        other=other,
    )


def relevant(sub: Subscription, pairs: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """The instances a subscription watches: its watchedAttributes and datasetIds."""
    return frozenset(
        (a, d) for a, d in pairs
        if (sub.watched is None or a in sub.watched)
        and (sub.dataset_ids is None or d in sub.dataset_ids)
    )


def trigger_reason(sub: Subscription, change: Change, changes: AttributeChanges) -> str | None:
    """The notification trigger (clause 5.8.6) this change fires for ``sub``, if any.

    Creating an entity creates its attributes and deleting one deletes them, so the
    attribute triggers fire for those too when the entity triggers are not asked for.
    """
    t = sub.triggers
    if change.created:
        if "entityCreated" in t:
            return "entityCreated"
        if t & {"attributeCreated", "entityUpdated"} and relevant(sub, changes.created):
            return "attributeCreated"
        return None
    if change.deleted:
        if "entityDeleted" in t:
            return "entityDeleted"
        if t & {"attributeDeleted", "entityUpdated"} and relevant(sub, changes.deleted):
            return "attributeDeleted"
        return None
    found = False
    for reason, pairs in (("attributeCreated", changes.created),
                          ("attributeUpdated", changes.updated),
                          ("attributeDeleted", changes.deleted)):
        if relevant(sub, pairs):
            found = True
            if reason in t:
                return reason
    if "entityUpdated" in t and (found or (changes.other and sub.watched is None)):
        return "entityUpdated"
    return None


def matches(
    sub: Subscription, change: Change, now: str, *,
    changes: AttributeChanges | None = None, linked: EntityResolver | None = None,
) -> str | None:
    """The trigger reason when ``change`` fires ``sub`` at ``now``, else None: the
    subscription is active and not periodic, the change is one it waits for, and the entity
    (as it is now, or was before its deletion) passes its selectors, q, geoQ and scopeQ.
    ``linked`` resolves the entities linked q terms reach; throttling is the caller's."""
    if sub.time_interval is not None or not sub.active_at(now):
        return None
    reason = trigger_reason(sub, change, changes or attribute_changes(change))
    if reason is None:
        return None
    entity = change.after if change.after is not None else change.before
    if entity is None or not selects(entity, sub.query, linked):
        return None
    return reason
