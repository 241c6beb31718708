"""Hypothesis strategies shared by the fuzzers of user files: unbounded numbers (inf, nan, 4301+ digit integers),
YAML anchors and aliases (recursive ones and alias bombs included) and deep nesting, as YAML or JSON text."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import strategies as st

# Python refuses to convert an integer of more than 4300 decimal digits to or from text (sys.get_int_max_str_digits).
INT_DIGITS_LIMIT = 4300
BIG_INTS = st.integers(INT_DIGITS_LIMIT + 1, INT_DIGITS_LIMIT + 300).map(lambda n: "9" * n)
# Unbounded integers (hypothesis keeps most of them small) plus ones past 64 bits and past float range.
WIDE_INTS = st.integers() | st.integers(2**63 - 2, 2**64 + 2) | st.integers(2**64, 10**600) | st.integers(-(10**600), -(2**63))
NUMBERS = WIDE_INTS | st.floats(allow_nan=True, allow_infinity=True)
KEY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


def yaml_float(x: float) -> str:
    """A float as YAML 1.1 text (.inf / .nan; repr otherwise)."""
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    return repr(x)


YAML_SCALARS = st.one_of(
    WIDE_INTS.map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(yaml_float),
    BIG_INTS,
    BIG_INTS.map(lambda s: "-" + s),
    st.integers(INT_DIGITS_LIMIT - 800, INT_DIGITS_LIMIT + 10).map(lambda n: "0x" + "f" * n),  # ~4800+ digits as decimal
    st.sampled_from(["null", "~", "true", "false", "''", "1e400", "-1e400", "0o17", "1_000", "1:30:00", "2025-01-01"]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).map(json.dumps),  # JSON strings are YAML too
    st.integers(1000, 20000).map(lambda n: json.dumps("x" * n)),  # a long string
)


@st.composite
def yaml_values(draw: st.DrawFn, max_depth: int = 4) -> str:
    """One flow-style YAML value with random anchors and aliases (an alias may point into its own anchor: a cycle)."""
    anchors: list[str] = []

    def node(depth: int) -> str:
        if anchors and draw(st.integers(0, 4)) == 0:
            return "*" + draw(st.sampled_from(anchors))
        prefix = ""
        if draw(st.integers(0, 3)) == 0:
            anchors.append(f"a{len(anchors)}")
            prefix = f"&{anchors[-1]} "
        kind = draw(st.integers(0, 2)) if depth < max_depth else 0
        if kind == 0:
            return prefix + draw(YAML_SCALARS)
        n = draw(st.integers(0, 4))
        if kind == 1:
            return prefix + "[" + ", ".join(node(depth + 1) for _ in range(n)) + "]"
        return prefix + "{" + ", ".join(f"{json.dumps(draw(KEY_TEXT))}: {node(depth + 1)}" for _ in range(n)) + "}"

    return node(0)


@st.composite
def alias_bombs(draw: st.DrawFn) -> str:
    """A flow sequence whose levels each alias the level below `width` times ("billion laughs", inlined)."""
    levels, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    parts = [f"&c0 [{', '.join(['lol'] * width)}]"]
    parts += [f"&c{i} [{', '.join([f'*c{i - 1}'] * width)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + f", *c{levels - 1}]"


@st.composite
def deep_yaml(draw: st.DrawFn) -> str:
    """Sequences or mappings nested up to thousands deep."""
    n = draw(st.integers(1, 3000))
    if draw(st.booleans()):
        return "[" * n + "1" + "]" * n
    return "{k: " * n + "1" + "}" * n


YAML_VALUES = yaml_values() | alias_bombs() | deep_yaml()

_BIG_MARK = re.compile(r'"@@big(-?\d+)@@"')
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), NUMBERS, st.text(max_size=12),
    st.integers(INT_DIGITS_LIMIT + 1, INT_DIGITS_LIMIT + 300).map(lambda n: f"@@big{n}@@"),  # written as digits
)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20
)


def json_text(value: Any, nest: int = 0) -> str:
    """JSON text of `value` with its big-int markers written as 4301+ digit literals, wrapped `nest` lists deep."""
    text = _BIG_MARK.sub(lambda m: "9" * int(m.group(1)), json.dumps(value))  # NaN/Infinity as Python writes them
    return "[" * nest + text + "]" * nest


def all_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON-like tree (the root is ())."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += all_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += all_paths(v, (*prefix, i))
    return out


def set_path(doc: Any, path: tuple, value: Any) -> Any:
    """`doc` with the node at `path` replaced (the root when path is empty)."""
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc
