"""Per-principal rate limits: the setting, the token buckets (with an injected clock), the
memory bound, and the 429 answer of the middleware."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from urbanos.core.policy import ANONYMOUS, ANY_TENANT, OPEN, Principal, Role
from urbanos.http.ratelimit import RateLimit
from urbanos.services.ratelimit import RateLimits, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def caller(subject: str, *roles: Role, tenant: str = "city") -> Principal:
    return Principal(kind="apikey", subject=subject, roles={tenant: frozenset(roles)})


def limits(setting: str, **options: Any) -> tuple[RateLimits, Clock]:
    clock = Clock()
    return RateLimits.parse(setting, clock=clock, **options), clock


def test_parse_reads_rates_per_role_default_and_burst() -> None:
    parsed = RateLimits.parse("2, reader=5,tenantAdmin=50 ,anonymous=0.5,burst=7")
    assert dict(parsed.rates) == {"default": 2, "reader": 5, "tenantAdmin": 50,
                                  "anonymous": 0.5}
    assert parsed.burst == 7
    assert parsed.active
    assert not RateLimits.parse("").active
    assert RateLimits.parse("").check(caller("a", Role.READER)) is None


@pytest.mark.parametrize(("setting", "says"), [
    ("reader=fast", "not a number"),
    ("mayor=3", "unknown role 'mayor'"),
    ("reader=0", "positive"),
    ("-1", "positive"),
    ("reader=inf", "positive"),
    ("reader=1,reader=2", "given twice"),
    ("reader=1,burst=0.5", "at least 1"),
    ("burst=4", "without any rate"),
])
def test_parse_refuses_bad_settings_clearly(setting: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RateLimits.parse(setting)


def test_a_bucket_lets_a_burst_through_then_refuses_until_it_refills() -> None:
    rl, clock = limits("reader=2,burst=3")
    alice = caller("alice", Role.READER)
    assert [rl.check(alice) for _ in range(3)] == [None, None, None]
    wait = rl.check(alice)
    assert wait is not None and wait == pytest.approx(0.5)
    assert retry_after(wait) == 1
    clock.now += 0.5  # one token back
    assert rl.check(alice) is None
    assert rl.check(alice) is not None
    clock.now += 60  # refilled up to the burst, not beyond
    assert [rl.check(alice) is None for _ in range(4)] == [True, True, True, False]


def test_callers_have_buckets_of_their_own() -> None:
    rl, _ = limits("reader=1")
    alice, bob = caller("alice", Role.READER), caller("bob", Role.READER)
    assert rl.check(alice) is None
    assert rl.check(alice) is not None
    assert rl.check(bob) is None


def test_the_most_generous_role_counts_and_unlisted_roles_take_the_default() -> None:
    rl, _ = limits("reader=1,writer=3")
    both = Principal(kind="oidc", subject="s", issuer="https://idp",
                     roles={"a": frozenset({Role.READER}), "b": frozenset({Role.WRITER})})
    assert [rl.check(both) is None for _ in range(4)] == [True, True, True, False]
    admin = Principal(kind="oidc", subject="root", issuer="https://idp",
                      roles={ANY_TENANT: frozenset({Role.PLATFORM_ADMIN})})
    assert rl.rate_of(admin) is None  # not listed, no default: unlimited
    assert all(rl.check(admin) is None for _ in range(100))
    with_default, _ = limits("4,reader=1")
    assert with_default.rate_of(admin) == 4
    assert with_default.rate_of(caller("r", Role.READER)) == 1


def test_callers_without_credentials_are_counted_per_address() -> None:
    rl, _ = limits("reader=100,anonymous=1")
    assert rl.check(ANONYMOUS, "10.0.0.1") is None
    assert rl.check(ANONYMOUS, "10.0.0.1") is not None
    assert rl.check(ANONYMOUS, "10.0.0.2") is None  # another client is not held back
    assert rl.rate_of(OPEN) == 1  # authentication off: everyone is anonymous


def test_memory_is_bounded_and_refilled_buckets_go_first() -> None:
    rl, clock = limits("reader=1,burst=3", max_buckets=10)
    keep = caller("keep", Role.READER)
    assert [rl.check(keep) for _ in range(3)] == [None, None, None]  # drained, the oldest
    for n in range(9):
        rl.check(caller(f"quiet{n}", Role.READER))  # one request each
    clock.now += 1.5  # the quiet ones have refilled; "keep" holds 1.5 tokens
    rl.check(caller("newcomer", Role.READER))  # over the bound: the refilled ones go
    assert len(rl) <= 10
    assert rl.check(keep) is None
    assert rl.check(keep) is not None  # still its old bucket, not a fresh one of 3


def test_past_the_bound_the_least_recently_used_go() -> None:
    rl, _ = limits("reader=1", max_buckets=10)
    first = caller("first", Role.READER)
    assert rl.check(first) is None
    assert rl.check(first) is not None
    for n in range(40):  # nobody refills: the clock stands still
        rl.check(caller(f"other{n}", Role.READER))
        assert len(rl) <= 10
    assert rl.check(first) is None  # forgotten: a fresh bucket


class SetPrincipal:
    """What the authentication middleware does: the caller, from a test header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            who = dict(scope["headers"]).get(b"x-who")
            if who is not None:
                scope = dict(scope) | {"principal": caller(who.decode(), Role.READER)}
        await self.app(scope, receive, send)


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def app_with(setting: str) -> tuple[ASGIApp, Clock]:
    rl, clock = limits(setting)
    inner = Starlette(routes=[Route("/ngsi-ld/v1/entities", ok), Route("/health", ok)])
    return SetPrincipal(RateLimit(inner, rl)), clock


async def test_the_middleware_answers_429_with_retry_after_as_problem_details() -> None:
    app, clock = app_with("reader=0.25,burst=2")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://broker") as http:
        headers = {"x-who": "alice", "NGSILD-Tenant": "city"}
        statuses = [(await http.get("/ngsi-ld/v1/entities", headers=headers)).status_code
                    for _ in range(2)]
        assert statuses == [200, 200]
        refused = await http.get("/ngsi-ld/v1/entities", headers=headers)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "4"
        body = refused.json()
        assert body["type"] == "https://uri.etsi.org/ngsi-ld/errors/TooManyRequests"
        assert body["status"] == 429 and "apikey:alice" in body["detail"]
        other = await http.get("/ngsi-ld/v1/entities", headers={"x-who": "bob"})
        assert other.status_code == 200
        assert (await http.get("/health", headers=headers)).status_code == 200  # not counted
        clock.now += 4
        assert (await http.get("/ngsi-ld/v1/entities", headers=headers)).status_code == 200


async def test_without_a_setting_the_middleware_lets_everything_through() -> None:
    app, _ = app_with("")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://broker") as http:
        for _ in range(50):
            assert (await http.get("/ngsi-ld/v1/entities")).status_code == 200
