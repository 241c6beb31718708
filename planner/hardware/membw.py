"""This machine's achievable memory read bandwidth: measured once (bounded, well under a second), cached per machine.

What is measured: numpy reductions (bitwise OR over uint64) of a buffer larger than the last-level cache, split over
the threads llama.cpp would use (one per physical core this process may run on), each thread reading its own slice;
the best of a few passes is kept (STREAM reports the best of its passes too). Reductions release the GIL, so the
threads read in parallel. Reading is what decode does: every weight byte is read once per token.

How it is used: like a calibration record's copy bandwidth (planner.measure.calibration), it caps the share of the
catalog's (or assumed) peak every engine's decode may reach on this CPU; a calibration record of the engine's own
kernels (planner bench --save) still wins.

Cache: `user_cache_dir()/membw.json`, one entry per machine (key: CPU model, core count, memory size), with the date,
written atomically. A cache file that cannot be read is measured again and replaced (the planner wrote it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from planner.paths import user_cache_dir

CACHE_VERSION = 1
MIB = 2**20
# The buffer: four times the last-level cache (so little of it can be served from cache), at least 64 MiB (VMs often
# hide their cache sizes) and at most 512 MiB (so allocating and touching it stays within the time budget), and never
# more than an eighth of the memory available now. Assumed bounds, chosen for the sub-second budget (on the 2-vCPU
# EPYC VM this project is built on: 128 MiB, about 0.3 s in all).
LLC_MULTIPLE = 4
MIN_BUFFER_BYTES = 64 * MIB
MAX_BUFFER_BYTES = 512 * MIB
DEFAULT_LLC_BYTES = 32 * MIB  # assumed when sysfs does not say (a common desktop/server L3 per CCD)
# Timed passes: at most this many, and no more started once this much time went on passes (the buffer's first touch
# is not counted: it is the allocation). Assumed: 3-8 passes keep the best-of stable to a few percent on a quiet machine.
MAX_PASSES = 8
MIN_PASSES = 3
PASS_BUDGET_S = 0.2


@dataclass(frozen=True)
class ReadBandwidth:
    """One measurement of this machine's read bandwidth."""

    read_gb_s: float  # decimal GB/s, bytes read per second over all threads (best pass)
    threads: int  # threads that read in parallel
    buffer_bytes: int  # bytes read per pass
    passes: int  # timed passes
    measured_at: str  # ISO 8601 UTC
    key: str  # the machine it was measured on (machine_key)

    def describe(self) -> str:
        """e.g. '19.8 GB/s read (measured 2026-12-06, 2 threads, 128 MiB buffer)'."""
        return (f"{self.read_gb_s:.1f} GB/s read (measured {self.measured_at[:10]}, {self.threads} thread(s), "
                f"{self.buffer_bytes // MIB} MiB buffer)")


def machine_key(cpu_model: str | None, cores: int | None, ram_total_bytes: int | None) -> str:
    """Cache key: CPU model, core count and memory size (GiB, rounded); a change to any of them measures again."""
    gib = round((ram_total_bytes or 0) / 2**30)
    return f"{(cpu_model or 'unknown cpu').strip()}|{cores or 0} cores|{gib} GiB"


def cache_path() -> Path:
    """Where measurements are cached: user_cache_dir()/membw.json."""
    return user_cache_dir() / "membw.json"


def _read_cache(path: Path) -> dict[str, dict]:
    """The cached entries by key; an unreadable or malformed file counts as empty (it is re-measured and replaced)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or not isinstance(doc.get("machines"), dict):
        return {}
    return {k: v for k, v in doc["machines"].items() if isinstance(k, str) and isinstance(v, dict)}


def _entry(raw: dict) -> ReadBandwidth | None:
    """A cache entry as a ReadBandwidth, or None when a field is missing or out of range."""
    try:
        got = ReadBandwidth(read_gb_s=float(raw["read_gb_s"]), threads=int(raw["threads"]),
                            buffer_bytes=int(raw["buffer_bytes"]), passes=int(raw["passes"]),
                            measured_at=str(raw["measured_at"]), key=str(raw["key"]))
    except (KeyError, TypeError, ValueError):
        return None
    # 20 TB/s is above any memory system the catalog holds; NaN fails both comparisons.
    ok = 0 < got.read_gb_s <= 20000 and got.threads >= 1 and got.buffer_bytes > 0 and got.passes >= 1
    return got if ok else None


def cached(key: str) -> ReadBandwidth | None:
    """The cached measurement for this machine, or None."""
    raw = _read_cache(cache_path()).get(key)
    return _entry(raw) if raw is not None else None


def store(m: ReadBandwidth) -> Path:
    """Add (or replace) the machine's entry in the cache file, atomically."""
    from planner.yamlio import atomic_write_text

    path = cache_path()
    machines = _read_cache(path)
    machines[m.key] = asdict(m)
    atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "machines": machines}, indent=1, sort_keys=True) + "\n")
    return path


