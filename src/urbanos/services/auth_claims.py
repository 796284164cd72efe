"""Which claims of a verified access token say who the caller is and what it may do.

The mapping is JSON (``URBANOS_OIDC_CLAIMS`` for every issuer, ``Issuer.claims`` on top of
it for one issuer); each member names a claim, and a dotted name such as
``realm_access.roles`` walks into nested objects (a claim whose own name contains dots,
e.g. a namespaced ``https://city.example/roles``, is found first). Defaults:

- ``subject``: ``"sub"``; the principal's subject;
- ``client``: ``["azp", "client_id"]``; the first one present names the client;
- ``roles``: ``"roles"`` (a string or a list); Keycloak: ``"realm_access.roles"``. Values
  that are role names (``reader``, ``writer``, ``subscriber``, ``tenantAdmin``,
  ``platformAdmin``) are roles in every tenant the issuer is trusted in; ``TENANT:role``
  is a role in TENANT only; other values are ignored;
- ``tenantRoles``: ``"urbanos_tenants"``: an object, tenant -> role or list of roles;
- ``groups``: ``"groups"``;
- ``keep``: ``[]``: further string or list-of-string claims grants may name.

``Principal.claims`` holds ``groups``, ``roles`` (the raw values) and ``scope`` (the
``scope`` claim split on spaces), plus each ``keep`` claim under the name written there;
a grant's ``claim:groups=/city/traffic`` matches them. A tenant's issuer gives roles in
its tenant only, whatever its tokens say about other tenants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from urbanos.core.policy import ANY_TENANT, Role

_ROLES = {r.value: r for r in Role}
_MEMBERS = ("subject", "client", "roles", "tenantRoles", "groups", "keep")


@dataclass(frozen=True, slots=True)
class ClaimMap:
    subject: str = "sub"
    client: tuple[str, ...] = ("azp", "client_id")
    roles: tuple[str, ...] = ("roles",)
    tenant_roles: str = "urbanos_tenants"
    groups: str = "groups"
    keep: tuple[str, ...] = ()

    @classmethod
    def parse(cls, mapping: str | Mapping[str, Any], base: ClaimMap | None = None) -> ClaimMap:
        """The mapping (JSON text or object) over ``base`` (the defaults); ValueError with
        a clear message on anything else."""
        if isinstance(mapping, str):
            if not mapping.strip():
                return base or cls()
            try:
                mapping = orjson.loads(mapping)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"claim mapping: not JSON ({exc})") from None
        if not isinstance(mapping, Mapping):
            raise ValueError("claim mapping: a JSON object is required")
        unknown = set(mapping) - set(_MEMBERS)
        if unknown:
            raise ValueError(f"claim mapping: unknown member(s) {', '.join(sorted(unknown))}; "
                             f"expected {', '.join(_MEMBERS)}")
        base = base or cls()

        def one(name: str, default: str) -> str:
            value = mapping.get(name, default)
            if not isinstance(value, str) or not value:
                raise ValueError(f"claim mapping {name}: a claim name is required")
            return value

        def many(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = mapping.get(name, list(default))
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"claim mapping {name}: a claim name or a list of them")
            return tuple(value)

        return cls(
            subject=one("subject", base.subject), client=many("client", base.client),
            roles=many("roles", base.roles), tenant_roles=one("tenantRoles", base.tenant_roles),
            groups=one("groups", base.groups), keep=many("keep", base.keep),
        )

    def roles_of(self, payload: Mapping[str, Any], tenant: str) -> dict[str, frozenset[Role]]:
        """Roles by tenant from the token: ``tenant`` is the one the issuer is trusted in
        (``ANY_TENANT`` for a platform issuer, whose tokens may name any tenant)."""
        found: dict[str, set[Role]] = {}

        def add(where: str, name: object) -> None:
            role = _ROLES.get(name) if isinstance(name, str) else None
            if role is not None and (tenant == ANY_TENANT or where == tenant):
                found.setdefault(where, set()).add(role)

        for path in self.roles:
            for value in strings(claim(payload, path)):
                where, colon, name = value.rpartition(":")
                add(where if colon else tenant, name)
        per_tenant = claim(payload, self.tenant_roles)
        if isinstance(per_tenant, Mapping):
            for where, names in per_tenant.items():
                if isinstance(where, str) and where:
                    for name in strings(names):
                        add(where, name)
        return {t: frozenset(r) for t, r in found.items()}

    def claims_of(self, payload: Mapping[str, Any]) -> dict[str, frozenset[str]]:
        """The claim values grants can name (see the module docstring)."""
        kept: dict[str, frozenset[str]] = {
            "groups": frozenset(strings(claim(payload, self.groups))),
            "roles": frozenset(v for p in self.roles for v in strings(claim(payload, p))),
        }
        scope = payload.get("scope")
        kept["scope"] = frozenset(
            scope.split() if isinstance(scope, str) else strings(scope))
        for name in self.keep:
            kept[name] = frozenset(strings(claim(payload, name)))
        return {k: v for k, v in kept.items() if v}

    def client_of(self, payload: Mapping[str, Any]) -> str | None:
        for path in self.client:
            value = claim(payload, path)
            if isinstance(value, str) and value:
                return value
        return None


def claim(payload: Mapping[str, Any], path: str) -> Any:
    """The claim ``path`` names: a top-level claim of that exact name, else a dotted walk."""
    if path in payload:
        return payload[path]
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def strings(value: object) -> list[str]:
    """A string claim or the strings of a list claim (anything else: none)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []
