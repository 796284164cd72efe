"""The signing keys of OpenID Connect issuers: discovery, JWKS, their caches.

Every download goes through the outbound policy (``outbound.GuardedTransport``: scheme,
resolved addresses, DNS rebinding), with a timeout, a size limit and no redirects. An
issuer's keys are fetched on first use, again when they are older than ``JWKS_MAX_AGE``
and when a token names a ``kid`` they lack: that last refetch at most once per
``refresh_floor`` seconds per issuer, so tokens with made-up ``kid``s cannot make the
broker hammer the provider. A failed download is not retried within the floor either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import orjson

from urbanos.outbound import FetchFailed, GuardedTransport, OutboundPolicy, fetch_limited

log = logging.getLogger(__name__)

#: seconds after which an issuer's JWKS is fetched again even if every kid is known
JWKS_MAX_AGE = 3600.0

#: the only signature algorithms accepted (asymmetric: never none, never HMAC)
ALGORITHMS = frozenset({"RS256", "PS256", "ES256", "EdDSA"})

#: which algorithms a key without ``alg`` may verify, by (kty, crv)
_COMPATIBLE: dict[tuple[object, object], frozenset[str]] = {
    ("RSA", None): frozenset({"RS256", "PS256"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}


class KeyUnavailable(Exception):
    """No key to verify a token with; ``str()`` says why (for the 401's detail)."""


def agrees(jwk: dict[str, Any], alg: str) -> bool:
    """Whether a JWK may verify a signature made with ``alg``: its own ``alg`` when it has
    one, else its key type and curve."""
    if jwk.get("alg") is not None:
        return bool(jwk["alg"] == alg)
    kty = jwk.get("kty")
    return alg in _COMPATIBLE.get((kty, None if kty == "RSA" else jwk.get("crv")), ())


@dataclass(eq=False)
class IssuerKeys:
    """One issuer URL's discovery result and signing keys."""

    url: str
    jwks_uri: str | None = None
    keys: list[dict[str, Any]] = field(default_factory=list)  # signing JWKs, as published
    fetched_at: float = float("-inf")  # monotonic time of the last JWKS download
    refetched_at: float = float("-inf")  # of the last one caused by an unknown kid
    failed_at: float = float("-inf")
    failure: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _parsed: dict[tuple[int, str], jwt.PyJWK] = field(default_factory=dict)

    def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key for ``kid`` that agrees with ``alg`` (no kid: the only signing key that
        does), or None."""
        found = [i for i, k in enumerate(self.keys)
                 if (kid is None or k.get("kid") == kid) and agrees(k, alg)]
        if len(found) != 1:
            return None
        index = found[0]
        key = self._parsed.get((index, alg))
        if key is None:
            try:
                key = jwt.PyJWK(self.keys[index], algorithm=alg)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                return None
            self._parsed[(index, alg)] = key
        return key

    def knows(self, kid: str | None) -> bool:
        return any(kid is None or k.get("kid") == kid for k in self.keys)


class KeyFetcher:
    """Downloads discovery documents and JWKS through the outbound policy and caches them."""

    def __init__(self, policy: OutboundPolicy, *, transport: httpx.AsyncBaseTransport | None,
                 refresh_floor: float, timeout: float, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_floor = refresh_floor
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.clock = clock
        self.issuers: dict[str, IssuerKeys] = {}
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy, transport), timeout=timeout,
            follow_redirects=False, trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def keep_only(self, urls: set[str]) -> None:
        """Forget the keys of issuers no longer trusted."""
        for url in set(self.issuers) - urls:
            del self.issuers[url]

    async def key(self, url: str, kid: str | None, alg: str) -> jwt.PyJWK:
        """The key of issuer ``url`` to verify a token with ``kid`` and ``alg``; raises
        KeyUnavailable."""
        issuer = self.issuers.get(url)
        if issuer is None:
            issuer = self.issuers[url] = IssuerKeys(url)
        if self._stale(issuer):
            async with issuer.lock:
                if self._stale(issuer):
                    await self._refresh(issuer, unknown_kid=False)
        elif not issuer.knows(kid) and (self._may_refetch(issuer) or issuer.lock.locked()):
            async with issuer.lock:  # requests with the same new kid share one download
                if not issuer.knows(kid) and self._may_refetch(issuer):
                    await self._refresh(issuer, unknown_kid=True)
        key = issuer.find(kid, alg)
        if key is None:
            if not issuer.keys and issuer.failure:
                raise KeyUnavailable(issuer.failure)
            which = f"key {kid!r}" if kid is not None else "single signing key"
            raise KeyUnavailable(f"issuer {url} has no {which} for {alg}"[:300])
        return key

    def _stale(self, issuer: IssuerKeys) -> bool:
        now = self.clock()
        if now - issuer.failed_at < self.refresh_floor:
            return False  # failed a moment ago: do not hammer it
        return not issuer.keys or now - issuer.fetched_at > JWKS_MAX_AGE

    def _may_refetch(self, issuer: IssuerKeys) -> bool:
        now = self.clock()
        return (now - issuer.refetched_at >= self.refresh_floor
                and now - issuer.failed_at >= self.refresh_floor)

    async def _refresh(self, issuer: IssuerKeys, *, unknown_kid: bool) -> None:
        now = self.clock()
        if unknown_kid:
            issuer.refetched_at = now
        if not unknown_kid:
            issuer.jwks_uri = None  # first use or hourly: discover again too
        try:
            if issuer.jwks_uri is None:
                issuer.jwks_uri = await self._discover(issuer.url)
            document = await self._get_json(issuer.jwks_uri)
            keys = document.get("keys")
            if not isinstance(keys, list):
                raise KeyUnavailable(f"the JWKS of issuer {issuer.url} has no keys")
        except KeyUnavailable as exc:
            issuer.failed_at, issuer.failure = now, str(exc)
            if issuer.keys:  # keep verifying with the keys we have
                log.warning("OIDC: keeping the old keys of %s: %s", issuer.url, exc)
                return
            raise
        issuer.keys = [k for k in keys if isinstance(k, dict)
                       and k.get("use", "sig") == "sig" and k.get("alg") not in ("none",)]
        issuer._parsed.clear()
        issuer.fetched_at, issuer.failed_at, issuer.failure = now, float("-inf"), ""

    async def _discover(self, url: str) -> str:
        document = await self._get_json(url.rstrip("/") + "/.well-known/openid-configuration")
        if document.get("issuer") != url:
            raise KeyUnavailable(f"the discovery document of {url} names another issuer "
                                 f"({str(document.get('issuer'))[:200]!r})")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise KeyUnavailable(f"the discovery document of {url} has no jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        """A JSON object from ``url``: bounded in time and size, no redirects followed."""
        try:
            body, _ = await fetch_limited(
                self._client, url, headers={"Accept": "application/json"},
                timeout=self.timeout, max_bytes=self.max_bytes)
            document = orjson.loads(body)
        except FetchFailed as exc:
            raise KeyUnavailable(f"the issuer could not be reached ({url}: {exc.reason})"[:500]
                                 ) from exc
        except orjson.JSONDecodeError as exc:
            raise KeyUnavailable(f"the issuer could not be reached ({url}: not JSON)") from exc
        if not isinstance(document, dict):
            raise KeyUnavailable(f"{url} is not a JSON object")
        return document
