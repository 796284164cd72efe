"""The access store in the PostgreSQL catalog schema (migration catalog/0008).

Shares the entity store's pool. The audit hook is awaited on the entity write's own
connection, inside its transaction (after history and the outbox), so a write and its
record commit or roll back together on every node. Names are qualified (``urbanos.``):
the hook runs with the tenant's ``search_path``.

A change of a grant, an API key or an issuer is announced on ``ACCESS_CHANNEL``
(``listen.announcement`` of the tenant, NOTIFY in the changing transaction), so the other
nodes can drop what they cached of that tenant once it has committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg.types.json import Json, Jsonb

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
from urbanos.storage.postgres.listen import ACCESS_CHANNEL, announcement, node_for

if TYPE_CHECKING:
    from urbanos.storage.postgres import PostgresStore

__all__ = ["ACCESS_CHANNEL", "PostgresAccessStore"]


_KEY_COLUMNS = ("id, tenant, role, name, secret_hash, created_at, expires_at, revoked_at,"
                " last_used_at, created_by")
_AUDIT_COLUMNS = ("seq, time, principal, client, tenant, operation, entity_ids, outcome,"
                  " status, request_id, detail")
_INSERT_AUDIT = (
    "INSERT INTO urbanos.audit_log (time, principal, client, tenant, operation, entity_ids,"
    " outcome, status, request_id, detail)"
    " VALUES (%s, %s, %s, %s, %s, %s::text[], %s, %s, %s, %s)"
)


def _key(row: Sequence[Any]) -> ApiKey:
    id_, tenant, role, name, secret_hash, created, expires, revoked, used, by = row
    return ApiKey(id_, tenant, Role(role), name, secret_hash, created, expires, revoked, used, by)


def _record(row: Sequence[Any]) -> AuditRecord:
    seq, time, principal, client, tenant, operation, ids, outcome, status, rid, detail = row
    return AuditRecord(time, principal, client, tenant, operation, tuple(ids), outcome, status,
                       rid, detail, seq)


async def _insert(conn: AsyncConnection, records: Sequence[AuditRecord]) -> None:
    if not records:
        return
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT_AUDIT, [
            (r.time, r.principal, r.client, r.tenant, r.operation, list(r.entity_ids),
             r.outcome, r.status, r.request_id, r.detail)
            for r in records
        ])


def _where(where: AuditFilter) -> tuple[str, list[Any]]:
    return audit_where(where, "%s", "starts_with(operation, %s)",
                       "entity_ids @> ARRAY[%s]::text[]")


class PostgresAccessStore:
    """Its tables come with the catalog migrations; registers the audit hook on the store."""

    def __init__(self, store: PostgresStore) -> None:
        self.db = store.db
        self.notes = AuditNotes()
        self._store = store
        store.write_hooks.append(self._record)

    async def _record(self, conn: AsyncConnection, tenant: str, writes: list[Write]) -> None:
        """Runs inside the entity write's transaction: the record commits with it."""
        await _insert(conn, noted_records(self.notes, tenant, writes, now_iso()))

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None  # the entity store closes the pool

    async def _rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async def run(conn: AsyncConnection) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        return await self.db.read(run)

    async def _change(self, query: str, params: Sequence[Any],
                      tenant: str | None = None) -> int:
        """Run one statement; with ``tenant``, announce the change when it changed rows."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(query, params)
            if tenant is not None and cur.rowcount > 0:
                await self._announce(conn, tenant)
            return cur.rowcount

    async def _announce(self, conn: AsyncConnection, tenant: str) -> None:
        """Delivered to every listening node once the transaction commits."""
        node = node_for(self._store)
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (ACCESS_CHANNEL, announcement(node.node_id, tenant)))

    # grants ------------------------------------------------------------------------
    async def grants(self, tenant: str) -> list[Grant]:
        rows = await self._rows(
            "SELECT doc FROM urbanos.access_grants WHERE tenant = %s ORDER BY seq", (tenant,))
        return [Grant.from_json(doc) for (doc,) in rows]

    async def put_grant(self, grant: Grant) -> None:
        await self._change(
            """INSERT INTO urbanos.access_grants (tenant, id, doc) VALUES (%s, %s, %s)
               ON CONFLICT (tenant, id) DO UPDATE SET doc = excluded.doc""",
            (grant.tenant, grant.id, Json(grant.to_json())), grant.tenant,
        )

    async def delete_grant(self, tenant: str, grant_id: str) -> bool:
        return await self._change(
            "DELETE FROM urbanos.access_grants WHERE tenant = %s AND id = %s",
            (tenant, grant_id), tenant,
        ) > 0

    # API keys ----------------------------------------------------------------------
    async def put_key(self, key: ApiKey) -> None:
        await self._change(
            f"""INSERT INTO urbanos.api_keys ({_KEY_COLUMNS})
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, role = excluded.role,
                name = excluded.name, secret_hash = excluded.secret_hash,
                created_at = excluded.created_at, expires_at = excluded.expires_at,
                revoked_at = excluded.revoked_at, last_used_at = excluded.last_used_at,
                created_by = excluded.created_by""",
            (key.id, key.tenant, key.role.value, key.name, key.secret_hash, key.created_at,
             key.expires_at, key.revoked_at, key.last_used_at, key.created_by), key.tenant,
        )

    async def get_key(self, key_id: str) -> ApiKey | None:
        rows = await self._rows(
            f"SELECT {_KEY_COLUMNS} FROM urbanos.api_keys WHERE id = %s", (key_id,))
        return _key(rows[0]) if rows else None

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        if tenant is None:
            rows = await self._rows(f"SELECT {_KEY_COLUMNS} FROM urbanos.api_keys ORDER BY seq")
        else:
            rows = await self._rows(
                f"SELECT {_KEY_COLUMNS} FROM urbanos.api_keys WHERE tenant = %s ORDER BY seq",
                (tenant,),
            )
        return [_key(row) for row in rows]

    async def revoke_key(self, key_id: str, at: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                """UPDATE urbanos.api_keys SET revoked_at = %s
                   WHERE id = %s AND revoked_at IS NULL RETURNING tenant""",
                (at, key_id),
            )
            row = await cur.fetchone()
            if row is not None:
                await self._announce(conn, row[0])
        return row is not None

    async def touch_keys(self, used: dict[str, str]) -> None:
        if not used:
            return
        await self._change(
            """UPDATE urbanos.api_keys AS k SET last_used_at = u.at
               FROM unnest(%s::text[], %s::text[]) AS u (id, at) WHERE k.id = u.id""",
            (list(used), list(used.values())),
        )

    # identity providers ------------------------------------------------------------
    async def issuers(self) -> list[Issuer]:
        rows = await self._rows(
            "SELECT tenant, url, audience, claims FROM urbanos.oidc_issuers ORDER BY seq")
        return [Issuer(t, url, aud, claims) for t, url, aud, claims in rows]

    async def put_issuer(self, issuer: Issuer) -> None:
        await self._change(
            """INSERT INTO urbanos.oidc_issuers (tenant, url, audience, claims)
               VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, url)
               DO UPDATE SET audience = excluded.audience, claims = excluded.claims""",
            (issuer.tenant, issuer.url, issuer.audience, Jsonb(issuer.claims)), issuer.tenant,
        )

    async def delete_issuer(self, tenant: str, url: str) -> bool:
        return await self._change(
            "DELETE FROM urbanos.oidc_issuers WHERE tenant = %s AND url = %s", (tenant, url),
            tenant,
        ) > 0

    # audit -------------------------------------------------------------------------
    async def append(self, records: Sequence[AuditRecord]) -> None:
        if records:
            async with self.db.transaction() as conn:
                await _insert(conn, records)

    async def audit(self, where: AuditFilter) -> list[AuditRecord]:
        clause, params = _where(where)
        rows = await self._rows(
            f"SELECT {_AUDIT_COLUMNS} FROM urbanos.audit_log{clause}"
            " ORDER BY seq DESC LIMIT %s OFFSET %s",
            [*params, where.limit, where.offset],
        )
        return [_record(row) for row in rows]

    async def purge_audit(self, before: str) -> int:
        return await self._change("DELETE FROM urbanos.audit_log WHERE time < %s", (before,))
