"""``where`` filters on gallery metadata: one small grammar, one meaning, two translations.

A filter names the gallery's columns (``id``, ``path``, ``label`` and the extra columns of the
list CSV) and compares them with literals::

    label = 'Mallard' and (source in ('trap3', 'trap4') or date >= '2024-05-01')
    not label is null and id < 5000

Grammar (keywords ``and or not in is null`` in any case)::

    expr := or
    or   := and ("or" and)*
    and  := not ("and" not)*
    not  := "not" not | atom
    atom := "(" expr ")" | col op lit | col ["not"] "in" "(" lit ("," lit)* ")"
          | col "is" ["not"] "null"
    op   := = | != | <> | < | <= | > | >=
    lit  := 'single-quoted' ('' inside for a quote) | number (-12, 3.5, 1e3)
    col  := [A-Za-z_][A-Za-z0-9_]*

Meaning (:func:`matches` is the reference; :func:`to_sql` and :func:`to_milvus` say the same):

* a string compares only with a string (by code point, as SQLite's BINARY collation orders
  UTF-8), a number only with a number; a type mismatch is *false*, never an error and never a
  coercion (``label = 5`` does not match the label ``'5'``);
* a null (absent) value makes every comparison *unknown*, as in SQL: ``not`` of unknown is
  unknown, ``and``/``or`` follow SQL's three-valued logic, and a row is kept only when the whole
  filter is TRUE (SQL's ``WHERE``). So ``not source = 'x'`` keeps neither rows whose source is
  ``'x'`` nor rows without a source; ``source is null`` finds the latter.

Values never reach query text unescaped: :func:`to_sql` passes them as ``?`` parameters and
:func:`to_milvus` writes them as escaped literals; column names are checked against the
gallery's columns first.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "And", "Compare", "Filter", "FilterError", "In", "IsNull", "Not", "Or",
    "matches", "milvus_fields", "milvus_literal", "parse", "to_milvus", "to_sql",
]

Value = str | int | float
OPS = ("=", "!=", "<>", "<", "<=", ">", ">=")
KEYWORDS = ("and", "or", "not", "in", "is", "null")
_INT64 = (-(2**63), 2**63 - 1)
COLUMN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class FilterError(ValueError):
    """A filter that does not parse or names an unknown column; says where and what was expected."""

    def __init__(self, message: str, text: str = "", pos: int | None = None) -> None:
        self.text, self.pos = text, pos
        if pos is not None:
            message = f"{message} at position {pos}" + (f": {text[:pos]}<here>{text[pos:]}" if text else "")
        super().__init__(message)


# --- the tree ------------------------------------------------------------------------------

class Filter:
    """A parsed filter: one of :class:`Compare`, :class:`In`, :class:`IsNull`, :class:`Not`,
    :class:`And`, :class:`Or`."""

    def columns(self) -> set[str]:
        """The column names this filter mentions."""
        return {a.col for a in _atoms(self)}


@dataclass(frozen=True)
class Compare(Filter):
    """``col op value``."""

    col: str
    op: str  # one of OPS, ``<>`` normalised to ``!=``
    value: Value
    pos: int = field(default=0, compare=False)  # where it starts in the text, for errors


@dataclass(frozen=True)
class In(Filter):
    """``col [not] in (values)``."""

    col: str
    values: tuple[Value, ...]
    negated: bool = False
    pos: int = field(default=0, compare=False)  # where it starts in the text, for errors


@dataclass(frozen=True)
class IsNull(Filter):
    """``col is [not] null``."""

    col: str
    negated: bool = False
    pos: int = field(default=0, compare=False)  # where it starts in the text, for errors


@dataclass(frozen=True)
class Not(Filter):
    """``not x``."""

    arg: Filter


@dataclass(frozen=True)
class And(Filter):
    """``a and b and ...``."""

    args: tuple[Filter, ...]


@dataclass(frozen=True)
class Or(Filter):
    """``a or b or ...``."""

    args: tuple[Filter, ...]



# --- parsing -------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
""", re.VERBOSE)


@dataclass(frozen=True)
class _Tok:
    kind: str  # str num name op punct end
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            hint = " (strings take single quotes)" if text[pos] == '"' else ""
            if text[pos] == "'":
                raise FilterError("unterminated string (close it with ')", text, pos)
            raise FilterError(f"unexpected character {text[pos]!r}{hint}", text, pos)
        if m.lastgroup != "ws":
            out.append(_Tok(m.lastgroup, m.group(), pos))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


