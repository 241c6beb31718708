"""The device catalog: a loader that reports every problem at once, a cache, and an explicit resolver.

Units (see planner.hardware.schema): memory in GiB (2**30 bytes), bandwidth in decimal GB/s, dense TFLOPS/TOPS.
The pydantic schema is imported only to validate files; cached catalogs load as plain DeviceRecords.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import CatalogError, NotFoundError, close_matches, normalize_name
from planner.cache import cached_validated
from planner.hardware.device import DeviceRecord, FabricRecord
from planner.lookup import NameIndex
from planner.paths import data_dir
from planner.yamlio import format_validation_error, load_yaml_dir

if TYPE_CHECKING:
    from planner.hardware.schema import DeviceSpec


def __getattr__(name: str) -> Any:
    """Lazy access to the pydantic schema classes (DeviceSpec, CatalogFile, Derating)."""
    if name in ("DeviceSpec", "CatalogFile", "Derating"):
        from planner.hardware import schema  # lazy: pydantic only when the schema itself is asked for

        return getattr(schema, name)
    raise AttributeError(name)


def _expand_memory_options(device: DeviceSpec) -> list[DeviceSpec]:
    """One entry per memory size a user can buy, so 'm3-max-128gb' resolves."""
    out = [device]
    for gib in device.memory_options_gib:
        size = f"{gib:g}"
        variant = device.model_copy(
            update={
                "id": f"{device.id}-{size}gb",
                "name": f"{device.name} {size}GB",
                "memory_gib": gib,
                "memory_options_gib": [],
                "aliases": [f"{a} {size}GB" for a in device.aliases],
                "nvml_names": [],
            }
        )
        out.append(variant)
    return out


def memory_variant_ids(devices: Iterable[DeviceSpec]) -> set[str]:
    """Ids of the extra memory configurations expanded from memory_options_gib ('m3-max-48gb', not 'm3-max')."""
    return {f"{d.id}-{gib:g}gb" for d in devices for gib in d.memory_options_gib}


def catalog_summary(devices: Iterable[DeviceSpec]) -> str:
    """'120 devices, 204 memory configurations': the one way the CLI and the TUI count the catalog."""
    devices = list(devices)
    variants = memory_variant_ids(devices)
    base = sum(1 for d in devices if d.id not in variants)
    return f"{base} devices, {len(devices)} memory configurations" if len(devices) != base else f"{base} devices"


class Catalog:
    """All devices, looked up by id, alias or NVML name (exact, case- and punctuation-insensitive)."""

    def __init__(self, devices: Iterable[DeviceSpec]):
        self._names = NameIndex("device", devices, lambda d: (d.id, d.name, *d.aliases, *d.nvml_names),
                                lambda d: (d.id, *d.aliases))
        self.devices: dict[str, DeviceSpec] = self._names.entries
        self._loose: dict[str, set[str]] | None = None

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self):
        return iter(self.devices.values())

    def get(self, name: str) -> DeviceSpec:
        """Resolve a device by id, then alias / display / NVML name; raise with close candidates on a miss."""
        return self._names.resolve(name)

    def by_nvml_name(self, nvml_name: str) -> DeviceSpec | None:
        """Match a name reported by NVML (or another probe) exactly; None if not catalogued."""
        ids = self._names.ids_for(nvml_name)
        return self.devices[next(iter(ids))] if len(ids) == 1 else None

    def match_probed(self, name: str, pci_device_id: str | None = None,
                     pci_subsystem_id: str | None = None) -> tuple[DeviceSpec | None, str]:
        """A probed GPU's entry and how it was found: its name exactly (case and punctuation aside), then without the
        vendor and brand words ('NVIDIA', 'GeForce'), then its PCI device id through NVIDIA's table of product names
        per id (planner/data/nvidia_pci_ids.csv); each step only on one unambiguous match. (None, '') on a miss."""
        spec = self.by_nvml_name(name)
        if spec is not None:
            return spec, ""
        loose = self._loose_index().get(_loose(name), set())
        if len(loose) == 1:
            spec = self.devices[next(iter(loose))]
            return spec, f"matched to {spec.id} by its name without vendor and brand words"
        if pci_device_id:
            products = nvidia_products(pci_device_id, pci_subsystem_id)
            ids = {d.id for p in products for d in [self.by_nvml_name(p)] if d is not None}
            if len(ids) == 1:
                spec = self.devices[next(iter(ids))]
                return spec, f"matched to {spec.id} by its PCI device id {pci_device_id} ({products[0]} in NVIDIA's driver table)"
        return None, ""

    def _loose_index(self) -> dict[str, set[str]]:
        if getattr(self, "_loose", None) is None:
            index: dict[str, set[str]] = {}
            for d in self.devices.values():
                for n in (d.id, d.name, *d.aliases, *d.nvml_names):
                    index.setdefault(_loose(n), set()).add(d.id)
            self._loose = index
        return self._loose


# Words that name the vendor or the consumer brand, not the product: 'NVIDIA GeForce RTX 4090' is 'RTX 4090'.
# 'Laptop', 'Ti', 'D', 'Max-Q' and memory sizes stay: they name different products.
_BRAND_WORDS = re.compile(r"\b(nvidia|geforce)\b", re.I)


def _loose(name: str) -> str:
    return normalize_name(_BRAND_WORDS.sub(" ", name))


_PCI_TABLE: dict[str, list[tuple[str, str]]] | None = None


def nvidia_products(device_id: str, subsystem_id: str | None = None) -> list[str]:
    """NVIDIA product names for a PCI device id ('2684'), narrowed by the subsystem id ('10de:1463') where the
    table tells products of one id apart by it (planner/data/nvidia_pci_ids.csv, from NVIDIA's driver README)."""
    global _PCI_TABLE
    if _PCI_TABLE is None:
        import csv  # lazy: only a probed GPU that is not matched by name needs the table

        table: dict[str, list[tuple[str, str]]] = {}
        path = Path(__file__).resolve().parent.parent / "data" / "nvidia_pci_ids.csv"
        with path.open(encoding="utf-8") as fh:
            rows = csv.reader(line for line in fh if not line.startswith("#"))
            next(rows, None)
            for dev, sub_vendor, sub_device, product in rows:
                table.setdefault(dev, []).append((f"{sub_vendor}:{sub_device}" if sub_vendor else "", product))
        _PCI_TABLE = table
    rows = _PCI_TABLE.get(device_id.lower(), [])
    exact = [p for sub, p in rows if sub and sub == (subsystem_id or "").lower()]
    plain = [p for sub, p in rows if not sub]
    return list(dict.fromkeys(exact or plain or [p for _, p in rows]))


def parse_catalog_files(files: Sequence[tuple[Path, object]]) -> list[DeviceSpec]:
    """Validate loaded YAML documents; collect every problem as 'file: path.to.field: message'."""
    # lazy: pydantic runs only on a cache miss; cached catalogs come back as plain records (planner.cache)
    from pydantic import ValidationError

    from planner.hardware.schema import CatalogFile

    problems: list[str] = []
    devices: list[DeviceSpec] = []
    seen: dict[str, Path] = {}
    for path, doc in files:
        try:
            cat = CatalogFile.model_validate(doc)
        except ValidationError as exc:
            problems.extend(format_validation_error(path, exc))
            continue
        for i, dev in enumerate(cat.devices):
            for d in _expand_memory_options(dev):
                if d.id in seen:
                    problems.append(f"{path}: devices[{i}].id: duplicate id '{d.id}' (also in {seen[d.id]})")
                seen[d.id] = path
                devices.append(d)
    if problems:
        raise CatalogError(problems)
    return devices


def load_catalog(extra_dirs: Sequence[Path] = (), builtin: bool = True) -> Catalog:
    """Load the built-in catalog, then user catalogs merged over it (same id replaces)."""
    dirs: list[Path] = []
    if builtin:
        dirs.append(data_dir("hwdb"))
    dirs.extend(Path(d) for d in extra_dirs)
    merged: dict[str, DeviceSpec] = {}
    for d in dirs:
        for dev in cached_validated("hwdb", d, DeviceRecord, lambda p=d: parse_catalog_files(load_yaml_dir(p))):
            merged[dev.id] = dev
    return Catalog(merged.values())


def validate_catalog_dir(path: Path) -> list[DeviceSpec]:
    """Validate one catalog directory (or file) without the cache; raise CatalogError listing every problem."""
    return parse_catalog_files(load_yaml_dir(Path(path)))


def schema_json() -> dict:
    """The JSON schema of a catalog file, as committed in hwdb/schema.json."""
    from planner.hardware.schema import CatalogFile  # lazy: keeps pydantic off recommend's start-up path

    return CatalogFile.model_json_schema()


_GIB_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gib|gb|g|mib|mb|tib|tb)?\s*$", re.I)


