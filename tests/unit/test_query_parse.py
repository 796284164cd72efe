"""Parsing q (clause 4.9), entity type selection (4.17) and scopeQ (4.19) into trees."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Collection
from datetime import UTC, date, datetime, time

import pytest

from urbanos.core.model import NGSI_LD
from urbanos.core.query import MAX_DEPTH, MAX_LENGTH, parse_q, parse_scope_q, parse_type_expr
from urbanos.core.query.ast import (
    And,
    AttrPath,
    Comparison,
    Exists,
    Linked,
    Not,
    Op,
    Or,
    Pattern,
    QExpr,
    Range,
    Scalar,
    ScopeAnd,
    ScopeOr,
    ScopeTerm,
    TypeAnd,
    TypeAny,
    TypeName,
    TypeOr,
    ValueKind,
    ValueList,
)
from urbanos.core.query.evaluate import regex_problem
from urbanos.errors import BadRequestData

EX = "https://example.org/"
_CORE = {n: NGSI_LD + n for n in ("observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt")}


def expand(term: str) -> str:
    """A stand-in for the @context: core terms to the NGSI-LD namespace, others to EX."""
    if term in _CORE:
        return _CORE[term]
    return term if ":" in term else EX + term


def q(text: str, expand_values: Collection[str] = ()) -> QExpr:
    return parse_q(text, expand, expand_values=expand_values)


def path(name: str, *sub: str, keys: tuple[str, ...] = ()) -> AttrPath:
    return AttrPath(EX + name, tuple(sub), keys)


def num(value: float) -> Scalar:
    return Scalar(ValueKind.NUMBER, value)


def text(value: str) -> Scalar:
    return Scalar(ValueKind.STRING, value)


# --------------------------------------------------------------------------- terms


@pytest.mark.parametrize(
    ("source", "op"),
    [
        ("speed==50", Op.EQ),
        ("speed!=50", Op.NE),
        ("speed>50", Op.GT),
        ("speed>=50", Op.GE),
        ("speed<50", Op.LT),
        ("speed<=50", Op.LE),
    ],
)
def test_each_comparison_operator(source: str, op: Op) -> None:
    assert q(source) == Comparison(path("speed"), op, num(50))


def test_bare_attribute_is_existence() -> None:
    assert q("isMonitoredBy") == Exists(path("isMonitoredBy"))


def test_bang_negates_existence() -> None:
    assert q("!heading") == Not(Exists(path("heading")))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a==20", num(20)),
        ("a==-3", num(-3)),
        ("a==2.5", num(2.5)),
        ("a==1e3", num(1000.0)),
        ("a==-0.5E-2", num(-0.005)),
        ("a==true", Scalar(ValueKind.BOOLEAN, True)),
        ("a==false", Scalar(ValueKind.BOOLEAN, False)),
        ('a=="Mercedes"', text("Mercedes")),
        ('a=="say \\"hi\\""', text('say "hi"')),
        ('a=="caf\\u00e9; a|b"', text("café; a|b")),
        ('a==""', text("")),
        ("a==urn:ngsi-ld:Person:1", Scalar(ValueKind.URI, "urn:ngsi-ld:Person:1")),
        ("a==https://example.org/x?y=1", Scalar(ValueKind.URI, "https://example.org/x?y=1")),
        ("a==commercial", text("commercial")),
        (
            "a==2017-12-24T12:00:00Z",
            Scalar(ValueKind.DATETIME, datetime(2017, 12, 24, 12, tzinfo=UTC)),
        ),
        (
            "a==2017-12-24T14:00:00.250+02:00",
            Scalar(ValueKind.DATETIME, datetime(2017, 12, 24, 12, 0, 0, 250000, tzinfo=UTC)),
        ),
        ("a==2017-12-24", Scalar(ValueKind.DATE, date(2017, 12, 24))),
        ("a==12:30:00Z", Scalar(ValueKind.TIME, time(12, 30))),
        ("a==12:30:00-01:00", Scalar(ValueKind.TIME, time(13, 30))),
    ],
)
def test_scalar_literals(source: str, expected: Scalar) -> None:
    result = q(source)
    assert isinstance(result, Comparison)
    assert result.value == expected


def test_number_kinds_stay_int_or_float() -> None:
    result = q("a==3")
    assert isinstance(result, Comparison) and isinstance(result.value, Scalar)
    assert type(result.value.value) is int


def test_range_of_numbers_dates_and_strings() -> None:
    assert q("a==10..20") == Comparison(path("a"), Op.EQ, Range(num(10), num(20)))
    assert q("a!=1.5..2.5") == Comparison(path("a"), Op.NE, Range(num(1.5), num(2.5)))
    assert q("a==-5..-1") == Comparison(path("a"), Op.EQ, Range(num(-5), num(-1)))
    dates = q("a==2020-01-01..2020-12-31")
    assert isinstance(dates, Comparison)
    assert dates.value == Range(
        Scalar(ValueKind.DATE, date(2020, 1, 1)), Scalar(ValueKind.DATE, date(2020, 12, 31))
    )
    assert q('a=="a".."m"') == Comparison(path("a"), Op.EQ, Range(text("a"), text("m")))


def test_value_list() -> None:
    assert q('name=="Eiffel Tower","Pisa Tower"') == Comparison(
        path("name"), Op.EQ, ValueList((text("Eiffel Tower"), text("Pisa Tower")))
    )
    # a space after the comma, as in the spec's own examples, is tolerated
    assert q('color!="black", "red"') == Comparison(
        path("color"), Op.NE, ValueList((text("black"), text("red")))
    )
    mixed = q("a==1,true,urn:x:y")
    assert isinstance(mixed, Comparison) and isinstance(mixed.value, ValueList)
    assert [s.kind for s in mixed.value.items] == [
        ValueKind.NUMBER,
        ValueKind.BOOLEAN,
        ValueKind.URI,
    ]


def test_uri_value_is_not_split_on_range_dots() -> None:
    result = q("a==http://example.org/a/../b")
    assert result == Comparison(
        path("a"), Op.EQ, Scalar(ValueKind.URI, "http://example.org/a/../b")
    )


# --------------------------------------------------------------------------- paths


def test_sub_attribute_and_core_member_path() -> None:
    assert q("temperature.observedAt>=2017-12-24T12:00:00Z") == Comparison(
        AttrPath(EX + "temperature", ("observedAt",)),
        Op.GE,
        Scalar(ValueKind.DATETIME, datetime(2017, 12, 24, 12, tzinfo=UTC)),
    )
    assert q("speed.accuracy.unitCode") == Exists(
        AttrPath(EX + "speed", (EX + "accuracy", "unitCode"))
    )


def test_compound_keys_are_not_expanded() -> None:
    assert q('address[city]=="Berlin"') == Comparison(
        path("address", keys=("city",)), Op.EQ, text("Berlin")
    )
    assert q("sensor.rawdata[airquality.particulate]==40") == Comparison(
        AttrPath(EX + "sensor", (EX + "rawdata",), ("airquality", "particulate")), Op.EQ, num(40)
    )


def test_language_keys() -> None:
    assert q('color[en]=="red"') == Comparison(path("color", keys=("en",)), Op.EQ, text("red"))
    assert q('color[*]!="red"') == Comparison(path("color", keys=("*",)), Op.NE, text("red"))


def test_prefixed_attribute_names_reach_the_expander() -> None:
    assert q("schema:name") == Exists(AttrPath("schema:name"))


def test_entity_level_system_member() -> None:
    result = q('modifiedAt>"2020-01-01T00:00:00Z"')
    assert isinstance(result, Comparison)
    assert result.path == AttrPath("modifiedAt")
    assert result.path.is_entity_member
    assert not path("speed").is_entity_member


def test_linked_entity_paths() -> None:
    assert q('managedBy{name}=="Pisa Tower"') == Comparison(
        AttrPath(EX + "managedBy", linked=Linked((), path("name"))), Op.EQ, text("Pisa Tower")
    )
    hinted = q("sensor{Device,Probe:humidity}==40")
    assert hinted == Comparison(
        AttrPath(EX + "sensor", linked=Linked((EX + "Device", EX + "Probe"), path("humidity"))),
        Op.EQ,
        num(40),
    )
    nested = q('owner{works{address[city]}}=="x"')
    assert isinstance(nested, Comparison)
    inner = nested.path.linked
    assert inner is not None and inner.path.linked is not None
    assert inner.path.linked.path == path("address", keys=("city",))


# --------------------------------------------------------------------------- logic


def test_and_binds_tighter_than_or() -> None:
    a, b, c = (Exists(path(n)) for n in "abc")
    assert q("a|b;c") == Or((a, And((b, c))))
    assert q("a;b|c") == Or((And((a, b)), c))


def test_parentheses_override_precedence() -> None:
    a, b, c = (Exists(path(n)) for n in "abc")
    assert q("(a|b);c") == And((Or((a, b)), c))
    assert q('((speed>50|rpm>3000);brandName=="Mercedes")') == And(
        (
            Or(
                (
                    Comparison(path("speed"), Op.GT, num(50)),
                    Comparison(path("rpm"), Op.GT, num(3000)),
                )
            ),
            Comparison(path("brandName"), Op.EQ, text("Mercedes")),
        )
    )


def test_same_operator_groups_are_flattened() -> None:
    a, b, c = (Exists(path(n)) for n in "abc")
    assert q("a;b;c") == And((a, b, c))
    assert q("(a;b);c") == And((a, b, c))
    assert q("a|(b|c)") == Or((a, b, c))
    assert q("((a))") == a


def test_whitespace_between_tokens_is_tolerated() -> None:
    assert q(' speed > 5 ; name == "x y" ') == And(
        (Comparison(path("speed"), Op.GT, num(5)), Comparison(path("name"), Op.EQ, text("x y")))
    )


# --------------------------------------------------------------------------- patterns


def test_patterns_quoted_and_raw() -> None:
    assert q('name~="^Eiffel"') == Pattern(path("name"), "^Eiffel")
    assert q('name!~="^Eiffel"') == Pattern(path("name"), "^Eiffel", negated=True)
    assert q('name~="a\\"b"') == Pattern(path("name"), 'a"b')
    # raw: parentheses and alternation inside a group belong to the regex
    assert q("name~=^a(b|c)d;x") == And((Pattern(path("name"), "^a(b|c)d"), Exists(path("x"))))
    assert q("(name~=x[)]y)") == Pattern(path("name"), "x[)]y")
    assert q("name~=a|b") == Or((Pattern(path("name"), "a"), Exists(path("b"))))


@pytest.mark.parametrize(
    "regex",
    ["(a+)+", "(a*)*", "(a|a)*", "(a|ab)+", "(\\w+\\s?)*", "((ab)*c)+", "(x+x+)+y", "(a|a?)+"],
)
def test_catastrophic_regexes_are_rejected(regex: str) -> None:
    assert regex_problem(regex) is not None
    with pytest.raises(BadRequestData, match="regular expression rejected"):
        q(f"name~={json.dumps(regex)}")


@pytest.mark.parametrize(
    "regex", ["(a)\\1", "(?P<x>a)(?P=x)", "[", "(", "a{2,1}", "[[a]", "[a--b]", "[a&&b]", "[x||y]"]
)
def test_backreferences_and_invalid_regexes_are_rejected(regex: str) -> None:
    with pytest.raises(BadRequestData, match="regular expression"):
        q(f"name~={json.dumps(regex)}")


@pytest.mark.parametrize(
    "regex",
    [
        "^Eiffel",
        "(foo|bar)+",
        "\\d{3}-\\d{4}",
        "(?i)^pisa",
        "[a-z]+@[a-z]+\\.com",
        "(ab)+",
        "a{2,3}",
        "(a+)?b",
        "(?:x|y)*z",
        "^(\\w+) (\\w+)$",
    ],
)
def test_ordinary_regexes_are_accepted(regex: str) -> None:
    assert regex_problem(regex) is None
    assert q(f"name~={json.dumps(regex)}") == Pattern(path("name"), regex)


# --------------------------------------------------------------------------- expandValues


def test_expand_values_expands_string_values_of_named_attributes() -> None:
    assert q("category==commercial", expand_values=["category"]) == Comparison(
        path("category"), Op.EQ, Scalar(ValueKind.URI, EX + "commercial")
    )
    assert q("category==commercial") == Comparison(path("category"), Op.EQ, text("commercial"))
    listed = q('category=="shop",office', expand_values=["category"])
    assert isinstance(listed, Comparison)
    assert listed.value == ValueList(
        (Scalar(ValueKind.URI, EX + "shop"), Scalar(ValueKind.URI, EX + "office"))
    )
    # other attributes and non-string values are left alone
    assert q("other==commercial;category==3", expand_values=["category"]) == And(
        (
            Comparison(path("other"), Op.EQ, text("commercial")),
            Comparison(path("category"), Op.EQ, num(3)),
        )
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("speed=5", "unknown operator"),
        ("speed=<5", "unknown operator"),
        ("speed>", "expected a value"),
        ("(speed>5", "expected ')'"),
        ("speed>5)", "unexpected ')'"),
        ("a;;b", "expected a name"),
        ("a|", "expected a name"),
        (";a", "expected a name"),
        ("()", "expected a name"),
        ("airQualityLevel>4..5", "cannot take a range or list"),
        ("a<1,2", "cannot take a range or list"),
        ("a==1..2,3", "cannot contain ranges"),
        ("a==1,2..3", "cannot contain ranges"),
        ("a==1..", "expected a value"),
        ("a==..2", "expected a value"),
        ('a==1.."z"', "same type"),
        ("a==x..y", "range bounds"),
        ('a=="x"..y', "range bounds"),
        ("a==true..false", "range bounds"),
        ("a>true", "needs a number"),
        ("a>urn:x:y", "needs a number"),
        ("a>word", "needs a number"),
        ("a==12abc", "invalid value"),
        ("a==1e999", "invalid value"),
        ('a=="open', "unterminated string"),
        ('a=="bad\\q"', "invalid string"),
        ("!a>5", "only negates"),
        ("a{b", "expected '}'"),
        ("a{}", "expected a name"),
        ("a{B,C}", "followed by ':'"),
        ("a[]", "expected a key"),
        ("a[x", "expected '.' or ']'"),
        ('a["x"]==1', "expected a key"),
        ("a~=", "expected a regular expression"),
        ("a.==1", "expected a name"),
    ],
)
def test_malformed_queries_raise_invalid_request(source: str, message: str) -> None:
    with pytest.raises(BadRequestData, match=re.escape(message)):
        q(source)


@pytest.mark.parametrize(
    "source",
    [
        "spe<ed",
        "spe>ed==1",
        '"name"==1',
        "name'==1",
        "na=me==1",
        "(name)x",
        "1abc==1",
        "_x==1",
        "a b==1",
        "sp-eed>5",
        "na#me",
        "na me",
        "név==1;a?b",
    ],
)
def test_forbidden_characters_in_attribute_names(source: str) -> None:
    with pytest.raises(BadRequestData):
        q(source)


def test_unicode_letters_are_valid_names() -> None:
    assert q("név==1") == Comparison(path("név"), Op.EQ, num(1))


def test_error_detail_names_the_column() -> None:
    with pytest.raises(BadRequestData) as info:
        q("speed>5;name=x")
    assert info.value.detail.startswith("q: ")
    assert "column 13" in info.value.detail
    with pytest.raises(BadRequestData) as info:
        q('a=="x",')
    assert "column 8" in info.value.detail


def test_length_cap() -> None:
    long_ok = ";".join(["a"] * (MAX_LENGTH // 2))
    assert isinstance(q(long_ok), And)
    with pytest.raises(BadRequestData, match="longer than"):
        q("a" * (MAX_LENGTH + 1))


def test_depth_cap() -> None:
    assert q("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH) == Exists(path("a"))
    with pytest.raises(BadRequestData, match="nested deeper"):
        q("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    deep_link = "a{" * (MAX_DEPTH + 1) + "b" + "}" * (MAX_DEPTH + 1)
    with pytest.raises(BadRequestData, match="nested deeper"):
        q(deep_link)


def test_random_input_only_ever_raises_invalid_request() -> None:
    rng = random.Random(20240101)
    alphabet = 'ab1._:;|()[]{}"\\=!<>~,*+#/ -eTZ^$?'
    parsers = (
        lambda s: parse_q(s, expand),
        parse_scope_q,
        lambda s: parse_type_expr(s, expand),
    )
    for _ in range(3000):
        source = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        for parse in parsers:
            try:
                parse(source)
            except BadRequestData:
                pass


def test_non_string_input_is_rejected() -> None:
    with pytest.raises(BadRequestData):
        parse_q(None, expand)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- trees


def test_trees_are_frozen_and_hashable() -> None:
    first, second = q("a>1;b==2020-01-01"), q("a>1;b==2020-01-01")
    assert first == second and hash(first) == hash(second)
    assert isinstance(first, And)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.children = ()  # type: ignore[misc]


# --------------------------------------------------------------------------- type


def test_type_expression_forms() -> None:
    building, house = TypeName(EX + "Building"), TypeName(EX + "House")
    assert parse_type_expr("Building", expand) == building
    assert parse_type_expr("Building|House", expand) == TypeOr((building, house))
    assert parse_type_expr("Building,House", expand) == TypeOr((building, house))
    assert parse_type_expr("(Home;Vehicle)", expand) == TypeAnd(
        (TypeName(EX + "Home"), TypeName(EX + "Vehicle"))
    )
    assert parse_type_expr("(Home;Vehicle)|Motorhome", expand) == TypeOr(
        (TypeAnd((TypeName(EX + "Home"), TypeName(EX + "Vehicle"))), TypeName(EX + "Motorhome"))
    )
    assert parse_type_expr("a|b;c", expand) == TypeOr(
        (TypeName(EX + "a"), TypeAnd((TypeName(EX + "b"), TypeName(EX + "c"))))
    )


def test_type_expression_accepts_iris_and_wildcard() -> None:
    iri = "https://ngsi-ld-test-suite/context#Building"
    assert parse_type_expr(iri, expand) == TypeName(iri)
    assert parse_type_expr("schema:Place", expand) == TypeName("schema:Place")
    assert parse_type_expr("*", expand) == TypeAny()


@pytest.mark.parametrize(
    "source", ["", "Building|", "(Building", "Build-ing", "Building)", "a,,b", "1Building", "a*"]
)
def test_bad_type_expressions(source: str) -> None:
    with pytest.raises(BadRequestData):
        parse_type_expr(source, expand)


# --------------------------------------------------------------------------- scopeQ


def test_scope_query_forms() -> None:
    madrid = ScopeTerm(("Madrid", "Gardens", "ParqueNorte"))
    assert parse_scope_q("/Madrid/Gardens/ParqueNorte") == madrid
    assert parse_scope_q("/Madrid/+/ParqueNorte") == ScopeTerm(("Madrid", "+", "ParqueNorte"))
    assert parse_scope_q("/CompanyA/#") == ScopeTerm(("CompanyA",), descendants=True)
    assert parse_scope_q("/#") == ScopeTerm((), descendants=True)
    assert parse_scope_q("/A;/B") == ScopeAnd((ScopeTerm(("A",)), ScopeTerm(("B",))))
    assert parse_scope_q("/A,/B") == ScopeOr((ScopeTerm(("A",)), ScopeTerm(("B",))))
    assert parse_scope_q("(/Madrid/Districts;/CompanyA)|CompanyB") == ScopeOr(
        (
            ScopeAnd((ScopeTerm(("Madrid", "Districts")), ScopeTerm(("CompanyA",)))),
            ScopeTerm(("CompanyB",)),
        )
    )


@pytest.mark.parametrize(
    "source",
    ["", "/", "//a", "/a/", "/a/#/b", "/a+b", "/a b", "(/a", "/a)", "/a;", "#", "/a-b", "/a|"],
)
def test_bad_scope_queries(source: str) -> None:
    with pytest.raises(BadRequestData):
        parse_scope_q(source)
