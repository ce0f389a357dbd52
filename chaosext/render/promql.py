"""Rewrite the names in a PromQL expression: metric names, label names and label values, the layout kept.

The shipped rules and dashboard are written in the lab's names (the default metric contract). :class:`Names` says what
each of those is called on a target; :func:`rewrite` walks an expression token by token (strings, ranges and
whitespace are copied as they are), renames every series selector's metric, its matchers' labels and the values it
maps (the error statuses), the labels of every ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``
list, and reports the series the target does not have. A selector that needs no change is copied byte for byte, so
rewriting with the lab's own names changes nothing.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Matcher", "Names", "Rewritten", "parse_selector", "rewrite", "selectors", "rename_template_labels"]

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<dur>(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_:]))
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)
  | (?P<op>=~|!~|!=|==|>=|<=|[{}(),=<>+\-*/%^])
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
#: keywords followed by a list of label names
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
#: words that are no series selector
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN", "atan2"}
#: aggregation operators (followed by ``by``/``without`` or by their parenthesis)
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                 "quantile", "limitk", "limit_ratio"}
#: a matcher value that selects nothing in particular: empty, "anything", or a Grafana variable
_ANY = re.compile(r"^$|^\.\*$|^\.\+$|^\$\{?\w+\}?$")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*'
                      r'("(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`)\s*')


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector; ``value`` is the string literal as written (quotes included)."""

    label: str
    op: str
    value: str

    @property
    def text(self) -> str:
        """The matcher as PromQL."""
        return f"{self.label}{self.op}{self.value}"

    @property
    def unquoted(self) -> str:
        """The value without its quotes (escapes kept)."""
        return self.value[1:-1]


#: what a selector becomes on the target: its replacement text, or None when the target does not have that series
SelectorMap = Callable[[str, tuple[Matcher, ...]], "str | None"]


@dataclass(frozen=True)
class Names:
    """The target's names for the lab's.

    ``labels``: lab label -> the target's (None: the target has no such label: a matcher excluding values of it is
    dropped, one selecting values of it makes the series unavailable, a ``by`` list loses it). ``selector``: a
    function given the selector's metric name and its (already renamed) matchers that returns the replacement text
    ("" for "unchanged"), or None when the target does not have that series."""

    labels: dict[str, str | None] = field(default_factory=dict)
    selector: SelectorMap = lambda name, matchers: ""

    def label(self, name: str) -> str | None:
        """The target's name of label ``name``."""
        return self.labels.get(name, name)


@dataclass(frozen=True)
class Rewritten:
    """An expression in the target's names, and the series it needs that the target does not have."""

    text: str
    missing: frozenset[str] = frozenset()


def _tokens(expr: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(expr)]


def _next(tokens: list[tuple[str, str]], i: int) -> int:
    """Index of the next token that is not whitespace (len(tokens) at the end)."""
    while i < len(tokens) and tokens[i][0] == "ws":
        i += 1
    return i


def parse_selector(text: str) -> tuple[str, tuple[Matcher, ...]]:
    """``name{a="b",c=~"d"}`` -> (name, matchers); ValueError when it is no plain selector."""
    m = re.fullmatch(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)?\s*(?:\{(.*)\})?\s*", text, re.DOTALL)
    if not m or not (m.group(1) or m.group(2) is not None):
        raise ValueError(f"{text!r} is not a series selector")
    return m.group(1) or "", _matchers(m.group(2) or "")


def _matchers(body: str) -> tuple[Matcher, ...]:
    out = []
    rest = body.strip()
    while rest:
        m = _MATCHER.match(rest)
        if not m:
            raise ValueError(f"{{{body}}} holds no label matchers")
        out.append(Matcher(m.group(1), m.group(2), m.group(3)))
        rest = rest[m.end():].lstrip()
        if rest.startswith(","):
            rest = rest[1:].lstrip()
        elif rest:
            raise ValueError(f"{{{body}}} holds no label matchers")
    return tuple(out)


