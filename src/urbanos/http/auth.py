"""Request -> principal: the first thing every request meets when authentication is on.

The middleware asks the ``Authenticator`` (``services.auth``) who is calling and puts the
``Principal`` in the ASGI scope, with a request id for the audit log (the caller's
``X-Request-Id`` when it is sane, else a new one, echoed in the answer). Credentials that
do not verify are refused here (401 with ``WWW-Authenticate``) and the refusal is
audited; no credentials make the anonymous principal, and what it may do is decided
later, where the data is. With ``URBANOS_AUTH=none`` every request is ``OPEN`` and this
layer costs one attribute lookup.

A few paths need no principal: the landing page, /health, /version, the API description,
and hosted @contexts (``GET /ngsi-ld/v1/jsonldContexts/{id}``: other brokers and clients
fetch them by the URL in a Link header, with no credentials). /metrics and /admin/* are
for platform admins once authentication is on.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from urbanos.core.policy import ANONYMOUS, OPEN
from urbanos.errors import Forbidden, NgsiLdError, Unauthorized
from urbanos.http.negotiation import tenant_from
from urbanos.http.problems import problem_response
from urbanos.http.ratelimit import over_limit
from urbanos.services.access import platform_admin
from urbanos.services.guard import record_denial
from urbanos.services.ratelimit import RateLimits

if TYPE_CHECKING:
    from urbanos.http.context import Services

_PUBLIC = frozenset({"/", "/health", "/version", "/openapi.json", "/docs"})
_CONTEXTS = "/ngsi-ld/v1/jsonldContexts/"
_PLATFORM = ("/metrics", "/admin/")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


class Authenticate:
    """ASGI middleware; ``services`` returns the app's services once the lifespan has
    built them (None before)."""

    def __init__(self, app: ASGIApp, services: Callable[[], Services | None],
                 limits: RateLimits | None = None) -> None:
        self.app = app
        self.services = services
        self.limits = limits  # refused credentials count against their address's bucket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        svc = self.services()
        if svc is None or svc.auth is None:
            scope["principal"] = OPEN
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope["request_id"] = request_id
        send = _echo_request_id(send, request_id)
        path = scope["path"]
        if path in _PUBLIC or (path.startswith(_CONTEXTS) and scope["method"] == "GET"):
            scope["principal"] = OPEN  # public documents: nothing of a tenant's data
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            tenant = tenant_from(headers.get("ngsild-tenant"))
            principal = await svc.auth.authenticate(headers, tenant)
            if path.startswith(_PLATFORM) and not platform_admin(principal):
                raise (Forbidden("platform administrators only") if principal.authenticated
                       else Unauthorized("authentication required"))
        except NgsiLdError as exc:
            flood = (over_limit(self.limits, ANONYMOUS, scope) if self.limits is not None
                     else None)
            if flood is not None:  # a flood of bad credentials is not audited one by one
                await problem_response(flood)(scope, receive, send)
                return
            await _audit_refusal(svc, scope, headers, exc)
            await problem_response(exc)(scope, receive, send)
            return
        scope["principal"] = principal
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    """Lower-case names, the first value of each (as Starlette's Headers.get gives)."""
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        if key not in out:
            out[key] = value.decode("latin-1")
    return out


#: request ids this process makes: a random prefix and a counter (unique without the cost
#: of a UUID per request)
_PREFIX = secrets.token_hex(6)
_NEXT = itertools.count(1)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
            break
    return f"{_PREFIX}{next(_NEXT):x}"


def _echo_request_id(send: Send, request_id: str) -> Send:
    header = (b"x-request-id", request_id.encode("latin-1"))

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), header]}
        await send(message)

    return sending


async def _audit_refusal(svc: Services, scope: Scope, headers: dict[str, str],
                         exc: NgsiLdError) -> None:
    """A request refused before it reached the data: audited as a denial (tenant as
    asked, principal unknown)."""
    if svc.access is None or not isinstance(exc, Unauthorized | Forbidden):
        return
    await record_denial(
        svc.access, "unverified", None, headers.get("ngsild-tenant", ""),
        f"{scope['method']} {scope['path']}", exc, scope.get("request_id"),
    )
