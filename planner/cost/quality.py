"""Expected quality loss of a format: KL divergence and perplexity change versus 16-bit weights, with an interval.

The published measurements in planner/data/quality_published.csv (one source per row; planner/data/README.md) are
fitted in one penalized least-squares fit (fit_all) of the added NLL, ln(ln(1 + ppl%)) (ln_nll; word-level
perplexities converted to token level first, token_level_pct):
- each family has its own level and line in bits per *quantized linear weight* (its per-tensor assignments; 16-bit
  embeddings, heads and norms never count). GGUF and FP8 families have their own bits slope where their rows span
  MIN_BITS_SPAN bits, else the GGUF K-quant slope;
- the group quantizers (GROUPED: RTN, GPTQ, AWQ, HQQ, MLX, bitsandbytes, NVFP4/MXFP4, INT8, EXL2) share the mechanism:
  the loss falls 4x per bit of the *code* (GROUPED_SLOPE; precision_bits drops the scales) and grows with the range
  one scale covers, GAMMA x ln H_group (range_term; one coefficient, fitted), so the group size is counted once;
- a group quantizer's level is pulled toward its sibling mechanism's (PRIOR: MLX toward RTN, EXL2 toward GPTQ,
  weight-only NVFP4 toward FP4...), by FAMILY_PRIOR_SOURCES; a family without rows takes the sibling's level;
  predictions of a family with a single source, or without rows, say `extrapolated` and get a wider interval;
- activation precision is part of the family (each row's `activations`): NVFP4 W4A4 (`nvfp4`, what vLLM/TensorRT-LLM
  run on Blackwell) is fitted apart from weight-only NVFP4 (`nvfp4-wo`, its lower bound: LOWER_BOUND_PRIOR, and the
  floor of its predictions on a model); INT8 W8A8
  without smoothing is the smoothed family's rows shifted by the effect of smoothing measured in paired rows
  (PAIRED_VARIANTS, paired_shift; the same for legacy GGUF types quantized with an importance matrix);
- a model's effect (its sensitivity to weight noise) is shared across families and shrunk toward 0, a point release's
  toward its predecessor's (sibling; a model without rows has none: its predecessor's is not borrowed), on top of a
  heavily-trained-release term (HEAVY_TRAINED): one factor for the quantizers that round with calibration activations
  (CALIBRATED: GPTQ, AWQ, EXL2), one for the others; the families whose activation grid outlier channels coarsen
  (ACT_FAMILIES: INT8 W8A8, LLM.int8(), NVFP4 W4A4; not FP8) add a second model effect of their own;
- a source's setup effect (context, dataset, base vs instruct, its implementation) is shared across the families it
  measured, and exists only for a source with rows in two or more families (else it is the family's level).
  Predictions for a user carry no setup effect: the interval is the spread of the residuals without it.
Each source weighs the same within a family however many rows it published. There is no model-size term above
SIZE_KNOT_B (the small-model term, size_term, acts below it): the rows disagree on its direction (Llama-2-70B loses
less than 7B, Llama-3-70B more than 8B). A model with published rows in
the family keeps its own mean residual there (shrunk by MODEL_SHRINK; basis `published`).
A GGUF file counts at its mix's equal-noise bits, each tensor credited for its type's leaner scale storage
(_shifted_mix_bits); MXFP4_MOE is read off the mxfp4 rows at MXFP4's bits, scaled by the experts' share of the block
weights' noise (_block_noise_share, from the layout), as is the mxfp4 GPU format on a MoE model.
Each row carries its family's usual head (USUAL_HEAD_BITS). A format whose head (output.weight / lm_head, or the
tied token embedding) is stored at other bits is adjusted by head_factor: the head counts as HEAD_WEIGHT x its share of
the quantized parameters, its loss read off the same family curve at the head's bits.

KLD is converted from the perplexity increase by a power law fitted to the rows that carry both (llama.cpp's
Llama-3-8B scoreboard), computed at load. A quantized KV cache adds its own loss (KV_QUALITY_KLD).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from planner.formats import (EMBED_OUTPUT_Q8_VARIANTS, FORMATS, GGML_TYPES, GroupQuant, WeightFormat, gguf_base_type,
                             lattice_iquant)

if TYPE_CHECKING:
    from planner.cost.model import ModelCost

# Assumed extra loss of a quantized KV cache (llama.cpp discussions: q8_0 KV is near-lossless, q4_0 is not).
KV_QUALITY_KLD = {"q8_0": 0.0005, "q8": 0.0005, "fp8_e4m3": 0.0005, "fp8_e5m2": 0.001, "fp8": 0.0005, "int8": 0.0005,
                  "q5_1": 0.002, "q5_0": 0.002, "q6": 0.001, "q4_1": 0.008, "q4_0": 0.01, "iq4_nl": 0.008, "q4": 0.004}
SOURCE_KEY_CHARS = 45  # rows of one source (one paper, README or PR) share this much of their `source` text
MODEL_SHRINK = 1.0  # assumed: a model's own mean residual counts n / (n + 1) (partial pooling toward the family line)
MIN_BITS_SPAN = 0.75  # assumed: a family's own bits slope needs rows at least this far apart in bits
MIN_ROWS_FOR_SPREAD = 4  # assumed: fewer fitted rows than this give no residual spread; DEFAULT_SPREAD is used
DEFAULT_SPREAD = math.log(2.0)  # assumed: x/÷2 when a family has too few rows to measure its spread
EXTRAPOLATED_WIDEN = math.log(2.0)  # assumed: an extrapolated family's interval is a further x/÷2 wider
BITS_MARGIN = 0.5  # assumed: a prediction more than this outside the family's measured bits is extrapolated
# Models trained on many tokens per parameter lose more to the same quantization (arXiv 2404.14047, "How Good Are
# Low-bit Quantized LLaMA3 Models?"; the rows show it: llama.cpp's Llama-3-8B/70B losses are ~3x Llama-1/2's at the
# same type). Assumed grouping by release (>= ~9T training tokens), plus Gemma 1's 2B ('gemma-2b': 3T tokens on 2.5B
# parameters, arXiv 2403.08295, ~1200 per parameter, near Llama 3 8B's ~1900; Kumar et al., arXiv 2411.04330, tie the
# loss to tokens per parameter); 'qwq' is QwQ-32B, a fine-tune of Qwen2.5-32B (18T tokens, its model card). The factor
# itself is fitted. Tried and not kept: a continuous term in ln(training tokens) or ln(tokens per parameter), from the
# model cards' counts for 70 of the 75 fitted models, in place of this grouping: leave-one-source-out within 2x fell
# from 82 % to 79 % and 80 % (awq 83 % -> 73 % and 77 %).
HEAVY_TRAINED = ("llama-3", "qwen2", "qwen3", "gemma-2-", "gemma-2b", "gemma-3", "phi-3", "phi-4", "gpt-oss", "deepseek",
                 "qwq", "mistral-small", "mistral-nemo", "mistral-large", "command-r", "smollm2")
# Quantizers that choose their rounding with calibration activations (GPTQ's Hessian error feedback, AWQ's activation-
# scaled channels, EXL2's GPTQ rounding): a heavily trained model's extra loss is smaller under them. The rows show it
# in four sources each (arXiv 2404.14047 and 2505.02214, torchao, llm-compressor): the heavily-trained residual over
# the older models' is ~0.6-0.7 (ln) for GPTQ and AWQ against ~1.2-1.35 for RTN and K-quants. Their factor is a column
# of its own, tied to the others' by HEAVY_TIE (fitted: x2.1 against x2.3 on the added NLL). llama.cpp's importance
# matrix is left with the others: its heavily-trained rows are mostly one model's (Llama-3-8B, PR #6936), which the
# calibrated factor underpredicts (gguf-imatrix leave-one-source-out within 2x: 73 % -> 50 %), though it would fit
# ik_llama.cpp's IQ4_XS figures on eight newer models (kept out of the fit, imatrix unstated) better (56 % -> 78 %).
# Tried and not kept: a range coefficient of their own (range_term) for these quantizers, tied to the others' (GPTQ's
# per-channel rows lose less than the shared coefficient says, median residual -0.24): gptq within 2x 79 -> 81 %, but
# awq 83 -> 80 %, rtn 89 -> 87 % and nvfp4-wo 100 -> 88 %.
CALIBRATED = frozenset({"gptq", "awq", "exl2", "gptq-8bit"})
# Small models lose more to the same quantization: the published rows of one family and source lose alike from about 4B
# parameters up (Qwen3 4B-32B in arXiv 2505.02214; LLaMA-1 7B-65B and Llama-2 7B-70B in arXiv 2308.13137) and more
# below (Qwen3 0.6B/1.7B; OPT-125M/350M in the GPTQ paper; Llama-3.2-1B in any4), as Kumar et al.'s precision scaling
# law has it for post-training quantization at a fixed token count (arXiv 2411.04330). The term is ln(SIZE_KNOT_B / N)
# below the knot and 0 above, with one fitted coefficient (x1.6 on the added NLL at 1B against 4B). The knot is
# calibrated against the rows: knots of 2-7B give the same leave-one-source-out accuracy within a point; 4B is where
# the Qwen3 rows stop changing. No term above the knot: Llama-3-70B loses as much as Llama-3-8B (QServe, arXiv
# 2404.14047), so "larger loses less" is not a law there. Tried and not kept: a second fitted slope in ln(N / knot)
# above the knot (Kumar et al.'s N^-gamma at a fixed token count): it fits -0.15 (a 70B model losing 0.65x a 4B one),
# and leave-one-source-out within 2x stays at 82 % (gguf-imatrix 82 -> 85 %, exl2 81 -> 90 %, but bnb-nf4 100 -> 94 %,
# gptq 79 -> 78 %, rtn 89 -> 88 %): no net gain for a new term. Nor a size-dependent bits slope, ln(N / knot) x
# (code bits - 4), which the imatrix GGUF rows of 32-70B models suggest (IQ1/IQ2 lose 2-3.7x less than predicted,
# IQ3/IQ4 up to 1.4x more): shared by every family it fits +0.12 and leaves the overall share within 2x at 83 %
# (gguf-imatrix 84 -> 88 %, but gptq 79 -> 75 % and awq median 1.35 -> 1.42); on the GGUF families alone, +0.03, 83 %.
# Nor a hinge below 2.5 code bits, ln(N / 8B) x (2.5 - bits), for the same 32-70B IQ1/IQ2 rows: it fits -0.39
# (942 rows) and leaves overall within 2x at 83 %: gguf-imatrix 84 -> 89 %, but gguf 97 -> 93 %, since Llama-3-70B's
# IQ1_S/IQ1_M rows in llama.cpp PR #6745 lose as much as the 8B models' (+249 %, +202 %).
SIZE_KNOT_B = 4.0
# GGUF's i-quants round to codebooks rather than the K-quants' uniform grid, of two kinds:
# - "lattice": IQ1-IQ3 round groups of 4 or 8 weights together to points of the E8 lattice or a grid near it (llama.cpp
#   PRs #4773, #4897, #5747): a vector codebook, whose gain over scalar rounding is largest at few bits;
# - "non-uniform": IQ4_NL/IQ4_XS round each weight to 16 non-uniform levels (ggml-quants kvalues_iq4nl): a scalar
#   codebook, denser where weights are dense; for a Gaussian source the best 16-level scalar quantizer has ~0.82x the
#   uniform one's error (Max 1960), so its gain is small.
# One ln offset per kind, fitted in the joint fit at equal bits. The lattice gains (x0.74 on the added NLL; in one
# table IQ3_S loses 6.4 % against Q3_K_S's 9.9 % at the same 3.46 bits, Llama-3.3-70B, gguf_quality_extra2.csv); the
# non-uniform levels fit x1.02, no gain over the K-quants at equal (equal-noise) bits.
CODEBOOK_KINDS = {"lattice": "an i-quant lattice codebook (groups of weights rounded to lattice points, not the "
                             "K-quants' uniform grid)",
                  "non-uniform": "an i-quant non-uniform codebook (16 levels denser where weights are dense, not the "
                                 "K-quants' uniform grid)"}
# GGUF types whose codes and scale granularity equal another type's, with the scales stored leaner: IQ4_XS keeps
# IQ4_NL's 4-bit non-uniform codes and one scale per 32 weights, but stores each scale in 6 bits under a super-block
# fp16 scale (ggml-common.h block_iq4_xs) instead of an fp16 per block (block_iq4_nl). The GGUF fits are in bits per
# weight, scales included, so without this IQ4_XS would be charged 0.25 bits of precision it does not lack: predicted
# x1.4 worse than IQ4_NL where every published pair (gguf_quality_extra2.csv, llama.cpp PRs #6936 and #6745) shows
# 2-8 %. Such a type is rated at the other's bits (the layouts' bits-per-weight difference added, see scale_credit).
SAME_CODES = {"IQ4_XS": "IQ4_NL"}
# LEGACY_CODES: the legacy types are 4-, 5- or 8-bit codes with an fp16 scale per 32 weights, and Q4_1/Q5_1 add an fp16
# min per 32 (ggml-common.h block_q4_0 ... block_q8_0). Q4_1 spends its extra 0.5 bits on the min, which shifts the grid
# to each block's range (an asymmetric grid), not on finer codes, so a fit in bits per weight charges it as 0.5 bits of
# precision and flattens the slope (-1.07 per bit, against the -1.39 of a grid whose step halves per bit) until Q8_0's
# loss is predicted 3-7x the published (llama.cpp PR #1684, #6936, #6745). The legacy families are fitted at their
# code bits (legacy_code_shift), with one fitted ln offset for the types with a min (has_min).
HEAVY_TIE = 1.0  # assumed: the prior that both factors are equal counts as one row's worth of evidence
PER_CHANNEL_GROUP = 4096  # a per-channel scale spans a whole row: taken as a group of 4096 (Llama-7B/8B rows)
# The group quantizers: a grid of 2^b codes over each group's range. They share the bits slope and the range
# coefficient (range_term); each has its own level. PRIOR names the sibling mechanism each level is pulled toward
# (and taken from when the family has no rows): the same grid, group layout and bits, differing in the rounding.
GROUPED = frozenset({"rtn", "gptq", "awq", "hqq", "mlx", "bnb-nf4", "bnb-fp4", "nvfp4", "nvfp4-wo", "mxfp4", "int8-wo",
                     "int8-w8a8", "int8-w8a8-naive", "bnb-int8", "gptq-8bit", "exl2"})
PRIOR = {
    "mlx": "rtn",  # mlx.nn.quantize: affine (scale + bias) round-to-nearest per group of 64: asymmetric RTN
    "hqq": "rtn",  # HQQ: round-to-nearest with a zero/scale refined by half-quadratic optimization, no data
    "gptq": "rtn", "awq": "rtn",  # calibrated int4 on RTN's grid: GPTQ's error feedback, AWQ's channel scaling
    "exl2": "gptq",  # EXL2 is GPTQ's error-compensated rounding with mixed bit widths per layer (groups of 32)
    "gptq-8bit": "gptq",
    "bnb-nf4": "rtn",  # absmax round-to-nearest per 64 onto a 16-level normal-quantile grid
    "bnb-fp4": "bnb-nf4",  # the same blocks onto the E2M1 float grid
    # E2M1 per 16 with an FP8 scale (the group enters through range_term), activations kept at >= 8 bits: the weight-only
    # FP4 grid of bitsandbytes FP4 with a smaller group
    "nvfp4-wo": "bnb-fp4",
    # NVFP4 W4A4 (activations NVFP4 too): its weight-only part is the lower bound of its loss (LOWER_BOUND_PRIOR)
    "nvfp4": "nvfp4-wo",
    # E2M1 per 32 with a power-of-two (E8M0) scale, weight-only as llama.cpp and vLLM run gpt-oss: the weight-only FP4
    # family, not NVFP4 (whose rows quantize activations too); the E8M0 scale's rounding is not modelled
    "mxfp4": "bnb-fp4",
    "int8-wo": "rtn",  # per-channel round-to-nearest int8
    # W8A8's loss is mostly its activations' (outlier channels), a mechanism no weight-only family shares: no prior
    # (int8-w8a8 without smoothing is fitted with it through PAIRED_VARIANTS)
    # LLM.int8() (arXiv 2208.07339): int8 per-row weights *and* int8 per-token activations, the outlier feature columns
    # kept in fp16: a W8A8 whose outliers are handled, as SmoothQuant handles them by smoothing
    "bnb-int8": "int8-w8a8",
}
# ln(rounding error of a family's code grid / its PRIOR sibling's) at the family's block size, where the two differ in
# the grid their 4-bit codes stand for: planner.cost.grids.grid_offset (Monte Carlo over Gaussian and Laplace blocks,
# scaled as each format scales them; a test recomputes these). In the small-noise regime the loss is proportional to the
# weight error, so a family's prior level is its sibling's plus this.
GRID_PRIOR_OFFSET = {
    "bnb-fp4": 0.656,  # bitsandbytes FP4 vs NF4, blocks of 64 (x1.93; any4 measures FP4 +37.8 %, NF4 +19.9 % on Llama-3-70B)
    "bnb-nf4": -0.046,  # NF4 absmax vs RTN's 16 uniform levels from min to max, blocks of 64
    "nvfp4-wo": -0.321,  # OCP E2M1 (absmax onto 6) vs bitsandbytes FP4, blocks of 16
    "mxfp4": -0.035,  # E2M1 under MX's power-of-two scale vs bitsandbytes FP4, blocks of 32
}
# ln(rounding error of GPTQ's symmetric 4-bit grid / the asymmetric min-max grid) by group (0: per-channel), from
# planner.cost.grids.grid_offset("int4-sym", "int4-asym", g): the symmetric grid spends its 16 levels on +-absmax and
# one of them past it. Most published 4-bit rows are asymmetric (the papers' code: AWQ, OmniQuant, GPTQ's own repo);
# GPTQ checkpoints made by AutoGPTQ/GPTQModel (sym=True by default, what vLLM's Marlin kernels take) and by
# `planner quantize` are symmetric, so rows that say so are fitted less this and such formats are predicted with it.
SYM_GRID_OFFSET = {32: 0.448, 64: 0.328, 128: 0.256, 0: 0.113}
SYM_FAMILIES = frozenset({"gptq", "rtn", "awq", "hqq"})  # integer group grids that come in both forms
# Families without rows and no fitted sibling in PRIOR, and the fitted family each borrows (the nearest quantizer by
# mechanism); e.g. a GGUF or FP8 family left without rows in leave-one-source-out (benchmarks/quality.py):
EXTRAPOLATE = {
    "exl2": "gptq", "mxfp4": "bnb-fp4", "nvfp4": "nvfp4-wo", "nvfp4-wo": "bnb-fp4", "bnb-int8": "int8-w8a8",
    "gptq-8bit": "int8-wo",
    "gguf-imatrix": "gguf", "gguf-legacy": "gguf", "gguf": "gguf-legacy",
    "mlx": "rtn", "hqq": "rtn", "bnb-nf4": "rtn", "bnb-fp4": "rtn", "awq": "gptq", "rtn": "gptq", "gptq": "awq",
    "int8-wo": "gguf-legacy",  # Q8_0 is round-to-nearest int8 (g32)
    "fp8-wo": "fp8-w8a8", "fp8-w8a8": "fp8-wo",
    # smoothed INT8 without rows: the unsmoothed rows (an upper bound), and the other way round a lower bound
    "int8-w8a8": "int8-w8a8-naive", "int8-w8a8-naive": "int8-w8a8", "gguf-legacy-imatrix": "gguf-legacy",
}
# Loss per code bit of a group quantizer: a uniform grid's error variance (step^2 / 12) falls 4x per bit, and in the
# small-noise regime KLD and the perplexity increase are quadratic in the logit error, so proportional to it (None:
# fit the slope to the rows instead; the 3-4 bit rows alone give a steeper -1.69, which sends 8-bit predictions ~5x
# below the int8 rows)
GROUPED_SLOPE: float | None = -2 * math.log(2)
# Resolution of a published perplexity change, percent, for a row that does not carry its own (`resolution_pct`: the
# rounding of the perplexities as printed, benchmarks/data/build_quality_published.py). Assumed from the tables: torchao
# prints 2 decimals on perplexities of 7-12, i.e. +-0.1 % per difference, and its int8 weight-only row on
# Llama-2-7B-chat reads -0.07 %
RESOLUTION_PCT = 0.1
# Noise of a published perplexity change beyond its printing: run-to-run and kernel differences (assumed 0.1 %, the
# size of torchao's int8 weight-only change on Llama-2-7B-chat, -0.07 %, and of llama.cpp's Q8_0 rows' scatter);
# added in quadrature to the row's printing resolution
NOISE_FLOOR_PCT = 0.1
FIT_SCATTER_LN = 0.3  # assumed: the scatter of a row about the fit, ln units (the families' 10-90 % residuals ~ +-0.3)
# Families whose sibling prior is weight-only while their deployments (and rows) also quantize activations: the prior
# is then a lower bound, used without rows but not pulling the level of rows; with rows, a prediction is never below
# the weight-only family's on the same model (predict). NVFP4: ModelOpt checkpoints and torchao's
# NVFP4InferenceConfig (mm_config NVFP4MMConfig.DYNAMIC by default, torchao/prototype/mx_formats/inference_workflow.py)
# quantize activations to NVFP4 as well
LOWER_BOUND_PRIOR = frozenset({"nvfp4"})
# Row families that differ from a base family in one step only, fitted as the base family's rows shifted by that step's
# effect (paired_shift), measured only where one setup ran both on one model at the same bits:
# - int8-w8a8-naive: per-token int8 activations as they are; int8-w8a8: the same after SmoothQuant's smoothing, which
#   divides each activation channel by a scale moved into the weights and so flattens the outlier channels that set a
#   per-token scale (arXiv 2211.10438). Pairs: torchao prototype/smoothquant README (6.06 % vs 1.44 %), mit-han-lab/
#   smoothquant's Llama-2 demo (1.86 % vs 0.57 %); between sources the smoothed rows (Qwen3, heavily trained, arXiv
#   2505.02214) and the unsmoothed ones (torchao, Llama) differ in model and setup as much as in smoothing.
# - gguf-legacy-imatrix: Q4_0..Q8_0 quantized with an importance matrix (llama.cpp weighs each weight's rounding error
#   by its activations' mean square, as for the K-quants). Pairs: llama.cpp PR #4969 (Q4_0/Q4_1 with and without, on
#   LLaMA-1/2 and Mistral-7B).
PAIRED_VARIANTS = {"int8-w8a8-naive": "int8-w8a8", "gguf-legacy-imatrix": "gguf-legacy"}
FAMILY_PRIOR_SOURCES = 1.0  # assumed: the sibling mechanism's level counts as one more source in a family's level
MODEL_FX_SHRINK = 1.0  # assumed: a model's shared effect counts n / (n + 1) of its rows' mean residual
SOURCE_FX_SHRINK = 1.0  # assumed: a setup's effect counts n / (n + 1) of its rows' mean residual
# Families that quantize activations too. Their loss is set mostly by the model's activation outlier channels
# (LLM.int8(), arXiv 2208.07339, sec. 4; SmoothQuant, arXiv 2211.10438, sec. 3), a property of the model that its
# weight-only rows do not show: Llama-3-70B loses 4.4 % under SmoothQuant W8A8 (mit-han-lab/smoothquant README) where
# its weight-only rows lose like Llama-3-8B's. So these rows carry a second model effect, shared by the activation
# families only and shrunk toward 0 like the first (ACT_FX_SHRINK). FP8 W8A8 is not one of them: E4M3 keeps 3
# mantissa bits for every value within ~4 decades of the token's largest (448 / 2^-6), so an outlier channel does
# not coarsen the others as it does INT8's uniform per-token grid (step = outlier / 127), and the INT8 rows' outlier
# effect does not carry to it. The rows barely tell: leave-one-source-out within 2x stays at 83 % overall and 73 % for
# fp8-w8a8, fp8-wo goes 64 -> 71 %, int8-w8a8 60 -> 52 % (2 of its 25 rows cross 2x). Leaving FP8 out moves
# Llama-3.1-70B's FP8 prediction from 2.5x to 1.9x the 8B's, toward the accuracy recoveries of the FP8 checkpoints
# (RedHatAI cards: 70B 99.9 %, 8B 99.5 %).
ACT_FAMILIES = frozenset({"int8-w8a8", "int8-w8a8-naive", "bnb-int8", "nvfp4"})
ACT_FX_SHRINK = 1.0  # assumed: as MODEL_FX_SHRINK
# Tried and not kept: a per-model bits slope beside the model effect (ln factor per precision bit away from 4, shrunk
# toward 0 with 1-8 rows' worth of weight), for the 70B rows that lose less than the model effect says at 8 bits (Q8_0
# on Llama-3-70B-Instruct: +0.03 % measured, +0.107 % predicted held out). It fits Llama-3-70B's slope at +0.04 per bit
# (the wrong sign for that), held-out Q8_0 there goes to +0.146 %, and overall within 2x stays at 83 % (int8-wo
# 71 -> 57-64 %, bnb-int8 20 -> 40 %, nvfp4 median 1.73 -> 1.46).
# Tried and not kept: a third model effect shared by the uniform GPU quantizers only (every non-GGUF family), since
# Llama-3-70B and 3.1-70B lose 1.4-2.5x more than predicted under GPTQ/AWQ/RTN/bitsandbytes/EXL2 (leave-one-source-out
# median residuals +0.3 to +0.9) but not under llama.cpp's mixes, which give the sensitive attn_v/ffn_down tensors more
# bits: overall within 2x stays at 83 %, and gptq 80 -> 78 %, awq 85 -> 82 %, rtn 90 -> 89 % (the effect is mostly
# seen in one source per model, so it does not transfer to a held-out one).
# Bits per group a family's published `bits` include beyond the codes (planner.formats' layouts): fp16 scale + 4-bit
# zero (GPTQ/AWQ/RTN/HQQ g-layouts), fp16 scale + fp16 bias (MLX), fp32 absmax (bnb), FP8 scale (NVFP4)
GROUP_OVERHEAD_BITS = {"gptq": 20, "awq": 20, "rtn": 20, "hqq": 20, "mlx": 32, "bnb-nf4": 32, "bnb-fp4": 32,
                       "nvfp4": 8, "nvfp4-wo": 8, "mxfp4": 8}
# EXL2: 4-bit scales per group of 32 in most of exllamav2's per-layer options (exllamav2/conversion/qparams.py,
# qparams_options: QParams(32, [...], [...], 4)); some layers use 64/128 (not modelled)
EXL2_SCALE_BITS, EXL2_GROUP = 4, 32
FAMILY_GROUP = {"exl2": EXL2_GROUP, "mxfp4": 32}  # layouts the format table does not state as a GroupQuant group
# The head (output.weight / lm_head; the token embedding when tied) each family's published rows were measured with,
# in bits per weight. None: quantized like the linear weights (the format's own head is the usual one).
GPU_HEAD_BITS = 16.0  # GPTQ/AWQ/bnb/FP8/INT8/HQQ/RTN checkpoints keep lm_head in 16-bit (AutoGPTQ/AutoAWQ/llm-compressor
# skip lm_head by default); assumed for torchao's rows too, though its int4 filter may include the head (not modelled)
USUAL_HEAD_BITS: dict[str, float | None] = {
    "exl2": 6 + 32 / 128,  # exllamav2 convert.py -hb default 6 (+ its scales, as planner.formats._exl2 counts them)
    "mlx": None,  # mlx_lm.convert quantizes nn.Embedding and lm_head with the linears (the PR #202 rows)
}
# GGUF families: the head of the file type's own llama.cpp mix on the model (planner.formats.gguf_mix: output.weight
# Q6_K, Q8_0 in a Q8_0 file; a tied token_embd like output), i.e. the head of the base file type (Q4_K_L -> Q4_K_M).
HEAD_WEIGHT = 1.0  # assumed: per weight, a head error costs as much as an average quantized linear weight's at the
# same bits (no published pair of rows differing only in head type in the reference tables; the interval widens by
# the whole adjustment either way)
# Published formats' families (bnb formats split by their encoding).
_GGUF_LEGACY = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
LABELS = ((0.002, "lossless"), (0.012, "negligible"), (0.04, "small"), (0.1, "noticeable"), (0.35, "large"))
BASES = ("measured", "published", "published-family", "extrapolated")


def label_for(kld: float) -> str:
    """A word for a KL divergence: lossless / negligible / small / noticeable / large / severe."""
    for limit, word in LABELS:
        if kld <= limit:
            return word
    return "severe"


@dataclass(frozen=True)
class Quality:
    """Expected loss of a format on a model, with a 10-90 % interval and how it was obtained."""

    kld: float  # mean KL divergence vs 16-bit, nats/token
    ppl_delta_pct: float  # perplexity increase, percent
    basis: str  # one of BASES
    source: str = "estimated"  # 'estimated' (this model) or 'measured' (planner eval on the model itself)
    kld_low: float | None = None
    kld_high: float | None = None
    ppl_low: float | None = None
    ppl_high: float | None = None
    note: str = ""  # what the number rests on, in words
    release: str = ""  # what the model's quantized release means for this format (planner.cost.release); '' for none
    basis_why: str = ""  # why an estimate is extrapolated, in a few words ('' otherwise)

    @property
    def label(self) -> str:
        """The word for the loss: the central KLD's, except an extrapolated estimate takes its interval's upper end."""
        return label_for(self.kld_high if self.basis == "extrapolated" and self.kld_high is not None else self.kld)

    def as_dict(self) -> dict:
        """JSON form."""
        lo = self.kld if self.kld_low is None else self.kld_low
        hi = self.kld if self.kld_high is None else self.kld_high
        plo = self.ppl_delta_pct if self.ppl_low is None else self.ppl_low
        phi = self.ppl_delta_pct if self.ppl_high is None else self.ppl_high
        return {"kld": round(self.kld, 5), "kld_low": round(lo, 5), "kld_high": round(hi, 5),
                "ppl_delta_pct": round(self.ppl_delta_pct, 3), "ppl_delta_pct_low": round(plo, 3),
                "ppl_delta_pct_high": round(phi, 3), "label": self.label, "basis": self.basis, "note": self.note,
                "source": self.source, **({"release": self.release} if self.release else {}),
                **({"basis_why": self.basis_why} if self.basis_why else {})}


def ranking_kld(q: dict) -> float:
    """The KLD ranking charges: a measurement as is, an estimate at its interval's upper end."""
    if q.get("source") == "measured":
        return float(q.get("kld", 0.0))
    return float(q.get("kld_high", q.get("kld", 0.0)))


