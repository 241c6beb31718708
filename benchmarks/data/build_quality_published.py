"""Rebuild planner/data/quality_published.csv from the project reference CSVs (run by hand from the repo root:
`python benchmarks/data/build_quality_published.py planner/data/quality_published.csv`; never at run or test time).
Inputs: the reference nongguf_quality.csv and quant_quality.csv, plus benchmarks/data/quality_extra.csv and
quality_extra2.csv (rows copied from published tables into this repo, same columns as nongguf_quality.csv, each with its
source; quality_extra2.csv adds two optional columns: `baseline`, what the loss is relative to when it is not the 16-bit
model in ppl_fp16, and `fit_why`, a reason to keep a row out of the fit)."""
import csv, math, re, sys
REF = sys.argv[2] if len(sys.argv) > 2 else "../shared/reference/"
EXTRA = "benchmarks/data/quality_extra.csv"
EXTRA2 = "benchmarks/data/quality_extra2.csv"  # second batch of sourced rows (thin families: exl2, mlx, nvfp4, int8/fp8)
EXTRA3 = "benchmarks/data/quality_extra3.csv"  # third batch (LLaMA3 study: RTN/GPTQ/AWQ at 2-8 bits, SmoothQuant W8A8)
EXTRA4 = "benchmarks/data/quality_extra4.csv"  # fourth batch: SmoothQuant's own tables (W8A8, LLM.int8()), MXFP4/NVFP4 weight-only
EXTRA5 = "benchmarks/data/quality_extra5.csv"  # group weight-only quantizers (GPTQ/AWQ/RTN) on more models and labs: QuaRot, QServe, ...
EXTRA6 = "benchmarks/data/quality_extra6.csv"  # bitsandbytes NF4/FP4 and RTN on 8 models (any4 README), torchao HQQ uintx rows
EXTRA7 = "benchmarks/data/quality_extra7.csv"  # thin GPU families from new labs: IBM fms-model-optimizer FP8, mlx-lm PRs #161/#129
EXTRA8 = "benchmarks/data/quality_extra8.csv"  # baseline quantizers from more labs: OpenVINO NNCF (INT8/INT4/NF4/GPTQ), optimum, AutoAWQ
EXTRA9 = "benchmarks/data/quality_extra9.csv"  # activation-quantizing rows: LLM.int8() / SmoothQuant baselines left out before, quanto and Quark W8A8
EXTRA10 = "benchmarks/data/quality_extra10.csv"  # weight-only GPU rows from more labs: NVIDIA ModelOpt-Windows, torchao QAT-doc PTQ baselines, llm-awq, AMD Quark UINT4, ipex-llm
EXTRA11 = "benchmarks/data/quality_extra11.csv"  # thin GPU families: older optimum-quanto bench charts (int8/fp8 weight-only, W8A8), LLM.int8() in the HF blog, an MLX/HQQ pair
EXTRA12 = "benchmarks/data/quality_extra12.csv"  # exllamav3's format-comparison charts: EXL2 and AWQ on Llama-3.1-8B/70B, Llama-3.2-1B, Mistral-7B-v0.3
EXTRA13 = "benchmarks/data/quality_extra13.csv"  # thin GPU families from committed result files: lm-quant-toolkit HQQ/bitsandbytes CSVs, turboquant-mlx MLX affine JSONs
EXTRA14 = "benchmarks/data/quality_extra14.csv"  # GPTQ g128 on GPT-2 / Pythia series (smpanaro's AutoGPTQ cards): non-Llama architectures, 124M-2.8B
EXTRA15 = "benchmarks/data/quality_extra15.csv"  # GPU families from more committed result files: lm-quant-toolkit's AutoGPTQ/AutoAWQ CSVs, ...
EXTRA16 = "benchmarks/data/quality_extra16.csv"  # bitsandbytes LLM.int8()/NF4 result files committed by a research repo (Qwen2.5-0.5B, Mistral-7B)
EXTRA17 = "benchmarks/data/quality_extra17.csv"  # thin GPU families from vendor toolkit docs: AMD Quark W8A8 SmoothQuant / int8 tables, NVIDIA ModelOpt NVFP4 PTQ
EXTRA18 = "benchmarks/data/quality_extra18.csv"  # committed result tables from more labs: transformerx per-channel RTN (sym/asym, 4-8 bits), ...
EXTRA19 = "benchmarks/data/quality_extra19.csv"  # FP8 W8A8 on Llama-3.1 8B vs 70B from one harness: Intel Gaudi INC FP8 lm-eval result files (LAMBADA, kept out of the fit)
EXTRA20 = "benchmarks/data/quality_extra20.csv"  # GPU families on models users run today: apple/coreai-models cards, bitsandbytes issue #2086, a Gemma-2 study, Keras AWQ/GPTQ guides
EXTRA21 = "benchmarks/data/quality_extra21.csv"  # per-channel RTN/GPTQ (SpinQuant README, reduced-kobold), MoE RTN/GPTQ (Olive), NNCF INT4 on Mixtral, NVFP4 W4A4 on Qwen3-4B (AngelSlim)
EXTRA22 = "benchmarks/data/quality_extra22.csv"  # FP4 from runtimes' own tests: LocalAI's GB10 llama.cpp NVFP4/MXFP4 (W4A4), llama.cpp NVFP4 PRs, an MLX card (mxfp4, 6-bit)
GGUF_EXTRA = "benchmarks/data/gguf_quality_extra.csv"  # GGUF rows copied from published tables, quant_quality.csv columns
GGUF_EXTRA2 = "benchmarks/data/gguf_quality_extra2.csv"  # same columns: imatrix quantizers' per-type tables on Qwen2.5 / Llama-3.3
GGUF_EXTRA3 = "benchmarks/data/gguf_quality_extra3.csv"  # same columns: the imatrix GGUF points of exllamav3's charts (quality_extra12.csv)
GGUF_EXTRA4 = "benchmarks/data/gguf_quality_extra4.csv"  # same columns: Artefact2's gist, Mistral-7B imatrix types above PR #5676's rows
GGUF_EXTRA5 = "benchmarks/data/gguf_quality_extra5.csv"  # same columns: committed llama-perplexity results (ubergarm/ParetoQ) and ik_llama.cpp discussion #63, Llama-3.2-1B
GGUF_EXTRA8 = "benchmarks/data/gguf_quality_extra8.csv"  # same columns: ik_llama.cpp discussion #8 / PR #14 (Llama-3.1-70B/8B), gptq-gguf-toolkit's Unsloth k-quant rows
GGUF_EXTRA9 = "benchmarks/data/gguf_quality_extra9.csv"  # same columns: the BF16 / Q4_K_M pair of LocalAI's Qwen3-4B FP4 test (quality_extra22.csv)
OUT = sys.argv[1]
SIZES = {"30b": 32.5, "1.7b": 1.7, "14b": 14.8, "32b": 32.8, "7b": 6.74, "13b": 13.0, "65b": 65.2, "70b": 70.6, "8b": 8.03, "405b": 405.9, "0.6b": 0.6, "4b": 4.0}

