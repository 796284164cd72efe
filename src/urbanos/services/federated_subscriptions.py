"""Distributed subscriptions (clauses 5.8.1.4, 5.8.5.4, 5.8.6): an entity subscription
whose entities a context source registration supporting ``createSubscription`` covers is
copied to that source, and what the source notifies is merged and delivered here.

* Create: for each matching registration a reduced copy of the subscription is POSTed to
  ``<endpoint>/ngsi-ld/v1/subscriptions`` through ``Federation.send`` (Via, timeout,
  outbound policy). The copy names its own id (so the mapping is known before the source
  answers), notifies THIS broker's inbound path (``INBOUND_PATH``), never the original
  subscriber, and with ``splitEntities`` carries no q: the q is applied here after the
  merge. The link (local id, registration, remote id) is kept in an internal context
  source registration subscription (clause 5.11.2) of the same entities, in the
  subscription store: it survives a restart and shows in ``/csourceSubscriptions``.
* Delete: the remote copies are deleted (DELETE with the remote id), the internal csource
  subscription with them.
* Inbound: a notification names the remote id; its entities are validated as a client's
  input, merged with the local entity (``core.federation.merge_entities``, the notified
  fragment wins ties), filtered by the local subscription's selectors and q, and handed
  to the one delivery engine under the LOCAL subscription id. A fragment failing q after
  the merge is dropped.

Forwarding runs in the background: the client's create or delete does not wait on
sources (a slow one would hold it for its whole timeout).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson

from urbanos.core.entity import expand_entity
from urbanos.core.federation import Target, merge_entities
from urbanos.core.jsonld import core_term_map
from urbanos.core.notification import render_data
from urbanos.core.selection import matches as selects
from urbanos.core.selection import simple_type_set
from urbanos.core.subscription import DeliveryStats, Outgoing, compile_subscription
from urbanos.core.subscription_payload import render_subscription
from urbanos.core.timeutil import now_iso
from urbanos.errors import BadRequestData, NgsiLdError, ResourceNotFound
from urbanos.services.contexts import ContextService
from urbanos.services.csource_subscriptions import CsourceSubscriptionService
from urbanos.services.federation import Federation
from urbanos.services.subscriptions import SubscriptionService
from urbanos.storage.base import DEFAULT_TENANT, EntityStore
from urbanos.storage.subscriptions import StoredSubscription
from urbanos.types import JSON, JSONObject

__all__ = ["INBOUND_PATH", "LINKS", "FederatedSubscriptions"]

log = logging.getLogger("urbanos.federated_subscriptions")
#: where sources notify this broker (an NGSI-LD extension path, as the suite uses)
INBOUND_PATH = "/ngsi-ld/ex/remote-notify"
#: the member of the internal csource subscription that holds the links
LINKS = "_federated"
_SUBSCRIPTIONS = "/ngsi-ld/v1/subscriptions"
#: members of the local subscription the copy never carries
_LOCAL_ONLY = ("id", "status", "jsonldContext", "localOnly", "notification", "q")


class FederatedSubscriptions:
    def __init__(self, federation: Federation, subscriptions: SubscriptionService,
                 csubs: CsourceSubscriptionService, entities: EntityStore,
                 contexts: ContextService, base_url: str, *,
                 clock: Callable[[], str] = now_iso) -> None:
        """``base_url`` is the broker as sources reach it (its inbound path is added)."""
        self.federation = federation
        self.subscriptions = subscriptions
        self.csubs = csubs
        self.entities = entities
        self.contexts = contexts
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        #: records notifications for delivery (``NotificationEngine.notify``)
        self.notify: Callable[[list[Outgoing]], Awaitable[None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- background work ---------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the forwarding in progress (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def inbound_uri(self, tenant: str) -> str:
        query = "" if tenant in (DEFAULT_TENANT, "urn:ngsi-ld:default") else "?" + urlencode({"tenant": tenant})
        return self.base_url + INBOUND_PATH + query

    # -- the subscription's lifecycle ---------------------------------------------------

    async def _targets(self, tenant: str, doc: JSONObject) -> list[Target]:
        sub = compile_subscription(doc)
        ids: set[str] | None = set()
        types: set[str] | None = set()
        for selector in sub.query.selectors or ():
            kinds = simple_type_set(selector.types) if selector.types is not None else None
            if kinds is None or types is None:
                types = None
            else:
                types |= kinds
            if selector.ids is None or ids is None:
                ids = None
            else:
                ids |= set(selector.ids)
        return await self.federation.targets(
            tenant, "createSubscription", ids=ids or None, types=types or None)

    async def created(self, tenant: str, doc: JSONObject) -> None:
        """A subscription was stored: copy it to the sources that cover its entities."""
        if doc.get("localOnly") is True or doc.get("timeInterval") is not None:
            return
        if urlsplit(str(doc["notification"]["endpoint"]["uri"])).path.endswith(INBOUND_PATH):
            return  # a copy made by another broker: copying it on could go round for ever
        targets = await self._targets(tenant, doc)
        if not targets:
            return
        links = [{"registration": t.id, "endpoint": t.endpoint,
                  "remote": f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"} for t in targets]
        await self._link(tenant, doc, links)
        copy = self._copy(doc, tenant)
        for target, link in zip(targets, links, strict=True):
            self._spawn(self._forward(tenant, target, copy, link))

    async def deleted(self, tenant: str, subscription_id: str) -> None:
        """A subscription was deleted: delete its remote copies and the internal link.
        A tenant without registrations made no copies: nothing is read (the cached
        registrations say so)."""
        if not await self.federation.registrations(tenant):
            return
        found = await self._internal(tenant, subscription_id)
        if found is None:
            return
        await self.csubs.store.delete(tenant, str(found.doc["id"]))
        links = found.doc[LINKS]["links"]
        targets = {t.id: t for t in await self.federation.targets(tenant, "deleteSubscription")}
        for link in links:
            target = targets.get(link["registration"])
            if target is not None:
                self._spawn(self._delete_remote(tenant, target, link["remote"]))

    async def _link(self, tenant: str, doc: JSONObject, links: list[JSONObject]) -> None:
        """The internal csource subscription over the same entities, holding the links."""
        now = self.clock()
        shown = render_subscription(doc, core_term_map(), DeliveryStats(), now)
        internal: JSONObject = {
            "id": f"urn:ngsi-ld:Subscription:{uuid.uuid4()}",
            "type": "Subscription",
            "subscriptionName": f"distributed {doc['id']}",
            "entities": shown.get("entities", []),
            "notification": {"endpoint": {"uri": self.inbound_uri(tenant),
                                          "accept": "application/json"}},
            "jsonldContext": doc.get("jsonldContext"),
            "_context": doc.get("_context"),
            "_defaultContext": doc.get("_defaultContext"),
            "createdAt": now,
            "modifiedAt": now,
            LINKS: {"subscription": doc["id"], "links": links},
        }
        if not internal["entities"]:
            internal.pop("entities")
        await self.csubs.store.insert(tenant, internal)

    async def _internal(self, tenant: str, subscription_id: str) -> StoredSubscription | None:
        for stored in await self.csubs.store.load(tenant):
            held = stored.doc.get(LINKS)
            if isinstance(held, dict) and held.get("subscription") == subscription_id:
                return stored
        return None

    def _copy(self, doc: JSONObject, tenant: str) -> JSONObject:
        """The reduced copy: the selectors and triggers, notifying this broker in the
        normalized format; no q when the entities are split across sources."""
        shown = render_subscription(doc, core_term_map(), DeliveryStats(), self.clock())
        out: JSONObject = {k: v for k, v in shown.items() if k not in _LOCAL_ONLY}
        if "q" in doc and doc.get("splitEntities") is not True:
            out["q"] = doc["q"]  # names of the q are resolved with the @context sent
        out["notification"] = {"endpoint": {"uri": self.inbound_uri(tenant),
                                            "accept": "application/json"},
                               "format": "normalized"}
        context = doc.get("_context")
        if context is not None:
            out["@context"] = context
        return out

    async def _forward(self, tenant: str, target: Target, copy: JSONObject,
                       link: JSONObject) -> None:
        try:
            body = dict(copy, id=link["remote"])
            ctype = "application/ld+json" if "@context" in body else "application/json"
            [reply] = await self.federation.send(
                tenant, [target], "POST", _SUBSCRIPTIONS, body=orjson.dumps(body),
                content_type=ctype)
            if not reply.ok:
                log.warning("subscription copy %s refused by %s: %s", link["remote"],
                            target.endpoint, reply.warning or reply.status)
        except Exception:  # noqa: BLE001 - background: never crash, say why
            log.exception("forwarding subscription copy %s to %s failed", link["remote"],
                          target.endpoint)

    async def _delete_remote(self, tenant: str, target: Target, remote: str) -> None:
        try:
            await self.federation.send(tenant, [target], "DELETE",
                                       f"{_SUBSCRIPTIONS}/{quote(remote, safe=':')}")
        except Exception:  # noqa: BLE001
            log.exception("deleting subscription copy %s at %s failed", remote,
                          target.endpoint)

    async def updated(self, tenant: str, doc: JSONObject) -> None:
        """A subscription was updated: the copies are updated alike (PATCH), and sources
        that now match and have no copy get one."""
        if not await self.federation.registrations(tenant):
            return
        found = await self._internal(tenant, str(doc["id"]))
        if found is None:
            await self.created(tenant, doc)
            return
        copy = self._copy(doc, tenant)
        targets = {t.id: t for t in await self.federation.targets(tenant, "updateSubscription")}
        for link in found.doc[LINKS]["links"]:
            target = targets.get(link["registration"])
            if target is not None:
                self._spawn(self._patch_remote(tenant, target, copy, link["remote"]))
        await self._replan(tenant, str(found.doc["id"]))

    async def _patch_remote(self, tenant: str, target: Target, copy: JSONObject,
                            remote: str) -> None:
        try:
            ctype = "application/ld+json" if "@context" in copy else "application/json"
            await self.federation.send(
                tenant, [target], "PATCH", f"{_SUBSCRIPTIONS}/{quote(remote, safe=':')}",
                body=orjson.dumps(copy), content_type=ctype)
        except Exception:  # noqa: BLE001
            log.exception("updating subscription copy %s at %s failed", remote,
                          target.endpoint)

    async def _replan(self, tenant: str, internal_id: str) -> None:
        """The registrations changed (the internal csource subscription was notified):
        a new matching source gets a copy; a link to a registration gone is dropped."""
        stored = await self.csubs.store.get(tenant, internal_id)
        held = stored.doc.get(LINKS) if stored is not None else None
        if stored is None or not isinstance(held, dict):
            raise ResourceNotFound(f"no subscription {internal_id} is known here")
        local = await self.subscriptions.store.get(tenant, str(held["subscription"]))
        if local is None:
            return
        targets = await self._targets(tenant, local.doc)
        wanted = {t.id for t in targets}
        links = [link for link in held["links"] if link["registration"] in wanted]
        linked = {link["registration"] for link in links}
        new = [t for t in targets if t.id not in linked]
        if not new and len(links) == len(held["links"]):
            return
        added = [{"registration": t.id, "endpoint": t.endpoint,
                  "remote": f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"} for t in new]
        doc = dict(stored.doc, **{LINKS: {"subscription": held["subscription"],
                                          "links": links + added}})
        await self.csubs.store.replace(tenant, doc)
        copy = self._copy(local.doc, tenant)
        for target, link in zip(new, added, strict=True):
            self._spawn(self._forward(tenant, target, copy, link))

    # -- inbound notifications -----------------------------------------------------------

    async def _by_remote(self, tenant: str, remote: str) -> str | None:
        for stored in await self.csubs.store.load(tenant):
            held = stored.doc.get(LINKS)
            if isinstance(held, dict) and any(
                    link.get("remote") == remote for link in held.get("links", ())):
                return str(held["subscription"])
        return None

    async def inbound(self, tenant: str, body: JSON, context: JSON) -> int:
        """A source's notification of a remote copy: delivered under the local id.
        Returns how many entities were forwarded. 404 for an unknown subscription, 400
        for a malformed notification or entity. A ContextSourceNotification of an
        internal csource subscription (registrations changed) re-plans the copies."""
        if not isinstance(body, dict):
            raise BadRequestData("a notification is a JSON object")
        remote = body.get("subscriptionId")
        data = body.get("data")
        if not isinstance(remote, str) or not remote:
            raise BadRequestData("a notification needs a subscriptionId")
        if not isinstance(data, list):
            raise BadRequestData("a notification's data is an array of entities")
        if body.get("type") == "ContextSourceNotification":
            await self._replan(tenant, remote)
            return 0
        local_id = await self._by_remote(tenant, remote)
        stored = (await self.subscriptions.store.get(tenant, local_id)
                  if local_id is not None else None)
        if stored is None:
            raise ResourceNotFound(f"no subscription {remote} is known here")
        sub = compile_subscription(stored.doc)
        terms = await self.contexts.term_map(
            context if context is not None else sub.context, tenant=tenant)
        now = self.clock()
        fragments: list[JSONObject] = []
        for item in data:
            if not isinstance(item, dict):
                raise BadRequestData("each notified entity is a JSON object")
            payload = {k: v for k, v in item.items() if k != "@context"}
            fragments.append(expand_entity(payload, terms, now))
        local = await self.entities.get_many(tenant, [f["id"] for f in fragments])
        owner = await self.subscriptions.owner_view(sub, tenant)
        merged: list[JSONObject] = []
        for fragment in fragments:
            have = local.get(fragment["id"])
            entity: JSONObject | None = merge_entities(
                [fragment, have] if have is not None else [fragment])
            if owner is not None and entity is not None:
                entity = owner.read(entity)  # what the subscription's owner may read
            if entity is not None and sub.active_at(now) and selects(entity, sub.query, None):
                merged.append(entity)
        if not merged or self.notify is None:
            return 0
        await self.notify([await self._outgoing(tenant, stored, merged, now)])
        return len(merged)

    async def _outgoing(self, tenant: str, stored: StoredSubscription,
                        entities: list[JSONObject], now: str) -> Outgoing:
        sub = compile_subscription(stored.doc)
        try:
            terms = await self.contexts.term_map(sub.context, tenant=tenant)
        except NgsiLdError:
            terms = core_term_map()
        data = render_data(sub, entities, terms, {})
        # SubscriptionService builds the body and headers of every notification
        return self.subscriptions.package(sub, tenant, data, now, "attributeUpdated")
