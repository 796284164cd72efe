"""Entity type and attribute discovery across context sources (clauses 5.7.5 - 5.7.10
forwarded per the discovery operations of clause 4.20): what the local store knows, united
with what every matching registration's source answers.

A source's answer is checked member by member (names are strings, counts non-negative
integers); one that does not fit the data type is left out with an NGSILD-Warning 111.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from urbanos.core.federation import warning
from urbanos.errors import NgsiLdError
from urbanos.services.contexts import ContextService
from urbanos.services.entities import AttributeInfo, TypeInfo
from urbanos.services.federated_reads import context_of_answer
from urbanos.services.federation import Federation, Reply
from urbanos.types import Terms

#: what one source's answer holds: TypeInfo or AttributeInfo
_Info = TypeVar("_Info")

__all__ = ["FederatedDiscovery"]

_API = "/ngsi-ld/v1"


class _Invalid(Exception):
    pass


def _names(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Invalid("a list of names was expected")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid("a name was expected")
    return value


def _count(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid("a count must be a non-negative integer")
    return value


class FederatedDiscovery:
    def __init__(self, federation: Federation, contexts: ContextService) -> None:
        self.federation = federation
        self.contexts = contexts

    async def active(self, tenant: str) -> bool:
        return bool(await self.federation.registrations(tenant))

    async def _ask(self, tenant: str, operation: str, path: str, *, terms: Terms, link: str,
                   via: str | None, incoming: Mapping[str, str] | None,
                   params: list[tuple[str, str]], types: set[str] | None = None,
                   attrs: set[str] | None = None) -> tuple[list[tuple[Any, Terms]], list[str]]:
        """Each answering source's body with the terms to read it, and the warnings."""
        targets = await self.federation.targets(tenant, operation, types=types, attrs=attrs,
                                                via=via)
        if not targets:
            return [], []
        link_header = f'<{link}>; rel="http://www.w3.org/ns/json-ld#context"; ' \
                      'type="application/ld+json"'

        async def check(reply: Reply) -> str | None:
            items = reply.body if isinstance(reply.body, list) else [reply.body]
            try:
                context = context_of_answer(items, reply.headers)
                reply.parsed = terms if context is None else await self.contexts.term_map(
                    context, tenant=tenant)
            except NgsiLdError as exc:
                return warning(111, reply.target.endpoint, f"invalid @context: {exc.detail}")
            except Exception:  # noqa: BLE001 - whatever a hostile @context trips over
                return warning(111, reply.target.endpoint, "invalid @context")
            return None

        replies = await self.federation.send(
            tenant, targets, "GET", _API + path, params=params, link=link_header, via=via,
            accept="application/ld+json", incoming=incoming, check=check)
        out: list[tuple[Any, Terms]] = []
        warnings: list[str] = []
        for reply in replies:
            if reply.warning is not None:
                warnings.append(reply.warning)
            elif reply.body is not None and reply.parsed is not None:
                out.append((reply, reply.parsed))
        return out, warnings

    async def types(
        self, tenant: str, local: list[TypeInfo], *, details: bool, name: str | None,
        terms: Terms, link: str, via: str | None, incoming: Mapping[str, str] | None = None,
    ) -> tuple[list[TypeInfo], list[str]]:
        """``local`` united with the sources' entity types (one type when ``name``, its
        expanded IRI)."""
        merged = {i.type: TypeInfo(i.type, i.count, {k: set(v) for k, v in i.attributes.items()})
                  for i in local}
        if name is not None:
            op, path, params = ("retrieveEntityTypeInfo",
                                f"/types/{quote(terms.compact(name), safe=':')}", [])
        elif details:
            op, path, params = "retrieveEntityTypeDetails", "/types", [("details", "true")]
        else:
            op, path, params = "retrieveEntityTypes", "/types", []
        answers, warnings = await self._ask(
            tenant, op, path, terms=terms, link=link, via=via, incoming=incoming,
            params=params, types={name} if name is not None else None)
        for info in _each_valid(answers, warnings, lambda body, their: _type_infos(
                body, their, name=name, details=details)):
            held = merged.setdefault(info.type, TypeInfo(info.type, 0, {}))
            for attr, kinds in info.attributes.items():
                held.attributes.setdefault(attr, set()).update(kinds)
            merged[info.type] = TypeInfo(info.type, held.count + info.count, held.attributes)
        return list(merged.values()), warnings

    async def attributes(
        self, tenant: str, local: list[AttributeInfo], *, details: bool, name: str | None,
        terms: Terms, link: str, via: str | None, incoming: Mapping[str, str] | None = None,
    ) -> tuple[list[AttributeInfo], list[str]]:
        """``local`` united with the sources' attributes (one attribute when ``name``)."""
        merged = {i.attr: AttributeInfo(i.attr, i.count, set(i.kinds), set(i.types))
                  for i in local}
        if name is not None:
            op, path, params = ("retrieveAttrTypeInfo",
                                f"/attributes/{quote(terms.compact(name), safe=':')}", [])
        elif details:
            op, path, params = "retrieveAttrTypeDetails", "/attributes", [("details", "true")]
        else:
            op, path, params = "retrieveAttrTypes", "/attributes", []
        answers, warnings = await self._ask(
            tenant, op, path, terms=terms, link=link, via=via, incoming=incoming,
            params=params, attrs={name} if name is not None else None)
        for info in _each_valid(answers, warnings, lambda body, their: _attribute_infos(
                body, their, name=name, details=details)):
            held = merged.get(info.attr) or AttributeInfo(info.attr, 0, set(), set())
            merged[info.attr] = AttributeInfo(info.attr, held.count + info.count,
                                              held.kinds | info.kinds, held.types | info.types)
        return list(merged.values()), warnings