def params_b(model):
    m = model.lower()
    if "mistral-7b" in m: return 7.24
    if "codeqwen" in m: return ""  # not a Llama size; its parameter count is not in a source here
    if m.startswith(("opt-", "bloom-")):  # the published name is the parameter count (OPT-125M ... OPT-175B, BLOOM-560M ... 176B)
        n = re.match(r"[a-z]+-([\d.]+)([mb])", m)
        if n:  # (OPT-IML-30B and other derived names: no size read)
            return float(n.group(1)) / (1000 if n.group(2) == "m" else 1)
    if m.startswith(("qwen2.5", "falcon", "mixtral", "fairseq")): return ""  # not Llama sizes; their counts are not in a source here
    if "30b-a3b" in m: return 30.5
    for k in ("405b", "70b", "65b", "32b", "30b", "14b", "13b", "8b", "1.7b", "7b", "0.6b", "4b"):
        if re.search(r"(^|[-_ ])" + re.escape(k), m): return SIZES[k]
    return ""

def gpu_family(fmt, variant):
    f = fmt.lower(); v = variant.lower()
    if f.startswith("gguf") or "gguf" in f: return None
    if f.startswith("exl2"): return "exl2"
    if f.startswith("aqlm") or f.startswith("fp6") or "other" in f: return None
    if "awq" in f and "gptq" in f: return None
    if f.startswith("awq"): return "awq"
    if f.startswith("gptq 8-bit"): return "gptq"
    if f.startswith("gptq"): return "gptq"
    if f.startswith("rtn"): return "rtn"
    if f.startswith("hqq"): return "hqq"
    if "llm.int8" in f: return "bnb-int8"
    if "fp4" in f and "bitsandbytes" in f: return "bnb-fp4"
    # NNCF/OpenVINO NF4: the QLoRA NF4 codebook with one absmax scale per group, bitsandbytes' mechanism at its own group
    # size (fp16 scale, see eff_bits)
    if f.startswith("nf4"): return "bnb-nf4"
    if "bitsandbytes" in f: return "bnb-nf4"
    if f.startswith("fp8 weight-only"): return "fp8-wo"
    if f.startswith("fp8"): return "fp8-w8a8"
    if f.startswith("int8 weight-only"): return "int8-wo"
    if f.startswith("int8 w8a8"): return "int8-w8a8"
    if f.startswith("nvfp4"): return "nvfp4"
    if f.startswith("mxfp4"): return "mxfp4"  # OCP MX: E2M1 codes, one E8M0 (power-of-two) scale per 32
    if f.startswith("mlx"):
        return "mlx" if ("affine" in v or re.search(r"q[48]\b|q4 ", v)) and "dwq" not in v and "mixed" not in v and "dynamic" not in v else None
    return None

