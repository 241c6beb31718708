"""Plain, frozen attribute records for validated data read back from the cache.

The hot path (`planner recommend --device ...`) must not pay pydantic's import and schema-build cost (~0.15 s), so
catalog and profile entries that were validated when the cache was written come back as Records. They expose the
same attributes and methods (through the *Methods mixins) as the pydantic schema classes.
"""

from __future__ import annotations

import json
from typing import Any


class Record:
    """An immutable bag of fields with the small part of pydantic's API the planner uses."""

    _nested: dict[str, type["Record"]] = {}

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            sub = self._nested.get(name)
            if sub is not None and isinstance(value, dict):
                value = sub(**value)
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.__dict__ == other.__dict__  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(self.model_dump_json())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'id', '')})"

    def model_dump(self, mode: str | None = None) -> dict:
        """Fields as plain data (nested records too)."""
        return {k: (v.model_dump(mode) if isinstance(v, Record) else (list(v) if isinstance(v, tuple) else v))
                for k, v in self.__dict__.items()}

    def model_dump_json(self) -> str:
        """Fields as JSON."""
        return json.dumps(self.model_dump(), sort_keys=True)

    def model_copy(self, update: dict | None = None) -> "Record":
        """A copy with some fields replaced (not re-validated, like pydantic's)."""
        return type(self)(**{**self.__dict__, **(update or {})})


def fingerprint(obj: Any) -> str:
    """A stable JSON text of a pydantic model or a Record (for cache keys)."""
    return json.dumps(obj.model_dump(mode="json"), sort_keys=True)
