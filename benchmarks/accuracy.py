"""Accuracy of the cost model against published reality (not a test: prints tables).

1. GGUF file sizes: `benchmarks/data/gguf_sizes.csv` (HF listings in GB incl. metadata; llama-bench / README sizes
   in GiB of tensor data) against `planner`'s per-tensor sizes from the real tensor inventory and mix rules.
2. llama.cpp speed: `benchmarks/data/llamacpp_perf.csv` (tg = decode, pp = prompt) against `evaluate()`.
3. llama.cpp CPU-only speed: `benchmarks/data/cpu_perf.csv` (named CPUs, llama-bench thread counts).
4. llama.cpp CPU speed measured in this project: `benchmarks/data/cpu_measured.csv` (`planner bench --kernel llama.cpp`).

Usage: python benchmarks/accuracy.py [--sizes] [--speed] [--rows]
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from planner.cost.evaluate import evaluate  # noqa: E402
from planner.cost.model import ModelCost  # noqa: E402
from planner.formats import FORMATS, get_format, gguf_mix  # noqa: E402
from planner.hardware.catalog import load_catalog  # noqa: E402
from planner.models.profiles import load_registry  # noqa: E402
from planner.plan import Target, target_from_catalog  # noqa: E402
from planner.runtimes import get_runtime  # noqa: E402

# Source model names -> profile ids (fine-tunes share their base model's shapes).
MODELS = [
    (r"^Meta-Llama-3\.1-8B|^Llama-3\.1-8B", "llama-3.1-8b"),
    (r"^Meta-Llama-3\.1-70B|^Llama-3\.1-70B", "llama-3.1-70b"),
    (r"^Llama-3\.1-405B", "llama-3.1-405b"),
    (r"^Llama-3\.3-70B", "llama-3.3-70b"),
    (r"^Meta-Llama-3-8B|^Llama-3-8B|LLaMA 3 8B", "llama-3-8b"),
    (r"^Meta-Llama-3-70B", "llama-3-70b"),
    (r"^Llama-3\.2-1B", "llama-3.2-1b"),
    (r"^Llama-2-70B|^Llama-2-70b", "llama-2-70b"),
    (r"^Llama-2-13B", "llama-2-13b"),
    (r"^Llama-2-7[bB]|^LLaMA-v2-7B|^Llama-2 7B", "llama-2-7b"),
    (r"^LLaMA-v1-7B|^LLaMA 7B", "llama-1-7b"),
    (r"^LLaMA-v1-13B|^LLaMA 13B", "llama-1-13b"),
    (r"^LLaMA-v1-30B", "llama-1-30b"),
    (r"^LLaMA-v1-65B", "llama-1-65b"),
    (r"^Mistral-7B-v0\.2", "mistral-7b-v0.1"),
    (r"^Mistral-7B-Instruct-v0\.3", "mistral-7b-v0.3"),
    (r"^gemma-1\.1-7b", "gemma-7b"),
    (r"^gemma-3-4b", "gemma-3-4b"),
    (r"^gpt-oss-20b", "gpt-oss-20b"),
    (r"^gpt-oss-120b", "gpt-oss-120b"),
    (r"^Qwen3-Coder-30B-A3B", "qwen3-30b-a3b"),
    (r"^Qwen2\.5-Coder-7B", "qwen2.5-7b"),
]
# Source device names -> catalog ids.
DEVICES = [
    (r"^3070", "rtx-3070"), (r"3090 Ti", "rtx-3090-ti"), (r"3090", "rtx-3090"), (r"4070 Ti", "rtx-4070-ti"),
    (r"A100 PCIe 80GB", "a100-80gb-pcie"), (r"A100 SXM 80GB", "a100-80gb-sxm"), (r"^NVIDIA A100", "a100-80gb-sxm"),
    (r"A40", "a40"), (r"RX 7900 XTX", "rx-7900-xtx"), (r"RX 7900 XT$", "rx-7900-xt"), (r"Ryzen AI Max", "strix-halo-395-128gb"),
    (r"M1 Max", "m1-max"), (r"M1 Pro", "m1-pro"), (r"M1 Ultra", "m1-ultra"), (r"^Apple M1$|^M1 7", "m1"),
    (r"M2 Max", "m2-max"), (r"M2 Pro", "m2-pro"), (r"M2 Ultra", "m2-ultra"), (r"^Apple M2$", "m2"),
    (r"M3 Pro", "m3-pro"), (r"^Apple M3", "m3"), (r"DGX Spark", "dgx-spark"), (r"RTX 3060", "rtx-3060-12gb"),
    (r"4000 Ada", "rtx-4000-ada"), (r"5000 Ada", "rtx-5000-ada"), (r"5060 Ti", "rtx-5060-ti-16gb"), (r"5070 Ti", "rtx-5070-ti"),
]
HISTORICAL = ("older llama.cpp mixes", "June 2023", "GGML-era", "pre-GGUF", "before PR", "after PR", "outdated")


def _map(table, name: str) -> str | None:
    for pattern, target in table:
        if re.search(pattern, name):
            return target
    return None


def _pct(pred: float, real: float) -> float:
    return 100.0 * (pred - real) / real


def _summary(errs: list[float]) -> tuple[float, float, int]:
    a = sorted(abs(e) for e in errs)
    if not a:
        return float("nan"), float("nan"), 0
    p90 = a[min(len(a) - 1, int(round(0.9 * (len(a) - 1))))]
    return statistics.median(a), p90, len(a)


def _print_table(title: str, groups: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"{'group':34} {'n':>4} {'median |err| %':>15} {'p90 |err| %':>12} {'median signed %':>16}")
    for k in sorted(groups, key=lambda g: (g == "ALL", g)):
        med, p90, n = _summary(groups[k])
        signed = statistics.median(groups[k]) if groups[k] else float("nan")
        print(f"{k:34} {n:>4} {med:>15.2f} {p90:>12.2f} {signed:>16.2f}")


def sizes(show_rows: bool) -> dict[str, list[float]]:
    """Compare predicted GGUF sizes with published ones."""
    reg = load_registry()
    costs: dict[str, ModelCost] = {}
    by_type: dict[str, list[float]] = defaultdict(list)
    skipped = defaultdict(int)
    for row in csv.DictReader(open(ROOT / "data" / "gguf_sizes.csv", encoding="utf-8")):
        model_id = _map(MODELS, row["model"])
        if model_id is None:
            skipped["model not profiled"] += 1
            continue
        if any(h in (row["notes"] + row["quant_type"] + row["unit"]) for h in HISTORICAL):
            skipped["historical llama.cpp mix"] += 1
            continue
        q = row["quant_type"].strip().upper()
        embed_output = None
        if "(EMBED+OUTPUT F16)" in q:
            embed_output, q = "F16", q.split(" (")[0]
        q = re.sub(r" \(=.*\)$", "", q).replace(" (ORIGINAL)", "")
        q = {"Q4_K": "Q4_K_M", "Q3_K": "Q3_K_M", "Q5_K": "Q5_K_M"}.get(q, q)
        if q not in FORMATS:
            skipped[f"format {q}"] += 1
            continue
        try:
            value = float(row["file_size_bytes_or_GB"])
        except ValueError:
            skipped["unparsable size"] += 1
            continue
        unit = row["unit"]
        mc = costs.setdefault(model_id, ModelCost(reg.get(model_id)))
        fmt = FORMATS[q]
        # 2023 GGUFs (TheBloke, second-state) were made by builds with the older Q2_K mix (llama.cpp PR #2707).
        era_2023 = any(k in row["source"] + row["model"] for k in ("TheBloke", "second-state"))
        revision = "2023" if era_2023 and q == "Q2_K" else "current"
        if embed_output or revision != "current":
            assigns = gguf_mix(q, mc.spec, mc.tensors, embed_output_type=embed_output, revision=revision)
            tensor_bytes = sum(a.nbytes for a in assigns)
            header = mc.layout(fmt).header_bytes
        else:
            lay = mc.layout(fmt)
            tensor_bytes, header = lay.stored_bytes, lay.header_bytes
        if unit.startswith("GiB") or "values match llama-bench GiB" in unit:
            real, pred = value * 2**30, tensor_bytes  # llama-bench / README report tensor data in GiB
        elif unit == "MB":
            real, pred = value * 1e6, tensor_bytes + header
        elif unit == "bytes":
            real, pred = value, tensor_bytes + header
        else:
            real, pred = value * 1e9, tensor_bytes + header
        err = _pct(pred, real)
        by_type[q].append(err)
        by_type["ALL"].append(err)
        if show_rows:
            print(f"  {row['model'][:40]:40} {q:8} real {real / 1e9:8.3f} GB pred {pred / 1e9:8.3f} GB  {err:+6.2f}%")
    _print_table("GGUF file size: |predicted - published| / published, per quant type", by_type)
    print("skipped:", dict(skipped))
    return by_type


_TEST = re.compile(r"^(tg|pp)(\d+)(?:@d(\d+))?$")


def _parse_test(test: str) -> tuple[str, int, int] | None:
    """(kind, tokens, depth) of a benchmark test label; None for batched runs."""
    m = _TEST.match(test.split(" (")[0])
    if m:
        return m.group(1), int(m.group(2)), int(m.group(3) or 0)
    m = re.match(r"prompt eval \((\d+)-token prompt", test)
    if m:
        return "pp", int(m.group(1)), 0
    m = re.match(r"generation \((\d+) tokens", test)
    if m:
        return "tg", int(m.group(1)), 494
    return None


def speed(show_rows: bool, calibration: dict | None = None) -> dict[str, list[float]]:
    """Compare predicted llama.cpp decode / prompt tokens/s with measured ones."""
    reg, cat = load_registry(), load_catalog()
    rt = get_runtime("llama.cpp")
    costs: dict[str, ModelCost] = {}
    groups: dict[str, list[float]] = defaultdict(list)
    skipped = defaultdict(int)
    for row in csv.DictReader(open(ROOT / "data" / "llamacpp_perf.csv", encoding="utf-8")):
        model_id = _map(MODELS, row["model"])
        dev_id = _map(DEVICES, row["device"])
        parsed = _parse_test(row["test"])
        if model_id is None or dev_id is None or parsed is None:
            skipped["unmapped model/device/test"] += 1
            continue
        kind, n_tok, depth = parsed
        if kind == "pp" and depth:
            skipped["pp at depth"] += 1
            continue
        q = {"MXFP4 (MoE)": "MXFP4_MOE"}.get(row["quant"], row["quant"])
        fmt = get_format(q)
        dev = cat.get(dev_id)
        backend = row["backend"]
        if backend.startswith("CPU"):
            # The CPU of the same machine: its own compute (cpu_cores), not the GPU figures of the catalog entry.
            dev = dev.model_copy(update={"backend": "cpu", "memory_kind": "system", "gpu_usable_fraction": None,
                                         "peak_fp32_tflops": None, "peak_fp16_tflops": None, "peak_int8_tops": None})
        elif backend == "Vulkan":
            dev = dev.model_copy(update={"backend": "vulkan"})
        count = int(row["n_gpus"] or 1)
        t = target_from_catalog(dev, count)
        t = Target(t.device, t.count, t.usable_bytes, host_ram_bytes=256 * 2**30, origin="benchmark")
        mc = costs.setdefault(model_id, ModelCost(reg.get(model_id)))
        ctx = max(n_tok + depth, 512)
        position = depth + n_tok // 2 if kind == "tg" else n_tok
        plan = evaluate(mc, fmt, rt, t, context=ctx, prompt_tokens=position, calibration=calibration)
        if not plan.runs:
            skipped[f"cannot run: {plan.reason[:40]}"] += 1
            continue
        if kind == "pp":
            plan = evaluate(mc, fmt, rt, t, context=ctx, prompt_tokens=n_tok, calibration=calibration)
            pred = plan.prefill_tokens_per_s
        else:
            pred = plan.decode_tokens_per_s
        real = float(row["tokens_per_s"])
        # Builds from 2023 ("llama.cpp main", commit not recorded) predate the layer-split default (PR #4766,
        # Jan 2024), CUDA graphs, flash attention and the MMQ rewrite; the planner models current llama.cpp.
        era = "2024+" if re.search(r"\((\d{4,})\)", row["build"]) else "2023"
        err = _pct(pred, real)
        fam = ("cpu" if dev.backend == "cpu" else "vulkan" if dev.backend == "vulkan" else
               "apple" if dev.vendor == "apple" else "multi-gpu" if count > 1 else "1 gpu")
        if plan.layout == "partial-offload":
            fam += " (offload)"
        if era == "2023":
            groups[f"{'decode' if kind == 'tg' else 'prefill'} | 2023 builds: {fam}"].append(err)
            if show_rows:
                print(f"  [2023] {kind}{n_tok:<5} {dev_id:16} x{count} {model_id:14} {q:10} real {real:8.1f} pred {pred:8.1f} {err:+7.1f}%")
            continue
        groups[f"{'decode' if kind == 'tg' else 'prefill'} | {fam}"].append(err)
        groups[f"{'decode' if kind == 'tg' else 'prefill'} | {dev_id}"].append(err)
        groups[f"{'decode' if kind == 'tg' else 'prefill'} | {q}"].append(err)
        if show_rows:
            print(f"  {kind}{n_tok:<5} {dev_id:16} x{count} {model_id:14} {q:10} real {real:8.1f} pred {pred:8.1f} {err:+7.1f}%  {plan.layout}")
    top = {k: v for k, v in groups.items() if any(s in k for s in ("1 gpu", "multi-gpu", "apple", "cpu", "vulkan"))}
    _print_table("llama.cpp speed: |predicted - measured| / measured, by test and device family", top)
    _print_table("... by device", {k: v for k, v in groups.items() if k not in top and "Q" not in k.split("|")[1] and "F16" not in k and "MXFP4" not in k})
    _print_table("... by quant type", {k: v for k, v in groups.items() if k not in top and ("Q" in k.split("|")[1] or "F16" in k or "MXFP4" in k)})
    print("skipped:", dict(skipped))
    return groups


def _row_error(plan, kind: str, row: dict[str, str]) -> tuple[str, float, float, float]:  # type: ignore[no-untyped-def]
    """(decode or prefill, predicted, measured, signed % error) of a CPU row's `tg` or `pp` test."""
    pred = plan.decode_tokens_per_s if kind == "tg" else plan.prefill_tokens_per_s
    real = float(row["tokens_per_s"])
    return ("decode" if kind == "tg" else "prefill"), pred, real, _pct(pred, real)


