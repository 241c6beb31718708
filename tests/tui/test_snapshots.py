"""SVG snapshots at a fixed size guard the layout (update with `pytest tests/tui --snapshot-update`).

Every snapshot shows a fixed, hand-made Recommendation (the status line and the fit tab) so that cost-model changes
do not churn them: the numbers themselves are checked against recommend() in test_app.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_textual_snapshot")

from planner.hardware.catalog import Catalog  # noqa: E402
from planner.models.profiles import ModelRegistry  # noqa: E402
from planner.plan import GIB, MemoryBreakdown, Plan  # noqa: E402
from planner.recommend import Recommendation  # noqa: E402
from planner.tui import app as app_module  # noqa: E402
from planner.tui.app import create_app  # noqa: E402
from .helpers import SIZE, busy, fake_host, wait_workers  # noqa: E402

DEVICES = ("rtx-4090", "rtx-3090", "h100-sxm", "mi300x", "m4-max-128gb", "strix-halo-395-128gb", "cpu-ddr5-dual-64gb")
MODELS = ("llama-3.1-8b", "qwen3-30b-a3b", "llama-3.1-70b", "deepseek-v3", "gemma-3-27b")


def small_data(catalog, registry):  # type: ignore[no-untyped-def]
    return (Catalog(catalog.get(d) for d in DEVICES if d in catalog.devices),
            ModelRegistry(registry.get(m) for m in MODELS if m in registry.models))


def _plan(fmt: str, rt: str, kv: str, weights: float, kv_gib: float, decode: float, kld: float, label: str,
          usable: float = 23.9, reason: str = "") -> Plan:
    d = MemoryBreakdown("rtx-4090", int(weights * GIB), int(kv_gib * GIB), int(0.6 * GIB), int(0.5 * GIB), int(usable * GIB))
    plan = Plan("llama-3.1-8b", fmt, rt, "NVIDIA GeForce RTX 4090", "rtx-4090", 1, 8192, 1, kv, "single", reason=reason,
                file_size_bytes=int(weights * GIB), weights_bytes=int(weights * GIB), kv_cache_bytes=int(kv_gib * GIB),
                total_memory_bytes=d.total_bytes, usable_memory_bytes=d.usable_bytes, per_device=[d], n_layers=32,
                gpu_layers=32, quality={"kld": kld, "ppl_delta_pct": kld * 80, "label": label},
                bits_per_weight=weights * 8 / 8.0,
                _launch=f"llama-server -m llama-3.1-8b-{fmt}.gguf -ngl 999 -c 8192" if rt == "llama.cpp"
                else f"vllm serve ./llama-3.1-8b-{fmt}")
    plan.set_speeds(decode_tokens_per_s=decode, decode_tokens_per_s_full_context=decode * 0.8,
                    throughput_tokens_per_s=decode, prefill_tokens_per_s=6000.0, ttft_s=0.09)
    # as the cost model labels them on an RTX 4090: llama.cpp calibrated on Ada, vLLM calibrated elsewhere (banded)
    weak = rt == "vllm"
    plan.set_speeds(speed_width=0.26 if weak else 0.21, speed_width_prefill=0.6 if weak else 0.72)
    plan.speed_basis_value = "calibrated elsewhere" if weak else "calibrated on this device class"
    return plan


def fixed_recommendation(inputs, costs, catalog, host=None, eval_reports=()):  # type: ignore[no-untyped-def]
    plans = [_plan("Q5_K_M", "llama.cpp", "f16", 5.3, 1.0, 131.4, 0.0108, "negligible"),
             _plan("Q8_0", "llama.cpp", "f16", 7.9, 1.0, 97.5, 0.0014, "lossless"),
             _plan("Q4_K_M", "llama.cpp", "q8_0", 4.6, 0.5, 151.5, 0.0282, "small"),
             _plan("awq-int4", "vllm", "auto", 5.4, 15.1, 140.2, 0.0109, "negligible"),
             _plan("bf16", "vllm", "auto", 15.0, 9.0, 56.5, 0.0, "lossless",
                   reason="needs 25.1 GiB on rtx-4090[0], 21.6 GiB usable")]
    if eval_reports:  # as planner eval's stored results make them: measured quality for two formats
        for p, kld, label in ((plans[1], 0.0021, "negligible"), (plans[2], 0.0415, "noticeable")):
            p.quality = {"kld": kld, "ppl_delta_pct": kld * 80, "label": label, "source": "measured",
                         "text": "my-chats.txt"}
    reasons = ["Q5_K_M fits: 7.4 GiB of 23.9 GiB usable (weights 5.3 GiB, KV cache 1.0 GiB at 8192 tokens).",
               "Expected quality loss is negligible: KL divergence 0.0108, perplexity +0.92% versus 16-bit.",
               "llama.cpp decodes about 131 tokens/s and reads a 512-token prompt in 0.09 s."]
    return Recommendation(inputs.model_id, "NVIDIA GeForce RTX 4090", inputs.context, inputs.concurrency, inputs.prefer,
                          plans, plans[0], reasons=reasons)


async def _settle(pilot) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    for _ in range(200):
        await pilot.pause(0.05)
        await wait_workers(app)
        if not busy(app):
            break
    await pilot.pause()


@pytest.fixture(autouse=True)
def _fixed_numbers(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(app_module, "compute_recommendation", fixed_recommendation)


def test_devices_tab_with_this_machine_pinned(snap_compare, catalog, registry):
    cat, reg = small_data(catalog, registry)
    host = fake_host(cat, "rtx-4090", free_gib=22.5)
    app = create_app(cat, reg, lambda: host, device="rtx-4090")

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        assert pilot.app.host is host and pilot.app.fit_error is None

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_fit_tab_layout(snap_compare, catalog, registry):
    cat, reg = small_data(catalog, registry)
    app = create_app(cat, reg, model="llama-3.1-8b", device="rtx-4090")

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("3")
        await _settle(pilot)
        assert pilot.app.fit_error is None and pilot.app.current_recommendation.best.format_id == "Q5_K_M"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_fit_tab_measured_quality(snap_compare, catalog, registry):
    """Stored planner eval results: the quality column marks measured values and the summary says on what text."""
    cat, reg = small_data(catalog, registry)
    app = create_app(cat, reg, model="llama-3.1-8b", device="rtx-4090", eval_reports=[{"stand-in": True}])

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("3")
        await _settle(pilot)
        assert pilot.app.fit_error is None

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare, catalog, registry):
    cat, reg = small_data(catalog, registry)
    app = create_app(cat, reg, device="rtx-4090")

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("question_mark")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_opens_on_this_cpu_with_probe_warnings_panel(snap_compare, catalog, registry):
    """No device named: the app opens on the fit tab for the probed CPU; w opens the probe's warnings above the tabs."""
    from .helpers import fake_cpu_host

    cat, reg = small_data(catalog, registry)
    host = fake_cpu_host(("No GPU found: planning for the CPU only (nvml: no NVIDIA driver (libnvidia-ml.so.1 not found))",))
    app = create_app(cat, reg, lambda: host, model="llama-3.1-8b")

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        assert pilot.app.active_tab == "fit" and pilot.app.inputs.device_id == "local"
        await pilot.press("w")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
