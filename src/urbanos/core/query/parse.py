"""Parsers for ``q`` (ETSI GS CIM 009 clause 4.9), ``type`` (4.17) and ``scopeQ`` (4.19).

Each parser is a small recursive descent over the text, producing the trees of ``ast.py``.
Errors raise :class:`urbanos.errors.BadRequestData` naming what was expected and the
1-based column. Inputs are capped (``MAX_LENGTH`` characters, ``MAX_DEPTH`` nested
parentheses or braces) so a hostile query costs little to reject.

The q grammar accepted, in ABNF-like notation (spaces are tolerated around operators,
parentheses and list commas, never inside paths or bare values)::

    q           = or-expr
    or-expr     = and-expr *("|" and-expr)
    and-expr    = unary *(";" unary)               ; ";" binds tighter than "|"
    unary       = "(" or-expr ")" / "!" path / term
    term        = path [ operator value / pattern-op regex ]
    path        = name "{" linked "}"
                / name *("." name) ["[" key *("." key) "]"]
    linked      = [ name *("," name) ":" ] path     ; entity type hints, then a path
    name        = letter *(letter / digit / "_") [":" letter *(letter / digit / "_")]
    key         = 1*(any char but . [ ] ( ) { } ; | " ' = < > ! ~ and spaces)
    operator    = "==" / "!=" / ">=" / ">" / "<=" / "<"
    pattern-op  = "~=" / "!~="
    value       = scalar ".." scalar                ; range, with == and != only
                / scalar 1*("," scalar)             ; list, with == and != only
                / scalar
    scalar      = quoted-string / number / "true" / "false"
                / dateTime / date / time / URI / bare-term
    regex       = quoted-string / raw-regex         ; raw: up to ";" "|" or an unmatched ")"
    quoted-string = a JSON string (RFC 8259), escapes included

Names are letters, digits and ``_`` starting with a letter, optionally ``prefix:name``
(clause 4.6.2); anything else in a name is rejected. Ordering operators take one
number, quoted string, dateTime, date or time. A *bare term* (an unquoted word that is not
a number, boolean, date or URI, e.g. ``category==commercial``) is accepted as a string so
that ``expandValues`` (EXAMPLE 12) can expand it; without ``expandValues`` it compares as
the literal string. ``!attr`` (negated existence) is an extension used by the conformance
suite. In ``{...}`` a leading ``Name:`` is always read as an entity type hint.

Entity type selection (4.17); ``,`` and ``|`` are OR, ``;`` is AND (lenient: parentheses
are not required around AND), a name is a term or an absolute IRI, and ``*`` alone means
every type::

    types  = "*" / t-or
    t-or   = t-and *(("|" / ",") t-and)
    t-and  = t-unit *(";" t-unit)
    t-unit = "(" t-or ")" / name / IRI

Scope query (4.19); ``+`` matches one level, a trailing ``/#`` the scope and everything
below it, ``/#`` alone any scope; the leading ``/`` is optional (as in the spec's EXAMPLE 5)
and levels are ``1*(letter / digit / "_")``::

    scopes = s-and *(("|" / ",") s-and)
    s-and  = s-unit *(";" s-unit)
    s-unit = "(" scopes ")" / "/#" / ["/"] level *("/" level) ["/#"]
    level  = "+" / 1*(letter / digit / "_")
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import ClassVar, Generic, NoReturn, TypeVar

from urbanos.core.model import CORE_MEMBER_BY_IRI
from urbanos.core.query import ast
from urbanos.core.query.evaluate import regex_problem
from urbanos.errors import BadRequestData
from urbanos.types import Expander

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "parse_q",
    "parse_scope_q",
    "parse_type_expr",
]

MAX_LENGTH = 4096
MAX_DEPTH = 32

_NAME_RE = re.compile(r"[^\W\d_]\w*")
_KEY_RE = re.compile(r"""[^.\[\](){};|"'=<>!~\s]+""")
_BARE_RE = re.compile(r'[^;|()",\s]+')
_NUMBER_RE = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+")
_TERM_RE = re.compile(r"[^\W\d]\w*(?:[-.]\w+)*")
_SCOPE_LEVEL_RE = re.compile(r"\w+")
_TYPE_TOKEN_RE = re.compile(r"[^,;|()\s]+")

