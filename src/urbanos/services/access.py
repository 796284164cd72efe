"""Access control as the other services use it: the tenant's grants (cached on every node,
dropped on change across the cluster), views and decisions from ``core.policy``, API keys,
and the audit log.

Every service that reads or writes data asks this one object; the HTTP layer only
authenticates (``services.auth``) and hands the resulting ``Principal`` down.

Caches follow the rule of ``services.cluster``: a change bumps the tenant's generation
before anything reloads, and a load is kept only if no bump happened while it ran. Grants
and API keys share one topic (``ACCESS``): a change of either calls ``on_change(tenant)``,
which the app connects to the cluster feed, and another node's announcement arrives as
``invalidate(tenant)``. API keys are also re-read after ``key_ttl`` seconds, so a key
revoked by ``urbanos keys revoke`` (another process, no feed) stops working soon.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from urbanos.core import policy
from urbanos.core.policy import (
    ANY_TENANT,
    ROLE_ACTIONS,
    UNRESTRICTED,
    Action,
    Decision,
    Grant,
    Principal,
    Role,
    Target,
    View,
)
from urbanos.core.timeutil import format_datetime, normalize_datetime, now_iso, parse_datetime
from urbanos.errors import AlreadyExists, BadRequestData, Forbidden, ResourceNotFound, Unauthorized
from urbanos.services.cluster import Generations
from urbanos.storage.access import (
    AccessStore,
    ApiKey,
    AuditFilter,
    AuditNote,
    AuditRecord,
    Issuer,
)
from urbanos.storage.base import Write
from urbanos.types import JSONObject

__all__ = ["AccessService", "ApiKey", "AuditFilter", "AuditNote", "AuditRecord",
           "Issuer", "new_grant_id", "platform_admin"]

log = logging.getLogger("urbanos.access")

T = TypeVar("T")

#: the job one node runs alone (``EntityStore.try_lead``): purging the old audit records
RETENTION_JOB = "audit.retention"

KEY_CHALLENGE = 'ApiKey realm="urbanos"'
KEY_PREFIX = "uk_"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{16}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")
ALLOWED = Decision(allowed=True, visible=True)
#: compared with when the key id is unknown, so that case takes as long as a wrong secret
_NO_HASH = hashlib.sha256(b"no such key").hexdigest()

#: loads an entity of a tenant (stored form) or None: how owners are recognised
EntityLoader = Callable[[str, str], Awaitable[JSONObject | None]]


def new_grant_id() -> str:
    return f"urn:ngsi-ld:Permission:{uuid.uuid4()}"


def key_principal(key: ApiKey) -> Principal:
    """Who an API key acts as: its id, its role in its tenant (``*``: every tenant)."""
    return Principal(kind="apikey", subject=key.id, roles={key.tenant: frozenset({key.role})})


def platform_admin(principal: Principal) -> bool:
    """Whether ``principal`` administers the whole platform (every tenant, the platform's
    issuer and keys): ``OPEN`` (no authentication configured) or platformAdmin in ``*``."""
    return principal.kind == "open" or Role.PLATFORM_ADMIN in principal.roles.get(
        ANY_TENANT, frozenset()
    )


def _by_role(principal: Principal, action: Action, tenant: str) -> bool:
    """Whether ``principal`` may do ``action`` on everything of ``tenant`` without asking
    the grants: authentication is off, or one of its roles there gives the action (each
    role also gives read, so the entity is visible too)."""
    return principal.kind == "open" or any(
        action in ROLE_ACTIONS[role] for role in principal.roles_in(tenant)
    )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_key_id() -> str:
    """16 url-safe characters, never a leading "-": the id is a command-line argument
    (``urbanos keys revoke ID``), and such an id would read as an option."""
    while (key_id := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return key_id


def _shown(tenant: str) -> str:
    if tenant == ANY_TENANT:
        return "the platform"
    return "the default tenant" if tenant == "" else f"tenant {tenant!r}"


class AccessService:
    def __init__(
        self,
        store: AccessStore,
        *,
        clock: Callable[[], str] = now_iso,
        entity: EntityLoader | None = None,
        on_change: Callable[[str], None] | None = None,
        on_issuers: Callable[[], None] | None = None,
        audit_retention_days: float = 0.0,
        flush_interval: float = 5.0,
        key_ttl: float = 10.0,
        max_tenants: int = 10_000,
        max_keys: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
        tenant_names: Callable[[], Awaitable[Iterable[str]]] | None = None,
        leader: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.entity = entity
        self.on_change = on_change
        self.on_issuers = on_issuers
        self.audit_retention_days = audit_retention_days
        self.flush_interval = flush_interval
        self.key_ttl = key_ttl
        self.max_tenants = max_tenants
        self.max_keys = max_keys
        self.monotonic = monotonic
        self.tenant_names = tenant_names
        self.leader = leader
        self._generations = Generations()
        self._grants: OrderedDict[str, tuple[Grant, ...]] = OrderedDict()
        #: one load per tenant at a time: (the generation token it began at, its result)
        self._loading: dict[str, tuple[int, asyncio.Future[tuple[Grant, ...]]]] = {}
        self._keys: OrderedDict[str, tuple[ApiKey, float]] = OrderedDict()
        self._used: dict[str, str] = {}  # key id -> last use not yet stored
        #: presented tokens already verified: (key, monotonic deadline, generation)
        self._verified: dict[str, tuple[ApiKey, float, int]] = {}
        self._now, self._now_at = "", float("-inf")

    # -- the cache -------------------------------------------------------------------
    async def grants(self, tenant: str) -> Sequence[Grant]:
        """The tenant's grants (cached; ``invalidate`` drops the cache). Callers arriving
        while the tenant's grants are read wait for that one read."""
        cached = self._grants.get(tenant)
        if cached is not None:
            self._grants.move_to_end(tenant)
            return cached  # a tuple: shared, never changed
        loading = self._loading.get(tenant)
        if loading is None or not self._generations.fresh(loading[0], tenant):
            loading = self._load(tenant)  # none running, or begun before a change
        return await asyncio.shield(loading[1])

    def _load(self, tenant: str) -> tuple[int, asyncio.Future[tuple[Grant, ...]]]:
        """Read the tenant's grants in a task of its own (a caller's cancellation does not
        stop it); what it read is cached only if nothing of the tenant changed meanwhile."""
        token = self._generations.token()

        async def read() -> tuple[Grant, ...]:
            return tuple(await self.store.grants(tenant))

        task = asyncio.ensure_future(read())
        self._loading[tenant] = (token, task)

        def done(task: asyncio.Future[tuple[Grant, ...]]) -> None:
            if self._loading.get(tenant, (0, None))[1] is task:
                del self._loading[tenant]
            if task.cancelled() or task.exception() is not None:
                return  # the callers waiting see the failure; the next call reads again
            if self._generations.fresh(token, tenant):
                self._grants[tenant] = task.result()
                while len(self._grants) > self.max_tenants:
                    self._grants.popitem(last=False)

        task.add_done_callback(done)
        return token, task

    def invalidate(self, tenant: str | None) -> None:
        """Another node (or this one) changed ``tenant``'s grants or keys (None: any
        tenant's): what is cached of it is read again on next use."""
        self._generations.bump(tenant)
        if tenant is None:
            self._grants.clear()
            self._loading.clear()
            self._keys.clear()
            return
        self._grants.pop(tenant, None)
        self._loading.pop(tenant, None)
        for key_id in [k for k, (key, _) in self._keys.items() if key.tenant == tenant]:
            del self._keys[key_id]

    def _changed(self, tenant: str) -> None:
        """This node changed ``tenant``'s grants or keys: its cache, then the others'."""
        self.invalidate(tenant)
        if self.on_change is not None:
            self.on_change(tenant)

    # -- decisions ---------------------------------------------------------------------
    async def view(self, principal: Principal, tenant: str,
                   action: Action = Action.READ) -> View:
        """What ``principal`` may read (or do ``action`` on) in ``tenant``; no I/O for OPEN
        and for a role giving ``action`` (roles cover every entity and attribute)."""
        if _by_role(principal, action, tenant):
            return UNRESTRICTED
        return policy.view(principal, tenant, await self.grants(tenant), action)

    async def decide(self, principal: Principal, action: Action, tenant: str,
                     entity: JSONObject | None, attributes: Iterable[str] = ()) -> Decision:
        """``core.policy.decide`` with the tenant's grants (no I/O when a role decides)."""
        if _by_role(principal, action, tenant):
            return ALLOWED
        return policy.decide(principal, action, tenant, entity, await self.grants(tenant),
                             attributes=attributes)

    async def require(self, principal: Principal, action: Action, tenant: str, *,
                      operation: str | None = None, request_id: str | None = None) -> None:
        """Raise ``Unauthorized`` (anonymous) or ``Forbidden`` unless ``principal`` may do
        ``action`` on the tenant as a whole (create subscriptions, administer it). With an
        ``operation``, a denial is also written to the audit log."""
        if (await self.decide(principal, action, tenant, None)).allowed:
            return
        await self._deny(principal, tenant, operation, request_id,
                         f"{action.value} on {_shown(tenant)} is not allowed")

    async def _deny(self, principal: Principal, tenant: str, operation: str | None,
                    request_id: str | None, detail: str, entity_ids: tuple[str, ...] = ()
                    ) -> None:
        """Raise the denial for ``principal`` (401 when it is not authenticated, else 403),
        audited when ``operation`` names what was refused."""
        error: Unauthorized | Forbidden
        if principal.authenticated:
            error = Forbidden(detail)
        else:
            error = Unauthorized("authentication required")
        if operation is not None:
            await self.record(self._record(principal, tenant, operation, "denied", error.status,
                                           entity_ids, request_id, detail))
            error.audited = True  # the error handler does not record it a second time
        raise error

    async def may_administer(self, principal: Principal, tenant: str) -> bool:
        """Whether ``principal`` administers ``tenant`` as a whole (``*``: the platform)."""
        if tenant == ANY_TENANT:
            return platform_admin(principal)
        return (await self.decide(principal, Action.ADMIN, tenant, None)).allowed

    async def require_admin(self, principal: Principal, tenant: str, *,
                            operation: str | None = None, request_id: str | None = None
                            ) -> None:
        """``require`` for the administration of ``tenant`` (``*``: of the platform)."""
        if not await self.may_administer(principal, tenant):
            await self._deny(principal, tenant, operation, request_id,
                             f"administering {_shown(tenant)} is not allowed")

    async def _may_grant_on(self, principal: Principal, tenant: str, target: Target) -> bool:
        """Tenant administration, or ADMIN/OWN on each entity of a target that is exactly a
        set of entity ids (what an owner may share)."""
        if await self.may_administer(principal, tenant):
            return True
        if (not target.ids or target.id_pattern or target.types or target.scopes
                or self.entity is None or not principal.authenticated):
            return False
        for entity_id in target.ids:
            entity = await self.entity(tenant, entity_id)
            if entity is None:
                return False
            for action in (Action.ADMIN, Action.OWN):
                if (await self.decide(principal, action, tenant, entity)).allowed:
                    break
            else:
                return False
        return True

    # -- grants (admin API) ------------------------------------------------------------
    async def add_grant(self, by: Principal, grant: Grant, *,
                        request_id: str | None = None) -> Grant:
        """Store ``grant`` (a new id when it has none; ``by`` as its assigner). 409 when a
        grant of that id exists in the tenant."""
        ids = grant.target.ids
        if not await self._may_grant_on(by, grant.tenant, grant.target):
            await self._deny(by, grant.tenant, "grant.add", request_id,
                             f"granting on this target in {_shown(grant.tenant)} is not allowed",
                             ids)
        grant = replace(grant, id=grant.id or new_grant_id(), assigner=by.key)
        if any(g.id == grant.id for g in await self.store.grants(grant.tenant)):
            raise AlreadyExists(f"grant {grant.id} already exists")
        await self.store.put_grant(grant)
        self._changed(grant.tenant)
        await self.record(self._record(by, grant.tenant, "grant.add", "ok", 201, ids,
                                       request_id, grant.id))
        return grant

    async def get_grant(self, by: Principal, tenant: str, grant_id: str) -> Grant:
        """One grant ``by`` may see (``list_grants``); 404 otherwise."""
        grant = await self._stored_grant(tenant, grant_id)
        if grant is None or not await self._sees(by, grant):
            await self._not_found(by, tenant, f"grant {grant_id}", grant is not None)
        assert grant is not None
        return grant

    async def list_grants(self, by: Principal, tenant: str) -> list[Grant]:
        """The tenant's grants for its administrators; for anyone else the grants it gave
        and those on entities it may share (401 for the anonymous)."""
        rows = await self.store.grants(tenant)
        if await self.may_administer(by, tenant):
            return rows
        if not by.authenticated:
            await self._deny(by, tenant, None, None, "")
        return [g for g in rows if await self._sees(by, g)]

    async def _sees(self, by: Principal, grant: Grant) -> bool:
        return grant.assigner == by.key or await self._may_grant_on(by, grant.tenant,
                                                                     grant.target)

    async def _stored_grant(self, tenant: str, grant_id: str) -> Grant | None:
        return next((g for g in await self.store.grants(tenant) if g.id == grant_id), None)

    async def delete_grant(self, by: Principal, tenant: str, grant_id: str, *,
                           request_id: str | None = None) -> None:
        """Revoke a grant: 404 when ``by`` may not see it, 403 when it sees it (it gave
        it) but may no longer share its target."""
        grant = await self._stored_grant(tenant, grant_id)
        if grant is None or not await self._sees(by, grant):
            await self._not_found(by, tenant, f"grant {grant_id}", grant is not None,
                                  "grant.delete", request_id)
        assert grant is not None
        if not await self._may_grant_on(by, tenant, grant.target):
            await self._deny(by, tenant, "grant.delete", request_id,
                             f"revoking grant {grant_id} is not allowed", grant.target.ids)
        if not await self.store.delete_grant(tenant, grant_id):
            raise ResourceNotFound(f"grant {grant_id} not found in {_shown(tenant)}")
        self._changed(tenant)
        await self.record(self._record(by, tenant, "grant.delete", "ok", 204,
                                       grant.target.ids, request_id, grant_id))

    async def _not_found(self, by: Principal, tenant: str, what: str, exists: bool,
                         operation: str | None = None, request_id: str | None = None) -> None:
        """Raise 404 for something that does not exist or that ``by`` may not know of (401
        for the anonymous: it may just lack credentials). When it exists, and ``operation``
        names what was tried, the refusal is audited."""
        if not by.authenticated and by.kind != "open":
            await self._deny(by, tenant, operation, request_id, "")
        if exists and operation is not None:
            await self.record(self._record(by, tenant, operation, "denied", 404, (),
                                           request_id, f"{what}: not visible to the caller"))
        raise ResourceNotFound(f"{what} not found")

    # -- API keys ----------------------------------------------------------------------
    async def create_key(self, by: Principal, tenant: str, role: Role, name: str,
                         expires_at: str | None = None, *,
                         request_id: str | None = None) -> tuple[ApiKey, str]:
        """The stored key and the secret token (``uk_<id>.<secret>``), shown only now.
        A key of the platform (tenant ``*``) or with the platformAdmin role is made only by
        a platform admin; other keys by the tenant's administrators."""
        platform = tenant == ANY_TENANT or role is Role.PLATFORM_ADMIN
        if not (platform_admin(by) if platform else await self.may_administer(by, tenant)):
            await self._deny(by, tenant, "key.create", request_id,
                             f"creating a {role.value} key in {_shown(tenant)} is not allowed")
        if not name.strip():
            raise BadRequestData("an API key needs a name (who or what uses it)")
        expires = self._expiry(expires_at)
        key_id, secret = _new_key_id(), secrets.token_urlsafe(32)
        key = ApiKey(id=key_id, tenant=tenant, role=role, name=name,
                     secret_hash=_hash(secret), created_at=self.clock(), expires_at=expires,
                     created_by=by.key)
        await self.store.put_key(key)
        await self.record(self._record(by, tenant, "key.create", "ok", 201, (), request_id,
                                       key_id))
        return key, f"{KEY_PREFIX}{key_id}.{secret}"

    def _expiry(self, expires_at: str | None) -> str | None:
        if expires_at is None:
            return None
        canonical = normalize_datetime(expires_at)
        if canonical is None:
            raise BadRequestData(f"expiresAt {expires_at!r} is not a date-time")
        if canonical <= self.clock():
            raise BadRequestData(f"expiresAt {expires_at!r} is in the past")
        return canonical

    async def verify_key(self, token: str) -> ApiKey:
        """The live key a presented token names (constant-time hash comparison); raises
        ``Unauthorized`` for an unknown, expired or revoked one. Notes the use (last-used
        times are written in batches)."""
        hit = self._verified.get(token)
        if hit is not None:
            known, until, generation = hit
            if (self.monotonic() < until and self._generations.fresh(generation, known.tenant)
                    and (known.expires_at is None or self._recent_now() < known.expires_at)):
                self._used[known.id] = self._recent_now()
                return known
            del self._verified[token]
        generation = self._generations.token()
        key_id, dot, secret = token.removeprefix(KEY_PREFIX).partition(".")
        if not (token.startswith(KEY_PREFIX) and dot and _KEY_ID.match(key_id)
                and _SECRET.match(secret)):
            raise Unauthorized("malformed API key", challenge=KEY_CHALLENGE)
        key = await self._key(key_id)
        expected = key.secret_hash if key is not None else _NO_HASH
        if not hmac.compare_digest(_hash(secret), expected) or key is None:
            raise Unauthorized("invalid API key", challenge=KEY_CHALLENGE)
        now = self.clock()
        if key.revoked_at is not None:
            raise Unauthorized("API key revoked", challenge=KEY_CHALLENGE)
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized("API key expired", challenge=KEY_CHALLENGE)
        self._used[key.id] = now
        # the next uses of this token cost one lookup (no hash, no store) for as long as its
        # key may be cached; a change of the tenant's keys, or its expiry, ends that
        self._verified[token] = (key, self.monotonic() + self.key_ttl, generation)
        while len(self._verified) > self.max_keys:
            self._verified.pop(next(iter(self._verified)))
        return key

    def _recent_now(self) -> str:
        """The clock, read at most once a second (the precision of last-use times and of
        key expiry on the fast path); an injected clock is read every time."""
        if self.clock is not now_iso:
            return self.clock()
        at = self.monotonic()
        if at - self._now_at >= 1.0:
            self._now, self._now_at = self.clock(), at
        return self._now

    async def current(self, principal: Principal) -> Principal | None:
        """``principal`` as it stands now, for what acts in its name after its request (a
        subscription notifying): an API key's with the key's current role, None once the
        key is revoked, expired or gone; a token's as recorded (its roles are the
        identity provider's, known only when a token is presented)."""
        if principal.kind != "apikey" or principal.subject is None:
            return principal
        key = await self._key(principal.subject) if _KEY_ID.match(principal.subject) else None
        if key is None or key.revoked_at is not None or (
                key.expires_at is not None and key.expires_at <= self.clock()):
            return None
        return key_principal(key)

    async def _key(self, key_id: str) -> ApiKey | None:
        """The stored key, cached for ``key_ttl`` seconds (dropped at once by a change)."""
        cached = self._keys.get(key_id)
        if cached is not None and self.monotonic() - cached[1] < self.key_ttl:
            return cached[0]
        token = self._generations.token()
        key = await self.store.get_key(key_id)
        if key is None:
            self._keys.pop(key_id, None)
        elif self._generations.fresh(token, key.tenant):
            self._keys[key_id] = (key, self.monotonic())
            self._keys.move_to_end(key_id)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        return key

    async def list_keys(self, by: Principal, tenant: str | None) -> list[ApiKey]:
        """The keys of ``tenant`` (None: of every tenant, for platform admins), without
        secrets, with this node's last uses not stored yet."""
        allowed = platform_admin(by) if tenant is None else await self.may_administer(by, tenant)
        if not allowed:
            await self._deny(by, tenant or "", None, None,
                             f"listing the API keys of {_shown(tenant or '')} is not allowed")
        keys = await self.store.list_keys(tenant)
        return [self._with_use(k) for k in keys]

    def _with_use(self, key: ApiKey) -> ApiKey:
        used = self._used.get(key.id)
        if used is None or (key.last_used_at is not None and key.last_used_at >= used):
            return key
        return replace(key, last_used_at=used)

    async def revoke_key(self, by: Principal, key_id: str, *,
                         request_id: str | None = None) -> None:
        """Revoke a key at once on this node (and, through ``on_change``, on the others).
        404 for a key unknown or of a tenant ``by`` does not administer."""
        key = await self.store.get_key(key_id) if _KEY_ID.match(key_id) else None
        if key is None or not await self.may_administer(by, key.tenant):
            await self._not_found(by, key.tenant if key else "", f"API key {key_id}",
                                  key is not None, "key.revoke", request_id)
        assert key is not None
        if key.revoked_at is None:
            await self.store.revoke_key(key_id, self.clock())
            await self.record(self._record(by, key.tenant, "key.revoke", "ok", 204, (),
                                           request_id, key_id))
        self._changed(key.tenant)

    async def flush(self) -> None:
        """Store this node's last-used times of keys."""
        used, self._used = self._used, {}
        if not used:
            return
        try:
            await self.store.touch_keys(used)
        except BaseException:
            for key_id, at in used.items():  # kept for the next flush
                self._used[key_id] = max(at, self._used.get(key_id, at))
            raise

    async def run_flush(self) -> None:
        """The worker loop: ``flush`` every ``flush_interval`` seconds."""
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def aclose(self) -> None:
        """Store the last uses (the store must still be open)."""
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - closing goes on; the times are lost, say so
            log.exception("API keys: the last-used times could not be stored")

    # -- identity providers ------------------------------------------------------------
    async def issuers(self, by: Principal, tenant: str | None) -> list[Issuer]:
        """The issuers of ``tenant`` and the platform's (None: every one, for platform
        admins)."""
        allowed = platform_admin(by) if tenant is None else await self.may_administer(by, tenant)
        if not allowed:
            await self._deny(by, tenant or "", None, None,
                             f"the issuers of {_shown(tenant or '')} are not visible to you")
        rows = await self.store.issuers()
        return [i for i in rows if tenant is None or i.tenant in (tenant, ANY_TENANT)]

    async def put_issuer(self, by: Principal, issuer: Issuer, *,
                         request_id: str | None = None) -> None:
        """Trust ``issuer`` in its tenant (``*``: in every one, platform admins only)."""
        if not await self.may_administer(by, issuer.tenant):
            await self._deny(by, issuer.tenant, "issuer.add", request_id,
                             f"adding an issuer to {_shown(issuer.tenant)} is not allowed")
        await self.store.put_issuer(issuer)
        self._issuers_changed()
        await self.record(self._record(by, issuer.tenant, "issuer.add", "ok", 201, (),
                                       request_id, issuer.url))

    async def delete_issuer(self, by: Principal, tenant: str, url: str, *,
                            request_id: str | None = None) -> None:
        if not await self.may_administer(by, tenant):
            await self._deny(by, tenant, "issuer.delete", request_id,
                             f"removing an issuer of {_shown(tenant)} is not allowed")
        if not await self.store.delete_issuer(tenant, url):
            raise ResourceNotFound(f"no issuer {url} in {_shown(tenant)}")
        self._issuers_changed()
        await self.record(self._record(by, tenant, "issuer.delete", "ok", 204, (),
                                       request_id, url))

    def _issuers_changed(self) -> None:
        if self.on_issuers is not None:
            self.on_issuers()

    # -- tenants -------------------------------------------------------------------------
    async def tenants(self, by: Principal) -> list[str]:
        """The tenants known to the platform (platform admins only): those ``tenant_names``
        lists (the entity store's, when the app wires one) and those the access store
        names, by their API keys and issuers."""
        if not platform_admin(by):
            await self._deny(by, ANY_TENANT, None, None, "listing tenants is not allowed")
        known = set(await self.tenant_names()) if self.tenant_names is not None else set()
        known |= {k.tenant for k in await self.store.list_keys(None)}
        known |= {i.tenant for i in await self.store.issuers()}
        return sorted(known - {ANY_TENANT})

    # -- audit -------------------------------------------------------------------------
    def note(self, principal: Principal, operation: str,
             request_id: str | None = None) -> AuditNote:
        return AuditNote(principal.key, principal.client, operation, request_id)

    def audited(self, note: AuditNote, plan: Callable[[dict[str, JSONObject]], tuple[list, T]],
                attached: list[Write] | None = None,
                ) -> Callable[[dict[str, JSONObject]], tuple[list, T]]:
        """``plan`` whose writes carry ``note``: their audit record commits with them.
        With ``attached``, the noted writes are kept there: a run of the plan forgets the
        notes of the run before (a store may run a plan again), and ``forget`` those of a
        transaction that failed."""
        def with_note(current: dict[str, JSONObject]) -> tuple[list, T]:
            if attached:
                self.forget(attached)
            writes, result = plan(current)
            for write in writes:
                self.store.notes.attach(write, note)
            if attached is not None:
                attached.extend(writes)
            return writes, result

        return with_note

    def forget(self, attached: list[Write]) -> None:
        """Drop the notes of writes that never reached the store's hook."""
        self.store.notes.discard(attached)
        attached.clear()

    def _record(self, principal: Principal, tenant: str, operation: str, outcome: str,
                status: int, entity_ids: Iterable[str] = (), request_id: str | None = None,
                detail: str | None = None) -> AuditRecord:
        return AuditRecord(time=self.clock(), principal=principal.key, client=principal.client,
                           tenant=tenant, operation=operation, entity_ids=tuple(entity_ids),
                           outcome=outcome, status=status, request_id=request_id,
                           detail=detail or None)

    async def denied(self, principal: Principal, tenant: str, operation: str, status: int,
                     entity_ids: Iterable[str] = (), request_id: str | None = None,
                     detail: str | None = None) -> None:
        """Append the record of a refused request (for the services that refuse)."""
        await self.record(self._record(principal, tenant, operation, "denied", status,
                                       entity_ids, request_id, detail))

    async def record(self, record: AuditRecord) -> None:
        """Append a record outside a write (a denial, an admin operation)."""
        await self.store.append([record])

    async def audit(self, where: AuditFilter) -> list[AuditRecord]:
        return await self.store.audit(where)

    async def purge(self) -> int:
        """Remove the records older than the retention (none when it is 0)."""
        if self.audit_retention_days <= 0:
            return 0
        now = parse_datetime(self.clock()) or datetime.now(UTC)
        before = format_datetime(now - timedelta(days=self.audit_retention_days))
        return await self.store.purge_audit(before)

    async def run_retention(self, interval: float = 3600.0) -> None:
        """A worker loop: apply the retention now and then every ``interval`` seconds (on
        the node that leads ``RETENTION_JOB``, when a ``leader`` election is given)."""
        while True:
            if self.leader is None or await self.leader(RETENTION_JOB):
                gone = await self.purge()
                if gone:
                    log.info("audit retention removed %d records", gone)
            await asyncio.sleep(interval)
