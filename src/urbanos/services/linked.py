"""Linked Entity retrieval (clause 4.5.23): fetch what ``join`` shows, one batch per hop.

Rendering (``core.render``) decides which Relationships survive a projection; this module
only reads: starting from the entities of a response it collects the targets of those
Relationships, fetches every one of a level with a single ``get_many`` and goes one hop
further, up to ``joinLevel``. The result is a mapping by id for the renderer. API reads go
through ``linked_entities`` (the entity service checks the tenant, as for every read);
notifications read with the subscription service's store.
"""

from __future__ import annotations

from collections.abc import Callable

from urbanos.core.render import RenderOptions, child_options, linked_targets
from urbanos.services.entities import EntityService
from urbanos.services.guard import OPEN_GUARD, Guard
from urbanos.storage.base import EntityStore
from urbanos.types import JSONObject

Frontier = list[tuple[JSONObject, RenderOptions]]


async def fetch_linked(
    store: EntityStore, tenant: str, roots: list[JSONObject], opts: RenderOptions,
    show: Callable[[JSONObject], JSONObject | None] | None = None,
) -> dict[str, JSONObject]:
    """The entities reachable from ``roots`` within ``opts.join_level`` hops, by id; with
    ``show``, as the reader may see them (one it may not see is not followed)."""
    if opts.join is None or not roots:
        return {}
    found: dict[str, JSONObject] = {e["id"]: e for e in roots}
    frontier: Frontier = [(e, opts) for e in roots]
    for _ in range(opts.join_level):
        step: dict[tuple[str, int, int], tuple[str, RenderOptions]] = {}
        for entity, entity_opts in frontier:
            for rel, target in linked_targets(entity, entity_opts):
                sub = child_options(entity_opts, rel)
                step.setdefault((target, id(sub.pick), id(sub.omit)), (target, sub))
        if not step:
            break
        missing = list(dict.fromkeys(t for t, _ in step.values() if t not in found))
        if missing:
            got = await store.get_many(tenant, missing)
            if show is not None:
                got = {i: e for i, e in ((i, show(e)) for i, e in got.items()) if e is not None}
            found.update(got)
        frontier = [(found[t], sub) for t, sub in step.values() if t in found]
    return found


async def linked_entities(
    entities: EntityService, tenant: str, roots: list[JSONObject], opts: RenderOptions,
    *, guard: Guard = OPEN_GUARD,
) -> dict[str, JSONObject]:
    """``fetch_linked`` for a read of the API, through the entity service."""
    if opts.join is None or not roots:
        return {}
    await entities.check_tenant(tenant)
    show = None if guard.view.unrestricted else guard.read
    return await fetch_linked(entities.store, tenant, roots, opts, show)
