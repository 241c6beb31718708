"""Write planner/data/validated/{hwdb,profiles}.json: the bundled catalog and profiles, validated, with the content
key of the YAML they were made from (planner.cache.content_key).

    python benchmarks/build_validated.py [--check]

The first `planner recommend` after an install reads these instead of importing pydantic and validating every file
(planner.cache.cached_validated); a file whose key does not match the YAML beside it is ignored, so a stale one costs
time, never a wrong answer. Rerun after any change to hwdb/, profiles/, the schema modules or the version;
tests/unit/test_cold_start.py fails until you do. --check: exit 1 if a file would change, write nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def expected() -> dict[Path, str]:
    """Each shipped file and the text it should hold now."""
    from planner.cache import SHIPPED_DIR, shipped_text
    from planner.hardware.catalog import parse_catalog_files
    from planner.models.profiles import parse_profile_files
    from planner.paths import data_dir
    from planner.yamlio import load_yaml_dir

    out = {}
    for kind, parse in (("hwdb", parse_catalog_files), ("profiles", parse_profile_files)):
        d = data_dir(kind)
        out[SHIPPED_DIR / f"{kind}.json"] = shipped_text(d, parse(load_yaml_dir(d)))
    return out


def main() -> int:
    """Write (or with --check, compare) the shipped files."""
    from planner.yamlio import atomic_write_text

    stale = []
    for path, text in expected().items():
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if "--check" not in sys.argv:
            atomic_write_text(path, text)
    for p in stale:
        print(f"{'stale' if '--check' in sys.argv else 'wrote'} {p.relative_to(ROOT)}")
    return 1 if stale and "--check" in sys.argv else 0


if __name__ == "__main__":
    raise SystemExit(main())