# Activation precision of a row, from its variant/notes/source; families whose rows mix activation mechanisms are split
# by it (planner/cost/quality.py models each apart):
# - INT8 W8A8: SmoothQuant's smoothing (a per-channel scale moved from the activations into the weights) removes most of
#   the activation-outlier loss (torchao prototype/smoothquant README: +6.06 % plain vs +1.44 % smoothed on the same
#   setup). Smoothed rows: the variant names SmoothQuant / INT8-SQ, or the checkpoint is a Neural Magic / Red Hat
#   llm-compressor W8A8 release (their recipe: SmoothQuantModifier(smoothing_strength=0.8) + GPTQModifier(scheme="W8A8"),
#   llm-compressor examples/quantization_w8a8_int8). torchao's int8 dynamic-activation rows do not smooth.
# - NVFP4: torchao's rows quantize activations to NVFP4 too (W4A4: NVFP4InferenceConfig's mm_config defaults to
#   NVFP4MMConfig.DYNAMIC, torchao/prototype/mx_formats/inference_workflow.py; the docs' row says "activations nvfp4
#   too"). llama.cpp PR #20247's text does not say; llama.cpp's NVFP4 matmul quantizes activations to q8_1 (8-bit, as
#   for every GGUF type) except on the Blackwell tensor-core path added later (PR #22196's comment names the two
#   "W4Q8 Int fallback path" and "W4A4 TC path"), and the rows' loss (~3x below torchao's W4A4) fits 8-bit
#   activations: taken as W4A8 (assumed). Those rows form the weight-only family nvfp4-wo.
ACT_WO = "16-bit (weight-only)"


def activations(fam, variant, notes, source):
    """(activation precision in words, the family the row is fitted in)."""
    v, src = variant.lower(), source.lower()
    if fam == "int8-w8a8":
        smoothed = (re.search(r"smoothquant|int8-sq|\bsq\b", v) and "no smoothing" not in v) or src.startswith(
            ("huggingface.co/neuralmagic", "huggingface.co/redhatai", "huggingface.co/datasets/neuralmagic", "huggingface.co/yejingfu"))
        # SmoothQuant's O2/O3 levels (its Table 2) scale activations per tensor, dynamic or static: named here, and kept
        # out of the fit below
        grain = "per-tensor static" if "per-tensor static" in v else "per-tensor dynamic" if "per-tensor dynamic" in v else "per-token"
        return (f"int8 {grain}, smoothed (SmoothQuant)", "int8-w8a8") if smoothed else (f"int8 {grain}, no smoothing", "int8-w8a8-naive")
    if fam == "nvfp4":
        if "pytorch/ao" in src or "activations nvfp4" in v or "w4a4" in v:
            return "nvfp4 per 16, dynamic (W4A4)", "nvfp4"
        if "weight-only" in v:  # the source says the activations stay 16-bit (W4A16)
            return ACT_WO, "nvfp4-wo"
        return "q8_1 8-bit (llama.cpp matmul input; assumed, the PR does not say)", "nvfp4-wo"
    if fam == "fp8-w8a8":
        return "fp8 e4m3", fam
    if fam == "mxfp4" and "w4a4" in v:  # FP4 activations too (llama.cpp's Blackwell MMA path): named here, kept out by the row's fit_why
        return "mxfp4 per 32, dynamic (W4A4)", fam
    if fam == "bnb-int8" and "llm.int8" in v:  # LLM.int8() (arXiv 2208.07339): int8 vector-wise activations, outlier columns in fp16
        return "int8 per-token + fp16 outlier columns (LLM.int8())", fam
    return ACT_WO, fam


