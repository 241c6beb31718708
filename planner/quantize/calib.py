"""Calibration activations: run a Llama-family model layer by layer on CPU over a calibration text and hand each
group of linear layers its inputs (for GPTQ's Hessians, AWQ's scale search, an importance matrix).

One transformer block is resident at a time: the hidden states of every calibration token (tokens x hidden,
float32) are kept between blocks, a block's weights are read from the memory-mapped source, run, and dropped. So a
7B model needs about one block's weights in float32 plus the hidden states, not the model.

The forward pass is written here in torch for the architectures `planner quantize` reads (Llama, Mistral, Qwen2,
SmolLM: RMSNorm, rotary embeddings in Hugging Face's half-split layout, grouped-query attention, SwiGLU MLP,
Qwen2's q/k/v biases, Llama 3 RoPE scaling) and is checked against transformers' own model in the tests.

Inputs are grouped by what they feed, as GPTQ/AWQ implementations do: q/k/v share one input, gate/up another,
o_proj and down_proj each their own. A `hook(group, x, weights)` sees each group's input (N tokens x in) before
the group runs and may return replacement weights for it (GPTQ quantizes them there, so later groups see the
quantized layer's outputs: GPTQ's "true sequential" order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.errors import InvalidInputError, PlannerError

if TYPE_CHECKING:  # torch is imported lazily: `planner recommend` must not pay for it
    import torch

    from planner.quantize.sources import Source

SEQ_LEN = 512  # tokens per calibration sequence (GPTQ paper: 128 x 2048; AutoAWQ: 128 x 512); assumed enough here
# Calibration tokens used at most. GPTQ's paper used 128 x 2048, AutoAWQ 128 x 512 on GPUs; on a CPU the group
# inputs of one block are kept whole (a 7B down_proj's input is tokens x 11008 float32: 360 MB at 8192), so
# fewer (assumed enough: the Hessian of a 4096-wide layer is well conditioned with a few thousand tokens).
MAX_TOKENS = 8192

# The groups of a block, in forward order: (group name, HF module suffixes fed by the same input)
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("qkv", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("o", ("self_attn.o_proj",)),
    ("gate_up", ("mlp.gate_proj", "mlp.up_proj")),
    ("down", ("mlp.down_proj",)),
)
LINEARS = tuple(m for _, ms in GROUPS for m in ms)
NORMS = ("input_layernorm", "post_attention_layernorm")

Hook = Callable[[str, "torch.Tensor", dict[str, "torch.Tensor"]], "dict[str, torch.Tensor] | None"]


def calibration_tokens(model_dir: Path, text: str, *, seq_len: int = SEQ_LEN, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """The calibration text as (n_seq, seq_len) int64 token ids, through the model's own tokenizer.json."""
    tok_path = Path(model_dir) / "tokenizer.json"
    if not tok_path.is_file():
        raise InvalidInputError(f"{model_dir}: calibration needs the model's tokenizer.json beside config.json")
    from tokenizers import Tokenizer  # lazy: only calibrated quantization needs it

    try:
        tok = Tokenizer.from_file(str(tok_path))
    except Exception as exc:  # the tokenizers library raises its own exception types
        raise InvalidInputError(f"{tok_path}: cannot read the tokenizer ({str(exc)[:120]})") from None
    ids = np.array(tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)[:max_tokens]
    n = len(ids) // seq_len
    if n == 0:
        if len(ids) < 16:
            raise InvalidInputError(f"the calibration text is {len(ids)} tokens; give at least a few hundred")
        return ids[None, :]  # a short text: one sequence of what there is
    return ids[: n * seq_len].reshape(n, seq_len)


