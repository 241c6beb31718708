"""Data-parallel replicas inside one node, and replica counts fixed by the user (estimate --replicas, spec `replicas`)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import InvalidInputError
from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.fitcheck.spec import parse_spec
from planner.formats import get_format
from planner.plan import replica_layout_error, replicated, target_from_catalog
from planner.recommend import explores_layouts, layout_runners_up, recommend, sub_layouts
from planner.runtimes import get_runtime


@pytest.fixture(scope="module")
def mc8(registry):
    return ModelCost(registry.get("llama-3.1-8b"))


def _layouts(plans) -> list[str]:
    return [p.parallel_layout for p in plans]


def test_single_node_with_concurrent_sequences_takes_the_fewest_gpus_then_throughput(catalog, mc8):
    t = target_from_catalog(catalog.get("h100-sxm"), 8)
    rec = recommend(mc8, t, context=8192, concurrency=64, formats=[get_format("fp8")], runtimes=[get_runtime("vllm")])
    b = rec.best
    assert b is not None and b.fits
    assert rec.target_label == t.label  # the target is still the whole node
    considered = layout_runners_up(rec)
    for shape in ("tp1 × pp1 × dp8", "tp2 × pp1 × dp4", "tp4 × pp1 × dp2", "tp8 × pp1 × dp1"):
        assert shape in _layouts(considered)
    # one H100 cannot hold 64 sequences' KV cache: the smallest layout that fits uses two GPUs in all ...
    lone = next(p for p in considered if p.parallel_layout == "tp1 × pp1 × dp1")
    assert not lone.fits
    fitting = [p for p in considered if p.fits]
    assert len(b.per_device) == min(len(p.per_device) for p in fitting) == 2
    # ... and of the layouts of that size the one that serves most
    assert b.throughput_tokens_per_s == max(p.throughput_tokens_per_s for p in fitting if len(p.per_device) == 2)
    # a copy serves its share of the sequences exactly as one GPU planned alone for that share
    dp8 = next(p for p in considered if p.parallel_layout == "tp1 × pp1 × dp8")
    assert "--data-parallel-size 8" in dp8.launch and "--tensor-parallel-size 1" in dp8.launch
    one = evaluate(mc8, get_format("fp8"), get_runtime("vllm"), target_from_catalog(t.device, 1), context=8192,
                   concurrency=8)
    assert dp8.throughput_tokens_per_s == pytest.approx(8 * one.throughput_tokens_per_s)
    assert max(d.total_bytes for d in dp8.per_device) < max(d.total_bytes for d in lone.per_device)


def test_concurrency_one_plans_a_single_node_as_given(catalog, mc8):
    t = target_from_catalog(catalog.get("h100-sxm"), 8)
    assert sub_layouts(t, 1) == [t] and not explores_layouts(t, 1)
    rec = recommend(mc8, t, context=8192, concurrency=1, formats=[get_format("fp8")], runtimes=[get_runtime("vllm")])
    assert rec.best.parallel_layout == "tp8 × pp1 × dp1"
    assert {p.device_count for p in rec.plans} == {8}  # no smaller layout was even costed
    direct = evaluate(mc8, get_format("fp8"), get_runtime("vllm"), t, context=8192)
    assert rec.best.as_dict() == direct.as_dict()


def test_only_multi_gpu_targets_with_concurrency_explore(catalog):
    one_gpu = target_from_catalog(catalog.get("rtx-4090"))
    assert sub_layouts(one_gpu, 64) == [one_gpu]
    fixed = replicated(target_from_catalog(catalog.get("h100-sxm"), 8), 4)
    assert sub_layouts(fixed, 64) == [fixed]  # the user fixed the replicas: no other layout
    four = target_from_catalog(catalog.get("rtx-4090"), 4)
    subs = sub_layouts(four, 3)
    assert four in subs and {(s.count, s.replicas) for s in subs} == {(1, 1), (2, 1), (4, 1), (1, 3), (2, 2)}


@pytest.mark.parametrize("count,nodes,replicas,shape", [
    (8, 1, 1, (8, 1, 1, 1)), (8, 1, 4, (2, 1, 4, 4)), (8, 1, 8, (1, 1, 8, 8)),
    (8, 2, 2, (8, 1, 2, 1)), (8, 2, 4, (4, 1, 4, 2)), (8, 4, 2, (8, 2, 2, 1)), (6, 2, 4, (3, 1, 4, 2)),
])
def test_replicated_splits_the_gpus_into_equal_copies(catalog, count, nodes, replicas, shape):
    t = replicated(target_from_catalog(catalog.get("h100-sxm"), count, nodes=nodes), replicas)
    assert (t.count, t.nodes, t.replicas, t.replicas_per_node) == shape
    assert t.total_devices * t.replicas == count * nodes


@pytest.mark.parametrize("count,nodes,replicas,message", [
    (8, 1, 3, "3 replicas do not divide the 8 GPUs"),
    (6, 2, 3, "3 replicas of 4 GPUs each do not fit whole into nodes of 6 GPUs"),
    (8, 3, 2, "2 replicas of 12 GPUs each do not fit whole into nodes of 8 GPUs"),
    (8, 1, 0, "must be at least 1, got 0"),
])
def test_uneven_replicas_are_refused(catalog, count, nodes, replicas, message):
    assert message in replica_layout_error(count, nodes, replicas)
    with pytest.raises(ValueError, match=message):
        replicated(target_from_catalog(catalog.get("h100-sxm"), count, nodes=nodes), replicas)


def test_fixed_replicas_memory_per_gpu_is_one_copys(catalog, mc8):
    dev = catalog.get("h100-sxm")
    fmt, rt = get_format("fp8"), get_runtime("vllm")
    dp = evaluate(mc8, fmt, rt, replicated(target_from_catalog(dev, 8), 4), context=8192, concurrency=64)
    tp2 = evaluate(mc8, fmt, rt, target_from_catalog(dev, 2), context=8192, concurrency=16)
    assert dp.fits and dp.parallel["data_parallel"] == 4 and dp.parallel_layout == "tp2 × pp1 × dp4"
    assert [d.total_bytes for d in dp.per_device] == [d.total_bytes for d in tp2.per_device] * 4


# ------------------------------------------------------------------------------------------- deploy spec field

SPEC = """\
version: 1
deployments:
  - name: chat
    model: llama-3.1-8b
    concurrency: 64
    target:
      device: h100-sxm
      count: {count}
      nodes: {nodes}
      replicas: {replicas}
