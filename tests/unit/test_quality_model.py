"""The per-family quality model: its sourced data, the fit, intervals and basis, and what recommend makes of them."""

from __future__ import annotations

import math

import pytest

from planner.cost.model import ModelCost
from planner.cost.quality import (BASES, EXTRAPOLATE, Quality, expected_quality, fit_all, fit_rows, ln_nll,
                                  published_rows, predict, ranking_kld)
from planner.formats import get_format
from planner.plan import target_from_catalog
from planner.recommend import explain, recommend


def test_published_rows_load_and_every_row_has_a_source():
    rows = published_rows()
    assert len(rows) > 150
    for r in rows:
        assert r["source"].strip(), r
        assert r["family"] and r["model"], r
        assert r["fit"] in ("yes", "no")
        if r["fit"] == "no":
            assert r["why"].strip(), r  # a row kept out of the fit says why
        else:
            assert float(r["ppl_delta_pct"]) > 0 and float(r["bits"]) > 1
    fams = {r.family for r in fit_rows()}
    assert {"gguf", "gguf-imatrix", "gptq", "awq", "rtn", "bnb-nf4", "fp8-w8a8", "int8-w8a8", "int8-wo", "exl2",
            "mlx", "hqq"} <= fams


def test_family_fits_fall_with_bits_on_the_real_rows():
    fits = fit_all(fit_rows())
    for fam, f in fits.items():
        assert f.b < 0, fam
        losses = [f.ln_ppl(b, 128, "llama-3-8b") for b in (2.5, 3.0, 4.0, 5.0, 6.0, 8.0)]
        assert losses == sorted(losses, reverse=True), fam
        assert f.lo < 0 < f.hi, fam
    assert fits["gguf"].g > 0  # heavily trained models (Llama 3) lose more than Llama 1/2, as the rows show


