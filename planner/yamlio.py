"""Safe YAML and JSON reading with clear errors, and atomic writes."""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

from planner.errors import InvalidInputError, clip, preview, show


def read_text(path: Path, what: str = "file") -> str:
    """Read a UTF-8 text file, turning OS and decoding errors into one clear line."""
    path = Path(path)
    try:
        return _read(path, what, lambda: path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_bytes(path: Path, what: str = "file") -> bytes:
    """Read a whole binary file, turning OS errors into one clear line."""
    path = Path(path)
    return _read(path, what, path.read_bytes)


def _read(path: Path, what: str, read: Any) -> Any:
    """`read()` of `path`, with a directory, a missing file or an OS error as one line naming the file."""
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a directory, expected a {what}")
    try:
        return read()
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror})") from None


def load_yaml(path: Path) -> Any:
    """Parse one YAML file with the safe loader; syntax errors name the file, line and column."""
    text = read_text(path, "YAML file")
    return parse_yaml(text, path)


# Nodes that aliases may add to a document when it is expanded (each *alias counts its whole subtree). A YAML
# "billion laughs" file of a few hundred bytes expands to 10^9 nodes; the planner's own files add at most 26
# (profiles/deepseek.yaml), and a spec that reuses a 20-node block 500 times stays below. Assumed bound.
MAX_ALIAS_EXPANSION = 10_000
# The longest integer literal read: Python refuses to convert longer decimal strings (its default int-string limit,
# sys.get_int_max_str_digits(), is 4300) and no planner number is near it. Hex and binary are held to the same bound.
MAX_INT_CHARS = 4300
_INT_LIMIT = 10**MAX_INT_CHARS
_ALIAS_RE = re.compile(r"(?:^|[\s,\[{])\*[^\s,\[\]{}]")


def _alias_expansion(root: Any) -> int:
    """Nodes the aliases of a composed document add when it is expanded; a recursive alias raises ConstructorError."""
    import yaml

    mapping, sequence = yaml.MappingNode, yaml.SequenceNode
    # Only collections are tracked (an alias of a scalar adds one node, which the file's length already bounds).
    sizes: dict[int, int] = {}  # id(collection) -> nodes in its expanded subtree, each shared collection sized once
    own = 0  # nodes written in the file: each distinct collection and its scalar children
    open_nodes: set[int] = set()  # collections whose subtree is being sized: meeting one again is a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        kind = type(node)
        if kind is not mapping and kind is not sequence:
            continue
        children = [n for pair in node.value for n in pair] if kind is mapping else node.value
        if done:
            size = 1
            for c in children:
                size += sizes.get(id(c), 1)
            sizes[id(node)] = size
            open_nodes.discard(id(node))
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to a node that contains it (recursive "
                                                    "alias)", node.start_mark)
        open_nodes.add(id(node))
        stack.append((node, True))
        for c in children:
            ckind = type(c)
            if ckind is mapping or ckind is sequence:
                if id(c) not in sizes:
                    stack.append((c, False))
            else:
                own += 1
        own += 1
    return sizes.get(id(root), 1) - max(own, 1)


@functools.cache
def safe_loader() -> Any:
    """The planner's one YAML loader class: safe, C-accelerated where built, bounding aliases and integer literals."""
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser/composer is ~10x faster

    class BoundedSafeLoader(base):  # type: ignore[misc, valid-type]
        """Composes with the (C) safe loader, refuses alias bombs and recursive aliases before constructing."""

        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            # An alias is '*name' after a space or flow indicator: text without one has none and skips the walk
            # (most catalog files have '*' only inside words, e.g. "624* BF16").
            self.may_alias = not isinstance(stream, str) or _ALIAS_RE.search(stream) is not None

        def get_single_data(self) -> Any:
            node = self.get_single_node()
            if node is None:
                return None
            extra = _alias_expansion(node) if self.may_alias else 0
            if extra > MAX_ALIAS_EXPANSION:
                raise yaml.constructor.ConstructorError(
                    None, None, f"aliases expand the document by {extra} nodes; at most {MAX_ALIAS_EXPANSION} are "
                    "allowed (a YAML alias bomb?)", node.start_mark)
            return self.construct_document(node)

        def construct_yaml_int(self, node: Any) -> Any:
            # The length first (a long sexagesimal '1:2:3:...' is slow to convert), then the value: a hex or
            # binary literal can exceed 4300 decimal digits, which str() (every message) refuses to print.
            value = None if len(node.value) > MAX_INT_CHARS else super().construct_yaml_int(node)
            if value is None or abs(value) >= _INT_LIMIT:
                raise yaml.constructor.ConstructorError(
                    None, None, f"integer literal too long: at most {MAX_INT_CHARS} digits are read", node.start_mark)
            return value

    BoundedSafeLoader.add_constructor("tag:yaml.org,2002:int", BoundedSafeLoader.construct_yaml_int)
    return BoundedSafeLoader


def parse_yaml(text: str, path: Path | str) -> Any:
    """Parse YAML text (safe loader only); bad syntax, alias bombs and huge ints raise InvalidInputError naming `path`."""
    import yaml  # imported here: the cached hot path reads JSON only

    try:
        return yaml.load(text, Loader=safe_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise InvalidInputError(f"{path}{where}: invalid YAML: {clip(str(exc.problem or exc))}") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: invalid YAML: {clip(str(exc))}") from None
    except RecursionError:
        raise InvalidInputError(f"{path}: invalid YAML: nested too deeply") from None
    except ValueError as exc:  # a number the constructor cannot convert (e.g. an over-long integer)
        raise InvalidInputError(f"{path}: invalid YAML: {clip(str(exc))}") from None


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
    return parse_json(read_text(path, what), path)


def parse_json(text: str, source: Path | str, hint: str = "") -> Any:
    """Parse JSON text; every failure is one InvalidInputError naming `source` (line and column for syntax)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}{hint}") from None
    except RecursionError:
        raise InvalidInputError(f"{source}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits (Python's int-string limit)
        raise InvalidInputError(f"{source}: invalid JSON: {json_value_error(exc)}") from None


def json_value_error(exc: ValueError) -> str:
    """What json.loads' non-syntax ValueError means, in one short line (it is Python's int-string limit)."""
    if "integer string conversion" in str(exc):
        return f"integer literal too long: at most {MAX_INT_CHARS} digits are read"
    return clip(str(exc), 120)


def format_validation_error(path: Path | str, exc: Any) -> list[str]:
    """Turn a pydantic ValidationError into lines 'file: devices[3].field: message'."""
    lines = []
    for err in exc.errors():
        loc = ""
        for part in err.get("loc", ()):
            if isinstance(part, int):
                loc += f"[{part}]"
            else:  # a key the user wrote: it may be long or hold control characters
                loc += ("." if loc else "") + (show(part, 60) if isinstance(part, str) else preview(part, 60))
        # pydantic messages can quote the input (custom validators, enum errors): keep them to one short line
        msg = clip(str(err.get("msg", "invalid")))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{path}: {loc or '(top level)'}: {msg}")
    return lines


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write text to `path` atomically: temp file in the same directory, fsync, rename. `durable=False` skips the
    fsync, for caches only: the rename is still atomic, and a file a power cut leaves empty reads as a cache miss
    (a cold `planner recommend` writes ~35 cache files, and 35 fsyncs cost ~0.1-0.3 s on a VM's disk)."""
    import tempfile  # here, not at the top: reading (the hot path) never pays for it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