def group_of(fmt, variant, fam):
    v = variant.lower()
    m = re.search(r"\bg(\d+)", v)
    if m: return int(m.group(1))
    if "no group" in v or "per-channel" in v or "per-row" in v or "rowwise" in v or "per-tensor" in v: return 0
    if fam in ("bnb-nf4", "bnb-fp4"): return 64
    if fam == "mlx": return 64
    if fam in ("fp8-w8a8", "fp8-wo", "int8-wo", "int8-w8a8", "bnb-int8"): return 0
    if fam in ("gptq", "awq", "rtn", "hqq"): return 128  # the tools' defaults (AutoGPTQ/AutoAWQ group_size 128)
    return ""

def eff_bits(bits, group, fam, variant):
    """Bits per quantized linear weight: nominal bits + per-group scale (16) and zero (bits) overhead."""
    if group in ("", 0): return bits
    v = variant.lower()
    over = 16.0 / group
    # zero point per group unless the variant says symmetric ("asymmetric" must not read as symmetric)
    if fam in ("gptq", "rtn", "hqq", "awq") and not re.search(r"(?<!a)sym", v): over += bits / group
    if fam == "mlx" or (fam == "rtn" and "float zero-point" in v): over = 32.0 / group  # fp16 scale + fp16 bias (quanto: shift)
    # HQQ with its scale and zero meta-quantized to 8 bits (hqq 0.1.x quant_scale/quant_zero; lm-quant-toolkit's configs print
    # scale_quant_params/zero_quant_params nbits 8): 8 + 8 bits per group, the scales' own per-128 meta-scales negligible
    if fam == "hqq" and "8-bit scale and zero" in v: over = 16.0 / group
    if fam == "nvfp4": over = 8.0 / group  # FP8 E4M3 scale per block (the fp32 per-tensor scale is negligible)
    if fam == "mxfp4": over = 8.0 / group  # E8M0 scale per block of 32 (OCP MX spec v1.0)
    if fam in ("bnb-nf4", "bnb-fp4"):
        # double quantization (QLoRA: 8-bit block scales + an fp32 scale per 256 of them) unless the variant says "no double quant"
        over = (8.0 / group + 32.0 / (group * 256)) if re.search(r"(?<!no )double quant", v) or "+ dq" in v else 32.0 / group
        if "fp16 scale" in v: over = 16.0 / group  # NNCF stores its NF4 group scales in fp16, not bitsandbytes' fp32 absmax
    return round(bits + over, 4)

def half_unit(s):
    """Half a unit in the last printed digit of a number as printed ('5.9066' -> 0.00005, '1.05E7' -> 5e4); None if
    the text is not a plain number."""
    m = re.fullmatch(r"[+-]?\d*\.?(\d*)(?:[eE]([+-]?\d+))?", (s or "").strip().lstrip("~"))
    if not m or not re.search(r"\d", s):
        return None
    return 0.5 * 10 ** (-len(m.group(1)) + int(m.group(2) or 0))


def resolution_pct(quant, base, pct=""):
    """The printing resolution of a published perplexity change, percent: the rounding of both perplexities as printed
    (half a unit of each one's last digit, relative), else of the printed change itself."""
    uq, ub = half_unit(quant), half_unit(base)
    if uq is not None and ub is not None and float(quant) > 0 and float(base) > 0:
        return f"{100 * (uq / float(quant) + ub / float(base)):.4g}"
    u = half_unit(pct)
    return f"{u:.4g}" if u is not None else ""