def parse_memory(text: str) -> float:
    """Parse '24GiB', '24GB', '24', '512MiB' into GiB; GB is read as GiB, as GPU memory is sold."""
    m = _GIB_RE.match(text)
    if not m:
        raise ValueError(f"cannot read memory size '{text}' (expected e.g. 24GiB or 80GB)")
    value = float(m.group(1))
    unit = (m.group(2) or "gib").lower()
    scale = {"gib": 1, "gb": 1, "g": 1, "mib": 1 / 1024, "mb": 1 / 1024, "tib": 1024, "tb": 1024}[unit]
    return value * scale


def load_fabrics(extra_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """Inter-node fabrics (hwdb/fabrics/*.yaml plus any user directories), keyed by id."""

    def parse(path: Path) -> list:
        # lazy: pydantic runs only on a cache miss (see parse_catalog_files)
        from pydantic import ValidationError

        from planner.hardware.schema import FabricFile

        problems, out = [], []
        for f, doc in load_yaml_dir(path):
            try:
                out.extend(FabricFile.model_validate(doc).fabrics)
            except ValidationError as exc:
                problems.extend(format_validation_error(f, exc))
        if problems:
            raise CatalogError(problems)
        return out

    fabrics: dict[str, Any] = {}
    for d in [data_dir("hwdb") / "fabrics", *map(Path, extra_dirs)]:
        for fab in cached_validated("fabrics", d, FabricRecord, lambda p=d: parse(p)):
            fabrics[fab.id] = fab
    return fabrics


def get_fabric(name: str, fabrics: dict[str, Any]) -> Any:
    """Resolve a fabric by id or alias (case- and punctuation-insensitive)."""
    key = normalize_name(name)
    for fab in fabrics.values():
        if key == normalize_name(fab.id) or key in (normalize_name(a) for a in fab.aliases):
            return fab
    raise NotFoundError("fabric", name, close_matches(name, list(fabrics)))
