"""Reads across context sources (clauses 4.3.6, 5.7.1, 5.7.2): Retrieve Entity and Query
Entities answered from the local store and every matching registration, merged.

A source's answer is validated like a client's input (``core.entity.expand_entity``) before
it is merged; an answer that does not validate is left out with an NGSILD-Warning 111.
Queries over entities split between sources: the source is asked for the entities only
(id, idPattern, type, the attributes it holds), never the q/geo/scope filters, which are
applied after the merge; the page and the count are taken over the merged result (at most
``most`` entities from each side).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import orjson

from urbanos.core.entity import expand_entity
from urbanos.core.expiry import canonical
from urbanos.core.federation import Target, merge_sources, warning
from urbanos.core.query.ast import QExpr, TypeExpr
from urbanos.core.selection import EntityQuery, matches, simple_type_set
from urbanos.core.timeutil import now_iso, parse_utc_datetime
from urbanos.errors import BadRequestData, NgsiLdError, ResourceNotFound
from urbanos.services.contexts import ContextService
from urbanos.services.entities import EntityService, Page
from urbanos.services.federation import Federation, Reply
from urbanos.services.guard import OPEN_GUARD, Guard
from urbanos.types import JSONObject, Terms

__all__ = ["FederatedReads", "Found", "LOCAL"]

log = logging.getLogger("urbanos.federation")

#: the name of the local broker in an entity map (clause 5.2.39)
LOCAL = "@none"
_ENTITIES = "/ngsi-ld/v1/entities"
_QUERY = "/ngsi-ld/v1/entityOperations/query"
_LINK_CONTEXT = re.compile(
    r'<([^>]*)>\s*;[^,]*rel\s*=\s*"?http://www\.w3\.org/ns/json-ld#context"?')
_STAMPS = ("createdAt", "modifiedAt")
#: the retrieve operation a registration may serve a Retrieve Entity with, in preference
_RETRIEVE_OPS = ("retrieveEntity", "queryEntity", "queryBatch")
_QUERY_OPS = ("queryEntity", "queryBatch")


@dataclass(slots=True)
class Found:
    """What the sources gave: per entity id its fragments (stored form), the warnings of
    the sources that failed, and which sources answered for each entity."""

    fragments: dict[str, list[tuple[Target, JSONObject]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def holders(self, entity_id: str, local: bool) -> list[str]:
        out = [LOCAL] if local else []
        out.extend(t.id for t, _ in self.fragments.get(entity_id, ()))
        return out


@dataclass(frozen=True, slots=True)
class Selection:
    """What the sources are asked for (expanded names), and how: ``filters`` are the
    query's own q/scopeQ/geo-query parameters, forwarded as given unless the entities may
    be split between sources (then they are applied after the merge); ``csf`` picks the
    registrations by their Context Source Properties; ``incoming`` are the caller's
    headers (for contextSourceInfo values taken from the request)."""

    ids: tuple[str, ...] | None = None
    id_pattern: str | None = None
    types: frozenset[str] | None = None
    attrs: frozenset[str] | None = None
    filters: tuple[tuple[str, str], ...] = ()
    csf: QExpr | None = None
    incoming: Mapping[str, str] | None = None


class FederatedReads:
    def __init__(self, federation: Federation, contexts: ContextService,
                 entities: EntityService, *, page_size: int = 1000, most: int = 10_000) -> None:
        self.federation = federation
        self.contexts = contexts
        self.entities = entities
        self.page_size = page_size
        self.most = most

    async def active(self, tenant: str) -> bool:
        """Whether the tenant has registrations at all (else reads stay local, at once)."""
        return bool(await self.federation.registrations(tenant))

    async def _targets(self, tenant: str, operations: Sequence[str], sel: Selection,
                       via: str | None, warnings: list[str] | None = None,
                       ) -> list[tuple[str, Target]]:
        """Each matching registration once, with the first of ``operations`` it serves;
        one cooling down after failures is a 199 in ``warnings``."""
        out: list[tuple[str, Target]] = []
        seen: set[str] = set()
        cooling: list[Target] = []
        for op in operations:
            found = await self.federation.targets(
                tenant, op, ids=set(sel.ids) if sel.ids else None,
                types=set(sel.types) if sel.types else None,
                attrs=set(sel.attrs) if sel.attrs else None, id_pattern=sel.id_pattern,
                via=via, csf=sel.csf, cooling=cooling)
            for target in found:
                if target.id not in seen:
                    seen.add(target.id)
                    out.append((op, target))
        if warnings is not None:
            for target in cooling:
                if target.id not in seen:
                    seen.add(target.id)
                    warnings.append(warning(199, target.endpoint,
                                            "not asked: cooling down after a failure"))
        return out

    # -- Retrieve Entity -------------------------------------------------------------------
    async def retrieve(
        self, tenant: str, entity_id: str, *, terms: Terms, link: str,
        types: TypeExpr | None, type_param: str | None, attrs: frozenset[str] | None,
        via: str | None, guard: Guard = OPEN_GUARD, incoming: Mapping[str, str] | None = None,
    ) -> tuple[JSONObject | None, Found, bool]:
        """The merged entity (None: no one has it), what the sources gave, and whether the
        local broker held some of it. LoopDetected when a sole holder looped back."""
        sel = Selection(ids=(entity_id,), types=_type_set(types), attrs=attrs,
                        incoming=incoming)
        skipped: list[str] = []
        targets = await self._targets(tenant, _RETRIEVE_OPS, sel, via, skipped)
        local: JSONObject | None
        try:
            local = await self.entities.retrieve(tenant, entity_id, guard=guard)
        except ResourceNotFound:
            local = None
        if not targets:
            return local, Found(warnings=skipped), local is not None
        found = await self._gather(tenant, targets, sel, terms=terms, link=link, via=via,
                                   type_param=type_param, guard=guard)
        found.warnings[:0] = skipped
        pieces = [(t, f) for t, f in found.fragments.get(entity_id, ())]
        merged = merge_sources(local, pieces, canonical(now_iso()))
        return merged, found, local is not None

    # -- Query Entities --------------------------------------------------------------------
    async def query(
        self, tenant: str, query: EntityQuery, *, terms: Terms, link: str,
        type_param: str | None, via: str | None, guard: Guard = OPEN_GUARD,
        split: bool = False, filters: Sequence[tuple[str, str]] = (),
        csf: QExpr | None = None, incoming: Mapping[str, str] | None = None,
    ) -> tuple[Page, Found, set[str]] | None:
        """The page over the merged result, what the sources gave and the ids the local
        broker holds; None when no registration matches (the caller queries locally).

        ``split`` (splitEntities, clause 5.7.2.4): the filters are not forwarded but applied
        to the merged entities; otherwise ``filters`` go with the forwarded request and
        each source's answer is taken as matching. Ordering is refused (clause 4.23)."""
        sel = Selection(ids=query.ids, id_pattern=query.id_pattern,
                        types=_type_set(query.types), attrs=query.attrs,
                        filters=() if split else tuple(filters), csf=csf, incoming=incoming)
        skipped: list[str] = []
        targets = await self._targets(tenant, _QUERY_OPS, sel, via, skipped)
        if not targets and not skipped:
            return None
        if query.order is not None:
            raise BadRequestData("orderBy is not supported by a distributed query (clause "
                                 "4.23): add local=true to order the local entities")
        found = await self._gather(tenant, targets, sel, terms=terms, link=link, via=via,
                                   type_param=type_param, guard=guard)
        found.warnings[:0] = skipped
        now = canonical(now_iso())
        wide = replace(query, offset=0, limit=self.most, count=False)
        local_matches = (await self._local(tenant, wide, guard)).entities
        local_ids = {e["id"] for e in local_matches}
        others = [i for i in found.fragments if i not in local_ids]
        rest: dict[str, JSONObject] = {}
        if others:
            page = await self._local(tenant, EntityQuery(ids=tuple(others), limit=len(others)),
                                     guard)
            rest = {e["id"]: e for e in page.entities}
        check = replace(query, alive_at=now, view=None)
        selection = EntityQuery(ids=query.ids, id_pattern=query.id_pattern, types=query.types,
                                alive_at=now)
        merged: list[JSONObject] = []
        for entity in local_matches:
            pieces = found.fragments.get(entity["id"])
            if not pieces:
                merged.append(entity)
                continue
            whole = merge_sources(entity, pieces, now)
            if whole is not None and (not split or matches(whole, check)):
                merged.append(whole)
        for entity_id in others:
            whole = merge_sources(rest.get(entity_id), found.fragments[entity_id], now)
            if whole is not None and (matches(whole, check) if split else
                                      matches(whole, selection)):
                merged.append(whole)
        page_entities = merged[query.offset:query.offset + query.limit]
        held = local_ids | set(rest)
        return Page(page_entities, len(merged) if query.count else None), found, held

    async def _local(self, tenant: str, query: EntityQuery, guard: Guard) -> Page:
        try:
            return await self.entities.query(tenant, query, guard=guard)
        except ResourceNotFound:  # the tenant exists only at the sources
            return Page([], 0)

    # -- forwarding ------------------------------------------------------------------------
    async def _gather(
        self, tenant: str, targets: list[tuple[str, Target]], sel: Selection, *,
        terms: Terms, link: str, via: str | None, type_param: str | None, guard: Guard,
    ) -> Found:
        found = Found()
        link_header = f'<{link}>; rel="http://www.w3.org/ns/json-ld#context"; ' \
                      'type="application/ld+json"'
        by_op: dict[str, list[Target]] = {}
        for op, target in targets:
            by_op.setdefault(op, []).append(target)
        for op, group in by_op.items():
            offset = 0
            pending = group
            while pending:
                replies = await self._ask(tenant, op, pending, sel, terms=terms,
                                          link=link_header, via=via, type_param=type_param,
                                          offset=offset)
                full: list[Target] = []
                for reply in replies:
                    count = await self._take(tenant, reply, found, sel, terms=terms, guard=guard)
                    if op != "retrieveEntity" and count >= self.page_size \
                            and offset + self.page_size < self.most:
                        full.append(reply.target)
                pending = full
                offset += self.page_size
        return found

    async def _ask(self, tenant: str, op: str, targets: list[Target], sel: Selection, *,
                   terms: Terms, link: str, via: str | None, type_param: str | None,
                   offset: int) -> list[Reply]:
        c = terms.compact

        async def check(reply: Reply) -> str | None:
            return await self._validate(tenant, reply, terms)

        def names(target: Target) -> list[str] | None:
            return sorted(c(a) for a in target.attrs) if target.attrs is not None else None

        def kinds(target: Target) -> list[str]:
            if sel.types:
                return sorted(c(t) for t in sel.types)
            return sorted(c(t) for t in _registered_types(target.doc))

        if op == "retrieveEntity":
            assert sel.ids is not None

            def retrieve_params(target: Target) -> list[tuple[str, str]]:
                params: list[tuple[str, str]] = []
                attrs = names(target)
                if attrs:
                    params.append(("attrs", ",".join(attrs)))
                if type_param:
                    params.append(("type", type_param))
                params.append(("options", "sysAttrs"))
                return params

            path = f"{_ENTITIES}/{quote(sel.ids[0], safe=':')}"
            return await self.federation.send(
                tenant, targets, "GET", path, link=link, via=via, params_for=retrieve_params,
                accept="application/ld+json", incoming=sel.incoming, check=check)

        def ids(target: Target) -> list[str] | None:
            if sel.ids:
                return list(sel.ids)
            return None if sel.id_pattern else target.registered_ids()

        if op == "queryEntity":

            def query_params(target: Target) -> list[tuple[str, str]]:
                params: list[tuple[str, str]] = []
                if type_param and sel.types is None:
                    params.append(("type", type_param))
                else:
                    types = kinds(target)
                    if types:
                        params.append(("type", ",".join(types)))
                asked = ids(target)
                if asked:
                    params.append(("id", ",".join(asked)))
                elif sel.id_pattern:
                    params.append(("idPattern", sel.id_pattern))
                attrs = names(target)
                if attrs:
                    params.append(("attrs", ",".join(attrs)))
                params.extend(sel.filters)
                params.append(("options", "sysAttrs"))
                params.append(("limit", str(self.page_size)))
                if offset:
                    params.append(("offset", str(offset)))
                return params

            return await self.federation.send(
                tenant, targets, "GET", _ENTITIES, link=link, via=via, params_for=query_params,
                accept="application/ld+json", incoming=sel.incoming, check=check)
        # queryBatch: one POST per target (each its own body)
        replies: list[Reply] = []
        for target in targets:
            entity: JSONObject = {}
            types = kinds(target)
            if types:
                entity["type"] = ",".join(types)
            asked = ids(target)
            selectors = [entity | {"id": i} for i in asked] if asked else [entity]
            if not asked and sel.id_pattern:
                entity["idPattern"] = sel.id_pattern
            body: JSONObject = {"type": "Query", "entities": selectors}
            attrs = names(target)
            if attrs:
                body["attrs"] = attrs
            for key, value in sel.filters:
                if key in ("q", "scopeQ"):
                    body[key] = value
            params = [("options", "sysAttrs"), ("limit", str(self.page_size))]
            if offset:
                params.append(("offset", str(offset)))
            replies.extend(await self.federation.send(
                tenant, [target], "POST", _QUERY, params=params, body=orjson.dumps(body),
                content_type="application/json", link=link, via=via,
                accept="application/ld+json", incoming=sel.incoming, check=check))
        return replies

    async def _validate(self, tenant: str, reply: Reply, terms: Terms) -> str | None:
        """A source's answer validated as a client's input would be: its entities in the
        stored form in ``reply.parsed``, or the 111 warning saying why not."""
        body = reply.body
        items = body if isinstance(body, list) else [body]
        try:
            context = context_of_answer(items, reply.headers)
            their_terms = terms if context is None else await self.contexts.term_map(
                context, tenant=tenant)
            now = now_iso()
            reply.parsed = [_expand(item, their_terms, now) for item in items]
        except NgsiLdError as exc:
            return warning(111, reply.target.endpoint, f"invalid payload: {exc.detail}")
        except Exception as exc:  # noqa: BLE001 - whatever a hostile answer trips over
            log.warning("an answer of %s could not be read: %r", reply.target.endpoint, exc)
            return warning(111, reply.target.endpoint, "invalid payload")
        return None

    async def _take(self, tenant: str, reply: Reply, found: Found, sel: Selection, *,
                    terms: Terms, guard: Guard) -> int:
        """One validated reply's entities into ``found``; how many the source sent."""
        if reply.warning is not None:
            found.warnings.append(reply.warning)
            return 0
        entities: list[JSONObject] = reply.parsed or []
        for entity in entities:
            if sel.ids and entity["id"] not in sel.ids:
                continue
            if not guard.open:
                shown = guard.read(entity)
                if shown is None:
                    continue
                entity = shown
            if reply.target.attrs is not None:  # what it registered and was asked for only
                entity["attrs"] = {k: v for k, v in entity["attrs"].items()
                                   if k in reply.target.attrs}
            found.fragments.setdefault(entity["id"], []).append((reply.target, entity))
        return len(entities)


