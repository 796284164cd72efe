"""Authenticator: which credentials a request carries, API keys, anonymous and open callers.

No token is verified here (that is tests/integration/test_oidc_*): these requests are
settled from their headers and the API key store alone, which is a small dict here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from urbanos.core.policy import ANY_TENANT, OPEN, Role
from urbanos.errors import Unauthorized
from urbanos.outbound import OutboundPolicy
from urbanos.services.auth import Authenticator
from urbanos.storage.access import ApiKey

KEYS = {
    "uk_k1.secret": ApiKey("k1", "a", Role.WRITER, "sensor gateway", "h1", "2026-01-01T00:00:00Z"),
    "uk_k2.secret": ApiKey("k2", ANY_TENANT, Role.PLATFORM_ADMIN, "ops", "h2",
                           "2026-01-01T00:00:00Z"),
    "uk_k3.secret": ApiKey("k3", "a", Role.READER, "old", "h3", "2026-01-01T00:00:00Z",
                           revoked_at="2026-02-01T00:00:00Z"),
}


async def verify_key(token: str) -> ApiKey:
    """What AccessService.verify_key does, for the keys above."""
    key = KEYS.get(token)
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    return key


def authenticator(*modes: str, anonymous_role: str = "") -> Authenticator:
    return Authenticator(frozenset(modes), keys=verify_key, issuers=None,
                         policy=OutboundPolicy(), anonymous_role=anonymous_role)


@pytest.fixture
async def both() -> AsyncIterator[Authenticator]:
    auth = authenticator("oidc", "apikey")
    yield auth
    await auth.aclose()


async def refused(auth: Authenticator, headers: dict[str, str], tenant: str = "a") -> str:
    with pytest.raises(Unauthorized) as caught:
        await auth.authenticate(headers, tenant)
    return caught.value.detail


async def test_no_modes_is_open_whatever_the_headers() -> None:
    auth = authenticator()
    for headers in ({}, {"authorization": "Bearer garbage"}, {"x-api-key": "nope"},
                    {"authorization": "ApiKey x", "x-api-key": "y"}):
        assert await auth.authenticate(headers, "a") is OPEN
    await auth.aclose()


async def test_api_key_in_either_header(both: Authenticator) -> None:
    for headers in ({"authorization": "ApiKey uk_k1.secret"},
                    {"authorization": "apikey  uk_k1.secret "},
                    {"x-api-key": "uk_k1.secret"}):
        principal = await both.authenticate(headers, "a")
        assert (principal.kind, principal.subject) == ("apikey", "k1")
        assert principal.roles == {"a": frozenset({Role.WRITER})}
        assert principal.key == "apikey:k1"


async def test_api_key_of_another_tenant(both: Authenticator) -> None:
    detail = await refused(both, {"x-api-key": "uk_k1.secret"}, tenant="b")
    assert detail == "this API key belongs to another tenant"
    assert "another tenant" in await refused(both, {"x-api-key": "uk_k1.secret"}, tenant="")


async def test_platform_wide_api_key(both: Authenticator) -> None:
    principal = await both.authenticate({"x-api-key": "uk_k2.secret"}, "b")
    assert principal.roles_in("b") == {Role.PLATFORM_ADMIN}


async def test_revoked_or_unknown_api_key(both: Authenticator) -> None:
    with pytest.raises(Unauthorized) as caught:
        await both.authenticate({"x-api-key": "uk_gone.secret"}, "a")
    assert caught.value.detail == "unknown or revoked API key"
    assert caught.value.challenge.startswith('ApiKey realm="urbanos"')
    # a store that hands back a revoked key anyway
    assert "revoked" in await refused(both, {"x-api-key": "uk_k3.secret"})


async def test_two_credentials_are_ambiguous(both: Authenticator) -> None:
    for headers in ({"authorization": "Bearer a.b.c", "x-api-key": "uk_k1.secret"},
                    {"authorization": "ApiKey uk_k1.secret", "x-api-key": "uk_k1.secret"}):
        assert "not both" in await refused(both, headers)


async def test_mode_off_refuses_that_kind() -> None:
    keys_only, oidc_only = authenticator("apikey"), authenticator("oidc")
    detail = await refused(keys_only, {"authorization": "Bearer a.b.c"})
    assert detail == "bearer tokens are not accepted here"
    assert await refused(oidc_only, {"x-api-key": "uk_k1.secret"}) == (
        "API keys are not accepted here")
    assert await refused(oidc_only, {"authorization": "ApiKey uk_k1.secret"}) == (
        "API keys are not accepted here")
    await keys_only.aclose()
    await oidc_only.aclose()


@pytest.mark.parametrize("value", [
    "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer", "Bearer ", "ApiKey", "", "   ",
    "Bearer two words", "Bearer " + "x" * 20_000, "Digest x", "bearer\tx",
])
async def test_malformed_authorization_is_401(both: Authenticator, value: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        await both.authenticate({"authorization": value}, "a")
    assert caught.value.challenge.startswith('Bearer realm="urbanos", error="invalid_')


async def test_no_credentials_is_anonymous() -> None:
    plain, open_data = authenticator("oidc"), authenticator("apikey", anonymous_role="reader")
    nobody = await plain.authenticate({"accept": "application/json"}, "a")
    assert (nobody.kind, nobody.roles, nobody.authenticated) == ("anonymous", {}, False)
    reader = await open_data.authenticate({}, "b")
    assert reader.kind == "anonymous"
    assert reader.roles_in("b") == {Role.READER}
    await plain.aclose()
    await open_data.aclose()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        authenticator("oidc", "saml")
    with pytest.raises(ValueError, match="anonymous role 'guest'"):
        authenticator("oidc", anonymous_role="guest")
    with pytest.raises(ValueError, match="claim mapping"):
        Authenticator(frozenset({"oidc"}), keys=None, issuers=None, policy=OutboundPolicy(),
                      claims="{not json")
    with pytest.raises(ValueError, match="API key store"):
        Authenticator(frozenset({"apikey"}), keys=None, issuers=None, policy=OutboundPolicy())
