"""Attempts to get past the Authenticator with forged or bent tokens.

The issuer here is a small real HTTP server on 127.0.0.1 serving a discovery document and
a JWKS (its requests counted); tokens are signed with keys made by ``cryptography``, so a
test can make exactly the token an attacker would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from urbanos.core.policy import Role
from urbanos.errors import Unauthorized
from urbanos.outbound import OutboundPolicy
from urbanos.services import auth as auth_module
from urbanos.services.auth import Authenticator
from urbanos.storage.access import Issuer

AUD = "urn:urbanos"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def public_jwk(kid: str, key: Any, alg: str) -> dict[str, Any]:
    convert = {"RS256": RSAAlgorithm, "PS256": RSAAlgorithm, "ES256": ECAlgorithm,
               "EdDSA": OKPAlgorithm}[alg]
    jwk = json.loads(convert.to_jwk(key.public_key()))  # type: ignore[attr-defined]
    jwk.update(kid=kid, alg=alg, use="sig")
    return dict(jwk)


class IssuerServer:
    """Discovery at /.well-known/openid-configuration, keys at /jwks; ``hits`` by path."""

    def __init__(self) -> None:
        self.reset()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.hits[self.path] += 1
                body: Any = None
                if server.down:
                    pass
                elif self.path == "/.well-known/openid-configuration":
                    body = {"issuer": server.claimed_issuer or server.url,
                            "jwks_uri": server.url + "/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": server.keys, "pad": "x" * server.padding}
                data = json.dumps(body).encode()
                self.send_response(200 if body is not None else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def reset(self) -> None:
        self.hits: Counter[str] = Counter()
        self.keys = [public_jwk("rsa", RSA_KEY, "RS256"), public_jwk("ec", EC_KEY, "ES256"),
                     public_jwk("ed", ED_KEY, "EdDSA")]
        self.down = False
        self.claimed_issuer: str | None = None  # what discovery says (None: the truth)
        self.padding = 0  # bytes of padding in the JWKS

    @property
    def jwks_hits(self) -> int:
        return self.hits["/jwks"]

    def __enter__(self) -> IssuerServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


class Clock:
    """Monotonic seconds the test moves on (the pace of JWKS refetches)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[IssuerServer]:
    with IssuerServer() as running:
        yield running


@pytest.fixture
def idp(server: IssuerServer) -> IssuerServer:
    server.reset()
    return server


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_auth(idp: IssuerServer, clock: Clock, **options: Any) -> Authenticator:
    async def issuers() -> list[Issuer]:
        return [Issuer("a", idp.url)]

    settings: dict[str, Any] = {"audience": AUD, "refresh_floor": 30.0, "clock": clock,
                                "policy": OutboundPolicy()}
    settings.update(options)
    return Authenticator(frozenset({"oidc"}), keys=None, issuers=issuers, **settings)


@pytest.fixture
async def auth(idp: IssuerServer, clock: Clock) -> AsyncIterator[Authenticator]:
    authenticator = make_auth(idp, clock)
    yield authenticator
    await authenticator.aclose()


def claims(idp: IssuerServer, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {"iss": idp.url, "sub": "mallory", "aud": AUD, "iat": now,
                               "exp": now + 600, "roles": ["writer"]}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = RSA_KEY, alg: str = "RS256",
         kid: str | None = "rsa") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def sign_raw(payload: dict[str, Any]) -> str:
    """RS256 over any JSON payload (jwt.encode refuses some that attackers would send)."""
    head = b64(json.dumps({"alg": "RS256", "kid": "rsa"}).encode())
    signing_input = f"{head}.{b64(json.dumps(payload).encode())}"
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), RSA_KEY)
    return f"{signing_input}.{b64(signature)}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def refused(auth: Authenticator, token: str, tenant: str = "a") -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        await auth.authenticate(bearer(token), tenant)
    assert caught.value.challenge.startswith('Bearer realm="urbanos"')
    assert "\n" not in caught.value.challenge and "\r" not in caught.value.challenge
    return caught.value


async def test_a_good_token_for_each_algorithm(auth: Authenticator, idp: IssuerServer) -> None:
    for key, alg, kid in ((RSA_KEY, "RS256", "rsa"), (EC_KEY, "ES256", "ec"),
                          (ED_KEY, "EdDSA", "ed")):
        principal = await auth.authenticate(bearer(sign(claims(idp), key, alg, kid)), "a")
        assert (principal.subject, principal.issuer) == ("mallory", idp.url)
        assert principal.roles == {"a": frozenset({Role.WRITER})}
    idp.keys.append(public_jwk("ps", RSA_KEY, "PS256"))
    auth.reload_issuers()
    assert (await auth.authenticate(
        bearer(sign(claims(idp), RSA_KEY, "PS256", "ps")), "a")).subject == "mallory"


