"""AMD GPUs: `read_raw()` reads sysfs memory counters, the KFD topology and amd-smi / rocm-smi; the parsers of their
output and the merge into one record per GPU are pure."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.hardware.probe._shared import GIB, MIB, Absent, int_or_none, parse_kv_lines, read_int, read_text, run


def read_raw() -> dict:
    """AMD GPUs: sysfs memory counters, KFD topology (gfx target, APU) and amd-smi / rocm-smi names."""
    drm = Path("/sys/class/drm")
    tool_name = "amd-smi" if shutil.which("amd-smi") else "rocm-smi" if shutil.which("rocm-smi") else None
    if not drm.is_dir() and tool_name is None:
        raise Absent("no /sys/class/drm and no amd-smi / rocm-smi")
    cards = []
    for card in sorted(drm.glob("card*"), key=_card_number) if drm.is_dir() else []:
        if not re.fullmatch(r"card\d+", card.name):
            continue  # connectors such as card0-DP-1
        dev = card / "device"
        if read_text(dev / "vendor") != "0x1002":
            continue
        cards.append({
            "card": card.name,
            "pci_bus_id": os.path.basename(os.path.realpath(dev)).lower(),
            "pci_device_id": read_text(dev / "device"),
            "name": read_text(dev / "product_name") or None,
            "vram_total_bytes": read_int(dev / "mem_info_vram_total"),
            "vram_used_bytes": read_int(dev / "mem_info_vram_used"),
            "gtt_total_bytes": read_int(dev / "mem_info_gtt_total"),
            "gtt_used_bytes": read_int(dev / "mem_info_gtt_used"),
            "unique_id": read_text(dev / "unique_id") or None,
        })
    kfd = _kfd_nodes(Path("/sys/class/kfd/kfd/topology/nodes"))
    tool_rows: list[dict] = []
    tool_error = None
    # The tools take a second or more: run them only where sysfs found AMD GPUs or cannot be read (a restricted
    # container), not on every machine that merely has ROCm installed.
    if tool_name is not None and (cards or not drm.is_dir()):
        try:
            if tool_name == "amd-smi":
                rc, out = run(["amd-smi", "static", "--asic", "--bus", "--vram", "--json"], timeout=4.0)
                if rc != 0:  # older amd-smi lack some of these flags
                    rc, out = run(["amd-smi", "static", "--json"], timeout=4.0)
                tool_rows = parse_amd_smi(out)
            else:
                _rc, out = run(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showbus", "--json"], timeout=4.0)
                tool_rows = parse_rocm_smi(out)
        except (RuntimeError, Absent) as exc:
            tool_error = f"{tool_name}: {exc}"
    gpus = merge_amd_sources(cards, kfd, tool_rows)
    used = [name for name, found in (("sysfs", cards), (tool_name, tool_rows)) if name and found]
    result: dict[str, Any] = {"tool": "+".join(used) or None, "gpus": gpus}
    if tool_error:
        result["errors"] = {"tool": tool_error}
    return result


def _card_number(path: Path) -> int:
    """Sort key so card10 comes after card9."""
    m = re.search(r"(\d+)$", path.name)
    return int(m.group(1)) if m else 1_000_000


def _kfd_nodes(root: Path) -> dict[str, dict]:
    """KFD topology nodes that are GPUs, keyed by PCI bus id: gfx target and whether the node also has CPU cores (an APU)."""
    out: dict[str, dict] = {}
    if not root.is_dir():
        return out
    for node in root.iterdir():
        props = parse_kfd_properties(read_text(node / "properties") or "")
        if not props.get("simd_count"):
            continue  # a CPU-only node
        domain = props.get("domain", 0)
        loc = props.get("location_id", 0)
        bdf = f"{domain:04x}:{loc >> 8:02x}:{(loc >> 3) & 0x1F:02x}.{loc & 0x7:x}"
        out[bdf] = {"gfx_target": gfx_target_from_version(props.get("gfx_target_version")),
                    "apu": bool(props.get("cpu_cores_count"))}
    return out


def parse_kfd_properties(text: str) -> dict[str, int]:
    """Parse a KFD topology node's `properties` file into integers."""
    return {k: v for k, v in ((k, int_or_none(v)) for k, v in parse_kv_lines(text).items()) if v is not None}


