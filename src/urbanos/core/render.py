"""Stored entities out to the representations of clause 4.5: normalized, concise, keyValues.

Compaction is a table lookup per name (``Terms.compact``); nothing here runs JSON-LD
algorithms, so rendering a page of entities costs a dict walk.
"""

from __future__ import annotations

from dataclasses import dataclass

from urbanos.core.model import CORE_MEMBERS, LOCATION, VALUE_MEMBER
from urbanos.types import JSON, JSONObject, Terms

_SYS = ("createdAt", "modifiedAt", "deletedAt")


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """How to show an entity. ``attrs``/``pick``/``omit`` hold expanded IRIs (and id/type)."""

    fmt: str = "normalized"  # normalized | concise | keyValues
    sys_attrs: bool = False
    attrs: frozenset[str] | None = None
    pick: frozenset[str] | None = None
    omit: frozenset[str] | None = None
    lang: str | None = None
    geoproperty: str = LOCATION


def _wanted(name: str, opts: RenderOptions) -> bool:
    if opts.attrs is not None and name not in opts.attrs:
        return False
    if opts.pick is not None and name not in opts.pick:
        return False
    return not (opts.omit is not None and name in opts.omit)


def render_entity(entity: JSONObject, terms: Terms, opts: RenderOptions) -> JSONObject:
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
    for name, instances in entity["attrs"].items():
        if not _wanted(name, opts):
            continue
        rendered = [render_instance(i, terms, opts) for i in instances]
        if opts.fmt == "keyValues":
            out[terms.compact(name)] = rendered[0] if len(rendered) == 1 else rendered
        else:
            out[terms.compact(name)] = rendered[0] if len(rendered) == 1 else rendered
    return out


def _wanted_member(member: str, opts: RenderOptions) -> bool:
    if opts.pick is not None and member not in opts.pick:
        return False
    return not (opts.omit is not None and member in opts.omit)


def render_instance(inst: JSONObject, terms: Terms, opts: RenderOptions) -> JSON:
    kind = inst.get("type", "Property")
    member = VALUE_MEMBER.get(kind, "value")
    value = inst.get(member)
    if kind == "VocabProperty":
        value = _compact_vocab(value, terms)
    if kind == "LanguageProperty" and opts.lang is not None:
        chosen = choose_language(value, opts.lang)
        if chosen is not None:
            return _render_language_choice(inst, chosen, terms, opts)
    if opts.fmt == "keyValues":
        return value
    out: JSONObject = {} if opts.fmt == "concise" else {"type": kind}
    out[member] = value
    for key, val in inst.items():
        if key in ("type", member) or key == "lang":
            continue
        if key in _SYS:
            if opts.sys_attrs:
                out[key] = val
        elif key == "objectType":
            out[key] = _compact_vocab(val, terms)
        elif key in CORE_MEMBERS:
            out[key] = val
        else:
            out[terms.compact(key)] = render_instance(val, terms, opts)
    if opts.fmt == "concise" and len(out) == 1 and member == "value" and not isinstance(value, dict):
        return value
    if opts.fmt == "concise" and len(out) == 1 and kind == "GeoProperty":
        return value
    return out


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
    """The best (tag, text) of a LanguageMap for a ``lang`` parameter (weights allowed)."""
    if not isinstance(language_map, dict) or not language_map:
        return None
    if wanted.strip() == "*":
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
        if tag:
            ranked.append((-weight, pos, tag))
    for _, _, tag in sorted(ranked):
        if tag == "*":
            first = next(iter(language_map))
            return first, language_map[first]
        if tag in language_map:
            return tag, language_map[tag]
        for key in language_map:
            if key.lower().split("-")[0] == tag.lower().split("-")[0]:
                return key, language_map[key]
    for fallback in ("@none", "en"):
        if fallback in language_map:
            return fallback, language_map[fallback]
    first = next(iter(language_map))
    return first, language_map[first]


def render_feature(entity: JSONObject, terms: Terms, opts: RenderOptions) -> JSONObject:
    """An entity as a GeoJSON Feature (clause 4.5.16): geometry from ``opts.geoproperty``."""
    body = render_entity(entity, terms, opts)
    geometry = None
    instances = entity["attrs"].get(opts.geoproperty)
    if instances and instances[0].get("type") == "GeoProperty":
        geometry = instances[0].get("value")
    props = {k: v for k, v in body.items() if k != "id"}
    return {"id": entity["id"], "type": "Feature", "geometry": geometry, "properties": props}
