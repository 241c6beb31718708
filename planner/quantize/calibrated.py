"""Calibrated quantization of a model's block linears (GPTQ, AWQ), block by block, on demand of the writer.

The safetensors writer asks for tensors in the source's order (block 0's tensors, then block 1's, ...); the first
request for a block runs the calibration forward through it (calib.LayerRunner), quantizes its linears and keeps
their results until they are written. So one block's weights, Hessians and results are resident at a time.

GPTQ: the hook quantizes each group as its input arrives, and the block's output (the next block's input) is
computed with the quantized weights, as the GPTQ reference code and gptqmodel do. AWQ: the block runs in float,
each group's scales are searched on its input statistics, folded into the op before (the RMSNorm weights; v_proj's
rows for o_proj when their shapes line up; up_proj's rows for down_proj), and the scaled weights are rounded on
AWQ's grid; the next block's input is the float block's output, as AutoAWQ does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.errors import PlannerError
from planner.quantize.calib import GROUPS, LayerRunner, Stats, calibration_tokens

if TYPE_CHECKING:
    import torch

    from planner.quantize.config import AWQConfig, GPTQConfig
    from planner.quantize.sources import Source


@dataclass
class Quantized:
    """One block linear as quantized: codes, scales, zeros (out, G), g_idx (in,), and sampled rows of the float
    weight it encodes (for AWQ the scaled weight W diag(s), which is what the stored codes approximate)."""

    q: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    g_idx: np.ndarray
    rows: np.ndarray  # the sampled row indices
    reference: np.ndarray  # those rows of the float weight
    # the checkpoint tensors (pack_gptq's), made as soon as the codes exist; then q holds only the sampled rows
    packed: dict[str, np.ndarray] | None = None


SAMPLE_ROWS = 256  # rows kept to report SQNR, as the pipeline samples (not the whole float weight: memory)


def _sampled(w: "torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(0, w.shape[0], max(1, w.shape[0] // SAMPLE_ROWS))
    return rows, w[torch_index(rows)].numpy().copy()


def torch_index(rows: np.ndarray) -> "torch.Tensor":
    """numpy indices as a torch index tensor."""
    import torch

    return torch.from_numpy(rows.astype(np.int64))


class CalibratedQuantizer:
    """GPTQ or AWQ results of a source's block linears, computed block by block as the writer asks for them."""

    def __init__(self, src: "Source", cfg: "GPTQConfig | AWQConfig", text: str, quantize: set[str]):
        import torch

        from planner.quantize.config import AWQConfig

        self.src = src
        self.cfg = cfg
        self.awq = isinstance(cfg, AWQConfig)
        self.quantize = quantize  # HF names of the linears the format quantizes (others stay float)
        torch.set_num_threads(max(1, torch.get_num_threads()))
        self.runner = LayerRunner(src, calibration_tokens(src.path, text))
        self.results: dict[str, Quantized] = {}
        self.floats: dict[str, np.ndarray] = {}  # float tensors the method changed (AWQ's folded norms)
        self.notes: dict[str, Any] = {}  # per group: AWQ exponent and error ratio

    @staticmethod
    def _layer(name: str) -> int | None:
        parts = name.split(".")
        if len(parts) > 3 and parts[0] == "model" and parts[1] == "layers" and parts[2].isdigit():
            return int(parts[2])
        return None

    def _advance_to(self, layer: int) -> None:
        while self.runner.layer <= layer:
            if self.awq:
                self._awq_block(self.runner.layer)
            else:
                self._gptq_block(self.runner.layer)

    def take(self, name: str) -> Quantized | None:
        """The quantized result of linear `name` (forgotten once taken), or None if it is not a calibrated linear."""
        layer = self._layer(name)
        if layer is None or name not in self.quantize:
            return None
        self._advance_to(layer)
        res = self.results.pop(name, None)
        if res is None:
            raise PlannerError(f"{name}: not produced by the calibration pass (already written, or not a block linear)")
        return res

    def float_override(self, name: str) -> np.ndarray | None:
        """A float tensor's new values where the method changed it (AWQ's norms), else None."""
        layer = self._layer(name)
        if layer is None or not self.awq:
            return None
        self._advance_to(layer)
        return self.floats.pop(name, None)

    # ------------------------------------------------------------------------------------------ GPTQ

    def _gptq_block(self, i: int) -> None:
        from planner.quantize.group_quant import pack_gptq
        from planner.quantize.gptq import gptq_quantize

        cfg = self.cfg
        p = f"model.layers.{i}."
        mods = dict(GROUPS)

        def hook(group: str, x: "torch.Tensor", w: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
            import torch

            keys = [f"{m}.weight" for m in mods[group] if f"{p}{m}.weight" in self.quantize]
            if not keys:
                return {}
            samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            sizes: list[int] = []

            def stacked() -> "torch.Tensor":
                # The group's linears share H, and GPTQ treats rows independently: one run over their stacked rows
                # gives each the same result as its own run, with a third of the column loop's overhead. Read
                # only once GPTQ has its inverse Hessian (memory: the weights are not resident beside the two
                # Hessian-sized matrices), each float weight dropped as soon as it is stacked.
                out = None
                if len(keys) > 1:
                    out = torch.empty(sum(self.runner.by_name[p + k].info.shape[0] for k in keys), x.shape[1])
                a = 0
                for k in keys:
                    t = w[k]  # read now (a lazy block reads on first use), then dropped from the block
                    w.pop(k)
                    samples[k] = _sampled(t)
                    sizes.append(t.shape[0])
                    if out is None:  # a group of one linear: its weight as read, no copy (GPTQ permutes it in place)
                        st = self.runner.by_name[p + k]
                        if st.values is not None or st.parts is not None or not t.numpy().flags.writeable:
                            t = t.clone()  # may share the source's memory (in-memory values, a read-only map)
                        return t
                    out[a:a + t.shape[0]] = t
                    a += t.shape[0]
                    del t
                return out

            r = gptq_quantize(stacked, (x.T @ x).mul_(2.0 / x.shape[0]), cfg.bits,
                              cfg.group_size, sym=cfg.sym, act_order=cfg.desc_act, damp=cfg.damp)
            deq = torch.from_numpy(r.dequantize())
            new, a = {}, 0
            for k, size in zip(keys, sizes):
                b = a + size
                rows = samples[k][0]
                # packed to the checkpoint's 4/8 bits now: the block's codes wait for the writer (a 7B block's
                # uint8 codes are 157 MB, 78 MB packed at 4 bits); the sampled rows' codes stay for the SQNR
                packed = pack_gptq(r.q[a:b], r.scales[a:b], r.zeros[a:b], cfg.bits, cfg.group_size, g_idx=r.g_idx)
                self.results[p + k] = Quantized(r.q[a:b][rows], r.scales[a:b], r.zeros[a:b], r.g_idx, *samples[k],
                                                packed=packed)
                new[k] = deq[a:b]
                a = b
            del r
            return new

        self.runner.step(hook, keep=False)  # weights read per group and dropped after use: one group resident

    # ------------------------------------------------------------------------------------------ AWQ

    def _awq_block(self, i: int) -> None:
        import torch

        from planner.quantize.awq import NO_CLIP, apply_clip, awq_grid, group_blocks, search_scales, search_clip

        cfg = self.cfg
        p = f"model.layers.{i}."
        stats = Stats()
        w = self.runner.step(lambda g, x, _w: stats.add(g, x))
        w = {k: v.clone() for k, v in w.items()}
        rc = self.runner.cfg
        # (group, linears scaled by s on their inputs, (tensor whose output rows are divided by s, its bias))
        plan: list[tuple[str, list[str], str | None]] = [
            ("qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "input_layernorm"),
            ("gate_up", ["mlp.gate_proj", "mlp.up_proj"], "post_attention_layernorm"),
            ("down", ["mlp.down_proj"], "mlp.up_proj"),
        ]
        if rc.heads == rc.kv_heads:  # v_proj's outputs are o_proj's inputs one for one only without GQA (AutoAWQ)
            plan.insert(1, ("o", ["self_attn.o_proj"], "self_attn.v_proj"))
        scales = {}
        for group, mods, _prev in plan:
            if not all(f"{p}{m}.weight" in self.quantize for m in mods):
                continue
            ws = [w[f"{m}.weight"] for m in mods]
            s, a, ratio = search_scales(ws, stats.mean_abs[group], stats.hessian(group), cfg.bits, cfg.group_size)
            scales[group] = s
            self.notes[f"{p}{group}"] = {"ratio": a, "error_vs_rtn": ratio}
        for group, mods, prev in plan:  # fold after every search, so each search saw the unscaled block
            s = scales.get(group)
            if s is None:
                continue
            for m in mods:
                w[f"{m}.weight"] = w[f"{m}.weight"] * s[None, :]
            assert prev is not None
            if prev.endswith("norm"):
                w[f"{prev}.weight"] = w[f"{prev}.weight"] / s
                self.floats[f"{p}{prev}.weight"] = w[f"{prev}.weight"].numpy()
            else:
                w[f"{prev}.weight"] = w[f"{prev}.weight"] / s[:, None]
                if f"{p}{prev}.weight" not in self.quantize:  # kept in float: written with its rows scaled
                    self.floats[f"{p}{prev}.weight"] = w[f"{prev}.weight"].numpy()
                if f"{prev}.bias" in w:
                    w[f"{prev}.bias"] = w[f"{prev}.bias"] / s
                    self.floats[f"{p}{prev}.bias"] = w[f"{prev}.bias"].numpy()
        for group, mods in GROUPS:
            blocks = None
            for m in mods:
                key = f"{p}{m}.weight"
                if key not in self.quantize:
                    continue
                sample = _sampled(w[f"{m}.weight"])  # the scaled weight before clipping: what the codes stand for
                if cfg.clip and m not in NO_CLIP:
                    # clipping after scaling, scored on the group's inputs as the scaled weights see them (x / s)
                    if blocks is None:
                        blocks = group_blocks(stats.hessian(group), cfg.group_size, scales.get(group))
                    max_val, ratio = search_clip(w[f"{m}.weight"], blocks, cfg.bits, cfg.group_size)
                    w[f"{m}.weight"] = apply_clip(w[f"{m}.weight"], max_val, cfg.group_size)
                    self.notes.setdefault(f"{p}{m}", {})["clip_error_ratio"] = ratio
                q, s, z = awq_grid(w[f"{m}.weight"], cfg.bits, cfg.group_size)
                n = q.shape[1]
                self.results[key] = Quantized(q.to(torch.uint8).numpy(), s.numpy().astype(np.float32),
                                              z.to(torch.uint8).numpy(), (np.arange(n) // cfg.group_size).astype(np.int32),
                                              *sample)
