"""The administration API under /urbanos/v1 (not NGSI-LD): grants, API keys, identity
providers, the audit log, tenants, and who the caller is.

Plain JSON in and out; errors are ProblemDetails. Every decision is the access service's:
these handlers read the request, call it with the caller's principal (put in the ASGI scope
by the authentication middleware; none there means authentication is off, ``OPEN``) and
the tenant of the NGSILD-Tenant header, and render what it returns.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.grant_input import grant_from_input
from urbanos.core.policy import ANY_TENANT, OPEN, Principal, Role
from urbanos.core.timeutil import normalize_datetime
from urbanos.errors import BadRequestData, NgsiLdError
from urbanos.http.context import services
from urbanos.http.negotiation import (
    JSON_MT,
    echo_tenant,
    parse_link_context,
    read_body,
    tenant_from,
)
from urbanos.http.params import check_params, flag, uri_in_path
from urbanos.http.respond import empty
from urbanos.services.access import (
    AccessService,
    ApiKey,
    AuditFilter,
    AuditRecord,
    Issuer,
    new_grant_id,
)
from urbanos.types import JSONObject

BASE = "/urbanos/v1"
MAX_AUDIT_LIMIT = 1000
OUTCOMES = ("ok", "denied", "failed")


# -- the request ---------------------------------------------------------------------
def _access(request: Request) -> AccessService:
    access: AccessService | None = getattr(services(request), "access", None)
    if access is None:
        raise NgsiLdError("access control is not configured on this broker")
    return access


def _principal(request: Request) -> Principal:
    principal: Principal = request.scope.get("principal", OPEN)
    return principal


def _tenant(request: Request) -> str:
    return tenant_from(request.headers.get("ngsild-tenant"))


def _request_id(request: Request) -> str | None:
    """The request id the app assigned (or the client sent), for the audit log."""
    rid = request.scope.get("request_id") or request.headers.get("x-request-id")
    return rid[:200] if isinstance(rid, str) and rid else None


async def _object(request: Request) -> JSONObject:
    s = services(request).settings
    body, _ = await read_body(request, s.max_body_bytes, s.max_json_depth)
    if not isinstance(body, dict):
        raise BadRequestData("the request body must be a JSON object")
    return body


def _json(request: Request, data: Any, status: int = 200,
          headers: dict[str, str] | None = None) -> Response:
    out = dict(headers or {})
    tenant = echo_tenant(request)
    if tenant:
        out["NGSILD-Tenant"] = tenant
    return Response(orjson.dumps(data), status_code=status, media_type=JSON_MT, headers=out)


def _string(body: JSONObject, name: str) -> str | None:
    """An optional string member (null: absent)."""
    return None if body.get(name) is None else _required(body, name)


def _required(body: JSONObject, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequestData(f"{name}: a non-empty string is required")
    return value


def _other_tenant(params: QueryParams, default: str) -> str:
    """The ``tenant`` query parameter (``*``: the platform), else the header's tenant."""
    raw = params.get("tenant")
    if raw is None:
        return default
    return ANY_TENANT if raw == ANY_TENANT else tenant_from(raw)


# -- grants --------------------------------------------------------------------------
async def list_grants(request: Request) -> Response:
    """List the tenant's grants (admins: all; others: those they gave or may revoke).

    Filters: ``entityId`` (grants naming that entity id), ``assignee`` (its string form).
    """
    params = request.query_params
    check_params(params, {"entityId", "assignee"})
    tenant = _tenant(request)
    grants = await _access(request).list_grants(_principal(request), tenant)
    entity_id, assignee = params.get("entityId"), params.get("assignee")
    return _json(request, [
        g.to_json() for g in grants
        if (entity_id is None or entity_id in g.target.ids)
        and (assignee is None or str(g.assignee) == assignee)
    ])


async def create_grant(request: Request) -> Response:
    """Add a grant (201 with the stored grant; its id is made when none is given).

    Body: ``{"id"?, "assignee", "actions" | "action" | "role", "target"?}``; the tenant is
    the NGSILD-Tenant header's. Needs tenant administration, or, for a target that is
    exactly a list of entity ids, admin or own on each of them (an owner shares).
    """
    check_params(request.query_params, set())
    tenant = _tenant(request)
    body = await _object(request)
    context = parse_link_context(request.headers.get("link"))
    terms = await services(request).contexts.term_map(context, tenant=tenant)
    grant = grant_from_input(body, tenant, terms.expand, new_grant_id)
    stored = await _access(request).add_grant(_principal(request), grant,
                                              request_id=_request_id(request))
    return _json(request, stored.to_json(), 201,
                 {"Location": f"{BASE}/grants/{stored.id}"})