rows = []
EXTRAS = [EXTRA, EXTRA2, EXTRA3, EXTRA4, EXTRA5, EXTRA6, EXTRA7, EXTRA8, EXTRA9, EXTRA10, EXTRA11, EXTRA12, EXTRA13, EXTRA14, EXTRA15, EXTRA16, EXTRA17, EXTRA18, EXTRA19, EXTRA20, EXTRA21, EXTRA22]
for r in list(csv.DictReader(open(REF + "nongguf_quality.csv"))) + [r for p in EXTRAS for r in csv.DictReader(open(p))]:
    fam = gpu_family(r["format"], r["variant"])
    if fam is None: continue
    nb = re.match(r"~?([\d.]+)", r["bits_per_weight"])
    if r["format"].startswith(("FP8", "INT8", "GPTQ 8-bit", "bitsandbytes LLM.int8")) or "q8" in r["variant"]: bits = 8
    elif fam == "exl2": bits = float(nb.group(1))
    else:
        # the variant's "N-bit" where it names one (quality_extra3 has 2- and 8-bit RTN/AWQ rows), else 3 or 4 as before
        nv = re.search(r"\b([2-8])-bit", r["variant"])
        bits = int(nv.group(1)) if nv else (3 if "3-bit" in r["variant"] else 4)
    g = group_of(r["format"], r["variant"], fam)
    fb = bits if fam == "exl2" else eff_bits(bits, g, fam, r["variant"])
    ppl_pct = r["ppl_delta_pct"]; metric = "ppl_delta_pct"; value = ppl_pct; fit = "yes"; why = ""
    if not ppl_pct:
        if r["kld"]:
            metric, value = "kld", r["kld"].replace("~", "")
            fit, why = "no", "order-of-magnitude KLD only"
        elif r["other_metric"]:
            metric, value = "accuracy", r["other_metric"]; fit, why = "no", "accuracy recovery: no documented mapping to perplexity"
        else:
            metric, value = "ppl", r["ppl_quant"]; fit, why = "no", "no 16-bit baseline in the source"
    if fit == "yes" and float(ppl_pct) <= 0:
        fit, why = "no", "perplexity change within noise (<= 0): log-loss fit needs a positive loss"
    if fit == "yes" and float(ppl_pct) > 100:
        fit, why = "no", "collapsed model (> +100 % PPL): outside the model's range"
    if r.get("fit_why"):
        fit, why = "no", r["fit_why"]
    act, fam = activations(fam, r["variant"], r["notes"], r["source"])
    if fit == "yes" and fam == "int8-w8a8" and "per-tensor" in act:
        # one activation scale for every token, so an outlier token sets it. The planner's W8A8 format scales per token
        # (vLLM's compressed-tensors W8A8, llm-compressor's W8A8 scheme), and what per-tensor scaling adds depends on the
        # model's outlier tokens: OPT-175B +1.09 % -> +1.36/+1.64 % (arXiv 2211.10438v7 Table 3), Llama-3.1-8B-Instruct
        # +1.0/+1.9 % -> +16/+26 % (AMD Quark's rotation tutorial). One shift cannot carry both, and in the fit the
        # difference lands in the model's activation effect, i.e. in the per-token prediction the planner prints
        fit, why = "no", "per-tensor activation scale: the planner's W8A8 format scales per token (its extra loss is model-dependent)"
    if fit == "yes" and fam == "int8-w8a8-naive" and "per-tensor" in act:
        # the unsmoothed family is fitted only as the smoothed one's rows shifted by the measured effect of smoothing
        # (quality.PAIRED_VARIANTS), and every smoothed format the planner serves scales activations per token or, smoothed,
        # per tensor (TensorRT-LLM INT8-SQ); an unsmoothed per-tensor scale (LLM.int8()'s absmax baseline) is neither
        fit, why = "no", "per-tensor activation scale without smoothing: no planner format runs it"
    rows.append(dict(family=fam, variant=r["variant"], activations=act, group_size=g, bits=fb, model=r["model"], params_b=params_b(r["model"]),
                     metric=metric, value=value, ppl_delta_pct=ppl_pct if fit == "yes" else "",
                     baseline=r.get("baseline") or ("16-bit" if r["ppl_fp16"] or "vs" in r["other_metric"] or "recovery" in r["other_metric"] else ""),
                     context=r["ctx"], dataset=r["dataset"], fit=fit, why=why, source=r["source"], note=r["notes"],
                     resolution_pct=resolution_pct(r["ppl_quant"], r["ppl_fp16"], r["ppl_delta_pct"])))

# A column's own noise floor: where one source's column (same method, variant and dataset across models) prints a
# perplexity *decrease* of d %, that table's run-to-run scatter is at least d %, and a positive change below d % in
# the same column cannot be told from noise. (It catches intel/ipex-llm's fp8 E4M3 column: -0.89 % on one model,
# +0.03 to +0.06 % on others.)
def _column(r):
    return (r["source"][:60], r["family"], r["variant"], r["dataset"])