class _Parser:
    """Recursive descent over the grammar in the module docstring."""

    def __init__(self, text: str) -> None:
        self.text, self.toks, self.i = text, _tokens(text), 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def fail(self, expected: str) -> FilterError:
        got = "the end of the filter" if self.tok.kind == "end" else repr(self.tok.text)
        return FilterError(f"expected {expected}, got {got}", self.text, self.tok.pos)

    def keyword(self, word: str) -> bool:
        if self.tok.kind == "name" and self.tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def punct(self, ch: str) -> bool:
        if self.tok.kind == "punct" and self.tok.text == ch:
            self.i += 1
            return True
        return False

    def parse(self) -> Filter:
        if self.tok.kind == "end":
            raise self.fail("a condition such as label = 'x'")
        f = self.or_()
        if self.tok.kind != "end":
            raise self.fail("'and', 'or' or the end of the filter")
        return f

    def or_(self) -> Filter:
        args = [self.and_()]
        while self.keyword("or"):
            args.append(self.and_())
        return args[0] if len(args) == 1 else Or(tuple(args))

    def and_(self) -> Filter:
        args = [self.not_()]
        while self.keyword("and"):
            args.append(self.not_())
        return args[0] if len(args) == 1 else And(tuple(args))

    def not_(self) -> Filter:
        if self.keyword("not"):
            return Not(self.not_())
        return self.atom()

    def atom(self) -> Filter:
        if self.punct("("):
            f = self.or_()
            if not self.punct(")"):
                raise self.fail("')'")
            return f
        tok = self.tok
        if tok.kind != "name" or tok.text.lower() in KEYWORDS:
            raise self.fail("a column name or '('")
        self.i += 1
        if self.tok.kind == "op":
            op = "!=" if self.tok.text == "<>" else self.tok.text
            self.i += 1
            return Compare(tok.text, op, self.literal(), tok.pos)
        if self.keyword("is"):
            negated = self.keyword("not")
            if not self.keyword("null"):
                raise self.fail("'null'" if negated else "'null' or 'not null'")
            return IsNull(tok.text, negated, tok.pos)
        negated = self.keyword("not")
        if not self.keyword("in"):
            raise self.fail("'in'" if negated else "an operator (= != <> < <= > >=), 'in', 'not in' or 'is'")
        return In(tok.text, self.literal_list(), negated, tok.pos)

    def literal_list(self) -> tuple[Value, ...]:
        if not self.punct("("):
            raise self.fail("'(' opening the list of values")
        values = [self.literal()]
        while self.punct(","):
            values.append(self.literal())
        if not self.punct(")"):
            raise self.fail("',' or ')'")
        return tuple(values)

    def literal(self) -> Value:
        tok = self.tok
        if tok.kind == "str":
            self.i += 1
            return tok.text[1:-1].replace("''", "'")
        if tok.kind != "num":
            raise self.fail("a value: a 'quoted string' or a number")
        self.i += 1
        if re.fullmatch(r"-?\d+", tok.text):
            v: Value = int(tok.text)
            if not _INT64[0] <= v <= _INT64[1]:
                raise FilterError("integer out of the 64-bit range", self.text, tok.pos)
            return v
        v = float(tok.text)
        if not math.isfinite(v):
            raise FilterError("number out of range", self.text, tok.pos)
        return v


def parse(text: str) -> Filter:
    """Parse a filter (grammar in the module docstring).

    Raises:
        FilterError: naming the position and what was expected there.
    """
    if not isinstance(text, str):
        raise FilterError(f"a filter is a string, got {type(text).__name__}")
    return _Parser(text).parse()


def check_columns(f: Filter, columns_: Sequence[str], text: str = "") -> None:
    """Raise :class:`FilterError` for a column of ``f`` the gallery does not have."""
    known = set(columns_)
    for node in _atoms(f):
        if node.col not in known:
            raise FilterError(f"unknown column {node.col!r} (this gallery has: {', '.join(columns_)})",
                              text, node.pos if text else None)


def _atoms(f: Filter) -> list[Compare | In | IsNull]:
    if isinstance(f, (Compare, In, IsNull)):
        return [f]
    if isinstance(f, Not):
        return _atoms(f.arg)
    return [a for x in f.args for a in _atoms(x)]


