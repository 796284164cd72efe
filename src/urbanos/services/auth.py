"""Who is calling: OpenID Connect bearer tokens (RFC 6750) and API keys -> ``Principal``.

Tokens are verified locally against the issuer's JWKS (discovery document and keys fetched
through the outbound policy, cached, fetched again on an unknown ``kid``, at most once per
``refresh_floor`` seconds per issuer). Algorithms come from an allow-list of asymmetric
ones; ``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` are checked with a small clock skew; a
verified token is cached until it expires, so each token is verified once.

Issuers: the platform's (``URBANOS_OIDC_ISSUER``, valid in every tenant) and one per tenant
(added at run time through the admin API, valid only in its tenant).
"""

from __future__ import annotations

from collections.abc import Mapping

from urbanos.core.policy import Principal


class Authenticator:
    async def open(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def reload_issuers(self) -> None:
        """The issuers changed (this node or another): read them again on next use."""
        raise NotImplementedError

    async def authenticate(self, headers: Mapping[str, str], tenant: str) -> Principal:
        """The principal of a request's headers (lower-case names) in ``tenant``:
        ``Authorization: Bearer <JWT>``, ``Authorization: ApiKey <key>`` or
        ``X-Api-Key: <key>``; no credentials: the anonymous principal. Raises
        ``Unauthorized`` (with its ``WWW-Authenticate`` challenge) for credentials that do
        not verify or that are not valid in ``tenant``."""
        raise NotImplementedError
