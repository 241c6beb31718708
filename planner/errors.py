"""Domain errors and their exit codes: the CLI's one error boundary maps these to one clear line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from itertools import islice


class PlannerError(Exception):
    """A problem the user can act on; printed as one line, exit code 1."""

    exit_code = 1


class InvalidInputError(PlannerError):
    """A user file (YAML, config.json, GGUF, safetensors, snapshot) is malformed; exit code 2."""

    exit_code = 2


class CatalogError(InvalidInputError):
    """One or more problems in catalog or profile files, all reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class NotFoundError(PlannerError):
    """A name (device, model, format, runtime) that is not known; carries close candidates."""

    def __init__(self, kind: str, name: str, candidates: Iterable[str] = ()):
        self.kind = kind
        self.name = name
        self.candidates = list(candidates)
        hint = f"; did you mean: {', '.join(self.candidates)}?" if self.candidates else ""
        super().__init__(f"unknown {kind} '{name}'{hint}")


class AmbiguousError(PlannerError):
    """A name that matches several entries equally well."""

    def __init__(self, kind: str, name: str, matches: Iterable[str]):
        self.matches = list(matches)
        super().__init__(f"{kind} '{name}' is ambiguous; it matches: {', '.join(self.matches)}")


class NothingFitsError(PlannerError):
    """No candidate deployment fits the target; exit code 1 with what would fit."""


def close_matches(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Return up to n choices that look like `name` (for 'did you mean' hints)."""
    pool = list(dict.fromkeys(choices))
    key = normalize_name(name)
    by_norm: dict[str, str] = {}
    for c in pool:
        by_norm.setdefault(normalize_name(c), c)
    hits = difflib.get_close_matches(key, list(by_norm), n=n, cutoff=0.6)
    out = [by_norm[h] for h in hits]
    # Prefix or containment hits help with partial names like "4090" or "llama-3.1".
    for norm, orig in by_norm.items():
        if len(out) >= n:
            break
        if key and (key in norm) and orig not in out:
            out.append(orig)
    return out[:n]


_NOT_ALNUM = re.compile(r"[\W_]+")  # what str.isalnum() rejects; one regex pass is ~5x faster than a per-char loop


def normalize_name(name: str) -> str:
    """Lower-case a name and drop punctuation and spaces, so 'RTX-4090' == 'rtx 4090'."""
    return _NOT_ALNUM.sub("", name.lower())


# An int this wide still prints in a message; wider ones are described by size (str() of a >4300-digit int raises
# ValueError, and a 1000-digit number helps nobody). 256 bits is ~77 digits: assumed, fits one line.
_PREVIEW_INT_BITS = 256
_PREVIEW_ITEMS = 4  # container items shown before "..." (assumed: enough to recognise the value)


def preview(value: object, limit: int = 80) -> str:
    """A bounded one-line rendering of a user value for an error message; never repr()s a whole large structure."""
    text = _preview(value, limit, depth=3)
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def show(text: str, limit: int = 80) -> str:
    """A name from a file, safe for a one-line message: control characters escaped, long names cut."""
    if text.isprintable() and len(text) <= limit:
        return text
    shown = repr(text[:limit])
    return shown + ("..." if len(text) > limit else "")


def clip(text: str, limit: int = 200) -> str:
    """A message from a library (it may quote input) as one line of at most `limit` characters."""
    text = " ".join(text[: limit * 4].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview(value: object, limit: int, depth: int) -> str:
    """repr-like text of `value` built from bounded pieces: strings and containers are cut before rendering."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > _PREVIEW_INT_BITS:
            return f"<{'negative ' if value < 0 else ''}integer of {value.bit_length()} bits>"
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (str, bytes, bytearray)):
        cut = value[:limit]
        return repr(cut) + ("..." if len(value) > limit else "")
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        if depth <= 0:
            return f"<{type(value).__name__} of {len(value)}>"
        opener, closer = {list: "[]", tuple: "()"}.get(type(value), "{}")
        if isinstance(value, dict):
            parts = [f"{_preview(k, limit, depth - 1)}: {_preview(v, limit, depth - 1)}"
                     for k, v in islice(value.items(), _PREVIEW_ITEMS)]
        else:
            parts = [_preview(item, limit, depth - 1) for item in islice(value, _PREVIEW_ITEMS)]
        more = ", ..." if len(value) > _PREVIEW_ITEMS else ""
        return opener + ", ".join(parts) + more + closer
    # Other loaded scalars (dates, timestamps) have short reprs; cut anyway in case a caller passes something else.
    return repr(value)[: limit + 1]
