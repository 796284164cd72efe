"""The access-control store: grants, API keys, per-tenant identity providers, the audit log.

One interface, every backend (memory, SQLite in the entity file, PostgreSQL in the
``urbanos`` catalog schema). Grants are ``core.policy.Grant``; the other records are here.
An API key's secret is never stored: only its SHA-256 hash.

Audit records of entity writes commit with the write: the service attaches them to the
``Write``s of its plan (``AuditNotes.attach``) and the store's write hook inserts them in
the same transaction. Denials and other operations are appended on their own (``append``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from urbanos.core.policy import Grant, Role
from urbanos.storage.base import Write
from urbanos.types import JSONObject


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # public part of the key, ``uk_<id>.<secret>``
    tenant: str
    role: Role
    name: str
    secret_hash: str  # hex SHA-256 of the secret
    created_at: str  # canonical times (core.timeutil)
    expires_at: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = None
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class Issuer:
    """An OpenID Connect provider trusted for one tenant (``*``: the platform's)."""

    tenant: str
    url: str  # the ``iss`` value; discovery at url + /.well-known/openid-configuration
    audience: str | None = None
    #: claim mapping: which claims hold roles, tenant roles, groups (defaults in
    #: services.auth)
    claims: JSONObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    time: str
    principal: str  # Principal.key
    client: str | None
    tenant: str
    operation: str  # e.g. "entity.create", "batch.upsert", "grant.add", "key.revoke"
    entity_ids: tuple[str, ...]
    outcome: str  # "ok" | "denied" | "failed"
    status: int
    request_id: str | None = None
    detail: str | None = None
    seq: int | None = None  # assigned by the store


@dataclass(frozen=True, slots=True)
class AuditFilter:
    tenant: str | None = None
    principal: str | None = None
    operation: str | None = None
    outcome: str | None = None
    entity_id: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 100
    offset: int = 0


class AccessStore(Protocol):
    notes: AuditNotes

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # grants ------------------------------------------------------------------------
    async def grants(self, tenant: str) -> list[Grant]:
        """The tenant's grants in insertion order (a replaced grant keeps its place)."""
        ...

    async def put_grant(self, grant: Grant) -> None:
        """Insert, or replace the grant with the same (tenant, id)."""
        ...

    async def delete_grant(self, tenant: str, grant_id: str) -> bool: ...

    # API keys ----------------------------------------------------------------------
    async def put_key(self, key: ApiKey) -> None: ...

    async def get_key(self, key_id: str) -> ApiKey | None: ...

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]: ...

    async def revoke_key(self, key_id: str, at: str) -> bool:
        """Mark the key revoked (its row stays); False when unknown or already revoked."""
        ...

    async def touch_keys(self, used: dict[str, str]) -> None:
        """Record last-used times (key id -> time), batched by the service."""

    # identity providers ------------------------------------------------------------
    async def issuers(self) -> list[Issuer]: ...

    async def put_issuer(self, issuer: Issuer) -> None: ...

    async def delete_issuer(self, tenant: str, url: str) -> bool: ...

    # audit -------------------------------------------------------------------------
    async def append(self, records: Sequence[AuditRecord]) -> None:
        """Add records (their ``seq`` is assigned, increasing); nothing ever updates one."""
        ...

    async def audit(self, where: AuditFilter) -> list[AuditRecord]:
        """Matching records newest first (``audit_matches``), then offset and limit."""
        ...

    async def purge_audit(self, before: str) -> int:
        """Delete the records older than ``before`` (retention); how many went."""
        ...


@dataclass(frozen=True, slots=True)
class AuditNote:
    """Who made a write, attached by the service to the ``Write``s of its plan; the access
    store's write hook turns the writes of one transaction that share a note into one
    ``AuditRecord`` (outcome ok) in that transaction."""

    principal: str
    client: str | None
    operation: str
    request_id: str | None = None
    status: int = 0
    detail: str | None = None


