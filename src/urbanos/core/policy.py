"""Who may do what to which data: the one policy function every path to the data asks.

Pure: the caller (``services.access``) hands it the principal, the tenant's grants and the
stored entity; nothing here does I/O, so a decision costs no round trip and is the same on
every node.

Model (the shape Stellio's users know, ODRL-like, extended with attribute targets):

- a **Principal** is who calls: an OIDC subject or client, an API key, an anonymous
  caller, or ``OPEN`` (``URBANOS_AUTH=none``: everything is allowed, nothing is masked);
- a **Grant** gives an assignee (a subject, a claim value such as a group, any
  authenticated caller, or the public) a set of actions in one tenant, on a target (every
  entity, or entity ids / an id pattern / entity types / scopes), optionally narrowed to
  some attributes or hiding some;
- roles are bundles of actions (``ROLE_ACTIONS``); a role held by a principal through its
  token claims or its API key is a grant on every entity of the tenant;
- the creator of an entity owns it (``owner`` in the stored document): an owner may read,
  write and administer (grant and revoke on) that entity;
- ``specificAccessPolicy`` (a Property of the entity) AUTH_READ lets any authenticated
  caller read it, AUTH_WRITE read and write it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from re import Pattern
from typing import Literal

from urbanos.core.selection import compile_id_pattern
from urbanos.types import JSONObject


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    SUBSCRIBE = "subscribe"  # create and manage one's own subscriptions
    ADMIN = "admin"  # grant and revoke on the target; tenant administration on a whole tenant
    OWN = "own"  # read + write + admin of the target


class Role(StrEnum):
    READER = "reader"
    WRITER = "writer"
    SUBSCRIBER = "subscriber"
    TENANT_ADMIN = "tenantAdmin"
    PLATFORM_ADMIN = "platformAdmin"


ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = {
    Role.READER: frozenset({Action.READ}),
    Role.WRITER: frozenset({Action.READ, Action.WRITE}),
    Role.SUBSCRIBER: frozenset({Action.READ, Action.SUBSCRIBE}),
    Role.TENANT_ADMIN: frozenset(Action),
    Role.PLATFORM_ADMIN: frozenset(Action),
}

#: every tenant (a platform admin's roles, a platform-wide issuer's role claims)
ANY_TENANT = "*"

SPECIFIC_ACCESS_POLICY = "https://uri.etsi.org/ngsi-ld/default-context/specificAccessPolicy"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls. ``roles`` maps a tenant (or ``ANY_TENANT``) to the roles the caller holds
    there by its credentials; ``claims`` keeps the claim values grants can name
    (``groups`` included, each value a string)."""

    kind: Literal["open", "anonymous", "oidc", "apikey"]
    subject: str | None = None
    client: str | None = None
    issuer: str | None = None
    roles: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    claims: Mapping[str, frozenset[str]] = field(default_factory=dict)
    acr: str | None = None
    amr: tuple[str, ...] = ()

    @property
    def authenticated(self) -> bool:
        return self.kind in ("oidc", "apikey")

    @property
    def key(self) -> str:
        """A stable name for rate limits and the audit log."""
        if self.kind == "open":
            return "open"
        if self.kind == "anonymous":
            return "anonymous"
        if self.kind == "apikey":
            return f"apikey:{self.subject}"
        return f"{self.issuer}#{self.subject}"

    def roles_in(self, tenant: str) -> frozenset[Role]:
        return self.roles.get(tenant, frozenset()) | self.roles.get(ANY_TENANT, frozenset())


OPEN = Principal(kind="open")
ANONYMOUS = Principal(kind="anonymous")


@dataclass(frozen=True, slots=True)
class Assignee:
    """``subject:ID`` | ``claim:NAME=VALUE`` | ``authenticated`` | ``public``."""

    kind: Literal["subject", "claim", "authenticated", "public"]
    name: str | None = None  # the subject id, or the claim name
    value: str | None = None  # the claim value

    @classmethod
    def parse(cls, text: str) -> Assignee:
        """The string form above; ValueError on anything else."""
        if text in ("authenticated", "public"):
            return cls(text)  # type: ignore[arg-type]
        kind, _, rest = text.partition(":")
        if kind == "subject" and rest:
            return cls("subject", rest)
        if kind == "claim":
            name, eq, value = rest.partition("=")
            if name and eq and value:
                return cls("claim", name, value)
        raise ValueError(
            f"assignee {text!r}: expected subject:ID, claim:NAME=VALUE, authenticated or public"
        )

    def __str__(self) -> str:
        if self.kind == "subject":
            return f"subject:{self.name}"
        if self.kind == "claim":
            return f"claim:{self.name}={self.value}"
        return self.kind

    def covers(self, principal: Principal) -> bool:
        if self.kind == "subject":
            return principal.subject == self.name  # an API key's subject is its key id
        if self.kind == "claim":
            return self.value in principal.claims.get(self.name or "", ())
        return self.kind == "public" or principal.authenticated


