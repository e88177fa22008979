"""Named quantities of the cub100 result files, and the prose templates of the docs that quote them.

Numbers in README.md and docs/BENCHMARKS.md are rendered from benchmarks/results by code: a notes
file is a template whose placeholders name quantities of the JSON, and a derived figure (a delta,
a gap, "behind" or "above") is an expression of those names, never a typed number:

    DVA is {mnv2.full.r1 - mnv2.dva.r1:.1f} R@1 behind the full fine-tune ({mnv2.dva.seeds} seeds)
    {assert mnv2.full.r1 > mnv2.dva.r1}{seeds_vs(vit.dva.ood_r1, vit.full.ood_r1)}

Placeholders (one line each; no ``eval``, a fixed grammar):

- ``{EXPR}`` / ``{EXPR:FORMAT}``: ``EXPR`` is a name, a number, or names and numbers joined by
  ``+ - * /`` with parentheses (a ratio: ``{a.train_ips / b.train_ips:.1f}x``); ``FORMAT`` is a
  Python format spec (default ``.1f`` for floats, ``,`` for ints).
- ``{assert EXPR OP EXPR}`` (``OP``: ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``): renders nothing and
  stops the rendering when false, so that a sentence whose words ("above", "every", "largest")
  depend on the numbers cannot outlive them.
- ``{seeds_vs(A, B)}``: where a per-seed metric ``A`` stands against ``B`` seed by seed ("in every
  seed", "in seeds 1 and 2; below it in seed 0"), from the per-seed values ``A.s0``, ``A.s1``...

Rounding rule (the renderer and tests/benchmarks/test_docs_numbers.py use the same code): every
figure is computed from the unrounded values stored in the JSON and rounded once, when it is
formatted. A delta is therefore the rounded difference of two means, which can differ by 0.1 from
the difference of the two rounded cells of a table; a rounded zero is written without a sign
flip (``+0.0``, never ``-0.0``).

Names: ``<backbone>.<row>.<metric>`` with backbone ``mnv2``, ``lite2``, ``vit`` (``pets.<backbone>``
for the pets37 open set; other prefixes as a section registers them), row ``frozen``, ``head``,
``full``, ``ica``, ``ica_opa``, ``dva``, metric ``r1``, ``map``, ``ood_r1``, ``ood_map`` (means in %),
``<metric>.sd`` (sample std), ``<metric>.s<seed>`` (one seed), ``hits.s<seed>`` / ``ood_hits.s<seed>``
(queries right), ``hits`` / ``ood_hits`` (all seeds, as "125, 117 and 120"), ``queries``,
``ood_queries``, ``seeds``, ``params``, ``pct``, ``steps``, ``boxes`` (training images with a
confident box), ``collapse_step``, ``collapse_figure`` (text); timings ``train_s``, ``train_ips``,
``wall_s``, ``embed_ips``, ``rss_mb``, ``prep_s`` (means; ``.s<seed>`` one run). Every other row
of a result (ablations, validation candidates, speed-up checks) by its own name, ``-`` and ``@``
written ``_`` (``full.dva_rank8.map``, ``lite2_val.va_ica_lr3e_3.map``). Per backbone
``<backbone>.backbone_params`` and ``<backbone>.backbone_m`` (millions), ``<prefix>.rows_min`` and
``<prefix>.seed0_rows_min`` (summed wall time of the runs, all / seed 0, minutes); per result file
``file.<stem>.min`` and ``file.<stem>.s`` (its wall time).
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ORDER = ("frozen", "head", "full", "ica", "ica_opa", "dva")
METRICS = {"r1": "recall@1", "map": "map@r", "ood_r1": "ood_recall@1", "ood_map": "ood_map@r"}
# Queries of each retrieval set (leave-one-out: every image is a query). R@1 x queries must be a
# whole number of queries: checked when hits are computed, so a wrong count cannot pass silently.
QUERIES = {"cub100": 2953, "cub100_val": 600, "pets37_ood": 370, "pets37_open": 190}
# Timings of a row, means over its runs (``<row>.wall_s``; one seed: ``<row>.wall_s.s0``).
TIMINGS = {"train_s": "train_seconds", "train_ips": "train_img_per_s", "wall_s": "wall_seconds",
           "embed_ips": "embed_img_per_s", "rss_mb": "peak_rss_mb"}
Value = float | int | str


class TemplateError(ValueError):
    """A placeholder that names no quantity, does not parse, or an assumption that is false."""


# ----------------------------------------------------------------------------- quantities
def rows_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The main rows by name (stats: mean ± std over the seeds run); a pets37 profile's ``pets_*`` rows too."""
    out = {}
    for r in result["rows"]:
        key = r["name"].removeprefix("pets_") if r["group"] == "pets37" else r["name"]
        if r["group"] in ("main", "pets37") and key in ORDER:
            out[key] = r
    return out