async def get_grant(request: Request) -> Response:
    """Retrieve one grant (404 when the caller may not see it)."""
    check_params(request.query_params, set())
    grant_id = uri_in_path(request, "grant_id", "grant")
    grant = await _access(request).get_grant(_principal(request), _tenant(request), grant_id)
    return _json(request, grant.to_json())


async def delete_grant(request: Request) -> Response:
    """Revoke a grant (204): its rights end on every node at once."""
    check_params(request.query_params, set())
    grant_id = uri_in_path(request, "grant_id", "grant")
    await _access(request).delete_grant(_principal(request), _tenant(request), grant_id,
                                        request_id=_request_id(request))
    return empty(204)


# -- API keys ------------------------------------------------------------------------
def _key_json(key: ApiKey) -> JSONObject:
    return {
        "id": key.id, "tenant": key.tenant, "role": key.role.value, "name": key.name,
        "createdAt": key.created_at, "expiresAt": key.expires_at, "revokedAt": key.revoked_at,
        "lastUsedAt": key.last_used_at, "createdBy": key.created_by,
    }


async def list_keys(request: Request) -> Response:
    """List API keys without their secrets (the tenant's; ``tenant`` picks another one,
    ``*`` the platform's; ``allTenants=true`` every tenant's, for platform admins)."""
    params = request.query_params
    check_params(params, {"tenant", "allTenants"})
    every = flag(params, "allTenants", error=BadRequestData)
    tenant = None if every else _other_tenant(params, _tenant(request))
    keys = await _access(request).list_keys(_principal(request), tenant)
    return _json(request, [_key_json(k) for k in keys])


async def create_key(request: Request) -> Response:
    """Create an API key (201): the token in the answer is shown this once, never again.

    Body: ``{"name", "role", "expiresAt"?, "tenant"?}``; the tenant defaults to the
    NGSILD-Tenant header's (``*``: a key of the platform, made by platform admins only).
    """
    check_params(request.query_params, set())
    body = await _object(request)
    unknown = set(body) - {"name", "role", "expiresAt", "tenant"}
    if unknown:
        raise BadRequestData(f"unknown API key member(s): {', '.join(sorted(unknown))}")
    name = _required(body, "name")
    role_name = _required(body, "role")
    try:
        role = Role(role_name)
    except ValueError:
        raise BadRequestData(
            f"role {role_name!r}: expected {' | '.join(r.value for r in Role)}"
        ) from None
    tenant = _tenant(request)
    raw_tenant = body.get("tenant")
    if raw_tenant is not None:
        if not isinstance(raw_tenant, str):
            raise BadRequestData("tenant: a string is required")
        tenant = ANY_TENANT if raw_tenant == ANY_TENANT else tenant_from(raw_tenant)
    key, token = await _access(request).create_key(
        _principal(request), tenant, role, name, _string(body, "expiresAt"),
        request_id=_request_id(request),
    )
    return _json(request, _key_json(key) | {"token": token}, 201,
                 {"Location": f"{BASE}/keys/{key.id}", "Cache-Control": "no-store"})


async def revoke_key(request: Request) -> Response:
    """Revoke an API key (204): it stops working at once (on other processes sharing the
    store within seconds)."""
    check_params(request.query_params, set())
    await _access(request).revoke_key(_principal(request), request.path_params["key_id"],
                                      request_id=_request_id(request))
    return empty(204)


# -- identity providers --------------------------------------------------------------
def _issuer_json(issuer: Issuer) -> JSONObject:
    return {"tenant": issuer.tenant, "url": issuer.url, "audience": issuer.audience,
            "claims": issuer.claims}


