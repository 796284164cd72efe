"""The access store in the entity store's SQLite file: grants, API keys, issuers, audit.

Tables are created on open, beside the entities, and written through the store's writer
(``db.transact``). The audit hook runs on ``SqliteStore.write_hooks`` inside the entity
write's transaction (after history and the outbox), so a write and its record commit or
roll back together. ``audit_entities`` indexes the entity ids of each record, so a query
by entity does not scan the log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from urbanos.core.policy import Grant, Role
from urbanos.core.timeutil import now_iso
from urbanos.storage.access import (
    ApiKey,
    AuditFilter,
    AuditNotes,
    AuditRecord,
    Issuer,
    audit_where,
    noted_records,
)
from urbanos.storage.base import Write

if TYPE_CHECKING:
    from urbanos.storage.sqlite import SqliteStore

__all__ = ["SqliteAccessStore"]

SCHEMA: list[str] = [
    """CREATE TABLE IF NOT EXISTS access_grants (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        doc TEXT NOT NULL,
        UNIQUE (tenant, id)
    )""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        role TEXT NOT NULL,
        name TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT,
        last_used_at TEXT,
        created_by TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant)",
    """CREATE TABLE IF NOT EXISTS oidc_issuers (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        url TEXT NOT NULL,
        audience TEXT,
        claims TEXT NOT NULL,
        UNIQUE (tenant, url)
    )""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        principal TEXT NOT NULL,
        client TEXT,
        tenant TEXT NOT NULL,
        operation TEXT NOT NULL,
        entity_ids TEXT NOT NULL,
        outcome TEXT NOT NULL,
        status INTEGER NOT NULL,
        request_id TEXT,
        detail TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log (tenant, seq)",
    "CREATE INDEX IF NOT EXISTS audit_log_principal ON audit_log (principal, seq)",
    "CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time)",
    """CREATE TABLE IF NOT EXISTS audit_entities (
        entity_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (entity_id, seq)
    ) WITHOUT ROWID""",
]

_KEY_COLUMNS = ("id, tenant, role, name, secret_hash, created_at, expires_at, revoked_at,"
                " last_used_at, created_by")
_AUDIT_COLUMNS = ("seq, time, principal, client, tenant, operation, entity_ids, outcome,"
                  " status, request_id, detail")


def _key(row: tuple[Any, ...]) -> ApiKey:
    id_, tenant, role, name, secret_hash, created, expires, revoked, used, by = row
    return ApiKey(id_, tenant, Role(role), name, secret_hash, created, expires, revoked, used, by)


def _record(row: tuple[Any, ...]) -> AuditRecord:
    seq, time, principal, client, tenant, operation, ids, outcome, status, rid, detail = row
    return AuditRecord(time, principal, client, tenant, operation, tuple(orjson.loads(ids)),
                       outcome, status, rid, detail, seq)


def _insert(conn: sqlite3.Connection, records: Sequence[AuditRecord]) -> None:
    for r in records:
        cur = conn.execute(
            "INSERT INTO audit_log (time, principal, client, tenant, operation, entity_ids,"
            " outcome, status, request_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.time, r.principal, r.client, r.tenant, r.operation,
             orjson.dumps(list(r.entity_ids)).decode(), r.outcome, r.status, r.request_id,
             r.detail),
        )
        seq = cur.lastrowid
        cur.close()
        conn.executemany(
            "INSERT OR IGNORE INTO audit_entities (entity_id, seq) VALUES (?, ?)",
            [(eid, seq) for eid in r.entity_ids],
        )


def _where(where: AuditFilter) -> tuple[str, list[Any]]:
    # not LIKE, which would read _ and % in the prefix as wildcards
    return audit_where(where, "?", "instr(operation, ?) = 1",
                       "seq IN (SELECT seq FROM audit_entities WHERE entity_id = ?)")


class SqliteAccessStore:
    """Shares the entity store's ``Database``; registers the audit hook on the store."""

    def __init__(self, store: SqliteStore) -> None:
        self.db = store.db
        self.notes = AuditNotes()
        store.write_hooks.append(self._record)

    def _record(self, conn: sqlite3.Connection, tenant: str, writes: list[Write]) -> None:
        """Runs inside the entity write's transaction: the record commits with it."""
        _insert(conn, noted_records(self.notes, tenant, writes, now_iso()))

    async def open(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for stmt in SCHEMA:
                conn.execute(stmt)

        await self.db.transact(run)

    async def close(self) -> None:
        return None  # the entity store closes the file

    # grants ------------------------------------------------------------------------
    async def grants(self, tenant: str) -> list[Grant]:
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT doc FROM access_grants WHERE tenant = ? ORDER BY seq", (tenant,)
        ).fetchall())
        return [Grant.from_json(orjson.loads(doc)) for (doc,) in rows]

    async def put_grant(self, grant: Grant) -> None:
        doc = orjson.dumps(grant.to_json()).decode()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                """INSERT INTO access_grants (tenant, id, doc) VALUES (?, ?, ?)
                   ON CONFLICT (tenant, id) DO UPDATE SET doc = excluded.doc""",
                (grant.tenant, grant.id, doc),
            )

        await self.db.transact(run)

    async def delete_grant(self, tenant: str, grant_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "DELETE FROM access_grants WHERE tenant = ? AND id = ?", (tenant, grant_id)
            ).rowcount > 0

        return await self.db.transact(run)

    # API keys ----------------------------------------------------------------------
    async def put_key(self, key: ApiKey) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, role = excluded.role,"
                " name = excluded.name, secret_hash = excluded.secret_hash,"
                " created_at = excluded.created_at, expires_at = excluded.expires_at,"
                " revoked_at = excluded.revoked_at, last_used_at = excluded.last_used_at,"
                " created_by = excluded.created_by",
                (key.id, key.tenant, key.role.value, key.name, key.secret_hash, key.created_at,
                 key.expires_at, key.revoked_at, key.last_used_at, key.created_by),
            )

        await self.db.transact(run)

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self.db.read(lambda conn: conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
        ).fetchone())
        return _key(row) if row else None

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if tenant is None:
                return conn.execute(
                    f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY rowid").fetchall()
            return conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY rowid",
                (tenant,),
            ).fetchall()

        return [_key(row) for row in await self.db.read(run)]

    async def revoke_key(self, key_id: str, at: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at, key_id),
            ).rowcount > 0

        return await self.db.transact(run)

    async def touch_keys(self, used: dict[str, str]) -> None:
        if not used:
            return
        rows = [(at, key_id) for key_id, at in used.items()]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE api_keys SET last_used_at = ? WHERE id = ?", rows)

        await self.db.transact(run)

    # identity providers ------------------------------------------------------------
    async def issuers(self) -> list[Issuer]:
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT tenant, url, audience, claims FROM oidc_issuers ORDER BY seq"
        ).fetchall())
        return [Issuer(t, url, aud, orjson.loads(claims)) for t, url, aud, claims in rows]

    async def put_issuer(self, issuer: Issuer) -> None:
        claims = orjson.dumps(issuer.claims).decode()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                """INSERT INTO oidc_issuers (tenant, url, audience, claims) VALUES (?, ?, ?, ?)
                   ON CONFLICT (tenant, url)
                   DO UPDATE SET audience = excluded.audience, claims = excluded.claims""",
                (issuer.tenant, issuer.url, issuer.audience, claims),
            )

        await self.db.transact(run)

    async def delete_issuer(self, tenant: str, url: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "DELETE FROM oidc_issuers WHERE tenant = ? AND url = ?", (tenant, url)
            ).rowcount > 0

        return await self.db.transact(run)

    # audit -------------------------------------------------------------------------
    async def append(self, records: Sequence[AuditRecord]) -> None:
        if records:
            await self.db.transact(lambda conn: _insert(conn, records))

    async def audit(self, where: AuditFilter) -> list[AuditRecord]:
        clause, params = _where(where)
        sql = (f"SELECT {_AUDIT_COLUMNS} FROM audit_log{clause}"
               " ORDER BY seq DESC LIMIT ? OFFSET ?")
        rows = await self.db.read(
            lambda conn: conn.execute(sql, [*params, where.limit, where.offset]).fetchall())
        return [_record(row) for row in rows]

    async def purge_audit(self, before: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute(
                "DELETE FROM audit_entities WHERE seq IN"
                " (SELECT seq FROM audit_log WHERE time < ?)", (before,))
            return int(conn.execute("DELETE FROM audit_log WHERE time < ?", (before,)).rowcount)

        return await self.db.transact(run)