@dataclass(frozen=True, slots=True)
class Target:
    """What a grant applies to: every entity when ``ids``, ``id_pattern``, ``types`` and
    ``scopes`` are all empty, else entities matching any of those given (an entity must
    match each kind that is given: ids OR pattern, AND types, AND scopes). Type and
    attribute names are expanded IRIs; a scope covers itself and its sub-scopes
    (clause 4.18). ``attributes`` (None: all) limits the grant to those attributes;
    ``hidden`` removes some."""

    ids: tuple[str, ...] = ()
    id_pattern: str | None = None
    types: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    attributes: tuple[str, ...] | None = None
    hidden: tuple[str, ...] = ()

    def covers(self, entity: JSONObject) -> bool:
        return _rule(self).covers(entity)


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    tenant: str
    assignee: Assignee
    actions: frozenset[Action]
    target: Target = Target()
    assigner: str | None = None  # principal key of who granted it

    def to_json(self) -> JSONObject:
        """The stored and admin-API form: ``{"id", "tenant", "assignee", "actions",
        "target": {"ids", "idPattern", "types", "scopes", "attributes", "hidden"},
        "assigner"}`` (empty target members left out)."""
        t = self.target
        target: JSONObject = {}
        for name, value in (("ids", list(t.ids)), ("idPattern", t.id_pattern),
                            ("types", list(t.types)), ("scopes", list(t.scopes)),
                            ("attributes", None if t.attributes is None else list(t.attributes)),
                            ("hidden", list(t.hidden))):
            if value is not None and value != []:
                target[name] = value
        doc: JSONObject = {
            "id": self.id, "tenant": self.tenant, "assignee": str(self.assignee),
            "actions": sorted(a.value for a in self.actions), "target": target,
        }
        if self.assigner is not None:
            doc["assigner"] = self.assigner
        return doc

    @classmethod
    def from_json(cls, doc: JSONObject) -> Grant:
        """The form of ``to_json`` (ValueError with a clear message on bad input).
        ``actions`` may be given as one ``action`` or as a ``role`` (its actions)."""
        if not isinstance(doc, dict):
            raise ValueError("a grant is a JSON object")
        unknown = set(doc) - {"id", "tenant", "assignee", "actions", "action", "role",
                              "target", "assigner"}
        if unknown:
            raise ValueError(f"unknown grant member(s): {', '.join(sorted(unknown))}")
        gid, tenant, assignee = doc.get("id"), doc.get("tenant", ""), doc.get("assignee")
        if not isinstance(gid, str) or not gid:
            raise ValueError("grant id: a non-empty string is required")
        if not isinstance(tenant, str):
            raise ValueError("grant tenant: a string is required")
        if not isinstance(assignee, str):
            raise ValueError("grant assignee: a string is required")
        actions = _actions_of(doc)
        target = _target_of(doc.get("target", {}))
        assigner = doc.get("assigner")
        if assigner is not None and not isinstance(assigner, str):
            raise ValueError("grant assigner: a string is required")
        return cls(gid, tenant, Assignee.parse(assignee), actions, target, assigner)


def _actions_of(doc: JSONObject) -> frozenset[Action]:
    given = [k for k in ("actions", "action", "role") if k in doc]
    if len(given) != 1:
        raise ValueError("a grant needs exactly one of actions, action or role")
    value = doc[given[0]]
    try:
        if given[0] == "role":
            return ROLE_ACTIONS[Role(value)]
        names = value if given[0] == "actions" else [value]
        if not isinstance(names, list) or not names:
            raise ValueError
        return frozenset(Action(n) for n in names)
    except (ValueError, TypeError, KeyError):
        choices = [r.value for r in Role] if given[0] == "role" else [a.value for a in Action]
        raise ValueError(f"grant {given[0]} {value!r}: expected {' | '.join(choices)}") from None


def _strings(target: JSONObject, name: str) -> tuple[str, ...]:
    value = target.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"grant target {name}: a list of non-empty strings is required")
    return tuple(value)