def row_key(row: dict[str, Any]) -> str:
    """A row's name in the templates: the main and pets37 rows as in ``ORDER`` (``pets_dva`` -> ``dva``), any
    other row by its own name with ``-`` and ``@`` written ``_`` (``va_ica_lr3e-3`` -> ``va_ica_lr3e_3``), so
    that a name never reads as a subtraction."""
    name = row["name"].removeprefix("pets_") if row["group"] == "pets37" else row["name"]
    return name.replace("-", "_").replace("@", "_")


def all_rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every row of a result by :func:`row_key` (a name kept once, the first row wins)."""
    out: dict[str, dict[str, Any]] = {}
    for r in result["rows"]:
        out.setdefault(row_key(r), r)
    return out


def row_queries(row: dict[str, Any], default: int) -> int:
    """The queries of a row's retrieval set: pets37 open set, the validation split (classes 40-49), else ``default``."""
    if row["group"] == "pets37":
        return QUERIES["pets37_open"]
    return QUERIES["cub100_val"] if row.get("eval_split") == "val" else default


def _hits(fraction: float, queries: int, where: str) -> int:
    n = fraction * queries
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"{where}: R@1 {fraction!r} x {queries} queries is not a whole number: wrong query count "
                         "in benchmarks/cub100/quantities.py QUERIES?")
    return round(n)


def join_words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _per_seed(p: str, r: dict[str, Any], queries: int, ood_queries: int | None) -> dict[str, Value]:
    """Per seed: R@1 and MAP@R (``.s0``), queries right (``hits.s0``; ``hits``: all seeds in words), timings."""
    q: dict[str, Value] = {}
    for side, n, mkey in (("", queries, "metrics"), ("ood_", ood_queries, "ood_metrics")):
        hits = []
        for run in r["runs"]:
            m = run.get(mkey)
            if not m:
                continue
            s = int(run["seed"])
            q[f"{p}.{side}r1.s{s}"], q[f"{p}.{side}map.s{s}"] = 100 * m["recall@1"], 100 * m["map@r"]
            if n:
                q[f"{p}.{side}hits.s{s}"] = _hits(m["recall@1"], n, f"{p} seed {s}")
                hits.append(str(q[f"{p}.{side}hits.s{s}"]))
        if hits:
            q[f"{p}.{side}hits"] = join_words(hits)
    for short, key in (*TIMINGS.items(), ("prep_s", "prep_seconds")):
        vals = {int(run["seed"]): run[key] for run in r["runs"] if run.get(key) is not None}
        q.update({f"{p}.{short}.s{s}": v for s, v in vals.items()})
        if vals:  # the mean over the runs that recorded it (a row's stats, where they hold it, come first)
            q[f"{p}.{short}"] = sum(vals.values()) / len(vals)
    return q


