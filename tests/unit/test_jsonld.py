"""Term expansion and compaction with the core and user @contexts (core.jsonld)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from urbanos.core.jsonld import (
    CORE_CONTEXT_URL,
    build_term_map,
    canonical,
    core_context_document,
    core_term_map,
    is_core_context_url,
    refuse_scoped_contexts,
    remote_urls,
    validate_context,
)
from urbanos.errors import BadRequestData, LdContextNotAvailable, NgsiLdError

NGSI = "https://uri.etsi.org/ngsi-ld/"
DEFAULT = NGSI + "default-context/"
EX = "http://example.org/"


def test_core_document_is_the_v1_8_context() -> None:
    doc = core_context_document()
    ctx = doc["@context"]
    assert ctx["@protected"] is True and ctx["@version"] == 1.1
    assert ctx["@vocab"] == DEFAULT
    assert ctx["VocabProperty"] == "ngsi-ld:VocabProperty"
    assert ctx["jsonKeys"] == "ngsi-ld:jsonKeys"
    assert ctx["json"] == {"@id": "ngsi-ld:hasJSON", "@type": "@json"}
    assert "Snapshot" not in ctx  # a v1.9 addition
    doc["@context"].clear()
    assert core_context_document()["@context"]  # callers get their own copy


@pytest.mark.parametrize(
    ("url", "core"),
    [
        (CORE_CONTEXT_URL, True),
        ("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld", True),
        ("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.3.jsonld", True),
        ("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld", True),
        ("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-non-existing.jsonld", False),
        ("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.10.jsonld", False),
        ("https://example.org/ngsi-ld-core-context-v1.8.jsonld", False),
    ],
)
def test_is_core_context_url(url: str, core: bool) -> None:
    assert is_core_context_url(url) is core


@pytest.mark.parametrize(
    ("term", "iri"),
    [
        ("location", NGSI + "location"),
        ("Property", NGSI + "Property"),
        ("value", NGSI + "hasValue"),
        ("title", "http://purl.org/dc/terms/title"),
        ("speed", DEFAULT + "speed"),  # @vocab
        ("ngsi-ld:foo", NGSI + "foo"),  # compact IRI
        ("geojson:Point", "https://purl.org/geojson/vocab#Point"),
        ("http://example.org/speed", "http://example.org/speed"),  # absolute IRI
        ("urn:ngsi-ld:Thing:1", "urn:ngsi-ld:Thing:1"),
        ("_:b0", "_:b0"),
        ("id", "@id"),
        ("type", "@type"),
        ("@id", "@id"),
        ("attributeCount", DEFAULT + "attributeCount"),
    ],
)
def test_core_expansion(term: str, iri: str) -> None:
    assert core_term_map().expand(term) == iri


@pytest.mark.parametrize(
    ("iri", "term"),
    [
        (NGSI + "location", "location"),
        (NGSI + "hasValue", "value"),
        (DEFAULT + "speed", "speed"),  # default-context IRIs compact to the bare name
        (NGSI + "somethingNew", "ngsi-ld:somethingNew"),
        ("https://purl.org/geojson/vocab#x", "geojson:x"),
        (DEFAULT + "location", "ngsi-ld:default-context/location"),  # "location" is taken
        (DEFAULT + "a:b", "ngsi-ld:default-context/a:b"),  # would read as a compact IRI
        ("http://other.example/x", "http://other.example/x"),
        ("@id", "id"),
    ],
)
def test_core_compaction(iri: str, term: str) -> None:
    assert core_term_map().compact(iri) == term


@pytest.mark.parametrize("name", ["speed", "Vehicle", "almostFull", "ngsi-ld:foo", "location"])
def test_round_trip(name: str) -> None:
    terms = core_term_map()
    assert terms.compact(terms.expand(name)) == name


def test_core_map_metadata() -> None:
    terms = core_term_map()
    assert terms.context is None and terms.core_only
    assert terms.vocab == DEFAULT
    assert terms.term_type("json") == "@json"
    assert terms.term_type("objectType") == "@vocab"
    assert terms.term_type("createdAt") == NGSI + "DateTime"
    assert terms.term_type("location") is None
    assert terms.iri_type(NGSI + "hasVocab") == "@vocab"
    definition = terms.definition("languageMap")
    assert definition is not None and definition.container == ("@language",)


def test_core_url_context_is_the_core_map() -> None:
    terms = build_term_map(CORE_CONTEXT_URL, {})
    assert terms.core_only and terms.context == CORE_CONTEXT_URL
    assert terms.expand("location") == NGSI + "location"
    assert build_term_map([CORE_CONTEXT_URL, None], {}).core_only


USER = {
    "ex": EX,
    "Vehicle": "ex:Vehicle",
    "speed": {"@id": "ex:speed", "@type": "DateTime"},
    "brand": EX + "brandName",
    "brandName": EX + "brandName",
    "kind": {"@id": "ex:kind", "@type": "@vocab"},
    "myLocation": NGSI + "location",
}


def test_user_terms() -> None:
    terms = build_term_map(USER, {})
    assert not terms.core_only
    assert terms.expand("Vehicle") == EX + "Vehicle"
    assert terms.expand("speed") == EX + "speed"
    assert terms.term_type("speed") == NGSI + "DateTime"  # core terms usable in user ones
    assert terms.term_type("kind") == "@vocab"
    assert terms.expand("ex:anything") == EX + "anything"
    assert terms.expand("unknown") == DEFAULT + "unknown"
    assert terms.compact(EX + "speed") == "speed"
    assert terms.compact(EX + "brandName") == "brand"  # the shortest term
    assert terms.compact(EX + "other") == "ex:other"
    assert terms.compact(NGSI + "location") == "myLocation"  # the user's own term first
    assert terms.compact(DEFAULT + "unknown") == "unknown"


def test_core_terms_cannot_be_redefined() -> None:
    """4.4/5.5.7: the core has absolute precedence wherever it sits; no error either."""
    evil = {"Property": "https://evil.example/Property", "location": "https://evil.example/l"}
    for context in (
        [evil, CORE_CONTEXT_URL],
        [CORE_CONTEXT_URL, evil],  # plain JSON-LD: "protected term redefinition"
        {**evil, "@protected": True},  # and a protected user term cannot block the core
        evil,
    ):
        terms = build_term_map(context, {})
        assert terms.expand("Property") == NGSI + "Property"
        assert terms.expand("location") == NGSI + "location"
        assert terms.compact(NGSI + "Property") == "Property"


def test_user_vocab_is_superseded_by_the_core_one() -> None:
    terms = build_term_map({"@vocab": EX}, {})
    assert terms.expand("speed") == DEFAULT + "speed"


def test_remote_and_nested_documents() -> None:
    documents: dict[str, object] = {
        "http://ctx.example/main.jsonld": {
            "@context": ["sub/types.jsonld", {"speed": "ex:speed"}, CORE_CONTEXT_URL],
        },
        "http://ctx.example/sub/types.jsonld": {"@context": {"ex": EX, "Car": "ex:Car"}},
    }
    terms = build_term_map("http://ctx.example/main.jsonld", documents)
    assert terms.expand("Car") == EX + "Car"
    assert terms.expand("speed") == EX + "speed"
    assert terms.compact(EX + "Car") == "Car"
    assert documents["http://ctx.example/main.jsonld"] == {  # documents are not mutated
        "@context": ["sub/types.jsonld", {"speed": "ex:speed"}, CORE_CONTEXT_URL],
    }


def test_a_missing_document_is_not_available() -> None:
    with pytest.raises(LdContextNotAvailable, match="http://ctx.example/x"):
        build_term_map(["http://ctx.example/x"], {})


@pytest.mark.parametrize(
    ("context", "documents", "message"),
    [
        (42, {}, "not a number"),
        (True, {}, "not a boolean"),
        (["https://example.org/ctx.jsonld", 7], {}, "not a number"),
        ([["http://a.example/"]], {}, "array inside"),
        ({"speed": {"@id": 5}}, {}, "@id must be a string"),
        ({"speed": {"@container": "@bogus"}}, {}, "container"),
        ("relative.jsonld", {}, "not an absolute URL"),
        (
            "http://a.example/c",
            {"http://a.example/c": {"@context": "http://a.example/d"},
             "http://a.example/d": {"@context": ["http://a.example/c"]}},
            "cyclic",
        ),
        ("http://a.example/c", {"http://a.example/c": [1, 2]}, "not a JSON object"),
        ("http://a.example/c", {"http://a.example/c": {"@context": 3}}, "local context"),
    ],
)
def test_invalid_contexts(context: Any, documents: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequestData) as info:
        build_term_map(context, documents)
    assert message.lower() in info.value.detail.lower()


SCOPED = {"Vehicle": {"@id": "https://example.org/Vehicle", "@context": {"speed": "ex:s"}}}


@pytest.mark.parametrize(
    ("context", "documents"),
    [
        ([SCOPED], {}),
        ({"@context": SCOPED}, {}),
        ({"T": {"@id": "ex:T", "@type": "@id", "@context": "http://a.example/s"}},
         {"http://a.example/s": {"@context": {}}}),
        ("http://a.example/c", {"http://a.example/c": {"@context": [SCOPED]}}),
        ({"@import": "http://a.example/c"}, {"http://a.example/c": {"@context": SCOPED}}),
        ("http://a.example/c",
         {"http://a.example/c": {"@context": "http://a.example/d"},
          "http://a.example/d": {"@context": SCOPED}}),
    ],
)
def test_scoped_contexts_are_refused(context: Any, documents: dict[str, object]) -> None:
    """Clause 5.5.7: inline or fetched, nested or imported, a scoped context is a 400."""
    with pytest.raises(BadRequestData, match="scoped"):
        build_term_map(context, documents)


def test_scoped_contexts_are_valid_json_ld() -> None:
    """Add @context checks JSON-LD validity only; keyword and plain terms stay usable."""
    validate_context([SCOPED])
    refuse_scoped_contexts([SCOPED["Vehicle"]["@context"], "http://a.example/c"])
    terms = build_term_map({"@version": 1.1, "T": {"@id": "ex:T", "@type": "@id"}}, {})
    assert terms.expand("T") == "ex:T"


def test_remote_urls() -> None:
    context = [
        "http://a.example/1",
        {"@import": "http://a.example/2", "t": {"@id": "ex:t", "@context": "http://a.example/3"}},
        None,
        "http://a.example/1",
    ]
    assert remote_urls(context) == [f"http://a.example/{i}" for i in (1, 2, 3)]
    assert remote_urls({"@context": ["http://a.example/4"]}) == ["http://a.example/4"]
    assert remote_urls(None) == []
    with pytest.raises(BadRequestData):
        remote_urls(3.5)


def test_validate_context_without_remote_documents() -> None:
    validate_context({"@context": {"A1": "urn:ngsi-ld:attributes:A1"}})
    validate_context(["https://not.fetched.example/ctx", {"a": "ex:a"}])
    for bad in (42, True, ["https://example.org/ctx.jsonld", 7], {"x": {"@id": 1}}):
        with pytest.raises(BadRequestData):
            validate_context(bad)


def test_maps_answer_from_their_tables() -> None:
    terms = build_term_map(USER, {})
    for _ in range(3):
        assert terms.expand("fresh") == DEFAULT + "fresh"
        assert terms.compact(EX + "new") == "ex:new"
    assert canonical({"b": 1, "a": [2]}) == canonical({"a": [2], "b": 1})


@pytest.mark.parametrize(
    ("context", "words"),
    [
        ({"speed": {"@container": "@bogus"}}, "a term's @container is not valid"),
        ({"@vocab": 5}, "@vocab must be an IRI or null"),
        ({"@version": 1.0}, "@version must be 1.1"),
        ({"t": {"@id": "urn:t", "@type": 5}}, "a term's @type must be"),
        ({"t": {"@id": []}}, "a term does not map to an IRI (term 't'"),
        ({"t": {"@id": {"x": 1}}}, "a term does not map to an IRI (term 't'"),
        ({"@base": "relative/"}, "@base must be an IRI or null"),
        ({"@id": "urn:x"}, "a keyword cannot be redefined"),
    ],
)
def test_broken_json_ld_rules_are_400_in_our_words(context: Any, words: str) -> None:
    """The client's mistake, named by its JSON-LD error code, never in pyld's wording."""
    for check in (validate_context, lambda c: build_term_map(c, {})):
        with pytest.raises(BadRequestData) as info:
            check(context)
        assert words in info.value.detail and "[JSON-LD: " in info.value.detail
        assert "JSON-LD syntax" not in info.value.detail  # pyld's own message


@pytest.mark.parametrize(
    "context",
    [
        {"@language": None, "t": "urn:t"},
        [{"@direction": None}, {"t": "urn:t"}],
        [{"@vocab": None}, {"@vocab": None, "t": "urn:t"}],
        [{"@propagate": True}, {"t": "urn:t"}],
    ],
)
def test_valid_contexts_pyld_trips_on_are_processed(context: Any) -> None:
    validate_context(context)
    assert build_term_map(context, {}).expand("t") == "urn:t"
    fetched = {"http://ctx.example/d": {"@context": context}}
    assert build_term_map("http://ctx.example/d", fetched).expand("t") == "urn:t"


class _FailingDocuments(Mapping[str, object]):
    """Documents whose lookup fails: a fault of the broker, not of the client's @context."""

    def __getitem__(self, url: str) -> object:
        raise RuntimeError("store went away")

    def __contains__(self, url: object) -> bool:
        raise RuntimeError("store went away")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 1


def test_a_fault_while_processing_is_not_blamed_on_the_client() -> None:
    with pytest.raises(Exception) as info:
        build_term_map("http://ctx.example/c", _FailingDocuments())
    assert not isinstance(info.value, NgsiLdError)  # rendered as a logged 500 by the caller