def quality_text(q: dict | None) -> str:
    """A plan's quality as a table cell: '0.0312 small', '0.0312 small (measured)' for planner eval's measurement,
    '-' for none."""
    if not q:
        return "-"
    return f"{q.get('kld', 0):.4f} {q.get('label', '')}" + (" (measured)" if q.get("source") == "measured" else "")


# ---- the published rows and the per-family fit


@dataclass(frozen=True)
class Row:
    """One published measurement usable for fitting."""

    family: str
    bits: float
    group: int  # 0 = none / per-channel
    model: str
    ppl_pct: float
    kld: float | None
    source: str
    res_pct: float = RESOLUTION_PCT  # the printing resolution of ppl_pct, percent (RESOLUTION_PCT where unknown)
    symmetric: bool = False  # a 4-bit integer grid symmetric about zero (GPTQ's sym=True), as the variant says
    gguf_type: str = ""  # the GGUF type a gguf-family row is named for ('IQ4_XS', 'Q4_K_M'), else ''

    @property
    def codebook(self) -> str:
        """The row's i-quant codebook kind (is_codebook), else ''."""
        return is_codebook(self.family, self.gguf_type)


def data_path() -> Path:
    """planner/data/quality_published.csv."""
    return Path(__file__).parent.parent / "data" / "quality_published.csv"