@dataclass
class ArchConfig:
    """What the forward pass needs from config.json."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    inv_freq: np.ndarray  # (head_dim / 2,) rotary frequencies, scaling applied

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ArchConfig":
        """Read a Llama-family config.json."""
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            kv = int(config.get("num_key_value_heads") or heads)
            hd = int(config.get("head_dim") or hidden // heads)
            eps = float(config.get("rms_norm_eps", 1e-6))
            theta = float(config.get("rope_theta", 10000.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"config.json: {exc}: calibration needs hidden_size, num_attention_heads") from None
        inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
        rs = config.get("rope_scaling") or {}
        kind = rs.get("rope_type", rs.get("type")) if isinstance(rs, dict) else None
        if kind == "llama3":
            from planner.quantize.gguf_writer import llama3_rope_factors

            inv = inv / llama3_rope_factors(config, hd).astype(np.float64)
        elif kind == "linear":
            inv = inv / float(rs.get("factor", 1.0))
        elif kind not in (None, "default"):
            raise PlannerError(f"config.json: rope_scaling {kind!r} is not supported by planner's calibration forward pass")
        return cls(hidden, heads, kv, hd, eps, inv.astype(np.float32))


def _rms_norm(x: "torch.Tensor", w: "torch.Tensor", eps: float) -> "torch.Tensor":
    import torch

    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x: "torch.Tensor", cos: "torch.Tensor", sin: "torch.Tensor") -> "torch.Tensor":
    """Hugging Face's rotary layout: the first and second halves of each head are the pairs."""
    import torch

    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def _linear(x: "torch.Tensor", w: dict[str, "torch.Tensor"], name: str) -> "torch.Tensor":
    import torch

    return torch.nn.functional.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def block_forward(h: "torch.Tensor", w: dict[str, "torch.Tensor"], cfg: ArchConfig, hook: Hook | None = None,
                  batch: int = 4, keep: bool = True) -> "torch.Tensor":
    """One decoder block over h (n_seq, L, hidden); `w` by HF suffix ('self_attn.q_proj.weight'). Returns the new h.

    The hook sees each group's input flattened to (n_seq * L, in) and may replace that group's weights (in `w`).
    keep=False drops each weight from `w` after its last use (with a lazily loading `w`, one group is resident).
    """
    import torch

    n_seq, L, d = h.shape
    pos = torch.arange(L, dtype=torch.float32)
    ang = torch.outer(pos, torch.from_numpy(cfg.inv_freq))
    cos = torch.cat((ang.cos(), ang.cos()), -1)[None, None]
    sin = torch.cat((ang.sin(), ang.sin()), -1)[None, None]

    def feed(group: str, x: "torch.Tensor") -> None:
        if hook is not None:
            new = hook(group, x.reshape(-1, x.shape[-1]), w)
            if new:
                w.update(new)

    x = _rms_norm(h, w["input_layernorm.weight"], cfg.eps)
    feed("qkv", x)
    attn = torch.empty(n_seq, L, cfg.heads * cfg.head_dim)
    for a in range(0, n_seq, batch):  # attention a few sequences at a time: scores are (b, heads, L, L)
        xb = x[a:a + batch]
        b = xb.shape[0]
        q = _linear(xb, w, "self_attn.q_proj").view(b, L, cfg.heads, cfg.head_dim).transpose(1, 2)
        k = _linear(xb, w, "self_attn.k_proj").view(b, L, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = _linear(xb, w, "self_attn.v_proj").view(b, L, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        rep = cfg.heads // cfg.kv_heads
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        attn[a:a + b] = o.transpose(1, 2).reshape(b, L, -1)
    if not keep:
        for m in ("q_proj", "k_proj", "v_proj"):
            w.pop(f"self_attn.{m}.weight", None)
    feed("o", attn)
    h = h + _linear(attn, w, "self_attn.o_proj")
    del attn
    if not keep:
        w.pop("self_attn.o_proj.weight", None)
    x = _rms_norm(h, w["post_attention_layernorm.weight"], cfg.eps)
    feed("gate_up", x)
    act = torch.nn.functional.silu(_linear(x, w, "mlp.gate_proj")) * _linear(x, w, "mlp.up_proj")
    del x
    if not keep:
        w.pop("mlp.gate_proj.weight", None)
        w.pop("mlp.up_proj.weight", None)
    feed("down", act)
    return h + _linear(act, w, "mlp.down_proj")


class LayerRunner:
    """The calibration tokens' hidden states, advanced one block at a time through a source's weights."""

    def __init__(self, src: "Source", tokens: np.ndarray):
        import torch

        if src.kind != "hf" and not src.hf_config:
            raise PlannerError(f"{src.path}: calibration needs the model's config")
        self.src = src
        self.cfg = ArchConfig.from_config(src.hf_config)
        self.by_name = {t.hf_name: t for t in src.tensors if t.hf_name}
        self.n_layers = int(src.hf_config.get("num_hidden_layers", src.spec.num_layers))
        self.tokens = tokens
        emb = self.by_name.get("model.embed_tokens.weight")
        if emb is None:
            raise InvalidInputError(f"{src.path}: no model.embed_tokens.weight to calibrate with")
        ids = tokens.reshape(-1)
        if ids.max() >= emb.n_rows:
            raise InvalidInputError(f"{src.path}: the tokenizer gives id {int(ids.max())}, beyond the {emb.n_rows}-row embedding")
        h = np.empty((ids.size, emb.row_length), dtype=np.float32)
        step = max(1, (1 << 22) // emb.row_length)  # read the embedding in slices, keep only the rows used
        for a in range(0, emb.n_rows, step):
            b = min(a + step, emb.n_rows)
            sel = np.nonzero((ids >= a) & (ids < b))[0]
            if sel.size:
                h[sel] = self.src.read_rows(emb, a, b, "hf")[ids[sel] - a]
        self.src.release(emb)
        self.hidden = torch.from_numpy(h).view(tokens.shape[0], tokens.shape[1], -1)
        self.layer = 0

    def names(self, i: int) -> list[str]:
        """HF names of block i's tensors that the forward pass uses."""
        p = f"model.layers.{i}."
        out = [f"{p}{n}.weight" for n in NORMS] + [f"{p}{m}.weight" for m in LINEARS]
        out += [f"{p}{m}.bias" for m in LINEARS if f"{p}{m}.bias" in self.by_name]
        return out

    def load(self, i: int) -> dict[str, "torch.Tensor"]:
        """Block i's weights as float32 torch tensors, keyed by suffix ('mlp.up_proj.weight')."""
        import torch

        p = f"model.layers.{i}."
        w = {}
        for name in self.names(i):
            t = self.by_name.get(name)
            if t is None:
                raise InvalidInputError(f"{self.src.path}: {name} is missing (not a Llama-family block)")
            x = self.src.read_rows(t, 0, t.n_rows, "hf").reshape(t.info.shape if name.endswith("proj.weight") else (-1,))
            if name.endswith("proj.weight") and x.shape != tuple(t.info.shape):
                x = x.reshape(t.info.shape)
            w[name[len(p):]] = torch.from_numpy(np.ascontiguousarray(x))
            self.src.release(t)
        return w

    def step(self, hook: Hook | None = None, weights: dict[str, "torch.Tensor"] | None = None,
             keep: bool = True) -> dict[str, "torch.Tensor"]:
        """Run the next block (its weights, or `weights`) with `hook`; returns the weights it ended with.

        keep=False: the block's weights are read when first used and dropped after their last use, so one
        group's weights are resident at a time (GPTQ); the returned dict is then empty of them."""
        import torch

        if self.layer >= self.n_layers:
            raise PlannerError("all blocks have been run")
        if weights is not None:
            w = weights
        elif keep:
            w = self.load(self.layer)
        else:
            w = _LazyBlock(self, self.layer)
        with torch.no_grad():
            self.hidden = block_forward(self.hidden, w, self.cfg, hook, keep=keep)
        self.layer += 1
        return w

    def load_one(self, i: int, suffix: str) -> "torch.Tensor | None":
        """One tensor of block i as float32 torch ('mlp.up_proj.weight'); None if the block has no such tensor."""
        import torch

        t = self.by_name.get(f"model.layers.{i}.{suffix}")
        if t is None:
            return None
        x = self.src.read_rows(t, 0, t.n_rows, "hf").reshape(t.info.shape if suffix.endswith("proj.weight") else (-1,))
        self.src.release(t)
        return torch.from_numpy(np.ascontiguousarray(x))


class _LazyBlock(dict):  # type: ignore[type-arg]
    """A block's weights read from the source on first use (a missing bias stays missing)."""

    def __init__(self, runner: LayerRunner, layer: int):
        super().__init__()
        self.runner = runner
        self.layer = layer
        self.used: set[str] = set()

    def __missing__(self, key: str) -> "torch.Tensor":
        if key in self.used:
            raise KeyError(key)  # dropped after its last use; reading it again would be a bug
        t = self.runner.load_one(self.layer, key)
        if t is None:
            raise KeyError(f"model.layers.{self.layer}.{key} is missing (not a Llama-family block)")
        self.used.add(key)
        self[key] = t
        return t

    def get(self, key: str, default=None):  # type: ignore[no-untyped-def]
        """Biases are optional: read them if the block has them."""
        if key in self:
            return super().get(key)
        if key.endswith(".bias") and f"model.layers.{self.layer}.{key}" not in self.runner.by_name:
            return default
        return self[key]


class Stats:
    """Per-group input statistics of one block: X^T X (for Hessians), per-channel mean square and mean |x|."""

    def __init__(self) -> None:
        self.xtx: dict[str, "torch.Tensor"] = {}
        self.mean_sq: dict[str, np.ndarray] = {}
        self.mean_abs: dict[str, np.ndarray] = {}
        self.n: dict[str, int] = {}

    def add(self, group: str, x: "torch.Tensor", hessian: bool = True) -> None:
        """Accumulate one group's inputs x (N, in)."""
        if hessian:
            self.xtx[group] = x.T @ x  # float32, as GPTQ implementations accumulate it
        xd = x.double()
        self.mean_sq[group] = xd.pow(2).mean(0).numpy()
        self.mean_abs[group] = xd.abs().mean(0).numpy()
        self.n[group] = x.shape[0]

    def hessian(self, group: str) -> "torch.Tensor":
        """GPTQ's H = 2 X^T X / N, (in, in) float32."""
        return self.xtx[group] * (2.0 / self.n[group])


def collect_activation_stats(model_dir: Path | str, texts: Sequence[str] | str, *, names: str = "hf",
                             seq_len: int = SEQ_LEN, max_tokens: int = MAX_TOKENS) -> dict[str, np.ndarray]:
    """Mean square of each input channel of every block linear over the calibration text: {tensor name: (in,) float64}.

    `names` 'hf' keys by Hugging Face name ('model.layers.0.mlp.down_proj.weight'), 'gguf' by llama.cpp's
    ('blk.0.ffn_down.weight'; llama.cpp's imatrix is this same per-column mean of x^2). The float model is run.
    """
    from planner.quantize.sources import open_source

    text = texts if isinstance(texts, str) else "\n\n".join(texts)
    src = open_source(Path(model_dir))
    try:
        runner = LayerRunner(src, calibration_tokens(src.path, text, seq_len=seq_len, max_tokens=max_tokens))
        gguf_of = {t.hf_name: t.info.name for t in src.tensors if t.hf_name}
        out: dict[str, np.ndarray] = {}
        for i in range(runner.n_layers):
            stats = Stats()
            runner.step(lambda g, x, w: stats.add(g, x, hessian=False))
            for group, mods in GROUPS:
                for m in mods:
                    hf = f"model.layers.{i}.{m}.weight"
                    out[gguf_of.get(hf, hf) if names == "gguf" else hf] = stats.mean_sq[group]
        return out
    finally:
        src.close()


def module_groups() -> dict[str, str]:
    """HF module suffix -> the group whose input feeds it."""
    return {m: g for g, ms in GROUPS for m in ms}

