"""Stored entities out to the representations of clause 4.5: normalized, concise, simplified.

Compaction is a table lookup per name (``Terms.compact``); nothing here runs JSON-LD
algorithms, so rendering a page of entities costs a dict walk. Projection (``attrs``,
``pick``/``omit``, ``datasetId``) happens here too, and so does the shape of Linked Entity
retrieval (clause 4.5.23): the caller fetches the linked entities (an I/O step, see
``urbanos.services.linked``) and hands them in as a mapping by id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from urbanos.core.model import CORE_MEMBERS, LOCATION, VALUE_MEMBER
from urbanos.core.projection import Projection
from urbanos.types import JSON, JSONObject, Terms

_SYS = ("createdAt", "modifiedAt", "deletedAt", "expiresAt")
#: attribute kinds introduced in version 1.8, and what older consumers get instead
_SINCE_1_8 = {"VocabProperty": "Property", "JsonProperty": "Property",
              "ListProperty": "Property", "ListRelationship": "Relationship"}
#: the datasetId key of the default instance (clause 4.5.5)
DEFAULT_DATASET = "@none"

Linked = Mapping[str, JSONObject]


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """How to show an entity. ``attrs`` holds expanded IRIs; projections name id/type/scope.

    ``join`` is ``inline`` or ``flat`` for Linked Entity retrieval up to ``join_level`` hops;
    ``legacy`` (a ``Prefer: ngsi-ld=`` version below 1.8) reformats newer attribute kinds.
    """

    fmt: str = "normalized"  # normalized | concise | keyValues
    sys_attrs: bool = False
    attrs: frozenset[str] | None = None
    pick: Projection | None = None
    omit: Projection | None = None
    lang: str | None = None
    geoproperty: str = LOCATION
    dataset_ids: frozenset[str] | None = None
    join: str | None = None
    join_level: int = 1
    legacy: bool = False


def child_options(opts: RenderOptions, relationship: str) -> RenderOptions:
    """Options for an entity reached through ``relationship``: nested projections only."""
    return replace(
        opts,
        attrs=None,
        dataset_ids=None,
        pick=opts.pick.nested(relationship) if opts.pick is not None else None,
        omit=opts.omit.nested(relationship) if opts.omit is not None else None,
    )


def _wanted(name: str, opts: RenderOptions) -> bool:
    if opts.attrs is not None and name not in opts.attrs:
        return False
    if opts.pick is not None and name not in opts.pick.picked:
        return False
    return not (opts.omit is not None and name in opts.omit.omitted)


def _wanted_member(member: str, opts: RenderOptions) -> bool:
    if opts.pick is not None and member not in opts.pick.picked:
        return False
    return not (opts.omit is not None and member in opts.omit.omitted)


def _instances(instances: list[JSONObject], opts: RenderOptions) -> list[JSONObject]:
    if opts.dataset_ids is None:
        return instances
    return [i for i in instances if i.get("datasetId", DEFAULT_DATASET) in opts.dataset_ids]


def visible_attributes(
    entity: JSONObject, opts: RenderOptions
) -> Iterator[tuple[str, list[JSONObject]]]:
    """The attributes and instances a rendering shows, after every projection."""
    for name, instances in entity["attrs"].items():
        if not _wanted(name, opts):
            continue
        kept = _instances(instances, opts)
        if kept:
            yield name, kept


def relationship_targets(inst: JSONObject) -> list[str]:
    """The entity ids a Relationship or ListRelationship instance points to."""
    kind = inst.get("type")
    if kind == "Relationship":
        member = inst.get("object")
    elif kind == "ListRelationship":
        member = inst.get("objectList")
    else:
        return []
    items = member if isinstance(member, list) else [member]
    out = [i.get("object") if isinstance(i, dict) else i for i in items]
    return [i for i in out if isinstance(i, str)]


def linked_targets(entity: JSONObject, opts: RenderOptions) -> list[tuple[str, str]]:
    """(relationship, target id) pairs whose targets a join would show."""
    out: list[tuple[str, str]] = []
    for name, instances in visible_attributes(entity, opts):
        for inst in instances:
            out.extend((name, target) for target in relationship_targets(inst))
    return out


def render_entity(
    entity: JSONObject,
    terms: Terms,
    opts: RenderOptions,
    linked: Linked | None = None,
    depth: int = 0,
) -> JSONObject:
    """One entity; with ``join=inline`` Relationships carry the linked entity (4.5.23.2)."""
    out: JSONObject = {}
    if _wanted_member("id", opts):
        out["id"] = entity["id"]
    if _wanted_member("type", opts) and entity.get("type"):
        types = [terms.compact(t) for t in entity["type"]]
        out["type"] = types[0] if len(types) == 1 else types
    if entity.get("scope") and _wanted_member("scope", opts):
        scope = entity["scope"]
        out["scope"] = scope[0] if len(scope) == 1 else scope
    if opts.sys_attrs:
        for key in _SYS:
            if key in entity:
                out[key] = entity[key]
    if _whole(opts):  # the common case, without the projection machinery
        for name, instances in entity["attrs"].items():
            out[terms.compact(name)] = (
                render_instance(instances[0], terms, opts) if len(instances) == 1
                else [render_instance(i, terms, opts) for i in instances]
            )
        return out
    inline = linked if opts.join == "inline" and depth < opts.join_level else None
    for name, instances in visible_attributes(entity, opts):
        rendered = [
            _with_linked(render_instance(i, terms, opts), i, name, terms, opts, inline, depth)
            for i in instances
        ]
        key = terms.compact(name)
        if len(rendered) == 1:
            out[key] = rendered[0]
        elif opts.fmt == "keyValues":
            out[key] = {"dataset": {
                i.get("datasetId", DEFAULT_DATASET): r for i, r in zip(instances, rendered, strict=True)
            }}
        else:
            out[key] = rendered
    return out


def _with_linked(
    rendered: JSON, inst: JSONObject, name: str, terms: Terms, opts: RenderOptions,
    inline: Linked | None, depth: int,
) -> JSON:
    if inline is None:
        return rendered
    targets = [t for t in relationship_targets(inst) if t in inline]
    if not targets:
        return rendered
    sub = child_options(opts, name)
    shown = [render_entity(inline[t], terms, sub, inline, depth + 1) for t in targets]
    single = inst.get("type") == "Relationship" and not isinstance(inst.get("object"), list)
    value: JSON = shown[0] if single else shown
    if opts.fmt == "keyValues":
        return value
    if isinstance(rendered, dict):
        rendered["entity" if inst.get("type") == "Relationship" else "entityList"] = value
        return rendered
    return {"object": rendered, "entity": value}


def flat_members(
    roots: list[JSONObject], opts: RenderOptions, linked: Linked
) -> list[tuple[JSONObject, RenderOptions]]:
    """``join=flat`` (4.5.23.3): the entities, then each linked entity once, hop by hop,
    each with the options (nested projection) of the path that first reached it."""
    out = [(e, replace(opts, join=None)) for e in roots]
    seen = {e["id"] for e in roots}
    frontier = [(e, opts) for e in roots]
    for _ in range(opts.join_level):
        following: list[tuple[JSONObject, RenderOptions]] = []
        for entity, entity_opts in frontier:
            for rel, target in linked_targets(entity, entity_opts):
                if target in seen or target not in linked:
                    continue
                seen.add(target)
                sub = child_options(entity_opts, rel)
                out.append((linked[target], replace(sub, join=None)))
                following.append((linked[target], sub))
        frontier = following
    return out


def render_flat(
    roots: list[JSONObject], terms: Terms, opts: RenderOptions, linked: Linked
) -> list[JSONObject]:
    """``join=flat``: one array of the entities followed by their linked entities."""
    return [render_entity(e, terms, o) for e, o in flat_members(roots, opts, linked)]


def _whole(opts: RenderOptions) -> bool:
    """Normalized, every attribute and instance, no join: each instance renders alone."""
    return (
        opts.fmt == "normalized" and opts.attrs is None and opts.pick is None
        and opts.omit is None and opts.dataset_ids is None and opts.join is None
        and not opts.legacy and opts.lang is None
    )


_HIDDEN = frozenset((*_SYS, "lang", "type"))
_HIDDEN_NO_SYS = frozenset(("lang", "type"))
_VOCAB_MEMBERS = frozenset(("objectType", "entityTypeSealed"))
_SHOWN = CORE_MEMBERS - _HIDDEN - _VOCAB_MEMBERS


def _normalized(inst: JSONObject, kind: str, terms: Terms, opts: RenderOptions) -> JSONObject:
    """The normalized form: ``type`` first, then the stored members in order."""
    hidden = _HIDDEN_NO_SYS if opts.sys_attrs else _HIDDEN
    out: JSONObject = {"type": kind}
    for key, val in inst.items():
        if key in _SHOWN:
            out[key] = val
        elif key in hidden:
            continue
        elif key in _VOCAB_MEMBERS:
            out[key] = _compact_vocab(val, terms)
        elif key in _SYS:
            out[key] = val
        elif isinstance(val, dict):
            out[terms.compact(key)] = render_instance(val, terms, opts)
    return out


def render_instance(inst: JSONObject, terms: Terms, opts: RenderOptions) -> JSON:
    kind = inst.get("type", "Property")
    if (opts.fmt == "normalized" and not opts.legacy and kind != "VocabProperty"
            and not (kind == "LanguageProperty" and opts.lang is not None)):
        return _normalized(inst, kind, terms, opts)
    if opts.legacy and kind in _SINCE_1_8:
        inst = _as_legacy(inst, terms)
        kind = inst["type"]
    member = VALUE_MEMBER.get(kind, "value")
    value = inst.get(member)
    if kind == "VocabProperty":
        value = _compact_vocab(value, terms)
    if kind == "LanguageProperty" and opts.lang is not None:
        chosen = choose_language(value, opts.lang)
        if chosen is not None:
            return _render_language_choice(inst, chosen, terms, opts)
    if opts.fmt == "keyValues":
        return _simplified(kind, member, value)
    out: JSONObject = {} if opts.fmt == "concise" else {"type": kind}
    out[member] = value
    for key, val in inst.items():
        if key in ("type", member) or key == "lang":
            continue
        if key in _SYS:
            if opts.sys_attrs:
                out[key] = val
        elif key in ("objectType", "entityTypeSealed"):
            out[key] = _compact_vocab(val, terms)
        elif key in CORE_MEMBERS:
            out[key] = val
        elif isinstance(val, dict):
            out[terms.compact(key)] = render_instance(val, terms, opts)
    if opts.fmt == "concise" and len(out) == 1 and member == "value" and not isinstance(value, dict):
        return value
    if opts.fmt == "concise" and len(out) == 1 and kind == "GeoProperty":
        return value
    return out


def _simplified(kind: str, member: str, value: JSON) -> JSON:
    """Clause 4.5.4: bare values, but LanguageMaps, JSON and vocab keep their member name."""
    if kind in ("LanguageProperty", "JsonProperty", "VocabProperty"):
        return {member: value}
    if kind == "ListRelationship" and isinstance(value, list):
        return [v.get("object") if isinstance(v, dict) else v for v in value]
    return value


def _as_legacy(inst: JSONObject, terms: Terms) -> JSONObject:
    """A 1.8 attribute kind reformatted for an older consumer (clause 4.3.6.8)."""
    kind = inst["type"]
    member = VALUE_MEMBER[kind]
    value = inst.get(member)
    out = {k: v for k, v in inst.items() if k not in ("type", member)}
    if kind == "VocabProperty":
        value = _compact_vocab(value, terms)
    if kind == "ListRelationship":
        value = relationship_targets(inst)
        out.update(type="Relationship", object=value)
    else:
        out.update(type="Property", value=value)
    return out


def needs_legacy_rewrite(entity: JSONObject) -> bool:
    """Whether an entity holds attribute kinds a pre-1.8 consumer cannot read."""
    return any(
        i.get("type") in _SINCE_1_8 for instances in entity["attrs"].values() for i in instances
    )


def _render_language_choice(
    inst: JSONObject, chosen: tuple[str, JSON], terms: Terms, opts: RenderOptions
) -> JSON:
    tag, text = chosen
    if opts.fmt == "keyValues":
        return text
    plain = {k: v for k, v in inst.items() if k not in ("languageMap", "type")}
    shown: JSONObject = {"type": "Property", "value": text, "lang": tag}
    shown.update(plain)
    rendered = render_instance(shown, terms, opts)
    if isinstance(rendered, dict):
        rendered["lang"] = tag
        if opts.fmt == "concise":
            rendered.pop("type", None)
    return rendered


def _compact_vocab(value: JSON, terms: Terms) -> JSON:
    if isinstance(value, list):
        return [terms.compact(v) if isinstance(v, str) else v for v in value]
    return terms.compact(value) if isinstance(value, str) else value


def choose_language(language_map: JSON, wanted: str) -> tuple[str, JSON] | None:
    """The best (tag, text) of a LanguageMap for a ``lang`` parameter (weights allowed).

    ``*`` accepts any language: the default (``@none``) text if there is one, else the first.
    """
    if not isinstance(language_map, dict) or not language_map:
        return None
    ranked: list[tuple[float, int, str]] = []
    for pos, part in enumerate(wanted.split(",")):
        tag, _, rest = part.strip().partition(";")
        weight = 1.0
        if rest.strip().startswith("q="):
            try:
                weight = float(rest.strip()[2:])
            except ValueError:
                weight = 0.0
        if tag.strip():
            ranked.append((-weight, pos, tag.strip()))
    for _, _, tag in sorted(ranked):
        if tag == "*":
            break
        if tag in language_map:
            return tag, language_map[tag]
        for key in language_map:
            if key.lower().split("-")[0] == tag.lower().split("-")[0]:
                return key, language_map[key]
    for fallback in (DEFAULT_DATASET, "en"):
        if fallback in language_map:
            return fallback, language_map[fallback]
    first = next(iter(language_map))
    return first, language_map[first]


def default_instance(instances: list[JSONObject]) -> JSONObject | None:
    """The instance without a datasetId, else the first one (clause 4.5.16.1)."""
    for inst in instances:
        if "datasetId" not in inst:
            return inst
    return instances[0] if instances else None


def render_feature(
    entity: JSONObject, terms: Terms, opts: RenderOptions, linked: Linked | None = None
) -> JSONObject:
    """An entity as a GeoJSON Feature (4.5.16/4.5.17): geometry from ``opts.geoproperty``."""
    body = render_entity(entity, terms, opts, linked)
    geometry = None
    chosen = default_instance(entity["attrs"].get(opts.geoproperty) or [])
    if chosen is not None and chosen.get("type") == "GeoProperty":
        value = chosen.get("value")
        if isinstance(value, dict) and "type" in value:
            geometry = value
    props = {k: v for k, v in body.items() if k != "id"}
    return {"id": entity["id"], "type": "Feature", "geometry": geometry, "properties": props}
