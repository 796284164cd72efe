"""The administration API under /urbanos/v1 over HTTP, on every store: grants, API keys,
issuers, the audit log, tenants and /me, with the callers' permissions (401 for the
anonymous, 403 for the authenticated, 404 for what they may not see), ProblemDetails for
bad input, and the routes in /openapi.json."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import _lifespan
from urbanos.core.policy import ANONYMOUS, ANY_TENANT, Principal, Role
from urbanos.errors import NgsiLdError, Unauthorized
from urbanos.http.admin_routes import ADMIN_ROUTES
from urbanos.http.app import PathNormalizer, create_app
from urbanos.http.endpoints import ops
from urbanos.http.problems import handle_http_error, handle_ngsi_error, handle_unexpected
from urbanos.services.access import AccessService
from urbanos.services.stores import Stores, open_stores
from urbanos.settings import Settings
from urbanos.storage.base import Write

CITY = "city"
LAMP = "https://uri.etsi.org/ngsi-ld/default-context/Lamp"
SPEED = "https://uri.etsi.org/ngsi-ld/default-context/speed"
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
IDP = "https://idp.example"


def oidc(subject: str, roles: dict[str, set[Role]] | None = None,
         groups: tuple[str, ...] = ()) -> Principal:
    return Principal(kind="oidc", subject=subject, client="portal", issuer=IDP,
                     roles={t: frozenset(r) for t, r in (roles or {}).items()},
                     claims={"groups": frozenset(groups)} if groups else {},
                     acr="urn:acr:mfa", amr=("pwd", "otp"))


#: the callers of the tests, named by the ``x-as`` header (none: authentication off)
CALLERS: dict[str, Principal] = {
    "anonymous": ANONYMOUS,
    "root": oidc("root", {ANY_TENANT: {Role.PLATFORM_ADMIN}}),
    "admin": oidc("admin", {CITY: {Role.TENANT_ADMIN}}),
    "reader": oidc("reader", {CITY: {Role.READER}}, groups=("parks", "night")),
    "alice": oidc("alice"),
    "bob": oidc("bob"),
    "other-admin": oidc("oadmin", {"other": {Role.TENANT_ADMIN}}),
}


class As:
    """Stands in for the authentication middleware: the principal the ``x-as`` header
    names goes into the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            who = dict(scope["headers"]).get(b"x-as")
            if who is not None:
                scope = dict(scope) | {"principal": CALLERS[who.decode()]}
        await self.app(scope, receive, send)


def _starlette(app: Any) -> Starlette:
    while not isinstance(app, Starlette):
        app = app.app
    return app