@lru_cache(maxsize=1)
def published_rows() -> list[dict[str, str]]:
    """Every row of the published-quality table (fitted or not)."""
    with data_path().open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# Word-level perplexity (lm-eval's `wikitext` word_perplexity, which torchao's tables report) against the token-level
# perplexity of every other source: both are exp(total NLL / count), so ln PPL_word = (tokens / words) x ln PPL_token
# and a word-level increase converts as (1 + p)^(words / tokens) - 1. Tokens per word of WikiText-2 test: 245,569 words
# (Merity et al. 2016, arXiv 1609.07843, Table 1); llama.cpp's perplexity tool splits wiki.test.raw into 655 chunks of
# 512 tokens with the 32k LLaMA/Llama-2 tokenizer (llama.cpp PR #270, issue #1003) and 564 with Llama 3's 128k
# tokenizer (llama.cpp issue #7119). lm-eval counts whitespace words of the raw documents, close to the same count.
WIKITEXT2_TEST_WORDS = 245_569
TOKENS_PER_WORD = {"llama-3": 564 * 512 / WIKITEXT2_TEST_WORDS, "": 655 * 512 / WIKITEXT2_TEST_WORDS}


def tokens_per_word(model: str) -> float:
    """WikiText-2 tokens per word for a model_key's tokenizer (Llama 3's 128k vocabulary, else the 32k LLaMA one)."""
    return TOKENS_PER_WORD["llama-3" if model.startswith("llama-3") else ""]


