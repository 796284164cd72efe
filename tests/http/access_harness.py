"""A broker with authentication on, for the access-control tests: a local token issuer
(discovery document and JWKS served over real HTTP by a thread, tokens signed with its
RSA key), and an in-process client whose requests carry a bearer token or an API key.

The real OpenID Connect provider (``tests/integration/oidc_provider.py``) is used where
the provider itself matters; here the tokens' claims vary test by test.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.conftest import _lifespan
from urbanos.http.app import create_app
from urbanos.settings import Settings

AUDIENCE = "urn:urbanos"


class LocalIssuer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks`` on 127.0.0.1."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:8]
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    jwk = json.loads(RSAAlgorithm.to_jwk(issuer.key.public_key()))
                    body = {"keys": [{**jwk, "kid": issuer.kid, "alg": "RS256", "use": "sig"}]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, subject: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.url, "sub": subject, "aud": AUDIENCE, "iat": now,
                   "exp": now + 600, **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
