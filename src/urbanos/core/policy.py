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
from typing import Literal

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
        raise NotImplementedError

    def __str__(self) -> str:
        raise NotImplementedError

    def covers(self, principal: Principal) -> bool:
        raise NotImplementedError


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
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    tenant: str
    assignee: Assignee
    actions: frozenset[Action]
    target: Target = Target()
    assigner: str | None = None  # principal key of who granted it

    def to_json(self) -> JSONObject:
        raise NotImplementedError

    @classmethod
    def from_json(cls, doc: JSONObject) -> Grant:
        """The admin API's form (ValueError with a clear message on bad input)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed``: the action may happen. ``visible``: the caller may know the entity
    exists (a denied write on a visible entity is 403; on an invisible one 404).
    ``hidden``: attribute IRIs removed from what the caller reads or refused in a write."""

    allowed: bool
    visible: bool
    hidden: frozenset[str] = frozenset()


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
    tenant). A write touching ``attributes`` is denied when one of them is hidden from it."""
    raise NotImplementedError


@dataclass(frozen=True, slots=True)
class View:
    """What one principal may read in one tenant, compiled once per request.

    ``show`` returns the entity with the attributes hidden from the caller removed, or None
    when the caller may not see it at all. Queries use it before matching, counting and
    paging, so nothing invisible is counted and no hidden attribute can be tested by q.
    """

    unrestricted: bool
    #: entity types outside which nothing is visible (None: no such bound), for SQL narrowing
    types: frozenset[str] | None = None

    def show(self, entity: JSONObject) -> JSONObject | None:
        raise NotImplementedError


UNRESTRICTED = View(unrestricted=True)


def view(principal: Principal, tenant: str, grants: Sequence[Grant],
         action: Action = Action.READ) -> View:
    """The View of ``principal`` in ``tenant`` (``UNRESTRICTED`` for ``OPEN`` and admins)."""
    raise NotImplementedError
