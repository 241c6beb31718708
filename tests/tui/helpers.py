"""Helpers for the TUI tests: a fake probed host and a wait for the app's workers."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

GIB = 2**30
SIZE = (160, 48)


def fake_host(catalog: Any, device_id: str = "rtx-4090", count: int = 1, free_gib: float = 20.0) -> SimpleNamespace:
    """A Host as probe.interpret() returns it, reduced to what the TUI and target_from_host read."""
    spec = catalog.get(device_id)
    gpus = [SimpleNamespace(index=i, name=spec.name, spec=spec, memory_total_bytes=spec.memory_bytes,
                            memory_free_bytes=int(free_gib * GIB), memory_usable_bytes=int(free_gib * GIB))
            for i in range(count)]
    return SimpleNamespace(gpus=gpus, warnings=[], ram_available_bytes=48 * GIB, ram_total_bytes=64 * GIB,
                           gpu_usable_bytes=None, cpu=SimpleNamespace(model="Test CPU", cores=8))


async def settle(app: Any, pilot: Any, timeout: float = 20.0) -> None:
    """Wait until the debounced fit has run for the current inputs and every worker is done."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause(0.05)
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not app.fit_pending and not any(w.is_running for w in app.workers):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the app did not settle in {timeout} s (inputs {app.inputs})")


async def open_best_here(app: Any, pilot: Any, tries: int) -> Any:
    """Open tab 5 and wait (up to `tries` pauses of 50 ms) for its ranking, which runs in a worker; the pane."""
    await pilot.press("5")
    await settle(app, pilot)
    pane = app.screen.query_one("#rank-pane")
    for _ in range(tries):
        if pane.ranking is not None:
            break
        await pilot.pause(0.05)
    return pane


def run(coro: Any) -> Any:
    """Run an async test body (no pytest-asyncio needed)."""
    return asyncio.run(coro)


def fake_cpu_host(warnings: tuple[str, ...] = ()) -> SimpleNamespace:
    """A probed machine without a GPU: an 8-core CPU with 64 GiB of RAM, and the probe's warnings."""
    cpu = SimpleNamespace(model="Test CPU", physical_cores=8, logical_cores=16, usable_cores=16, isa=["avx2"])
    return SimpleNamespace(gpus=[], warnings=list(warnings), ram_available_bytes=48 * GIB, ram_total_bytes=64 * GIB,
                           gpu_usable_bytes=None, cpu=cpu)