def noted_records(notes: AuditNotes, tenant: str, writes: Sequence[Write],
                  time: str) -> list[AuditRecord]:
    """What a write hook records for one call: one record per distinct note among
    ``writes`` (taking each note), naming the ids of the writes that carry it, in order.
    Writes without a note record nothing."""
    if not len(notes):  # the common case of an open broker: no lock taken per write
        return []
    ids: dict[AuditNote, list[str]] = {}
    for w in writes:
        note = notes.take(w)
        if note is not None:
            ids.setdefault(note, []).append(w.entity_id)
    return [
        AuditRecord(time, n.principal, n.client, tenant, n.operation, tuple(entity_ids), "ok",
                    n.status, n.request_id, n.detail)
        for n, entity_ids in ids.items()
    ]


def operation_matches(wanted: str, operation: str) -> bool:
    """``entity.`` (ending with a dot) selects a family of operations, anything else one."""
    return operation.startswith(wanted) if wanted.endswith(".") else operation == wanted


def audit_where(where: AuditFilter, mark: str, prefix: str, entity: str
                ) -> tuple[str, list[Any]]:
    """The SQL conditions of ``where`` (agreeing with ``audit_matches``) for both SQL
    stores: ``mark`` is their placeholder; ``prefix`` the condition of an operation family
    (``grant.``: one placeholder for the prefix), ``entity`` that of an entity id (one
    placeholder), which each spells its own way."""
    parts: list[str] = []
    params: list[Any] = []
    for column in ("tenant", "principal", "outcome"):
        value = getattr(where, column)
        if value is not None:
            parts.append(f"{column} = {mark}")
            params.append(value)
    if where.operation is not None:
        family = where.operation.endswith(".")
        parts.append(prefix if family else f"operation = {mark}")
        params.append(where.operation)
    if where.entity_id is not None:
        parts.append(entity)
        params.append(where.entity_id)
    if where.since is not None:
        parts.append(f"time >= {mark}")
        params.append(where.since)
    if where.until is not None:
        parts.append(f"time < {mark}")
        params.append(where.until)
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def audit_matches(where: AuditFilter, record: AuditRecord) -> bool:
    """Whether ``record`` passes ``where`` (limit and offset aside): the reference the SQL
    backends' conditions agree with. ``since`` is inclusive, ``until`` exclusive."""
    return (
        (where.tenant is None or record.tenant == where.tenant)
        and (where.principal is None or record.principal == where.principal)
        and (where.operation is None or operation_matches(where.operation, record.operation))
        and (where.outcome is None or record.outcome == where.outcome)
        and (where.entity_id is None or where.entity_id in record.entity_ids)
        and (where.since is None or record.time >= where.since)
        and (where.until is None or record.time < where.until)
    )


class AuditNotes:
    """Notes waiting for the hook, by the identity of the Write they belong to (the same
    scheme as ``storage.temporal.Directives``: the entity store's interface is unchanged).

    Each entry keeps its Write alive: an id is unique only among live objects, so a note
    left behind (a plan run again, a write that failed before the hook) must not pass to
    a new Write that happens to get the same id."""

    def __init__(self) -> None:
        import threading

        self._waiting: dict[int, tuple[object, AuditNote]] = {}
        self._lock = threading.Lock()

    def attach(self, write: object, note: AuditNote) -> None:
        with self._lock:
            self._waiting[id(write)] = (write, note)

    def take(self, write: object) -> AuditNote | None:
        with self._lock:
            entry = self._waiting.get(id(write))
            if entry is None or entry[0] is not write:
                return None
            del self._waiting[id(write)]
            return entry[1]

    def discard(self, writes: Sequence[object]) -> None:
        """Forget notes whose write never reached the hook (the plan failed)."""
        with self._lock:
            for w in writes:
                entry = self._waiting.get(id(w))
                if entry is not None and entry[0] is w:
                    del self._waiting[id(w)]

    def __len__(self) -> int:
        """How many notes wait (a growing number means writes left without ``discard``)."""
        return len(self._waiting)