def _each_valid(answers: list[tuple[Any, Terms]], warnings: list[str],
                parse: Callable[[object, Terms], list[_Info]]) -> Iterator[_Info]:
    """What ``parse`` finds in each source's answer; an answer it cannot read is left out
    with a 111 warning, whatever a hostile payload trips over."""
    for reply, their in answers:
        try:
            found = parse(reply.body, their)
        except _Invalid as exc:
            warnings.append(warning(111, reply.target.endpoint, f"invalid payload: {exc}"))
            continue
        except Exception:  # noqa: BLE001 - whatever a hostile answer trips over
            warnings.append(warning(111, reply.target.endpoint, "invalid payload"))
            continue
        yield from found


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Invalid("an object was expected")
    return body


def _type_infos(body: object, terms: Terms, *, name: str | None,
                details: bool) -> list[TypeInfo]:
    x = terms.expand
    if name is not None:
        doc = _object(body)
        attributes: dict[str, set[str]] = {}
        for detail in doc.get("attributeDetails") or []:
            detail = _object(detail)
            kinds = set(_names(detail.get("attributeTypes", [])))
            attributes.setdefault(x(_name(detail.get("attributeName"))), set()).update(kinds)
        typed = x(_name(doc.get("typeName", terms.compact(name))))
        if typed != name:
            raise _Invalid("the answer is about another type")
        return [TypeInfo(name, _count(doc.get("entityCount")), attributes)]
    if details:
        if not isinstance(body, list):
            raise _Invalid("a list of EntityType was expected")
        out = []
        for item in body:
            item = _object(item)
            attrs: dict[str, set[str]] = {x(a): set() for a in _names(item.get("attributeNames", []))}
            out.append(TypeInfo(x(_name(item.get("typeName"))), 0, attrs))
        return out
    return [TypeInfo(x(t), 0, {}) for t in _names(_object(body).get("typeList"))]


def _attribute_infos(body: object, terms: Terms, *, name: str | None,
                     details: bool) -> list[AttributeInfo]:
    x = terms.expand
    if name is not None:
        doc = _object(body)
        if x(_name(doc.get("attributeName", terms.compact(name)))) != name:
            raise _Invalid("the answer is about another attribute")
        return [AttributeInfo(name, _count(doc.get("attributeCount")),
                              set(_names(doc.get("attributeTypes", []))),
                              {x(t) for t in _names(doc.get("typeNames", []))})]
    if details:
        if not isinstance(body, list):
            raise _Invalid("a list of Attribute was expected")
        out = []
        for item in body:
            item = _object(item)
            out.append(AttributeInfo(x(_name(item.get("attributeName"))), 0,
                                     set(_names(item.get("attributeTypes", []))),
                                     {x(t) for t in _names(item.get("typeNames", []))}))
        return out
    return [AttributeInfo(x(a), 0, set(), set())
            for a in _names(_object(body).get("attributeList"))]
