"""`planner probe`: table, --json, --raw, --snapshot, --hwdb, and clear errors, through planner.cli.main."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner.cli import main

SNAPSHOTS = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"
REPO = Path(__file__).resolve().parents[2]

GTX_1080_YAML = """\
family: my cards
devices:
  - id: gtx-1080
    name: NVIDIA GeForce GTX 1080
    vendor: nvidia
    backend: cuda
    architecture: pascal
    compute_capability: "6.1"
    memory_gib: 8
    memory_type: GDDR5X
    memory_kind: dedicated
    mem_bandwidth_gb_s: 320
    launch_year: 2016
    nvml_names: [NVIDIA GeForce GTX 1080]
    source: https://www.techpowerup.com/gpu-specs/geforce-gtx-1080.c2839
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_probe_this_machine_table(capsys):
    code, out, err = run(capsys, "probe")
    assert code == 0, err
    assert "CPU:" in out and "RAM:" in out and "Sources:" in out


def test_probe_this_machine_json(capsys):
    code, out, _ = run(capsys, "probe", "--json")
    assert code == 0
    host = json.loads(out)
    assert {"gpus", "cpu", "ram_total_bytes", "warnings", "sources", "interconnect"} <= set(host)
    assert host["ram_total_bytes"] > 0
    if not host["gpus"]:
        assert any("No GPU found" in w for w in host["warnings"])  # never a silent "no GPU"


def test_raw_snapshot_round_trips_through_snapshot_option(capsys, tmp_path):
    code, out, _ = run(capsys, "probe", "--raw")
    assert code == 0
    raw = json.loads(out)
    assert raw["snapshot_version"] == 1 and "sources" in raw
    saved = tmp_path / "me.json"
    saved.write_text(out, encoding="utf-8")
    code, again, _ = run(capsys, "probe", "--snapshot", str(saved), "--raw")
    assert code == 0 and json.loads(again) == raw
    code, host, _ = run(capsys, "probe", "--snapshot", str(saved), "--json")
    assert code == 0 and json.loads(host)["ram_physical_bytes"] == raw["memory"]["total_bytes"]


def test_snapshot_table_shows_devices_ids_memory_and_warnings(capsys):
    code, out, _ = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / "h100-sxm-1x.json"))
    assert code == 0
    assert "NVIDIA H100 80GB HBM3" in out and "h100-sxm" in out  # h100-sxm is in the bundled catalog from the start
    assert "79.6 GiB" in out and "79.1 GiB" in out  # total and usable now
    assert "PCIe 5 x16" in out and "CUDA 12.4" in out
    code, out, _ = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / "rtx3090-gtx1080-mixed.json"))
    assert code == 0
    assert "not in catalog" in out and "bandwidth unknown" in out
    assert "warning:" in out and "--hwdb" in out


def test_user_catalog_via_hwdb(capsys, tmp_path):
    (tmp_path / "mine.yaml").write_text(GTX_1080_YAML, encoding="utf-8")
    code, out, err = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / "rtx3090-gtx1080-mixed.json"), "--hwdb", str(tmp_path), "--json")
    assert code == 0, err
    host = json.loads(out)
    gtx = host["gpus"][1]
    assert gtx["catalog_id"] == "gtx-1080" and gtx["spec"]["mem_bandwidth_gb_s"] == 320
    assert not any("GTX 1080' is not in the catalog" in w for w in host["warnings"])


def test_snapshot_json_of_mig_and_apple(capsys):
    code, out, _ = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / "a100-mig.json"), "--json")
    assert code == 0
    host = json.loads(out)
    assert [g["mig_profile"] for g in host["gpus"]] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    code, out, _ = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / "m3-ultra-512gb.json"), "--json")
    host = json.loads(out)
    assert host["unified"] and host["gpu_usable_bytes"] == 480 * 2**30 and host["gpu_usable_source"] == "iogpu.wired_limit_mb"
    code, out, _ = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / "m3-ultra-512gb.json"))
    assert "GPU share of unified memory: 480.0 GiB" in out


def test_cpu_only_snapshot_table(capsys):
    code, out, _ = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / "cpu-only-laptop.json"))
    assert code == 0 and "No GPU" in out and "avx_vnni" in out


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("malformed.json", "nvidia.gpus[0].memory_total_bytes"),
        ("truncated.json", "invalid JSON"),
        ("does-not-exist.json", "no such snapshot file"),
    ],
)
def test_bad_snapshots_exit_2_with_one_line(capsys, name, fragment):
    code, out, err = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / name))
    assert code == 2 and out == ""
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_host_json_is_refused_as_a_snapshot(capsys, tmp_path):
    code, out, _ = run(capsys, "probe", "--snapshot", str(SNAPSHOTS / "h100-sxm-1x.json"), "--json")
    host_file = tmp_path / "host.json"
    host_file.write_text(out, encoding="utf-8")
    code, _, err = run(capsys, "probe", "--snapshot", str(host_file))
    assert code == 2 and "planner probe --raw" in err


def test_building_the_cli_does_not_import_nvml_or_rich():
    # Lazy imports keep `planner probe` fast on machines without GPUs: NVML is only touched inside read_raw().
    code = "import sys; from planner.cli import build_parser; build_parser(); print('pynvml' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "False"


def test_recommend_for_a_catalog_device_does_not_import_the_probe():
    # Only probed targets (no --device, or --snapshot) need the probe package; a catalog device must not pay for it.
    code = ("import sys, contextlib, io; from planner.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): rc = main(['recommend', '--model', '70B', '--device', 'rtx-4090', '--json'])\n"
            "print(rc, sorted(m for m in sys.modules if m.startswith('planner.hardware.probe') or m in ('psutil', 'pynvml')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "0" and out.strip().endswith("[]"), out
