"""Command-line values: every numeric option is bounded with one clear exit-2 line, names are checked, unreadable
directories are clear errors, and Ctrl-C at any moment of start-up exits 130 without a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main

ROOT = Path(__file__).resolve().parents[2]
REC = ["recommend", "--model", "8B", "--device", "rtx-4090"]
EST = ["estimate", "--model", "8B", "--format", "Q4_K_M", "--device", "rtx-4090"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# (argv, what the one line must say): each case from issue #16 and every numeric option of every subcommand.
REFUSED = [
    ([*REC, "--context", "99999999999999999999", "--allow-context-extension"],
     r"argument --context/-c: '99999999999999999999' is out of range; expected a whole number from 1 to 16,777,216"),
    ([*REC, "--context", "9" * 5000], r"--context/-c: '9{40}\.\.\.' \(5,000 characters\) is out of range"),
    (["recommend", "--model", "8B", "--memory", "24GiB", "--bandwidth", "-5"],
     r"--bandwidth: '-5' is out of range; expected a number greater than 0 and at most 20000"),
    (["recommend", "--model", "8B", "--memory", "24GiB", "--bandwidth", "1e308"], r"--bandwidth: '1e308' is out of range"),
    (["recommend", "--model", "8B", "--memory", "24GiB", "--bandwidth", "nan"], r"--bandwidth: 'nan' is not a finite"),
    (["recommend", "--model", "8B", "--memory", "24GiB", "--bandwidth", "inf"], r"--bandwidth: 'inf' is not a finite"),
    (["recommend", "--model", "8B", "--memory", "24GiB", "--bandwidth", "0"], r"--bandwidth: '0' is out of range"),
    (["recommend", "--model", "8B", "--memory=-1GiB"], r"--memory: cannot read memory size '-1GiB'"),
    (["recommend", "--model", "8B", "--memory", "1e400GiB"], r"--memory: cannot read memory size '1e400GiB'"),
    (["recommend", "--model", "8B", "--memory", "5000GiB"], r"--memory: '5000GiB' is out of range; expected a size "
                                                            r"above 0 and at most 4096 GiB"),
    (["recommend", "--model", "8B", "--memory", "0GiB"], r"--memory: '0GiB' is out of range"),
    ([*REC, "--ram", "0"], r"--ram: '0' is out of range"),
    ([*REC, "--nodes", "0"], r"--nodes: '0' is out of range; expected a whole number from 1 to 64"),
    ([*REC, "--nodes", "65"], r"--nodes: '65' is out of range"),
    ([*REC, "--count", "0"], r"--count: '0' is out of range; expected a whole number from 1 to 72"),
    ([*REC, "--count", "8", "--nodes", "64"], r"--count 8 x --nodes 64 is 512 GPUs; recommend plans at most 256"),
    ([*REC, "--top", "-1"], r"--top: '-1' is out of range; expected a whole number from 1 to 1,000"),
    ([*REC, "--top", "0"], r"--top: '0' is out of range"),
    ([*REC, "--concurrency", "0"], r"--concurrency: '0' is out of range; expected a whole number from 1 to 100,000"),
    ([*REC, "--prompt", "0"], r"--prompt: '0' is out of range"),
    ([*REC, "--prompt", "1.5"], r"--prompt: '1.5' is not a whole number"),
    ([*REC, "--min-tokens-per-s", "nan"], r"--min-tokens-per-s: 'nan' is not a finite number"),
    ([*REC, "--min-tokens-per-s", "-1"], r"--min-tokens-per-s: '-1' is out of range"),
    ([*REC, "--eval-ctx", "4"], r"--eval-ctx: '4' is out of range; expected a whole number from 8"),
    ([*REC, "--eval-chunks", "0"], r"--eval-chunks: '0' is out of range"),
    (["recommend", "--model", "8B", "--device", ""], r"argument --device: an empty value"),
    (["recommend", "--model", ""], r"argument --model/-m: an empty value"),
    ([*REC, "--kv-dtype", "q3"], r"argument --kv-dtype: unknown KV dtype 'q3' \(choose one of: .*q4_0.*q8_0"),
    ([*REC, "--kv-dtype", "q8_1"], r"unknown KV dtype 'q8_1'; did you mean: .*q8_0"),
    ([*EST, "--kv-dtype", "fp9"], r"unknown KV dtype 'fp9'; did you mean: .*fp8"),
    ([*EST, "--replicas", "0"], r"--replicas: '0' is out of range"),
    ([*EST, "--context", "abc"], r"--context/-c: 'abc' is not a whole number"),
    (["catalog", "--min-memory", "nan"], r"--min-memory: 'nan' is not a finite number"),
    (["quantize", "src", "-f", "Q8_0", "-o", "out.gguf", "--threads", "0"], r"--threads: '0' is out of range"),
    (["quantize", "src", "-f", "Q8_0", "-o", "out.gguf", "--worst", "-1"], r"--worst: '-1' is out of range"),
    (["quantize", "", "-f", "Q8_0", "-o", "out.gguf"], r"argument SOURCE: an empty value"),
    (["bench", "--model", "8B", "-f", "Q8_0", "--repeat", "0"], r"--repeat: '0' is out of range"),
    (["bench", "--model", "8B", "-f", "Q8_0", "--prompt", "-1"], r"--prompt: '-1' is out of range"),
    (["bench", "--model", "8B", "-f", "Q8_0", "--max-memory", "inf"], r"--max-memory: cannot read memory size 'inf'"),
    (["eval", "src", "--ctx", "0"], r"--ctx: '0' is out of range"),
    (["eval", "src", "--chunks", "-1"], r"--chunks: '-1' is out of range"),
    (["tui", "--concurrency", "0"], r"--concurrency: '0' is out of range"),
]


@pytest.mark.parametrize("argv,pattern", REFUSED, ids=[" ".join(a)[:60] for a, _ in REFUSED])
def test_out_of_range_values_are_one_line_exit_2(capsys, argv, pattern):
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert re.search(pattern, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == ""


def test_the_bounds_themselves_are_accepted(capsys):
    """The ends of each range plan normally, so the bounds refuse nothing they should not."""
    code, out, err = run(capsys, *REC, "--context", "16777216", "--allow-context-extension", "--json")
    assert code == 1 and "nothing fits" in err  # too big for one 4090, but planned, with a real size
    assert re.search(r"needs 10[0-9]{2}\.\d GiB", err)
    code, _, err = run(capsys, "recommend", "--model", "8B", "--memory", "24GiB", "--bandwidth", "20000", "--json")
    assert code == 0, err
    code, _, err = run(capsys, *REC, "--top", "1", "--concurrency", "100000", "--prompt", "1", "--json")
    assert code in (0, 1) and len(err.strip().splitlines()) <= 1
    code, _, err = run(capsys, *EST, "--count", "72", "--nodes", "64", "--replicas", "4608", "--json")
    assert code == 0, err


def test_bandwidth_given_is_used_and_not_replaced_by_the_assumed_500(capsys):
    import json

    code, out, _ = run(capsys, *EST[:5], "--memory", "24GiB", "--bandwidth", "100", "--json")
    slow = json.loads(out)["decode_tokens_per_s"]
    code, out, _ = run(capsys, *EST[:5], "--memory", "24GiB", "--json")
    assumed = json.loads(out)
    assert code == 0 and slow < assumed["decode_tokens_per_s"] / 3  # 100 GB/s against the assumed 500


# --- unreadable directories ---------------------------------------------------------------------------------------

DIR_OPTIONS = [("--model", "{d}"), ("--hwdb", "{d}"), ("--profiles", "{d}")]


def _argv(opt: str, d: Path) -> list[str]:
    return ["recommend", "--model", str(d), "--device", "rtx-4090"] if opt == "--model" else [*REC, opt, str(d)]


@pytest.mark.parametrize("opt", ["--model", "--hwdb", "--profiles"])
def test_unreadable_directory_is_exit_2_even_as_root(capsys, tmp_path, monkeypatch, opt):
    """Root reads through chmod 000, so the kernel's refusal is stood in for: listing this directory raises
    PermissionError exactly as os.scandir does for a user without read permission."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "config.json").write_text("{}")  # something a reader would otherwise find
    real_scandir = os.scandir

    def scandir(path=".", *a):  # type: ignore[no-untyped-def]
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *a)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    code, _, err = run(capsys, *_argv(opt, locked))
    assert code == 2 and f"{locked}: cannot read directory (Permission denied)" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("opt", ["--model", "--hwdb", "--profiles"])
