"""Entity mutations on the stored form: append, update, merge, replace, delete.

Pure functions: each takes the current entity and returns the new one with what changed,
so a service can write the result and the change record in one transaction.

The result shares what it did not change with its input: an operation copies the entity
and its attribute lists (``_copy``) and replaces instances, never changes one in place,
so the input stays as it was at a fraction of the cost of a deep copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from urbanos.core.model import CORE_MEMBERS, NULL_URN, VALUE_MEMBER, is_null
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject

Attrs = dict[str, list[JSONObject]]


@dataclass(slots=True)
class Outcome:
    """What an attribute operation did: names updated, and names refused with a reason."""

    entity: JSONObject
    updated: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.updated)


def _copy(entity: JSONObject) -> JSONObject:
    """The entity to change: a new mapping and new attribute lists, the instances shared."""
    out = dict(entity)
    if "attrs" in entity:
        out["attrs"] = {name: list(instances) for name, instances in entity["attrs"].items()}
    return out


def _index(instances: list[JSONObject], dataset_id: str | None) -> int | None:
    for i, inst in enumerate(instances):
        if inst.get("datasetId") == dataset_id:
            return i
    return None


def _keep_created(new: JSONObject, old: JSONObject) -> JSONObject:
    if "createdAt" in old:
        new["createdAt"] = old["createdAt"]
    return new


def _touch(entity: JSONObject, now: str) -> None:
    entity["modifiedAt"] = now


def _put_instances(
    out: JSONObject, name: str, instances: list[JSONObject], result: Outcome, *,
    overwrite: bool,
) -> None:
    """Add or replace instances by datasetId; an NGSI-LD Null instance deletes its match."""
    current = out["attrs"].setdefault(name, [])
    touched = False
    for inst in instances:
        i = _index(current, inst.get("datasetId"))
        if is_null(inst):
            if i is None:
                result.not_updated.append((name, "nothing to delete"))
            else:
                current.pop(i)
                touched = True
        elif i is None:
            current.append(inst)
            touched = True
        elif not overwrite:
            result.not_updated.append((name, "attribute exists and noOverwrite was asked"))
        else:
            current[i] = _keep_created(inst, current[i])
            touched = True
    if not current:
        del out["attrs"][name]
    if touched:
        result.updated.append(name)


def _add_types(out: JSONObject, types: list[str] | None) -> bool:
    if not types:
        return False
    merged = list(dict.fromkeys(out.get("type", []) + types))
    changed = merged != out.get("type")
    out["type"] = merged
    return changed


def append_attrs(
    entity: JSONObject, attrs: Attrs, now: str, *, no_overwrite: bool,
    types: list[str] | None = None, scope: list[str] | None = None,
) -> Outcome:
    """Append Entity Attributes (clause 5.6.3): add new, overwrite existing unless told not to.

    Types are added to the entity's; a scope replaces the entity's, or joins it under
    noOverwrite (clause 4.18).
    """
    out = _copy(entity)
    result = Outcome(out)
    for name, instances in attrs.items():
        _put_instances(out, name, instances, result, overwrite=not no_overwrite)
    changed = _add_types(out, types)
    if scope is not None:
        out["scope"] = list(dict.fromkeys(out.get("scope", []) + scope)) if no_overwrite else scope
        result.updated.append("scope")
    if result.changed or changed:
        _touch(out, now)
    return result


def update_attrs(
    entity: JSONObject, attrs: Attrs, now: str, *, types: list[str] | None = None,
    scope: list[str] | None = None,
) -> Outcome:
    """Update Entity Attributes (clause 5.6.2, 5.5.8): attributes replaced whole, new ones
    and new datasetIds added, NGSI-LD Null deletes; a scope only replaces an existing one."""
    out = _copy(entity)
    result = Outcome(out)
    for name, instances in attrs.items():
        _put_instances(out, name, instances, result, overwrite=True)
    changed = _add_types(out, types)
    if scope is not None:
        if "scope" in out:
            out["scope"] = scope
            result.updated.append("scope")
        else:
            result.not_updated.append(("scope", "the entity has no scope to update"))
    if result.changed or changed:
        _touch(out, now)
    return result


def _merge_value(old: object, patch: object) -> object:
    """JSON merge-patch (RFC 7396) inside a compound value; the NGSI-LD Null deletes a key."""
    if not isinstance(patch, dict):
        return patch
    out = dict(old) if isinstance(old, dict) else {}
    for key, val in patch.items():
        if val == NULL_URN:
            out.pop(key, None)
        else:
            out[key] = _merge_value(out.get(key), val)
    return out


def _has_value(inst: JSONObject) -> bool:
    return VALUE_MEMBER.get(inst.get("type", "Property"), "value") in inst


def merge_instance(
    old: JSONObject, patch: JSONObject, now: str, *, merge_values: bool = False
) -> JSONObject | None:
    """Merge one instance: members replaced (a Null member removed), sub-attributes merged,
    a Null instance deletes it. ``merge_values`` merges JSON object values key by key, as
    Merge Entity does (clause 5.6.17); partial updates replace values whole (5.6.4)."""
    if is_null(patch):
        return None
    new = dict(old)  # members are replaced or removed, never changed in place
    if patch.get("type") and patch["type"] != old.get("type"):
        for m in VALUE_MEMBER.values():
            new.pop(m, None)
    for key, val in patch.items():
        if key == "createdAt":
            continue
        if val == NULL_URN and key not in ("type", "value", "object"):
            new.pop(key, None)
        elif (
            key == "value" and merge_values and new.get("type") == "Property"
            and isinstance(val, dict) and isinstance(old.get("value"), dict)
        ):
            new[key] = _merge_value(old["value"], val)
        elif key in CORE_MEMBERS:
            new[key] = val
        elif isinstance(val, dict) and is_null(val):
            new.pop(key, None)
        elif isinstance(old.get(key), dict) and isinstance(val, dict):
            merged = merge_instance(old[key], val, now)
            if merged is None:
                new.pop(key, None)
            else:
                new[key] = merged
        else:
            new[key] = val
    new["modifiedAt"] = now
    return new


def merge_entity(entity: JSONObject, fragment: JSONObject, now: str) -> Outcome:
    """Merge Entity (clause 5.6.17): attributes merged, NGSI-LD Null deletes."""
    out = _copy(entity)
    result = Outcome(out)
    for name, instances in fragment.get("attrs", {}).items():
        current = out["attrs"].get(name, [])
        for inst in instances:
            i = _index(current, inst.get("datasetId"))
            if i is None:
                if not is_null(inst) and _has_value(inst):
                    if isinstance(inst.get("value"), dict):
                        inst["value"] = _merge_value(None, inst["value"])
                    current.append(inst)
            else:
                merged = merge_instance(current[i], inst, now, merge_values=True)
                if merged is None:
                    current.pop(i)
                else:
                    current[i] = merged
        if current:
            out["attrs"][name] = current
        else:
            out["attrs"].pop(name, None)
        result.updated.append(name)
    if fragment.get("type"):
        out["type"] = list(dict.fromkeys(out["type"] + fragment["type"]))
    for member in ("scope", "expiresAt"):  # None: the fragment's NGSI-LD Null removes it
        if member in fragment:
            if fragment[member] is None:
                out.pop(member, None)
            else:
                out[member] = fragment[member]
    _touch(out, now)
    return result


def replace_entity(entity: JSONObject, new: JSONObject, now: str) -> JSONObject:
    """Replace Entity (clause 5.6.18): everything but id and createdAt comes from ``new``."""
    out = _copy(new)
    out["createdAt"] = entity.get("createdAt", now)
    out["modifiedAt"] = now
    return out


def patch_attr(
    entity: JSONObject, name: str, instances: list[JSONObject], now: str
) -> Outcome:
    """Partial Attribute Update (clause 5.6.4): merge into the existing instance."""

    def merge(current: list[JSONObject], i: int, inst: JSONObject) -> None:
        if inst.get("type") and not is_null(inst) and inst["type"] != current[i].get("type"):
            raise BadRequestData(
                f"attribute {name} is a {current[i].get('type')}, not a {inst['type']}"
            )
        merged = merge_instance(current[i], inst, now)
        if merged is None:
            current.pop(i)
        else:
            current[i] = merged

    return _each_instance(entity, name, instances, now, merge)


def replace_attr(entity: JSONObject, name: str, instances: list[JSONObject], now: str) -> Outcome:
    """Replace Attribute (clause 5.6.19): the instance with the same datasetId is replaced."""

    def replace(current: list[JSONObject], i: int, inst: JSONObject) -> None:
        current[i] = _keep_created(inst, current[i])

    return _each_instance(entity, name, instances, now, replace)


def _each_instance(
    entity: JSONObject, name: str, instances: list[JSONObject], now: str,
    change: Callable[[list[JSONObject], int, JSONObject], None],
) -> Outcome:
    """``change(current, i, inst)`` for each of ``instances`` whose datasetId the attribute
    has (``i`` its index in ``current``, the attribute's instances); the others are
    reported not updated. An attribute left without instances goes."""
    out = _copy(entity)
    result = Outcome(out)
    current = out["attrs"].get(name)
    if current is None:
        result.not_updated.append((name, "attribute does not exist"))
        return result
    for inst in instances:
        i = _index(current, inst.get("datasetId"))
        if i is None:
            result.not_updated.append((name, "no instance with this datasetId"))
            continue
        change(current, i, inst)
        if name not in result.updated:
            result.updated.append(name)
    if not current:
        del out["attrs"][name]
    if result.changed:
        _touch(out, now)
    return result


def delete_attr(
    entity: JSONObject, name: str, now: str, *, dataset_id: str | None = None,
    delete_all: bool = False,
) -> JSONObject | None:
    """Delete Attribute (clause 5.6.5); None when there is nothing to delete.

    ``scope`` is deletable like an attribute (clause 4.18).
    """
    if name == "scope":
        if "scope" not in entity:
            return None
        out = _copy(entity)
        del out["scope"]
        _touch(out, now)
        return out
    current = entity["attrs"].get(name)
    if current is None:
        return None
    out = _copy(entity)
    if delete_all:
        del out["attrs"][name]
    else:
        i = _index(current, dataset_id)
        if i is None:
            return None
        out["attrs"][name].pop(i)
        if not out["attrs"][name]:
            del out["attrs"][name]
    _touch(out, now)
    return out


def trim_attrs(
    entity: JSONObject, now: str, *, keep: frozenset[str] | None = None,
    drop: frozenset[str] | None = None,
) -> JSONObject:
    """The entity with only the ``keep`` attributes, or without the ``drop`` ones (5.6.21)."""
    out = _copy(entity)
    names = list(out["attrs"])
    for name in names:
        if (keep is not None and name not in keep) or (drop is not None and name in drop):
            del out["attrs"][name]
    if len(out["attrs"]) != len(names):
        _touch(out, now)
    return out