def token_level_pct(row: dict[str, str]) -> float:
    """A row's perplexity increase in token-level terms (word-level rows converted, see TOKENS_PER_WORD)."""
    p = float(row["ppl_delta_pct"])
    if "word" not in row["dataset"].lower():
        return p
    return ((1 + p / 100) ** (1 / tokens_per_word(model_key(row["model"]))) - 1) * 100


def fit_rows(rows: list[dict[str, str]] | None = None) -> list[Row]:
    """The rows marked fit=yes, with bits and a positive perplexity increase (token-level: token_level_pct)."""
    out = []
    for r in published_rows() if rows is None else rows:
        if r["fit"] != "yes" or not r["bits"] or not r["ppl_delta_pct"]:
            continue
        v = r["variant"].lower()
        sym = r["family"] in SYM_FAMILIES and float(r["bits"]) < 5 and "asym" not in v and re.search(r"\bsym", v)
        out.append(Row(r["family"], float(r["bits"]), int(r["group_size"] or 0), r["model"], token_level_pct(r),
                       float(r["value"]) if r["metric"] == "kld" else None, r["source"],
                       float(r.get("resolution_pct") or RESOLUTION_PCT), bool(sym),
                       r["variant"].split(" ")[0].upper() if r["family"].startswith("gguf") else ""))
    return out


@lru_cache(maxsize=64)
def scale_credit(gguf_type: str) -> float:
    """Bits per weight a GGUF type is credited for storing the same codes' scales leaner (SAME_CODES), else 0."""
    from planner.formats import GGML_TYPES

    other = SAME_CODES.get(gguf_type.upper())
    if other is None:
        return 0.0
    return GGML_TYPES[other].bits_per_weight - GGML_TYPES[gguf_type.upper()].bits_per_weight


@lru_cache(maxsize=64)
def legacy_code_shift(gguf_type: str) -> float:
    """For a legacy GGUF type (Q4_0-Q8_0: one scale per 32 weights, plus a min for Q4_1/Q5_1), its code bits per weight
    less its bits per weight (both from the ggml block layout), else 0: a legacy type is rated at the bits of its codes
    (LEGACY_CODES)."""
    from planner.formats import GGML_TYPES

    t = gguf_type.upper()
    if t not in _GGUF_LEGACY:
        return 0.0
    lay = GGML_TYPES[t].layout
    return sum(b for part, b in lay.parts if part.startswith("q")) / lay.block_weights - lay.bits_per_weight


@lru_cache(maxsize=64)
def has_min(gguf_type: str) -> bool:
    """Whether a legacy GGUF type stores a per-block min (Q4_1, Q5_1: an asymmetric grid; LEGACY_CODES)."""
    from planner.formats import GGML_TYPES

    t = gguf_type.upper()
    return t in _GGUF_LEGACY and any(part.startswith("m:") for part, _ in GGML_TYPES[t].layout.parts)


def bits_shift(gguf_type: str) -> float:
    """Bits a GGUF type's precision differs from its bits per weight (scale_credit, legacy_code_shift)."""
    return scale_credit(gguf_type) + legacy_code_shift(gguf_type)


def is_codebook(family: str, gguf_type: str) -> str:
    """A GGUF i-quant's codebook kind (CODEBOOK_KINDS): 'non-uniform' for IQ4_*, 'lattice' for IQ1-IQ3, else ''."""
    if not family.startswith("gguf") or not gguf_type.upper().startswith("IQ"):
        return ""
    return "lattice" if lattice_iquant(gguf_type) else "non-uniform"


def ln_nll(ppl_pct: float) -> float:
    """The fitted quantity: ln of the added mean NLL (nats/token), ln(ln(1 + ppl%/100)). Perplexity is exp(mean NLL),
    and weight noise adds NLL in proportion to its variance (second order in the logit error), so the added NLL, not
    the perplexity increase, is what falls 4x per code bit; the two agree for small losses, and at 2 bits (where the
    perplexity grows several-fold) the increase is exponential in it."""
    return math.log(math.log1p(ppl_pct / 100))


def pct_from_ln_nll(y: float) -> float:
    """The perplexity increase, percent, for a fitted ln(added NLL)."""
    return 100 * math.expm1(math.exp(y))


