"""YAML "billion laughs" through every YAML reader of the planner: wall time, peak RSS and exit code of each.

Each reader runs in a fresh interpreter (peak RSS is per process), through `planner.cli.main` as a user would:
a deployment spec (`check`), a catalog directory (`--hwdb`), a profile directory (`--profiles`) and a calibration
record (`calibration show`). Run: `python benchmarks/yaml_bomb.py [--levels 9] [--timeout 120]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bomb_text(levels: int = 9, width: int = 9, key: str = "deployments", head: str = "") -> str:
    """An alias bomb: `levels` lists of `width` aliases of the level below (width**levels leaves) under `key`, the
    list a reader validates item by item (deployments, devices, models, records), after the lines in `head`."""
    lines = [head.rstrip("\n")] if head else []
    lines.append(f"a0: &a0 [{', '.join(['lol'] * width)}]")
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    lines.append(f"{key}: [*a{levels - 1}]")
    return "\n".join(lines) + "\n"


def cases(work: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Reader name -> (planner argv, extra environment), each reading the bomb in its own file."""
    return {
        "check spec": (["check", str(work / "spec" / "deploy.yaml")], {}),
        "--hwdb catalog dir": (["recommend", "--model", "70B", "--device", "rtx-4090", "--hwdb", str(work / "hwdb")],
                               {}),
        "--profiles dir": (["recommend", "--model", "70B", "--device", "rtx-4090", "--profiles",
                            str(work / "profiles")], {}),
        "calibration record": (["calibration", "show", "rtx-4090"], {"PLANNER_DATA_DIR": str(work / "data")}),
        "parse_yaml only": (["--parse-only", str(work / "spec" / "deploy.yaml")], {}),
    }


def write_files(work: Path, levels: int) -> None:
    """The bomb as a spec, a catalog file, a profile file and a calibration record, each in the list it validates."""
    files = {"spec/deploy.yaml": bomb_text(levels, key="deployments"),
             "hwdb/bomb.yaml": bomb_text(levels, key="devices"),
             "profiles/bomb.yaml": bomb_text(levels, key="models"),
             "data/calibration/rtx-4090.yaml": bomb_text(levels, key="records",
                                                         head="schema_version: 1\ndevice_id: rtx-4090\n")}
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text, encoding="utf-8")


def run_one(argv: list[str]) -> None:
    """In the child: run the CLI once and print rc, wall seconds, peak RSS and the first error line as JSON."""
    import contextlib
    import io
    import resource

    from planner.cli import main
    from planner.errors import PlannerError
    from planner.yamlio import load_yaml

    err = io.StringIO()
    t0 = time.perf_counter()
    if argv[0] == "--parse-only":  # the loader alone, without the CLI's start-up and catalog loading
        try:
            load_yaml(Path(argv[1]))
            rc = 0
        except PlannerError as exc:
            rc = exc.exit_code
            err.write(f"planner: error: {exc}")
    else:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"rc": rc, "wall_s": wall, "peak_mib": peak_kib / 1024, "message": err.getvalue().strip()[:160]}))


def main() -> int:
    """Write the bomb, run each reader in a child process, print one table row per reader."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, default=9, help="alias levels (9 levels of 9 = 387M leaves)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds before a reader is reported as a hang")
    ap.add_argument("--one", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        run_one(args.one)
        return 0
    with tempfile.TemporaryDirectory(prefix="yaml-bomb-") as d:
        work = Path(d)
        write_files(work, args.levels)
        print(f"{'reader':<22} {'exit':>4} {'wall s':>8} {'peak RSS MiB':>13}  message")
        for name, (argv, env) in cases(work).items():
            environ = {**os.environ, "PLANNER_NO_CACHE": "1", **env}
            t0 = time.perf_counter()
            try:
                out = subprocess.run([sys.executable, __file__, "--one", *argv], capture_output=True, text=True,
                                     env=environ, timeout=args.timeout, check=False)
            except subprocess.TimeoutExpired:
                print(f"{name:<22} {'-':>4} {time.perf_counter() - t0:>8.1f} {'-':>13}  timed out")
                continue
            try:
                row = json.loads(out.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                print(f"{name:<22} {out.returncode:>4} {time.perf_counter() - t0:>8.1f} {'-':>13}  crashed: "
                      f"{out.stderr.strip()[-160:]}")
                continue
            print(f"{name:<22} {row['rc']:>4} {row['wall_s']:>8.2f} {row['peak_mib']:>13.0f}  "
                  f"{row['message'].splitlines()[0] if row['message'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
