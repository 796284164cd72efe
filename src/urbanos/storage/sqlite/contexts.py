"""The @context registry in the SQLite file of the entity store (shares its ``Database``).

One row per entry; a Cached entry is unique per (tenant, url), so a download refreshes
the entry already kept for its URL. Times are ISO 8601 text. Bound parameters only.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import orjson

from urbanos.storage.base import ContextEntry, ContextUse
from urbanos.storage.sqlite.database import Database

__all__ = ["SCHEMA", "SqliteContextStore"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jsonld_contexts (
        tenant TEXT NOT NULL,
        local_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        document TEXT NOT NULL,
        created_at TEXT NOT NULL,
        url TEXT,
        expires_at TEXT,
        last_usage TEXT,
        hits INTEGER NOT NULL DEFAULT 0,
        key BLOB,
        PRIMARY KEY (tenant, local_id)
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS jsonld_contexts_cached_url
        ON jsonld_contexts (tenant, url) WHERE kind = 'Cached'""",
]
_COLUMNS = "tenant, local_id, kind, document, created_at, url, expires_at, last_usage, hits, key"


def _time(value: datetime | None) -> str | None:
    """UTC with microseconds always: the text sorts like the time (``max`` in SQL)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _row(row: tuple[Any, ...]) -> tuple[str, ContextEntry]:
    tenant, local_id, kind, document, created, url, expires, last, hits, key = row
    created_at = _parse(created)
    assert created_at is not None
    entry = ContextEntry(
        local_id=local_id, kind=kind, document=orjson.loads(document), created_at=created_at,
        url=url, expires_at=_parse(expires), last_usage=_parse(last), hits=int(hits),
        key=bytes(key) if key is not None else None,
    )
    return str(tenant), entry


def _values(tenant: str, e: ContextEntry) -> tuple[Any, ...]:
    return (tenant, e.local_id, e.kind, orjson.dumps(e.document).decode(),
            _time(e.created_at), e.url, _time(e.expires_at), _time(e.last_usage), e.hits, e.key)


class SqliteContextStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(self, tenant: str | None = None) -> list[tuple[str, ContextEntry]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, ContextEntry]]:
            if tenant is None:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM jsonld_contexts")
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM jsonld_contexts WHERE tenant = ?", (tenant,)
                )
            return [_row(r) for r in rows]

        return await self.db.read(run)

    async def get(self, tenant: str, local_id: str) -> ContextEntry | None:
        def run(conn: sqlite3.Connection) -> ContextEntry | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM jsonld_contexts WHERE tenant = ? AND local_id = ?",
                (tenant, local_id),
            ).fetchone()
            return _row(row)[1] if row else None

        return self.db.read_now(run)

    async def add(self, tenant: str, entry: ContextEntry) -> None:
        await self.db.transact(
            lambda conn: conn.execute(
                f"INSERT INTO jsonld_contexts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _values(tenant, entry),
            )
        )

    async def cache(self, tenant: str, entry: ContextEntry) -> ContextEntry:
        def run(conn: sqlite3.Connection) -> ContextEntry:
            row = conn.execute(
                f"""INSERT INTO jsonld_contexts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (tenant, url) WHERE kind = 'Cached' DO UPDATE SET
                    document = excluded.document, created_at = excluded.created_at,
                    expires_at = excluded.expires_at
                RETURNING {_COLUMNS}""",
                _values(tenant, entry),
            ).fetchone()
            return _row(row)[1]

        return await self.db.transact(run)

    async def delete(self, tenant: str, local_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM jsonld_contexts WHERE tenant = ? AND local_id = ?", (tenant, local_id)
            )
            return cur.rowcount > 0

        return await self.db.transact(run)

    async def count_uses(self, uses: list[ContextUse]) -> None:
        if not uses:
            return
        await self.db.transact(
            lambda conn: conn.executemany(
                """UPDATE jsonld_contexts SET hits = hits + ?,
                    last_usage = max(coalesce(last_usage, ''), ?)
                WHERE tenant = ? AND local_id = ?""",
                [(u.hits, _time(u.last_usage), u.tenant, u.local_id) for u in uses],
            )
        )