_OPERATORS: tuple[tuple[str, ast.Op | str], ...] = (
    ("!~=", "!~="),
    ("~=", "~="),
    ("==", ast.Op.EQ),
    ("!=", ast.Op.NE),
    (">=", ast.Op.GE),
    ("<=", ast.Op.LE),
    (">", ast.Op.GT),
    ("<", ast.Op.LT),
)
_COMPARABLE = frozenset({ast.ValueKind.NUMBER, ast.ValueKind.DATETIME, ast.ValueKind.DATE, ast.ValueKind.TIME})


def _classify(token: str) -> ast.Scalar | None:
    """The typed literal an unquoted token denotes, or None if it is not one."""
    if token == "true" or token == "false":
        return ast.Scalar(ast.ValueKind.BOOLEAN, token == "true")
    if _NUMBER_RE.fullmatch(token):
        number = float(token) if any(c in token for c in ".eE") else int(token)
        if number in (float("inf"), float("-inf")):
            return None
        return ast.Scalar(ast.ValueKind.NUMBER, number)
    if (dt := ast.parse_datetime(token)) is not None:
        return ast.Scalar(ast.ValueKind.DATETIME, dt)
    if (d := ast.parse_date(token)) is not None:
        return ast.Scalar(ast.ValueKind.DATE, d)
    if (t := ast.parse_time(token)) is not None:
        return ast.Scalar(ast.ValueKind.TIME, t)
    if _URI_RE.fullmatch(token):
        return ast.Scalar(ast.ValueKind.URI, token)
    if _TERM_RE.fullmatch(token):
        return ast.Scalar(ast.ValueKind.STRING, token)
    return None


# --------------------------------------------------------------------------- shared cursor


