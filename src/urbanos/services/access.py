"""Access control as the other services use it: the tenant's grants (cached on every node,
dropped on change across the cluster), views and decisions from ``core.policy``, API keys,
and the audit log.

Every service that reads or writes data asks this one object; the HTTP layer only
authenticates (``services.auth``) and hands the resulting ``Principal`` down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from urbanos.core.policy import (
    Action,
    Decision,
    Grant,
    Principal,
    Role,
    View,
)
from urbanos.core.timeutil import now_iso
from urbanos.storage.access import (
    AccessStore,
    ApiKey,
    AuditFilter,
    AuditNote,
    AuditRecord,
)
from urbanos.types import JSONObject

T = TypeVar("T")


class AccessService:
    def __init__(self, store: AccessStore, *, clock: Callable[[], str] = now_iso) -> None:
        self.store = store
        self.clock = clock

    # -- decisions ---------------------------------------------------------------------
    async def grants(self, tenant: str) -> list[Grant]:
        """The tenant's grants (cached; ``invalidate`` drops the cache)."""
        raise NotImplementedError

    def invalidate(self, tenant: str | None) -> None:
        """Another node (or this one) changed ``tenant``'s grants (None: any tenant's)."""
        raise NotImplementedError

    async def view(self, principal: Principal, tenant: str) -> View:
        """What ``principal`` may read in ``tenant`` (no I/O for OPEN and admins)."""
        raise NotImplementedError

    async def decide(self, principal: Principal, action: Action, tenant: str,
                     entity: JSONObject | None, attributes: Iterable[str] = ()) -> Decision:
        raise NotImplementedError

    async def require(self, principal: Principal, action: Action, tenant: str) -> None:
        """Raise ``Unauthorized`` (anonymous) or ``Forbidden`` unless ``principal`` may do
        ``action`` on the tenant as a whole (create subscriptions, administer it)."""
        raise NotImplementedError

    # -- grants (admin API) ------------------------------------------------------------
    async def add_grant(self, by: Principal, grant: Grant) -> Grant:
        raise NotImplementedError

    async def delete_grant(self, by: Principal, tenant: str, grant_id: str) -> None:
        raise NotImplementedError

    # -- API keys ----------------------------------------------------------------------
    async def create_key(self, by: Principal, tenant: str, role: Role, name: str,
                         expires_at: str | None = None) -> tuple[ApiKey, str]:
        """The stored key and the secret token (``uk_<id>.<secret>``), shown only now."""
        raise NotImplementedError

    async def verify_key(self, token: str) -> ApiKey:
        """The live key a presented token names (constant-time hash comparison); raises
        ``Unauthorized`` for an unknown, expired or revoked one. Notes the use (last-used
        times are written in batches)."""
        raise NotImplementedError

    async def revoke_key(self, by: Principal, key_id: str) -> None:
        raise NotImplementedError

    # -- audit -------------------------------------------------------------------------
    def note(self, principal: Principal, operation: str,
             request_id: str | None = None) -> AuditNote:
        return AuditNote(principal.key, principal.client, operation, request_id)

    def audited(self, note: AuditNote, plan: Callable[[dict[str, JSONObject]], tuple[list, T]]
                ) -> Callable[[dict[str, JSONObject]], tuple[list, T]]:
        """``plan`` whose writes carry ``note``: their audit record commits with them."""
        raise NotImplementedError

    async def record(self, record: AuditRecord) -> None:
        """Append a record outside a write (a denial, an admin operation)."""
        raise NotImplementedError

    async def audit(self, where: AuditFilter) -> list[AuditRecord]:
        raise NotImplementedError
