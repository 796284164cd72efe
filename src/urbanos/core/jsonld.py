"""JSON-LD @context processing: term expansion and compaction for NGSI-LD.

A request's @context is processed once per distinct value (the caller caches the result)
into an immutable :class:`TermMap`; after that, expanding an attribute name or compacting
an IRI is a dictionary lookup, because it happens for every attribute of every request.
Context processing itself is pyld's (JSON-LD 1.1), fed only from documents the service
has already fetched: this module never touches the network.

The NGSI-LD core @context (ETSI GS CIM 009 Annex B, shipped as package data) always
applies and always wins. Clause 4.4 makes it protected and "as if in the last
position"; clause 5.5.7 says it has "absolute precedence, regardless of the position of
the Core @context in the @context array". So a user context redefining a core term is
not an error, the redefinition is simply ignored (the suite's 404_01_02 expects exactly
that). Plain JSON-LD would instead raise "protected term redefinition" when a user
context *follows* the protected core (pyld does), so we process:

1. the core context with ``@protected`` removed, as the starting active context, so user
   definitions may use ``ngsi-ld:`` and ``DateTime`` and may redefine core terms freely
   (also when they reference a core URL in the middle of their array);
2. the user context on top of it, remote documents served from ``documents``;
3. the core context's own definitions last, overriding every term they define, and its
   ``@vocab`` (user ``@vocab`` is therefore superseded, as it is with core-last JSON-LD).

Scoped contexts (a term definition carrying its own ``@context``) are refused with
BadRequestData wherever they appear in a user context, inline or in a fetched document:
clause 5.5.7 bans them because they could redefine core terms or reshape NGSI-LD
elements. Only expansion enforces this; :func:`validate_context` (Add @context) checks
plain JSON-LD validity, as clause 5.13.2.4 asks. Reverse terms are ignored: the map is flat.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from pyld import jsonld as _pyld
from pyld.context_resolver import ContextResolver

from urbanos.errors import BadRequestData, LdContextNotAvailable, NgsiLdError

__all__ = [
    "CORE_CONTEXT_URL",
    "TermDefinition",
    "TermMap",
    "build_term_map",
    "canonical",
    "core_context_document",
    "core_term_map",
    "is_core_context_url",
    "refuse_scoped_contexts",
    "remote_urls",
    "validate_context",
]

CORE_CONTEXT_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
_CORE_URL = re.compile(
    r"^https?://uri\.etsi\.org/ngsi-ld/v1/ngsi-ld-core-context(?:-v1\.[0-9])?\.jsonld$"
)
_CORE_FILE = "ngsi-ld-core-context-v1.8.jsonld"
_ABSOLUTE_IRI = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*|_):[^\s]*$")
_MEMO_LIMIT = 4096


def is_core_context_url(url: str) -> bool:
    """True for every published core @context URL; the broker serves them all itself."""
    return bool(_CORE_URL.match(url))


@functools.cache
def _core_document() -> dict[str, Any]:
    data = resources.files("urbanos").joinpath("data", _CORE_FILE).read_bytes()
    doc = orjson.loads(data)
    assert isinstance(doc, dict)
    return doc


def core_context_document() -> dict[str, Any]:
    """The core @context document (a private copy: callers may mutate it)."""
    return copy.deepcopy(_core_document())


@dataclass(frozen=True, slots=True)
class TermDefinition:
    """What a term means: its IRI (or keyword) and the coercions the renderer needs."""

    iri: str
    type: str | None = None  # expanded @type mapping: "@id", "@vocab", "@json" or an IRI
    container: tuple[str, ...] = ()
    prefix: bool = False  # usable as the prefix of a compact IRI


class TermMap:
    """An immutable processed @context: vocab-relative expansion and compaction.

    Build with :func:`build_term_map` (or :func:`core_term_map`), once per distinct
    context; ``expand`` and ``compact`` are dictionary lookups afterwards (with a small
    bounded memo for IRIs that need the prefix or @vocab rules).
    """

    __slots__ = (
        "context",
        "vocab",
        "definitions",
        "core_only",
        "_expand",
        "_compact",
        "_prefixes",
        "_prefix_lengths",
        "_memo_expand",
        "_memo_compact",
    )

    context: Any
    vocab: str
    definitions: Mapping[str, TermDefinition]
    core_only: bool

    def __init__(
        self,
        context: Any,
        definitions: Mapping[str, TermDefinition],
        vocab: str,
        core_terms: Mapping[str, TermDefinition],
    ) -> None:
        self.context = context
        self.vocab = vocab
        self.definitions = dict(definitions)
        self.core_only = all(core_terms.get(t) == d for t, d in self.definitions.items())
        self._expand = {t: d.iri for t, d in self.definitions.items()}
        best: dict[str, tuple[bool, int, str]] = {}
        for term, d in self.definitions.items():
            rank = (core_terms.get(term) == d, len(term), term)  # user terms, then shortest
            if d.iri not in best or rank < best[d.iri]:
                best[d.iri] = rank
        self._compact = {iri: rank[2] for iri, rank in best.items()}
        prefixes: dict[str, list[str]] = {}
        for term, d in self.definitions.items():
            if d.prefix and not d.iri.startswith("@"):
                prefixes.setdefault(d.iri, []).append(term)
        self._prefixes = prefixes
        self._prefix_lengths = sorted({len(ns) for ns in prefixes})
        self._memo_expand: dict[str, str] = {}
        self._memo_compact: dict[str, str] = {}

    def rebind(self, context: Any) -> TermMap:
        """The same map reporting another raw context value (e.g. a core URL)."""
        clone = TermMap.__new__(TermMap)
        for name in TermMap.__slots__:
            setattr(clone, name, getattr(self, name))
        clone.context = context
        return clone

    def expand(self, term: str) -> str:
        """Expand an attribute name, entity type or vocab value to its IRI."""
        iri = self._expand.get(term)
        if iri is not None:
            return iri
        iri = self._memo_expand.get(term)
        if iri is None:
            iri = self._expand_slow(term)
            if len(self._memo_expand) < _MEMO_LIMIT:
                self._memo_expand[term] = iri
        return iri

    def _expand_slow(self, term: str) -> str:
        if term.startswith("@"):
            return term  # keywords (and keyword-like strings) are not expanded
        prefix, colon, suffix = term.partition(":")
        if colon and prefix:
            if prefix == "_" or suffix.startswith("//"):
                return term
            d = self.definitions.get(prefix)
            if d is not None and d.prefix:
                return d.iri + suffix
            if _ABSOLUTE_IRI.match(term):
                return term
        return self.vocab + term

    def compact(self, iri: str) -> str:
        """Compact an IRI to a term, a default-context name, a compact IRI or itself."""
        term = self._compact.get(iri)
        if term is not None:
            return term
        term = self._memo_compact.get(iri)
        if term is None:
            term = self._compact_slow(iri)
            if len(self._memo_compact) < _MEMO_LIMIT:
                self._memo_compact[iri] = term
        return term

    def _compact_slow(self, iri: str) -> str:
        vocab = self.vocab
        if vocab and iri.startswith(vocab) and len(iri) > len(vocab):
            suffix = iri[len(vocab) :]
            if ":" not in suffix and not suffix.startswith("@") and suffix not in self._expand:
                return suffix
        candidates: list[str] = []
        for n in self._prefix_lengths:
            if n >= len(iri):
                break
            terms = self._prefixes.get(iri[:n])
            if terms:
                for p in terms:
                    compact = f"{p}:{iri[n:]}"
                    if self._expand.get(compact, iri) == iri:
                        candidates.append(compact)
        if candidates:
            return min(candidates, key=lambda c: (len(c), c))
        return iri

    def definition(self, term: str) -> TermDefinition | None:
        return self.definitions.get(term)

    def term_type(self, term: str) -> str | None:
        """The @type coercion of ``term`` ("@vocab", "@json", "@id", a datatype IRI)."""
        d = self.definitions.get(term)
        return d.type if d is not None else None

    def iri_type(self, iri: str) -> str | None:
        """The @type coercion of the term ``iri`` compacts to (None if it has no term)."""
        term = self._compact.get(iri)
        return self.definitions[term].type if term is not None else None

    def __repr__(self) -> str:
        return f"<TermMap {len(self.definitions)} terms, context={self.context!r:.80}>"


def _bad(detail: str) -> BadRequestData:
    return BadRequestData(f"Invalid @context: {detail}")


def remote_urls(context: Any) -> list[str]:
    """The URLs a @context value references, in order, without duplicates.

    Top-level strings, ``@import`` values and the URLs of scoped contexts: everything
    pyld will ask the document loader for while processing this value (nested
    references inside fetched documents are found by calling this on each document).
    Raises BadRequestData for values that cannot be a @context at all.
    """
    found: dict[str, None] = {}
    _collect(context, found, top=True)
    return list(found)


def _collect(value: Any, found: dict[str, None], *, top: bool) -> None:
    if value is None:
        return
    if isinstance(value, str):
        found.setdefault(value, None)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, list):
                raise _bad("an array inside a @context array")
            _collect(item, found, top=False)
    elif isinstance(value, dict):
        if "@context" in value:
            _collect(value["@context"], found, top=top)
            return
        imported = value.get("@import")
        if isinstance(imported, str):
            found.setdefault(imported, None)
        for key, definition in value.items():
            scoped = isinstance(definition, dict) and "@context" in definition
            if scoped and not key.startswith("@"):
                _collect(definition["@context"], found, top=False)
    else:
        raise _bad(f"a @context must be a URL, an object or an array, not {_kind(value)}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


class _Missing(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def refuse_scoped_contexts(context: Any, where: str = "") -> None:
    """Refuse a user @context holding a scoped context (clause 5.5.7): BadRequestData.

    Only ``context`` itself is inspected; :func:`build_term_map` applies it to every
    document too. Callers that fetch may call it first, to refuse before downloading.
    """
    items = context if isinstance(context, list) else [context]
    for item in items:
        if not isinstance(item, dict):
            continue
        if "@context" in item:
            refuse_scoped_contexts(item["@context"], where)
            continue
        for term, definition in item.items():
            if isinstance(definition, dict) and "@context" in definition:
                if not term.startswith("@"):
                    raise _bad(
                        f"term {term!r}{where} defines a scoped @context, which NGSI-LD "
                        "does not allow in user contexts (clause 5.5.7)"
                    )


class _Loader:
    """pyld document loader over pre-fetched documents; never touches the network.

    ``lenient`` answers unknown URLs with an empty context (syntax checks only);
    otherwise they raise LdContextNotAvailable and every document served is checked for
    scoped contexts, which is how the rule reaches nested and imported documents.
    """

    def __init__(self, documents: Mapping[str, object], *, lenient: bool) -> None:
        self.documents = documents
        self.lenient = lenient

    def __call__(self, url: str, options: object = None) -> dict[str, Any]:
        if is_core_context_url(url):
            document: object = _unprotected_core()
        elif url in self.documents:
            document = self.documents[url]
        elif self.lenient:
            document = {"@context": {}}
        else:
            raise _Missing(url)
        if not isinstance(document, dict):
            raise _bad(f"the document at {url} is not a JSON object")
        if not self.lenient and not is_core_context_url(url):
            refuse_scoped_contexts(document.get("@context"), f" (in {url})")
        # pyld rewrites relative URLs inside what it loads: hand it a copy
        return {"contextUrl": None, "documentUrl": url, "document": _for_pyld(document)}


@functools.cache
def _unprotected_core() -> dict[str, Any]:
    doc = copy.deepcopy(_core_document())
    doc["@context"].pop("@protected", None)
    return doc


def _definitions(mappings: Mapping[str, Any]) -> dict[str, TermDefinition]:
    out: dict[str, TermDefinition] = {}
    for term, m in mappings.items():
        if not m or m.get("reverse") or not isinstance(m.get("@id"), str):
            continue
        container = m.get("@container") or ()
        out[term] = TermDefinition(
            iri=m["@id"],
            type=m.get("@type"),
            container=tuple(container),
            prefix=bool(m.get("_prefix")),
        )
    return out


def _initial() -> dict[str, Any]:
    return {"mappings": {}, "processingMode": "json-ld-1.1", "_uuid": "urbanos-initial"}


def _process(active: Mapping[str, Any], context: Any, loader: _Loader, max_urls: int) -> Any:
    options = {
        "base": "",
        "documentLoader": loader,
        # a private resolver: pyld's shared cache is keyed by URL and would keep serving
        # a document after it was reloaded or deleted
        "contextResolver": ContextResolver({}, loader, max_context_urls=max_urls),
    }
    try:
        result = _pyld.JsonLdProcessor().process_context(active, _for_pyld(context), options)
    except (BadRequestData, LdContextNotAvailable):
        raise
    except _pyld.JsonLdError as exc:
        raise _translate(exc) from exc
    except RecursionError as exc:
        raise _bad("nested too deeply") from exc
    # anything else is a fault of ours or pyld's, not the client's: it propagates (500)
    return result


#: JSON-LD 1.1 context processing errors (JSON-LD API, 9.4.2): the client's @context is
#: at fault. Each is reported in our words; the code names the rule for the client.
_CLIENT_ERRORS = {
    "context overflow": "cyclic or too many nested @context references",
    "recursive context inclusion": "cyclic or too many nested @context references",
    "cyclic IRI mapping": "terms are defined through each other in a cycle",
    "invalid @import value": "@import must be the URL of one @context object",
    "invalid @nest value": "an @nest value is not valid",
    "invalid @prefix value": "@prefix must be true or false",
    "invalid @propagate value": "@propagate must be true or false",
    "invalid @protected value": "@protected must be true or false",
    "invalid @version value": "@version must be 1.1",
    "invalid IRI mapping": "a term does not map to an IRI",
    "invalid base IRI": "@base must be an IRI or null",
    "invalid base direction": "@direction must be ltr, rtl or null",
    "invalid container mapping": "a term's @container is not valid",
    "invalid context entry": "a @context holds an entry that is not allowed there",
    "invalid context nullification": "a protected @context cannot be nullified",
    "invalid default language": "@language must be a string or null",
    "invalid keyword alias": "a keyword alias is not valid",
    "invalid language mapping": "a term's @language must be a string or null",
    "invalid local context": "a @context must be a URL, an object or an array",
    "invalid remote context": "a referenced document is not a JSON-LD context",
    "invalid reverse property": "a reverse property definition is not valid",
    "invalid scoped context": "a scoped @context is not valid",
    "invalid term definition": "a term definition is not valid",
    "invalid type mapping": "a term's @type must be @id, @vocab, @json, @none or an IRI",
    "invalid vocab mapping": "@vocab must be an IRI or null",
    "keyword redefinition": "a keyword cannot be redefined",
    "processing mode conflict": "the @context needs JSON-LD 1.1 processing",
    "protected term redefinition": "a protected term cannot be redefined",
}


def _translate(exc: _pyld.JsonLdError) -> NgsiLdError:
    """pyld's error as ours: a missing document is LdContextNotAvailable (504), a broken
    JSON-LD rule BadRequestData (400) worded here; anything else (a loader or pyld fault)
    is re-raised as it is, for the caller to log and answer 500 without its message."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, _Missing):
            return LdContextNotAvailable(f"@context {cause.url} has not been retrieved")
        if isinstance(cause, BadRequestData | LdContextNotAvailable):
            return cause
        cause = cause.__cause__ or cause.__context__
    if exc.code not in _CLIENT_ERRORS:
        raise exc
    details = exc.details if isinstance(exc.details, dict) else {}
    term = details.get("term")
    return _broken(exc.code, f" (term {term[:100]!r})" if isinstance(term, str) else "")


