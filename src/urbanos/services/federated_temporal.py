"""Retrieve Temporal Evolution of an Entity across context sources (clauses 5.7.3, 4.3.6):
the local history united with the instances of every registration serving
``retrieveTemporal``.

Each source is asked for the same window (timerel, timeAt, endTimeAt, timeproperty, lastN)
and the attributes it registered, in the normalized temporal representation; its answer
is validated as a temporal write's payload would be (``core.temporal_input``). Per
attribute and datasetId the instances are united (the same time and value once), put in
time order and cut to the request's page (the latest ones with lastN). Aggregated
representations are answered locally: a source's raw instances are not asked for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import orjson

from urbanos.core.federation import Target, warning
from urbanos.core.temporal import time_of
from urbanos.core.temporal_input import expand_temporal_entity
from urbanos.core.temporal_render import EntityHistory, Series
from urbanos.core.timeutil import now_iso
from urbanos.errors import NgsiLdError
from urbanos.services.contexts import ContextService
from urbanos.services.federated_reads import context_of_answer
from urbanos.services.federation import Federation, Reply
from urbanos.services.temporal import HistoryRequest
from urbanos.types import JSONObject, Terms

__all__ = ["FederatedTemporal"]

log = logging.getLogger("urbanos.federation")
_PATH = "/ngsi-ld/v1/temporal/entities/"
_INSTANCE_KEYS = ("type", "value", "object", "languageMap", "vocab", "json", "valueList",
                  "objectList")


class FederatedTemporal:
    def __init__(self, federation: Federation, contexts: ContextService) -> None:
        self.federation = federation
        self.contexts = contexts

    async def active(self, tenant: str) -> bool:
        return bool(await self.federation.registrations(tenant))

    async def retrieve(
        self, tenant: str, entity_id: str, local: EntityHistory | None, request: HistoryRequest,
        *, terms: Terms, link: str, via: str | None, window: Sequence[tuple[str, str]],
        incoming: Mapping[str, str] | None = None,
    ) -> tuple[EntityHistory | None, list[str]]:
        """``local`` (None: this broker has none) with the sources' instances, and the
        warnings of the sources that failed."""
        attrs = set(request.attrs) if request.attrs is not None else None
        targets = await self.federation.targets(tenant, "retrieveTemporal", ids={entity_id},
                                                attrs=attrs, via=via)
        if not targets:
            return local, []
        link_header = f'<{link}>; rel="http://www.w3.org/ns/json-ld#context"; ' \
                      'type="application/ld+json"'

        def params_for(target: object) -> list[tuple[str, str]]:
            params = list(window)
            names = getattr(target, "attrs", None)
            if names:
                params.append(("attrs", ",".join(sorted(terms.compact(a) for a in names))))
            return params

        async def check(reply: Reply) -> str | None:
            try:
                context = context_of_answer([reply.body], reply.headers)
                their = terms if context is None else await self.contexts.term_map(
                    context, tenant=tenant)
                parsed = expand_temporal_entity(
                    {k: v for k, v in reply.body.items() if k != "@context"}
                    if isinstance(reply.body, dict) else reply.body, their, now_iso())
            except NgsiLdError as exc:
                return warning(111, reply.target.endpoint, f"invalid payload: {exc.detail}")
            except Exception as exc:  # noqa: BLE001 - whatever a hostile answer trips over
                log.warning("an answer of %s could not be read: %r", reply.target.endpoint, exc)
                return warning(111, reply.target.endpoint, "invalid payload")
            if parsed["id"] != entity_id:
                return warning(111, reply.target.endpoint, "the answer is about another entity")
            reply.parsed = parsed
            return None

        replies = await self.federation.send(
            tenant, targets, "GET", _PATH + quote(entity_id, safe=":"), link=link_header,
            via=via, accept="application/ld+json", incoming=incoming, params_for=params_for,
            check=check)
        warnings = [r.warning for r in replies if r.warning is not None]
        merged = local
        for reply in replies:
            if reply.warning is None and reply.parsed is not None:
                merged = _merge(merged, reply.parsed, reply.target.attrs, request)
        return merged, warnings


    async def query(
        self, tenant: str, local: list[EntityHistory], request: HistoryRequest, *,
        ids: tuple[str, ...] | None, id_pattern: str | None, types: frozenset[str] | None,
        terms: Terms, link: str, via: str | None, params: Sequence[tuple[str, str]],
        incoming: Mapping[str, str] | None = None,
    ) -> tuple[list[EntityHistory], list[str]] | None:
        """Every local match (``local``) united with the sources' answers to the same query
        (``params``: its selection, filters and window as given), the local ones first;
        None when no registration serves ``queryTemporal`` for it."""
        attrs = set(request.attrs) if request.attrs is not None else None
        targets = await self.federation.targets(
            tenant, "queryTemporal", ids=set(ids) if ids else None,
            types=set(types) if types else None, attrs=attrs, id_pattern=id_pattern, via=via)
        if not targets:
            return None
        link_header = f'<{link}>; rel="http://www.w3.org/ns/json-ld#context"; ' \
                      'type="application/ld+json"'

        def params_for(target: Target) -> list[tuple[str, str]]:
            out = [(k, v) for k, v in params if k != "attrs"]
            if not any(k == "type" for k, _ in out):
                kinds = sorted(terms.compact(t) for t in _registered_types(target.doc))
                if kinds:
                    out.insert(0, ("type", ",".join(kinds)))
            if target.attrs:
                out.append(("attrs", ",".join(sorted(terms.compact(a) for a in target.attrs))))
            out.append(("limit", str(_MOST_PER_SOURCE)))
            return out

        async def check(reply: Reply) -> str | None:
            items = reply.body if isinstance(reply.body, list) else [reply.body]
            try:
                context = context_of_answer(items, reply.headers)
                their = terms if context is None else await self.contexts.term_map(
                    context, tenant=tenant)
                now = now_iso()
                reply.parsed = [expand_temporal_entity(
                    {k: v for k, v in item.items() if k != "@context"}
                    if isinstance(item, dict) else item, their, now) for item in items]
            except NgsiLdError as exc:
                return warning(111, reply.target.endpoint, f"invalid payload: {exc.detail}")
            except Exception as exc:  # noqa: BLE001 - whatever a hostile answer trips over
                log.warning("an answer of %s could not be read: %r", reply.target.endpoint, exc)
                return warning(111, reply.target.endpoint, "invalid payload")
            return None

        replies = await self.federation.send(
            tenant, targets, "GET", _PATH.rstrip("/"), link=link_header, via=via,
            accept="application/ld+json", incoming=incoming, params_for=params_for,
            check=check)
        warnings = [r.warning for r in replies if r.warning is not None]
        merged = {h.id: h for h in local}
        for reply in replies:
            if reply.warning is not None:
                continue
            for entity in reply.parsed or ():
                if ids and entity["id"] not in ids:
                    continue
                merged[entity["id"]] = _merge(merged.get(entity["id"]), entity,
                                              reply.target.attrs, request)
        return list(merged.values()), warnings


#: the most temporal entities asked of one source for one query
_MOST_PER_SOURCE = 1000


def _registered_types(doc: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for info in doc["information"]:
        for entity in info.get("entities", ()):
            kind = entity["type"]
            out.update([kind] if isinstance(kind, str) else kind)
    return out


def _key(inst: JSONObject, prop: str) -> tuple[int | None, bytes]:
    return time_of(inst, prop), orjson.dumps({k: inst.get(k) for k in _INSTANCE_KEYS},
                                             option=orjson.OPT_SORT_KEYS)


def _merge(history: EntityHistory | None, remote: JSONObject,
           registered: frozenset[str] | None, request: HistoryRequest) -> EntityHistory:
    prop = request.query.timeproperty
    out = history or EntityHistory(remote["id"], [])
    types = list(out.types) + [t for t in remote["type"] if t not in out.types]
    series = {(s.attr, s.dataset_id): s for s in out.series}
    for attr, instances in remote["attrs"].items():
        if registered is not None and attr not in registered:
            continue
        if request.attrs is not None and attr not in request.attrs:
            continue
        by_dataset: dict[str | None, list[JSONObject]] = {}
        for inst in instances:
            by_dataset.setdefault(inst.get("datasetId"), []).append(inst)
        for dataset, found in by_dataset.items():
            held = series.get((attr, dataset))
            series[(attr, dataset)] = _united(held, Series(attr, dataset, found), prop, request)
    return EntityHistory(out.id, types, list(series.values()), out.aggregated)


def _united(held: Series | None, more: Series, prop: str, request: HistoryRequest) -> Series:
    """Two series of one attribute and datasetId as one page: in time order, duplicates
    once, cut to the page (the latest with lastN)."""
    seen: set[tuple[int | None, bytes]] = set()
    both: list[tuple[int | None, JSONObject]] = []
    for inst in (held.instances if held is not None else []) + more.instances:
        key = _key(inst, prop)
        if key in seen:
            continue
        seen.add(key)
        both.append((key[0], inst))
    if request.query.timerel is not None:
        both = [(t, i) for t, i in both if t is None or request.query.contains(t)]
    both.sort(key=lambda pair: (pair[0] is None, pair[0] or 0))
    keep, cut_by_limit = request.page_size()
    truncated = (held.truncated if held is not None else False) or \
        (cut_by_limit and len(both) > keep)
    both = both[-keep:] if request.query.last_n else both[:keep]
    return replace(more, instances=[i for _, i in both], truncated=truncated,
                   times=[t for t, _ in both])
