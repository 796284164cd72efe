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
    Setting("store", "sqlite:///./data/urbanos.db", "store URL: sqlite:///path.db or memory://"),
    Setting("log_level", "info", "log level: debug, info, warning, error"),
    Setting("max_body_bytes", 1_048_576, "largest request body accepted (413 above it)"),
    Setting("max_json_depth", 32, "deepest JSON nesting accepted in a request body"),
    Setting("max_batch", 10_000, "most entities in one batch request"),
    Setting("max_limit", 1000, "largest page size a query may ask for"),
    Setting("default_limit", 20, "page size when a query does not give one"),
    Setting("context_timeout", 5.0, "seconds allowed for fetching one remote @context"),
    Setting("context_max_bytes", 1_048_576, "largest remote @context document accepted"),
    Setting("context_max_depth", 8, "deepest chain of @context documents importing others"),
    Setting("outbound_policy", "default", "outbound URL policy: default or strict (production)"),
    Setting("outbound_allow", "", "comma-separated CIDR ranges exempt from the outbound policy"),
    Setting("workers_read", 4, "SQLite reader connections"),
    Setting("public_url", "", "base URL clients reach the broker at; default http://HOST:PORT"),
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
    outbound_policy: str = "default"
    outbound_allow: str = ""
    workers_read: int = 4
    public_url: str = ""

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

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