floor = {}
for r in rows:
    if r["metric"] == "ppl_delta_pct" and r["value"] and float(r["value"]) < 0:
        floor[_column(r)] = max(floor.get(_column(r), 0.0), -float(r["value"]))
for r in rows:
    d = floor.get(_column(r))
    if d and r["fit"] == "yes" and float(r["ppl_delta_pct"]) < d:
        r.update(fit="no", ppl_delta_pct="", why=f"below its column's noise: the same source's column prints -{d:g} % on "
                 f"another model, so +{r['value']} % cannot be told from zero")

# A finer grid cannot lose more: a group quantizer's per-group run (each group of g weights gets its own scale) refines
# its per-channel run (one scale per row), so a source whose per-group row loses more than its own per-channel row of
# the same method (variant text apart from the group), bits, model and dataset has a broken run; the per-group row is
# kept out of the fit. (It catches
# arXiv 2505.02214's AWQ g128 rows, worse than its per-channel AWQ rows on 10 of 11 Qwen3 models while its GPTQ g128
# rows beat GPTQ per-channel on all of them.)
def _setup(r):
    method = re.sub(r"\b(g\d+|per-channel|per-group|no group)\b", "", r["variant"].lower()).split()
    return (r["source"][:60], r["model"], r["family"], int(float(r["bits"])), r["dataset"], " ".join(method))
coarse = {_setup(r): float(r["ppl_delta_pct"]) for r in rows if r["fit"] == "yes" and r["group_size"] == 0}
for r in rows:
    c = coarse.get(_setup(r)) if r["fit"] == "yes" and r["group_size"] not in ("", 0) else None
    if c is not None and float(r["ppl_delta_pct"]) > c:
        r.update(fit="no", ppl_delta_pct="", why=f"inconsistent within its source: loses more ({r['value']} %) than the "
                 f"same source's per-channel run of the method on this model ({c} %); a finer grid cannot lose more")

