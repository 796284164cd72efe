"""A broker with authentication on, for the access-control tests: a local token issuer
(the bench's: discovery document and JWKS served over real HTTP by a thread, tokens
signed with its RSA key), and an in-process client whose requests carry a bearer token or
an API key.

The real OpenID Connect provider (``tests/integration/oidc_provider.py``) is used where
the provider itself matters; here the tokens' claims vary test by test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from bench.issuer import Issuer

from tests.conftest import _lifespan
from urbanos.http.app import create_app
from urbanos.settings import Settings

AUDIENCE = "urn:urbanos"


class LocalIssuer(Issuer):
    """The bench's issuer, with the audience the tests' brokers expect."""

    def __init__(self) -> None:
        super().__init__(audience=AUDIENCE)

    def token(self, subject: str, lifetime: int = 600, **claims: Any) -> str:
        return super().token(subject, lifetime, **claims)


@contextlib.contextmanager
def local_issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()
    try:
        yield issuer
    finally:
        issuer.close()


def secured_settings(store: str, issuer: LocalIssuer, **more: Any) -> Settings:
    return Settings(store=store, auth="oidc,apikey", oidc_issuer=issuer.url,
                    oidc_audience=AUDIENCE, max_body_bytes=65536, max_limit=100, **more)


@contextlib.asynccontextmanager
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    app = create_app(settings)
    async with _lifespan(app):
        yield Broker(app)


class Broker:
    """The app, and clients that call it as someone."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._transport = httpx.ASGITransport(app=app)

    @property
    def services(self) -> Any:
        inner = self.app
        while not hasattr(inner, "state"):
            inner = inner.app
        return inner.state.services

    def client(self, *, token: str | None = None, key: str | None = None,
               tenant: str | None = None) -> httpx.AsyncClient:
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if key is not None:
            headers["X-Api-Key"] = key
        if tenant is not None:
            headers["NGSILD-Tenant"] = tenant
        return httpx.AsyncClient(transport=self._transport, base_url="http://broker",
                                 headers=headers)
