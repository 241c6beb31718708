"""Loading profiles/ and resolving what a user typed (id, alias, HF repo id, bare size, or a path) to a ModelSpec."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from planner.cache import cached_validated
from planner.errors import CatalogError, NotFoundError
from planner.lookup import NameIndex
from planner.models.model import ModelRecord
from planner.paths import data_dir
from planner.yamlio import format_validation_error, load_yaml_dir

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[bB]\s*$")


def parse_profile_files(files: Sequence[tuple[Path, object]]) -> list[ModelSpec]:
    """Validate loaded profile YAML; collect every problem as 'file: models[2].field: message'."""
    from pydantic import ValidationError  # lazy: cached profiles load without pydantic on recommend's start-up path

    from planner.models.spec import ProfileFile

    problems: list[str] = []
    models: list[ModelSpec] = []
    seen: dict[str, Path] = {}
    sizes: dict[str, str] = {}
    for path, doc in files:
        try:
            pf = ProfileFile.model_validate(doc)
        except ValidationError as exc:
            problems.extend(format_validation_error(path, exc))
            continue
        for i, m in enumerate(pf.models):
            if m.id in seen:
                problems.append(f"{path}: models[{i}].id: duplicate id '{m.id}' (also in {seen[m.id]})")
            seen[m.id] = path
            if m.reference_for_size:
                key = m.reference_for_size.upper()
                if key in sizes:
                    problems.append(f"{path}: models[{i}].reference_for_size: '{key}' already answered by '{sizes[key]}'")
                sizes[key] = m.id
            models.append(m)
    if problems:
        raise CatalogError(problems)
    return models


def _model_names(m: ModelSpec) -> list[str]:
    """Every name a profile answers to; a repo id also resolves without its org ("Meta-Llama-3.1-405B-Instruct")."""
    keys = [m.id, m.name, *m.aliases] + ([m.hf_repo] if m.hf_repo else [])
    return keys + [k.split("/", 1)[1] for k in keys if "/" in k]


class ModelRegistry:
    """All profiles, looked up by id, alias, HF repo id or bare size."""

    def __init__(self, models: Iterable[ModelSpec]):
        self._names = NameIndex("model", models, _model_names, lambda m: (m.id, *m.aliases))
        self.models: dict[str, ModelSpec] = self._names.entries
        self.by_size: dict[float, ModelSpec] = {}
        for m in self.models.values():
            if m.reference_for_size:
                self.by_size[float(m.reference_for_size[:-1])] = m

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self):
        return iter(self.models.values())

    def get(self, name: str) -> ModelSpec:
        """Resolve a profile by id, alias, HF repo id (org optional) or bare size like '70B'."""
        if name in self.models:
            return self.models[name]
        size = _SIZE_RE.match(name)
        if size:
            return self.for_size(float(size.group(1)), name)
        # a fine-tune under another org falls back to the repo name
        return self._names.resolve(name, name.split("/", 1)[1] if "/" in name else None)

    def for_size(self, billions: float, typed: str) -> ModelSpec:
        """The documented reference architecture for a bare size; a miss lists the sizes there are."""
        if billions in self.by_size:
            return self.by_size[billions]
        sizes = sorted(self.by_size)
        near = sorted(sizes, key=lambda s: abs(s - billions))[:3]
        raise NotFoundError("model size", typed, [f"{s:g}B" for s in near])


def load_registry(extra_dirs: Sequence[Path] = ()) -> ModelRegistry:
    """Load the bundled profiles and any user profile directories (same id replaces)."""
    merged: dict[str, ModelSpec] = {}
    for d in [data_dir("profiles"), *map(Path, extra_dirs)]:
        for m in cached_validated("profiles", d, ModelRecord, lambda p=d: parse_profile_files(load_yaml_dir(p))):
            merged[m.id] = m
    return ModelRegistry(merged.values())


def schema_json() -> dict:
    """The JSON schema of a profile file, as committed in profiles/schema.json."""
    from planner.models.spec import ProfileFile

    return ProfileFile.model_json_schema()