def _solve(xs: list[list[float]], ys: list[float], ws: list[float] | None = None) -> list[float]:
    """(Weighted) least squares by the normal equations (a few unknowns; Gaussian elimination with partial pivoting)."""
    n = len(xs[0])
    ws = ws or [1.0] * len(xs)
    a = [[sum(w * x[i] * x[j] for x, w in zip(xs, ws)) for j in range(n)]
         + [sum(w * x[i] * y for x, y, w in zip(xs, ys, ws))] for i in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        if abs(a[c][c]) < 1e-12:
            raise ValueError("singular fit")
        for r in range(n):
            if r != c:
                f = a[r][c] / a[c][c]
                a[r] = [u - f * v for u, v in zip(a[r], a[c])]
    return [a[i][n] / a[i][i] for i in range(n)]


def harmonic(g: int) -> float:
    """H_g = 1 + 1/2 + ... + 1/g: the expected largest of g exponential variables, i.e. the range one scale must cover
    for g weights with exponential (Laplace) tails, in units of their mean |w|."""
    g = g if g > 0 else PER_CHANNEL_GROUP
    if g > 1000:  # asymptotic form (error < 1e-7 here); the exact sum costs a loop per call
        return math.log(g) + 0.5772156649 + 1 / (2 * g)
    return sum(1.0 / k for k in range(1, g + 1))


@lru_cache(maxsize=256)
def range_term(group: int) -> float:
    """ln H_g: the quantizer's error term for a group of g weights sharing one scale. A uniform grid of 2^b levels over
    the group's range r has error variance (r / 2^b)^2 / 12, so ln(loss) = const - 2 ln2 b + 2 ln r; with r growing
    like H_g (Laplace tails) the group enters as GAMMA x ln H_g with GAMMA = 2, or 1 for Gaussian tails (r^2 ~ ln g).
    The coefficient is fitted (one, shared by the group-quantizer families) rather than fixed, since real weight
    tails sit between the two."""
    return math.log(harmonic(group))


def precision_bits(family: str, bits: float, group: int) -> float:
    """Bits of the weight code itself (what sets the grid's step), from bits per quantized linear weight: GGUF and FP8
    families keep their bits (their fits are in them); EXL2 drops its 4-bit scale per 32 (a mixed average); the
    other group quantizers drop their per-group scale/zero/bias bits and round to their integer width."""
    if family.startswith("gguf") or family.startswith("fp8"):
        return bits
    if family == "exl2":
        return bits - EXL2_SCALE_BITS / EXL2_GROUP
    g = group or FAMILY_GROUP.get(family, 0)
    return float(round(bits - (GROUP_OVERHEAD_BITS.get(family, 16) / g if g else 0.0)))


def family_group(family: str, group: int) -> int:
    """The group a family's scales cover (a layout the format table does not state as a group: EXL2, MXFP4)."""
    return group or FAMILY_GROUP.get(family, 0)


@dataclass(frozen=True)
class FamilyFit:
    """ln(added NLL) = a + b * precision bits (+ c * ln H_group for the group quantizers) + g * heavy + s * size_term +
    the model's effect (+ the GGUF type's grid terms, added by predict: grid_term); residual 10/90 % quantiles (without
    the source's setup effect: a user's setup is unknown); the measured bits."""

    family: str
    a: float
    b: float
    c: float
    g: float  # ln factor of a heavily trained model (one for the CALIBRATED quantizers, one for the other families)
    lo: float  # 10 % residual quantile (ln)
    hi: float  # 90 % residual quantile (ln)
    bits_min: float
    bits_max: float
    n: int
    own_slope: bool
    models: frozenset[str]
    # model_key -> its rows' mean residual in this family, shrunk toward 0 (MODEL_SHRINK): a model with published rows
    # keeps what its own measurements say about it (e.g. Llama-3-8B's K-quants lose less than the family line)
    offsets: tuple[tuple[str, float], ...] = ()
    n_sources: int = 0
    prior: str = ""  # the sibling family whose mechanism is this family's prior ('' for none)
    grouped: bool = False  # a group quantizer: precision bits + the range term
    model_fx: tuple[tuple[str, float], ...] = ()  # shared across families: a model's sensitivity to weight noise
    source_fx: tuple[tuple[str, float], ...] = ()  # shared across families: a lab setup's level (context, dataset)
    s: float = 0.0  # ln factor per unit of size_term (a model below SIZE_KNOT_B), shared across families
    iq: float = 0.0  # ln factor of a GGUF i-quant lattice codebook against the uniform grid (CODEBOOK_KINDS)
    iq4: float = 0.0  # ln factor of a GGUF i-quant non-uniform codebook against the uniform grid (CODEBOOK_KINDS)
    asym: float = 0.0  # ln factor of a legacy GGUF type's per-block min (Q4_1, Q5_1) at equal code bits (LEGACY_CODES)
    act_fx: tuple[tuple[str, float], ...] = ()  # shared across ACT_FAMILIES: a model's sensitivity to activation noise

    def offset(self, model: str) -> float:
        """The model's own published residual in this family (0 without rows)."""
        return dict(self.offsets).get(model, 0.0)

    def model_effect(self, model: str) -> float:
        """The model's effect estimated from its rows in every family (0 without rows)."""
        return dict(self.model_fx).get(model, 0.0)

    def act_effect(self, model: str) -> float:
        """The model's activation effect (ACT_FAMILIES only; 0 without such rows)."""
        return dict(self.act_fx).get(model, 0.0) if self.family in ACT_FAMILIES else 0.0

    def source_effect(self, source: str) -> float:
        """A source's setup effect, estimated from its rows in several families (0 if unknown)."""
        return dict(self.source_fx).get(source[:SOURCE_KEY_CHARS], 0.0)

    def curve(self, bits: float, group: int) -> float:
        """The family line at `bits` (per quantized linear weight) and `group`, without model or setup effects."""
        p = precision_bits(self.family, bits, group)
        return self.a + self.b * p + (self.c * range_term(family_group(self.family, group)) if self.grouped else 0.0)

    def codebook_term(self, codebook: str) -> float:
        """ln factor of a GGUF i-quant's codebook kind against the uniform grid (fitted; 0 for '')."""
        return {"lattice": self.iq, "non-uniform": self.iq4}.get(codebook, 0.0)

    def grid_term(self, group: int, symmetric: bool, gguf_type: str = "") -> float:
        """ln factor of the code grid against the family's usual one: GPTQ's symmetric 4-bit grid (SYM_GRID_OFFSET,
        computed), a GGUF i-quant's codebook (codebook_term, fitted), a GGUF type rated at other bits than its stored
        ones (bits_shift: the leaner scale storage of SAME_CODES, a legacy type's code bits), and a legacy type's min
        (has_min: the fitted asymmetric-grid term)."""
        return (sym_offset(group) if symmetric else 0.0) + self.codebook_term(is_codebook(self.family, gguf_type)) \
            + self.b * bits_shift(gguf_type) + (self.asym if has_min(gguf_type) else 0.0)

    def ln_ppl(self, bits: float, group: int, model: str, params_b: float | None = None) -> float:
        """Predicted ln(PPL increase %) for a model_key (no setup effect); `params_b` sizes a key without a size."""
        return (self.curve(bits, group) + self.g * heavy(model) + self.s * size_term(model, params_b)
                + self.model_effect(model) + self.act_effect(model))


def quantile(v: list[float], q: float) -> float:
    """The q-quantile of v, interpolated between order statistics ((n - 1) q)."""
    s = sorted(v)
    k = (len(s) - 1) * q
    i = int(k)
    return s[i] + (s[min(i + 1, len(s) - 1)] - s[i]) * (k - i)


def params_from_key(model: str) -> float | None:
    """Parameters (billions) in a model_key's size token: 'qwen3-30b-a3b' -> 30, 'opt-125m' -> 0.125, 'mixtral-8x7b'
    -> 7 (one expert's width); None without one."""
    m = re.search(r"(?:^|[-x])(\d+(?:\.\d+)?)([bm])(?:-|$)", model)
    return None if m is None else float(m.group(1)) / (1000.0 if m.group(2) == "m" else 1.0)


def size_term(model: str, params_b: float | None = None) -> float:
    """ln(SIZE_KNOT_B / N) for a model of N billion parameters below the knot, else 0; N from the model_key's size
    token, else `params_b` (the profile's count), else unknown (0)."""
    n = params_from_key(model) or params_b
    return max(0.0, math.log(SIZE_KNOT_B / n)) if n else 0.0


def heavy(model: str) -> int:
    """1 for a model_key of a heavily trained release (HEAVY_TRAINED), else 0."""
    return int(model.startswith(HEAVY_TRAINED))


def _src(r: Row) -> str:
    return r.source[:SOURCE_KEY_CHARS]


def _cell_weights(rows: list[Row]) -> list[float]:
    """Each source weighs the same in its family, however many rows it published (one lab's setup, e.g. its
    perplexity context or its AWQ implementation, must not set a family's level alone)."""
    n: dict[tuple[str, str], int] = {}
    for r in rows:
        n[(r.family, _src(r))] = n.get((r.family, _src(r)), 0) + 1
    return [1.0 / n[(r.family, _src(r))] for r in rows]


def resolution_weight(ppl_pct: float, res_pct: float = RESOLUTION_PCT) -> float:
    """A row's weight for its measurement's resolution: s^2 / (s^2 + (noise / change)^2), s the fit's scatter in ln
    (FIT_SCATTER_LN) and noise the published perplexity change's printing resolution and NOISE_FLOOR_PCT in
    quadrature; a change the size of its noise is mostly noise, one ten times larger counts fully."""
    noise2 = res_pct ** 2 + NOISE_FLOOR_PCT ** 2
    return FIT_SCATTER_LN ** 2 / (FIT_SCATTER_LN ** 2 + noise2 / ppl_pct ** 2)


def sym_offset(group: int) -> float:
    """SYM_GRID_OFFSET at `group`, interpolated in ln(group) between the computed sizes (per-channel = 0)."""
    if group <= 0 or group in SYM_GRID_OFFSET:
        return SYM_GRID_OFFSET.get(group, SYM_GRID_OFFSET[0])
    pts = sorted((math.log(g), v) for g, v in SYM_GRID_OFFSET.items() if g) + [(math.log(PER_CHANNEL_GROUP), SYM_GRID_OFFSET[0])]
    x = min(max(math.log(group), pts[0][0]), pts[-1][0])
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


def prior_grid_offset(family: str, ancestor: str) -> float:
    """ln of the rounding-error ratio of `family`'s code grid to `ancestor`'s along the PRIOR chain (GRID_PRIOR_OFFSET,
    summed over the steps; 0 for steps that keep the grid)."""
    out, f = 0.0, family
    while f != ancestor and f in PRIOR:
        out += GRID_PRIOR_OFFSET.get(f, 0.0)
        f = PRIOR[f]
    return out


def _prior_chain(family: str) -> list[str]:
    """The family's sibling mechanisms, nearest first (PRIOR), without cycles."""
    out, f = [], PRIOR.get(family)
    while f and f not in out and f != family:
        out.append(f)
        f = PRIOR.get(f)
    return out


def _solve_normal(a: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve a x = rhs (a symmetric positive definite; Gaussian elimination with partial pivoting)."""
    n = len(rhs)
    m = [row[:] + [v] for row, v in zip(a, rhs)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        if abs(m[c][c]) < 1e-12:
            raise ValueError("singular fit")
        piv = m[c]
        for r in range(c + 1, n):
            f = m[r][c] / piv[c]
            if f:
                mr = m[r]
                for j in range(c, n + 1):
                    mr[j] -= f * piv[j]
    x = [0.0] * n
    for i in range(n - 1, -1, -1):
        x[i] = (m[i][n] - sum(m[i][j] * x[j] for j in range(i + 1, n))) / m[i][i]
    return x


def paired_shift(rows: list[Row], variant: str, base: str) -> float | None:
    """ln(added NLL) of the `variant` rows minus the `base` rows, averaged over the pairs measured by one source on one
    model at the same bits (the only contrast free of model and setup); None without such a pair."""
    diffs = [ln_nll(v.ppl_pct) - ln_nll(b.ppl_pct) for v in rows if v.family == variant for b in rows
             if b.family == base and _src(b) == _src(v) and b.model == v.model and b.bits == v.bits]
    return sum(diffs) / len(diffs) if diffs else None


def _tie(a: list[list[float]], rhs: list[float], i: int, j: int, weight: float, gap: float = 0.0) -> None:
    """Add the prior (coef_i - coef_j - gap)^2 x weight to the normal equations: coefficient i is pulled toward
    coefficient j plus `gap` with `weight` rows' worth of evidence."""
    a[i][i] += weight
    a[j][j] += weight
    a[i][j] -= weight
    a[j][i] -= weight
    rhs[i] += weight * gap
    rhs[j] -= weight * gap


def fit_all(rows: list[Row]) -> dict[str, FamilyFit]:
    """One penalized least-squares fit of every row: ln(ppl%) = family level + bits slope x precision bits (+ the range
    coefficient x ln H_group, shared by the group quantizers) + heavily-trained term + small-model term (size_term) +
    i-quant codebook terms (CODEBOOK_KINDS) + legacy min term (LEGACY_CODES) + the model's effect (and its activation
    effect, ACT_FAMILIES) + the source's setup effect. Model and setup effects are shared across families and shrunk
    toward 0 (MODEL_FX_SHRINK, SOURCE_FX_SHRINK); a setup effect exists only for a source with rows in two or more
    families (else it cannot be told from the family's level). A group quantizer's level is pulled toward its sibling
    mechanism's (PRIOR, FAMILY_PRIOR_SOURCES). Each source weighs the same within a family (_cell_weights). A paired
    variant (PAIRED_VARIANTS) is fitted as its base family's rows, less its paired shift (paired_shift), and predicted
    with it."""
    shifts = {v: paired_shift(rows, v, b) for v, b in PAIRED_VARIANTS.items()}
    variants = {r.family for r in rows if r.family in PAIRED_VARIANTS}
    raw = [(r.ppl_pct, r.res_pct) for r in rows]  # a row's resolution weight is its published change's
    rows = [replace(r, family=PAIRED_VARIANTS[r.family], ppl_pct=pct_from_ln_nll(ln_nll(r.ppl_pct) - (shifts[r.family] or 0.0)))
            if r.family in PAIRED_VARIANTS else r for r in rows]
    by: dict[str, list[Row]] = {}
    for r in rows:
        by.setdefault(r.family, []).append(r)
    src_fams: dict[str, set[str]] = {}
    for r in rows:
        src_fams.setdefault(_src(r), set()).add(r.family)
    multi = sorted(s for s, f in src_fams.items() if len(f) > 1)
    own_slope = {f: max(r.bits for r in rs) - min(r.bits for r in rs) >= MIN_BITS_SPAN
                 for f, rs in by.items() if f not in GROUPED}
    idx: dict[str, int] = {}

    def col(name: str) -> int:
        return idx.setdefault(name, len(idx))

    for f in sorted(by):
        col("A:" + f)
    grouped_present = any(f in GROUPED for f in by)
    if grouped_present:
        col("C")
        if GROUPED_SLOPE is None:
            col("B:grouped")
    for f in sorted(by):
        if f not in GROUPED and own_slope[f]:
            col("B:" + f)
    col("h")
    col("hc")
    col("size")
    col("iq")
    col("iq4")
    col("min")
    models = sorted({model_key(r.model) for r in rows})
    for k in models:
        col("m:" + k)
    act_models = sorted({model_key(r.model) for r in rows if r.family in ACT_FAMILIES})
    for k in act_models:
        col("x:" + k)
    for s in multi:
        col("s:" + s)

    def slope_col(f: str) -> str | None:
        if f in GROUPED:
            return "B:grouped" if GROUPED_SLOPE is None else None
        if own_slope[f]:
            return "B:" + f
        return "B:gguf" if "B:gguf" in idx else None

    def fixed_slope(f: str) -> float:
        return GROUPED_SLOPE if f in GROUPED and GROUPED_SLOPE is not None else -2 * math.log(2)

    n = len(idx)
    a = [[0.0] * n for _ in range(n)]
    rhs = [0.0] * n
    for r, w, (pct, res) in zip(rows, _cell_weights(rows), raw):
        w *= resolution_weight(pct, res)
        k = model_key(r.model)
        p = precision_bits(r.family, r.bits, r.group) + bits_shift(r.gguf_type)
        y = ln_nll(r.ppl_pct) - (sym_offset(r.group) if r.symmetric else 0.0)
        x: list[tuple[int, float]] = [(idx["A:" + r.family], 1.0), (idx["m:" + k], 1.0)]
        sc = slope_col(r.family)
        if sc is not None:
            x.append((idx[sc], p))
        else:
            y -= fixed_slope(r.family) * p
        if r.family in GROUPED:
            x.append((idx["C"], range_term(family_group(r.family, r.group))))
        if heavy(k):
            x.append((idx["hc" if r.family in CALIBRATED else "h"], 1.0))
        if size_term(k):
            x.append((idx["size"], size_term(k)))
        if r.codebook:
            x.append((idx["iq4" if r.codebook == "non-uniform" else "iq"], 1.0))
        if has_min(r.gguf_type):
            x.append((idx["min"], 1.0))
        if "s:" + _src(r) in idx:
            x.append((idx["s:" + _src(r)], 1.0))
        if r.family in ACT_FAMILIES:
            x.append((idx["x:" + k], 1.0))
        for i, vi in x:
            rhs[i] += w * vi * y
            for j, vj in x:
                a[i][j] += w * vi * vj
    # a model's effect shrinks toward 0, a point release's toward its predecessor's (sibling)
    for kind, shrink, keys in (("m:", MODEL_FX_SHRINK, models), ("x:", ACT_FX_SHRINK, act_models)):
        for k in keys:
            i, sib = idx[kind + k], idx.get(kind + sibling(k))
            if sib is None:
                a[i][i] += shrink
            else:
                _tie(a, rhs, i, sib, shrink)
    for s in multi:
        a[idx["s:" + s]][idx["s:" + s]] += SOURCE_FX_SHRINK
    _tie(a, rhs, idx["h"], idx["hc"], HEAVY_TIE)  # the calibrated quantizers' factor is pulled toward the others
    for f in by:  # a group quantizer's level is pulled toward its nearest sibling mechanism that has rows
        parent = (next((p for p in _prior_chain(f) if p in by), None)
                  if f in GROUPED and f not in LOWER_BOUND_PRIOR else None)
        if parent is not None:  # toward the parent's level plus the two grids' error ratio (prior_grid_offset)
            _tie(a, rhs, idx["A:" + f], idx["A:" + parent], FAMILY_PRIOR_SOURCES, prior_grid_offset(f, parent))
    present = {"size": any(size_term(model_key(r.model)) for r in rows),
               "iq": any(r.codebook == "lattice" for r in rows), "iq4": any(r.codebook == "non-uniform" for r in rows),
               "min": any(has_min(r.gguf_type) for r in rows)}
    for term in (t for t, there in present.items() if not there):
        a[idx[term]][idx[term]] += 1.0  # no row carries the term: it is 0, not singular
    coef = _solve_normal(a, rhs)
    g, gc, sz, iq, iq4 = coef[idx["h"]], coef[idx["hc"]], coef[idx["size"]], coef[idx["iq"]], coef[idx["iq4"]]
    asym = coef[idx["min"]]
    c = coef[idx["C"]] if grouped_present else 0.0
    model_fx = tuple((k, coef[idx["m:" + k]]) for k in models)
    act_fx = tuple((k, coef[idx["x:" + k]]) for k in act_models)
    source_fx = tuple((s, coef[idx["s:" + s]]) for s in multi)
    fits: dict[str, FamilyFit] = {}
    for fam, rs in by.items():
        sc = slope_col(fam)
        b = coef[idx[sc]] if sc is not None else fixed_slope(fam)
        chain = [p for p in _prior_chain(fam) if p in by]
        fit = FamilyFit(fam, coef[idx["A:" + fam]], b, c if fam in GROUPED else 0.0, gc if fam in CALIBRATED else g,
                        0.0, 0.0,
                        min(r.bits for r in rs), max(r.bits for r in rs), len(rs), sc is not None and sc != "B:gguf"
                        or fam == "gguf", frozenset(model_key(r.model) for r in rs), (), len({_src(r) for r in rs}),
                        chain[0] if chain and fam in GROUPED else "", fam in GROUPED, model_fx, source_fx, sz, iq, iq4,
                        asym, act_fx)
        # residuals without the setup effect: the spread a user with an unknown setup meets; the model's own
        # residual in this family (beyond its shared effect, setup removed) is kept for `published` predictions
        res = [ln_nll(r.ppl_pct) - fit.grid_term(r.group, r.symmetric, r.gguf_type)
               - fit.ln_ppl(r.bits, r.group, model_key(r.model)) for r in rs]
        if len(rs) >= MIN_ROWS_FOR_SPREAD:
            lo, hi = min(quantile(res, 0.1), -0.1), max(quantile(res, 0.9), 0.1)
        else:
            lo, hi = -DEFAULT_SPREAD, DEFAULT_SPREAD
        by_model: dict[str, list[float]] = {}
        for r, e in zip(rs, res):
            by_model.setdefault(model_key(r.model), []).append(e - fit.source_effect(r.source))
        offsets = tuple(sorted((k, sum(v) / (len(v) + MODEL_SHRINK)) for k, v in by_model.items()))
        fits[fam] = replace(fit, lo=lo, hi=hi, offsets=offsets)
    for v in sorted(variants):  # the base family's fit shifted by the variant's effect (0 without a pair to measure it)
        fits[v] = replace(fits[PAIRED_VARIANTS[v]], family=v, a=fits[PAIRED_VARIANTS[v]].a + (shifts[v] or 0.0))
    # group quantizers without rows: their nearest sibling mechanism's level and lines, labelled extrapolated
    for fam in sorted(GROUPED):
        via = next((p for p in _prior_chain(fam) if p in fits), None)
        if fam not in fits and via is not None:
            fits[fam] = replace(fits[via], family=fam, a=fits[via].a + prior_grid_offset(fam, via), n=0, n_sources=0,
                                models=frozenset(), offsets=(), prior=via, g=gc if fam in CALIBRATED else g)
    return fits


def spread_path() -> Path:
    """planner/data/quality_spread.json: each family's held-out residual spread (written by
    `python benchmarks/quality.py --write-spread`)."""
    return Path(__file__).parent.parent / "data" / "quality_spread.json"


def spread_key() -> str:
    """What a stored spread was computed from: this module and the published table (a spread from other code or rows
    is ignored, never used)."""
    from planner.cache import checksum

    return checksum(Path(__file__).read_bytes() + data_path().read_bytes())


def apply_spread(fits: dict[str, FamilyFit], spread: dict[str, tuple[float, float, int]]) -> dict[str, FamilyFit]:
    """The fits with each family's interval widened to its held-out spread (never narrowed below the in-sample one)."""
    return {k: replace(f, lo=min(f.lo, spread[k][0]), hi=max(f.hi, spread[k][1])) if k in spread else f
            for k, f in fits.items()}


def stored_spread(path: Path | None = None) -> dict[str, tuple[float, float, int]]:
    """The shipped held-out spread, if it was computed from this module and table ({} otherwise: in-sample spreads)."""
    import json

    try:
        d = json.loads((path or spread_path()).read_text(encoding="utf-8"))
        if d.get("key") != spread_key():
            return {}
        return {k: (float(v[0]), float(v[1]), int(v[2])) for k, v in d["families"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return {}


@lru_cache(maxsize=1)
def _fits() -> dict[str, FamilyFit]:
    """The fits of the published rows, kept in the user cache: fitting them anew costs a single-model `planner
    recommend` ~20-30 ms on every run. Keyed by the planner version and the bytes of this module and the table."""
    import json
    import os

    from planner import __version__
    from planner.cache import checksum
    from planner.paths import user_cache_dir

    use_cache = os.environ.get("PLANNER_NO_CACHE") != "1"
    path = None
    if use_cache:
        try:
            material = (__version__.encode() + Path(__file__).read_bytes() + data_path().read_bytes()
                        + spread_path().read_bytes())
            path = user_cache_dir() / f"quality-fits-{checksum(material)}.json"
            return {k: fit_from_json(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
        except (OSError, ValueError, TypeError, KeyError):
            pass  # no cache yet, or a file that is not one: fit and (re)write it
    fits = apply_spread(fit_all(fit_rows()), stored_spread())
    if path is not None:
        from planner.cachefiles import write_keyed

        try:
            write_keyed(path, json.dumps({k: fit_to_json(v) for k, v in fits.items()}))
        except OSError:
            pass  # a read-only home must not stop planning
    return fits


# FamilyFit's (name, value) tuple fields, which JSON carries as lists of pairs
_PAIR_FIELDS = ("offsets", "model_fx", "source_fx", "act_fx")


def fit_to_json(f: FamilyFit) -> dict:
    """A FamilyFit as plain JSON (floats round-trip exactly)."""
    pairs = {k: [list(o) for o in getattr(f, k)] for k in _PAIR_FIELDS}
    return {**f.__dict__, "models": sorted(f.models), **pairs}


def fit_from_json(d: dict) -> FamilyFit:
    """fit_to_json's inverse."""
    pairs = {k: tuple((m, float(v)) for m, v in d[k]) for k in _PAIR_FIELDS}
    return FamilyFit(**{**d, "models": frozenset(d["models"]), **pairs})


def kld_relation(rows: list[Row]) -> tuple[float, float]:
    """(alpha, beta) of ln(kld) = alpha + beta * ln(ppl%), fitted to the rows that carry both."""
    both = [r for r in rows if r.kld and r.kld > 0 and r.ppl_pct > 0]
    if len(both) < 3:
        return math.log(0.01), 1.0  # assumed: KLD 0.01 per 1 % of perplexity (the scoreboard's rough ratio)
    a, b = _solve([[1.0, math.log(r.ppl_pct)] for r in both], [math.log(r.kld) for r in both])
    return a, b


@lru_cache(maxsize=1)
def _relation() -> tuple[float, float]:
    return kld_relation(fit_rows())


def kld_from_ppl(ppl_pct: float) -> float:
    """KLD for a perplexity increase (power law fitted to llama.cpp's scoreboard rows that carry both)."""
    a, b = _relation()
    return math.exp(a + b * math.log(max(ppl_pct, 1e-6)))


def model_key(name: str) -> str:
    """A published model name or a profile id reduced to comparable form: 'Meta-Llama-3-8B (base)' -> 'llama-3-8b'."""
    s = name.lower().split("(")[0].strip()
    s = s.replace("meta-", "").replace("llama-v1", "llama-1").replace(" ", "-")
    for tail in ("-instruct", "-chat", "-base", "-hf"):
        s = s.split(tail)[0]
    # Gemma's tuned and pretrained releases end in '-it' / '-pt' ('gemma-3-12b-it'); profiles name neither
    s = re.sub(r"-(?:it|pt)(?=-|$)", "", s)
    # a weights revision after the size ('mistral-7b-v0.1', '-v0.3') is the same architecture and pretraining family:
    # published rows name it or not ('Mistral-7B'), profiles always do
    s = re.sub(r"(\d[bm])-v\d+(?:\.\d+)?$", r"\1", s.strip("-"))
    return s.strip("-")


# ---- a format on a model


def _gguf_type(fmt: WeightFormat) -> str:
    """A GGUF format's base type ('Q4_K_M-as-stored' -> 'Q4_K_M'), else its id."""
    return gguf_base_type(fmt.id.removesuffix("-as-stored")) or fmt.id


def quality_family(fmt: WeightFormat, group: int, bits: float) -> str:
    """The published family a planner format belongs to."""
    fam = fmt.family
    if fam == "gguf" and _gguf_type(fmt) == "MXFP4_MOE":
        # MXFP4_MOE: the experts are OCP MXFP4 (E2M1 under an E8M0 scale per 32), the mechanism of the mxfp4 rows, not
        # of the K-quants' grid (Q8_0 elsewhere counts through its share of the noise, expected_quality, and the head)
        return "mxfp4"
    if fam == "gguf":
        base = _gguf_type(fmt)
        imatrix = fmt.needs_imatrix or fmt.imatrix
        if base in _GGUF_LEGACY:
            return "gguf-legacy-imatrix" if imatrix else "gguf-legacy"
        return "gguf-imatrix" if imatrix or base.startswith("IQ") else "gguf"
    if fam == "bnb":
        return "bnb-int8" if bits > 6 else ("bnb-fp4" if "fp4" in fmt.id else "bnb-nf4")
    if fam == "gptq" and bits > 6:
        return "gptq-8bit"
    if fam == "fp8":
        return "fp8-w8a8"  # served with FP8 activations on FP8 hardware (vLLM, TensorRT-LLM)
    if fam == "w8a8":
        # vLLM runs w8a8-int8 checkpoints made by llm-compressor, whose W8A8 INT8 recipe smooths first
        # (SmoothQuantModifier(smoothing_strength=0.8) + GPTQModifier(scheme="W8A8"), llm-compressor
        # examples/quantization_w8a8_int8); TensorRT-LLM's INT8 W8A8 is SmoothQuant (its quantization blog: "INT8-SQ")
        return "int8-w8a8"
    if fam == "nvfp4":
        # NVFP4 checkpoints (ModelOpt NVFP4_DEFAULT_CFG: input_quantizer E2M1 per 16) run W4A4 on Blackwell in vLLM
        # (modelopt.py: scaled_fp4_quant on the input, cutlass_scaled_fp4_mm) and TensorRT-LLM; vLLM's Marlin fallback
        # on older GPUs is weight-only (W4A16): rated as W4A4, the planner's Blackwell target and the upper bound
        return "nvfp4"
    if fam == "w8a16":
        return "int8-wo"
    return fam


def linear_bits(fmt: WeightFormat, mc: ModelCost) -> tuple[float, int, float]:
    """(bits per quantized linear weight, its main group size (0: per-channel/none), head bits) of `fmt` on the model;
    a GGUF file's bits are its mix's equal-noise bits (model.mix_bits), the convention of the GGUF rows."""
    bits, group, head_bits, _ = _linear_and_head(fmt, mc)
    return bits, group, head_bits


def _linear_and_head(fmt: WeightFormat, mc: ModelCost) -> tuple[float, int, float, float]:
    """linear_bits plus the head's parameters as a share of the quantized linear parameters (gathered with the
    model's layout in `fmt`, in the same pass over its tensors, and kept with it in the layout cache)."""
    lay = mc.layout(fmt)
    # GGUF types mix per tensor (llama.cpp's presets, fallbacks for widths off the 256 super-block); the GPU formats'
    # rows state one scheme, whose nominal bits their fits are in
    bits = _shifted_mix_bits(lay.linear_types, _gguf_type(fmt)) if fmt.family == "gguf" and lay.linear_types \
        else lay.linear_mix_bits if fmt.family == "gguf" else lay.linear_bits
    return bits, lay.linear_group, lay.head_bits, lay.head_share


def _block_noise_share(types: dict[str, int], block_elems: int, main_bits: float) -> float:
    """A layout's mean 4^-bits over every block matrix (its quantized ones by ggml type, `types`; a 16-bit one adds
    ~4^-16, left out) as a fraction of `main_bits` throughout: below 1 when part of the weights stays at more bits."""
    noise = sum(k * 4.0 ** -GGML_TYPES[t].bits_per_weight for t, k in types.items())
    return noise / block_elems / 4.0 ** -main_bits if block_elems else 1.0


def _shifted_mix_bits(types: dict[str, int], file_type: str) -> float:
    """A GGUF mix's equal-noise bits with each tensor credited for its own type's leaner scales (scale_credit), less
    the file type's credit, which the prediction adds back (FamilyFit.grid_term): an IQ4_XS file whose narrow tensors
    fall back to IQ4_NL (same codes, no credit) is rated at IQ4_NL's precision on those, not credited twice. Legacy
    fallbacks in a K-quant file (Q5_0 for Q4_K rows off the 256 super-block) stay at their bits per weight: on
    Llama-3-8B a Q5_0 file loses 1.34x a Q5_K_S one at the same 5.5 bits (llama.cpp PR #6936), nearer the K-quant
    line at its bits (1x) than at its 5 code bits (2x). Without fallbacks: the file's mix bits."""
    n = sum(types.values())
    noise = sum(k * 4.0 ** -(GGML_TYPES[t].bits_per_weight + scale_credit(t)) for t, k in types.items())
    return -math.log(noise / n, 4) - scale_credit(file_type)


def usual_head_bits(fmt: WeightFormat, family: str, mc: ModelCost, head_bits: float) -> float:
    """The head bits `family`'s published rows carry, on this model (USUAL_HEAD_BITS; GGUF: the base file type's)."""
    if family.startswith("gguf"):
        base = EMBED_OUTPUT_Q8_VARIANTS.get(fmt.id)
        return _linear_and_head(FORMATS[base], mc)[2] if base in FORMATS else head_bits
    usual = USUAL_HEAD_BITS.get(family, GPU_HEAD_BITS)
    return head_bits if usual is None else usual


def head_factor(fits: dict[str, FamilyFit], family: str, bits: float, group: int, model: str, head_bits: float,
                usual: float, share: float) -> float:
    """Loss multiplier for a head at `head_bits` instead of the family's `usual`: (L(b) + s L(h)) / (L(b) + s L(h0)),
    L the family curve, s = HEAD_WEIGHT x head parameters / quantized linear parameters; 16-bit loses nothing."""
    fit = fits.get(family) or fits.get(EXTRAPOLATE.get(family, ""))
    if fit is None or head_bits == usual:
        return 1.0

    def loss(b: float) -> float:
        return 0.0 if b >= 15 else math.exp(fit.ln_ppl(b, group, model))  # the added NLL, nats/token

    s = HEAD_WEIGHT * share
    return (loss(bits) + s * loss(head_bits)) / (loss(bits) + s * loss(usual))


def sibling(model: str) -> str:
    """The same-size predecessor of a point release: 'llama-3.1-8b' -> 'llama-3-8b', 'qwen2.5-7b' -> 'qwen2-7b'
    ('' when the name has no minor version). A point release keeps its predecessor's architecture and tokenizer."""
    m = re.match(r"^(.*?\d+)\.\d+(-.*)$", model)
    return f"{m.group(1)}{m.group(2)}" if m else ""


def predict(fits: dict[str, FamilyFit], family: str, bits: float, group: int, model: str,
            source: str = "", symmetric: bool = False, params_b: float | None = None,
            gguf_type: str = "") -> tuple[float, float, float, str, str, str]:
    """(ppl%, ppl% low, ppl% high, basis, note, why extrapolated ('' unless it is)) for a family at `bits` (per
    quantized linear weight) and `group` on `model` (a model_key; `params_b` its size when the key names none);
    `source` adds that source's setup effect where the fit knows it (benchmarks only); `symmetric` charges a symmetric
    4-bit grid (SYM_GRID_OFFSET); `gguf_type` names a GGUF type (grid_term: its i-quant codebook, CODEBOOK_KINDS; its
    scale storage, SAME_CODES; a legacy type's code bits and min, LEGACY_CODES)."""
    fit = fits.get(family)
    basis, why = "published-family", ""
    via = family
    if fit is None:  # no rows and no group-quantizer sibling: the named nearest family, else the nearest in bits
        via = EXTRAPOLATE.get(family, "")
        if via not in fits:
            via = min(fits, key=lambda f: min(abs(bits - fits[f].bits_min), abs(bits - fits[f].bits_max)))
        fit, basis, why = fits[via], "extrapolated", f"no published {family} rows: the {via} fit stands in"
    elif fit.n == 0:  # the sibling mechanism's level (fit.prior), none of this family's own rows
        basis, why = "extrapolated", f"no published {family} rows: the level of its sibling mechanism, {fit.prior}"
    elif not fit.bits_min - BITS_MARGIN <= bits <= fit.bits_max + BITS_MARGIN:  # the family's own fit, beyond its bits
        basis = "extrapolated"
        why = (f"{bits:.2f} bits per weight lies outside the {fit.bits_min:.2f}-{fit.bits_max:.2f} its published "
               f"{family} rows cover")
    elif model in fit.models:
        basis = "published"
    elif fit.n_sources < 2:  # one source: its level rests on the sibling prior and one lab's setup
        basis, why = "extrapolated", f"the published {family} rows come from a single source"
    # A model without rows gets no effect, not its predecessor's (sibling): held out, Llama-3.3-70B's 26 imatrix GGUF
    # rows lose x2.5 less than Llama-3-70B's effect says (13 more of them outside 2x with it) and only one Llama-3.1-8B
    # row gains from it; the fit still ties a point release with rows to its predecessor
    own = fit.offset(model) if basis == "published" else 0.0
    ln = (fit.ln_ppl(bits, group, model, params_b) + own + fit.source_effect(source)
          + fit.grid_term(group, symmetric, gguf_type))
    widen = EXTRAPOLATED_WIDEN if basis == "extrapolated" else 0.0
    slope = ("bits slope and group term shared by the group quantizers" if fit.grouped else
             "own bits slope" if fit.own_slope else "GGUF K-quant bits slope")
    span = f"{fit.bits_min:.2f}-{fit.bits_max:.2f}"
    pbits = precision_bits(family, bits, group)
    at = f"{bits:.2f} bits per quantized linear weight"
    if family.startswith("gguf"):
        at += " (the per-tensor mix's equal-noise bits)"
    if fit.grouped:
        at += f" ({pbits:g}-bit codes, group {family_group(family, group) or 'per-channel'})"
    if via != family:
        note = f"no published {family} rows here: extrapolated from the {via} fit ({fit.n} rows) at {at}"
    elif fit.n == 0:
        note = f"no published {family} rows here: extrapolated from the {fit.prior} mechanism (its level) at {at}"
    else:
        note = (f"{family} family fit ({fit.n} published rows from {fit.n_sources} source"
                f"{'s' if fit.n_sources != 1 else ''} at {span} bits, {slope}"
                + (f"; the weight-only {fit.prior} mechanism is only its lower bound" if family in LOWER_BOUND_PRIOR else
                   f"; level pulled toward the {fit.prior} mechanism" if fit.prior else "") + f") at {at}"
                + (" (outside the measured bits: extrapolated)" if not fit.bits_min - BITS_MARGIN <= bits
                   <= fit.bits_max + BITS_MARGIN else "")
                + (" (one source: extrapolated)" if basis == "extrapolated" and fit.n_sources < 2 else ""))
    if symmetric:
        note += (f"; a symmetric grid (the GPTQ tools' sym=True default): x{math.exp(sym_offset(group)):.2f} on the added "
                 "NLL of the mostly asymmetric published rows")
    codebook = is_codebook(family, gguf_type)
    if fit.codebook_term(codebook):
        note += (f"; {CODEBOOK_KINDS[codebook]}: added NLL x{math.exp(fit.codebook_term(codebook)):.2f} at the same"
                 " bits (fitted)")
    if legacy_code_shift(gguf_type):
        note += (f"; rated at its {bits + legacy_code_shift(gguf_type):.2f} code bits (a legacy type's scale"
                 + (" and min" if has_min(gguf_type) else "") + " excluded"
                 + (f"; the min's asymmetric grid: added NLL x{math.exp(fit.asym):.2f}, fitted)" if has_min(gguf_type)
                    else ")"))
    if scale_credit(gguf_type):
        note += (f"; rated at {bits + scale_credit(gguf_type):.2f} bits, as {SAME_CODES[gguf_type.upper()]} (the same"
                 " codes and scale granularity, scales stored leaner)")
    if fit.s and size_term(model, params_b):
        n = params_from_key(model) or params_b
        note += (f"; a model of {n:g}B parameters, below {SIZE_KNOT_B:g}B: added NLL "
                 f"x{math.exp(fit.s * size_term(model, params_b)):.2f} (the small-model term)")
    # a paired variant and its base share one fit (PAIRED_VARIANTS): say so, with the paired shift on the added NLL
    base = PAIRED_VARIANTS.get(family, "")
    shifted = [v for v, b in PAIRED_VARIANTS.items() if b == family and v in fits]
    if base in fits and via == family:
        note += f"; the {base} fit with added NLL x{math.exp(fit.a - fits[base].a):.2f} (the paired shift)"
    for v in shifted:
        note += f"; {v} rows counted at their added NLL / {math.exp(fits[v].a - fit.a):.2f} (the paired shift)"
    out = (pct_from_ln_nll(ln), pct_from_ln_nll(ln + fit.lo - widen), pct_from_ln_nll(ln + fit.hi + widen))
    if family in LOWER_BOUND_PRIOR and via == family and fit.n and fits.get(fit.prior) is not None and fits[fit.prior].n:
        # quantizing the activations adds to the weights' error: never below the weight-only prediction on this model,
        # its interval's ends included
        wo = predict(fits, fit.prior, bits, group, model, source, symmetric, params_b, gguf_type)[:3]
        if wo[0] > out[0]:
            note += f"; raised to the weight-only {fit.prior} prediction on this model, its lower bound"
        out = (max(out[0], wo[0]), max(out[1], wo[1]), max(out[2], wo[2]))
    return (*out, basis, note, why)


def expected_quality(fmt: WeightFormat, mc: ModelCost, native_dtype: str = "bfloat16") -> Quality:
    """Expected loss of `fmt` on the model of `mc`, from the per-family fit of published measurements."""
    if fmt.family == "float" or (fmt.family == "gguf" and fmt.id in ("F16", "BF16", "F32")):
        return Quality(0.0, 0.0, "published", note="16/32-bit weights: no quantization loss")
    if fmt.family == "mxfp4" and native_dtype == "mxfp4":
        return Quality(0.0, 0.0, "published", note="the model was released in MXFP4 (quantization-aware trained)")
    if fmt.family == "gguf" and _gguf_type(fmt) == "MXFP4_MOE" and "MXFP4" not in mc.layout(fmt).ggml_types:
        q = expected_quality(FORMATS["Q8_0"], mc, native_dtype)  # no experts: llama.cpp writes Q8_0 throughout
        return replace(q, note=f"no MoE experts, so every matrix is Q8_0 (rated as Q8_0): {q.note}")
    if fmt.family == "gguf" and _gguf_type(fmt) == "MXFP4_MOE" and native_dtype == "mxfp4":
        # MXFP4_MOE of an MXFP4 release: the experts keep the released values (llama.cpp's converter copies the blocks;
        # re-rounding MXFP4 values on llama.cpp's grid gives them back) and the other matrices are Q8_0, so the loss
        # is Q8_0's on those: rated as Q8_0, which the release adjustment scales to their share of the weights
        q = expected_quality(FORMATS["Q8_0"], mc)
        return replace(q, note=f"the experts as released, the other matrices as Q8_0: {q.note}")
    if fmt.family == "fp8" and native_dtype == "float8_e4m3":
        return Quality(0.0, 0.0, "published", note="the model was released in FP8 (trained with FP8 weights)")
    bits, group, head_bits, share = _linear_and_head(fmt, mc)
    if bits >= 15:
        return Quality(0.0, 0.0, "published", note=f"{fmt.id} leaves this model's linear weights in 16-bit")
    family = quality_family(fmt, group, bits)
    key = model_key(mc.spec.id)
    mix = 1.0
    if family == "mxfp4":
        # MXFP4 on a MoE model quantizes the experts only (bf16 or, in MXFP4_MOE, Q8_0 elsewhere), where the rows
        # quantize every linear weight: the curve (in whole code bits) is read at MXFP4's own bits and scaled by the
        # experts' share of the block weights' noise
        bits, lay = GGML_TYPES["MXFP4"].bits_per_weight, mc.layout(fmt)
        mix = _block_noise_share(lay.linear_types, lay.block_elems, bits)
    # GPTQ checkpoints are symmetric (AutoGPTQ/GPTQModel's sym=True default, planner quantize's GPTQConfig.sym)
    sym = family == "gptq" and precision_bits(family, bits, group) <= 4
    ppl, plo, phi, basis, note, why = predict(_fits(), family, bits, group, key, symmetric=sym,
                                              params_b=mc.params / 1e9, gguf_type=_gguf_type(fmt))
    if mix != 1.0:
        ppl, plo, phi = (pct_from_ln_nll(ln_nll(v) + math.log(mix)) for v in (ppl, plo, phi))
        note += (f"; the block weights' mean noise is {mix:.1%} of MXFP4's throughout (the experts' share, plus any Q8_0 "
                 f"matrices): added NLL x{mix:.3f}")
    note += f"; head {head_bits:.1f} bits"
    fit = _fits().get(family)
    # the rows a prediction rests on set the usual head: a family without rows rests on its sibling mechanism's
    usual = usual_head_bits(fmt, fit.prior if fit is not None and fit.n == 0 and fit.prior else family, mc, head_bits)
    if head_bits != usual:  # the interval keeps its ends and widens by the whole adjustment (HEAD_WEIGHT is assumed)
        f = head_factor(_fits(), family, bits, group, key, head_bits, usual, share)
        ppl, plo, phi = ppl * f, plo * min(f, 1.0) ** 2, phi * max(f, 1.0) ** 2
        note += (f" (the {family} rows' usual head is {usual:.1f} bits: loss x{f:.3f}, the head counted as "
                 f"{HEAD_WEIGHT * share:.1%} of the quantized weights at its own bits, an assumed weight)")
    return Quality(kld_from_ppl(ppl), ppl, basis, kld_low=kld_from_ppl(plo), kld_high=kld_from_ppl(phi),
                   ppl_low=plo, ppl_high=phi, note=note, basis_why=why)
