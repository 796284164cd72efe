"""Every setting in one declarative table: name, default, help, and its URBANOS_* variable.

The CLI builds its flags from this table and the docs test checks that each one is
documented, so adding a row is all a new setting needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "URBANOS_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "address to listen on"),
    Setting("port", 1026, "port to listen on"),
    Setting("store", "sqlite:///./data/urbanos.db", "store URL: sqlite:///path.db, postgresql://user@host:port/db or memory://"),
    Setting("log_level", "info", "log level: debug, info, warning, error"),
    Setting("max_body_bytes", 1_048_576, "largest request body accepted (413 above it)"),
    Setting("max_json_depth", 32, "deepest JSON nesting accepted in a request body"),
    Setting("max_batch", 10_000, "most entities in one batch request"),
    Setting("max_limit", 1000, "largest page size a query may ask for"),
    Setting("default_limit", 20, "page size when a query does not give one"),
    Setting("context_timeout", 5.0, "seconds allowed for fetching one remote @context"),
    Setting("context_max_bytes", 1_048_576, "largest remote @context document accepted"),
    Setting("context_max_depth", 8, "deepest chain of @context documents importing others"),
    Setting("context_failure_ttl", 10.0,
            "seconds a failed @context fetch is remembered (requests needing it fail at once)"),
    Setting("outbound_policy", "default", "outbound URL policy: default or strict (production)"),
    Setting("outbound_allow", "", "comma-separated CIDR ranges exempt from the outbound policy"),
    Setting("sqlite_synchronous", "full",
            "SQLite durability: full (acknowledged writes survive power loss) or normal "
            "(they survive a killed process; the last ones may roll back on power loss)"),
    Setting("workers_read", 4, "reader connections (SQLite threads; PostgreSQL pool size - 4)"),
    Setting("public_url", "", "base URL clients reach the broker at; default http://HOST:PORT"),
    Setting("notify_timeout", 10.0, "seconds allowed for sending one notification"),
    Setting("notify_max_attempts", 10, "sends of one notification before it is dead-lettered"),
    Setting("notify_backoff", 1.0, "seconds before the first retry; doubles per failure"),
    Setting("notify_backoff_max", 300.0, "longest pause between two notification attempts"),
    Setting("notify_concurrency", 4, "notifications sent at once to one endpoint"),
    Setting("notify_queue", 256, "notifications per endpoint held in memory (rest wait on disk)"),
    Setting("notify_inflight", 10_000, "notifications held in memory over all endpoints"),
    Setting("temporal_instance_limit", 10,
            "most instances (or aggregation periods) per attribute in one temporal response"),
    Setting("temporal_retention_days", "",
            "days of history kept: DAYS or DAYS,TENANT=DAYS,...; empty or 0 keeps all"),
    Setting("auth", "",
            "authentication: none, oidc, apikey or oidc,apikey; empty means none on a loopback "
            "address and refusing to start on any other"),
    Setting("insecure_open", False,
            "allow URBANOS_AUTH=none on a non-loopback address (anyone reaching the port may "
            "read and change every tenant's data)"),
    Setting("oidc_issuer", "",
            "the platform's OpenID Connect issuer URL (tenants may add their own at run time)"),
    Setting("oidc_audience", "", "the audience (aud) access tokens must carry; empty: not checked"),
    Setting("oidc_claims", "",
            "claim mapping as JSON, e.g. {\"roles\": \"realm_access.roles\", \"groups\": "
            "\"groups\"}; empty: the defaults in docs/security.md"),
    Setting("oidc_clock_skew", 60.0, "seconds of clock difference tolerated on exp, nbf, iat"),
    Setting("anonymous_role", "",
            "role of callers without credentials in every tenant (e.g. reader for an open-data "
            "broker); empty: none, grants to 'public' still apply"),
    Setting("rate_limit", "",
            "requests per second per principal, by role: RATE or ROLE=RATE,...[,burst=N]; "
            "empty: no limit"),
    Setting("audit_retention_days", 365.0, "days the audit log is kept; 0 keeps everything"),
    Setting("tls_cert", "", "PEM certificate chain: serve HTTPS (with tls_key)"),
    Setting("tls_key", "", "PEM private key of tls_cert"),
    Setting("federation_timeout", 5.0,
            "seconds allowed for one request forwarded to a context source (unless its "
            "registration's management.timeout says otherwise)"),
    Setting("federation_max_bytes", 16_777_216,
            "largest answer accepted from a context source (larger: NGSILD-Warning 111)"),
    Setting("federation_cooldown", 0.0,
            "seconds a context source is skipped after a failed request (unless its "
            "registration's management.cooldown says otherwise); 0: never skipped"),
)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 1026
    store: str = "sqlite:///./data/urbanos.db"
    log_level: str = "info"
    max_body_bytes: int = 1_048_576
    max_json_depth: int = 32
    max_batch: int = 10_000
    max_limit: int = 1000
    default_limit: int = 20
    context_timeout: float = 5.0
    context_max_bytes: int = 1_048_576
    context_max_depth: int = 8
    context_failure_ttl: float = 10.0
    outbound_policy: str = "default"
    outbound_allow: str = ""
    sqlite_synchronous: str = "full"
    workers_read: int = 4
    public_url: str = ""
    notify_timeout: float = 10.0
    notify_max_attempts: int = 10
    notify_backoff: float = 1.0
    notify_backoff_max: float = 300.0
    notify_concurrency: int = 4
    notify_queue: int = 256
    notify_inflight: int = 10_000
    temporal_instance_limit: int = 10
    temporal_retention_days: str = ""
    auth: str = ""
    insecure_open: bool = False
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_claims: str = ""
    oidc_clock_skew: float = 60.0
    anonymous_role: str = ""
    rate_limit: str = ""
    audit_retention_days: float = 365.0
    tls_cert: str = ""
    tls_key: str = ""
    federation_timeout: float = 5.0
    federation_max_bytes: int = 16_777_216
    federation_cooldown: float = 0.0

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def auth_modes(self) -> frozenset[str]:
        """``auth`` as a set: empty for none (every caller may do everything)."""
        modes = frozenset(m.strip().lower() for m in self.auth.split(",") if m.strip())
        modes -= {"none"}
        unknown = modes - {"oidc", "apikey"}
        if unknown:
            raise SystemExit(f"URBANOS_AUTH: unknown mode(s) {', '.join(sorted(unknown))}; "
                             "expected none, oidc, apikey or oidc,apikey")
        return modes

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then URBANOS_* variables, then explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for s in SETTINGS:
            if s.env in env:
                values[s.name] = _coerce(s.default, env[s.env], s.env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _coerce(default: Any, raw: str, name: str) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name}: expected a number, got {raw!r}") from exc
    return raw


assert {f.name for f in fields(Settings)} == {s.name for s in SETTINGS}, "settings table drift"
assert all(getattr(Settings(), s.name) == s.default for s in SETTINGS), "settings default drift"