# --- the reference meaning -----------------------------------------------------------------

def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same_type(a: object, b: object) -> bool:
    return (isinstance(a, str) and isinstance(b, str)) or (_is_num(a) and _is_num(b))


_CMP = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _truth(f: Filter, row: Mapping) -> bool | None:
    """SQL's three-valued truth of ``f`` on ``row``: True, False or None (unknown)."""
    if isinstance(f, IsNull):
        return (row.get(f.col) is None) != f.negated
    if isinstance(f, Compare):
        v = row.get(f.col)
        if v is None:
            return None
        return _same_type(v, f.value) and _CMP[f.op](v, f.value)
    if isinstance(f, In):
        v = row.get(f.col)
        if v is None:
            return None
        return any(_same_type(v, x) and v == x for x in f.values) != f.negated
    if isinstance(f, Not):
        t = _truth(f.arg, row)
        return None if t is None else not t
    vals = [_truth(a, row) for a in f.args]
    decisive = isinstance(f, Or)  # True decides an or, False an and
    if decisive in vals:
        return decisive
    return None if None in vals else not decisive


def matches(f: Filter, row: Mapping) -> bool:
    """Whether ``row`` (column -> value; absent = null) is kept by ``f`` (only when TRUE)."""
    return _truth(f, row) is True


# --- SQLite --------------------------------------------------------------------------------

def _qcol(col: str) -> str:
    return '"' + col + '"'  # safe: names match COLUMN_RE and were checked against the table's


def _sql_typed(col: str, by_type: dict[str, str], params: list, values: dict[str, list]) -> str:
    """A CASE giving NULL for a null value, the per-type test for a value of that type, else 0."""
    c = _qcol(col)
    parts = [f"WHEN {c} IS NULL THEN NULL"]
    for types, kind in (("'text'", "str"), ("'integer', 'real'", "num")):
        parts.append(f"WHEN typeof({c}) IN ({types}) THEN {by_type[kind] if kind in by_type else '0'}")
        params.extend(values.get(kind, []))
    return "(CASE " + " ".join(parts) + " ELSE 0 END)"


def _sql(f: Filter, params: list) -> str:
    if isinstance(f, IsNull):
        return f"({_qcol(f.col)} IS {'NOT ' if f.negated else ''}NULL)"
    if isinstance(f, Compare):
        kind = "str" if isinstance(f.value, str) else "num"
        return _sql_typed(f.col, {kind: f"{_qcol(f.col)} {f.op} ?"}, params, {kind: [f.value]})
    if isinstance(f, In):
        values: dict[str, list] = {}
        for v in f.values:
            values.setdefault("str" if isinstance(v, str) else "num", []).append(v)
        tests = {k: f"{_qcol(f.col)} IN ({', '.join('?' * len(vs))})" for k, vs in values.items()}
        body = _sql_typed(f.col, tests, params, values)
        return f"(NOT {body})" if f.negated else body
    if isinstance(f, Not):
        return f"(NOT {_sql(f.arg, params)})"
    joiner = " AND " if isinstance(f, And) else " OR "
    return "(" + joiner.join(_sql(a, params) for a in f.args) + ")"


def to_sql(f: Filter, columns_: Sequence[str]) -> tuple[str, list]:
    """A parameterised SQLite ``WHERE`` body meaning what :func:`matches` means.

    The columns must be declared without a type (no affinity: values keep their Python types).

    Returns:
        ``(sql, params)``: the condition with ``?`` placeholders, and their values in order.

    Raises:
        FilterError: a column not in ``columns_``.
    """
    check_columns(f, columns_)
    params: list = []
    # Three-valued logic is SQLite's own; the CASE per comparison adds the type rule.
    return _sql(f, params), params


# --- Milvus --------------------------------------------------------------------------------

def milvus_fields(col: str) -> tuple[str | None, str | None]:
    """The Milvus fields holding column ``col``: ``(string field, integer field)``.

    Every column but ``id`` is stored as two nullable fields, ``s_<col>`` (VARCHAR) for string
    values and ``n_<col>`` (INT64) for integers, so a filter can tell a string from a number and
    a value from a null (Milvus expressions have no type test). ``id`` is the INT64 primary key.
    """
    if col == "id":
        return None, "id"
    return f"s_{col}", f"n_{col}"


