"""One caller's rights in one tenant for one request, applied where the data is read and
written.

A ``Guard`` carries the principal, the tenant's grants (read once per request from the
access service's cache) and the audit note of the request. The entity services hand their
plans to it: the checks run inside the store's transaction on the documents as they are
there, so a decision is never made on a stale copy, and a denied write changes nothing.
``OPEN_GUARD`` (``URBANOS_AUTH=none``) checks nothing and costs nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from urbanos.core.policy import (
    OPEN,
    UNRESTRICTED,
    Action,
    Grant,
    Principal,
    Role,
    View,
    decide,
    view,
)
from urbanos.core.query.ast import TypeName, TypeOr
from urbanos.core.selection import EntityQuery
from urbanos.core.timeutil import now_iso
from urbanos.errors import Forbidden, NgsiLdError, ResourceNotFound, Unauthorized
from urbanos.storage.access import AuditRecord
from urbanos.storage.base import EntityStore, Write
from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.services.access import AccessService
    from urbanos.storage.access import AuditNote

T = TypeVar("T")
Plan = Callable[[dict[str, JSONObject]], tuple[list[Write], T]]



class Guard:
    __slots__ = ("principal", "tenant", "grants", "note", "access", "_view")

    def __init__(self, principal: Principal, tenant: str, grants: Sequence[Grant] = (),
                 note: AuditNote | None = None, access: AccessService | None = None) -> None:
        self.principal = principal
        self.tenant = tenant
        self.grants = tuple(grants)
        self.note = note
        self.access = access  # where the request's audit records go
        self._view: View | None = None

    @property
    def open(self) -> bool:
        return self.principal.kind == "open"

    # -- reads ---------------------------------------------------------------------------
    @property
    def view(self) -> View:
        if self._view is None:
            self._view = UNRESTRICTED if self.open else _view_of(
                self.principal, self.tenant, self.grants)
        return self._view

    def read(self, entity: JSONObject) -> JSONObject | None:
        """The entity as the caller may see it (hidden attributes removed), or None."""
        v = self.view
        return entity if v.unrestricted else v.show(entity)

    def query(self, query: EntityQuery) -> EntityQuery:
        """``query`` limited to what the caller may see, before matching and paging."""
        v = self.view
        if v.unrestricted:
            return query
        if v.types and query.types is None and query.ids is None:
            # nothing outside these types is visible: let the store's type index narrow
            names = tuple(TypeName(t) for t in sorted(v.types))
            return replace(query, view=v, types=names[0] if len(names) == 1 else TypeOr(names))
        return replace(query, view=v)

    # -- whole-tenant rights -------------------------------------------------------------
    def require(self, action: Action) -> None:
        """Raise unless the caller may do ``action`` on the tenant as a whole."""
        if self.open:
            return
        if not decide(self.principal, action, self.tenant, None, self.grants).allowed:
            raise self.denied(f"{action.value} is not allowed in this tenant")

    def require_some(self, action: Action) -> None:
        """Raise unless the caller may do ``action`` on at least part of the tenant (a
        subscription to the types it may read: what it is sent is narrowed to them)."""
        if self.open or any(action in g.actions and g.assignee.covers(self.principal)
                            for g in self.grants if g.tenant == self.tenant):
            return
        self.require(action)

    def may_write_somewhere(self) -> None:
        """An anonymous caller with no write grant is asked to log in before anything is
        looked up, so that what exists is not revealed by the answer."""
        if self.principal.kind != "anonymous":
            return
        if not any(Action.WRITE in g.actions or Action.OWN in g.actions for g in self.grants
                   if g.assignee.covers(self.principal)) and not decide(
                self.principal, Action.WRITE, self.tenant, None, self.grants).allowed:
            raise Unauthorized("authentication required to write")

    def denied(self, detail: str) -> NgsiLdError:
        if self.principal.authenticated:
            return Forbidden(detail)
        return Unauthorized(detail)

    # -- writes --------------------------------------------------------------------------
    def problem(self, write: Write) -> NgsiLdError | None:
        """Why the caller may not make ``write`` (None: it may). An entity the caller may
        not read is not found, so a write cannot probe ids."""
        before, after = write.before, write.entity
        if self.open:
            return None
        if before is None and after is not None:  # a creation
            after.pop("owner", None)  # decided as the entity of no one: then the caller's
            d = decide(self.principal, Action.WRITE, self.tenant, after, self.grants)
            if not d.allowed:
                return self.denied(f"may not create entity {after['id']}")
            if self.principal.authenticated:
                after["owner"] = self.principal.key
            return None
        assert before is not None
        if after is not None and "owner" in before:
            after["owner"] = before["owner"]
        touched = _touched(before, after)
        d = decide(self.principal, Action.WRITE, self.tenant, before, self.grants,
                   attributes=touched)
        if d.allowed and after is not None and after.get("type") != before.get("type"):
            # the entity as it will be must be writable too (no moving it out of reach)
            d = decide(self.principal, Action.WRITE, self.tenant, after, self.grants,
                       attributes=touched)
        if d.allowed:
            return None
        seen = decide(self.principal, Action.READ, self.tenant, before, self.grants)
        if not seen.visible or touched & seen.hidden:
            return ResourceNotFound(f"entity {write.entity_id} not found")
        return self.denied(f"may not change entity {write.entity_id}")

    def check_write(self, entity: JSONObject, attributes: frozenset[str]) -> None:
        """Raise unless the caller may change ``attributes`` of ``entity`` (writes that do
        not go through a plan: history instances)."""
        if self.open:
            return
        self.may_write_somewhere()
        if decide(self.principal, Action.WRITE, self.tenant, entity, self.grants,
                  attributes=attributes).allowed:
            return
        seen = decide(self.principal, Action.READ, self.tenant, entity, self.grants)
        if not seen.visible or attributes & seen.hidden:
            raise ResourceNotFound(f"entity {entity['id']} not found")
        raise self.denied(f"may not change entity {entity['id']}")

    def readable(self, entity: JSONObject, names: Iterable[str]) -> frozenset[str] | None:
        """Which of ``names`` the caller may read on ``entity`` (attributes it may have
        had: history), or None when it may not see the entity."""
        probe = {**entity, "attrs": {**dict.fromkeys(names, []), **entity.get("attrs", {})}}
        shown = self.read(probe)
        return None if shown is None else frozenset(shown["attrs"])

    async def modify(self, store: EntityStore, tenant: str, ids: list[str], plan: Plan[T],
                     *, batch: bool = False) -> T:
        """``store.modify`` of ``plan`` as the caller may run it: refused as a whole when
        one of its writes is not allowed, or, for a ``batch``, with the entities it may not
        write turned into per-entity errors (403, or 404 when it may not see them). Its
        writes carry the request's audit note, forgotten if they never reach the store's
        hook (the plan ran again, or the transaction failed)."""
        if self.open and self.note is None:
            return await store.modify(tenant, ids, plan)
        self.may_write_somewhere()
        refused: dict[str, NgsiLdError] = {}

        def guarded(current: dict[str, JSONObject]) -> tuple[list[Write], T]:
            refused.clear()  # a store may run a plan again (more ids to lock)
            writes, result = plan(current)
            if batch:
                writes = self._refuse_some(writes, result, refused)
            else:
                for w in writes:
                    err = self.problem(w)
                    if err is not None:
                        raise err
            return writes, result

        access, note = self.access, self.note
        if access is None or note is None:
            return await store.modify(tenant, ids, guarded)
        attached: list[Write] = []
        try:
            outcome = await store.modify(tenant, ids, access.audited(note, guarded, attached))
        finally:
            access.forget(attached)
        for status in sorted({e.status for e in refused.values()}):
            await self._record("denied", status, tuple(
                i for i, e in refused.items() if e.status == status))
        return outcome

    async def record_ok(self, ids: Sequence[str]) -> None:
        """Audit a write that is not an entity's (a subscription, an @context, a
        snapshot): appended once it is done, not in its transaction."""
        await self._record("ok", 0, tuple(ids))

    async def _record(self, outcome: str, status: int, ids: tuple[str, ...]) -> None:
        if self.note is None or self.access is None:
            return
        n = self.note
        await append_audit(self.access, n.principal, n.client, self.tenant, n.operation,
                           outcome, status, n.request_id, ids)

    def _refuse_some(self, writes: list[Write], result: Any,
                     refused: dict[str, NgsiLdError]) -> list[Write]:
        for w in writes:
            if w.entity_id not in refused:
                err = self.problem(w)
                if err is not None:
                    refused[w.entity_id] = err
        if not refused:
            return writes
        result.success = [i for i in result.success if i not in refused]
        result.created = [i for i in result.created if i not in refused]
        result.errors.extend(refused.items())
        return [w for w in writes if w.entity_id not in refused]


#: compiled views by (principal, tenant): reused while the principal object (a verified
#: token's, cached by the authenticator) and the tenant's grants (a cached tuple, replaced on
#: every change) are the very same objects
_VIEWS: OrderedDict[tuple[str, str], tuple[Principal, tuple[Grant, ...], View]] = OrderedDict()
_MAX_VIEWS = 4096


def _view_of(principal: Principal, tenant: str, grants: tuple[Grant, ...]) -> View:
    key = (principal.key, tenant)
    hit = _VIEWS.get(key)
    if hit is not None and hit[0] is principal and hit[1] is grants:
        _VIEWS.move_to_end(key)
        return hit[2]
    compiled = view(principal, tenant, grants)
    _VIEWS[key] = (principal, grants, compiled)
    if len(_VIEWS) > _MAX_VIEWS:
        _VIEWS.popitem(last=False)
    return compiled


def _touched(before: JSONObject, after: JSONObject | None) -> frozenset[str]:
    """The attributes a write changes (every one, for a deletion)."""
    old = before.get("attrs", {})
    if after is None:
        return frozenset(old)
    new = after.get("attrs", {})
    return frozenset(a for a in old.keys() | new.keys() if old.get(a) != new.get(a))


OPEN_GUARD = Guard(OPEN, "")


def principal_record(principal: Principal) -> JSONObject:
    """What a resource the principal owns keeps of it (a subscription notifies as its
    owner, long after the owner's token has gone)."""
    return {
        "key": principal.key, "kind": principal.kind, "subject": principal.subject,
        "client": principal.client, "issuer": principal.issuer,
        "roles": {t: sorted(r.value for r in rs) for t, rs in principal.roles.items()},
        "claims": {n: sorted(vs) for n, vs in principal.claims.items()},
    }


def principal_from_record(record: JSONObject) -> Principal:
    return Principal(
        kind=record["kind"], subject=record.get("subject"), client=record.get("client"),
        issuer=record.get("issuer"),
        roles={t: frozenset(Role(r) for r in rs) for t, rs in record.get("roles", {}).items()},
        claims={n: frozenset(vs) for n, vs in record.get("claims", {}).items()},
    )


async def guard_for(access: AccessService, principal: Principal, tenant: str,
                    operation: str, request_id: str | None = None) -> Guard:
    """The guard of one request: the tenant's grants (cached by the access service) and
    the note its writes are audited with."""
    if principal.kind == "open":
        return OPEN_GUARD
    note = access.note(principal, operation, request_id)
    guard = Guard(principal, tenant, await access.grants(tenant), note, access)
    if principal.kind == "anonymous" and guard.view.types == frozenset() and not any(
            g.assignee.covers(principal) for g in guard.grants):
        # nothing here is open to the public: ask for credentials rather than answer
        # with an empty tenant
        raise Unauthorized("authentication required")
    return guard


async def record_denial(access: AccessService, principal: str, client: str | None,
                        tenant: str, operation: str, error: NgsiLdError,
                        request_id: str | None = None, entity_ids: tuple[str, ...] = ()
                        ) -> None:
    """Append a refused request to the audit log (denials are not writes: they are
    recorded on their own, after the answer is decided)."""
    await append_audit(access, principal, client, tenant, operation, "denied", error.status,
                       request_id, entity_ids, error.detail)


async def append_audit(access: AccessService, principal: str, client: str | None,
                       tenant: str, operation: str, outcome: str, status: int,
                       request_id: str | None, entity_ids: tuple[str, ...] = (),
                       detail: str | None = None) -> None:
    await access.record(AuditRecord(
        time=now_iso(), principal=principal, client=client, tenant=tenant,
        operation=operation, entity_ids=entity_ids, outcome=outcome, status=status,
        request_id=request_id, detail=detail,
    ))
