"""Who is calling: OpenID Connect bearer tokens (RFC 6750) and API keys -> ``Principal``.

Tokens are verified locally against the issuer's JWKS (discovery document and keys fetched
through the outbound policy, cached, fetched again on an unknown ``kid``, at most once per
``refresh_floor`` seconds per issuer: ``services.auth_keys``). Algorithms come from an
allow-list of asymmetric ones (RS256, PS256, ES256, EdDSA) and must agree with the key;
``iss`` (exact), ``aud`` (when configured), ``exp`` (required), ``nbf`` and ``iat`` are
checked with ``clock_skew`` seconds of leeway. Claims become the principal by the claim
mapping of ``services.auth_claims`` (its docstring has the details); defaults: subject
``sub``, client ``azp`` then ``client_id``, roles ``roles`` (``role`` or ``TENANT:role``),
tenant roles ``urbanos_tenants`` (tenant -> roles), groups ``groups``, plus ``scope``;
``acr`` and ``amr`` are copied.

A verified token's principal is cached (by the token's SHA-256 and the tenant, LRU,
``TOKEN_CACHE_SIZE`` entries) until the token expires, so each token is verified once.
The cache is emptied when the issuers change (``reload_issuers``), but not when the
provider merely rotates or withdraws a signing key: as with the access tokens of most
brokers and gateways, a token stays valid until its ``exp`` once verified; short token
lifetimes bound the exposure.

Issuers: the platform's (``URBANOS_OIDC_ISSUER``, valid in every tenant) and those of the
store (``Issuer.tenant``: valid only in that tenant; ``*``: platform-wide), added at run
time through the admin API and read again after ``reload_issuers``.

Every bad credential is ``Unauthorized`` with its ``WWW-Authenticate`` challenge: garbage,
tokens that do not verify, an unreachable provider. Whether a request without credentials
may proceed is decided later, by the services (it gets the anonymous principal here).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from urbanos.core.policy import ANY_TENANT, OPEN, Principal, Role
from urbanos.errors import Unauthorized
from urbanos.outbound import OutboundPolicy
from urbanos.services.access import key_principal
from urbanos.services.auth_claims import ClaimMap
from urbanos.services.auth_keys import ALGORITHMS, KeyFetcher, KeyUnavailable
from urbanos.storage.access import ApiKey, Issuer

log = logging.getLogger(__name__)

MODES = frozenset({"oidc", "apikey"})
TOKEN_CACHE_SIZE = 10_000
#: longer credentials are refused unread (large Keycloak tokens are a few KiB)
MAX_CREDENTIAL_CHARS = 16_384

_REALM = 'realm="urbanos"'
_UNSAFE = re.compile(r'[^\x20-\x21\x23-\x5b\x5d-\x7e]')  # RFC 6750 error_description


def _challenge(scheme: str, error: str, description: str) -> str:
    text = _UNSAFE.sub("?", description)[:300]
    return f'{scheme} {_REALM}, error="{error}", error_description="{text}"'


def _bad_token(detail: str) -> Unauthorized:
    return Unauthorized(detail, challenge=_challenge("Bearer", "invalid_token", detail))


@dataclass(frozen=True, slots=True)
class _Binding:
    """An issuer trusted in ``tenant`` (``ANY_TENANT``: in every one)."""

    url: str
    tenant: str
    audience: str | None
    claims: ClaimMap


class Authenticator:
    def __init__(
        self,
        modes: frozenset[str],
        *,
        keys: Callable[[str], Awaitable[ApiKey]] | None,
        issuers: Callable[[], Awaitable[list[Issuer]]] | None,
        policy: OutboundPolicy,
        platform_issuer: str = "",
        audience: str = "",
        claims: str = "",
        clock_skew: float = 60,
        anonymous_role: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
        refresh_floor: float = 10.0,
        timeout: float = 5.0,
        max_bytes: int = 262_144,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``modes`` ⊆ {"oidc", "apikey"} (empty: no authentication, every caller is
        ``OPEN``). ``keys`` verifies an API key token (``AccessService.verify_key``);
        ``issuers`` lists the store's issuers. ``claims`` is the claim mapping's JSON.
        ``clock`` (monotonic seconds) paces the JWKS downloads. ValueError on a bad
        setting."""
        if not modes <= MODES:
            raise ValueError(f"auth modes: {', '.join(sorted(modes - MODES))} unknown; "
                             "expected oidc and/or apikey")
        if "apikey" in modes and keys is None:
            raise ValueError("auth mode apikey needs the API key store")
        self.modes = modes
        self.verify_key = keys
        self.list_issuers = issuers
        self.platform_issuer = platform_issuer
        self.audience = audience or None
        self.claims = ClaimMap.parse(claims)
        self.clock_skew = clock_skew
        try:
            role = {Role(anonymous_role)} if anonymous_role else set()
        except ValueError:
            choices = " | ".join(r.value for r in Role)
            raise ValueError(f"anonymous role {anonymous_role!r}: expected {choices}") from None
        self.anonymous = Principal(
            kind="anonymous", roles={ANY_TENANT: frozenset(role)} if role else {})
        self.fetcher = KeyFetcher(policy, transport=transport, refresh_floor=refresh_floor,
                                  timeout=timeout, max_bytes=max_bytes, clock=clock)
        self._bindings: dict[str, dict[str, _Binding]] | None = None  # url -> tenant -> ...
        self._generation = 0  # bumped by reload_issuers: results begun before are not kept
        self._loading: asyncio.Lock = asyncio.Lock()
        #: (token hash, tenant) -> (principal, wall-clock time after which it expired)
        self._verified: OrderedDict[tuple[bytes, str], tuple[Principal, float]] = OrderedDict()

    async def open(self) -> None:
        """Nothing is fetched until the first token: a provider that is down does not stop
        the broker from starting (its tokens are refused meanwhile)."""

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    def reload_issuers(self) -> None:
        """The issuers changed (this node or another): read them again on next use."""
        self._generation += 1
        self._bindings = None
        self._verified.clear()

    async def authenticate(self, headers: Mapping[str, str], tenant: str) -> Principal:
        """The principal of a request's headers (lower-case names) in ``tenant``:
        ``Authorization: Bearer <JWT>``, ``Authorization: ApiKey <key>`` or
        ``X-Api-Key: <key>``; no credentials: the anonymous principal. Raises
        ``Unauthorized`` (with its ``WWW-Authenticate`` challenge) for credentials that do
        not verify or that are not valid in ``tenant``."""
        if not self.modes:
            return OPEN
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        if authorization is None and api_key is None:
            return self.anonymous
        if authorization is not None and api_key is not None:
            raise self._refused("invalid_request", "a request carries one credential: "
                                "Authorization or X-Api-Key, not both")
        if authorization is not None:
            scheme, _, credential = authorization.strip().partition(" ")
            scheme, credential = scheme.lower(), credential.strip()
        else:
            scheme, credential = "apikey", (api_key or "").strip()
        if scheme not in ("bearer", "apikey"):
            raise self._refused("invalid_request", f"authorization scheme {scheme[:20]!r} is "
                                "not accepted: use Bearer or ApiKey")
        mode = "oidc" if scheme == "bearer" else "apikey"
        if mode not in self.modes:
            kind = "bearer tokens" if mode == "oidc" else "API keys"
            raise self._refused("invalid_request", f"{kind} are not accepted here")
        if not credential or len(credential) > MAX_CREDENTIAL_CHARS or " " in credential:
            raise self._refused("invalid_request" if not credential else "invalid_token",
                                "the credential is empty or malformed")
        if mode == "apikey":
            return await self._api_key(credential, tenant)
        return await self._bearer(credential, tenant)

    def _refused(self, error: str, detail: str) -> Unauthorized:
        scheme = "Bearer" if "oidc" in self.modes else "ApiKey"
        return Unauthorized(detail, challenge=_challenge(scheme, error, detail))

    # -- API keys ----------------------------------------------------------------------
    async def _api_key(self, token: str, tenant: str) -> Principal:
        assert self.verify_key is not None
        challenge = f'ApiKey {_REALM}, error="invalid_key"'
        try:
            key = await self.verify_key(token)
        except Unauthorized as exc:
            raise Unauthorized(exc.detail or "invalid API key", challenge=challenge) from None
        if key.revoked_at is not None:
            raise Unauthorized("this API key has been revoked", challenge=challenge)
        if key.tenant not in (tenant, ANY_TENANT):
            raise Unauthorized("this API key belongs to another tenant", challenge=challenge)
        return key_principal(key)

    # -- bearer tokens -----------------------------------------------------------------
    async def _bearer(self, token: str, tenant: str) -> Principal:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._verified.get((digest, tenant))
        if cached is not None:
            principal, until = cached
            if time.time() <= until:
                self._verified.move_to_end((digest, tenant))
                return principal
            del self._verified[(digest, tenant)]
        generation = self._generation
        principal, until = await self._verify(token, tenant)
        if generation != self._generation:  # the issuers changed meanwhile: ask them
            principal, until = await self._verify(token, tenant)
            return principal  # and keep nothing learnt in the meantime
        self._verified[(digest, tenant)] = (principal, until)
        while len(self._verified) > TOKEN_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str, tenant: str) -> tuple[Principal, float]:
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _bad_token(f"the bearer token is not a JWT ({exc})") from None
        header, claims = unverified["header"], unverified["payload"]
        alg, kid, iss = header.get("alg"), header.get("kid"), claims.get("iss")
        if alg not in ALGORITHMS:
            raise _bad_token(f"token algorithm {str(alg)[:20]!r} is not accepted "
                             f"(accepted: {', '.join(sorted(ALGORITHMS))})")
        if not isinstance(iss, str) or not iss:
            raise _bad_token("the token names no issuer (iss)")
        if kid is not None and not isinstance(kid, str):
            raise _bad_token("the token's kid is not a string")
        binding = (await self._issuers()).get(iss, {})
        trusted = binding.get(tenant) or binding.get(ANY_TENANT)
        if trusted is None:
            where = "here" if not binding else "in this tenant"
            raise _bad_token(f"issuer {iss[:200]!r} is not trusted {where}")
        try:
            key = await self.fetcher.key(iss, kid, alg)
        except KeyUnavailable as exc:
            raise _bad_token(str(exc)) from None
        audience = trusted.audience
        try:
            payload: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], issuer=iss, audience=audience,
                leeway=self.clock_skew,
                options={"require": ["exp", "iss"], "verify_aud": audience is not None},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _bad_token(f"the bearer token does not verify: {exc}") from None
        return self._principal(payload, trusted), float(payload["exp"]) + self.clock_skew

    def _principal(self, payload: dict[str, Any], trusted: _Binding) -> Principal:
        mapping = trusted.claims
        subject = payload.get(mapping.subject)
        if not isinstance(subject, str) or not subject:
            raise _bad_token(f"the token has no subject claim ({mapping.subject})")
        acr, amr = payload.get("acr"), payload.get("amr")
        return Principal(
            kind="oidc", subject=subject, client=mapping.client_of(payload),
            issuer=trusted.url, roles=mapping.roles_of(payload, trusted.tenant),
            claims=mapping.claims_of(payload), acr=acr if isinstance(acr, str) else None,
            amr=tuple(a for a in amr if isinstance(a, str)) if isinstance(amr, list) else (),
        )

    async def _issuers(self) -> dict[str, dict[str, _Binding]]:
        bindings = self._bindings
        if bindings is not None:
            return bindings
        async with self._loading:
            while self._bindings is None:
                generation = self._generation
                loaded = await self._load()
                if generation == self._generation:  # else changed while loading: again
                    self._bindings = loaded
                    self.fetcher.keep_only(set(loaded))
            return self._bindings

    async def _load(self) -> dict[str, dict[str, _Binding]]:
        found: dict[str, dict[str, _Binding]] = {}
        stored = await self.list_issuers() if self.list_issuers is not None else []
        for issuer in stored:
            try:
                claims = ClaimMap.parse(issuer.claims, self.claims)
            except ValueError as exc:
                log.error("OIDC issuer %s of tenant %r left out: %s", issuer.url,
                          issuer.tenant, exc)
                continue
            found.setdefault(issuer.url, {})[issuer.tenant] = _Binding(
                issuer.url, issuer.tenant, issuer.audience or self.audience, claims)
        if self.platform_issuer:
            found.setdefault(self.platform_issuer, {})[ANY_TENANT] = _Binding(
                self.platform_issuer, ANY_TENANT, self.audience, self.claims)
        return found