class Admin:
    """The broker with the admin routes beside its own (until the app's route table has
    them): /urbanos/... to a Starlette app of ADMIN_ROUTES sharing the broker's services."""

    def __init__(self, broker: ASGIApp) -> None:
        self.broker = broker
        self.admin = Starlette(
            routes=[*ADMIN_ROUTES, Route("/openapi.json", ops.openapi, methods=["GET"])],
            exception_handlers={NgsiLdError: handle_ngsi_error,
                                HTTPException: handle_http_error,
                                Exception: handle_unexpected},
        )
        self.app = PathNormalizer(As(self._route))

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"].startswith("/urbanos/")
                                        or scope["path"] == "/openapi.json"):
            await self.admin(scope, receive, send)
        else:
            await self.broker(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class WithAccess:
    """The broker's services plus ``access`` (until ``Services`` has it)."""

    def __init__(self, services: Any, access: AccessService) -> None:
        self._services, self.access = services, access

    def __getattr__(self, name: str) -> Any:
        return getattr(self._services, name)


class Env:
    def __init__(self, http: httpx.AsyncClient, stores: Stores, access: AccessService) -> None:
        self.http, self.stores, self.access = http, stores, access

    async def call(self, method: str, path: str, who: str | None = None,
                   tenant: str | None = CITY, body: Any = None,
                   params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        h = dict(headers or {})
        if who is not None:
            h["x-as"] = who
        if tenant:
            h["NGSILD-Tenant"] = tenant
        content = None
        if body is not None:
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            h.setdefault("content-type", "application/json")
        return await self.http.request(method, "/urbanos/v1" + path, content=content,
                                       headers=h, params=params)


@pytest.fixture
async def env(store_url: str) -> AsyncIterator[Env]:
    settings = Settings(store=store_url, max_body_bytes=65536)
    stores = open_stores(store_url)
    broker = create_app(settings, stores=stores)
    app = Admin(broker)
    async with _lifespan(broker):
        access = AccessService(stores.access, entity=stores.entities.get)
        app.admin.state.services = WithAccess(_starlette(broker).state.services, access)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://broker") as http:
            yield Env(http, stores, access)


def problem(response: httpx.Response, status: int, kind: str, says: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == ERRORS + kind and body["status"] == status
    assert says in body["detail"], body["detail"]


# -- /me -------------------------------------------------------------------------------
async def test_me_shows_the_caller(env: Env) -> None:
    me = await env.call("GET", "/me", "reader")
    assert me.status_code == 200 and me.headers["NGSILD-Tenant"] == CITY
    assert me.json() == {
        "kind": "oidc", "key": f"{IDP}#reader", "authenticated": True, "subject": "reader",
        "client": "portal", "issuer": IDP, "roles": {CITY: ["reader"]},
        "rolesInTenant": ["reader"], "groups": ["night", "parks"],
        "claims": {"groups": ["night", "parks"]}, "acr": "urn:acr:mfa", "amr": ["pwd", "otp"],
    }
    root = (await env.call("GET", "/me", "root", tenant="anywhere")).json()
    assert root["rolesInTenant"] == ["platformAdmin"] and root["roles"] == {"*": ["platformAdmin"]}
    anonymous = (await env.call("GET", "/me", "anonymous", tenant=None)).json()
    assert (anonymous["kind"], anonymous["authenticated"], anonymous["roles"]) == (
        "anonymous", False, {})
    assert (await env.call("GET", "/me")).json()["kind"] == "open"
    problem(await env.call("GET", "/me", tenant="bad tenant!"), 400, "BadRequestData",
            "NGSILD-Tenant")


# -- grants ----------------------------------------------------------------------------
async def test_a_tenant_admin_manages_grants(env: Env) -> None:
    created = await env.call("POST", "/grants", "admin", body={
        "assignee": "claim:groups=parks", "actions": ["read"],
        "target": {"types": ["Lamp"], "hidden": ["speed"]}})
    assert created.status_code == 201, created.text
    grant = created.json()
    gid = grant["id"]
    assert gid.startswith("urn:ngsi-ld:Permission:")
    assert created.headers["location"] == f"/urbanos/v1/grants/{gid}"
    assert grant == {"id": gid, "tenant": CITY, "assignee": "claim:groups=parks",
                     "actions": ["read"], "target": {"types": [LAMP], "hidden": [SPEED]},
                     "assigner": f"{IDP}#admin"}
    assert (await env.call("GET", f"/grants/{gid}", "admin")).json() == grant
    assert (await env.call("GET", "/grants", "admin")).json() == [grant]
    # the grant is in force at once: the cache was dropped
    view = await env.access.view(oidc("x", groups=("parks",)), CITY)
    lamp = {"id": "urn:ngsi-ld:Lamp:1", "type": [LAMP], "attrs": {SPEED: [], "on": []}}
    assert view.show(lamp) == {**lamp, "attrs": {"on": []}}

    given = await env.call("POST", "/grants", "admin", body={
        "id": "urn:ngsi-ld:Permission:night", "assignee": "subject:bob", "role": "writer",
        "target": {"ids": ["urn:ngsi-ld:Lamp:1"]}})
    assert given.status_code == 201
    assert given.json()["actions"] == ["read", "write"]
    by_entity = await env.call("GET", "/grants", "admin",
                               params={"entityId": "urn:ngsi-ld:Lamp:1"})
    assert [g["id"] for g in by_entity.json()] == ["urn:ngsi-ld:Permission:night"]
    by_assignee = await env.call("GET", "/grants", "admin", params={"assignee": "subject:bob"})
    assert [g["id"] for g in by_assignee.json()] == ["urn:ngsi-ld:Permission:night"]
    problem(await env.call("POST", "/grants", "admin", body={
        "id": "urn:ngsi-ld:Permission:night", "assignee": "public", "action": "read"}),
        409, "AlreadyExists")

    assert (await env.call("DELETE", f"/grants/{gid}", "admin")).status_code == 204
    problem(await env.call("GET", f"/grants/{gid}", "admin"), 404, "ResourceNotFound")
    problem(await env.call("DELETE", f"/grants/{gid}", "admin"), 404, "ResourceNotFound")
    # tenants are apart: the other tenant has no grants, and its admin sees none of these
    assert (await env.call("GET", "/grants", "admin", tenant="other")).json() == []
    assert (await env.call("GET", "/grants", "other-admin", tenant="other")).json() == []
    problem(await env.call("GET", "/grants/urn:ngsi-ld:Permission:night", "other-admin",
                           tenant="other"), 404, "ResourceNotFound")


@pytest.mark.parametrize(("body", "says"), [
    ([], "a JSON object"),
    ({"actions": ["read"]}, "assignee"),
    ({"assignee": "everyone", "actions": ["read"]}, "expected subject:ID"),
    ({"assignee": "public", "actions": ["peek"]}, "expected read"),
    ({"assignee": "public"}, "exactly one of actions, action or role"),
    ({"assignee": "public", "role": "mayor"}, "expected reader"),
    ({"assignee": "public", "action": "read", "colour": "red"}, "unknown grant member"),
    ({"assignee": "public", "action": "read", "target": {"idz": []}}, "unknown grant target"),
    ({"assignee": "public", "action": "read", "target": {"ids": ["not a uri"]}}, "not a URI"),
    ({"assignee": "public", "action": "read", "target": {"idPattern": "(a+)+$"}}, "idPattern"),
    ({"assignee": "public", "action": "read", "target": {"types": ["bad type!"]}},
     "entity type"),
    ({"assignee": "public", "action": "read", "target": {"scopes": ["no-slash"]}}, "scope"),
    ({"id": "nope", "assignee": "public", "action": "read"}, "must be a URI"),
    ({"tenant": "other", "assignee": "public", "action": "read"}, "differs from"),
])
async def test_bad_grants_are_400_with_a_clear_detail(env: Env, body: Any, says: str) -> None:
    problem(await env.call("POST", "/grants", "admin", body=body), 400, "BadRequestData", says)


async def test_grant_requests_need_json(env: Env) -> None:
    problem(await env.call("POST", "/grants", "admin", body=b"{nope"), 400, "InvalidRequest")
    response = await env.call("POST", "/grants", "admin", body=b"{}",
                              headers={"content-type": "text/plain"})
    assert response.status_code == 415
    problem(await env.call("GET", "/grants", "admin", params={"colour": "red"}), 400,
            "InvalidRequest", "colour")


async def test_who_may_grant(env: Env) -> None:
    body = {"assignee": "public", "action": "read"}
    problem(await env.call("POST", "/grants", "reader", body=body), 403, "AccessDenied")
    refused = await env.call("POST", "/grants", "anonymous", body=body)
    problem(refused, 401, "Unauthorized")
    assert refused.headers["www-authenticate"] == 'Bearer realm="urbanos"'
    problem(await env.call("GET", "/grants", "anonymous"), 401, "Unauthorized")
    assert (await env.call("GET", "/grants", "reader")).json() == []
    assert (await env.call("POST", "/grants", "root", body=body)).status_code == 201
    assert (await env.call("POST", "/grants", None, body=body)).status_code == 201  # auth off


async def test_an_owner_shares_its_entity(env: Env) -> None:
    for n, owner in ((1, "alice"), (2, "bob")):
        entity = {"id": f"urn:ngsi-ld:Lamp:{n}", "type": [LAMP], "attrs": {},
                  "owner": CALLERS[owner].key, "createdAt": "2030-01-01T00:00:00.000Z",
                  "modifiedAt": "2030-01-01T00:00:00.000Z"}
        await env.stores.entities.apply(CITY, [Write("put", entity["id"], entity)])
    share = {"assignee": "subject:bob", "action": "read",
             "target": {"ids": ["urn:ngsi-ld:Lamp:1"]}}
    shared = await env.call("POST", "/grants", "alice", body=share)
    assert shared.status_code == 201, shared.text
    gid = shared.json()["id"]
    problem(await env.call("POST", "/grants", "alice", body=share | {
        "target": {"ids": ["urn:ngsi-ld:Lamp:2"]}}), 403, "AccessDenied")
    problem(await env.call("POST", "/grants", "alice", body=share | {
        "target": {"types": ["Lamp"]}}), 403, "AccessDenied")
    assert [g["id"] for g in (await env.call("GET", "/grants", "alice")).json()] == [gid]
    problem(await env.call("DELETE", f"/grants/{gid}", "bob"), 404, "ResourceNotFound")
    assert (await env.call("DELETE", f"/grants/{gid}", "alice")).status_code == 204


# -- API keys --------------------------------------------------------------------------
async def test_keys_are_shown_once_listed_without_secrets_and_revoked(env: Env) -> None:
    created = await env.call("POST", "/keys", "admin", body={
        "name": "parking sensors", "role": "writer", "expiresAt": "2099-01-01T00:00:00Z"})
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key = created.json()
    token = key.pop("token")
    assert created.headers["location"] == f"/urbanos/v1/keys/{key['id']}"
    assert token.startswith(f"uk_{key['id']}.")
    assert (key["tenant"], key["role"], key["name"], key["expiresAt"], key["createdBy"]) == (
        CITY, "writer", "parking sensors", "2099-01-01T00:00:00.000Z", f"{IDP}#admin")
    assert (await env.access.verify_key(token)).role is Role.WRITER

    listed = await env.call("GET", "/keys", "admin")
    assert listed.status_code == 200
    [shown] = listed.json()
    assert shown["id"] == key["id"] and shown["lastUsedAt"] is not None  # used just now
    assert "token" not in shown and token.split(".")[1] not in listed.text
    assert "secret" not in listed.text.lower()

    assert (await env.call("DELETE", f"/keys/{key['id']}", "admin")).status_code == 204
    with pytest.raises(Unauthorized, match="revoked"):
        await env.access.verify_key(token)
    [revoked] = (await env.call("GET", "/keys", "admin")).json()
    assert revoked["revokedAt"] is not None
    problem(await env.call("DELETE", "/keys/AAAAAAAAAAAAAAAA", "admin"), 404,
            "ResourceNotFound")
    problem(await env.call("DELETE", f"/keys/{key['id']}", "other-admin", tenant="other"),
            404, "ResourceNotFound")


async def test_who_may_make_and_see_keys(env: Env) -> None:
    body = {"name": "k", "role": "reader"}
    problem(await env.call("POST", "/keys", "reader", body=body), 403, "AccessDenied")
    problem(await env.call("POST", "/keys", "anonymous", body=body), 401, "Unauthorized")
    problem(await env.call("POST", "/keys", "admin", body=body | {"tenant": "*"}), 403,
            "AccessDenied")
    problem(await env.call("POST", "/keys", "admin", body={"name": "k",
                                                         "role": "platformAdmin"}),
            403, "AccessDenied")
    platform = await env.call("POST", "/keys", "root", body=body | {"tenant": "*"})
    assert platform.status_code == 201 and platform.json()["tenant"] == "*"
    other = await env.call("POST", "/keys", "other-admin", tenant="other", body=body)
    assert other.status_code == 201
    problem(await env.call("GET", "/keys", "reader"), 403, "AccessDenied")
    problem(await env.call("GET", "/keys", "admin", params={"tenant": "other"}), 403,
            "AccessDenied")
    assert (await env.call("GET", "/keys", "admin")).json() == []
    problem(await env.call("GET", "/keys", "admin", params={"allTenants": "true"}), 403,
            "AccessDenied")
    every = await env.call("GET", "/keys", "root", params={"allTenants": "true"})
    assert sorted(k["tenant"] for k in every.json()) == ["*", "other"]
    star = await env.call("GET", "/keys", "root", params={"tenant": "*"})
    assert [k["tenant"] for k in star.json()] == ["*"]


@pytest.mark.parametrize(("body", "says"), [
    ({"role": "reader"}, "name"),
    ({"name": "k"}, "role"),
    ({"name": "k", "role": "mayor"}, "expected reader"),
    ({"name": "k", "role": "reader", "expiresAt": "tomorrow"}, "not a date-time"),
    ({"name": "k", "role": "reader", "expiresAt": "2001-01-01T00:00:00Z"}, "in the past"),
    ({"name": "k", "role": "reader", "secret": "mine"}, "unknown API key member"),
    ({"name": "k", "role": "reader", "tenant": 7}, "tenant"),
    ({"name": "k", "role": "reader", "tenant": "bad tenant!"}, "NGSILD-Tenant"),
])
async def test_bad_keys_are_400(env: Env, body: Any, says: str) -> None:
    problem(await env.call("POST", "/keys", "admin", body=body), 400, "BadRequestData", says)


# -- issuers ---------------------------------------------------------------------------
async def test_issuers_per_tenant_and_the_platform(env: Env) -> None:
    mine = {"url": "https://idp.city.example/realms/city", "audience": "urbanos",
            "claims": {"roles": "realm_access.roles"}}
    added = await env.call("POST", "/issuers", "admin", body=mine)
    assert added.status_code == 201, added.text
    assert added.json() == mine | {"tenant": CITY}
    problem(await env.call("POST", "/issuers", "admin",
                           body={"url": IDP, "tenant": "*"}), 403, "AccessDenied")
    problem(await env.call("POST", "/issuers", "reader", body=mine), 403, "AccessDenied")
    problem(await env.call("POST", "/issuers", "admin", tenant="other", body=mine), 403,
            "AccessDenied")
    assert (await env.call("POST", "/issuers", "root", body={"url": IDP, "tenant": "*"})
            ).status_code == 201
    listed = (await env.call("GET", "/issuers", "admin")).json()
    assert {(i["tenant"], i["url"]) for i in listed} == {(CITY, mine["url"]), ("*", IDP)}
    problem(await env.call("GET", "/issuers", "admin", params={"allTenants": "true"}), 403,
            "AccessDenied")
    assert len((await env.call("GET", "/issuers", "root",
                               params={"allTenants": "true"})).json()) == 2
    problem(await env.call("DELETE", "/issuers", "admin", params={"url": IDP, "tenant": "*"}),
            403, "AccessDenied")
    problem(await env.call("DELETE", "/issuers", "admin",
                           params={"url": "https://nope.example"}), 404, "ResourceNotFound")
    gone = await env.call("DELETE", "/issuers", "admin", params={"url": mine["url"]})
    assert gone.status_code == 204
    assert [i["url"] for i in (await env.call("GET", "/issuers", "admin")).json()] == [IDP]


@pytest.mark.parametrize(("body", "says"), [
    ({}, "url"),
    ({"url": "ftp://idp.example"}, "http(s) URL"),
    ({"url": "https://idp.example/?x=1"}, "no query"),
    ({"url": "https://"}, "http(s) URL"),
    ({"url": IDP, "claims": ["roles"]}, "claims"),
    ({"url": IDP, "audience": 5}, "audience"),
    ({"url": IDP, "jwks": "x"}, "unknown issuer member"),
])
async def test_bad_issuers_are_400(env: Env, body: Any, says: str) -> None:
    problem(await env.call("POST", "/issuers", "admin", body=body), 400, "BadRequestData", says)


# -- audit log and tenants -------------------------------------------------------------
async def test_the_audit_log_records_admin_operations_and_denials(env: Env) -> None:
    gid = (await env.call("POST", "/grants", "admin", body={
        "assignee": "public", "action": "read", "target": {"ids": ["urn:ngsi-ld:Lamp:1"]}},
        headers={"x-request-id": "req-1"})).json()["id"]
    await env.call("POST", "/keys", "admin", body={"name": "k", "role": "reader"})
    await env.call("POST", "/grants", "reader", body={"assignee": "public", "action": "read"})
    await env.call("DELETE", f"/grants/{gid}", "admin")
    await env.call("POST", "/keys", "other-admin", tenant="other",
                   body={"name": "k", "role": "reader"})

    log = await env.call("GET", "/audit", "admin")
    assert log.status_code == 200
    records = log.json()
    assert [(r["operation"], r["outcome"], r["status"]) for r in records] == [
        ("grant.delete", "ok", 204), ("grant.add", "denied", 403), ("key.create", "ok", 201),
        ("grant.add", "ok", 201)]
    first = records[-1]
    assert (first["principal"], first["client"], first["tenant"], first["entityIds"],
            first["requestId"]) == (f"{IDP}#admin", "portal", CITY, ["urn:ngsi-ld:Lamp:1"],
                                    "req-1")
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs, reverse=True)

    async def ops(**params: str) -> list[tuple[str, str]]:
        found = await env.call("GET", "/audit", "admin", params=params)
        assert found.status_code == 200, found.text
        return [(r["operation"], r["outcome"]) for r in found.json()]

    assert await ops(outcome="denied") == [("grant.add", "denied")]
    assert await ops(operation="grant.add") == [("grant.add", "denied"), ("grant.add", "ok")]
    assert await ops(operation="grant.") == [("grant.delete", "ok"), ("grant.add", "denied"),
                                             ("grant.add", "ok")]
    assert await ops(principal=f"{IDP}#reader") == [("grant.add", "denied")]
    assert await ops(entityId="urn:ngsi-ld:Lamp:1") == [("grant.delete", "ok"),
                                                         ("grant.add", "ok")]
    assert await ops(limit="2", offset="1") == [("grant.add", "denied"), ("key.create", "ok")]
    assert await ops(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []
    assert len(await ops(since="2000-01-01T00:00:00Z")) == 4

    problem(await env.call("GET", "/audit", "reader"), 403, "AccessDenied")
    problem(await env.call("GET", "/audit", "anonymous"), 401, "Unauthorized")
    problem(await env.call("GET", "/audit", "admin", params={"tenant": "other"}), 403,
            "AccessDenied")
    other = await env.call("GET", "/audit", "root", params={"tenant": "other"})
    assert [r["tenant"] for r in other.json()] == ["other"]
    every = await env.call("GET", "/audit", "root", params={"tenant": "*"})
    # the platform-wide refusal above is the platform's ("*")
    assert {r["tenant"] for r in every.json()} == {CITY, "other", "*"}
    # the refusals of the audit log itself are in it
    assert ("audit.query", "denied") in await ops(outcome="denied")


@pytest.mark.parametrize(("params", "says"), [
    ({"limit": "1001"}, "between 1 and 1000"),
    ({"limit": "0"}, "between 1 and 1000"),
    ({"limit": "many"}, "integer"),
    ({"offset": "-1"}, "between 0"),
    ({"since": "yesterday"}, "date-time"),
    ({"until": "2030-13-01T00:00:00Z"}, "date-time"),
    ({"outcome": "meh"}, "outcome"),
])
async def test_bad_audit_queries_are_400(env: Env, params: dict[str, str], says: str) -> None:
    problem(await env.call("GET", "/audit", "admin", params=params), 400, "BadRequestData",
            says)


async def test_tenants_for_platform_admins(env: Env) -> None:
    await env.call("POST", "/keys", "other-admin", tenant="other",
                   body={"name": "k", "role": "reader"})
    await env.call("POST", "/issuers", "admin", body={"url": "https://idp.city.example"})
    listed = await env.call("GET", "/tenants", "root")
    assert listed.status_code == 200 and listed.json() == [CITY, "other"]
    problem(await env.call("GET", "/tenants", "admin"), 403, "AccessDenied")
    problem(await env.call("GET", "/tenants", "anonymous"), 401, "Unauthorized")


async def test_the_admin_routes_are_in_the_openapi_document(env: Env) -> None:
    doc = (await env.http.get("/openapi.json")).json()
    paths = doc["paths"]
    assert set(paths["/urbanos/v1/grants"]) == {"get", "post"}
    assert set(paths["/urbanos/v1/grants/{grant_id}"]) == {"get", "delete"}
    assert set(paths["/urbanos/v1/keys"]) == {"get", "post"}
    assert set(paths["/urbanos/v1/keys/{key_id}"]) == {"delete"}
    assert set(paths["/urbanos/v1/issuers"]) == {"get", "post", "delete"}
    assert set(paths["/urbanos/v1/audit"]) == {"get"}
    assert set(paths["/urbanos/v1/tenants"]) == {"get"}
    assert set(paths["/urbanos/v1/me"]) == {"get"}
    summary = paths["/urbanos/v1/keys"]["post"]["summary"]
    assert "shown this once" in summary