@pytest.mark.parametrize("changes, why", [
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"exp": None}, '"exp"'),
    ({"nbf": int(time.time()) + 3600}, "not yet valid"),
    ({"iat": int(time.time()) + 3600}, "not yet valid"),
    ({"aud": "urn:somebody-else"}, "Audience doesn't match"),
    ({"aud": None}, '"aud"'),
    ({"sub": None}, "subject"),
])
async def test_claims_that_do_not_hold(auth: Authenticator, idp: IssuerServer,
                                       changes: dict[str, Any], why: str) -> None:
    error = await refused(auth, sign(claims(idp, **changes)))
    assert why in error.detail


async def test_clock_skew_is_tolerated(auth: Authenticator, idp: IssuerServer) -> None:
    now = int(time.time())
    token = sign(claims(idp, exp=now - 20, nbf=now + 20, iat=now + 20))  # skew: 60 s
    assert (await auth.authenticate(bearer(token), "a")).subject == "mallory"


async def test_token_of_an_unknown_issuer(auth: Authenticator, idp: IssuerServer) -> None:
    error = await refused(auth, sign(claims(idp, iss="https://evil.example")))
    assert "not trusted" in error.detail
    assert sum(idp.hits.values()) == 0  # nothing fetched for it, from it or anywhere


async def test_right_issuer_signed_with_another_key(auth: Authenticator,
                                                    idp: IssuerServer) -> None:
    error = await refused(auth, sign(claims(idp), OTHER_RSA_KEY))
    assert "Signature verification failed" in error.detail


async def test_alg_none(auth: Authenticator, idp: IssuerServer) -> None:
    unsigned = jwt.encode(claims(idp), None, algorithm="none", headers={"kid": "rsa"})
    error = await refused(auth, unsigned)
    assert "'none' is not accepted" in error.detail
    assert idp.jwks_hits == 0


async def test_hs256_signed_with_the_public_key(auth: Authenticator, idp: IssuerServer) -> None:
    """The classic confusion: the RSA public key used as an HMAC secret."""
    for form in (serialization.Encoding.PEM, serialization.Encoding.DER):
        public = RSA_KEY.public_key().public_bytes(
            form, serialization.PublicFormat.SubjectPublicKeyInfo)
        for secret in (public, json.dumps(idp.keys[0]).encode()):
            head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa"}).encode())
            body = b64(json.dumps(claims(idp)).encode())
            mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
            error = await refused(auth, f"{head}.{body}.{b64(mac)}")
            assert "'HS256' is not accepted" in error.detail


async def test_key_algorithm_must_agree_with_the_header(auth: Authenticator,
                                                        idp: IssuerServer) -> None:
    # a good PS256 signature, but the key with kid "rsa" is published for RS256 only
    error = await refused(auth, sign(claims(idp), RSA_KEY, "PS256", "rsa"))
    assert "no key 'rsa' for PS256" in error.detail
    # an EdDSA header naming the EC key
    await refused(auth, sign(claims(idp), ED_KEY, "EdDSA", "ec"))


async def test_unknown_kid_refetches_once_per_floor(auth: Authenticator, idp: IssuerServer,
                                                    clock: Clock) -> None:
    await auth.authenticate(bearer(sign(claims(idp))), "a")
    assert idp.jwks_hits == 1

    error = await refused(auth, sign(claims(idp), kid="made-up-1"))
    assert "no key 'made-up-1'" in error.detail
    assert idp.jwks_hits == 2  # one refetch: it might have been a rotation
    await refused(auth, sign(claims(idp), kid="made-up-2"))
    assert idp.jwks_hits == 2  # within the floor: refused without asking again

    clock.now += 31
    await refused(auth, sign(claims(idp), kid="made-up-3"))
    assert idp.jwks_hits == 3


async def test_rotation_is_picked_up_on_the_new_kid(auth: Authenticator, idp: IssuerServer,
                                                    clock: Clock) -> None:
    await auth.authenticate(bearer(sign(claims(idp))), "a")
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.keys = [public_jwk("rsa-2", new_key, "RS256")]  # the old key withdrawn
    clock.now += 1  # within the floor, but no refetch for an unknown kid yet
    token = sign(claims(idp), new_key, kid="rsa-2")
    assert (await auth.authenticate(bearer(token), "a")).subject == "mallory"
    assert idp.jwks_hits == 2
    await refused(auth, sign(claims(idp, sub="late")))  # the withdrawn key: no more tokens