def _broken(code: str, where: str = "") -> BadRequestData:
    """The client's @context breaks the JSON-LD rule ``code``."""
    return _bad(f"{_CLIENT_ERRORS[code]}{where} [JSON-LD: {code}]")


def _for_pyld(context: Any) -> Any:
    """A copy of ``context`` (a @context value, or a document holding one) that pyld
    processes without failing on valid or merely invalid input. pyld raises KeyError on a
    null ``@language``, ``@direction`` or ``@vocab`` when none is set (valid JSON-LD that
    resets them; a TermMap has no default language and the core's @vocab wins anyway: they
    are dropped), TypeError on a boolean ``@propagate`` in a fetched document (valid; it
    only matters for scoped contexts, which NGSI-LD refuses: dropped) and on a term ``@id``
    that is not a string, ValueError on a relative ``@base`` (with no document base to
    resolve it against, invalid)."""
    if isinstance(context, list):
        return [_for_pyld(item) for item in context]
    if not isinstance(context, dict):
        return context
    if "@context" in context:  # a document: its @context
        return {**context, "@context": _for_pyld(context["@context"])}
    out: dict[str, Any] = {}
    for key, value in context.items():
        if (key in ("@language", "@direction", "@vocab") and value is None) or (
                key == "@propagate" and isinstance(value, bool)):
            continue
        if key == "@base" and value is not None and not (
                isinstance(value, str) and _ABSOLUTE_IRI.match(value)):
            raise _broken("invalid base IRI")
        if isinstance(value, dict) and not key.startswith("@"):
            iri = value.get("@id")
            if iri is not None and not isinstance(iri, str):
                raise _broken("invalid IRI mapping", f" (term {key[:100]!r}: @id must be a string)")
            if "@context" in value:  # a scoped context
                value = {**value, "@context": _for_pyld(value["@context"])}
        out[key] = copy.deepcopy(value)
    return out


