"""The access store in memory, beside ``MemoryStore``: the reference for the SQL backends.

Its write hook runs right after the memory store applies a batch (``write_hooks``, after
history and the outbox), so an entity write and its audit record appear together.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import replace

from urbanos.core.policy import Grant
from urbanos.core.timeutil import now_iso
from urbanos.storage.access import (
    ApiKey,
    AuditFilter,
    AuditNotes,
    AuditRecord,
    Issuer,
    audit_matches,
    noted_records,
)
from urbanos.storage.base import Write
from urbanos.storage.memory import MemoryStore

__all__ = ["MemoryAccessStore"]


class MemoryAccessStore:
    def __init__(self, store: MemoryStore | None = None) -> None:
        self.notes = AuditNotes()
        self._grants: dict[tuple[str, str], Grant] = {}  # insertion order kept by dict
        self._keys: dict[str, ApiKey] = {}
        self._issuers: dict[tuple[str, str], Issuer] = {}
        self._audit: list[AuditRecord] = []  # ascending seq
        self._seq = itertools.count(1)
        if store is not None:
            store.write_hooks.append(self._record)

    def _record(self, tenant: str, writes: list[Write]) -> None:
        self._add(noted_records(self.notes, tenant, writes, now_iso()))

    def _add(self, records: Sequence[AuditRecord]) -> None:
        self._audit.extend(replace(r, seq=next(self._seq)) for r in records)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # grants ------------------------------------------------------------------------
    async def grants(self, tenant: str) -> list[Grant]:
        return [g for (t, _), g in self._grants.items() if t == tenant]

    async def put_grant(self, grant: Grant) -> None:
        self._grants[(grant.tenant, grant.id)] = grant

    async def delete_grant(self, tenant: str, grant_id: str) -> bool:
        return self._grants.pop((tenant, grant_id), None) is not None

    # API keys ----------------------------------------------------------------------
    async def put_key(self, key: ApiKey) -> None:
        self._keys[key.id] = key

    async def get_key(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        return [k for k in self._keys.values() if tenant is None or k.tenant == tenant]

    async def revoke_key(self, key_id: str, at: str) -> bool:
        key = self._keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self._keys[key_id] = replace(key, revoked_at=at)
        return True

    async def touch_keys(self, used: dict[str, str]) -> None:
        for key_id, at in used.items():
            if (key := self._keys.get(key_id)) is not None:
                self._keys[key_id] = replace(key, last_used_at=at)

    # identity providers ------------------------------------------------------------
    async def issuers(self) -> list[Issuer]:
        return [replace(i, claims=copy.deepcopy(i.claims)) for i in self._issuers.values()]

    async def put_issuer(self, issuer: Issuer) -> None:
        self._issuers[(issuer.tenant, issuer.url)] = replace(
            issuer, claims=copy.deepcopy(issuer.claims))

    async def delete_issuer(self, tenant: str, url: str) -> bool:
        return self._issuers.pop((tenant, url), None) is not None

    # audit -------------------------------------------------------------------------
    async def append(self, records: Sequence[AuditRecord]) -> None:
        self._add(records)

    async def audit(self, where: AuditFilter) -> list[AuditRecord]:
        found = [r for r in reversed(self._audit) if audit_matches(where, r)]
        return found[where.offset:where.offset + where.limit]

    async def purge_audit(self, before: str) -> int:
        kept = [r for r in self._audit if r.time >= before]
        purged = len(self._audit) - len(kept)
        self._audit = kept
        return purged
