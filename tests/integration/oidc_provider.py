"""Real OpenID Connect providers for the tests: ``tests/oidc/provider.mjs`` (the certified
``oidc-provider`` npm package) run by node on a free port of 127.0.0.1, and the two ways of
getting an access token from it a client has: client credentials and the authorization
code flow with PKCE (logging in through the provider's development login form).

Keys are made here with ``cryptography``; ``rotate()`` restarts the provider on the same
port with a new signing key (the old one still published after it, as providers do while
tokens signed with it are alive).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import selectors
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import OIDC_DIR, require

RESOURCE = "urn:urbanos"
CALLBACK = "http://127.0.0.1/callback"
SECRET = "service-secret"
STARTUP = 30.0  # seconds a provider may take to listen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_jwk(kid: str, alg: str = "RS256") -> dict[str, Any]:
    """A new private signing key as a JWK."""
    if alg == "ES256":
        jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
    else:
        jwk = json.loads(RSAAlgorithm.to_jwk(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    jwk.update(kid=kid, alg=alg, use="sig")
    return dict(jwk)


class OidcProvider:
    """One provider process. ``claims`` maps a client id (client credentials) or an
    account id (authorization code) to the extra claims of its access tokens."""

    def __init__(self, workdir: Path, name: str, *, claims: dict[str, dict[str, Any]],
                 alg: str = "RS256") -> None:
        require("oidc-provider")
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.alg = alg
        self.keys = [private_jwk(f"{name}-1", alg)]
        self.clients = {"service": SECRET}
        (self.dir / "config.json").write_text(json.dumps({"claims": claims,
                                                          "resource": RESOURCE}))
        self.process: subprocess.Popen[str] | None = None

    @property
    def kid(self) -> str:
        """The kid of the key that signs now."""
        return str(self.keys[0]["kid"])

    def start(self) -> OidcProvider:
        (self.dir / "jwks.json").write_text(json.dumps({"keys": self.keys}))
        log = (self.dir / "provider.log").open("a")
        self.process = subprocess.Popen(
            ["node", "provider.mjs", "--port", str(self.port), "--issuer", self.issuer,
             "--jwks", str(self.dir / "jwks.json"), "--config", str(self.dir / "config.json")],
            cwd=OIDC_DIR, stdout=subprocess.PIPE, stderr=log, text=True,
        )
        log.close()
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            if not sel.select(STARTUP):
                self.stop()
                raise RuntimeError(f"the OIDC provider did not start: {self.dir}/provider.log")
        line = self.process.stdout.readline()
        if not line.startswith("listening"):
            self.stop()
            raise RuntimeError(f"the OIDC provider failed: {(self.dir / 'provider.log').read_text()}")
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def rotate(self) -> str:
        """Sign with a new key from now on (the old one stays published); its kid."""
        self.keys.insert(0, private_jwk(f"{self.kid}-next", self.alg))
        self.stop()
        # node listens with SO_REUSEADDR: the same port again, so the issuer stays the same
        for _ in range(50):
            try:
                self.start()
                break
            except RuntimeError:
                time.sleep(0.1)
        return self.kid

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def client_credentials(self, client: str = "service", scope: str = "read") -> str:
        """An access token (a JWT for RESOURCE) of a client-credentials client."""
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.post(
                f"{self.issuer}/token", auth=(client, self.clients[client]),
                data={"grant_type": "client_credentials", "resource": RESOURCE,
                      "scope": scope},
            )
        response.raise_for_status()
        return str(response.json()["access_token"])

    async def authorization_code(self, account: str, scope: str = "openid read") -> str:
        """An access token for RESOURCE of ``account``, logged in through the provider's
        login form by the public client ``webapp`` with PKCE (S256)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {"client_id": "webapp", "response_type": "code", "redirect_uri": CALLBACK,
                  "scope": scope, "state": secrets.token_urlsafe(8), "resource": RESOURCE,
                  "code_challenge": challenge, "code_challenge_method": "S256"}
        async with httpx.AsyncClient(base_url=self.issuer, trust_env=False) as http:
            response = await http.get("/auth", params=params)
            for _step in range(12):
                location = response.headers.get("location")
                if location and location.startswith(CALLBACK):
                    query = parse_qs(urlsplit(location).query)
                    assert query["state"] == [params["state"]], query
                    code = query["code"][0]
                    break
                if location:
                    response = await http.get(location)
                    continue
                response = await http.post(_form_action(response.text),
                                           data=_form_fields(response.text, account))
            else:
                raise AssertionError("the login did not come back with a code")
            token = await http.post("/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                "client_id": "webapp", "code_verifier": verifier, "resource": RESOURCE,
            })
        token.raise_for_status()
        return str(token.json()["access_token"])


def _form_action(page: str) -> str:
    match = re.search(r'<form[^>]*action="([^"]+)"', page)
    assert match, f"no form in the provider's page: {page[:500]}"
    return html.unescape(match.group(1))


def _form_fields(page: str, account: str) -> dict[str, str]:
    """The login form (any password) or the consent form (its hidden prompt)."""
    prompt = re.search(r'name="prompt" value="([a-z]+)"', page)
    assert prompt, f"no prompt in the provider's page: {page[:500]}"
    if prompt.group(1) == "login":
        return {"prompt": "login", "login": account, "password": "any"}
    return {"prompt": prompt.group(1)}
