"""Generate the committed JSON schemas (hwdb/schema.json, profiles/schema.json) from the pydantic models.

Run `python -m planner.schemas` after changing a schema; a test fails while the committed files are stale.
"""

from __future__ import annotations

import json
from pathlib import Path


def schemas() -> dict[str, dict]:
    """Schema documents keyed by their path relative to the repository root."""
    from planner.hardware.catalog import schema_json as hw
    from planner.models.profiles import schema_json as prof

    from planner.fitcheck import schema_json as deploy
    from planner.hardware.schema import FabricFile

    return {"hwdb/schema.json": hw(), "profiles/schema.json": prof(), "hwdb/fabrics/schema.json": FabricFile.model_json_schema(),
            "planner/data/deploy.schema.json": deploy()}


def render(schema: dict) -> str:
    """Stable text form of a schema."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Write the schemas into the source tree."""
    from planner.yamlio import atomic_write_text

    root = Path(__file__).resolve().parent.parent
    for rel, schema in schemas().items():
        atomic_write_text(root / rel, render(schema))
        print(f"wrote {rel}")


if __name__ == "__main__":
    main()