async def test_old_jwks_is_fetched_again_after_an_hour(auth: Authenticator, idp: IssuerServer,
                                                       clock: Clock) -> None:
    await auth.authenticate(bearer(sign(claims(idp))), "a")
    await auth.authenticate(bearer(sign(claims(idp, sub="second"))), "a")
    assert idp.jwks_hits == 1
    clock.now += 3601
    await auth.authenticate(bearer(sign(claims(idp, sub="third"))), "a")
    assert idp.jwks_hits == 2


@pytest.mark.parametrize("token", [
    "garbage", "a.b.c", "....", "e30.e30.", "e30.e30.e30", "W10.W10.",
    b64(b'{"alg":"RS256"}') + ".bm90IGpzb24." + b64(b"sig"),  # payload not JSON
    b64(b'{"alg":"RS256"}') + "." + b64(b"[1,2]") + ".c2ln",  # payload not an object
    b64(b'["RS256"]') + "." + b64(b"{}") + ".c2ln",  # header not an object
    b64(b'{"alg":"RS256","kid":7}') + "." + b64(b'{"iss":"x"}') + ".c2ln",
    b64(b'{"alg":"RS256","b64":false,"crit":["b64"]}') + "." + b64(b'{"iss":"x"}') + ".c2ln",
    "ünïcödé.тест.令牌", "x" * 100_000, "\x00\x01\x02",
])
async def test_garbage_is_401(auth: Authenticator, token: str) -> None:
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(token), "a")


async def test_issuer_payloads_are_never_a_500(auth: Authenticator, idp: IssuerServer) -> None:
    """iss of every JSON type, and control characters that must not reach a header."""
    for iss in (7, None, ["x"], {"a": 1}, "", "http://x\r\nSet-Cookie: a=b"):
        await refused(auth, sign_raw(claims(idp, iss=iss)))


async def test_discovery_naming_another_issuer(auth: Authenticator, idp: IssuerServer) -> None:
    idp.claimed_issuer = "https://elsewhere.example"
    error = await refused(auth, sign(claims(idp)))
    assert "names another issuer" in error.detail
    assert idp.jwks_hits == 0


async def test_oversized_jwks(idp: IssuerServer, clock: Clock) -> None:
    idp.padding = 10_000
    small = make_auth(idp, clock, max_bytes=5_000)
    try:
        error = await refused(small, sign(claims(idp)))
        assert "larger than 5000 bytes" in error.detail
    finally:
        await small.aclose()


async def test_outbound_policy_refusal_is_401(idp: IssuerServer, clock: Clock) -> None:
    strict = make_auth(idp, clock, policy=OutboundPolicy(mode="strict"))
    try:
        error = await refused(strict, sign(claims(idp)))
        assert "could not be reached" in error.detail and "loopback" in error.detail
        assert sum(idp.hits.values()) == 0
    finally:
        await strict.aclose()


async def test_unreachable_issuer_is_not_asked_again_within_the_floor(
    auth: Authenticator, idp: IssuerServer, clock: Clock
) -> None:
    idp.down = True
    error = await refused(auth, sign(claims(idp)))
    assert "could not be reached" in error.detail
    asked = sum(idp.hits.values())
    await refused(auth, sign(claims(idp, sub="again")))
    assert sum(idp.hits.values()) == asked
    idp.down = False
    clock.now += 31
    assert (await auth.authenticate(bearer(sign(claims(idp))), "a")).subject == "mallory"


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature is checked (jwt.decode as the Authenticator calls it)."""
    checked: list[str] = []
    decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        checked.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(auth_module.jwt, "decode", counting)
    return checked


async def test_verified_token_is_not_verified_again(
    auth: Authenticator, idp: IssuerServer, verified: list[str]
) -> None:
    token = sign(claims(idp))
    first = await auth.authenticate(bearer(token), "a")
    second = await auth.authenticate(bearer(token), "a")
    assert second == first
    assert verified == [token]
    assert idp.jwks_hits == 1


async def test_cache_does_not_carry_a_token_into_another_tenant(
    auth: Authenticator, idp: IssuerServer
) -> None:
    token = sign(claims(idp))
    await auth.authenticate(bearer(token), "a")
    error = await refused(auth, token, tenant="b")  # tenant header switched
    assert "not trusted in this tenant" in error.detail


async def test_cache_does_not_outlive_the_issuer(idp: IssuerServer, clock: Clock) -> None:
    trusted = [Issuer("a", idp.url)]

    async def issuers() -> list[Issuer]:
        return list(trusted)

    auth = Authenticator(frozenset({"oidc"}), keys=None, issuers=issuers,
                         policy=OutboundPolicy(), clock=clock)
    try:
        token = sign(claims(idp))
        await auth.authenticate(bearer(token), "a")
        trusted.clear()
        auth.reload_issuers()
        await refused(auth, token)
    finally:
        await auth.aclose()


async def test_expired_token_leaves_the_cache(
    auth: Authenticator, idp: IssuerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = sign(claims(idp, exp=int(time.time()) + 5))
    await auth.authenticate(bearer(token), "a")
    later = time.time() + 5 + 61  # past exp and the skew
    monkeypatch.setattr(auth_module.time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", _FrozenDatetime(later))
    error = await refused(auth, token)
    assert "expired" in error.detail


class _FrozenDatetime:
    """datetime for PyJWT's notion of now, at a fixed Unix time."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self, tz: Any = None) -> Any:
        import datetime

        return datetime.datetime.fromtimestamp(self.at, tz)


