"""Where the bundled data lives: inside the installed package, or at the top of a source checkout."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the directory of bundled data `name` ('hwdb' or 'profiles')."""
    installed = _PACKAGE_DIR / "_data" / name
    if installed.is_dir():
        return installed
    # Source checkout or editable install: the data sits beside the package.
    source = _PACKAGE_DIR.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"bundled data directory '{name}' not found under {installed} or {source}")


def user_cache_dir() -> Path:
    """Return the per-user cache directory (XDG on Linux, ~/Library/Caches on macOS)."""
    env = os.environ.get("PLANNER_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "llm-deploy-planner"


def user_data_dir() -> Path:
    """Return the per-user data directory (calibration records live here)."""
    env = os.environ.get("PLANNER_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "llm-deploy-planner"


def user_path(text: str | Path) -> Path:
    """A path the user typed, with '~' expanded; '~name' for an unknown user stays as typed instead of raising."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # pathlib cannot find that user's home directory
        return Path(text)


def list_dir(path: Path) -> list[Path]:
    """The entries of a directory the user named; an unreadable one (permissions, I/O) is one clear InvalidInputError
    instead of a PermissionError from deep inside a reader."""
    from planner.errors import InvalidInputError

    try:
        with os.scandir(path) as it:
            return [Path(e.path) for e in it]
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read directory ({exc.strerror or exc})") from None


def path_kind(path: Path) -> str | None:
    """'dir', 'file' or 'other' for an existing path, None for a missing one; a path below a directory the user may
    not enter is one clear InvalidInputError (Path.exists and is_dir raise PermissionError there)."""
    import stat

    from planner.errors import InvalidInputError

    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError:  # an embedded NUL byte: no such path can exist
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def path_exists(path: Path) -> bool:
    """Path.exists(), except that a path the user may not look at counts as existing, so the reader that opens it
    reports 'cannot read' rather than the planner treating it as a name (Path.exists raises on EACCES)."""
    try:
        return path.exists()
    except OSError:
        return True