def _row_quantities(p: str, r: dict[str, Any], queries: int, ood_queries: int | None) -> dict[str, Value]:
    """The quantities of one row (prefix ``p``, e.g. ``mnv2.dva``)."""
    q: dict[str, Value] = {f"{p}.seeds": len(r["seeds"]), f"{p}.params": r["trainable_params"],
                           f"{p}.pct": r["trainable_pct"], f"{p}.steps": r["runs"][0].get("steps", 0),
                           f"{p}.queries": queries}
    if ood_queries:
        q[f"{p}.ood_queries"] = ood_queries
    if r.get("img_size"):
        q[f"{p}.img_size"] = r["img_size"]
    for short, key in METRICS.items():
        if r["stats"].get(key):
            q[f"{p}.{short}"], q[f"{p}.{short}.sd"] = r["stats"][key]
    for short, key in TIMINGS.items():
        if r["stats"].get(key):
            q[f"{p}.{short}"] = r["stats"][key][0]
    q.update({k: v for k, v in _per_seed(p, r, queries, ood_queries).items() if k not in q})
    for short in METRICS:  # the extremes over the seeds ("every seed of A beats every seed of B")
        vals = [q[f"{p}.{short}.s{s}"] for s in seed_ids(f"{p}.{short}", q)]
        if vals:
            q[f"{p}.{short}.min"], q[f"{p}.{short}.max"] = min(vals), max(vals)
    run0 = r["runs"][0]
    if run0.get("boxes") is not None:  # training images with a confident OPA box (first seed)
        q[f"{p}.boxes"] = run0["boxes"]
    if run0["params"].get("proxy_params") is not None:
        q[f"{p}.proxy_params"] = run0["params"]["proxy_params"]
    if run0.get("frozen_metrics"):  # the frozen backbone on the same evaluation set (step-0 evaluation)
        q[f"{p}.frozen_r1"], q[f"{p}.frozen_map"] = (100 * run0["frozen_metrics"][k] for k in ("recall@1", "map@r"))
    stops = [run["collapse"] for run in r["runs"] if run.get("status") == "stopped" and run.get("collapse")]
    if stops:
        q[f"{p}.collapse_step"], q[f"{p}.collapse_figure"] = stops[0]["step"], stops[0].get("figure", "")
    return q


def result_quantities(prefix: str, result: dict[str, Any], queries: int | None = None,
                      ood_queries: int | None = None) -> dict[str, Value]:
    """Every quantity of one (merged) result: its rows under ``prefix``, its files under ``file.``.

    Args:
        prefix: the name the templates use (``mnv2``, ``pets.vit``...).
        result: a result file of ``run.py``, or several merged (``render.merge_results``).
        queries: queries of its retrieval set (``QUERIES``; default cub100's test classes); pets37 and
            validation-split rows count their own (:func:`row_queries`).
        ood_queries: queries of its out-of-distribution set (default pets37's, when the result has one).

    Returns:
        name -> value: ``<prefix>.img_size``, ``.threads`` and ``.cpus`` (the machine's cores); per row
        (:func:`row_key`) its metrics, spreads, seeds, hits and timings, and
        ``<prefix>.rows_min`` / ``<prefix>.seed0_rows_min``: the wall time of every run / of the
        first seed's runs (what a one-seed profile of these rows costs), in minutes.
    """
    q: dict[str, Value] = {f"{prefix}.{k}": result["settings"][k] for k in ("img_size", "threads")
                           if result["settings"].get(k) is not None}
    if (result.get("machine") or {}).get("cpu_count"):
        q[f"{prefix}.cpus"] = result["machine"]["cpu_count"]
    ood = (ood_queries or QUERIES["pets37_ood"]) if result["settings"].get("ood") else None
    rows = all_rows(result)
    for key, r in rows.items():
        q.update(_row_quantities(f"{prefix}.{key}", r, row_queries(r, queries or QUERIES["cub100"]), ood))
    if rows:
        n = next(iter(rows.values()))["backbone_params"]
        q[f"{prefix}.backbone_params"], q[f"{prefix}.backbone_m"] = n, n / 1e6
        # An alias row (rows.yaml: aliases) holds a copy of another row's run: count each run once.
        runs = {(run.get("seed"), run.get("wall_seconds"), run.get("train_seconds")): run
                for r in rows.values() for run in r["runs"]}.values()
        q[f"{prefix}.rows_min"] = sum(run.get("wall_seconds") or 0 for run in runs) / 60
        q[f"{prefix}.seed0_rows_min"] = sum(run.get("wall_seconds") or 0 for run in runs if run.get("seed") == 0) / 60
    for src in result.get("sources") or [result]:
        if src.get("json") and src.get("wall_seconds_total"):
            q[f"file.{Path(src['json']).stem}.min"] = src["wall_seconds_total"] / 60
            q[f"file.{Path(src['json']).stem}.s"] = src["wall_seconds_total"]
        if src.get("json") and src.get("git_commit"):
            q[f"file.{Path(src['json']).stem}.commit"] = src["git_commit"][:7]
    return q