def llc_bytes(sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Total last-level cache: the highest cache level's size times its instances (distinct shared_cpu_list)."""
    best_level, size, instances = 0, 0, set()
    try:
        cpus = sorted(p for p in sysfs.glob("cpu[0-9]*") if p.name[3:].isdigit())
    except OSError:
        cpus = []
    for cpu in cpus:
        for idx in (cpu / "cache").glob("index*"):
            try:
                level = int((idx / "level").read_text().strip())
                if (idx / "type").read_text().strip() == "Instruction":
                    continue
                text = (idx / "size").read_text().strip().upper()
                shared = (idx / "shared_cpu_list").read_text().strip()
            except (OSError, ValueError):
                continue
            nbytes = _size(text)
            if nbytes is None:
                continue
            if level > best_level:
                best_level, size, instances = level, nbytes, {shared}
            elif level == best_level:
                instances.add(shared)
    return size * len(instances) if size else DEFAULT_LLC_BYTES


def _size(text: str) -> int | None:
    """sysfs cache sizes: '32768K', '1M', '512'."""
    mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * mult if digits.isdigit() else None


def buffer_size(llc: int, available_bytes: int | None) -> int:
    """Bytes to read per pass: 4x the LLC within [64 MiB, 512 MiB], at most an eighth of the available memory."""
    n = min(max(LLC_MULTIPLE * llc, MIN_BUFFER_BYTES), MAX_BUFFER_BYTES)
    if available_bytes:
        n = min(n, available_bytes // 8)
    return max(n - n % (8 * 4096), 8 * 4096)


def measure_read_bandwidth(threads: int, buffer_bytes: int, key: str = "") -> ReadBandwidth:
    """Time parallel reductions over a buffer of `buffer_bytes`; the best pass's bytes per second."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np  # lazy: numpy only when measuring (the cache is read without it)

    threads = max(1, threads)
    buf = np.ones(buffer_bytes // 8, dtype=np.uint64)  # touches every page now, not in the first timed pass
    slices = np.array_split(buf, threads)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="planner-membw") as pool:
        def one_pass() -> float:
            t = time.perf_counter()
            for _ in pool.map(np.bitwise_or.reduce, slices):
                pass
            return time.perf_counter() - t

        one_pass()  # warm-up: threads started, TLB filled
        times: list[float] = []
        spent = 0.0
        while len(times) < MAX_PASSES and (len(times) < MIN_PASSES or spent < PASS_BUDGET_S):
            times.append(one_pass())
            spent += times[-1]
    best = min(times)
    return ReadBandwidth(read_gb_s=round(buf.nbytes / best / 1e9, 2), threads=threads, buffer_bytes=int(buf.nbytes),
                         passes=len(times), measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), key=key)


def llama_threads(physical_cores: int | None, usable_cores: int | None) -> int:
    """Threads llama.cpp uses by default: one per physical core, within the CPUs this process may use."""
    n = physical_cores or usable_cores or os.cpu_count() or 1
    return max(1, min(n, usable_cores or n))


Measurer = Callable[[int, int, str], ReadBandwidth]


def local_bandwidth(cpu_model: str | None, physical_cores: int | None, usable_cores: int | None, ram_total_bytes: int | None,
                    available_bytes: int | None = None, *, refresh: bool = False,
                    measurer: Measurer | None = None) -> tuple[ReadBandwidth, bool]:
    """(this machine's read bandwidth, whether it was measured now): the cached entry, else measured and cached."""
    key = machine_key(cpu_model, physical_cores or usable_cores, ram_total_bytes)
    if not refresh:
        hit = cached(key)
        if hit is not None:
            return hit, False
    threads = llama_threads(physical_cores, usable_cores)
    m = (measurer or measure_read_bandwidth)(threads, buffer_size(llc_bytes(), available_bytes), key)
    try:
        store(m)
    except OSError:
        pass  # a read-only cache dir costs a re-measurement next time, not the plan
    return m, True


def for_host(host, refresh: bool = False) -> ReadBandwidth | None:  # type: ignore[no-untyped-def]
    """A probed host's read bandwidth (cached, else measured now) when it has no GPU to plan for; None with a GPU."""
    if getattr(host, "gpus", None):
        return None
    cpu = host.cpu
    got, _fresh = local_bandwidth(cpu.model, cpu.physical_cores, cpu.usable_cores or cpu.logical_cores,
                                  host.ram_total_bytes, host.ram_available_bytes, refresh=refresh)
    return got