def _target_of(target: object) -> Target:
    if not isinstance(target, dict):
        raise ValueError("grant target: a JSON object is required")
    unknown = set(target) - {"ids", "idPattern", "types", "scopes", "attributes", "hidden"}
    if unknown:
        raise ValueError(f"unknown grant target member(s): {', '.join(sorted(unknown))}")
    pattern = target.get("idPattern")
    if pattern is not None and (not isinstance(pattern, str) or not pattern):
        raise ValueError("grant target idPattern: a non-empty string is required")
    return Target(
        ids=_strings(target, "ids"), id_pattern=pattern, types=_strings(target, "types"),
        scopes=_strings(target, "scopes"),
        attributes=_strings(target, "attributes") if "attributes" in target else None,
        hidden=_strings(target, "hidden"),
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed``: the action may happen. ``visible``: the caller may know the entity
    exists (a denied write on a visible entity is 403; on an invisible one 404).
    ``hidden``: attribute IRIs removed from what the caller reads; for a write, those of
    the entity it may not touch, or, when it is denied for touching some, exactly those."""

    allowed: bool
    visible: bool
    hidden: frozenset[str] = frozenset()


_OWNER_ACTIONS = frozenset({Action.READ, Action.WRITE, Action.ADMIN, Action.OWN})
#: specificAccessPolicy value -> what it lets any authenticated caller do
_POLICY_ACTIONS: Mapping[str, frozenset[Action]] = {
    "AUTH_READ": frozenset({Action.READ}), "AUTH_WRITE": frozenset({Action.READ, Action.WRITE}),
}


def _implied(actions: frozenset[Action]) -> frozenset[Action]:
    """OWN includes read, write and admin; nothing else implies another action."""
    return actions | _OWNER_ACTIONS if Action.OWN in actions else actions


def _role_actions(principal: Principal, tenant: str) -> frozenset[Action]:
    return _actions_of_roles(principal.roles_in(tenant))


@lru_cache(maxsize=64)
def _actions_of_roles(roles: frozenset[Role]) -> frozenset[Action]:
    """Memoised: asked on every request, and there are few sets of roles."""
    return _implied(frozenset().union(*(ROLE_ACTIONS[r] for r in roles)))


def _policies(entity: JSONObject) -> set[str]:
    """The entity's specificAccessPolicy values."""
    instances = (entity.get("attrs") or {}).get(SPECIFIC_ACCESS_POLICY, ())
    return {v for i in instances if isinstance(i, dict) and isinstance(v := i.get("value"), str)}


@dataclass(frozen=True, slots=True)
class _Rule:
    """A target compiled for the tight loop of ``View.show``: sets and one regex."""

    ids: frozenset[str] = frozenset()
    pattern: Pattern[str] | None = None
    types: frozenset[str] = frozenset()
    scopes: tuple[str, ...] = ()  # each ending with "/", to test sub-scopes by prefix
    attributes: frozenset[str] | None = None
    hidden: frozenset[str] = frozenset()

    def covers(self, entity: JSONObject) -> bool:
        if (self.ids or self.pattern) and entity["id"] not in self.ids and (
                self.pattern is None or not self.pattern.search(entity["id"])):
            return False
        if self.types and self.types.isdisjoint(entity.get("type") or ()):
            return False
        # "/a" covers "/a" and "/a/b", never "/ab"
        return not self.scopes or any((s + "/").startswith(p) for s in entity.get("scope") or ()
                                      for p in self.scopes)

    def admits(self, attribute: str) -> bool:
        return (self.attributes is None or attribute in self.attributes) and (
            attribute not in self.hidden)


#: roles, ownership and specificAccessPolicy: every attribute of the entities they apply to
_EVERYTHING = _Rule()


@lru_cache(maxsize=1024)
def _rule(t: Target) -> _Rule:
    return _Rule(
        frozenset(t.ids), None if t.id_pattern is None else compile_id_pattern(t.id_pattern),
        frozenset(t.types), tuple(s.rstrip("/") + "/" for s in t.scopes),
        None if t.attributes is None else frozenset(t.attributes), frozenset(t.hidden))


def _applicable(principal: Principal, action: Action, tenant: str,
                grants: Sequence[Grant]) -> list[_Rule]:
    """The rules of the grants that give ``principal`` ``action`` in ``tenant``."""
    return [_rule(g.target) for g in grants if g.tenant == tenant
            and action in _implied(g.actions) and g.assignee.covers(principal)]


def _sources(principal: Principal, action: Action, tenant: str, entity: JSONObject | None,
             grants: Sequence[Grant]) -> list[_Rule]:
    """The rules allowing ``action`` on ``entity`` (None: on the tenant as a whole, which
    only a grant with no ids, pattern, types or scopes gives)."""
    if action in _role_actions(principal, tenant) or (
            entity is not None and principal.authenticated
            and ((action in _OWNER_ACTIONS and entity.get("owner") == principal.key)
                 or any(action in _POLICY_ACTIONS.get(v, ()) for v in _policies(entity)))):
        return [_EVERYTHING]
    return [r for r in _applicable(principal, action, tenant, grants)
            if (r.covers(entity) if entity is not None else not (r.ids or r.pattern
                                                                 or r.types or r.scopes))]


def _uncovered(names: Iterable[str], rules: list[_Rule]) -> frozenset[str]:
    return frozenset(a for a in names if not any(r.admits(a) for r in rules))


def decide(
    principal: Principal,
    action: Action,
    tenant: str,
    entity: JSONObject | None,
    grants: Sequence[Grant],
    *,
    attributes: Iterable[str] = (),
) -> Decision:
    """Whether ``principal`` may do ``action`` on ``entity`` (stored form: ``id``, ``type``
    list, ``scope``, ``attrs``, ``owner``) in ``tenant``. ``entity`` None asks about the
    tenant as a whole (e.g. may this caller create subscriptions, administer the
    tenant). A write touching ``attributes`` is denied when one of them is hidden from it;
    other actions ignore ``attributes`` (a read hides, it does not refuse)."""
    if principal.kind == "open":
        return Decision(True, True)
    rules = _sources(principal, action, tenant, entity, grants)
    refused = _uncovered(attributes, rules) if rules and action is Action.WRITE else frozenset()
    allowed = bool(rules) and not refused
    hidden = refused or (_uncovered((entity or {}).get("attrs") or (), rules) if allowed
                         else frozenset())
    visible = allowed if action is Action.READ or entity is None else bool(
        _sources(principal, Action.READ, tenant, entity, grants))
    return Decision(allowed, visible, hidden)


@dataclass(frozen=True, slots=True)
class View:
    """What one principal may read in one tenant, compiled once per request.

    ``show`` returns the entity with the attributes hidden from the caller removed, or None
    when the caller may not see it at all. Queries use it before matching, counting and
    paging, so nothing invisible is counted and no hidden attribute can be tested by q.
    """

    unrestricted: bool
    #: entity types outside which nothing is visible (None: no such bound; empty: nothing
    #: is visible at all), for SQL narrowing
    types: frozenset[str] | None = None
    owner: str | None = None  #: the caller's key when owning an entity gives the action
    policies: frozenset[str] = frozenset()  #: specificAccessPolicy values giving the action
    rules: tuple[_Rule, ...] = ()  #: the caller's grants for the action, compiled

    def show(self, entity: JSONObject) -> JSONObject | None:
        if self.unrestricted or (self.owner is not None and entity.get("owner") == self.owner):
            return entity
        if self.policies and not self.policies.isdisjoint(_policies(entity)):
            return entity
        matching = []
        for rule in self.rules:
            if rule.covers(entity):
                if rule.attributes is None and not rule.hidden:
                    return entity
                matching.append(rule)
        if not matching:
            return None
        attrs = entity["attrs"]
        hidden = _uncovered(attrs, matching)
        if not hidden:
            return entity
        return {**entity, "attrs": {k: v for k, v in attrs.items() if k not in hidden}}


UNRESTRICTED = View(unrestricted=True)


def view(principal: Principal, tenant: str, grants: Sequence[Grant],
         action: Action = Action.READ) -> View:
    """The View of ``principal`` in ``tenant``: ``UNRESTRICTED`` for ``OPEN``, for the
    holders of a role giving ``action`` (roles cover every entity and attribute) and for
    the assignees of a grant on the whole tenant that hides nothing (open data)."""
    if principal.kind == "open" or action in _role_actions(principal, tenant):
        return UNRESTRICTED
    rules = tuple(dict.fromkeys(_applicable(principal, action, tenant, grants)))
    if _EVERYTHING in rules:
        return UNRESTRICTED
    owner = principal.key if principal.authenticated and action in _OWNER_ACTIONS else None
    policies = frozenset(v for v, acts in _POLICY_ACTIONS.items()
                         if action in acts and principal.authenticated)
    types = None
    if owner is None and not policies and all(r.types for r in rules):
        types = frozenset().union(*(r.types for r in rules))
    return View(False, types, owner, policies, rules)
