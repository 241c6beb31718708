"""Build planner/data/nvidia_pci_ids.csv from the 'Compatible GPUs' table of NVIDIA's open GPU kernel modules README.

Usage: python benchmarks/data/build_nvidia_pci_ids.py README.md
The README is NVIDIA/open-gpu-kernel-modules README.md (https://github.com/NVIDIA/open-gpu-kernel-modules); the table
lists each product name NVML reports with its PCI device id, and where one device id carries several products, the
PCI subsystem vendor and device ids that tell them apart.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "planner" / "data" / "nvidia_pci_ids.csv"
_ROW = re.compile(r"^\|\s*(?P<name>[^|]+?)\s*\|\s*(?P<ids>[0-9A-F]{4}(?: [0-9A-F]{4} [0-9A-F]{4})?)\s*\|\s*$")


def main(readme: Path) -> None:
    """Write the CSV (device id, subsystem vendor, subsystem device, product name), one row per table row."""
    text = readme.read_text(encoding="utf-8")
    version = re.search(r"version (\d+\.\d+(?:\.\d+)?)", text)
    rows = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            ids = m.group("ids").split()
            rows.append([ids[0].lower(), *(i.lower() for i in ids[1:]), *([""] * (3 - len(ids))), m.group("name")])
    rows = sorted({tuple(r) for r in rows})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        fh.write(f"# NVIDIA/open-gpu-kernel-modules README.md 'Compatible GPUs' table, driver {version.group(1) if version else '?'}"
                 " (commit df1c9a3de2be4b130f4fc7680f7198193d8ac6ad); built by benchmarks/data/build_nvidia_pci_ids.py\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["device_id", "subsystem_vendor", "subsystem_device", "product_name"])
        w.writerows(rows)
    print(f"{OUT}: {len(rows)} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
