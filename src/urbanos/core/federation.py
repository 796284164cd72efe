"""Distributed operations (GS CIM 009 clause 4.3.6), the pure part: which registrations an
operation is forwarded to, what each is asked, and how the answers are merged.

No I/O here: ``services.federation`` sends the requests this module plans and hands the
parsed answers back to ``merge_entities`` / ``merge_sources``.

Modes (clause 4.3.6.2): *inclusive* sources add to what the broker holds (merged per
attribute with the rule of clause 4.5.5.3); *auxiliary* ones only fill in attributes no one
else gave; *exclusive* ones alone hold the attributes they register for their entities (a
local value of such an attribute is not shown); *redirect* ones hold everything they
register (the broker keeps nothing of it locally).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from urbanos.core.expiry import canonical
from urbanos.core.query.ast import QExpr
from urbanos.core.query.evaluate import matches_q
from urbanos.core.registration_info import entity_covers, supports
from urbanos.errors import NgsiLdError
from urbanos.types import JSONObject

__all__ = [
    "LoopDetected",
    "Target",
    "add_via",
    "alias_of",
    "merge_entities",
    "merge_sources",
    "parse_via",
    "select_targets",
    "source_properties",
    "warning",
]

#: the order a merge takes sources in: what a later mode gives never overrides an earlier
_MODE_RANK = {"exclusive": 0, "redirect": 0, "inclusive": 1, "auxiliary": 2}
_NAMES = ("propertyNames", "relationshipNames")


class LoopDetected(NgsiLdError):
    """508: the request came back to a source that alone holds the data (clause 6.3.18)."""

    status = 508
    type_uri = "https://uri.etsi.org/ngsi-ld/errors/LoopDetected"
    title = "Loop detected"


@dataclass(frozen=True, slots=True)
class Target:
    """One registration chosen for one forwarded operation.

    ``attrs`` are the expanded attribute names the source is asked for (the caller's
    narrowed to what the registration holds, clause 4.3.6.1); None = every attribute.
    """

    doc: JSONObject
    mode: str
    attrs: frozenset[str] | None

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def endpoint(self) -> str:
        return str(self.doc["endpoint"])

    @property
    def local_only(self) -> bool:
        """``management.localOnly`` (clause 5.2.34), or ``localOnly`` given as a member of
        the registration: the source answers from its own data (``local=true``)."""
        management = self.doc.get("management")
        if isinstance(management, dict) and management.get("localOnly") is True:
            return True
        return any(v is True and (k == "localOnly" or k.endswith(("/localOnly", ":localOnly")))
                   for k, v in self.doc.items())

    def registered_ids(self) -> list[str] | None:
        """The entity ids the registration names, when each of its EntityInfo names one
        (exclusive registrations always do); None when it holds groups of entities."""
        ids: list[str] = []
        for info in self.doc["information"]:
            entities = info.get("entities")
            if not entities:
                return None
            for entity in entities:
                if "id" not in entity:
                    return None
                if entity["id"] not in ids:
                    ids.append(entity["id"])
        return ids


def alias_of(doc: Mapping[str, Any]) -> str | None:
    """The source's contextSourceAlias, as its registration carries it in
    ``contextSourceInfo`` (key ``alias`` or ``contextSourceAlias``)."""
    for pair in doc.get("contextSourceInfo") or ():
        if isinstance(pair, dict) and pair.get("key") in ("alias", "contextSourceAlias"):
            value = pair.get("value")
            return value if isinstance(value, str) and value else None
    return None


def source_properties(doc: Mapping[str, Any]) -> JSONObject:
    """The registration as an entity whose Properties are its Context Source Properties
    (members stored under their IRIs) and its ``mode``, for a ``csf`` query (clause 4.9)."""
    attrs: dict[str, list[JSONObject]] = {}
    for key, value in doc.items():
        if ":" in key and not key.startswith("_"):
            if isinstance(value, dict) and "value" in value:  # written as a Property
                value = value["value"]
            attrs[key] = [{"type": "Property", "value": value}]
    return {"id": doc["id"], "type": [], "attrs": attrs}


def _expired(doc: Mapping[str, Any], now: str) -> bool:
    at = doc.get("expiresAt")
    return isinstance(at, str) and canonical(at) <= now


def _info_attrs(info: Mapping[str, Any], ids: set[str] | None, types: set[str] | None,
                id_pattern: str | None) -> frozenset[str] | None | bool:
    """What one RegistrationInfo holds of the entities asked: False when none of them,
    None for every attribute, else the attribute names."""
    entities = info.get("entities")
    if entities and not any(entity_covers(e, ids, types, id_pattern) for e in entities):
        return False
    names = [n for key in _NAMES for n in info.get(key, ())]
    return frozenset(names) if names else None


def _narrowed(doc: Mapping[str, Any], ids: set[str] | None, types: set[str] | None,
              attrs: set[str] | None, id_pattern: str | None
              ) -> frozenset[str] | None | bool:
    """The attributes to ask the source for (None: all), or False when it holds nothing
    of what is asked."""
    held: set[str] = set()
    matched = False
    for info in doc["information"]:
        found = _info_attrs(info, ids, types, id_pattern)
        if found is False:
            continue
        matched = True
        if found is None:
            return frozenset(attrs) if attrs is not None else None
        assert not isinstance(found, bool)
        held |= found
    if not matched:
        return False
    if attrs is not None:
        held &= attrs
        if not held:
            return False
    return frozenset(held)


def select_targets(
    docs: Iterable[JSONObject], operation: str, *, now: str,
    ids: set[str] | None = None, types: set[str] | None = None,
    attrs: set[str] | None = None, id_pattern: str | None = None,
    via: Sequence[str] = (), own_alias: str | None = None, csf: QExpr | None = None,
) -> list[Target]:
    """The registrations ``operation`` is forwarded to: they support it (clause 4.20),
    cover the entities and attributes asked, are not expired, and their source's alias
    is not already in ``via`` (clause 6.3.18).

    ``now`` is canonical (``core.expiry.canonical``). A request whose ``via`` already names
    this broker (``own_alias``) has come round: it is forwarded nowhere. ``csf`` (a parsed
    q) keeps the registrations whose Context Source Properties match it. A source skipped
    for a loop that is exclusive or redirect (the data is held only there) raises
    LoopDetected (508); skipped inclusive and auxiliary sources are simply left out.
    """
    came_back = own_alias is not None and own_alias in via
    out: list[Target] = []
    for doc in docs:
        if not supports(doc, operation) or _expired(doc, now):
            continue
        if csf is not None and not matches_q(csf, source_properties(doc)):
            continue
        narrowed = _narrowed(doc, ids, types, attrs, id_pattern)
        if narrowed is False:
            continue
        mode = str(doc.get("mode", "inclusive"))
        alias = alias_of(doc)
        if came_back or (alias is not None and alias in via):
            if mode in ("exclusive", "redirect"):
                raise LoopDetected(f"the request has already passed through the source of "
                                   f"registration {doc['id']}")
            continue
        assert not isinstance(narrowed, bool)
        out.append(Target(doc=doc, mode=mode, attrs=narrowed))
    return out


# --------------------------------------------------------------------------- merging


def _instance_key(inst: Mapping[str, Any], now: str | None) -> tuple[int, str, str]:
    """Sort key of one instance under clause 4.5.5.3: live first, then observedAt, then
    modifiedAt (missing ones sort first)."""
    expired = 0
    at = inst.get("expiresAt")
    if now is not None and isinstance(at, str) and canonical(at) <= now:
        expired = -1
    observed = inst.get("observedAt")
    modified = inst.get("modifiedAt")
    return (expired,
            canonical(observed) if isinstance(observed, str) else "",
            canonical(modified) if isinstance(modified, str) else "")


def _better(new: Mapping[str, Any], old: Mapping[str, Any], now: str | None) -> bool:
    """Whether ``new`` replaces ``old`` (same attribute, same datasetId): strictly later by
    the rule, so on a tie the earlier source (the local broker) wins."""
    return _instance_key(new, now) > _instance_key(old, now)


def merge_entities(fragments: Sequence[JSONObject], now: str | None = None) -> JSONObject:
    """Fragments of one entity (stored form) from several sources merged per clause
    4.5.5.3: per attribute and datasetId, drop expired instances, then keep the latest
    observedAt, else the latest modifiedAt. The first fragment wins ties; types and scopes
    are united; ``now`` (canonical) decides what has expired (None: nothing)."""
    if not fragments:
        raise ValueError("nothing to merge")
    out = copy.deepcopy(fragments[0])
    out.setdefault("attrs", {})
    for fragment in fragments[1:]:
        _merge_into(out, fragment, now, only_new=False)
    _drop_expired(out, now)
    return out


def _merge_into(out: JSONObject, fragment: Mapping[str, Any], now: str | None, *,
                only_new: bool, skip: frozenset[str] = frozenset()) -> None:
    for kind in fragment.get("type", ()):
        types = out.setdefault("type", [])
        if kind not in types:
            types.append(kind)
    scopes = fragment.get("scope")
    if scopes:
        mine = out.setdefault("scope", [])
        if mine is None:
            out["scope"] = mine = []
        for scope in scopes:
            if scope not in mine:
                mine.append(scope)
    for stamp, pick in (("createdAt", min), ("modifiedAt", max)):
        theirs = fragment.get(stamp)
        if isinstance(theirs, str):
            mine_at = out.get(stamp)
            out[stamp] = theirs if not isinstance(mine_at, str) else pick(mine_at, theirs)
    attrs = out["attrs"]
    for name, instances in fragment.get("attrs", {}).items():
        if name in skip:
            continue
        if name not in attrs:
            attrs[name] = copy.deepcopy(list(instances))
            continue
        if only_new:
            continue
        held = attrs[name]
        for inst in instances:
            dataset = inst.get("datasetId")
            for i, old in enumerate(held):
                if old.get("datasetId") == dataset:
                    if _better(inst, old, now):
                        held[i] = copy.deepcopy(inst)
                    break
            else:
                held.append(copy.deepcopy(inst))


def _drop_expired(entity: JSONObject, now: str | None) -> None:
    if now is None:
        return
    for name in list(entity["attrs"]):
        kept = [i for i in entity["attrs"][name] if _instance_key(i, now)[0] == 0]
        if kept:
            entity["attrs"][name] = kept
        else:
            del entity["attrs"][name]


def _exclusive_names(doc: Mapping[str, Any], entity_id: str) -> frozenset[str]:
    """The attributes an exclusive or redirect registration alone holds for one entity."""
    names: set[str] = set()
    for info in doc["information"]:
        entities = info.get("entities")
        if entities and not any(entity_covers(e, {entity_id}, None, None) for e in entities):
            continue
        names.update(n for key in _NAMES for n in info.get(key, ()))
    return frozenset(names)


def merge_sources(local: JSONObject | None, remote: Sequence[tuple[Target, JSONObject]],
                  now: str | None = None) -> JSONObject | None:
    """One entity from the local broker's copy and the sources' fragments, by mode:
    exclusive and redirect sources first (their registered attributes are theirs alone:
    the local copy's are dropped), then the local copy and inclusive sources (clause
    4.5.5.3), then auxiliary ones for attributes no one else gave."""
    ordered = sorted(remote, key=lambda pair: _MODE_RANK.get(pair[0].mode, 1))
    owned: set[str] = set()
    for target, fragment in ordered:
        if target.mode in ("exclusive", "redirect"):
            owned |= _exclusive_names(target.doc, str(fragment["id"]))
    out: JSONObject | None = None
    pieces: list[tuple[str, JSONObject]] = []
    for target, fragment in ordered:
        if target.mode in ("exclusive", "redirect"):
            pieces.append((target.mode, fragment))
    if local is not None:
        pieces.append(("local", local))
    pieces.extend((t.mode, f) for t, f in ordered if t.mode not in ("exclusive", "redirect"))
    for mode, fragment in pieces:
        if out is None:
            out = copy.deepcopy(dict(fragment))
            out.setdefault("attrs", {})
            if mode == "local" and owned:
                out["attrs"] = {k: v for k, v in out["attrs"].items() if k not in owned}
            continue
        skip = frozenset(owned) if mode in ("local", "inclusive", "auxiliary") else frozenset()
        _merge_into(out, fragment, now, only_new=mode == "auxiliary", skip=skip)
    if out is not None:
        _drop_expired(out, now)
    return out


# --------------------------------------------------------------------------- headers


def parse_via(header: str | None) -> list[str]:
    """The pseudonyms/hosts named by a Via header (RFC 9110 7.6.3), in order."""
    if not header:
        return []
    out: list[str] = []
    for entry in header.split(","):
        words = entry.strip().split()
        if not words:
            continue
        if len(words) == 1:
            out.append(words[0])
        else:  # received-protocol received-by [comment]
            out.append(words[1])
    return out


def add_via(header: str | None, alias: str) -> str:
    """The Via header a forwarded request carries: the incoming one plus this broker."""
    mine = f"1.1 {alias}"
    return f"{header.strip()}, {mine}" if header and header.strip() else mine


def warning(code: int, agent: str, text: str) -> str:
    """One NGSILD-Warning value (clause 6.3.17): 199 no answer in time or loop, 299 an
    error from the source, 111 an invalid payload."""
    clean = " ".join(text.replace("\\", "\\\\").replace('"', '\\"').split())
    return f'{code} {agent} "{clean}"'