"""


def test_spec_replicas_must_split_the_gpus():
    (d,) = parse_spec(SPEC.format(count=8, nodes=1, replicas=4), "deploy.yaml")
    assert d.target.replicas == 4
    with pytest.raises(InvalidInputError) as e:
        parse_spec(SPEC.format(count=8, nodes=1, replicas=3), "deploy.yaml")
    assert e.value.exit_code == 2
    assert str(e.value) == ("deploy.yaml:10: deployments[0].target.replicas: 3 replicas do not divide the 8 GPUs "
                            "(1 node(s) x 8 GPUs) (got 3)")
    for bad in ("0", "-1", "'2'", "2.0", "true", "null"):
        with pytest.raises(InvalidInputError, match=r"^deploy.yaml:10: deployments\[0\].target.replicas: "):
            parse_spec(SPEC.format(count=8, nodes=1, replicas=bad), "deploy.yaml")


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])  # a hang fails
@given(st.integers(-3, 20) | st.integers(), st.integers(-1, 5) | st.integers(), st.integers(-3, 70) | st.integers())
def test_fuzz_spec_replicas_valid_or_a_field_error(catalog, count, nodes, replicas):
    """Any count/nodes/replicas either loads into a target whose copies fill the GPUs, or is an error on its field."""
    try:
        (d,) = parse_spec(SPEC.format(count=count, nodes=nodes, replicas=replicas), "fuzz.yaml")
    except InvalidInputError as exc:
        lines = str(exc).splitlines()
        assert lines and all(re.match(r"^fuzz.yaml:\d+: deployments\[0\].target.(count|nodes|replicas): ", ln)
                             for ln in lines), str(exc)
        assert (count < 1 or nodes < 1 or replicas < 1 or count > 1024 or nodes > 4096 or replicas > 65_536
                or (count * nodes) % replicas or replica_layout_error(count, nodes, replicas))
        return
    t = replicated(target_from_catalog(catalog.get("h100-sxm"), count, nodes=nodes), d.target.replicas)
    assert t.total_devices * t.replicas == count * nodes



def test_prefer_speed_picks_the_fastest_layout(catalog, registry):
    from planner.cost.model import ModelCost
    from planner.formats import get_format
    from planner.plan import target_from_catalog
    from planner.recommend import layout_runners_up, recommend
    from planner.runtimes import get_runtime

    mc = ModelCost(registry.get("llama-3.1-70b"))
    target = target_from_catalog(catalog.get("h100-sxm"), 8)
    kw = dict(context=8192, concurrency=16, formats=[get_format("fp8")], runtimes=[get_runtime("vllm")])
    fast = recommend(mc, target, prefer="speed", **kw)
    layouts = [p for p in layout_runners_up(fast) if p.fits]
    assert len(layouts) > 1
    assert fast.best.throughput_tokens_per_s == max(p.throughput_tokens_per_s for p in layouts)
    small = recommend(mc, target, **kw)  # balanced: the narrowest copy that fits, replicas for the rest

    def per_copy(p) -> int:  # type: ignore[no-untyped-def]
        par = p.parallel or {}
        return par.get("tensor_parallel", 1) * par.get("pipeline_parallel", 1)

    assert per_copy(small.best) == min(per_copy(p) for p in layouts) < per_copy(fast.best)
