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


async def wait_workers(app: Any) -> None:
    """Wait for every worker the app holds now; a fit cancelled because a newer fit replaced it counts as done."""
    from textual.worker import WorkerCancelled, WorkerState

    for worker in list(app.workers):
        if worker.state == WorkerState.PENDING:  # not started yet: busy() keeps the caller waiting for it
            continue
        try:
            await worker.wait()
        except WorkerCancelled:
            # The fit workers are exclusive: a probe or input change that lands while one runs cancels it.
            # app.workers.wait_for_complete() raises on that, which made the snapshot tests flaky on CI.
            pass


def busy(app: Any) -> bool:
    """Whether a fit is still due or any worker has not finished."""
    from textual.worker import WorkerState

    return app.fit_pending or any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in app.workers)


async def settle(app: Any, pilot: Any, timeout: float = 20.0) -> None:
    """Wait until the debounced fit has run for the current inputs and every worker is done."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause(0.05)
        await wait_workers(app)
        await pilot.pause()
        if not busy(app):
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
