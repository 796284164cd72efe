"""Distributed writes (clauses 4.3.6.2, 4.3.6.3, 5.6.x.4, 6.3.17), the pure part: which part
of a write stays in this broker, what each context source is sent, and how the outcomes
make one answer.

The rules, per matching registration mode:

- *inclusive*: the write is done here and forwarded (only the attributes the registration
  holds, when it names some);
- *exclusive*: the attributes the registration holds for that entity are written at the
  source only; the rest stays here;
- *redirect*: forwarded to every matching source, nothing is written here;
- *auxiliary*: never written to (a source of reads only).

An exclusive or redirect registration that covers the write but does not list the
operation refuses its part with a Conflict (409): the broker may neither forward it nor
keep the data itself. ``services.federated_writes`` does the I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from urbanos.core.expiry import canonical
from urbanos.core.federation import Target
from urbanos.core.model import ENTITY_MEMBERS
from urbanos.core.registration_info import covers, supports
from urbanos.errors import NgsiLdError
from urbanos.types import JSONObject, Terms

__all__ = [
    "Conflict",
    "SourceUnavailable",
    "Outcome",
    "WritePlan",
    "batch_result",
    "forward_body",
    "link_value",
    "plan_write",
    "problem_of",
    "refusing",
    "update_result",
]

_HOLDING = ("exclusive", "redirect")
_NAMES = ("propertyNames", "relationshipNames")
_NON_ATTRIBUTES = ENTITY_MEMBERS | {"@id", "@type", "expiresAt"}
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"


class Conflict(NgsiLdError):
    """409: the data belongs to an exclusive or redirect source that does not take this
    operation (clauses 5.6.1.4 and siblings)."""

    status = 409
    type_uri = "https://uri.etsi.org/ngsi-ld/errors/Conflict"
    title = "Conflict"


class SourceUnavailable(NgsiLdError):
    """503: the only source of the data is cooling down after failures (clause 5.2.34
    ``cooldown``); the write is not done here in its place."""

    status = 503
    title = "Service unavailable"


# --------------------------------------------------------------------------- planning


def _held_names(doc: Mapping[str, Any], ids: set[str] | None, types: set[str] | None,
                attrs: set[str] | None) -> frozenset[str] | None | bool:
    """The attributes of the write a registration holds: False none, None all of them."""
    found: set[str] = set()
    matched = False
    for info in doc.get("information", ()):
        if not covers(info, ids=ids, types=types, attrs=attrs):
            continue
        matched = True
        names = [n for key in _NAMES for n in info.get(key, ())]
        if not names:
            return frozenset(attrs) if attrs is not None else None
        found.update(names)
    if not matched:
        return False
    return frozenset(found & attrs if attrs is not None else found)


def refusing(docs: Iterable[Mapping[str, Any]], operation: str, *, now: str,
             ids: set[str] | None = None, types: set[str] | None = None,
             attrs: set[str] | None = None, selected: Collection[str] | None = None
             ) -> list[Target]:
    """The exclusive and redirect registrations that hold (part of) what is written but
    will not take it: they do not list ``operation`` (their part is a Conflict), or, when
    ``selected`` (the ids of the registrations the write goes to) is given, they were left
    out of it (their source is cooling down after failures: their part fails, it is not
    written here instead). ``now`` is canonical."""
    out: list[Target] = []
    for doc in docs:
        mode = doc.get("mode", "inclusive")
        if mode not in _HOLDING:
            continue
        if supports(doc, operation) and (selected is None or doc.get("id") in selected):
            continue
        at = doc.get("expiresAt")
        if isinstance(at, str) and canonical(at) <= now:
            continue
        held = _held_names(doc, ids, types, attrs)
        if held is False:
            continue
        assert not isinstance(held, bool)
        out.append(Target(doc=dict(doc), mode=str(mode), attrs=held))
    return out


@dataclass(frozen=True, slots=True)
class WritePlan:
    """One write split by mode. ``local``: whether this broker does its part; ``kept``:
    the attributes it writes (None: all the write has); ``forward``: the sources sent
    their part; ``refused``: the registrations whose part is a Conflict."""

    local: bool
    kept: frozenset[str] | None
    forward: tuple[Target, ...] = ()
    refused: tuple[Target, ...] = ()
    #: the entity types the write was matched with (None: unknown), for access checks
    types: frozenset[str] | None = None

    @property
    def distributed(self) -> bool:
        return bool(self.forward or self.refused)


LOCAL_ONLY = WritePlan(local=True, kept=None)


def plan_write(targets: Sequence[Target], refused: Sequence[Target],
               attrs: frozenset[str] | None, *, whole_entity: bool = False) -> WritePlan:
    """Split a write on ``attrs`` (expanded names; None: it names none, e.g. a deletion)
    between this broker and the sources. ``whole_entity``: the write is about the entity
    itself (delete, purge): done here unless a redirect registration holds it."""
    usable = tuple(t for t in targets if t.mode != "auxiliary")
    if not usable and not refused:
        return LOCAL_ONLY
    holders = [*(t for t in usable if t.mode in _HOLDING), *refused]
    if any(t.mode == "redirect" for t in holders):
        return WritePlan(local=False, kept=frozenset(), forward=usable, refused=tuple(refused))
    if whole_entity or attrs is None:
        return WritePlan(local=True, kept=None, forward=usable, refused=tuple(refused))
    held: set[str] = set()
    for t in holders:
        held |= attrs if t.attrs is None else t.attrs
    kept = attrs - held
    local = not held or bool(kept)
    return WritePlan(local=local, kept=frozenset(kept) if held else None, forward=usable,
                     refused=tuple(refused))


# --------------------------------------------------------------------------- payloads


def keep_attrs(entity: JSONObject, kept: frozenset[str] | None) -> JSONObject:
    """A stored-form entity with only the ``kept`` attributes (None: unchanged)."""
    if kept is None:
        return entity
    out = dict(entity)
    out["attrs"] = {k: v for k, v in entity.get("attrs", {}).items() if k in kept}
    return out


def forward_body(raw: Mapping[str, Any], terms: Terms, attrs: frozenset[str] | None, *,
                 into: Terms | None = None) -> JSONObject:
    """What a source is sent of an entity payload as the client wrote it: without its
    @context, with only ``attrs`` (expanded names; None: every attribute); ``into``
    re-compacts names and types with the registration's own @context (clause 4.3.6.6)."""
    out: JSONObject = {}
    for key, value in raw.items():
        if key == "@context":
            continue
        if key in _NON_ATTRIBUTES:
            if into is not None and key in ("type", "@type"):
                value = _recompact_types(value, terms, into)
            out[key] = value
            continue
        iri = terms.expand(key)
        if attrs is not None and iri not in attrs:
            continue
        out[into.compact(iri) if into is not None else key] = value
    return out