# CPU rows use these too: checkpoints that only benchmarks/data/cpu_perf.csv names (kept out of MODELS so that the
# size table above compares the same rows as before).
CPU_MODELS = MODELS + [
    (r"^Llama-3\.2-3B", "llama-3.2-3b"), (r"^Phi-4$", "phi-4"), (r"^Qwen3-4B", "qwen3-4b"),
]


def cpu_speed(show_rows: bool, calibration: dict | None = None) -> dict[str, list[float]]:
    """CPU-only llama.cpp rows (benchmarks/data/cpu_perf.csv): decode and prompt tokens/s against `evaluate()`.

    Each row names its catalog device and the llama-bench thread count; a SoC entry (Apple, Snapdragon) is planned
    as its CPU (backend 'cpu', no GPU figures), and the thread count replaces `cpu_cores` (llama-bench's default,
    used where a row gives none, is the physical core count).
    """
    reg, cat = load_registry(), load_catalog()
    rt = get_runtime("llama.cpp")
    costs: dict[str, ModelCost] = {}
    groups: dict[str, list[float]] = defaultdict(list)
    skipped = defaultdict(int)
    for row in csv.DictReader(open(ROOT / "data" / "cpu_perf.csv", encoding="utf-8")):
        model_id = _map(CPU_MODELS, row["model"])
        parsed = _parse_test(row["test"])
        if model_id is None or parsed is None:
            skipped["unmapped model/test"] += 1
            continue
        kind, n_tok, _ = parsed
        dev = cat.get(row["catalog_id"])
        update: dict = {"backend": "cpu", "memory_kind": "system", "gpu_usable_fraction": None, "gpu_cores": None,
                        "peak_fp32_tflops": None, "peak_fp16_tflops": None, "peak_int8_tops": None}
        if row["threads"]:
            update["cpu_cores"] = int(row["threads"])
        dev = dev.model_copy(update=update)
        t = target_from_catalog(dev, 1)
        t = Target(t.device, 1, t.usable_bytes, host_ram_bytes=256 * 2**30, origin="benchmark")
        mc = costs.setdefault(model_id, ModelCost(reg.get(model_id)))
        fmt = get_format(row["quant"])
        ctx = max(n_tok, 512)
        prompt = n_tok // 2 if kind == "tg" else n_tok
        plan = evaluate(mc, fmt, rt, t, context=ctx, prompt_tokens=prompt, calibration=calibration)
        if not plan.runs:
            skipped[f"cannot run: {plan.reason[:40]}"] += 1
            continue
        test, pred, real, err = _row_error(plan, kind, row)
        groups[f"{test} | cpu"].append(err)
        groups[f"{test} | {row['catalog_id']}"].append(err)
        if show_rows:
            print(f"  {kind}{n_tok:<5} {row['catalog_id']:20} t={row['threads'] or '-':>3} {model_id:14} {row['quant']:7} "
                  f"real {real:8.2f} pred {pred:8.2f} {err:+7.1f}%")
    _print_table("llama.cpp CPU-only speed (benchmarks/data/cpu_perf.csv): |predicted - measured| / measured", groups)
    if skipped:
        print("skipped:", dict(skipped))
    return groups


