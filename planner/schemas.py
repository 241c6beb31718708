"""Generate the committed JSON schemas (hwdb/schema.json, hwdb/fabrics/schema.json, profiles/schema.json,
planner/data/deploy.schema.json) from the pydantic models that own them.

Run `python -m planner.schemas` after changing a schema; a test fails while the committed files are stale.
This module only reads the schemas: nothing in the package imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from planner.fitcheck import schema_json as deploy
from planner.hardware.catalog import schema_json as hw
from planner.hardware.schema import FabricFile
from planner.models.profiles import schema_json as prof
from planner.yamlio import atomic_write_text


def schemas() -> dict[str, dict]:
    """Schema documents keyed by their path relative to the repository root."""
    return {"hwdb/schema.json": hw(), "profiles/schema.json": prof(), "hwdb/fabrics/schema.json": FabricFile.model_json_schema(),
            "planner/data/deploy.schema.json": deploy()}


def render(schema: dict) -> str:
    """Stable text form of a schema."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Write the schemas into the source tree."""
    root = Path(__file__).resolve().parent.parent
    for rel, schema in schemas().items():
        atomic_write_text(root / rel, render(schema))
        print(f"wrote {rel}")


if __name__ == "__main__":
    main()