def _selector(names: Names, name: str, body: str | None, original: str, missing: set[str]) -> str:
    """One selector in the target's names (``original`` when nothing changes)."""
    matchers = _matchers(body) if body is not None else ()
    renamed: list[Matcher] = []
    for m in matchers:
        label = names.label(m.label)
        if label is None:
            if m.op in ("=", "=~") and not _ANY.match(m.unquoted):
                missing.add(f"{name or 'series'} by {m.label}")  # it selects by a label the target has not
            continue  # excluding values of a label nobody has excludes nothing
        renamed.append(Matcher(label, m.op, m.value))
    replacement = names.selector(name, tuple(renamed))
    if replacement is None:
        missing.add(name)
        return original
    if replacement:
        return replacement
    if tuple(renamed) == matchers:
        return original
    sep = ", " if body is not None and ", " in body else ","
    return f"{name}{{{sep.join(m.text for m in renamed)}}}"


def rewrite(expr: str, names: Names) -> Rewritten:
    """``expr`` in the target's names (see the module's docstring)."""
    tokens = _tokens(expr)
    out: list[str] = []
    missing: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident" and text in _LABEL_LISTS:
            out.append(text)
            j = _next(tokens, i + 1)
            if j < len(tokens) and tokens[j][1] == "(":
                k = j
                while k < len(tokens) and tokens[k][1] != ")":
                    k += 1
                raw = "".join(t for _, t in tokens[j + 1:k])
                labels = [x.strip() for x in raw.split(",") if x.strip()]
                kept = [lbl for lbl in (names.label(x) for x in labels) if lbl is not None]
                out.append("".join(t for _, t in tokens[i + 1:j]))
                out.append("(" + (raw if kept == labels else ", ".join(kept)) + ")")
                i = k + 1
            else:
                i += 1
            continue
        if kind == "ident" and text not in _KEYWORDS:
            j = _next(tokens, i + 1)
            if text in _AGGREGATIONS or (j < len(tokens) and tokens[j][1] == "("):  # a function
                out.append(text)
                i += 1
                continue
            if i + 1 < len(tokens) and tokens[i + 1][1] == "{":
                k = i + 1
                while k < len(tokens) and tokens[k][1] != "}":
                    k += 1
                body = "".join(t for _, t in tokens[i + 2:k])
                original = "".join(t for _, t in tokens[i:k + 1])
                out.append(_selector(names, text, body, original, missing))
                i = k + 1
                continue
            out.append(_selector(names, text, None, text, missing))
            i += 1
            continue
        if kind == "op" and text == "{":  # a selector without a metric name
            k = i
            while k < len(tokens) and tokens[k][1] != "}":
                k += 1
            body = "".join(t for _, t in tokens[i + 1:k])
            original = "".join(t for _, t in tokens[i:k + 1])
            out.append(_selector(names, "", body, original, missing))
            i = k + 1
            continue
        out.append(text)
        i += 1
    return Rewritten("".join(out), frozenset(missing))


def selectors(expr: str) -> list[tuple[str, tuple[Matcher, ...]]]:
    """Every series selector of ``expr`` (metric name, matchers), in order."""
    found: list[tuple[str, tuple[Matcher, ...]]] = []

    def record(name: str, matchers: tuple[Matcher, ...]) -> str:
        found.append((name, matchers))
        return ""

    rewrite(expr, Names(selector=record))
    return found


def rename_template_labels(text: str, names: Names, absent: str = "(all)") -> str:
    """Alert templates: ``$labels.<lab label>`` -> ``$labels.<target's>``; ``{{ $labels.x }}`` of a label the target
    has not -> ``absent``."""
    def one(m: re.Match[str]) -> str:
        label = names.label(m.group(2))
        if label is None:
            return absent if m.group(1) else m.group(0)
        return m.group(0).replace(f"$labels.{m.group(2)}", f"$labels.{label}")

    return re.sub(r"(\{\{\s*)?\$labels\.([A-Za-z_][A-Za-z0-9_]*)(?(1)\s*\}\})", one, text)
