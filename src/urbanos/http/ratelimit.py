"""Rate limiting as ASGI middleware: 429 with ``Retry-After`` before a request does any work.

Installed inside the authentication middleware, which puts the caller's ``Principal`` in
``scope["principal"]`` (none there: ``OPEN``, authentication is off). Health probes are
not counted: a load balancer polling ``/health`` must never be told to go away.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from urbanos.core.policy import OPEN, Principal
from urbanos.errors import TooManyRequests
from urbanos.http.problems import problem_response
from urbanos.services.ratelimit import RateLimits, retry_after


class RateLimit:
    def __init__(self, app: ASGIApp, limits: RateLimits,
                 exempt: frozenset[str] = frozenset({"/health"})) -> None:
        self.app = app
        self.limits = limits
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limits.active or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        error = over_limit(self.limits, scope.get("principal", OPEN), scope)
        if error is None:
            await self.app(scope, receive, send)
            return
        await problem_response(error)(scope, receive, send)


def over_limit(limits: RateLimits, principal: Principal, scope: Scope
               ) -> TooManyRequests | None:
    """Take one request of ``principal`` (told apart by address when it has no
    credentials) from its bucket: None, or the 429 to answer."""
    client = scope.get("client")
    wait = limits.check(principal, client[0] if client else None)
    if wait is None:
        return None
    seconds = retry_after(wait)
    return TooManyRequests(
        f"too many requests from {principal.key}: retry in {seconds} s", retry_after=seconds
    )