@pytest.mark.parametrize("where", ["dir", "below"])
def test_unreadable_directory_for_real(tmp_path, opt, where):
    """chmod 000 for real. As root, the process drops CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH first (setpriv), so the
    kernel refuses it as it would refuse any user; elsewhere it runs as the user it is."""
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    target = locked if where == "dir" else locked / "inner"
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: chmod 000 does not stop root's reads")
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]
    locked.chmod(0)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PLANNER_NO_CACHE": "1"}
        proc = subprocess.run([*prefix, sys.executable, "-m", "planner.cli", *_argv(opt, target)],
                              capture_output=True, text=True, env=env, timeout=60)
    finally:
        locked.chmod(0o755)
    if proc.returncode == 0 and os.geteuid() == 0:
        pytest.skip("this container lets root read through chmod 000 even without DAC capabilities")
    assert proc.returncode == 2, proc.stderr
    assert f"{target}: cannot read" in proc.stderr and "Permission denied" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- Ctrl-C during start-up ---------------------------------------------------------------------------------------

# A real SIGINT, sent by the process to itself the moment it first imports `module`: Python's handler turns it into
# KeyboardInterrupt at the next bytecode, inside that import, just as a Ctrl-C at that moment would.
HARNESS = textwrap.dedent("""
    import os, signal, sys

    MODULE, HOW = sys.argv[1], sys.argv[2]

    class Interrupt:
        def find_spec(self, name, path=None, target=None):
            if name == MODULE:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, Interrupt())
    sys.argv = ["planner", "recommend", "--model", "70B", "--device", "rtx-4090"]
    if HOW == "entry":  # what the [project.scripts] wrapper does
        from planner.cli import main
        sys.exit(main())
    import runpy  # python -m planner.cli
    runpy.run_module("planner.cli", run_name="__main__", alter_sys=True)
""")