_MILVUS_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def milvus_literal(v: Value) -> str:
    """``v`` as a Milvus expression literal (strings double-quoted and escaped)."""
    if isinstance(v, str):  # a double-quoted literal with the escapes Milvus's grammar reads
        return '"' + v.translate(_MILVUS_ESCAPES) + '"'
    return str(int(v))


def _int_bounds(op: str, v: float) -> tuple[str, int] | bool:
    """``n op v`` for an int64 ``n`` and a float ``v``: an integer comparison, or always True/False.

    The integer fields are compared with integers only: the comparison is exact and no engine's
    int/float promotion rules come into it.
    """
    if v >= 2.0**63 or v < -(2.0**63):  # beyond every int64
        below = v > 0
        return {"=": False, "!=": True, "<": below, "<=": below, ">": not below, ">=": not below}[op]
    if v == int(v):
        return op, int(v)
    if op in ("=", "!="):
        return op == "!="
    lo, hi = math.floor(v), math.ceil(v)
    return {"<": ("<=", lo), "<=": ("<=", lo), ">": (">=", hi), ">=": (">=", hi)}[op]


def _m_compare(s: str | None, n: str | None, f: Compare) -> tuple[str, str]:
    """(TRUE-expr, FALSE-expr) of a comparison."""
    op = "==" if f.op == "=" else f.op
    if isinstance(f.value, str):
        t = f"({s} is not null and {s} {op} {milvus_literal(f.value)})" if s else "false"
        f_ = (f"(({s} is not null and not ({s} {op} {milvus_literal(f.value)})) or {_present(n)})" if s
              else _present(n))
        return t, f_
    b = _int_bounds(f.op, float(f.value)) if isinstance(f.value, float) else (f.op, f.value)
    if isinstance(b, bool):
        cond = "true" if b else "false"
    else:
        cond = f"{n} {'==' if b[0] == '=' else b[0]} {b[1]}"
    t = f"({_present(n)} and {cond})"
    return t, f"(({_present(n)} and not ({cond})) or {_present(s)})"


def _present(field: str | None) -> str:
    if field is None:
        return "false"
    return "true" if field == "id" else f"{field} is not null"


def _m_in(s: str | None, n: str | None, f: In) -> tuple[str, str]:
    strs = [v for v in f.values if isinstance(v, str)]
    ints = sorted({int(v) for v in f.values  # a non-integral number never equals an int64
                   if not isinstance(v, str) and v == int(v) and _INT64[0] <= v <= _INT64[1]})
    s_hit = f"({s} is not null and {s} in [{', '.join(map(milvus_literal, strs))}])" if s and strs else "false"
    n_hit = f"({_present(n)} and {n} in [{', '.join(map(str, ints))}])" if ints else "false"
    hit = f"({s_hit} or {n_hit})"
    present = f"({_present(s)} or {_present(n)})"
    miss = f"({present} and not {hit})"
    return (miss, hit) if f.negated else (hit, miss)


def _milvus(f: Filter) -> tuple[str, str]:
    """(expression TRUE exactly when f is TRUE, expression TRUE exactly when f is FALSE).

    Carrying both makes ``not`` exact under nulls without relying on how Milvus treats them:
    ``not x`` is TRUE when x is FALSE, and unknown stays out of both.
    """
    if isinstance(f, IsNull):
        present = f"({_present(milvus_fields(f.col)[0])} or {_present(milvus_fields(f.col)[1])})"
        absent = f"(not {present})"
        return (present, absent) if f.negated else (absent, present)
    if isinstance(f, Compare):
        return _m_compare(*milvus_fields(f.col), f)
    if isinstance(f, In):
        return _m_in(*milvus_fields(f.col), f)
    if isinstance(f, Not):
        t, f_ = _milvus(f.arg)
        return f_, t
    parts = [_milvus(a) for a in f.args]
    ts, fs = [p[0] for p in parts], [p[1] for p in parts]
    if isinstance(f, And):
        return "(" + " and ".join(ts) + ")", "(" + " or ".join(fs) + ")"
    return "(" + " or ".join(ts) + ")", "(" + " and ".join(fs) + ")"


def to_milvus(f: Filter, columns_: Sequence[str]) -> str:
    """A Milvus boolean expression meaning what :func:`matches` means.

    It names the fields of :func:`milvus_fields` (the layout :mod:`dva.retrieval.milvus` writes).

    Raises:
        FilterError: a column not in ``columns_``.
    """
    check_columns(f, columns_)
    return _milvus(f)[0]