def _issuer_url(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise BadRequestData("url: the issuer URL (a string) is required")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadRequestData(f"url {value!r}: an http(s) URL of the issuer is required")
    if parts.query or parts.fragment:
        raise BadRequestData(f"url {value!r}: an issuer URL has no query or fragment")
    return value


async def list_issuers(request: Request) -> Response:
    """List the OpenID Connect issuers trusted in the tenant (with the platform's);
    ``tenant`` picks another tenant, ``allTenants=true`` lists every one (platform admins)."""
    params = request.query_params
    check_params(params, {"tenant", "allTenants"})
    every = flag(params, "allTenants", error=BadRequestData)
    tenant = None if every else _other_tenant(params, _tenant(request))
    issuers = await _access(request).issuers(_principal(request), tenant)
    return _json(request, [_issuer_json(i) for i in issuers])


async def add_issuer(request: Request) -> Response:
    """Trust an OpenID Connect issuer in the tenant (201), at once, without a restart.

    Body: ``{"url", "audience"?, "claims"?, "tenant"?}``; ``tenant`` ``*`` makes it the
    platform's (valid in every tenant; platform admins only).
    """
    check_params(request.query_params, set())
    body = await _object(request)
    unknown = set(body) - {"url", "audience", "claims", "tenant"}
    if unknown:
        raise BadRequestData(f"unknown issuer member(s): {', '.join(sorted(unknown))}")
    claims = body.get("claims", {})
    if not isinstance(claims, dict):
        raise BadRequestData("claims: a JSON object (the claim mapping) is required")
    raw_tenant = body.get("tenant")
    if raw_tenant is not None and not isinstance(raw_tenant, str):
        raise BadRequestData("tenant: a string is required")
    tenant = _other_tenant(QueryParams({"tenant": raw_tenant} if raw_tenant is not None
                                       else {}), _tenant(request))
    issuer = Issuer(tenant=tenant, url=_issuer_url(body.get("url")),
                    audience=_string(body, "audience"), claims=claims)
    await _access(request).put_issuer(_principal(request), issuer,
                                      request_id=_request_id(request))
    return _json(request, _issuer_json(issuer), 201)


async def delete_issuer(request: Request) -> Response:
    """Stop trusting an issuer (204): query parameters ``url`` and ``tenant`` (default the
    header's; ``*``: the platform's)."""
    params = request.query_params
    check_params(params, {"url", "tenant"})
    tenant = _other_tenant(params, _tenant(request))
    await _access(request).delete_issuer(_principal(request), tenant,
                                         _issuer_url(params.get("url")),
                                         request_id=_request_id(request))
    return empty(204)


# -- audit log -----------------------------------------------------------------------
def _record_json(record: AuditRecord) -> JSONObject:
    return {
        "seq": record.seq, "time": record.time, "principal": record.principal,
        "client": record.client, "tenant": record.tenant, "operation": record.operation,
        "entityIds": list(record.entity_ids), "outcome": record.outcome,
        "status": record.status, "requestId": record.request_id, "detail": record.detail,
    }


def _int(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestData(f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise BadRequestData(f"{name} must be between {low} and {high}, not {value}")
    return value


def _time(params: QueryParams, name: str) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    canonical = normalize_datetime(raw)
    if canonical is None:
        raise BadRequestData(f"{name} must be a date-time, not {raw!r}")
    return canonical


async def query_audit(request: Request) -> Response:
    """Query the audit log, newest first: ``principal``, ``operation``, ``outcome``,
    ``entityId``, ``since``, ``until`` (date-times), ``limit`` (at most 1000), ``offset``.

    Tenant admins read their tenant's records; platform admins may name another tenant
    with ``tenant`` (``*``: every tenant).
    """
    params = request.query_params
    check_params(params, {"principal", "operation", "outcome", "entityId", "since", "until",
                          "limit", "offset", "tenant"})
    outcome = params.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequestData(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    where = AuditFilter(
        principal=params.get("principal"), operation=params.get("operation"), outcome=outcome,
        entity_id=params.get("entityId"), since=_time(params, "since"),
        until=_time(params, "until"),
        limit=_int(params, "limit", 100, 1, MAX_AUDIT_LIMIT),
        offset=_int(params, "offset", 0, 0, 2**31),
    )
    access, principal = _access(request), _principal(request)
    if "tenant" in params:  # another tenant's records, or every tenant's: the platform's
        await access.require_admin(principal, ANY_TENANT, operation="audit.query",
                                   request_id=_request_id(request))
        tenant = _other_tenant(params, "")
        where = replace(where, tenant=None if tenant == ANY_TENANT else tenant)
    else:
        tenant = _tenant(request)
        await access.require_admin(principal, tenant, operation="audit.query",
                                   request_id=_request_id(request))
        where = replace(where, tenant=tenant)
    records = await access.audit(where)
    return _json(request, [_record_json(r) for r in records])


# -- tenants and the caller ----------------------------------------------------------
async def list_tenants(request: Request) -> Response:
    """List the tenants the platform knows (platform admins)."""
    check_params(request.query_params, set())
    tenants = await _access(request).tenants(_principal(request))
    return _json(request, tenants)


async def me(request: Request) -> Response:
    """Who the caller is, as the broker sees it: kind, subject, client, issuer, roles per
    tenant, groups and other claims (for debugging single sign-on)."""
    check_params(request.query_params, set())
    p = _principal(request)
    tenant = _tenant(request)
    return _json(request, {
        "kind": p.kind, "key": p.key, "authenticated": p.authenticated,
        "subject": p.subject, "client": p.client, "issuer": p.issuer,
        "roles": {t: sorted(r.value for r in roles) for t, roles in sorted(p.roles.items())},
        "rolesInTenant": sorted(r.value for r in p.roles_in(tenant)),
        "groups": sorted(p.claims.get("groups", frozenset())),
        "claims": {name: sorted(values) for name, values in sorted(p.claims.items())},
        "acr": p.acr, "amr": list(p.amr),
    })