@functools.cache
def _core_state() -> tuple[Any, dict[str, TermDefinition], str]:
    """(active context from the unprotected core, core definitions, core @vocab)."""
    loader = _Loader({}, lenient=False)
    protected = _process(_initial(), _core_document(), loader, 4)
    start = _process(_initial(), _unprotected_core(), loader, 4)
    return start, _definitions(protected["mappings"]), str(protected["@vocab"])


@functools.cache
def core_term_map() -> TermMap:
    """The map used when a request carries no @context (clause 5.5.5)."""
    _start, core, vocab = _core_state()
    return TermMap(None, core, vocab, core)


def _only_core(context: Any) -> bool:
    if context is None:
        return True
    if isinstance(context, str):
        return is_core_context_url(context)
    if isinstance(context, list):
        return all(
            item is None or (isinstance(item, str) and is_core_context_url(item))
            for item in context
        )
    return False


def _check_urls(urls: Iterable[str]) -> None:
    for url in urls:
        if not _ABSOLUTE_IRI.match(url) or url.startswith("_:"):
            raise _bad(f"{url!r} is not an absolute URL")


def build_term_map(context: Any, documents: Mapping[str, object]) -> TermMap:
    """Process ``context`` (None = core only) into a TermMap, core context last.

    ``documents`` must hold every remote document reachable from ``context`` (parsed
    JSON, keyed by URL); core context URLs are answered from the built-in copy. A URL
    missing from ``documents`` raises LdContextNotAvailable; anything that is not a
    valid JSON-LD context, or holds a scoped context, raises BadRequestData.
    """
    if _only_core(context):
        base = core_term_map()
        return base if context is None else base.rebind(context)
    _check_urls(remote_urls(context))
    refuse_scoped_contexts(context)
    start, core, vocab = _core_state()
    loader = _Loader(documents, lenient=False)
    active = _process(copy.deepcopy(start), context, loader, len(documents) + 16)
    merged = _definitions(active["mappings"])
    merged.update(core)
    return TermMap(context, merged, vocab, core)


def validate_context(context: Any) -> None:
    """Check a @context's syntax without its remote documents (BadRequestData if invalid).

    Remote URLs are taken as empty contexts, so definitions relying on them are only
    checked when the context is used. This is what Add @context (clause 5.13.2.4) and
    implicitly created contexts can afford without fetching.
    """
    if isinstance(context, dict) and set(context) == {"@context"}:
        context = context["@context"]
    if _only_core(context):
        return
    _check_urls(remote_urls(context))
    start, _core, _vocab = _core_state()
    _process(copy.deepcopy(start), context, _Loader({}, lenient=True), 1 << 16)


def canonical(context: Any) -> bytes:
    """A stable key for a @context value (sorted keys), for caches keyed by context."""
    try:
        return orjson.dumps(context, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise _bad(f"not JSON ({exc})") from exc