async def test_acr_amr_and_the_issuers_own_audience_and_mapping(
    idp: IssuerServer, clock: Clock
) -> None:
    async def issuers() -> list[Issuer]:
        return [Issuer("a", idp.url, audience="urn:city-a",
                       claims={"roles": "realm_access.roles", "keep": ["department"]})]

    auth = Authenticator(frozenset({"oidc"}), keys=None, issuers=issuers,
                         policy=OutboundPolicy(), audience=AUD, clock=clock)
    try:
        token = sign(claims(idp, aud=["urn:city-a", "account"], acr="urn:loa:2",
                            amr=["pwd", "otp", 3], realm_access={"roles": ["subscriber"]},
                            department="mobility"))
        principal = await auth.authenticate(bearer(token), "a")
        assert principal.roles == {"a": frozenset({Role.SUBSCRIBER})}  # not "roles": writer
        assert (principal.acr, principal.amr) == ("urn:loa:2", ("pwd", "otp"))
        assert principal.claims["department"] == {"mobility"}
        error = await refused(auth, sign(claims(idp)))  # aud: the platform setting's
        assert "Audience doesn't match" in error.detail
    finally:
        await auth.aclose()


async def test_token_cache_is_bounded(
    auth: Authenticator, idp: IssuerServer, verified: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "TOKEN_CACHE_SIZE", 2)
    first, second, third = (sign(claims(idp, sub=name)) for name in ("one", "two", "three"))
    for token in (first, second, first, third, first, second):
        await auth.authenticate(bearer(token), "a")
    # first stays (used most recently), third pushes second out, second comes back
    assert verified == [first, second, third, second]


async def test_concurrent_tokens_with_a_new_kid_share_one_download(
    auth: Authenticator, idp: IssuerServer
) -> None:
    await auth.authenticate(bearer(sign(claims(idp))), "a")
    idp.keys.append(public_jwk("rsa-2", OTHER_RSA_KEY, "RS256"))
    tokens = [sign(claims(idp, sub=f"s{i}"), OTHER_RSA_KEY, kid="rsa-2") for i in range(20)]
    principals = await asyncio.gather(*(auth.authenticate(bearer(t), "a") for t in tokens))
    assert [p.subject for p in principals] == [f"s{i}" for i in range(20)]
    assert idp.jwks_hits == 2


async def test_unusable_keys_in_the_jwks_are_passed_over(
    auth: Authenticator, idp: IssuerServer
) -> None:
    good = idp.keys[0]
    idp.keys = [
        "not a key", {"kid": "rsa", "kty": "oct", "k": b64(b"secret"), "alg": "HS256"},
        {"kid": "x", "kty": "RSA"}, {"kid": "enc", **{k: v for k, v in good.items()
                                                      if k != "kid"}, "use": "enc"},
        good,
    ]
    # a symmetric key under the same kid: two candidates would be ambiguous, but an HS256
    # key never agrees with RS256, so the RSA key is the one
    assert (await auth.authenticate(bearer(sign(claims(idp))), "a")).subject == "mallory"
    # the encryption key is not a signing key
    await refused(auth, sign(claims(idp, sub="e"), kid="enc"))
    await refused(auth, sign(claims(idp, sub="x"), kid="x"))