# Modules the first moments of `planner recommend` import, in order: argparse while building the parser, the
# error types, the option builders, the subcommand, its target options and the catalog, then the planning code.
EARLY = ["planner.errors", "argparse", "planner.commands.options", "planner.commands.recommend", "planner.commands.target_options",
         "planner.hardware.catalog", "planner.commands.common", "planner.cache", "planner.models.profiles",
         "planner.recommend", "rich.console"]


@pytest.mark.parametrize("how", ["entry", "module"])
@pytest.mark.parametrize("module", EARLY)
def test_ctrl_c_during_start_up_exits_130_quietly(tmp_path, module, how):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a job started in the background (`cmd &`) inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored:
    # give the child the default disposition a terminal's foreground job has, whatever ran pytest
    proc = subprocess.run([sys.executable, "-c", HARNESS, module, how], capture_output=True, text=True, env=env,
                          timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "planner: interrupted"


def test_cli_module_imports_nothing_at_load_beyond_sys():
    """planner.cli loads before main()'s boundary runs, so what it imports at module level is a window for a
    traceback: keep it to modules the interpreter has already loaded (and __future__, one tiny file)."""
    code = ("import sys; before = set(sys.modules); import planner.cli; "
            "print(sorted(m for m in set(sys.modules) - before if m != '__future__' and not m.startswith('planner')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
    assert out == "[]", out


# --- fuzzing every numeric option ---------------------------------------------------------------------------------

NUMERIC = {  # option -> the command line it is added to (each a valid plan without the option)
    "--context": REC, "--concurrency": REC, "--prompt": REC, "--count": REC, "--nodes": REC, "--top": REC,
    "--ram": REC, "--min-tokens-per-s": REC, "--eval-ctx": REC, "--eval-chunks": REC,
    "--memory": ["recommend", "--model", "8B"], "--bandwidth": ["recommend", "--model", "8B", "--memory", "24GiB"],
    "--replicas": EST,
}

VALUES = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: f"{f}GiB"),
    # past Python's 4300-digit int() limit (drawn as text: str() of such an int raises the same ValueError)
    st.builds(lambda sign, digits: sign + "1" + digits, st.sampled_from(["", "-", "+"]),
              st.text(alphabet="0123456789", min_size=4301, max_size=6000)),
    st.sampled_from(["", " ", "1e400", "-0", "0x10", "1_000", "１２", "nan", "-inf", "24 GiB", "8k", "1.0"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
)


@settings(max_examples=150, deadline=20_000, suppress_health_check=[HealthCheck.too_slow])
@given(option=st.sampled_from(sorted(NUMERIC)), value=VALUES, joined=st.booleans())
def test_fuzz_numeric_options(option, value, joined):
    """Any value of any numeric option: exit 0, 1 or 2, never 3 or an exception, and an error is one line."""
    argv = [*NUMERIC[option], "--json"] + ([f"{option}={value}"] if joined else [option, value])
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # only --help/--version exit; no value here asks for them
            pytest.fail(f"SystemExit({exc.code}) for {argv!r}")
    assert code in (0, 1, 2), (argv, err.getvalue())
    if code:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in lines[0], (argv, lines)
