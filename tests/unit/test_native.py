"""planner.native: native runtimes in a child process. A real signal kills the child (os.kill in a test job); the
parent gets one PlannerError naming the signal and what to do, and keeps what it measured before the crash."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from native_jobs import JOB
from planner.cli import main
from planner.errors import InvalidInputError, PlannerError
from planner.measure.quality import core
from planner.measure.quality.text import load_dataset
from planner.native import NativeCrash, Worker, crash_message, signal_text
from fake_runtime import fake_runtime
from quantize_models import make_hf_model

NOISE = {"F16": 0, "Q8_0": 0.05, "Q4_0": 0.6, "Q2_K": 1.5}


def test_arrays_and_state_cross_the_pipe():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    with Worker(JOB) as w:
        res, (out, ids) = w.call("echo", {"x": [1, "two"]}, [a, np.array([7, 8], dtype=np.int32)], doing="echoing")
        again, _ = w.call("echo", doing="echoing")
    assert res == {"args": {"x": [1, "two"]}, "calls": 1} and again["calls"] == 2  # one child, its state kept
    assert out.dtype == np.float32 and out.shape == (3, 4) and (out == 2 * a).all()
    assert ids.tolist() == [14, 16]


def test_errors_in_the_child_keep_their_kind():
    with Worker(JOB) as w:
        with pytest.raises(InvalidInputError, match="a bad file in the child"):
            w.call("invalid", doing="reading")
        with pytest.raises(PlannerError, match="a domain error in the child") as exc:
            w.call("fail", doing="working")
        assert type(exc.value) is PlannerError
        with pytest.raises(RuntimeError, match="KeyError"):  # a bug in a job stays a bug (exit 3 at the CLI)
            w.call("bug", doing="working")
        assert w.call("echo", doing="echoing")[0]["calls"] == 1  # the child survives its errors


@pytest.mark.parametrize("sig, words", [("SIGILL", "rebuild it portably: CMAKE_ARGS=\"-DGGML_NATIVE=OFF"),
                                         ("SIGABRT", "failed internal check"), ("SIGSEGV", "truncated or corrupt")])
def test_a_crash_in_the_child_is_a_clear_error_naming_the_signal(sig, words):
    w = Worker(JOB)
    with pytest.raises(NativeCrash) as exc:
        w.call("crash", {"signal": sig}, doing="loading model.gguf")
    msg = str(exc.value)
    assert msg.startswith(f"llama.cpp crashed with {sig} (") and "while loading model.gguf" in msg, msg
    assert words in msg and exc.value.signal_name == sig and exc.value.exit_code == 1
    assert "GGML_ASSERT(test) failed: deliberate crash for a test" in msg  # the child's last words, from its stderr
    assert "\n" not in msg
    assert w.proc.poll() == -getattr(signal, sig) and not w.log.exists()
    w.close()  # closing again is harmless
    with Worker(JOB) as again:  # this process lives on and can start another child
        assert again.call("echo", doing="echoing")[0]["calls"] == 1


def test_ctrl_c_during_a_request_ends_the_child_at_once():
    # pytest run as a background job (`cmd &`) has SIGINT ignored; the test needs Python's own Ctrl-C handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_a_request()
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_a_request() -> None:
    import threading
    import time

    w = Worker(JOB)
    w.call("echo", doing="starting")  # the child is up
    timer = threading.Timer(0.5, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT))
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        w.call("sleep", {"s": 60}, doing="sleeping")
    w.close()
    assert time.perf_counter() - t0 < 5 and w.proc.poll() is not None and not w.log.exists()


def test_signal_names_and_exits_without_a_signal():
    assert signal_text(signal.SIGILL) == "SIGILL (illegal instruction)"
    assert signal_text(200) == "signal 200"
    msg, name = crash_message("llama.cpp", 3, "running x")
    assert name is None and msg == "llama.cpp ended its process unexpectedly (exit code 3) while running x"
    msg, name = crash_message("llama.cpp", -signal.SIGKILL, "running x")
    assert name == "SIGKILL" and "out-of-memory" in msg


class _Crashing:
    """Opens like LlamaModel; loading a Q2_K file kills a real child with SIGILL (as a -march=native build would)."""

    def __new__(cls, path: Path, ctx: int):  # type: ignore[misc]
        if Path(path).stem != "Q2_K":
            return fake_runtime(NOISE)(path, ctx)
        with Worker(JOB) as w:
            w.call("crash", {"signal": "SIGILL"}, doing=f"loading {path}")
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("native") / "hf"
    make_hf_model(d, vocab=300, hidden=256, intermediate=512, layers=1)
    return d


def test_eval_keeps_the_formats_measured_before_a_crash(tiny, tmp_path):
    rep = core.evaluate(tiny, ["Q8_0", "Q4_0", "Q2_K"], load_dataset("sample"), ctx=64, max_chunks=2,
                        open_model=_Crashing, cache=tmp_path)
    assert [r.format for r in sorted(rep.results, key=lambda r: r.format)] == ["F16", "Q4_0", "Q8_0"]
    assert rep.crash.startswith("llama.cpp crashed with SIGILL (illegal instruction) while loading ")
    assert "Q2_K.gguf" in rep.crash and "-DGGML_NATIVE=OFF" in rep.crash and not rep.interrupted
    assert rep.as_dict()["crash"] == rep.crash


def test_eval_crash_on_the_reference_is_the_error(tiny, tmp_path):
    def crash(path: Path, ctx: int):  # type: ignore[no-untyped-def]
        with Worker(JOB) as w:
            w.call("crash", {"signal": "SIGABRT"}, doing=f"loading {path}")

    with pytest.raises(NativeCrash, match="SIGABRT"):
        core.evaluate(tiny, ["Q8_0"], load_dataset("sample"), ctx=64, max_chunks=1, open_model=crash, cache=tmp_path)


def test_eval_command_shows_and_saves_what_it_measured_then_exits_1(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(core, "_open_llama", _Crashing)
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))
    code = main(["eval", str(tiny), "--formats", "Q8_0,Q2_K", "--ctx", "64", "--chunks", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    rows = [ln.split()[1] for ln in out.splitlines() if ln.startswith("│")]
    assert rows == ["Q8_0", "F16"]  # the formats measured before the crash, by size
    line = err.strip().splitlines()[-1]
    assert line.startswith("planner: error: llama.cpp crashed with SIGILL (illegal instruction) while loading ")
    assert "saved to" in line and "Traceback" not in err
    saved = json.loads(next((tmp_path / "data" / "eval").glob("*.json")).read_text())
    assert [r["format"] for r in saved["results"]] == ["Q8_0", "F16"] and "SIGILL" in saved["crash"]


def test_recommend_eval_stores_what_it_measured_before_a_crash(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(core, "_open_llama", _Crashing)
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))
    text = tmp_path / "chats.txt"
    text.write_text("What the model will read in production: questions, answers, some code. " * 30)
    code = main(["recommend", "-m", str(tiny), "--device", "rtx-4090", "--format", "Q8_0", "--format", "Q4_0",
                 "--format", "Q2_K", "--json", "--eval", str(text), "--eval-ctx", "64", "--eval-chunks", "2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("planner: error: llama.cpp crashed with SIGILL (illegal instruction)")
    saved = list((tmp_path / "data" / "eval").glob("*.json"))
    assert len(saved) == 1 and str(saved[0]) in err
    formats = {r["format"] for r in json.loads(saved[0].read_text())["results"]}
    assert "F16" in formats and "Q2_K" not in formats and len(formats) >= 2


def test_bench_keeps_its_kernel_timings_when_llama_cpp_crashes(registry, catalog, monkeypatch):
    from planner.measure.speed import llamacpp
    from planner.measure.speed.runner import run_bench
    from planner.cost.model import ModelCost
    from planner.measure.quality import runtime
    from planner.formats import get_format
    from planner.plan import target_from_catalog

    monkeypatch.setattr(llamacpp, "JOB", JOB)  # the timing request kills the child with SIGILL
    monkeypatch.setattr(llamacpp, "llama_cpp_missing_reason", lambda: None)
    monkeypatch.setattr(runtime, "llama_cpp_available", lambda: True)
    spec = registry.get("smollm2-135m").model_copy(update={"num_layers": 2})
    res = run_bench(ModelCost(spec), get_format("Q8_0"), target_from_catalog(catalog.get("cpu-ddr5-dual")),
                    batches=(1,), prompt=0, copy_bytes=16 * 2**20, budget_bytes=2**28, max_sample_bytes=2**20,
                    repeat=3, budget_s=0.01, llc_bytes=2**20)
    assert res.runs and all(r.info.backend != "llamacpp" for r in res.runs)  # the matmul kernel timings are kept
    why = dict(res.skipped)["llama.cpp-Q8_0"]
    assert why.startswith("llama.cpp crashed with SIGILL (illegal instruction) while timing the bench's stand-in")
    assert "-DGGML_NATIVE=OFF" in why


def test_eval_without_a_tokenizer_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "notok"
    make_hf_model(src, vocab=300, layers=1, tokenizer=False)
    code = main(["eval", str(src), "--ctx", "64"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == f"planner: error: eval needs a tokenizer: add tokenizer.json to {src}"
    assert not (tmp_path / "cache").exists()  # nothing quantized


def test_eval_of_a_gguf_without_a_vocabulary_is_refused(tmp_path, capsys, registry):
    from planner.measure.speed.llamacpp import standin_plan, write_standin
    from planner.cost.model import ModelCost
    from planner.formats import get_format

    gguf = tmp_path / "novocab.gguf"
    write_standin(standin_plan(ModelCost(registry.get("smollm2-135m")), get_format("Q8_0"), 1), "Q8_0", gguf)
    code = main(["eval", str(gguf), "--ctx", "64"])
    _, err = capsys.readouterr()
    assert code == 2 and "eval needs a tokenizer" in err and str(gguf) in err and "no_vocab" in err


def test_eval_with_a_non_bpe_tokenizer_is_refused(tmp_path, capsys):
    src = tmp_path / "unigram"
    make_hf_model(src, vocab=300, layers=1)
    (src / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    code = main(["eval", str(src), "--ctx", "64"])
    _, err = capsys.readouterr()
    assert code == 2 and "eval needs a tokenizer" in err and "Unigram" in err


@pytest.mark.real_runtime
@pytest.mark.skipif(not __import__("planner.measure.quality.runtime", fromlist=["x"]).llama_cpp_available(),
                    reason="llama-cpp-python is not installed (pip install '.[llamacpp]')")
def test_real_llama_cpp_abort_is_caught(tmp_path, registry):
    """llama.cpp aborts (SIGABRT) when asked to tokenize with a GGUF that has no vocabulary (what eval did before it
    checked for a tokenizer): the child dies, this process gets the error and runs llama.cpp again afterwards."""
    from planner.measure.speed.llamacpp import standin_plan, time_file, write_standin
    from planner.cost.model import ModelCost
    from planner.measure.quality.runtime import LlamaModel
    from planner.formats import get_format

    gguf = tmp_path / "novocab.gguf"
    write_standin(standin_plan(ModelCost(registry.get("smollm2-135m")), get_format("Q8_0"), 1), "Q8_0", gguf)
    model = LlamaModel(gguf, 64)
    try:
        with pytest.raises(NativeCrash) as exc:
            model.tokenize("Some text to tokenize.")
    finally:
        model.close()
    msg = str(exc.value)
    assert exc.value.signal_name == "SIGABRT", msg
    assert msg.startswith(f"llama.cpp crashed with SIGABRT (aborted) while tokenizing with {gguf}"), msg
    decode, _ = time_file(gguf, prompt=0, threads=1, n_gen=4, budget_s=0.05)  # the same file still times fine
    assert decode.median_s > 0
