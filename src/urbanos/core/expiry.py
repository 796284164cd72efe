"""Transient entities and attributes (clause 4.22): what ``expiresAt`` hides and removes.

An entity, an attribute instance or a sub-attribute may carry ``expiresAt`` (a DateTime,
clause 4.6.3). From that instant on it is no longer served, and the broker deletes it soon
after (``services.expiry``). Between the two, reads see the entity through ``live``, so no
read serves expired context whatever the sweeper's lag.

The stored form keeps each ``expiresAt`` as the client wrote it (it is shown back with
``sysAttrs``), plus ``EXPIRY_KEY`` at the top of the document: the earliest of them, in a
canonical form that sorts as text, which the stores index to find what is due.
"""

from __future__ import annotations

from datetime import datetime

from urbanos.core.model import CORE_MEMBERS
from urbanos.core.timeutil import parse_datetime
from urbanos.types import JSONObject

#: the stored document's earliest expiresAt, canonical (never rendered: not a member)
EXPIRY_KEY = "nextExpiry"

__all__ = ["EXPIRY_KEY", "canonical", "due", "live", "next_expiry", "stamp_expiry"]


def canonical(value: str) -> str:
    """A DateTime as fixed-width UTC text (microseconds), so that text order is time order."""
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError(f"not a date-time: {value!r}")
    return _fmt(parsed)


def _fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _instance_expiries(inst: JSONObject) -> list[str]:
    out: list[str] = []
    at = inst.get("expiresAt")
    if isinstance(at, str):
        out.append(at)
    for key, val in inst.items():
        if key not in CORE_MEMBERS and isinstance(val, dict):
            out.extend(_instance_expiries(val))
    return out


def next_expiry(entity: JSONObject) -> str | None:
    """The earliest ``expiresAt`` of the entity and of its instances, canonical; None if none."""
    found: list[str] = []
    at = entity.get("expiresAt")
    if isinstance(at, str):
        found.append(at)
    for instances in entity.get("attrs", {}).values():
        for inst in instances:
            found.extend(_instance_expiries(inst))
    stamps = [canonical(v) for v in found if parse_datetime(v) is not None]
    return min(stamps) if stamps else None


def stamp_expiry(entity: JSONObject) -> JSONObject:
    """The document with ``EXPIRY_KEY`` set (or dropped) to match its expiresAt members."""
    at = next_expiry(entity)
    if at is None:
        entity.pop(EXPIRY_KEY, None)
    else:
        entity[EXPIRY_KEY] = at
    return entity


def _expired(value: object, now: str) -> bool:
    return isinstance(value, str) and (
        (parsed := parse_datetime(value)) is not None and _fmt(parsed) <= now
    )


def _live_instance(inst: JSONObject, now: str) -> JSONObject | None:
    if _expired(inst.get("expiresAt"), now):
        return None
    out: JSONObject | None = None
    for key, val in inst.items():
        if key in CORE_MEMBERS or not isinstance(val, dict):
            continue
        kept = _live_instance(val, now)
        if kept is val:
            continue
        if out is None:
            out = dict(inst)
        if kept is None:
            del out[key]
        else:
            out[key] = kept
    return inst if out is None else out


def due(entity: JSONObject, now: str | None) -> bool:
    """Whether something of the entity has expired at ``now`` (canonical); False for None."""
    at = entity.get(EXPIRY_KEY)
    return now is not None and isinstance(at, str) and at <= now


def live(entity: JSONObject, now: str) -> JSONObject | None:
    """The entity as a read at ``now`` (canonical, see ``canonical``) may show it: None once
    the entity has expired, else without its expired instances and sub-attributes. The
    same object when nothing of it has expired, so the common case copies nothing."""
    if not due(entity, now):
        return entity
    if _expired(entity.get("expiresAt"), now):
        return None
    attrs: dict[str, list[JSONObject]] = {}
    for name, instances in entity["attrs"].items():
        kept = [k for i in instances if (k := _live_instance(i, now)) is not None]
        if kept:
            attrs[name] = kept
    return stamp_expiry(entity | {"attrs": attrs})

