"""Safe YAML and JSON reading with clear errors, and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from planner.errors import InvalidInputError


def read_text(path: Path, what: str = "file") -> str:
    """Read a UTF-8 text file, turning OS and decoding errors into one clear line."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a directory, expected a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror})") from None


def load_yaml(path: Path) -> Any:
    """Parse one YAML file with the safe loader; syntax errors name the file, line and column."""
    text = read_text(path, "YAML file")
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path | str) -> Any:
    """Parse YAML text (safe loader only); raise InvalidInputError naming `path` on bad syntax."""
    import yaml  # imported here: the cached hot path reads JSON only

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - CSafeLoader/SafeLoader only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise InvalidInputError(f"{path}{where}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise InvalidInputError(f"{path}: invalid YAML: nested too deeply") from None


def load_yaml_dir(path: Path) -> list[tuple[Path, Any]]:
    """Load every *.yaml / *.yml file of a directory (or one file), sorted by name."""
    from planner.paths import list_dir, path_kind  # an unreadable directory is one clear line, not a PermissionError

    path = Path(path)
    kind = path_kind(path)
    if kind is None:
        raise InvalidInputError(f"{path}: no such file or directory")
    files = [path] if kind != "dir" else sorted(p for p in list_dir(path) if p.suffix in (".yaml", ".yml"))
    if not files:
        raise InvalidInputError(f"{path}: no .yaml files found")
    return [(f, load_yaml(f)) for f in files]


def load_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; errors name the file, line and column."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise InvalidInputError(f"{path}: invalid JSON: nested too deeply") from None


def format_validation_error(path: Path | str, exc: Any) -> list[str]:
    """Turn a pydantic ValidationError into lines 'file: devices[3].field: message'."""
    lines = []
    for err in exc.errors():
        loc = ""
        for part in err.get("loc", ()):
            if isinstance(part, int):
                loc += f"[{part}]"
            else:
                loc += ("." if loc else "") + str(part)
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{path}: {loc or '(top level)'}: {msg}")
    return lines


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to `path` atomically: temp file in the same directory, fsync, rename."""
    import tempfile  # here, not at the top: reading (the hot path) never pays for it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