# GGUF rows: quant type with bits per quantized linear weight filled in by the planner (see README).
# Types llama.cpp's quantize tool refuses to make without an importance matrix ("Please do not use IQ1_S, IQ1_M, IQ2_S,
# IQ2_XXS, IQ2_XS or Q2_K_S quantization without an importance matrix", tools/quantize/quantize.cpp): a row of one of
# these whose source does not state the imatrix had one; any other type's family is unknown then (kept out of the fit)
IMATRIX_REQUIRED = {"IQ1_S", "IQ1_M", "IQ2_S", "IQ2_XXS", "IQ2_XS", "Q2_K_S"}
QQ = list(csv.DictReader(open(REF + "quant_quality.csv"))) + list(csv.DictReader(open(GGUF_EXTRA))) + list(csv.DictReader(open(GGUF_EXTRA2))) + list(csv.DictReader(open(GGUF_EXTRA3))) + list(csv.DictReader(open(GGUF_EXTRA4))) + list(csv.DictReader(open(GGUF_EXTRA5))) + list(csv.DictReader(open(GGUF_EXTRA8))) + list(csv.DictReader(open(GGUF_EXTRA9)))
F16 = {(r["source"][:60], r["model"]): float(r["ppl"]) for r in QQ if r["quant_type"] == "F16" and re.fullmatch(r"[\d.]+", r["ppl"].strip())}
F16_TEXT = {(r["source"][:60], r["model"]): r["ppl"].strip() for r in QQ if r["quant_type"] == "F16"}  # as printed
for r in QQ:
    qt = r["quant_type"]; model = r["model"]
    if not model or qt in ("F16", "BF16", "F32") or "QUANT_OPTIONS" in r["source"]: continue
    s = r["ppl_delta_or_pct"] or ""
    pct = ""
    if "%" in s: pct = re.match(r"[+-]?[\d.]+", s.strip()).group(0)
    # "ln X": the source prints ln(PPL(Q)/PPL(base)) (Artefact2's tables in llama.cpp PRs); the change is exp(X) - 1
    ln = re.fullmatch(r"ln ([+-]?[\d.]+)", s.strip())
    if ln: pct = f"{math.expm1(float(ln.group(1))) * 100:.4f}"
    imat = r["imatrix"] if r["imatrix"] not in ("", "None") else ""
    fam = "gguf-imatrix" if imat else "gguf"
    ppl = r["ppl"]
    metric, value, fit, why = "ppl_delta_pct", pct, "yes", ""
    if not pct:
        if r["kld"]:
            metric, value = "kld", r["kld"]
            # PR #6936 rows: ΔPPL is absolute vs the F16 logits' PPL 6.233160 (its own table)
            m = re.match(r"[+-]?[\d.]+", s.strip()) if s else None
            if m and "abs" in s and re.fullmatch(r"[\d.]+", ppl.strip()):
                pct = f"{float(m.group(0)) / (float(ppl) - float(m.group(0))) * 100:.4f}"
        elif (r["source"][:60], model) in F16 and re.fullmatch(r"[\d.]+", ppl.strip()):
            base = F16[(r["source"][:60], model)]
            metric, value = "ppl", ppl
            pct = f"{(float(ppl) / base - 1) * 100:.4f}"
        else:
            metric, value = "ppl", ppl
            fit, why = "no", "no 16-bit baseline in this row (see README)"
    res = ""
    if "%" in s:
        res = resolution_pct("", "", pct)
    elif ln:  # half a unit of the printed logarithm, as a relative change
        res = f"{100 * math.exp(float(ln.group(1))) * half_unit(ln.group(1)):.4g}"
    elif metric == "kld" and m and "abs" in s and re.fullmatch(r"[\d.]+", ppl.strip()):
        res = f"{100 * half_unit(m.group(0)) / (float(ppl) - float(m.group(0))):.4g}"
    elif metric == "ppl" and pct:
        res = resolution_pct(ppl, F16_TEXT[(r["source"][:60], model)])
    if imat == "unstated" and qt not in IMATRIX_REQUIRED:
        fit, why = "no", "whether an importance matrix was used is not stated, and this type can be made without one"
    if pct and float(pct) <= 0: fit, why = "no", "perplexity change within noise (<= 0)"
    # a hand-copied row the transcriber kept out says why in its notes ("Kept out of the fit: <reason>")
    held = re.search(r"Kept out of the fit: (.+?)\.?$", r["notes"] or "")
    if held: fit, why = "no", held.group(1)
    if not pct and fit == "yes": fit, why = "no", "no relative perplexity"
    rows.append(dict(family=fam, variant=qt + (f" (imatrix {imat})" if imat else ""), activations="q8 (llama.cpp matmul input)", group_size="", bits="", model=model,
                     params_b=params_b(model), metric=metric, value=value, ppl_delta_pct=pct if fit == "yes" else "",
                     baseline="16-bit" if fit == "yes" else "", context=512 if "6936" in r["source"] or "PR #1684" in r["source"] else "",
                     dataset="wikitext-2", fit=fit, why=why, source=r["source"], note=r["notes"] or "", resolution_pct=res))
cols = list(rows[0])
with open(OUT, "w", newline="") as f:
    w = csv.DictWriter(f, cols); w.writeheader(); w.writerows(rows)
from collections import Counter
print(Counter((r["family"], r["fit"]) for r in rows))

# Fill bits per quantized linear weight of GGUF rows from the planner's own per-tensor mixes on the named model.
sys.path.insert(0, ".")
from planner.cost.model import ModelCost
from planner.cost.quality import linear_bits, model_key
from planner.formats import get_format, gguf_base_type
from planner.models.profiles import load_registry
reg = load_registry()
PROFILE = {"llama-3-8b": "llama-3-8b", "llama-2-7b": "llama-2-7b", "llama-2-70b": "llama-2-70b", "llama-3-70b": "llama-3-70b",
           "llama-1-7b": "llama-1-7b", "llama-1-13b": "llama-1-13b", "llama-2-13b": "llama-2-13b", "llama-3.1-8b": "llama-3.1-8b", "mistral-7b": "mistral-7b-v0.1",
           # models of the GGUF rows added from llama.cpp / ik_llama.cpp PRs (#4930 comment, ik #83, ik #53); Nemo-Instruct-2407 is Mistral-Nemo 12B
           "mixtral-8x7b": "mixtral-8x7b", "llama-3.2-3b": "llama-3.2-3b", "qwen2.5-7b": "qwen2.5-7b", "qwen2.5-32b": "qwen2.5-32b",
           "mistral-nemo": "mistral-nemo-12b", "gemma-2-9b": "gemma-2-9b", "gemma-2-27b": "gemma-2-27b",
           # models of gguf_quality_extra2.csv (quantizers' cards measuring their own imatrix GGUF files)
           "qwen2.5-0.5b": "qwen2.5-0.5b", "qwen2.5-1.5b": "qwen2.5-1.5b", "llama-3.3-70b": "llama-3.3-70b",
           # models of gguf_quality_extra3.csv (exllamav3's charts); Mistral-7B-Instruct-v0.3 is keyed 'mistral-7b' above, whose
           # v0.1 profile has the same linear shapes (its 32,768-token vocabulary changes only the head, not counted here)
           "llama-3.1-70b": "llama-3.1-70b", "llama-3.2-1b": "llama-3.2-1b",
           # model of gguf_quality_extra4.csv's Qwen3-4B ladder (b4ph's post)
           "qwen3-4b": "qwen3-4b"}