def test_quality_dict_has_interval_and_basis(registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    for fid in ("Q4_K_M", "awq-int4", "nvfp4", "fp8", "int8", "exl2-4.0bpw", "Q8_0"):
        q = expected_quality(get_format(fid), mc).as_dict()
        assert q["basis"] in BASES, fid
        assert 0 < q["kld_low"] <= q["kld"] <= q["kld_high"], fid
        assert 0 < q["ppl_delta_pct_low"] <= q["ppl_delta_pct"] <= q["ppl_delta_pct_high"], fid
        assert q["note"], fid


def test_known_errors_of_the_single_curve_are_fixed(registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    q = {f: expected_quality(get_format(f), mc) for f in ("Q4_K_M", "awq-int4", "gptq-int4", "int8", "w8a8-int8")}
    # published 4-bit g128 GPTQ/AWQ lose more than Q4_K_M (oobabooga's same-setup tables, torchao's Llama-3 rows)
    assert q["awq-int4"].kld > q["Q4_K_M"].kld and q["gptq-int4"].kld > q["Q4_K_M"].kld
    assert q["awq-int4"].label != "negligible"
    assert q["w8a8-int8"].kld > q["int8"].kld  # quantized activations cost more than 8-bit weights alone
    # no blanket 'large models lose less': Llama-3-70B's published rows lose more than Llama-3-8B's
    big = expected_quality(get_format("Q4_K_M"), ModelCost(registry.get("llama-3-70b")))
    assert big.kld >= 0.9 * expected_quality(get_format("Q4_K_M"), ModelCost(registry.get("llama-3-8b"))).kld


def test_extrapolated_family_says_so(registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    # gptq-int8: no published 8-bit GPTQ rows (nvfp4 was the example until a published NVFP4 row was added)
    q = expected_quality(get_format("gptq-int8"), mc)
    assert "gptq-8bit" in EXTRAPOLATE and q.basis == "extrapolated" and "extrapolated" in q.note
    # the reason names why: no 8-bit GPTQ rows, so the GPTQ mechanism's level stands in
    assert "no published gptq-8bit rows" in q.basis_why and q.as_dict()["basis_why"] == q.basis_why
    # a format beyond the bits its family's rows cover says so with the span
    # (mlx-8bit: the MLX rows are 4- and 5-bit; exl2-8bpw was the example until exllamav3's charts added 8.0 bpw rows)
    hi = expected_quality(get_format("mlx-8bit"), mc)
    assert hi.basis == "extrapolated" and "lies outside the" in hi.basis_why and "mlx rows cover" in hi.basis_why
    assert expected_quality(get_format("Q4_K_M"), mc).as_dict().get("basis_why") is None
    assert q.label == Quality(q.kld_high, 0, "published").label  # labelled by the interval's upper end
    measured_like = Quality(q.kld, q.ppl_delta_pct, "measured", "measured").as_dict()
    assert ranking_kld(q.as_dict()) > ranking_kld(measured_like)  # no better than the same number measured


def test_recommend_8b_4090_states_basis_and_ranks_awq_behind_q4_k_m(registry, catalog):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    rec = recommend(mc, target_from_catalog(catalog.get("rtx-4090"), 1), context=8192)
    q = {p.format_id: p.quality for p in rec.plans if p.runs}
    assert ranking_kld(q["awq-int4"]) > ranking_kld(q["Q4_K_M"])
    assert ranking_kld(q["gptq-int4"]) > ranking_kld(q["Q4_K_M"])
    assert any("published" in r or "extrapolated" in r for r in rec.reasons)
    ext = next(p for p in rec.plans if p.runs and p.quality["basis"] == "extrapolated")
    assert any(f"extrapolated ({ext.quality['basis_why']})" in r for r in explain(ext, rec.plans, "balanced"))


def test_measured_quality_keeps_basis_measured():
    from planner.measure.reports import measured_quality

    rep = {"text": "t", "ctx": 512, "source": "m.gguf", "results": [
        {"format": "F16", "reference": True, "ppl": 10.0},
        {"format": "Q4_0", "kld_mean": 0.05, "ppl": 10.5}]}
    q = measured_quality([rep])["Q4_0"]
    assert q["basis"] == "measured" and q["source"] == "measured"
    assert q["kld_low"] == q["kld"] == q["kld_high"] == pytest.approx(0.05)
    assert math.isclose(q["ppl_delta_pct"], 5.0, rel_tol=1e-6)


def test_q8_0_head_of_q4_k_l_rates_no_worse_than_q4_k_m(registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    m, l_ = (expected_quality(get_format(f), mc) for f in ("Q4_K_M", "Q4_K_L"))
    assert l_.kld < m.kld and l_.kld_high <= m.kld_high  # Q8_0 output instead of Q6_K: a small credit, never a cost
    assert "usual head is 6.6 bits" in l_.note and "usual head" not in m.note


def test_a_4_bit_tied_embedding_rates_worse_than_a_16_bit_one(registry):
    from planner.formats import FP16, GroupQuant, WeightFormat, _assign_by
    from planner.cost.quality import linear_bits

    mc = ModelCost(registry.get("llama-3.2-1b"))  # tied: token_embd is the head
    assert mc.spec.tie_word_embeddings
    gptq = get_format("gptq-int4")
    enc = GroupQuant("gptq-int4-g128", 4, 128, zero_bits=4, per_input_row_bits=32, row_multiple=8, out_multiple=8)
    q_head = WeightFormat("gptq-int4-qhead", "gptq", "GPTQ 4-bit with the tied embedding quantized too", "int4",
                          _assign_by(enc, FP16, include_embed=True, include_output=True), (), enc.bits_per_weight)
    (b16, g16, h16), (b4, g4, h4) = linear_bits(gptq, mc), linear_bits(q_head, mc)
    assert (b16, g16) == (b4, g4) and h16 == 16.0 and h4 < 5  # same linear bits, only the head differs
    plain, quant = expected_quality(gptq, mc), expected_quality(q_head, mc)
    assert quant.kld > 1.1 * plain.kld and quant.kld_high > plain.kld_high
    assert "usual head is 16.0 bits" in quant.note


def test_formats_with_their_familys_usual_head_are_unadjusted(registry):
    from planner.cost.quality import _fits, kld_from_ppl, linear_bits, model_key, predict, quality_family

    mc = ModelCost(registry.get("llama-3.1-8b"))
    for fid in ("Q4_K_M", "Q6_K", "Q8_0", "Q4_0", "IQ3_XXS", "gptq-int4", "awq-int4", "nf4", "fp8", "int8", "w8a8-int8",
                "mlx-4bit", "mlx-8bit", "nvfp4", "exl2-4.0bpw"):
        fmt = get_format(fid)
        bits, group, _ = linear_bits(fmt, mc)
        ppl, plo, phi, basis, *_ = predict(_fits(), quality_family(fmt, group, bits), bits, group, model_key("llama-3.1-8b"),
                                           symmetric=fid == "gptq-int4", gguf_type=fid)
        q = expected_quality(fmt, mc)
        assert (q.ppl_delta_pct, q.ppl_low, q.ppl_high, q.basis) == (ppl, plo, phi, basis), fid
        assert (q.kld, q.kld_high) == (kld_from_ppl(ppl), kld_from_ppl(phi)) and "usual head" not in q.note, fid


def test_a_model_with_published_rows_keeps_its_own_residual_and_a_point_release_without_rows_does_not_borrow_it():
    """Llama-3-8B's own K-quant rows (llama.cpp's scoreboard) keep their residual beyond the model's shared effect; a
    point release without rows (qwen3.5-8b) does not take its predecessor's (held out, Llama-3.3-70B loses x2.5 less
    than Llama-3-70B's effect says): like any model without rows it keeps the family line plus the heavily-trained
    term."""
    from planner.cost.quality import ln_nll, model_key, pct_from_ln_nll, predict, sibling

    fits = fit_all(fit_rows())
    gguf = fits["gguf"]
    own = [r for r in fit_rows() if r.family == "gguf" and model_key(r.model) == "llama-3-8b"]
    assert len(own) >= 5
    res = [ln_nll(r.ppl_pct) - gguf.ln_ppl(r.bits, r.group, "llama-3-8b") - gguf.source_effect(r.source) for r in own]
    assert gguf.offset("llama-3-8b") == pytest.approx(sum(res) / (len(res) + 1))  # shrunk mean of its residuals
    bits = own[0].bits
    published = predict(fits, "gguf", bits, 0, "llama-3-8b")
    assert published[3] == "published"
    assert published[0] == pytest.approx(pct_from_ln_nll(gguf.ln_ppl(bits, 0, "llama-3-8b") + gguf.offset("llama-3-8b")))
    assert sibling("llama-3.1-8b") == "llama-3-8b" and sibling("qwen3-8b") == "" and sibling("mistral-7b-v0.3") == ""
    assert "qwen3.5-8b" not in dict(gguf.model_fx) and gguf.model_effect("qwen3-8b") != 0
    point = predict(fits, "gguf", bits, 0, "qwen3.5-8b")
    assert point[3] == "published-family" and "qwen3-8b" not in point[4]
    assert point[0] == pytest.approx(pct_from_ln_nll(gguf.curve(bits, 0) + gguf.g))
    assert point[0] != pytest.approx(predict(fits, "gguf", bits, 0, "qwen3-8b")[0])
    other = predict(fits, "gguf", bits, 0, "gemma-3-27b")
    assert other[0] == pytest.approx(pct_from_ln_nll(gguf.curve(bits, 0) + gguf.g))  # heavily trained, no rows of its own


def test_group_size_enters_once_through_the_quantizer_range():
    """Bits of the codes set the grid; the group enters only through the range one scale covers (ln H_g). MLX
    measured g32 against g64 on Qwen3-8B at 0.69x (mlx-lm PR #202); the old double count predicted 0.40x."""
    from planner.cost.quality import harmonic, precision_bits, range_term

    assert precision_bits("awq", 4.1562, 128) == 4 and precision_bits("mlx", 5.0, 32) == 4
    assert precision_bits("mlx", 4.5, 64) == 4 and precision_bits("nvfp4", 4.5, 16) == 4
    assert precision_bits("rtn", 4.0, 0) == 4 and precision_bits("gguf", 4.7975, 0) == 4.7975
    assert harmonic(4) == pytest.approx(1 + 1 / 2 + 1 / 3 + 1 / 4)
    fits = fit_all(fit_rows())
    mlx = fits["mlx"]
    # between Gaussian (1) and Laplace (2) weight tails, as derived in range_term; a fitted value may pass 2 by the fit's
    # own noise (2.005 once QwQ-32B counted as the heavily trained Qwen2.5-32B it is), not by a tenth
    assert 1.0 <= mlx.c <= 2.1
    ratio = math.exp(mlx.curve(5.0, 32) - mlx.curve(4.5, 64))
    assert ratio == pytest.approx(math.exp(mlx.c * (range_term(32) - range_term(64))))
    assert 0.6 <= ratio <= 0.85
    assert fits["gptq"].curve(4.1562, 128) < fits["gptq"].curve(4.0, 0)  # per-channel loses more than g128


def test_single_source_families_take_their_sibling_mechanism_as_prior():
    """Without its rows mlx (affine RTN per 64) takes RTN's level and the basis is extrapolated; with them its own
    models are 'published' and the rows move the level. A family with a single source stays 'extrapolated' for a
    model outside its rows."""
    from planner.cost.quality import model_key, predict

    rows = fit_rows()
    without = fit_all([r for r in rows if r.family != "mlx"])
    assert without["mlx"].n == 0 and without["mlx"].prior == "rtn" and without["mlx"].a == without["rtn"].a
    p = predict(without, "mlx", 4.5, 64, "llama-3-8b")
    assert p[3] == "extrapolated" and "rtn" in p[4]
    fits = fit_all(rows)
    assert predict(fits, "mlx", 4.5, 64, model_key("Qwen3-8B"))[3] == "published"
    assert without["rtn"].a < fits["mlx"].a  # the MLX rows (which lose more than RTN predicts) move the level up
    # a single-source family: the family with the fewest sources, cut to its first source (the published table need
    # not hold one: every family has had two or more sources since quality_extra22.csv)
    from planner.cost.quality import SOURCE_KEY_CHARS

    thin = min((f for f, fit in fits.items() if fit.n_sources), key=lambda f: fits[f].n_sources)
    first = next(r.source[:SOURCE_KEY_CHARS] for r in rows if r.family == thin)
    fits = fit_all([r for r in rows if r.family != thin or r.source[:SOURCE_KEY_CHARS] == first])
    single = [f for f, fit in fits.items() if fit.n_sources == 1]
    assert thin in single
    for fam in single:
        fit = fits[fam]
        outside = next(m for m in ("llama-3-8b", "mistral-7b", "qwen2.5-7b") if m not in fit.models)
        assert predict(fits, fam, fit.bits_min, 64, outside)[3] == "extrapolated", fam


def test_a_setup_effect_comes_only_from_a_sources_other_families():
    """A source with rows in several families has a setup effect; a source with one family has none (it cannot be
    told from the family's level), and leaving a source out leaves nothing of its effect behind."""
    from planner.cost.quality import PAIRED_VARIANTS, SOURCE_KEY_CHARS

    rows = fit_rows()
    fits = fit_all(rows)
    fams: dict[str, set[str]] = {}
    for r in rows:
        fams.setdefault(r.source[:SOURCE_KEY_CHARS], set()).add(PAIRED_VARIANTS.get(r.family, r.family))  # fitted as one
    multi = {s for s, f in fams.items() if len(f) > 1}
    single = set(fams) - multi
    assert multi and single and {s for s, _ in fits["gguf"].source_fx} == multi
    qwen = next(s for s in multi if "2505.02214" in s)
    assert fits["rtn"].source_effect(qwen) != 0
    left = fit_all([r for r in rows if r.source[:SOURCE_KEY_CHARS] != qwen])
    assert left["rtn"].source_effect(qwen) == 0


def test_word_level_rows_convert_to_token_level_and_rounding_sized_rows_weigh_less():
    """lm-eval's wikitext word perplexity is exp(NLL / words): a row's increase converts to tokens by WikiText-2's
    tokens per word of the model's tokenizer; a change near the tables' resolution counts for little in the fit."""
    from planner.cost.quality import TOKENS_PER_WORD, resolution_weight, token_level_pct, tokens_per_word

    assert TOKENS_PER_WORD[""] == pytest.approx(655 * 512 / 245_569) and tokens_per_word("llama-2-7b") > 1.3
    assert tokens_per_word("llama-3.1-8b") == pytest.approx(564 * 512 / 245_569)
    word = next(r for r in published_rows() if r["fit"] == "yes" and "word" in r["dataset"].lower()
                and r["model"].startswith("Llama-3"))
    p = float(word["ppl_delta_pct"])
    tok = token_level_pct(word)
    assert tok < p and math.log1p(p / 100) == pytest.approx(tokens_per_word("llama-3-8b") * math.log1p(tok / 100))
    token = next(r for r in published_rows() if r["fit"] == "yes" and r["source"].startswith("AWQ paper"))
    assert token_level_pct(token) == float(token["ppl_delta_pct"])
    assert resolution_weight(0.08) < 0.1 < 0.8 < resolution_weight(1.0) < resolution_weight(5.0) <= 1
    # a row's own printing resolution counts: a 1 % change printed to 3 significant digits on a perplexity of ~10
    # (+-0.5 % per difference) weighs less than the same change printed to 4 decimals
    assert resolution_weight(1.0, 0.5) < 0.3 < resolution_weight(1.0, 0.002)
    rows = {r.source[:25]: r for r in fit_rows()}
    assert rows["arXiv 2505.02214v1 (Zheng"].res_pct > 10 * rows["ggml-org/llama.cpp PR #69"].res_pct


def test_nvfp4_rows_set_its_level_and_its_weight_only_prior_serves_only_without_rows():
    """NVFP4's sibling (weight-only NVFP4, llama.cpp's rows) quantizes no activations below 8 bits, NVFP4's (W4A4) rows
    do: with the rows the family level follows them, and a prediction never falls below the weight-only one on the
    same model (its lower bound); without rows the prior's level is used, labelled extrapolated, and it is lower in the
    median."""
    import statistics

    from planner.cost.quality import LOWER_BOUND_PRIOR, model_key, predict

    rows = fit_rows()
    mine = [r for r in rows if r.family == "nvfp4"]
    assert mine and "nvfp4" in LOWER_BOUND_PRIOR
    fits = fit_all(rows)
    ratios = [predict(fits, "nvfp4", r.bits, r.group, model_key(r.model), r.source)[0] / r.ppl_pct for r in mine]
    assert 1 / 1.5 < statistics.median(ratios) < 1.5
    without = fit_all([r for r in rows if r.family != "nvfp4"])
    assert without["nvfp4"].a == without["nvfp4-wo"].a
    gains = []
    for r in mine:
        prior = predict(without, "nvfp4", r.bits, r.group, model_key(r.model))
        own = predict(fits, "nvfp4", r.bits, r.group, model_key(r.model))
        wo = predict(fits, "nvfp4-wo", r.bits, r.group, model_key(r.model))
        assert prior[3] == "extrapolated" and own[0] >= wo[0] * (1 - 1e-9)
        gains.append(own[0] / prior[0])
    assert statistics.median(gains) > 1.2  # the weight-only prior misses the activations' loss
    # Qwen3's W4A4 rows lose less than its weight-only prediction: there the floor holds the prediction up
    qwen = next(r for r in mine if model_key(r.model) == "qwen3-8b")
    raised = predict(fits, "nvfp4", qwen.bits, qwen.group, "qwen3-8b")
    floor = predict(fits, "nvfp4-wo", qwen.bits, qwen.group, "qwen3-8b")
    assert "raised to the weight-only nvfp4-wo prediction" in raised[4]
    assert raised[0] == pytest.approx(floor[0]) and raised[1] >= floor[1] and raised[2] >= floor[2]

def test_a_family_without_rows_takes_its_siblings_usual_head(registry, monkeypatch):
    """MLX quantizes its head with the linears; RTN's rows keep it in 16-bit. Resting on RTN (no MLX rows), an MLX
    4-bit head is charged against RTN's 16-bit one; with MLX's own rows the head is the usual one."""
    import planner.cost.quality as Q

    mc = ModelCost(registry.get("llama-3.1-8b"))
    with_rows = expected_quality(get_format("mlx-4bit"), mc)
    assert "usual head" not in with_rows.note
    without = fit_all([r for r in fit_rows() if r.family != "mlx"])
    monkeypatch.setattr(Q, "_fits", lambda: without)
    q = expected_quality(get_format("mlx-4bit"), mc)
    bits, group, _ = Q.linear_bits(get_format("mlx-4bit"), mc)
    plain = Q.predict(without, "mlx", bits, group, Q.model_key(mc.spec.id))[0]
    assert q.basis == "extrapolated" and "usual head is 16.0 bits" in q.note and q.ppl_delta_pct > plain


def test_activation_precision_is_read_per_row_and_splits_the_mixed_families():
    """Rows that quantize activations differently are fitted apart: NVFP4 W4A4 (torchao) against weight-only NVFP4
    (llama.cpp), INT8 W8A8 smoothed (SmoothQuant) against unsmoothed; each row names its activation precision."""
    rows = published_rows()
    by = {}
    for r in rows:
        by.setdefault(r["family"], []).append(r["activations"])
    assert by["nvfp4"] and all("w4a4" in a.lower() for a in by["nvfp4"])
    assert by["nvfp4-wo"] and not any("w4a4" in a.lower() or "nvfp4" in a.lower() for a in by["nvfp4-wo"])
    assert by["int8-w8a8"] and all("smoothed" in a for a in by["int8-w8a8"])
    assert by["int8-w8a8-naive"] and all("no smoothing" in a for a in by["int8-w8a8-naive"])
    assert all(a.startswith("16-bit") for f in ("gptq", "awq", "rtn", "int8-wo") for a in by[f])
    # the same setup measured both ways: the unsmoothed row loses more, in the data and in the fit
    fits = fit_all(fit_rows())
    pairs = 0
    for r in fit_rows():
        if r.family != "int8-w8a8":
            continue
        twin = [t for t in fit_rows() if t.family == "int8-w8a8-naive" and t.source == r.source and t.model == r.model]
        for t in twin:
            pairs += 1
            assert t.ppl_pct > r.ppl_pct
    assert pairs >= 2
    for model in ("llama-2-7b", "qwen3-8b", "llama-3.1-8b"):
        naive = predict(fits, "int8-w8a8-naive", 8.0, 0, model)[0]
        smooth = predict(fits, "int8-w8a8", 8.0, 0, model)[0]
        assert naive > smooth
        assert predict(fits, "nvfp4", 4.5, 16, model)[0] >= predict(fits, "nvfp4-wo", 4.5, 16, model)[0]  # its floor
    # where the floor does not act, the W4A4 rows' own level is above the weight-only one
    own = predict(fits, "nvfp4", 4.5, 16, "llama-3.1-8b")
    assert own[0] > 1.5 * predict(fits, "nvfp4-wo", 4.5, 16, "llama-3.1-8b")[0] and "raised" not in own[4]


def test_planner_formats_map_to_the_activation_variant_their_runtimes_run(registry):
    """vLLM's w8a8-int8 checkpoints are llm-compressor SmoothQuant ones; NVFP4 runs W4A4 on Blackwell: the formats are
    rated by those rows, so NVFP4 on Llama-3.1-8B is rated by torchao's W4A4 rows, not llama.cpp's weight-only ones."""
    from planner.cost.quality import expected_quality, quality_family
    from planner.formats import get_format

    assert quality_family(get_format("w8a8-int8"), 0, 8.0) == "int8-w8a8"
    assert quality_family(get_format("nvfp4"), 16, 4.5) == "nvfp4"
    mc = ModelCost(registry.get("llama-3.1-8b"))
    q = expected_quality(get_format("nvfp4"), mc)
    fits = fit_all(fit_rows())
    wo = predict(fits, "nvfp4-wo", 4.5, 16, "llama-3.1-8b")[0]
    assert q.ppl_delta_pct > 1.5 * wo and "nvfp4 family fit" in q.note


def test_gguf_mxfp4_moe_is_rated_by_the_mxfp4_rows_not_the_k_quant_line(registry):
    """MXFP4_MOE's experts are OCP MXFP4 (E2M1 under a power-of-two scale per 32), whose grid loses more than a K-quant
    at its bits (our encoders on Gaussian weights: MXFP4's SQNR below Q4_0's, below Q4_K's): on a 16-bit MoE it is
    rated with the mxfp4 rows, not as a 4.25-bit K-quant."""
    import numpy as np
    from gguf import GGMLQuantizationType as QT
    from gguf.quants import dequantize

    from planner.cost.quality import expected_quality, quality_family
    from planner.formats import get_format
    from planner.quantize.primitives import encode, sqnr_db

    x = np.random.default_rng(0).standard_normal((16, 1024), dtype=np.float32)
    db = {t: sqnr_db(x, dequantize(encode(t, x), QT[t]).reshape(x.shape)) for t in ("MXFP4", "Q4_0", "Q4_K")}
    assert db["MXFP4"] < db["Q4_0"] < db["Q4_K"]
    assert quality_family(get_format("MXFP4_MOE"), 32, 4.25) == "mxfp4"
    mc = ModelCost(registry.get("qwen3-30b-a3b"))
    moe, k4 = expected_quality(get_format("MXFP4_MOE"), mc), expected_quality(get_format("Q4_K_M"), mc)
    assert moe.basis in ("published-family", "extrapolated") and "mxfp4 family fit" in moe.note
    assert moe.kld > k4.kld
    # a dense model has no experts: llama.cpp's MXFP4_MOE is then Q8_0 throughout, and so is its rating
    dense = ModelCost(registry.get("llama-3.1-8b"))
    assert "MXFP4" not in dense.layout(get_format("MXFP4_MOE")).ggml_types
    assert expected_quality(get_format("MXFP4_MOE"), dense).kld == expected_quality(get_format("Q8_0"), dense).kld

def test_heavily_trained_models_lose_less_extra_under_calibrated_rounding():
    """GPTQ/AWQ (rounding chosen with calibration activations) take a smaller heavily-trained factor than RTN and the
    K-quants, as the Llama-3 and Qwen3 rows of four sources show; both factors stay above 1 (those models lose more)."""
    from planner.cost.quality import CALIBRATED

    fits = fit_all(fit_rows())
    assert {"gptq", "awq"} <= CALIBRATED and "rtn" not in CALIBRATED
    assert 1.0 < math.exp(fits["gptq"].g) == math.exp(fits["awq"].g) < math.exp(fits["rtn"].g) == math.exp(fits["gguf"].g)


def test_grid_prior_offsets_are_the_grids_rounding_error_ratios():
    """The sibling-prior offsets are what the code grids' definitions give (planner.cost.grids): bitsandbytes FP4 rounds
    Gaussian/Laplace blocks with about twice NF4's error, NF4 and RTN's uniform levels are close, NVFP4's E2M1 (absmax
    onto 6) beats bitsandbytes' FP4 grid, and MX's power-of-two scale takes E2M1's advantage away again."""
    from planner.cost.grids import grid_mse, grid_offset
    from planner.cost.quality import GRID_PRIOR_OFFSET, PRIOR

    grids = {"bnb-fp4": ("bnb-fp4", "nf4", 64), "bnb-nf4": ("nf4", "int4-asym", 64),
             "nvfp4-wo": ("e2m1", "bnb-fp4", 16), "mxfp4": ("mx-e2m1", "bnb-fp4", 32)}
    assert set(grids) == set(GRID_PRIOR_OFFSET)
    for fam, (grid, parent, group) in grids.items():
        assert PRIOR[fam] in ("bnb-nf4", "rtn", "bnb-fp4")
        assert GRID_PRIOR_OFFSET[fam] == pytest.approx(grid_offset(grid, parent, group), abs=0.02), fam
    assert 1.7 < math.exp(GRID_PRIOR_OFFSET["bnb-fp4"]) < 2.2
    # GPTQ's symmetric grid against the asymmetric one, by group: the penalty shrinks as the group grows
    from planner.cost.quality import SYM_GRID_OFFSET, sym_offset

    for g in (32, 128):
        assert SYM_GRID_OFFSET[g] == pytest.approx(grid_offset("int4-sym", "int4-asym", g), abs=0.02), g
    assert sym_offset(32) > sym_offset(64) > sym_offset(128) > sym_offset(0) > 0
    assert sym_offset(16) == SYM_GRID_OFFSET[32] and SYM_GRID_OFFSET[64] > sym_offset(100) > SYM_GRID_OFFSET[128]
    # a finer block rounds with less error on the same grid (what the range term says of every group quantizer)
    assert grid_mse("int4-asym", 32, "laplace") < grid_mse("int4-asym", 128, "laplace")
    with pytest.raises(ValueError, match="unknown grid"):
        grid_mse("int3", 64, "gauss")


def test_a_family_without_rows_starts_from_its_siblings_level_times_the_grid_error_ratio():
    """Without its own rows bitsandbytes FP4 is predicted at NF4's loss times the grids' error ratio (~x1.9)."""
    rows = [r for r in fit_rows() if r.family != "bnb-fp4"]
    fits = fit_all(rows)
    from planner.cost.quality import GRID_PRIOR_OFFSET, predict

    fp4 = predict(fits, "bnb-fp4", 4.5, 64, "gemma-3-12b")  # a model with no NF4 rows of its own
    nf4 = predict(fits, "bnb-nf4", 4.5, 64, "gemma-3-12b")
    assert fp4[3] == "extrapolated"
    added = ln_nll(fp4[0]) - ln_nll(nf4[0])
    assert added == pytest.approx(GRID_PRIOR_OFFSET["bnb-fp4"], abs=1e-6)


def test_gptq_formats_are_rated_on_a_symmetric_grid_and_awq_on_its_asymmetric_one(registry):
    """The planner's GPTQ formats are symmetric (AutoGPTQ/GPTQModel's and planner quantize's sym=True): their estimate
    carries the symmetric grid's factor over the mostly asymmetric published rows and says so; AWQ's zero-point grid
    does not."""
    from planner.cost.quality import SYM_GRID_OFFSET

    mc = ModelCost(registry.get("llama-3.1-8b"))
    gptq = expected_quality(get_format("gptq-int4"), mc)
    awq = expected_quality(get_format("awq-int4"), mc)
    assert "symmetric grid" in gptq.note and f"x{math.exp(SYM_GRID_OFFSET[128]):.2f}" in gptq.note
    assert "symmetric grid" not in awq.note


def test_intervals_take_the_held_out_spread_shipped_for_this_module_and_table(tmp_path):
    """The shipped held-out spread (benchmarks/quality.py --write-spread) was computed from this module and table; it
    widens a family's interval where leaving a source out shows a wider spread than the in-sample residuals, never
    narrows one, and a spread computed from other code or rows is ignored."""
    import json

    from planner.cost.quality import _fits, apply_spread, spread_key, spread_path, stored_spread

    shipped = json.loads(spread_path().read_text(encoding="utf-8"))
    assert shipped["key"] == spread_key(), "run: python benchmarks/quality.py --write-spread"
    spread = stored_spread()
    assert {"gguf", "gptq", "awq", "rtn"} <= set(spread)
    fits = fit_all(fit_rows())
    wide = apply_spread(fits, spread)
    for fam, (lo, hi, n) in spread.items():
        assert n >= 4 and lo < 0 < hi
        assert wide[fam].lo <= min(fits[fam].lo, lo) + 1e-12 and wide[fam].hi >= max(fits[fam].hi, hi) - 1e-12
    assert any(wide[f].hi - wide[f].lo > fits[f].hi - fits[f].lo + 0.05 for f in spread)  # it matters somewhere
    assert _fits()["gguf"].lo == wide["gguf"].lo  # what recommend uses
    stale = tmp_path / "spread.json"
    stale.write_text(json.dumps({**shipped, "key": "0" * 16}), encoding="utf-8")
    assert stored_spread(stale) == {}
    stale.write_text("{not json", encoding="utf-8")
    assert stored_spread(stale) == {}


def test_a_weights_revision_after_the_size_names_the_same_model(registry):
    """Published rows name 'Mistral-7B' or 'Mistral-7B-v0.1', profiles 'mistral-7b-v0.1': one model key, so the
    profile's estimate rests on those rows (basis published); a version that is the model's name stays."""
    from planner.cost.quality import model_key

    assert model_key("Mistral-7B (v0.1, base)") == model_key("mistral-7b-v0.1") == model_key("Mistral-7B") == "mistral-7b"
    assert model_key("deepseek-v3") == "deepseek-v3" and model_key("Meta-Llama-3.1-8B-Instruct") == "llama-3.1-8b"
    q = expected_quality(get_format("Q4_K_M"), ModelCost(registry.get("mistral-7b-v0.1")))
    assert q.basis == "published"


def test_models_below_the_size_knot_lose_more_by_one_fitted_term(registry):
    """Small models lose more (Qwen3 0.6B/1.7B, OPT-125M/350M, Llama-3.2-1B rows): one coefficient fitted on every
    family's rows, applied below SIZE_KNOT_B only; a key without a size token is sized by the profile's count."""
    from planner.cost.quality import SIZE_KNOT_B, params_from_key, size_term

    assert params_from_key("qwen3-30b-a3b") == 30 and params_from_key("opt-125m") == 0.125
    assert params_from_key("mixtral-8x7b") == 7 and params_from_key("gemma-3-1b-pt") == 1 and params_from_key("deepseek-v3") is None
    assert size_term("llama-3.1-70b") == size_term("llama-3.1-8b") == size_term("deepseek-v3") == 0.0
    assert size_term("unsized", params_b=1.0) == size_term("x-1b") == pytest.approx(math.log(SIZE_KNOT_B))
    fits = fit_all(fit_rows())
    s = fits["rtn"].s
    assert 0 < s < 1 and all(f.s == s for f in fits.values())  # shared by every family
    # on the added NLL: exactly the term, for a model the rows never named (no model effect of its own)
    one, four, eight = (predict(fits, "rtn", 4.25, 128, k)[0] for k in ("newmodel-1b", "newmodel-4b", "newmodel-8b"))
    ln_ratio = ln_nll(one) - ln_nll(four)
    assert ln_ratio == pytest.approx(s * math.log(SIZE_KNOT_B), rel=1e-6) and four == eight
    # recommend: a 1B profile states the term in its note; its 8B sibling does not
    small = expected_quality(get_format("Q4_K_M"), ModelCost(registry.get("llama-3.2-1b")))
    big = expected_quality(get_format("Q4_K_M"), ModelCost(registry.get("llama-3.1-8b")))
    assert "below 4B" in small.note and "small-model term" not in big.note and small.ppl_delta_pct > big.ppl_delta_pct


def test_gguf_i_quants_round_to_codebooks_that_lose_less_than_the_k_quant_grid_at_equal_bits(registry):
    """IQ types carry a fitted offset per codebook kind (IQ1-IQ3 lattice, IQ4 non-uniform) against the K-quants'
    uniform grid at the same bits; the rows show it within one table (IQ3_S against Q3_K_S at 3.46 bits), so the
    fitted lattice factor is below 1."""
    from planner.cost.quality import is_codebook

    assert is_codebook("gguf-imatrix", "IQ4_XS") == "non-uniform" and is_codebook("gguf", "iq2_xxs") == "lattice"
    assert not is_codebook("gguf", "Q4_K_M") and not is_codebook("gptq", "IQ-anything")
    rows = fit_rows()
    kinds = {r.codebook for r in rows}
    assert {"lattice", "non-uniform"} <= kinds
    assert not any(r.codebook and not r.family.startswith("gguf") for r in rows)
    fits = fit_all(rows)
    assert fits["gguf-imatrix"].iq < 0 and fits["gguf-imatrix"].iq == fits["gptq"].iq
    grid, book = (predict(fits, "gguf-imatrix", 3.46, 0, "llama-3-8b", gguf_type=t)[0] for t in ("Q3_K_S", "IQ3_S"))
    assert ln_nll(book) - ln_nll(grid) == pytest.approx(fits["gguf-imatrix"].iq, rel=1e-9)
    grid, book = (predict(fits, "gguf-imatrix", 4.5, 0, "llama-3-8b", gguf_type=t)[0] for t in ("Q4_K_S", "IQ4_NL"))
    assert ln_nll(book) - ln_nll(grid) == pytest.approx(fits["gguf-imatrix"].iq4, rel=1e-9)
    mc = ModelCost(registry.get("llama-3.1-8b"))
    assert "lattice codebook" in expected_quality(get_format("IQ3_XXS"), mc).note
    assert "non-uniform codebook" in expected_quality(get_format("IQ4_XS"), mc).note
    assert "codebook" not in expected_quality(get_format("Q4_K_M"), mc).note


def test_iq4_xs_is_rated_at_iq4_nl_bits_since_only_its_scale_storage_is_leaner(registry):
    """IQ4_XS and IQ4_NL share codes and a scale per 32 weights; XS stores the scales in 6 bits. The credit is the
    layouts' bits-per-weight difference, and the two rate alike as every published pair does (within 10 %), not the
    x1.4 the bits slope alone would charge."""
    from planner.cost.quality import published_rows, scale_credit

    from planner.formats import GGML_TYPES

    assert scale_credit("IQ4_XS") == pytest.approx(GGML_TYPES["IQ4_NL"].bits_per_weight
                                                   - GGML_TYPES["IQ4_XS"].bits_per_weight)
    assert scale_credit("IQ4_XS") == pytest.approx(0.25) and scale_credit("Q4_K_M") == 0.0
    fits = fit_all(fit_rows())
    xs, nl = (predict(fits, "gguf-imatrix", b, 0, "llama-3-8b", gguf_type=t)[0]
              for b, t in ((4.25, "IQ4_XS"), (4.5, "IQ4_NL")))
    assert xs == pytest.approx(nl, rel=1e-9)
    uncredited = predict(fits, "gguf-imatrix", 4.25, 0, "llama-3-8b", gguf_type="IQ4_NL")[0]
    assert uncredited / nl > 1.3
    # the published pairs (one table, one model) that the credit follows
    pairs: dict[tuple[str, str], dict[str, float]] = {}
    for r in published_rows():
        t = r["variant"].split(" ")[0]
        if r["family"].startswith("gguf") and t in ("IQ4_XS", "IQ4_NL") and r["ppl_delta_pct"]:
            pairs.setdefault((r["source"][:45], r["model"]), {})[t] = float(r["ppl_delta_pct"])
    ratios = [p["IQ4_XS"] / p["IQ4_NL"] for p in pairs.values() if len(p) == 2]
    assert len(ratios) >= 4 and all(0.95 < x < 1.1 for x in ratios)
    mc = ModelCost(registry.get("llama-3.1-8b"))
    assert "as IQ4_NL" in expected_quality(get_format("IQ4_XS"), mc).note
    # Qwen2.5-0.5B's 896-wide rows do not fill IQ4_XS's 256-weight super-blocks: those tensors fall back to IQ4_NL,
    # which get no credit of their own, so the file rates as IQ4_NL, never better (it used to take the credit twice)
    small = ModelCost(registry.get("qwen2.5-0.5b"))
    types = small.layout(get_format("IQ4_XS")).linear_types
    assert types.get("IQ4_NL", 0) > 0.3 * sum(types.values())
    xs, nl = (expected_quality(get_format(f), small).kld for f in ("IQ4_XS", "IQ4_NL"))
    assert xs == pytest.approx(nl, rel=1e-6)




def test_activation_quantizing_families_carry_a_second_model_effect_of_their_own():
    """A model's activation outliers set its W8A8 loss and do not show in its weight-only rows: the activation families
    (ACT_FAMILIES) fit a second model effect that weight-only predictions never see. OPT-175B shows the split: its
    weight-only rows lose less than the family lines (GPTQ paper), its W8A8 rows more (SmoothQuant, LLM.int8())."""
    from planner.cost.quality import ACT_FAMILIES, model_key

    rows = fit_rows()
    fits = fit_all(rows)
    act_models = {model_key(r.model) for r in rows if r.family in ACT_FAMILIES}
    assert {k for k, _ in fits["int8-w8a8"].act_fx} == act_models
    opt = fits["int8-w8a8"]
    assert opt.act_effect("opt-175b") > 0 > opt.model_effect("opt-175b")
    assert fits["gptq"].act_effect("opt-175b") == 0.0  # weight-only: the activation effect is not applied
    w8a8 = predict(fits, "int8-w8a8", 8.0, 0, "opt-175b")[0]
    without = fits["int8-w8a8"].ln_ppl(8.0, 0, "opt-175b") - opt.act_effect("opt-175b")
    assert ln_nll(w8a8) == pytest.approx(without + opt.act_effect("opt-175b") + opt.offset("opt-175b"), rel=1e-9)


def test_a_gguf_mix_is_rated_at_its_equal_noise_bits_not_its_mean_bits(registry):
    """Qwen2.5-0.5B's 896-wide tensors cannot take IQ1_S (256-weight super-blocks) and fall back to a 4.5-bit type:
    the file's mean is ~3.7 bits, yet its IQ1_S tensors set the noise. The quality model reads the mix's equal-noise
    bits (-log4 of the weights' mean 4^-bits); a uniform format's are its mean bits, and the GGUF rows carry them."""
    from planner.cost.model import mix_bits
    from planner.cost.quality import linear_bits, published_rows

    mc = ModelCost(registry.get("qwen2.5-0.5b"))
    fmt = get_format("IQ1_S")
    lay = mc.layout(fmt)
    blocks = [a for a in fmt.assignments(mc.spec, mc.tensors)
              if a.tensor.is_matrix and a.tensor.layer is not None and a.nbytes * 8 < 15 * a.tensor.n_elements]
    n = sum(a.tensor.n_elements for a in blocks)
    per_tensor = [a.nbytes * 8 / a.tensor.n_elements for a in blocks]
    assert min(per_tensor) < 2 < 4 < max(per_tensor)  # the IQ1_S tensors and the fallback ones
    assert lay.linear_mix_bits == pytest.approx(mix_bits(sum(a.tensor.n_elements * 4.0 ** -b
                                                             for a, b in zip(blocks, per_tensor)) / n))
    assert lay.linear_bits > 3.5 and lay.linear_mix_bits < 2.7
    assert linear_bits(fmt, mc)[0] == lay.linear_mix_bits
    uniform = ModelCost(registry.get("llama-3.1-8b")).layout(get_format("awq-int4"))
    assert uniform.linear_mix_bits == pytest.approx(uniform.linear_bits, rel=1e-9)
    assert linear_bits(get_format("awq-int4"), ModelCost(registry.get("llama-3.1-8b")))[0] == uniform.linear_bits
    row = next(r for r in published_rows()
               if r["model"] == "Qwen2.5-0.5B-Instruct" and r["variant"].startswith("IQ1_S"))
    assert float(row["bits"]) == pytest.approx(lay.linear_mix_bits, abs=1e-4)
    fits = fit_all(fit_rows())
    at_mix, at_mean = (predict(fits, "gguf-imatrix", b, 0, "qwen2.5-0.5b", gguf_type="IQ1_S")[0]
                       for b in (lay.linear_mix_bits, lay.linear_bits))
    assert at_mix > 2 * at_mean


def test_legacy_gguf_types_are_rated_at_their_code_bits_with_a_fitted_min_term(registry):
    """Q4_1 spends its extra 0.5 bits per weight on a per-block min, not on finer codes: the legacy types are rated at
    their code bits from the ggml layouts (4, 4, 5, 5, 8), and the types with a min carry one fitted offset, below 1
    (an asymmetric grid fits each block's range)."""
    from planner.cost.quality import has_min, legacy_code_shift
    from planner.formats import GGML_TYPES

    codes = {t: GGML_TYPES[t].bits_per_weight + legacy_code_shift(t) for t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")}
    assert codes == {"Q4_0": 4.0, "Q4_1": 4.0, "Q5_0": 5.0, "Q5_1": 5.0, "Q8_0": 8.0}
    assert legacy_code_shift("Q4_K_M") == 0.0 and not has_min("Q4_0") and has_min("Q5_1") and not has_min("Q4_K_M")
    fits = fit_all(fit_rows())
    legacy = fits["gguf-legacy"]
    assert legacy.asym < 0
    q40, q41 = (predict(fits, "gguf-legacy", GGML_TYPES[t].bits_per_weight, 0, "llama-2-7b", gguf_type=t)[0]
                for t in ("Q4_0", "Q4_1"))
    assert ln_nll(q41) - ln_nll(q40) == pytest.approx(legacy.asym, rel=1e-9)
    q8 = expected_quality(get_format("Q8_0"), ModelCost(registry.get("llama-3.1-8b")))
    assert q8.label == "lossless"


def test_published_names_and_profile_ids_share_a_model_key(registry):
    """A published row's model name and the planner profile of that model reduce to one key, so the row's model effect
    reaches the user's model: release suffixes (-Instruct, -it, -pt, -hf, a weights revision) go, the size stays."""
    from planner.cost.quality import model_key

    for published, profile in (("Gemma-2-9B-it", "gemma-2-9b"), ("gemma-3-12b-it", "gemma-3-12b"),
                               ("Gemma-3-1B-PT", "gemma-3-1b"), ("Meta-Llama-3-8B (base)", "llama-3-8b"),
                               ("Llama-2-7b-hf", "llama-2-7b"), ("Mistral-7B-Instruct-v0.3", "mistral-7b-v0.3")):
        assert profile in registry.models, profile
        assert model_key(published) == model_key(profile), (published, profile)
    # only a whole '-it' / '-pt' token is a release suffix
    assert model_key("gpt-oss-20b") == "gpt-oss-20b" and model_key("llama-3-8b-italian") == "llama-3-8b-italian"
    assert model_key("gemma-2-9b") != model_key("gemma-2-27b")
