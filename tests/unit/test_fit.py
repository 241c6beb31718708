"""planner.fit: ranking models for a target by expected capability among plans that fit and are fast enough."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner import fit as F
from planner.capability import NOISE_KLD, expected
from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.formats import FORMATS
from planner.hardware.catalog import load_catalog
from planner.models.profiles import load_registry
from planner.plan import GIB, target_from_catalog
from planner.runtimes import RUNTIMES


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _target(catalog, dev: str, count: int = 1, ram_gib: int = 64):
    return target_from_catalog(catalog.get(dev), count, ram_gib * GIB)


@pytest.fixture(scope="module")
def rank_4090(registry, catalog):
    return F.rank_models(F.bundled_models(registry), _target(catalog, "rtx-4090"))


def test_ranked_plans_fit_meet_the_floor_and_are_ordered_by_expected_capability(rank_4090):
    ranked = rank_4090.ranked
    assert len(ranked) >= 10
    for f in ranked:
        assert f.plan.fits and f.plan.decode_tokens_per_s >= F.DEFAULT_MIN_TOKENS_PER_S
        assert f.capability.has_data
        # the figure shown is the capability record combined with the plan's own quality estimate
        assert f.expected == expected(f.capability, f.plan.quality)
    keys = [f.expected.rank_value for f in ranked]
    assert keys == sorted(keys, reverse=True)
    assert rank_4090.best is ranked[0]


def test_unranked_models_say_why(rank_4090):
    unranked = [f for f in rank_4090.fits if not f.ranked]
    assert unranked and all(f.reason for f in unranked)
    by_id = {f.spec.id: f for f in rank_4090.fits}
    assert "no data" in by_id["gpt-oss-120b"].reason  # no published chat score: listed, never guessed
    assert "beyond its maximum" in by_id["llama-2-7b"].reason  # 4,096-token model at the default 8,192
    assert by_id["llama-3.1-405b"].plan is None  # 405B does not fit a 24 GB card with 64 GB of RAM


def test_a_higher_floor_leaves_only_faster_plans(registry, catalog):
    fast = F.rank_models(F.bundled_models(registry), _target(catalog, "rtx-4090"), min_tokens_per_s=100)
    assert fast.ranked and all(f.plan.decode_tokens_per_s >= 100 for f in fast.ranked)
    none = F.rank_models(F.bundled_models(registry), _target(catalog, "rtx-4090"), min_tokens_per_s=1e5)
    assert not none.ranked
    assert any("cannot reach 100000 tok/s" in f.reason for f in none.fits)


def test_bigger_lower_bit_against_smaller_higher_bit_is_decided_by_the_expected_figure(registry, catalog):
    """On a 12 GB card Gemma 3 27B only fits at ~3 bits, Gemma 3 12B at ~5.5: the ranking weighs the 27B's higher
    published score against its format's loss, with the evidence (KLD, interval) on each row."""
    r = F.rank_models(F.bundled_models(registry), _target(catalog, "rtx-3060-12gb"))
    by_id = {f.spec.id: f for f in r.fits}
    big, small = by_id["gemma-3-27b"], by_id["gemma-3-12b"]
    assert big.plan is not None and small.plan is not None
    assert big.plan.bits_per_weight < small.plan.bits_per_weight
    assert big.capability.score > small.capability.score
    assert big.plan.quality["kld"] > small.plan.quality["kld"]
    assert (big.expected.high - big.expected.low) > (small.expected.high - small.expected.low)
    order = [f.spec.id for f in r.ranked]
    assert (order.index("gemma-3-27b") < order.index("gemma-3-12b")) == (big.expected.rank_value > small.expected.rank_value)