mcs = {}
for r in rows:
    if not r["family"].startswith("gguf"):
        continue
    qt = r["variant"].split(" ")[0]
    base = gguf_base_type(qt) or qt
    if base in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        r["family"] = "gguf-legacy-imatrix" if r["family"] == "gguf-imatrix" else "gguf-legacy"
    pid = PROFILE.get(model_key(r["model"]))
    if pid is None:
        r["fit"], r["why"] = "no", "model has no planner profile to compute bits"
        continue
    try:
        f = get_format(qt)
    except Exception:
        r["fit"], r["why"] = "no", f"{qt}: not a planner format"
        continue
    mc = mcs.setdefault(pid, ModelCost(reg.get(pid)))
    r["bits"] = round(linear_bits(f, mc)[0], 4)
with open(OUT, "w", newline="") as f:
    w = csv.DictWriter(f, cols); w.writeheader(); w.writerows(rows)
print(Counter((r["family"], r["fit"]) for r in rows))
print(sorted({model_key(r["model"]) for r in rows}))

# Rows with no 16-bit baseline but a GGUF Q4_K_M row in the same source, model and setup are anchored:
# loss = (1 + L_Q4_K_M / 100) * ppl / ppl_Q4_K_M - 1, with L_Q4_K_M from the GGUF family fit on that model.
from planner.cost import quality as Q
Q.published_rows.cache_clear()
fits = Q.fit_all(Q.fit_rows([dict(r, bits=str(r["bits"]), group_size=str(r["group_size"])) for r in rows]))
def q4km_loss(model):
    pid = PROFILE.get(model_key(model)) or {"llama-2-13b": "llama-2-13b"}.get(model_key(model))
    mc = mcs.setdefault(pid, ModelCost(reg.get(pid)))
    b = linear_bits(get_format("Q4_K_M"), mc)[0]
    return Q.predict(fits, "gguf", b, 0, model_key(model))[0]
anchors = {}
for r in csv.DictReader(open(REF + "nongguf_quality.csv")):
    if r["format"].startswith("GGUF") and "Q4_K_M" in r["variant"].upper() and r["ppl_quant"]:
        anchors[(r["source"][:70], r["model"], r["dataset"], r["ctx"])] = r["ppl_quant"]  # as printed
src = {(r["source"], r["variant"], r["model"], r["dataset"]): r for r in csv.DictReader(open(REF + "nongguf_quality.csv"))}
for r in rows:
    if r["fit"] == "yes" or r["family"].startswith("gguf"):
        continue
    o = src.get((r["source"], r["variant"], r["model"], r["dataset"]))
    if not o or not o["ppl_quant"] or o["ppl_fp16"]:
        continue
    a = anchors.get((o["source"][:70], o["model"], o["dataset"], o["ctx"]))
    if a is None:
        continue
    L = q4km_loss(o["model"])
    ratio = float(o["ppl_quant"]) / float(a)
    pct = ((1 + L / 100) * ratio - 1) * 100
    r.update(metric="ppl_ratio_vs_Q4_K_M", value=f"{ratio:.5f}", ppl_delta_pct=f"{pct:.4f}",
             resolution_pct=resolution_pct(o["ppl_quant"], a),
             baseline=f"anchored: same source's Q4_K_M row (PPL {a}) x (1 + {L:.3f} %, the GGUF family fit for Q4_K_M)",
             fit="yes" if pct > 0 else "no", why="" if pct > 0 else "anchored loss <= 0")
with open(OUT, "w", newline="") as f:
    w = csv.DictWriter(f, cols); w.writeheader(); w.writerows(rows)
print(Counter((r["family"], r["fit"]) for r in rows))