# ----------------------------------------------------------------------------- templates
_PLACEHOLDER = re.compile(r"\{([^{}\n]+)\}")
_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][\w.]*)|(?P<op>[-+*/()]))")
_ASSERT = re.compile(r"^assert\s+(.+?)\s*(>=|<=|==|!=|>|<)\s*(.+)$")
_CALL = re.compile(r"^(\w+)\(\s*([\w.]+)\s*,\s*([\w.]+)\s*\)$")


def _tokens(expr: str) -> list[tuple[str, str]]:
    """``expr`` as (kind, text) tokens: ``num``, ``name``, ``op`` (``+ - * / ( )``)."""
    out, pos, end = [], 0, len(expr.rstrip())
    while pos < end:
        m = _TOKEN.match(expr, pos)
        if not m:
            raise TemplateError(f"cannot parse `{expr}` at {expr[pos:]!r}: expected a name, a number, "
                                "an operator (+ - * /) or a parenthesis")
        kind = next(k for k in ("num", "name", "op") if m.group(k) is not None)
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """``expr := term (+|- term)*``, ``term := factor (*|/ factor)*``, ``factor := (+|-) factor | number | name |
    ( expr )``: arithmetic on named quantities, nothing else (no ``eval``). A value stays an int while every
    operand is an int and nothing is divided; a text quantity must be the whole expression."""

    def __init__(self, expr: str, q: Mapping[str, Value]) -> None:
        self.expr, self.q, self.toks, self.i = expr, q, _tokens(expr), 0

    def parse(self) -> Value:
        if len(self.toks) == 1 and self.toks[0][0] == "name" and isinstance(self._lookup(self.toks[0][1]), str):
            return self._lookup(self.toks[0][1])
        v = self._expr()
        if self.i < len(self.toks):
            raise TemplateError(f"cannot parse `{self.expr}` at {self.toks[self.i][1]!r}: expected an operator")
        return v

    def _peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) and self.toks[self.i][0] == "op" else None

    def _expr(self) -> float | int:
        v = self._term()
        while self._peek() in ("+", "-"):
            op = self.toks[self.i][1]
            self.i += 1
            w = self._term()
            v = v + w if op == "+" else v - w
        return v

    def _term(self) -> float | int:
        v = self._factor()
        while self._peek() in ("*", "/"):
            op = self.toks[self.i][1]
            self.i += 1
            w = self._factor()
            if op == "/" and w == 0:
                raise TemplateError(f"`{self.expr}`: division by zero")
            v = v * w if op == "*" else v / w
        return v

    def _factor(self) -> float | int:
        if self.i >= len(self.toks):
            raise TemplateError(f"cannot parse `{self.expr}`: it ends with an operator or is empty")
        kind, text = self.toks[self.i]
        self.i += 1
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "name":
            v = self._lookup(text)
            if isinstance(v, str):
                raise TemplateError(f"`{self.expr}`: {text} is text ({v!r}), it cannot take part in arithmetic")
            return v
        if text in ("+", "-"):  # a sign: ``-1.0``, ``-(a - b)``
            v = self._factor()
            return v if text == "+" else -v
        if text == "(":
            v = self._expr()
            if self._peek() != ")":
                raise TemplateError(f"cannot parse `{self.expr}`: a parenthesis is not closed")
            self.i += 1
            return v
        raise TemplateError(f"cannot parse `{self.expr}` at {text!r}: expected a name, a number or (")

    def _lookup(self, name: str) -> Value:
        if name not in self.q:
            close = difflib.get_close_matches(name, list(self.q), n=3)
            raise TemplateError(f"no quantity `{name}`" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        return self.q[name]


def evaluate(expr: str, q: Mapping[str, Value]) -> Value:
    """The value of ``expr``: names and numbers joined by ``+ - * /``, with parentheses (:class:`_Parser`)."""
    return _Parser(expr, q).parse()


def fmt(value: Value, spec: str | None) -> str:
    """``value`` formatted once; a rounded zero keeps no minus sign (``-0.04`` -> ``+0.0`` / ``0.0``)."""
    if isinstance(value, str):
        return value
    spec = spec if spec is not None else ("," if isinstance(value, int) else ".1f")
    out = format(value, spec)
    if out.lstrip("+-").replace("0", "").replace(".", "").replace(",", "") == "" and out.startswith("-"):
        out = ("+" if "+" in spec else "") + out[1:]
    return out


def seed_ids(name: str, q: Mapping[str, Value]) -> list[int]:
    """The seeds with a per-seed value of ``name`` (``name.s0``, ``name.s1``...), ascending."""
    return sorted(int(k[len(name) + 2:]) for k in q if k.startswith(name + ".s") and k[len(name) + 2:].isdigit())


def seeds_vs(a: str, b: str, q: Mapping[str, Value]) -> str:
    """Where ``a`` stands against ``b`` seed by seed: both per seed, or each seed of ``a`` against ``b``'s only one.

    Returns:
        ``in every seed`` / ``in no seed`` / ``in seeds 1 and 2; below it in seed 0`` (level seeds named too).
    """
    seeds_a, seeds_b = seed_ids(a, q), seed_ids(b, q)
    if not seeds_a or not seeds_b:
        raise TemplateError(f"seeds_vs({a}, {b}): no per-seed values")
    groups: dict[str, list[str]] = {"above": [], "below": [], "level": []}
    for s in seeds_a:
        other = q[f"{b}.s{s}"] if s in seeds_b else (q[f"{b}.s{seeds_b[0]}"] if len(seeds_b) == 1 else None)
        if other is None:
            raise TemplateError(f"seeds_vs({a}, {b}): seed {s} of {a} has no counterpart")
        d = float(q[f"{a}.s{s}"]) - float(other)
        groups["above" if d > 1e-9 else "below" if d < -1e-9 else "level"].append(str(s))
    if len(groups["above"]) == len(seeds_a):
        return "in every seed"
    lead = {"above": "in", "below": "below it in", "level": "level with it in"}
    parts = [f"{lead[k]} seed{'s' if len(v) > 1 else ''} {join_words(v)}" for k, v in groups.items() if v]
    return "; ".join(parts) if groups["above"] else "in no seed (" + "; ".join(parts) + ")"


FUNCTIONS: dict[str, Callable[[str, str, Mapping[str, Value]], str]] = {"seeds_vs": seeds_vs}


def _compare(op: str, x: float, y: float) -> bool:
    return {">": x > y, ">=": x >= y, "<": x < y, "<=": x <= y, "==": x == y, "!=": x != y}[op]


def _placeholder(body: str, q: Mapping[str, Value]) -> str:
    m = _ASSERT.match(body.strip())
    if m:
        lhs, op, rhs = m.groups()
        x, y = evaluate(lhs, q), evaluate(rhs, q)
        if not _compare(op, float(x), float(y)):
            raise TemplateError(f"assumption `{body.strip()[7:]}` is false ({float(x):.4g} vs {float(y):.4g}): "
                                "the sentence it guards no longer holds; rewrite it")
        return ""
    expr, _, spec = body.partition(":")
    call = _CALL.match(expr.strip())
    if call:
        fn = FUNCTIONS.get(call.group(1))
        if fn is None:
            raise TemplateError(f"no function `{call.group(1)}` (known: {', '.join(FUNCTIONS)})")
        return fn(call.group(2), call.group(3), q)
    return fmt(evaluate(expr, q), spec or None)


def fill(template: str, q: Mapping[str, Value], source: str = "template") -> str:
    """``template`` with every placeholder replaced by its value.

    Args:
        template: markdown with ``{...}`` placeholders (module docstring).
        q: the quantities.
        source: the template's file, named in errors.

    Returns:
        The rendered markdown.

    Raises:
        TemplateError: naming ``source``, the line and the placeholder.
    """
    out = []
    for n, line in enumerate(template.splitlines(keepends=True), 1):
        try:
            out.append(_PLACEHOLDER.sub(lambda m: _placeholder(m.group(1), q), line))
        except TemplateError as e:
            raise TemplateError(f"{source}, line {n}: {e}") from None
    return "".join(out)


# ----------------------------------------------------------------------------- checking
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def numbers(text: str) -> list[str]:
    """The numbers of ``text`` as written (``-0.6``, ``2,953``, ``1.49``)."""
    return [n.rstrip(",") for n in _NUMBER.findall(text)]


def _skeleton(line: str) -> str:
    return " ".join(_NUMBER.sub("#", line).split())


def _table_context(lines: list[str], i: int) -> str:
    """For a table row: its first two cells and the column names; else empty."""
    if not lines[i].lstrip().startswith("|"):
        return ""
    j = i
    while j > 0 and lines[j - 1].lstrip().startswith("|"):
        j -= 1
    cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
    label = [c for c in cells[:2] if c and not re.fullmatch(r"[\s*±%()+\-\d.,]+", c)]  # names, not values
    return f"table row `{' / '.join(label)}`" if j != i else "table header"


def compare(actual: str, expected: str, where: str, skip: Callable[[str], bool] = lambda ln: False) -> list[str]:
    """Every difference between a doc's text and its rendering from the JSON, numbers first.

    Lines are aligned by their words (numbers masked), then the numbers of aligned lines are
    compared one by one; a table cell is named by its row and column.

    Args:
        actual: the text in the doc.
        expected: the text rendered from the JSON.
        where: the doc and section, for the messages.
        skip: lines to leave out on both sides (e.g. recorded commands, which other code formats).

    Returns:
        One message per difference; empty when the doc matches.
    """
    a = [ln.rstrip() for ln in actual.strip().splitlines() if ln.strip() and not skip(ln)]
    e = [ln.rstrip() for ln in expected.strip().splitlines() if ln.strip() and not skip(ln)]
    out = []
    sm = difflib.SequenceMatcher(a=[_skeleton(x) for x in a], b=[_skeleton(x) for x in e], autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                na, ne = numbers(a[i]), numbers(e[j])
                for k, (x, y) in enumerate(zip(na, ne)):
                    if x != y:
                        out.append(f"{where}: {_table_context(e, j) or 'line'} {_cell(e, j, a[i], k)}: "
                                   f"the doc says {x}, the JSON gives {y}\n    doc:  {a[i]}\n    JSON: {e[j]}")
        else:
            out.append(f"{where}: text differs from its rendering (run the renderer)\n"
                       + "".join(f"    doc:  {x}\n" for x in a[i1:i2]) + "".join(f"    JSON: {y}\n" for y in e[j1:j2]))
    return out


def _cell(lines: list[str], j: int, actual_line: str, k: int) -> str:
    """The column of the ``k``-th number of a table row (from the header above it), else the number's index."""
    if not lines[j].lstrip().startswith("|"):
        return f"(number {k + 1})"
    h = j
    while h > 0 and lines[h - 1].lstrip().startswith("|"):
        h -= 1
    header = [c.strip() for c in lines[h].strip().strip("|").split("|")]
    seen = 0
    for col, cell in enumerate(c for c in actual_line.strip().strip("|").split("|")):
        seen += len(numbers(cell))
        if seen > k:
            return f"column `{header[col] if col < len(header) else col}`"
    return f"(number {k + 1})"
