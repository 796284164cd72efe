"""The Authenticator against real OpenID Connect provider processes over HTTP: a platform
issuer and one issuer each for tenants A and B (``tests/oidc``, npm's oidc-provider)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.integration.oidc_provider import RESOURCE, OidcProvider
from urbanos.core.policy import ANY_TENANT, Role
from urbanos.errors import Unauthorized
from urbanos.outbound import OutboundPolicy
from urbanos.services.auth import Authenticator
from urbanos.storage.access import Issuer

PLATFORM_CLAIMS = {
    "service": {"roles": ["writer"], "groups": ["/city/traffic", "/city/parks"],
                "urbanos_tenants": {"b": ["tenantAdmin"]}},
    "alice": {"roles": ["reader", "a:subscriber"], "groups": ["/citizens"]},
}


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, OidcProvider]]:
    """The platform's provider and those of tenants a and b, started once for the module."""
    work = tmp_path_factory.mktemp("oidc")
    started: dict[str, OidcProvider] = {}
    try:
        started["platform"] = OidcProvider(work, "platform", claims=PLATFORM_CLAIMS).start()
        for tenant in ("a", "b"):
            started[tenant] = OidcProvider(
                work, tenant, claims={"service": {"roles": ["writer", "b:tenantAdmin"]}},
                alg="ES256" if tenant == "b" else "RS256",
            ).start()
        yield started
    finally:
        for provider in started.values():
            provider.stop()


class Store:
    """The issuers the access store would list (changed by the tests at run time)."""

    def __init__(self, issuers: list[Issuer]) -> None:
        self.issuers = issuers

    async def __call__(self) -> list[Issuer]:
        return list(self.issuers)


@pytest.fixture
def store(providers: dict[str, OidcProvider]) -> Store:
    return Store([Issuer("a", providers["a"].issuer), Issuer("b", providers["b"].issuer)])


@pytest.fixture
async def auth(providers: dict[str, OidcProvider], store: Store) -> AsyncIterator[Authenticator]:
    authenticator = Authenticator(
        frozenset({"oidc"}), keys=None, issuers=store, policy=OutboundPolicy(),
        platform_issuer=providers["platform"].issuer, audience=RESOURCE, refresh_floor=0,
    )
    await authenticator.open()
    yield authenticator
    await authenticator.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_client_credentials_token_maps_to_a_principal(
    auth: Authenticator, providers: dict[str, OidcProvider]
) -> None:
    platform = providers["platform"]
    token = await platform.client_credentials(scope="read write")
    principal = await auth.authenticate(bearer(token), "a")
    assert principal.kind == "oidc"
    assert (principal.subject, principal.client, principal.issuer) == (
        "service", "service", platform.issuer)
    assert principal.roles == {ANY_TENANT: frozenset({Role.WRITER}),
                               "b": frozenset({Role.TENANT_ADMIN})}
    assert principal.roles_in("a") == {Role.WRITER}
    assert principal.roles_in("b") == {Role.WRITER, Role.TENANT_ADMIN}
    assert principal.claims["groups"] == {"/city/traffic", "/city/parks"}
    assert principal.claims["scope"] == {"read", "write"}
    assert principal.key == f"{platform.issuer}#service"


async def test_authorization_code_token_is_accepted(
    auth: Authenticator, providers: dict[str, OidcProvider]
) -> None:
    token = await providers["platform"].authorization_code("alice")
    principal = await auth.authenticate(bearer(token), "a")
    assert (principal.kind, principal.subject, principal.client) == ("oidc", "alice", "webapp")
    assert principal.roles_in("a") == {Role.READER, Role.SUBSCRIBER}
    assert principal.roles_in("b") == {Role.READER}
    assert principal.claims["groups"] == {"/citizens"}


async def test_tenant_issuers_are_valid_only_in_their_tenant(
    auth: Authenticator, providers: dict[str, OidcProvider]
) -> None:
    token_a = await providers["a"].client_credentials()
    token_b = await providers["b"].client_credentials()  # ES256
    platform = await providers["platform"].client_credentials()

    principal = await auth.authenticate(bearer(token_a), "a")
    assert principal.issuer == providers["a"].issuer
    # "b:tenantAdmin" in a token of tenant a's issuer gives nothing in b
    assert principal.roles == {"a": frozenset({Role.WRITER})}
    assert (await auth.authenticate(bearer(token_b), "b")).roles == {
        "b": frozenset({Role.WRITER, Role.TENANT_ADMIN})}

    with pytest.raises(Unauthorized) as refused:
        await auth.authenticate(bearer(token_a), "b")
    assert "not trusted in this tenant" in refused.value.detail
    assert 'error="invalid_token"' in refused.value.challenge
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(token_b), "a")
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(token_a), "")  # nor in the default tenant

    for tenant in ("a", "b", ""):
        assert (await auth.authenticate(bearer(platform), tenant)).issuer == (
            providers["platform"].issuer)


async def test_key_rotation_mid_test(tmp_path: Path, store: Store) -> None:
    with OidcProvider(tmp_path, "rotating", claims={"service": {"roles": ["reader"]}}) as idp:
        store.issuers.append(Issuer("c", idp.issuer))
        auth = Authenticator(frozenset({"oidc"}), keys=None, issuers=store,
                             policy=OutboundPolicy(), audience=RESOURCE, refresh_floor=0)
        try:
            before = await idp.client_credentials()
            assert (await auth.authenticate(bearer(before), "c")).roles == {
                "c": frozenset({Role.READER})}
            new_kid = idp.rotate()
            after = await idp.client_credentials()
            assert f'"kid":"{new_kid}"'.encode() in _header(after)
            principal = await auth.authenticate(bearer(after), "c")  # JWKS fetched again
            assert principal.subject == "service"
        finally:
            await auth.aclose()


async def test_issuer_added_at_run_time(
    auth: Authenticator, providers: dict[str, OidcProvider], store: Store
) -> None:
    token = await providers["a"].client_credentials()
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(token), "c")
    store.issuers.append(Issuer("c", providers["a"].issuer))
    with pytest.raises(Unauthorized):  # not read again before reload_issuers
        await auth.authenticate(bearer(token), "c")
    auth.reload_issuers()
    assert (await auth.authenticate(bearer(token), "c")).roles == {"c": frozenset({Role.WRITER})}

    store.issuers.remove(Issuer("c", providers["a"].issuer))  # and taken away again
    auth.reload_issuers()
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(token), "c")


async def test_provider_down_is_401_not_500(tmp_path: Path) -> None:
    idp = OidcProvider(tmp_path, "gone", claims={})
    with idp:
        token = await idp.client_credentials()
    auth = Authenticator(frozenset({"oidc"}), keys=None, issuers=None, policy=OutboundPolicy(),
                         platform_issuer=idp.issuer, refresh_floor=0, timeout=2)
    try:
        with pytest.raises(Unauthorized) as refused:
            await auth.authenticate(bearer(token), "a")
        assert "could not be reached" in refused.value.detail
    finally:
        await auth.aclose()


def _header(token: str) -> bytes:
    part = token.split(".")[0]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