def test_choose_takes_the_fastest_among_equally_capable_plans(registry, catalog):
    t = _target(catalog, "rtx-4090")
    mc = ModelCost(registry.get("llama-3.1-8b"))
    rt = RUNTIMES["llama.cpp"]
    plans = [evaluate(mc, FORMATS[f], rt, t, context=8192) for f in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M")]
    got = F.choose(plans)
    best_kld = min(p.quality["kld"] for p in plans)
    equal = [p for p in plans if p.quality["kld"] <= best_kld + NOISE_KLD]
    assert got in equal and got.decode_tokens_per_s == max(p.decode_tokens_per_s for p in equal)
    assert F.choose([]) is None


@pytest.mark.parametrize("dev,count,model", [("rtx-4090", 1, "llama-3.3-70b"), ("rtx-3060-12gb", 1, "qwen3-30b-a3b"),
                                             ("h100-sxm", 2, "qwen3-235b-a22b"), ("cpu-ddr5-dual", 1, "qwen3-32b")])
def test_quick_bounds_never_reject_a_plan_that_would_be_chosen(registry, catalog, dev, count, model):
    """The cheap memory and bandwidth bounds skip costing a candidate; costing it anyway must confirm it does not
    fit or is slower than the floor."""
    t = _target(catalog, dev, count)
    mc = ModelCost(registry.get(model))
    floor = 10.0
    for rt, fmts in F.ladder(t, mc.spec.native_dtype):
        for fmt in fmts:
            if F._quick_reject(mc, fmt, rt, t, floor):
                p = evaluate(mc, fmt, rt, t, context=8192)
                assert not (p.fits and p.decode_tokens_per_s >= floor), (rt.id, fmt.id)


def test_ladders_follow_the_device(catalog):
    engines = lambda t: [rt.id for rt, _ in F.ladder(t)]  # noqa: E731
    assert engines(_target(catalog, "m3-max-128gb")) == ["llama.cpp", "mlx"]
    assert engines(_target(catalog, "h100-sxm")) == ["llama.cpp", "vllm"]
    assert engines(_target(catalog, "cpu-ddr5-dual")) == ["llama.cpp"]
    gguf = [f.id for rt, fmts in F.ladder(_target(catalog, "rtx-4090"), "mxfp4") if rt.id == "llama.cpp" for f in fmts]
    assert gguf[-1] == "MXFP4_MOE"  # a model released in MXFP4 is also planned as released


def test_quality_cache_changes_nothing_but_time(registry, catalog, monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path))
    F._quality_cache_file.cache_clear()
    t = _target(catalog, "rtx-3060-12gb")
    models = [c for c in F.bundled_models(registry) if c.spec.id in ("gemma-3-12b", "llama-3.1-8b", "phi-4")]
    first = F.rank_models(models, t)
    files = list(tmp_path.glob("fit-quality-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())
    second = F.rank_models(models, t)
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    third = F.rank_models(models, t)
    summary = lambda r: [(f.spec.id, f.plan.format_id, f.plan.quality["kld"], f.expected.value) for f in r.ranked]  # noqa: E731
    assert summary(first) == summary(second) == summary(third)
    F._quality_cache_file.cache_clear()


def test_models_in_the_hf_cache_are_planned_and_listed(registry, catalog, tmp_path: Path, monkeypatch):
    from fakehub import cache_chat_1b  # the planner reads the cache where the library does (variable and constant)

    cache_chat_1b(monkeypatch, tmp_path)
    copy = tmp_path / "models--meta-llama--Llama-3.1-8B-Instruct" / "snapshots" / "abc"
    copy.mkdir(parents=True)
    (copy / "config.json").write_text("{}")  # a profile's repo: ranked as the profile, never read
    broken = tmp_path / "models--acme--broken" / "snapshots" / "abc"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    cands, skipped = F.cached_models(registry)
    assert [c.origin for c in cands] == ["HF cache (acme/chat-1b)"]
    assert len(skipped) == 1 and skipped[0].startswith("acme/broken")
    r = F.rank_models(cands, _target(catalog, "rtx-4090"))
    (only,) = r.fits
    assert only.plan is not None and only.plan.fits  # costed, though it has no published score
    assert not only.ranked and "not a bundled profile" in only.capability.note