def gfx_target_from_version(version: int | None) -> str | None:
    """KFD gfx_target_version (e.g. 90402, 110501, 90010) to an LLVM target ('gfx942', 'gfx1151', 'gfx90a')."""
    if not version:
        return None
    major, minor, step = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor:x}{step:x}"


def parse_amd_smi(text: str) -> list[dict]:
    """Rows from `amd-smi static --json` (a list, {"gpu_data": [...]}, or {"GPU 0": ...} depending on version)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if isinstance(data, dict):
        data = data.get("gpu_data") or data.get("gpus") or list(data.values())
    rows = []
    for i, item in enumerate(data if isinstance(data, list) else []):
        if not isinstance(item, dict):
            continue
        asic = item.get("asic") if isinstance(item.get("asic"), dict) else {}
        bus = item.get("bus") if isinstance(item.get("bus"), dict) else {}
        vram = item.get("vram") if isinstance(item.get("vram"), dict) else {}
        size = vram.get("size")
        total = None
        if isinstance(size, dict):  # {"value": 196592, "unit": "MB"}: amd-smi's MB are MiB
            total = int_or_none(size.get("value"))
            total = total * {"MB": MIB, "GB": GIB, "B": 1}.get(str(size.get("unit", "MB")).upper(), MIB) if total else None
        elif int_or_none(size) is not None:
            total = int_or_none(size) * MIB  # type: ignore[operator]
        rows.append({
            "index": int_or_none(item.get("gpu")) if int_or_none(item.get("gpu")) is not None else i,
            "name": _clean(asic.get("market_name")),
            "gfx_target": _clean(asic.get("target_graphics_version")),
            "pci_bus_id": (_clean(bus.get("bdf")) or "").lower() or None,
            "vram_total_bytes": total,
        })
    return rows


def parse_rocm_smi(text: str) -> list[dict]:
    """Rows from `rocm-smi --showproductname --showmeminfo vram --showbus --json` ({"card0": {...}, "system": ...})."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return []
    rows = []
    for key, fields in (data.items() if isinstance(data, dict) else []):
        m = re.fullmatch(r"card(\d+)", str(key))
        if not m or not isinstance(fields, dict):
            continue
        f = {str(k).lower(): v for k, v in fields.items()}
        rows.append({
            "index": int(m.group(1)),
            "name": _clean(f.get("card series")) or _clean(f.get("card model")),
            "gfx_target": _clean(f.get("gfx version")),
            "pci_bus_id": (_clean(f.get("pci bus")) or "").lower() or None,
            "vram_total_bytes": int_or_none(f.get("vram total memory (b)")),
            "vram_used_bytes": int_or_none(f.get("vram total used memory (b)")),
        })
    return sorted(rows, key=lambda r: r["index"])


def merge_amd_sources(cards: list[dict], kfd: Mapping[str, dict], tool_rows: list[dict]) -> list[dict]:
    """One record per AMD GPU: sysfs counters, KFD gfx target / APU flag, tool names; matched by PCI bus id, else order."""
    by_bus = {r["pci_bus_id"]: r for r in tool_rows if r.get("pci_bus_id")}
    base = cards if cards else [{} for _ in tool_rows]
    gpus = []
    for i, card in enumerate(base):
        bus = card.get("pci_bus_id")
        tool = by_bus.get(bus) if bus else None
        if tool is None and not by_bus and i < len(tool_rows):
            tool = tool_rows[i]
        tool = tool or {}
        topo = kfd.get(bus or tool.get("pci_bus_id") or "", {})
        gpus.append({
            "index": i,
            "name": tool.get("name") or card.get("name") or (f"AMD GPU {card['pci_device_id']}" if card.get("pci_device_id") else None),
            "gfx_target": tool.get("gfx_target") or topo.get("gfx_target"),
            "pci_bus_id": bus or tool.get("pci_bus_id"),
            "unique_id": card.get("unique_id"),
            "vram_total_bytes": card.get("vram_total_bytes") or tool.get("vram_total_bytes"),
            "vram_used_bytes": card.get("vram_used_bytes") if card.get("vram_used_bytes") is not None else tool.get("vram_used_bytes"),
            "gtt_total_bytes": card.get("gtt_total_bytes"),
            "gtt_used_bytes": card.get("gtt_used_bytes"),
            "apu": topo.get("apu"),
        })
    return gpus


def _clean(value: Any) -> str | None:
    """A stripped string, or None for missing and 'N/A' values."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and value.upper() != "N/A" else None