def measured_cpu_speed(show_rows: bool) -> dict[str, list[float]]:
    """Rows measured in this project (benchmarks/data/cpu_measured.csv: `planner bench --kernel llama.cpp` on a named
    machine) against `evaluate()` for that machine as `planner` plans it: a probed CPU (cores, ISA flags) whose
    measured read bandwidth caps decode, as `recommend --local` does."""
    from planner.hardware.targets import cpu_device
    from planner.measure.calibration import measured_caps

    reg = load_registry()
    rt = get_runtime("llama.cpp")
    costs: dict[str, ModelCost] = {}
    groups: dict[str, list[float]] = defaultdict(list)
    for row in csv.DictReader(open(ROOT / "data" / "cpu_measured.csv", encoding="utf-8")):
        kind, n_tok, _ = _parse_test(row["test"]) or ("", 0, 0)
        read = float(row["mem_read_gb_s"])
        dev = cpu_device(row["device"], int(row["cores"]), int(float(row["ram_gib"]) * 2**30), row["cpu_isa"].split(),
                         measured_read_gb_s=read)
        t = target_from_catalog(dev, 1)
        cal = measured_caps({}, read, dev.mem_bandwidth_gb_s, "cpu")
        mc = costs.setdefault(row["model"], ModelCost(reg.get(row["model"])))
        prompt = n_tok // 2 if kind == "tg" else n_tok
        plan = evaluate(mc, get_format(row["quant"]), rt, t, context=max(n_tok, 512), prompt_tokens=prompt,
                        calibration=cal)
        test, pred, real, err = _row_error(plan, kind, row)
        groups[f"{test} | {row['model']}"].append(err)
        groups[f"{test} | all"].append(err)
        if show_rows:
            print(f"  {kind}{n_tok:<5} {row['model']:14} {row['quant']:8} real {real:8.2f} pred {pred:8.2f} {err:+7.1f}%")
    _print_table("llama.cpp CPU speed measured in this project (benchmarks/data/cpu_measured.csv, a 2-vCPU VM): "
                 "|predicted - measured| / measured", groups)
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--rows", action="store_true", help="print every compared row")
    a = ap.parse_args()
    both = not (a.sizes or a.speed)
    if a.sizes or both:
        sizes(a.rows)
    if a.speed or both:
        speed(a.rows)
        cpu_speed(a.rows)
        measured_cpu_speed(a.rows)


if __name__ == "__main__":
    main()
