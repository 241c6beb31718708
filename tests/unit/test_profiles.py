"""Model profiles: published parameter counts, lookups by id / alias / HF repo / bare size, errors."""

from __future__ import annotations

import pytest
import yaml

from planner.errors import CatalogError, NotFoundError
from planner.models.inventory import count_active_params, count_params, tensor_inventory
from planner.models.profiles import load_registry, parse_profile_files


def test_at_least_forty_profiles_cover_the_families(registry):
    assert len(registry) >= 40
    archs = {m.architecture for m in registry}
    assert {"llama", "qwen2", "gemma2", "deepseek2"} <= archs
    for needed in ("llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3",
                   "gpt-oss-20b", "gemma-3-27b", "smollm2-135m"):
        assert needed in registry.models


def test_every_profile_matches_its_published_parameter_count(registry):
    bad = []
    for m in registry:
        got = count_params(m)
        err = abs(got / m.params_published - 1)
        if err > 0.005:
            bad.append(f"{m.id}: computed {got:,} vs published {m.params_published:,} ({err:.2%})")
    assert not bad, "\n".join(bad)


def test_moe_active_parameters_are_a_fraction_of_total(registry):
    m = registry.get("qwen3-30b-a3b")
    total, active = count_params(m), count_active_params(m)
    assert 0.05 < active / total < 0.2  # 3.3B active of 30.5B
    if m.active_params_published:
        assert abs(active / m.active_params_published - 1) < 0.15


@pytest.mark.parametrize("typed,expected", [
    ("70B", "llama-3.1-70b"), ("70b", "llama-3.1-70b"), ("8B", "llama-3.1-8b"),
    ("meta-llama/Llama-3.1-70B-Instruct", "llama-3.1-70b"), ("Llama-3.1-70B-Instruct", "llama-3.1-70b"),
    ("some-org/Llama-3.1-8B-Instruct", "llama-3.1-8b"), ("LLAMA-3.1-8B", "llama-3.1-8b"),
])
def test_lookup(registry, typed, expected):
    assert registry.get(typed).id == expected


def test_unknown_names_and_sizes_get_candidates(registry):
    with pytest.raises(NotFoundError) as e:
        registry.get("llama-3.1-7b")
    assert e.value.candidates
    with pytest.raises(NotFoundError) as e:
        registry.get("69B")
    assert "70B" in e.value.candidates


def test_tensor_shapes_of_llama_8b_are_exact(registry):
    ts = {t.name: t.shape for t in tensor_inventory(registry.get("llama-3.1-8b"))}
    assert ts["token_embd.weight"] == (128256, 4096)
    assert ts["blk.0.attn_k.weight"] == (1024, 4096)  # 8 KV heads x 128
    assert ts["blk.31.ffn_down.weight"] == (4096, 14336)
    assert "blk.32.attn_q.weight" not in ts


def test_mla_and_moe_inventory(registry):
    m = registry.get("deepseek-v3")
    names = {t.name: t.shape for t in tensor_inventory(m)}
    assert any(n.startswith("blk.3.ffn_gate_exps") for n in names)
    assert not any(n.startswith("blk.0.ffn_gate_exps") for n in names)  # first dense layers
    exps = next(s for n, s in names.items() if n.startswith("blk.3.ffn_down_exps"))
    assert exps[0] == 256


def test_broken_profile_file_reports_every_problem(tmp_path):
    good = yaml.safe_load((__import__("planner.paths", fromlist=["data_dir"]).data_dir("profiles") / "llama.yaml").read_text())
    m = dict(good["models"][0])
    bad = {"family": "x", "models": [{**m, "id": "a", "num_kv_heads": 5}, {**m, "id": "b", "hidden_size": -1, "wings": 2}]}
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    from planner.yamlio import load_yaml_dir

    with pytest.raises(CatalogError) as e:
        parse_profile_files(load_yaml_dir(tmp_path))
    text = "\n".join(e.value.problems)
    assert f"{f}: models[0]" in text and "multiple of num_kv_heads" in text
    assert "models[1].hidden_size" in text and "models[1].wings: unknown field" in text


def test_user_profiles_merge(tmp_path):
    from planner.paths import data_dir

    doc = yaml.safe_load((data_dir("profiles") / "llama.yaml").read_text())
    m = {k: v for k, v in doc["models"][0].items() if k not in ("reference_for_size", "aliases")}
    m["id"] = "my-finetune"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"family": "mine", "models": [m]}))
    reg = load_registry([tmp_path])
    assert reg.get("my-finetune").hidden_size == m["hidden_size"]
