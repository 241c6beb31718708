"""What a writer may replace: the one rule every output of the planner follows (quantize, recommend --quantize,
eval's cached files, bench's stand-in files).

An existing OUT is replaced only with --force, and only when it is
- for a file output (GGUF): a regular file (the output path the user named; a symbolic link or a directory is not);
- for a directory output (safetensors formats): an empty directory, or a directory the planner wrote itself,
  recognised by its marker MARKER, whose manifest lists every file the planner put there; a directory holding
  anything the manifest does not list (a file added later, a subdirectory) is refused as a whole.
A symbolic link at OUT is never replaced: swapping it for a file or directory would silently re-point what the user
set up, and following it would write somewhere the user did not name. Everything else is refused with exit 2 and a
message naming the path and the reason, so the planner never deletes what it did not create.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from planner.errors import InvalidInputError, PlannerError

MARKER = ".planner-output.json"  # written into every output directory the planner creates
MAX_LISTED = 5  # foreign names shown in a refusal; the rest are counted

Kind = Literal["file", "dir"]


class OutputRefusedError(InvalidInputError):
    """An output path that the planner may not write or replace; exit code 2."""


def occupied(path: Path) -> bool:
    """Whether anything is at `path`, a dangling symbolic link included."""
    return path.is_symlink() or path.exists()


def manifest(directory: Path) -> set[str]:
    """The names of the files the planner wrote into `directory`, from its marker; InvalidInputError if unreadable."""
    marker = directory / MARKER
    if marker.is_symlink() or not marker.is_file():
        raise InvalidInputError(f"{directory}: no {MARKER}")
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"{marker}: unreadable ({type(exc).__name__})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) and f and "/" not in f and f not in (".", "..")
                                              for f in files):
        raise InvalidInputError(f"{marker}: 'files' is not a list of file names")
    return set(files)


def write_marker(directory: Path, fmt: str, files: Iterable[str]) -> None:
    """Write the marker naming the planner version, the format and every file the planner writes into `directory`."""
    from planner import __version__

    data = {"planner": __version__, "format": fmt, "files": sorted(files)}
    (directory / MARKER).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def why_not_replaceable(path: Path, kind: Kind) -> str | None:
    """None if --force may replace the existing `path` as an output of `kind`, else the reason it may not."""
    if path.is_symlink():
        return f"is a symbolic link (to {os.readlink(path)}), which planner does not replace"
    if kind == "file":
        if path.is_dir():
            return "is a directory, and this output is a single file"
        return None if path.is_file() else "is not a regular file"
    if not path.is_dir():
        return "is a file, and this output is a directory" if path.is_file() else "is not a directory"
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        return f"is a directory that cannot be read ({exc.strerror or type(exc).__name__})"
    if not entries:
        return None  # an empty directory: replacing it loses nothing
    try:
        ours = manifest(path)
    except InvalidInputError as exc:
        if not (path / MARKER).exists():
            return f"is a directory that planner did not write (no {MARKER})"
        return f"is a directory whose {MARKER} cannot be trusted ({exc})"
    foreign = sorted(e.name for e in entries
                     if e.name != MARKER and (e.name not in ours or e.is_symlink() or not e.is_file()))
    if foreign:
        more = f" and {len(foreign) - MAX_LISTED} more" if len(foreign) > MAX_LISTED else ""
        return f"holds files planner did not write ({', '.join(foreign[:MAX_LISTED])}{more})"
    return None


def check_output(path: Path, kind: Kind | None, *, force: bool, hint: str | None = None) -> None:
    """Refuse `path` as an output unless its directory exists and it is free, or --force may replace it (kind None:
    as either a file or a directory output, for a check made before the format is known). `hint` ends a refusal
    (default: choose another -o)."""
    parent = path.parent
    if not parent.is_dir():
        why = "no such directory" if not occupied(parent) else "not a directory"
        raise OutputRefusedError(f"{parent}: {why} for the output {path.name}; create it first or "
                                 f"{hint or 'choose another -o'}")
    if not occupied(path):
        return
    if kind is None:  # the format is not known yet: judge OUT as what it is
        kind = "dir" if path.is_dir() and not path.is_symlink() else "file"
    reason = why_not_replaceable(path, kind)
    if reason is not None:
        if hint is None:
            hint = "choose another -o"
            if kind == "file" and path.is_dir() and not path.is_symlink():
                hint += f" (e.g. {path / 'NAME.gguf'})"
        raise OutputRefusedError(f"{path}: {reason}; refusing to replace it (--force replaces only an output "
                                 f"file or a directory that planner wrote); {hint}")
    if not force:
        raise PlannerError(f"{path} already exists; pass --force to replace it")


def remove_written(path: Path) -> bool:
    """Delete an output the planner wrote: a file, or a directory's manifest files, marker and then the directory
    itself if nothing else is left. False if something the planner did not write kept the directory."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return True
    try:
        names = manifest(path)
    except InvalidInputError:
        names = set()  # no marker: only an empty directory goes
    for name in sorted(names) + [MARKER]:
        f = path / name
        if f.is_file() and not f.is_symlink():
            f.unlink()
    try:
        path.rmdir()
    except OSError:
        return False
    return True


def remove_created(directory: Path, names: Iterable[str]) -> bool:
    """Delete the files `names` that a command created in its own work `directory`, then the directory if empty.
    False if the directory still holds something else (left in place)."""
    for name in names:
        (directory / name).unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        return False
    return True
