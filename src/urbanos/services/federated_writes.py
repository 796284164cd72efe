"""Distributed writes (clause 4.3.6, 6.3.17, 6.3.18): a write split between this broker and
the context sources that registered what it touches, and the outcomes made one answer.

``core.distributed_writes`` decides the split (by mode) and shapes the results;
``services.federation`` selects the sources and sends; this module holds the use cases:
plan a write, run the local part and the forwarded parts at once, collect the outcomes.
The endpoints keep their answers for a write that concerns no source (nothing changes
there, at the cost of one dict lookup when the tenant has no registration).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson

from urbanos.core.distributed_writes import (
    LOCAL_ONLY,
    Conflict,
    Outcome,
    SourceUnavailable,
    WritePlan,
    forward_body,
    link_value,
    plan_write,
    problem_of,
    refusing,
)
from urbanos.core.expiry import canonical
from urbanos.core.federation import Target, warning
from urbanos.core.policy import Action
from urbanos.core.registration_info import supports
from urbanos.core.timeutil import now_iso
from urbanos.errors import NgsiLdError
from urbanos.services.contexts import ContextService
from urbanos.services.federation import Federation, Reply
from urbanos.services.guard import OPEN_GUARD, Guard
from urbanos.services.stores import EntityStore
from urbanos.types import JSON, JSONObject, Terms

__all__ = ["Entry", "FederatedWrites", "Forwarded", "Written"]

T = TypeVar("T")
JSON_MT = "application/json"
JSONLD_MT = "application/ld+json"


@dataclass(frozen=True, slots=True)
class Forwarded:
    """The request a source is sent, from what the client sent: ``path`` under the
    endpoint, the client's query parameters (``local`` left out), its payload as written
    (None: no body), its @context (None: the core one) and the terms to read the payload.
    ``members``: the payload's members are attributes (an entity or a fragment), which a
    source gets only those of it holds; False: sent as it is (one attribute's body)."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    raw: JSON = None
    context: JSON = None
    terms: Terms | None = None
    members: bool = True
    content_type: str = JSON_MT
    #: the client's headers (lower-case names), for contextSourceInfo values that copy one
    #: of them (``urn:ngsi-ld:request``, clause 4.3.6.5)
    incoming: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One entity of a batch: its payload as written (an id for a deletion), the ids,
    types and attributes it touches (expanded), and its @context."""

    raw: JSON
    entity_id: str
    types: frozenset[str] | None
    attrs: frozenset[str] | None
    context: JSON = None
    terms: Terms | None = None


@dataclass(slots=True)
class Written:
    """The outcomes of a distributed write. ``local_error`` is what this broker's part
    raised; ``local_value`` what it returned; ``forwarded``: a source was sent a part."""

    plan: WritePlan
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    local_error: NgsiLdError | None = None
    local_value: Any = None
    forwarded: bool = False

    def check(self) -> None:
        """Raise as a write of this broker alone would, when no source was sent anything:
        this broker's own error, or the Conflict of a source that does not take the
        operation when nothing else was to be done."""
        if self.forwarded:
            return
        if self.local_error is not None:
            raise self.local_error
        if not self.plan.local and self.outcomes and not any(o.ok for o in self.outcomes):
            first = self.outcomes[0]
            raise first.error or Conflict(str((first.problem or {}).get("detail", "")))

    @property
    def complete(self) -> bool:
        return all(o.complete for o in self.outcomes)

    @property
    def headers(self) -> dict[str, str]:
        return {"NGSILD-Warning": ", ".join(self.warnings)} if self.warnings else {}


def _warn(written: Written, reply: Reply, ok: bool) -> None:
    """The source's failure in NGSILD-Warning (clause 6.3.17), also for answers the
    engine does not flag (a 404 is no anomaly for a read, it is one for a write)."""
    if reply.warning:
        written.warnings.append(reply.warning)
    elif not ok or reply.status == 207:
        written.warnings.append(warning(299, reply.target.endpoint,
                                        f"the source answered {reply.status}"))


def _refusal(target: Target, operation: str, ids: list[str], attrs: list[str]) -> Outcome:
    """The part of a holder that will not take the write (``core.distributed_writes.
    refusing``): a Conflict, or a source cooling down."""
    error: NgsiLdError
    if supports(target.doc, operation):
        error = SourceUnavailable(f"the source of registration {target.id} ({target.mode}) "
                                  "is cooling down after failures")
    else:
        error = Conflict(f"registration {target.id} ({target.mode}) holds this data but does "
                         f"not take {operation}")
    return Outcome(target.id, ids, error.problem(), attrs=attrs, error=error)


def _error_outcome(exc: NgsiLdError, ids: list[str], attrs: list[str]) -> Outcome:
    return Outcome(None, ids, exc.problem(), attrs=attrs)


def _detail(reply: Reply) -> str:
    if reply.warning:
        return reply.warning
    return f"the source answered {reply.status}"


def single_outcome(reply: Reply, ids: list[str], attrs: list[str]) -> Outcome:
    """One source's answer to a write on one entity (or a purge)."""
    rid = reply.target.id
    status = reply.status
    if reply.warning is None and status is not None and 200 <= status < 300 and status != 207:
        return Outcome(rid, ids, attrs=attrs)
    body = reply.body
    if status == 207 and isinstance(body, dict) and isinstance(body.get("notUpdated"), list):
        updated = [a for a in body.get("updated", []) if isinstance(a, str)]
        missed = [(str(n.get("attributeName", "")), str(n.get("reason", "")))
                  for n in body["notUpdated"] if isinstance(n, dict)]
        return Outcome(rid, ids, attrs=updated, not_updated=missed or [("", "partial")])
    if status == 207 and isinstance(body, dict) and isinstance(body.get("errors"), list):
        errors = [e for e in body["errors"] if isinstance(e, dict)]
        if errors and isinstance(errors[0].get("error"), dict):
            return Outcome(rid, ids, problem_of(207, errors[0]["error"], _detail(reply)),
                           attrs=attrs)
    return Outcome(rid, ids, problem_of(status, body, _detail(reply)), attrs=attrs)


def batch_outcomes(reply: Reply, ids: list[str], *, creating: bool) -> list[Outcome]:
    """One source's answer to a batch: per entity (a 207 BatchOperationResult is read
    entity by entity; any other failure fails them all)."""
    rid = reply.target.id
    status = reply.status
    body = reply.body
    if reply.warning is None and status is not None and 200 <= status < 300 and status != 207:
        created: list[str] = []
        if status == 201:
            listed = [i for i in body if isinstance(i, str)] if isinstance(body, list) else []
            created = [i for i in listed if i in ids] or (list(ids) if creating or not listed
                                                          else [])
        return [Outcome(rid, list(ids), created=created)]
    if status == 207 and isinstance(body, dict) and isinstance(body.get("errors"), list):
        out: list[Outcome] = []
        success = [i for i in body.get("success", []) if isinstance(i, str)]
        if success:
            out.append(Outcome(rid, success, created=success if creating else []))
        failed: set[str] = set()
        for error in body["errors"]:
            if not isinstance(error, dict) or not isinstance(error.get("entityId"), str):
                continue
            failed.add(error["entityId"])
            out.append(Outcome(rid, [error["entityId"]],
                               problem_of(None, error.get("error"), _detail(reply))))
        rest = [i for i in ids if i not in failed and i not in success]
        if rest:
            out.append(Outcome(rid, rest))
        return out
    return [Outcome(rid, list(ids), problem_of(status, body, _detail(reply)))]


class FederatedWrites:
    """The distributed-write use cases over one Federation (per process)."""

    def __init__(self, federation: Federation, contexts: ContextService,
                 store: EntityStore | None = None, clock: Callable[[], str] = now_iso) -> None:
        """``store``: where the types of an entity a write names only by id are read, so
        that registrations of other types are not asked (None: match by id alone)."""
        self.federation = federation
        self.contexts = contexts
        self.store = store
        self.clock = clock

    async def _stored_types(self, tenant: str, ids: list[str]) -> dict[str, set[str]]:
        """The types of the entities this broker holds among ``ids``."""
        if self.store is None or not ids:
            return {}
        try:
            found = await self.store.get_many(tenant, ids)
        except NgsiLdError:  # e.g. a tenant that does not exist here
            return {}
        return {eid: set(e["type"]) for eid, e in found.items() if e.get("type")}

    # -- planning --------------------------------------------------------------------------
    async def plan(
        self, tenant: str, operation: str, *, ids: set[str] | None = None,
        types: set[str] | None = None, attrs: frozenset[str] | None = None,
        id_pattern: str | None = None, via: str | None = None, whole_entity: bool = False,
        lookup: str | None = None,
    ) -> WritePlan:
        """How a write splits (``core.distributed_writes.plan_write``). LoopDetected (508)
        when it came round to an exclusive or redirect source (``Federation.targets``).
        ``lookup``: an entity named by id only, whose stored types (if this broker holds
        it) narrow the registrations that match."""
        docs = await self.federation.registrations(tenant)
        if not docs:
            return LOCAL_ONLY
        asked = set(attrs) if attrs else None
        plan = await self._plan(tenant, operation, docs, ids, types, asked, id_pattern, via,
                                whole_entity)
        if plan.distributed and types is None and lookup is not None:
            stored = (await self._stored_types(tenant, [lookup])).get(lookup)
            if stored:
                plan = await self._plan(tenant, operation, docs, ids, stored, asked,
                                        id_pattern, via, whole_entity)
        return plan

    async def _plan(self, tenant: str, operation: str, docs: Sequence[JSONObject],
                    ids: set[str] | None, types: set[str] | None, attrs: set[str] | None,
                    id_pattern: str | None, via: str | None, whole_entity: bool) -> WritePlan:
        targets = await self.federation.targets(
            tenant, operation, ids=ids, types=types, attrs=attrs, id_pattern=id_pattern,
            via=via)
        refused = refusing(docs, operation, now=canonical(self.clock()), ids=ids, types=types,
                           attrs=attrs, selected={t.id for t in targets})
        plan = plan_write(targets, refused, frozenset(attrs) if attrs else None,
                          whole_entity=whole_entity)
        return replace(plan, types=frozenset(types)) if types and plan.distributed else plan

    # -- one entity ------------------------------------------------------------------------
    async def write(
        self, tenant: str, operation: str, plan: WritePlan, request: Forwarded, *,
        ids: list[str], attrs: frozenset[str] | None,
        local: Callable[[frozenset[str] | None], Awaitable[T]],
        local_outcome: Callable[[T], Outcome] | None = None, via: str | None = None,
        guard: Guard = OPEN_GUARD,
    ) -> Written:
        """Run ``local`` (given the attributes this broker keeps) if the plan has a local
        part, and send each source its part, at once. What is forwarded is first checked
        against the caller's rights, as a write here would be (``Guard.check_write``):
        a source is never asked what the caller may not do."""
        if plan.forward and not guard.open:
            if not ids:  # a purge: the sources' entities cannot be checked one by one
                guard.require(Action.WRITE)
            for eid in ids:
                guard.check_write({"id": eid, "type": sorted(plan.types or ())},
                                  attrs or frozenset())
        written = Written(plan)
        names = sorted(attrs) if attrs else []

        async def run_local() -> None:
            try:
                value = await local(plan.kept)
            except NgsiLdError as exc:
                written.local_error = exc
                written.outcomes.insert(0, _error_outcome(exc, ids, names))
                return
            written.local_value = value
            kept = sorted(plan.kept) if plan.kept is not None else names
            outcome = (local_outcome(value) if local_outcome is not None
                       else Outcome(None, ids, attrs=kept))
            written.outcomes.insert(0, outcome)

        for target in plan.refused:
            held = sorted(target.attrs) if target.attrs is not None else names
            written.outcomes.append(_refusal(target, operation, ids, held))
        jobs: list[Awaitable[Any]] = []
        if plan.local:
            jobs.append(run_local())
        if plan.forward:
            jobs.append(self._forward_single(tenant, plan.forward, request, written, ids, names,
                                             via))
        await asyncio.gather(*jobs)
        return written

    async def _forward_single(self, tenant: str, targets: Sequence[Target], request: Forwarded,
                              written: Written, ids: list[str], names: list[str],
                              via: str | None) -> None:
        groups: dict[tuple[bytes | None, str, str | None], list[Target]] = {}
        sent_attrs: dict[str, list[str]] = {}
        for target in targets:
            body, ctype, link = await self._payload(tenant, target, request, target.attrs)
            groups.setdefault((body, ctype, link), []).append(target)
            sent_attrs[target.id] = sorted(target.attrs) if target.attrs is not None else names
        written.forwarded = True
        sent = await asyncio.gather(*(
            self.federation.send(tenant, group, request.method, request.path,
                                 params=request.params, body=body,
                                 content_type=ctype if body is not None else None, link=link,
                                 via=via, incoming=request.incoming)
            for (body, ctype, link), group in groups.items()
        ))
        for replies in sent:
            for reply in replies:
                outcome = single_outcome(reply, ids, sent_attrs[reply.target.id])
                _warn(written, reply, outcome.ok)
                written.outcomes.append(outcome)

    # -- batches ---------------------------------------------------------------------------
    async def batch(
        self, tenant: str, operation: str, entries: Sequence[Entry], request: Forwarded, *,
        local: Callable[[list[int], dict[int, frozenset[str] | None]], Awaitable[list[Outcome]]],
        via: str | None = None, whole_entity: bool = False, creating: bool = False,
        guard: Guard = OPEN_GUARD,
    ) -> Written | None:
        """A batch split entity by entity: ``local`` is given the indexes of the entries
        this broker writes (with the attributes it keeps of each) and returns their
        outcomes; each source gets one request with its part of every entity it holds.
        None when no entry concerns a source (the caller goes on as before)."""
        docs = await self.federation.registrations(tenant)
        if not docs:
            return None
        plans: list[WritePlan] = []
        for entry in entries:
            plans.append(await self.plan(
                tenant, operation, ids={entry.entity_id},
                types=set(entry.types) if entry.types else None, attrs=entry.attrs, via=via,
                whole_entity=whole_entity))
        if not any(p.distributed for p in plans):
            return None
        untyped = [i for i, p in enumerate(plans) if p.distributed and not entries[i].types]
        stored = await self._stored_types(tenant, [entries[i].entity_id for i in untyped])
        for i in untyped:
            if entries[i].entity_id in stored:
                plans[i] = await self.plan(
                    tenant, operation, ids={entries[i].entity_id},
                    types=stored[entries[i].entity_id], attrs=entries[i].attrs, via=via,
                    whole_entity=whole_entity)
        written = Written(LOCAL_ONLY)
        if not guard.open:  # what the caller may not write is not forwarded either
            for i, p in enumerate(plans):
                if not p.forward:
                    continue
                try:
                    guard.check_write({"id": entries[i].entity_id,
                                       "type": sorted(p.types or ())},
                                      entries[i].attrs or frozenset())
                except NgsiLdError as exc:
                    written.outcomes.append(_error_outcome(exc, [entries[i].entity_id], []))
                    plans[i] = replace(p, local=False, forward=(), refused=())
        kept = {i: p.kept for i, p in enumerate(plans) if p.local}
        per_target: dict[str, tuple[Target, list[int]]] = {}
        for i, p in enumerate(plans):
            for target in p.refused:
                attrs = sorted(target.attrs) if target.attrs is not None else []
                written.outcomes.append(
                    _refusal(target, operation, [entries[i].entity_id], attrs))
            for target in p.forward:
                per_target.setdefault(target.id, (target, []))[1].append(i)

        async def run_local() -> None:
            if kept:
                written.outcomes[:0] = await local(sorted(kept), kept)

        async def run_remote() -> None:
            if not per_target:
                return
            written.forwarded = True
            sent = await asyncio.gather(*(
                self._send_batch(tenant, target, [entries[i] for i in indexes],
                                 [plans[i] for i in indexes], request, via)
                for target, indexes in per_target.values()
            ))
            for target, reply in sent:
                ids = [entries[i].entity_id for i in per_target[target.id][1]]
                outcomes = batch_outcomes(reply, ids, creating=creating)
                _warn(written, reply, all(o.ok for o in outcomes))
                written.outcomes.extend(outcomes)

        await asyncio.gather(run_local(), run_remote())
        return written

    async def _send_batch(self, tenant: str, target: Target, entries: Sequence[Entry],
                          plans: Sequence[WritePlan], request: Forwarded,
                          via: str | None) -> tuple[Target, Reply]:
        items: list[Any] = []
        ctype, link = JSON_MT, None
        # one Link header cannot carry the @contexts of entities that came with different
        # ones: then each goes as JSON-LD with its own
        inline = len({orjson.dumps(e.context) for e in entries}) > 1 \
            and not _source_info(target.doc).get("jsonldContext")
        for entry, plan in zip(entries, plans, strict=True):
            part = next((t for t in plan.forward if t.id == target.id), target)
            one = Forwarded(request.method, request.path, request.params, entry.raw,
                            entry.context, entry.terms, request.members,
                            incoming=request.incoming)
            if not isinstance(entry.raw, dict):
                items.append(entry.raw)
                continue
            item, ctype, link = await self._document(tenant, target, one, part.attrs,
                                                     inline=inline)
            items.append(item)
        body = orjson.dumps(items)
        replies = await self.federation.send(tenant, [target], request.method, request.path,
                                             params=request.params, body=body,
                                             content_type=ctype, link=link, via=via,
                                             incoming=request.incoming)
        return target, replies[0]

    # -- payloads --------------------------------------------------------------------------
    async def _payload(self, tenant: str, target: Target, request: Forwarded,
                       attrs: frozenset[str] | None) -> tuple[bytes | None, str, str | None]:
        if request.raw is None:
            link = await self._link(tenant, target, request.context)
            return None, JSON_MT, link
        if not isinstance(request.raw, dict):
            return orjson.dumps(request.raw), request.content_type, await self._link(
                tenant, target, request.context)
        doc, ctype, link = await self._document(tenant, target, request, attrs)
        if ctype == JSON_MT and request.content_type != JSON_MT:
            ctype = request.content_type  # merge-patch stays merge-patch
        return orjson.dumps(doc), ctype, link

    async def _document(self, tenant: str, target: Target, request: Forwarded,
                        attrs: frozenset[str] | None, *, inline: bool = False
                        ) -> tuple[JSONObject, str, str | None]:
        """One payload for one source, in the form its registration asks for (clause
        4.3.6.6): re-compacted with its ``jsonldContext``, or JSON-LD with the @context in
        the body for ``contentType`` application/ld+json (or ``inline``), else JSON with a
        Link."""
        assert isinstance(request.raw, dict) and request.terms is not None
        info = _source_info(target.doc)
        into: Terms | None = None
        context = request.context
        registered = info.get("jsonldContext")
        if registered:
            into = await self.contexts.term_map(registered, tenant=tenant)
            context = registered
        raw = request.raw
        if request.members:
            doc = forward_body(raw, request.terms, attrs, into=into)
        else:
            doc = {k: v for k, v in raw.items() if k != "@context"}
        if inline or info.get("contentType") == JSONLD_MT:
            url = await self.contexts.link_url(context, tenant=tenant)
            doc["@context"] = context if context is not None else url
            return doc, JSONLD_MT, None
        return doc, JSON_MT, await self._link_for(tenant, context)

    async def _link(self, tenant: str, target: Target, context: JSON) -> str | None:
        registered = _source_info(target.doc).get("jsonldContext")
        return await self._link_for(tenant, registered or context)

    async def _link_for(self, tenant: str, context: JSON) -> str | None:
        if context is None:
            return None
        return link_value(await self.contexts.link_url(context, tenant=tenant))


def _source_info(doc: JSONObject) -> dict[str, str]:
    """The registration's contextSourceInfo as a dict (string values only)."""
    out: dict[str, str] = {}
    for pair in doc.get("contextSourceInfo") or ():
        if isinstance(pair, dict) and isinstance(pair.get("key"), str) \
                and isinstance(pair.get("value"), str):
            out[pair["key"]] = pair["value"]
    return out
