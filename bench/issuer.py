"""A minimal OpenID Connect issuer for the access-control bench: the discovery document
and the JWKS over HTTP on 127.0.0.1 (a thread), and RS256 tokens signed with its key.

The broker under test fetches the keys from it as from any provider, once, then verifies
the bench's token locally; the issuer only has to answer those two documents.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

AUDIENCE = "urn:urbanos:bench"


class Issuer:
    """Also the tests' issuer (``tests/http/access_harness.py``), with their audience."""

    def __init__(self, audience: str = AUDIENCE) -> None:
        self.audience = audience
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:8]
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        documents: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                data = documents.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        documents["/.well-known/openid-configuration"] = json.dumps(
            {"issuer": self.url, "jwks_uri": self.url + "/jwks"}).encode()
        documents["/jwks"] = json.dumps(
            {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}).encode()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, subject: str, lifetime: int = 86_400, **claims: Any) -> str:
        """A token for ``subject`` with ``claims``, valid ``lifetime`` seconds (a day: the
        longest run; the broker verifies it once and caches it until then)."""
        now = int(time.time())
        payload = {"iss": self.url, "sub": subject, "aud": self.audience, "iat": now,
                   "exp": now + lifetime, **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})

    def __enter__(self) -> Issuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
