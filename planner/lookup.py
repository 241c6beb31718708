"""Explicit name lookup shared by the device catalog and the model registry: exact id, then any indexed name
(case- and punctuation-insensitive); a miss or an ambiguity raises an error listing the closest candidates."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from planner.errors import AmbiguousError, NotFoundError, close_matches, normalize_name

T = TypeVar("T")


class NameIndex(Generic[T]):
    """Entries by id, findable by every name `names_of` gives for them."""

    def __init__(self, kind: str, entries: Iterable[T], names_of: Callable[[T], Iterable[str]],
                 suggest_of: Callable[[T], Iterable[str]]):
        self.kind = kind
        self.entries: dict[str, T] = {}
        for e in entries:
            self.entries[e.id] = e  # type: ignore[attr-defined]  # a later entry with the same id replaces
        self._index: dict[str, set[str]] = {}
        self._suggest: list[str] = []
        for eid, e in self.entries.items():
            for name in names_of(e):
                self._index.setdefault(normalize_name(name), set()).add(eid)
            self._suggest.extend(suggest_of(e))

    def ids_for(self, name: str) -> set[str]:
        """Ids whose indexed names normalise to `name`."""
        return self._index.get(normalize_name(name), set())

    def resolve(self, name: str, fallback: str | None = None) -> T:
        """The entry `name` names; `fallback` is a second name tried on a miss (e.g. a repo without its org)."""
        if name in self.entries:
            return self.entries[name]
        key = normalize_name(name)
        ids = self.ids_for(name)
        if not ids and fallback is not None:
            ids = self.ids_for(fallback)
        # An entry whose own id normalises to the key wins over aliases of others.
        exact = [i for i in ids if normalize_name(i) == key]
        if len(exact) == 1:
            return self.entries[exact[0]]
        if len(ids) == 1:
            return self.entries[next(iter(ids))]
        if len(ids) > 1:
            raise AmbiguousError(self.kind, name, sorted(ids))
        raise NotFoundError(self.kind, name, close_matches(name, self._suggest))