def _recompact_types(value: Any, terms: Terms, into: Terms) -> Any:
    if isinstance(value, str):
        return into.compact(terms.expand(value))
    if isinstance(value, list):
        return [into.compact(terms.expand(v)) if isinstance(v, str) else v for v in value]
    return value


def link_value(url: str) -> str:
    """A JSON-LD Link header naming ``url`` as the @context."""
    return f'<{url}>; rel="{CONTEXT_REL}"; type="application/ld+json"'


# --------------------------------------------------------------------------- outcomes


@dataclass(slots=True)
class Outcome:
    """One part's result: this broker's (``registration`` None) or one source's. ``ids``
    are the entities it concerns; ``problem`` is None when it succeeded."""

    registration: str | None
    ids: list[str]
    problem: JSONObject | None = None
    attrs: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    #: the error itself, when this broker decided it (raised as such when nothing else ran)
    error: NgsiLdError | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def complete(self) -> bool:
        """Succeeded in full: no error and no attribute left out."""
        return self.problem is None and not self.not_updated


def problem_of(status: int | None, body: Any, detail: str) -> JSONObject:
    """The ProblemDetails of a source's failure: its own when it sent one, else made from
    the status (None: no answer, reported as a 504 GatewayTimeout-like InternalError)."""
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        out = dict(body)
        if status is not None:
            out.setdefault("status", status)
        return out
    kind = _TYPE_BY_STATUS.get(status or 0, "InternalError")
    return {"type": "https://uri.etsi.org/ngsi-ld/errors/" + kind,
            "title": kind, "status": status if status is not None else 504,
            "detail": detail}


_TYPE_BY_STATUS = {400: "BadRequestData", 404: "ResourceNotFound", 409: "AlreadyExists",
                   422: "OperationNotSupported", 403: "Forbidden", 401: "Unauthorized"}


def batch_result(outcomes: Sequence[Outcome]) -> JSONObject:
    """BatchOperationResult (clause 5.2.16) of a distributed write: an entity succeeded if
    some part of it did; each failed part is a BatchEntityError naming the registration it
    came from (clause 5.2.17)."""
    success: list[str] = []
    errors: list[JSONObject] = []
    for outcome in outcomes:
        for eid in outcome.ids:
            if outcome.ok:
                if eid not in success:
                    success.append(eid)
                continue
            error: JSONObject = {"entityId": eid}
            if outcome.registration is not None:
                error["registrationId"] = outcome.registration
            error["error"] = outcome.problem
            errors.append(error)
    return {"success": success, "errors": errors}


def update_result(outcomes: Sequence[Outcome], compact: Any) -> JSONObject:
    """UpdateResult (clause 5.2.18) of a distributed attribute write: what each part
    updated, and per failed part its attributes with the reason and the registration
    (NotUpdatedDetails, clause 5.2.19). ``compact`` names an attribute for the client."""
    updated: list[str] = []
    not_updated: list[JSONObject] = []
    for outcome in outcomes:
        missed = list(outcome.not_updated)
        if outcome.ok:
            updated.extend(a for a in outcome.attrs if a not in updated)
        else:
            assert outcome.problem is not None
            reason = str(outcome.problem.get("detail") or outcome.problem.get("title") or "")
            missed.extend((name, reason) for name in outcome.attrs or [""])
        for name, reason in missed:
            item: JSONObject = {"attributeName": compact(name) if name else "",
                                "reason": reason}
            if outcome.registration is not None:
                item["registrationId"] = outcome.registration
            not_updated.append(item)
    return {"updated": updated, "notUpdated": not_updated}