def _type_set(types: TypeExpr | None) -> frozenset[str] | None:
    return simple_type_set(types) if types is not None else None


def _registered_types(doc: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for info in doc["information"]:
        for entity in info.get("entities", ()):
            kind = entity["type"]
            out.update([kind] if isinstance(kind, str) else kind)
    return out


def context_of_answer(items: list[Any], headers: Mapping[str, str]) -> Any:
    """The @context a source's answer is written in: the body's, else its Link header's,
    else None (the one the request was sent with)."""
    for item in items:
        if isinstance(item, dict) and "@context" in item:
            return item["@context"]
    for key, value in headers.items():
        if key.lower() == "link":
            match = _LINK_CONTEXT.search(value)
            if match:
                return match.group(1)
    return None


def _expand(item: Any, terms: Terms, now: str) -> JSONObject:
    """One entity of a source's answer in the stored form, validated as a client's input;
    the source's own createdAt/modifiedAt are kept (the merge of clause 4.5.5.3 uses them)."""
    if not isinstance(item, dict):
        raise NgsiLdError("an entity must be a JSON object")
    payload = {k: v for k, v in item.items() if k != "@context"}
    entity = expand_entity(payload, terms, now)
    for stamp in _STAMPS:
        if parse_utc_datetime(item.get(stamp)) is not None:
            entity[stamp] = item[stamp]
        else:
            entity.pop(stamp, None)
    for name, raw in payload.items():
        if name in ("id", "type", "scope", "expiresAt", *_STAMPS):
            continue
        instances = entity["attrs"].get(terms.expand(name))
        if not instances:
            continue
        raws = raw if isinstance(raw, list) else [raw]
        for inst in instances:
            source = next((r for r in raws if isinstance(r, dict)
                           and r.get("datasetId") == inst.get("datasetId")), None)
            for stamp in _STAMPS:
                value = source.get(stamp) if source is not None else None
                if parse_utc_datetime(value) is not None:
                    inst[stamp] = value
                else:
                    inst.pop(stamp, None)
    return entity