class _Cursor:
    """Position over the text plus the error helper every parser shares."""

    __slots__ = ("label", "pos", "text")

    def __init__(self, text: str, label: str) -> None:
        if not isinstance(text, str):
            raise BadRequestData(f"{label}: expected a string")
        if len(text) > MAX_LENGTH:
            raise BadRequestData(f"{label}: longer than {MAX_LENGTH} characters")
        if not text.strip():
            raise BadRequestData(f"{label}: empty expression")
        self.text = text
        self.pos = 0
        self.label = label

    def fail(self, message: str, pos: int | None = None) -> NoReturn:
        column = (self.pos if pos is None else pos) + 1
        raise BadRequestData(f"{self.label}: {message} at column {column}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def skip_ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        self.pos = pos

    def next_char(self) -> str:
        self.skip_ws()
        return self.peek()

    def expect(self, token: str) -> None:
        self.skip_ws()
        if not self.at(token):
            self.fail(f"expected '{token}', found {self.describe()}")
        self.pos += len(token)

    def describe(self) -> str:
        return f"'{self.peek()}'" if self.pos < len(self.text) else "end of text"

    def finish(self) -> None:
        self.skip_ws()
        if self.pos < len(self.text):
            self.fail(f"unexpected {self.describe()}")

    def check_depth(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(f"nested deeper than {MAX_DEPTH} levels")

    def match(self, pattern: re.Pattern[str]) -> str | None:
        m = pattern.match(self.text, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    def name(self, *, allow_prefix: bool) -> str:
        """An attribute or type name (clause 4.6.2), optionally ``prefix:name``."""
        start = self.pos
        word = self.match(_NAME_RE)
        if word is None:
            self.fail(f"expected a name, found {self.describe()}")
        if allow_prefix and self.at(":"):
            m = _NAME_RE.match(self.text, self.pos + 1)
            if m is not None:
                self.pos = m.end()
        return self.text[start : self.pos]


# --------------------------------------------------------------------------- q


N = TypeVar("N")


class _Logic(_Cursor, Generic[N]):
    """``a;b|c`` over the operands of one language: ``;`` (and) binds tighter than the
    ``ORS`` (or), and a parenthesized expression is an operand one level deeper."""

    __slots__ = ()
    ORS: ClassVar[tuple[str, ...]] = ("|",)

    def any_of(self, children: list[N]) -> N:
        raise NotImplementedError

    def all_of(self, children: list[N]) -> N:
        raise NotImplementedError

    def operand(self, depth: int) -> N:
        """One operand that is not in parentheses."""
        raise NotImplementedError

    def or_expr(self, depth: int) -> N:
        children = [self.and_expr(depth)]
        while self.next_char() in self.ORS:
            self.pos += 1
            children.append(self.and_expr(depth))
        return self.any_of(children)

    def and_expr(self, depth: int) -> N:
        children = [self.unary(depth)]
        while self.next_char() == ";":
            self.pos += 1
            children.append(self.unary(depth))
        return self.all_of(children)

    def unary(self, depth: int) -> N:
        self.skip_ws()
        if self.at("("):
            self.check_depth(depth + 1)
            self.pos += 1
            expr = self.or_expr(depth + 1)
            self.expect(")")
            return expr
        return self.operand(depth)


def parse_q(text: str, expand: Expander, *, expand_values: Collection[str] = ()) -> ast.QExpr:
    """Parse an NGSI-LD query (clause 4.9) into a tree with expanded names.

    ``expand_values`` are the compact attribute names of the ``expandValues`` parameter:
    string values compared with those attributes are expanded with ``expand`` as well.
    """
    parser = _QParser(text, expand, frozenset(expand(n) for n in expand_values))
    expr = parser.or_expr(0)
    parser.finish()
    return expr


class _QParser(_Logic[ast.QExpr]):
    __slots__ = ("expand", "expand_values")

    def __init__(self, text: str, expand: Expander, expand_values: frozenset[str]) -> None:
        super().__init__(text, "q")
        self.expand = expand
        self.expand_values = expand_values

    def any_of(self, children: list[ast.QExpr]) -> ast.QExpr:
        return _combine(ast.Or, children)

    def all_of(self, children: list[ast.QExpr]) -> ast.QExpr:
        return _combine(ast.And, children)

    def operand(self, depth: int) -> ast.QExpr:
        if self.at("!"):
            self.pos += 1
            path = self.path(depth)
            self.skip_ws()
            if self.peek() in ("=", "!", "~", "<", ">"):
                self.fail("'!' only negates an attribute existence test")
            return ast.Not(ast.Exists(path))
        return self.term(depth)

    def term(self, depth: int) -> ast.QExpr:
        path = self.path(depth)
        self.skip_ws()
        start = self.pos
        op = self.operator()
        if op is None:
            return ast.Exists(path)
        if op == "~=" or op == "!~=":
            return ast.Pattern(path, self.regex(), negated=op == "!~=")
        assert isinstance(op, ast.Op)
        return ast.Comparison(path, op, self.value(op, path, start))

    def operator(self) -> ast.Op | str | None:
        for token, op in _OPERATORS:
            if self.at(token):
                self.pos += len(token)
                return op
        if self.peek() in ("=", "!", "~", "<", ">"):
            self.fail(f"unknown operator starting with {self.describe()}")
        return None

    # ---- paths

    def attr_iri(self, name: str) -> str:
        iri = self.expand(name)
        return CORE_MEMBER_BY_IRI.get(iri, iri)

    def path(self, depth: int, first: str | None = None) -> ast.AttrPath:
        if first is None:
            first = self.name(allow_prefix=True)
        attr = self.attr_iri(first)
        if self.at("{"):
            self.check_depth(depth + 1)
            self.pos += 1
            linked = self.linked(depth + 1)
            self.expect("}")
            return ast.AttrPath(attr, linked=linked)
        sub: list[str] = []
        while self.at(".") and not self.at(".."):
            self.pos += 1
            sub.append(self.attr_iri(self.name(allow_prefix=True)))
        keys: list[str] = []
        if self.at("["):
            self.pos += 1
            while True:
                key = self.match(_KEY_RE)
                if key is None:
                    self.fail(f"expected a key inside '[...]', found {self.describe()}")
                keys.append(key)
                if not self.at("."):
                    break
                self.pos += 1
            if not self.at("]"):
                self.fail(f"expected '.' or ']', found {self.describe()}")
            self.pos += 1
        return ast.AttrPath(attr, tuple(sub), tuple(keys))

    def linked(self, depth: int) -> ast.Linked:
        names = [self.name(allow_prefix=False)]
        while self.at(","):
            self.pos += 1
            names.append(self.name(allow_prefix=False))
        if self.at(":"):
            self.pos += 1
            types = tuple(self.expand(n) for n in names)
            return ast.Linked(types, self.path(depth))
        if len(names) > 1:
            self.fail("entity type hints must be followed by ':' and an attribute")
        return ast.Linked((), self.path(depth, names[0]))

    # ---- values

    def value(self, op: ast.Op, path: ast.AttrPath, op_pos: int) -> ast.QValue:
        self.skip_ws()
        first, bare = self.scalar()
        self.skip_ws()
        value: ast.QValue
        if self.at(".."):
            self.pos += 2
            second, second_bare = self.scalar()
            for item, is_bare in ((first, bare), (second, second_bare)):
                if is_bare or item.kind not in _COMPARABLE | {ast.ValueKind.STRING}:
                    self.fail("range bounds must be numbers, quoted strings or dates/times")
            if _family(first.kind) != _family(second.kind):
                self.fail("range bounds must be of the same type")
            value = ast.Range(first, second)
            if self.next_char() == ",":
                self.fail("a value list cannot contain ranges")
        elif self.at(","):
            items = [first]
            while self.at(","):
                self.pos += 1
                self.skip_ws()
                items.append(self.scalar()[0])
                if self.at(".."):
                    self.fail("a value list cannot contain ranges")
                self.skip_ws()
            value = ast.ValueList(tuple(items))
        else:
            value = first
            if op in ast.ORDERING_OPS and (bare or first.kind not in _COMPARABLE | {ast.ValueKind.STRING}):
                self.fail(
                    f"'{op.value}' needs a number, quoted string, dateTime, date or time",
                    op_pos,
                )
        if op in ast.ORDERING_OPS and not isinstance(value, ast.Scalar):
            self.fail(f"'{op.value}' cannot take a range or list; use '==' or '!='", op_pos)
        target = path
        while target.linked is not None:
            target = target.linked.path
        if target.attr in self.expand_values:
            value = _expand_value(value, self.expand)
        return value

    def scalar(self) -> tuple[ast.Scalar, bool]:
        """One literal and whether it was a bare (unquoted, untyped) term."""
        start = self.pos
        if self.at('"'):
            return ast.Scalar(ast.ValueKind.STRING, self.quoted()), False
        token = self.match(_BARE_RE)
        if token is None:
            self.fail(f"expected a value, found {self.describe()}")
        cut = token.find("..")
        if cut == 0:
            self.fail("expected a value before '..'", start)
        if cut > 0:
            head = _classify(token[:cut])
            if head is not None and head.kind is not ast.ValueKind.URI:  # URIs may hold ".."
                self.pos = start + cut
                return head, head.kind is ast.ValueKind.STRING
        scalar = _classify(token)
        if scalar is None:
            self.fail(f"invalid value '{token}'", start)
        return scalar, scalar.kind is ast.ValueKind.STRING

    def quoted(self) -> str:
        start, text, i = self.pos, self.text, self.pos + 1
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
            elif c == '"':
                break
            else:
                i += 1
        else:
            self.fail("unterminated string", start)
        try:
            value = json.loads(text[start : i + 1])
        except ValueError:
            self.fail("invalid string (bad escape or control character)", start)
        self.pos = i + 1
        assert isinstance(value, str)
        return value

    def regex(self) -> str:
        self.skip_ws()
        start = self.pos
        if self.at('"'):
            pattern = self.quoted()
        else:
            text, i, depth, in_class = self.text, self.pos, 0, False
            while i < len(text):
                c = text[i]
                if c == "\\":
                    i += 2
                    continue
                if in_class:
                    in_class = c != "]"
                elif c == "[":
                    in_class = True
                    i += 1
                    i += text.startswith("^", i)
                    i += text.startswith("]", i)  # a leading ']' is a literal
                    continue
                elif c == "(":
                    depth += 1
                elif c == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif c in ";|" and depth == 0:
                    break
                i += 1
            pattern = text[start : min(i, len(text))]
            self.pos = min(i, len(text))
        if not pattern:
            self.fail("expected a regular expression", start)
        problem = regex_problem(pattern)
        if problem is not None:
            self.fail(f"regular expression rejected: {problem}", start)
        return pattern


def _combine(cls: type[ast.And] | type[ast.Or], children: list[ast.QExpr]) -> ast.QExpr:
    """One child stays itself; nested nodes of the same kind are flattened."""
    if len(children) == 1:
        return children[0]
    flat: list[ast.QExpr] = []
    for child in children:
        if isinstance(child, cls):
            flat.extend(child.children)
        else:
            flat.append(child)
    return cls(tuple(flat))


def _family(kind: ast.ValueKind) -> ast.ValueKind:
    return ast.ValueKind.STRING if kind is ast.ValueKind.URI else kind


def _expand_value(value: ast.QValue, expand: Expander) -> ast.QValue:
    def one(s: ast.Scalar) -> ast.Scalar:
        if s.kind in (ast.ValueKind.STRING, ast.ValueKind.URI):
            assert isinstance(s.value, str)
            return ast.Scalar(ast.ValueKind.URI, expand(s.value))
        return s

    if isinstance(value, ast.Scalar):
        return one(value)
    if isinstance(value, ast.ValueList):
        return ast.ValueList(tuple(one(s) for s in value.items))
    return ast.Range(one(value.low), one(value.high))


# --------------------------------------------------------------------------- type


def parse_type_expr(text: str, expand: Expander) -> ast.TypeExpr:
    """Parse an entity type selection (clause 4.17) with every name expanded."""
    parser = _TypeParser(text, expand)
    if text.strip() == "*":
        return ast.TypeAny()
    expr = parser.or_expr(0)
    parser.finish()
    return expr


class _TypeParser(_Logic[ast.TypeExpr]):
    __slots__ = ("expand",)
    ORS = ("|", ",")

    def __init__(self, text: str, expand: Expander) -> None:
        super().__init__(text, "type")
        self.expand = expand

    def any_of(self, children: list[ast.TypeExpr]) -> ast.TypeExpr:
        return children[0] if len(children) == 1 else ast.TypeOr(tuple(children))

    def all_of(self, children: list[ast.TypeExpr]) -> ast.TypeExpr:
        return children[0] if len(children) == 1 else ast.TypeAnd(tuple(children))

    def operand(self, depth: int) -> ast.TypeExpr:
        start = self.pos
        token = self.match(_TYPE_TOKEN_RE)
        if token is None:
            self.fail(f"expected an entity type, found {self.describe()}")
        m = _NAME_RE.fullmatch(token)
        if m is None and not _is_type_iri(token):
            self.fail(f"invalid entity type '{token}'", start)
        return ast.TypeName(self.expand(token))


def _is_type_iri(token: str) -> bool:
    """An absolute IRI or a ``prefix:name`` compact IRI."""
    prefix, sep, rest = token.partition(":")
    if sep and _NAME_RE.fullmatch(prefix) and _NAME_RE.fullmatch(rest):
        return True
    return _URI_RE.fullmatch(token) is not None


# --------------------------------------------------------------------------- scopeQ


def parse_scope_q(text: str) -> ast.ScopeExpr:
    """Parse a scope query (clause 4.19)."""
    parser = _ScopeParser(text, "scopeQ")
    expr = parser.or_expr(0)
    parser.finish()
    return expr


class _ScopeParser(_Logic[ast.ScopeExpr]):
    __slots__ = ()
    ORS = ("|", ",")

    def any_of(self, children: list[ast.ScopeExpr]) -> ast.ScopeExpr:
        return children[0] if len(children) == 1 else ast.ScopeOr(tuple(children))

    def all_of(self, children: list[ast.ScopeExpr]) -> ast.ScopeExpr:
        return children[0] if len(children) == 1 else ast.ScopeAnd(tuple(children))

    def operand(self, depth: int) -> ast.ScopeExpr:
        if self.at("/#"):
            self.pos += 2
            return ast.ScopeTerm((), descendants=True)
        if self.at("/"):
            self.pos += 1
        levels = [self.level()]
        descendants = False
        while self.at("/"):
            self.pos += 1
            if self.at("#"):
                self.pos += 1
                descendants = True
                break
            levels.append(self.level())
        return ast.ScopeTerm(tuple(levels), descendants)

    def level(self) -> str:
        if self.at("+"):
            self.pos += 1
            return "+"
        level = self.match(_SCOPE_LEVEL_RE)
        if level is None:
            self.fail(f"expected a scope level, '+' or '#', found {self.describe()}")
        return level
