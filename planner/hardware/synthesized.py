"""Devices the planner makes from probed figures (a machine's CPU target, an uncatalogued GPU, a MIG slice), validated
against the catalog schema once per machine and then read back from the user cache."""

from __future__ import annotations

import json
import os
from typing import Any

from planner.cache import checksum, schema_key
from planner.hardware.device import DeviceRecord
from planner.paths import user_cache_dir


# Assumed: how many validated probed devices the cache keeps (a machine has a CPU target and a few uncatalogued GPUs
# or MIG slices; a laptop that docks to an eGPU a couple more).
_PROBED_KEEP = 32


def validated_device(data: dict) -> Any:
    """`data` validated as a DeviceSpec; raises ValueError('field: message') when it cannot form one.

    A probed machine's CPU target and its uncatalogued GPUs or MIG slices come from the same figures on every run, so
    a device that validated before comes back from the user cache as a DeviceRecord, and pydantic (its import and
    schema build cost more than the rest of `planner recommend`'s probe) is imported only for a device not seen before.
    """
    key = checksum(json.dumps(data, sort_keys=True, default=str).encode())
    use_cache = os.environ.get("PLANNER_NO_CACHE") != "1"
    path = user_cache_dir() / f"probed-devices-{schema_key()}.json"
    stored: dict[str, dict] = {}
    if use_cache:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if key in stored:
                return DeviceRecord(**stored[key])
        except (OSError, ValueError, TypeError, AttributeError):
            stored = {}  # absent or unreadable: validated again below
    from pydantic import ValidationError  # lazy: only a device not seen before

    from planner.hardware.schema import DeviceSpec

    try:
        spec = DeviceSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(device)"
        raise ValueError(f"{where}: {first.get('msg')}") from None
    if use_cache:
        stored = {k: v for k, v in list(stored.items())[-(_PROBED_KEEP - 1):]} if isinstance(stored, dict) else {}
        stored[key] = spec.model_dump(mode="json")
        try:
            from planner.cachefiles import write_keyed  # lazy: only a miss writes

            write_keyed(path, json.dumps(stored, sort_keys=True))
        except OSError:
            pass  # a read-only home must not stop planning
    return spec
