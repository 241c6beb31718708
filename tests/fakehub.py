"""A fake Hugging Face Hub on 127.0.0.1 for tests (never the real network), and small real model files to serve.

Serves the model-info listing (/api/models/ORG/NAME/revision/REV) and files (/ORG/NAME/resolve/REV/FILE) with HTTP
Range support, and can answer 401/403/404, stall (timeouts), ignore Range, or redirect to another host name. Every
request is logged with the bytes sent, so tests can assert that no whole weight file ever went over the wire.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import gguf
import numpy as np
from safetensors.numpy import save_file

from planner.models.inventory import tensor_inventory
from planner.models.readers import spec_from_hf_config

SHA = "0123456789abcdef0123456789abcdef01234567"


def use_hf_cache(monkeypatch, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Point huggingface_hub (and so the planner, which reads and writes where the library does) at `path` as the HF
    hub cache: the library fixed constants.HF_HUB_CACHE when it was imported, so the variable alone is not enough."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(path))

# A Llama-shaped 1B model that only the local HF cache has: plannable, no bundled profile, no published score
CHAT_1B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
    "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 8, "intermediate_size": 5632,
    "max_position_embeddings": 16384, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


def cache_chat_1b(monkeypatch, root: Path) -> Path:  # type: ignore[no-untyped-def]
    """Make `root` the HF hub cache (use_hf_cache) holding acme/chat-1b's config.json (CHAT_1B_CONFIG); returns its
    snapshot folder."""
    use_hf_cache(monkeypatch, root)
    snap = root / "models--acme--chat-1b" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(CHAT_1B_CONFIG))
    return snap


TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512, "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
    "max_position_embeddings": 2048, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
AWQ_CONFIG = {**TINY_CONFIG, "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm",
                                                     "zero_point": True}}

_HF_OF = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_arrays(config: dict) -> dict[str, np.ndarray]:
    """HF-named arrays for every tensor of a llama config (matrices F16, norms F32)."""
    spec = spec_from_hf_config(config, "config.json")
    rng = np.random.default_rng(0)
    out = {}
    for t in tensor_inventory(spec):
        base, param = t.name.rsplit(".", 1)
        hf = _TOP[base] if t.layer is None else f"model.layers.{t.layer}.{_HF_OF[t.role]}"
        out[f"{hf}.{param}"] = rng.standard_normal(t.shape).astype(np.float16 if len(t.shape) > 1 else np.float32)
    return out


def safetensors_repo(tmp: Path, config: dict, shards: int = 2) -> dict[str, bytes]:
    """config.json + model.safetensors.index.json + shards with real headers (safetensors.numpy.save_file)."""
    arrays = hf_arrays(config)
    names = sorted(arrays)
    files: dict[str, bytes] = {"config.json": json.dumps(config).encode(), "README.md": b"# tiny\n"}
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: arrays[n] for n in names[i::shards]}
        save_file(part, str(tmp / fname))
        files[fname] = (tmp / fname).read_bytes()
        weight_map.update({n: fname for n in part})
    files["model.safetensors.index.json"] = json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}).encode()
    return files


def awq_repo(tmp: Path) -> dict[str, bytes]:
    """An AWQ checkpoint: packed int32 qweight/qzeros, fp16 scales, float norms and embeddings."""
    arrays = {}
    for name, arr in hf_arrays(TINY_CONFIG).items():
        if name.endswith("proj.weight"):  # (out, in) -> AutoAWQ GEMM layout: qweight (in, out/8) int32
            out_f, in_f = arr.shape
            stem = name[: -len(".weight")]
            arrays[f"{stem}.qweight"] = np.zeros((in_f, out_f // 8), np.int32)
            arrays[f"{stem}.qzeros"] = np.zeros((max(in_f // 128, 1), out_f // 8), np.int32)
            arrays[f"{stem}.scales"] = np.ones((max(in_f // 128, 1), out_f), np.float16)
        else:
            arrays[name] = arr
    save_file(arrays, str(tmp / "model.safetensors"))
    return {"config.json": json.dumps(AWQ_CONFIG).encode(), "model.safetensors": (tmp / "model.safetensors").read_bytes()}


def write_gguf(path: Path, ftype: str = "Q8_0", split_max_tensors: int = 0) -> list[Path]:
    """A llama GGUF of TINY_CONFIG's tensors: matrices in `ftype` (Q8_0 or F16), norms F32; returns the files."""
    spec = spec_from_hf_config(TINY_CONFIG, "tiny/config.json")
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    w.add_name("Tiny Llama")
    w.add_block_count(spec.num_layers)
    w.add_context_length(spec.max_context)
    w.add_embedding_length(spec.hidden_size)
    w.add_feed_forward_length(spec.intermediate_size)
    w.add_head_count(spec.num_heads)
    w.add_head_count_kv(spec.num_kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if ftype == "Q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_token_list([f"tok{i}" for i in range(spec.vocab_size)])
    rng = np.random.default_rng(1)
    q8 = gguf.GGMLQuantizationType.Q8_0
    for t in tensor_inventory(spec):
        arr = rng.standard_normal(t.shape).astype(np.float32)
        if len(t.shape) == 1:
            w.add_tensor(t.name, arr)
        elif ftype == "Q8_0":
            w.add_tensor(t.name, gguf.quants.quantize(arr, q8), raw_dtype=q8)
        else:
            w.add_tensor(t.name, arr.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if split_max_tensors:
        return sorted(path.parent.glob(path.stem + "-*-of-*.gguf"))
    return [path]


def gguf_repo(tmp: Path) -> dict[str, bytes]:
    """A GGUF repo: one Q8_0 file and an F16 quant split in two parts (in a subfolder, as unsloth does)."""
    n = len(tensor_inventory(spec_from_hf_config(TINY_CONFIG, "c.json")))
    files = {"README.md": b"# GGUF\n"}
    (q8,) = write_gguf(tmp / "Tiny-Llama-Q8_0.gguf", "Q8_0")
    files[q8.name] = q8.read_bytes()
    (tmp / "f16").mkdir(exist_ok=True)
    for p in write_gguf(tmp / "f16" / "Tiny-Llama-F16.gguf", "F16", split_max_tensors=(n + 1) // 2):
        files[f"F16/{p.name}"] = p.read_bytes()
    return files


@dataclass
class Logged:
    """One request the fake Hub answered."""

    path: str
    range: str | None
    auth: str | None
    status: int
    sent: int  # body bytes written
    host: str | None = None
    method: str = "GET"


@dataclass
class FakeHub:
    """The server's state: repos (repo -> file -> bytes), per-repo behaviour, and the request log."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    behaviour: dict[str, dict] = field(default_factory=dict)  # status/error_code/on, delay, ignore_range, redirect_host,
    # fail_first: [status, ...] answered (with Retry-After: 0) to the first requests for the repo before serving it
    # (fail_on: only to requests whose path contains this); moved_to: the commit file answers report
    branches: dict[str, dict[str, tuple[str, dict[str, bytes]]]] = field(default_factory=dict)  # repo -> branch -> (sha, files)
    log: list[Logged] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    def sent_for(self, repo: str, name: str) -> list[int]:
        """Body bytes sent per GET of one file (at any revision)."""
        return [r.sent for r in self.log if r.method == "GET" and (re.fullmatch(f"/{repo}/resolve/[^/]+/{name}", r.path)
                                                                    or r.path == f"/cdn/{repo}/{name}")]

    def start(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return None

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self)

            def do_HEAD(self) -> None:  # noqa: N802  (huggingface_hub's file_exists and hf_hub_download ask first)
                hub._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda *a: None  # a client that timed out and hung up is expected
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- request handling ---------------------------------------------------------------------------------------

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        head = h.command == "HEAD"
        try:
            if not head:
                h.wfile.write(body)
        except OSError:
            pass
        self.log.append(Logged(h.path, h.headers.get("Range"), h.headers.get("Authorization"), status, 0 if head else len(body),
                               h.headers.get("Host"), h.command))

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = unquote(urlsplit(h.path).path)
        m_api = re.match(r"^/api/models/([^/]+/[^/]+)/revision/(.+)$", path)
        m_file = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        m_cdn = re.match(r"^/cdn/([^/]+/[^/]+)/(.+)$", path)
        repo = (m_api or m_file or m_cdn).group(1) if (m_api or m_file or m_cdn) else None
        b = self.behaviour.get(repo or "", {})
        if b.get("delay"):
            time.sleep(b["delay"])
        if repo is None or repo not in self.repos:
            return self._send(h, 404, b"Repository not found", {"X-Error-Code": "RepoNotFound"})
        if b.get("fail_first") and b.get("fail_on", "") in h.path:
            return self._send(h, b["fail_first"].pop(0), b"slow down", {"Retry-After": "0"})
        on = b.get("on", "files")
        if b.get("status") and (on == "all" or (on == "files") == bool(m_file or m_cdn)):
            code = {"X-Error-Code": b["error_code"]} if b.get("error_code") else {}
            return self._send(h, b["status"], b"denied", code)
        files = self.repos[repo]
        sha = SHA
        branches = self.branches.get(repo, {})
        if m_api and m_api.group(2) in branches:
            sha, files = branches[m_api.group(2)]
        elif m_file:
            rev = m_file.group(2)
            sha, files = next(((s, f) for b_, (s, f) in branches.items() if rev in (s, b_)), (sha, files))
        if m_api:
            siblings = [{"rfilename": n, "size": len(d)} for n, d in sorted(files.items())]
            return self._send(h, 200, json.dumps({"id": repo, "sha": sha, "siblings": siblings}).encode(),
                              {"Content-Type": "application/json"})
        name = (m_file or m_cdn).group(3 if m_file else 2)
        if name not in files:
            return self._send(h, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
        data = files[name]
        # What huggingface_hub's file metadata (HEAD) needs: the commit the revision resolved to and an ETag.
        # (moved_to: a push landed after the listing, so files resolve to another commit)
        meta = {"X-Repo-Commit": b.get("moved_to", sha), "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        if m_file and b.get("redirect_host"):
            return self._send(h, 302, b"", {**meta, "Location": f"http://{b['redirect_host']}:{self.port}/cdn/{repo}/{name}"})
        rng = h.headers.get("Range")
        m = re.match(r"^bytes=(\d+)-(\d*)$", rng or "")
        if m is None or b.get("ignore_range"):
            return self._send(h, 200, data, meta)
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            return self._send(h, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
        return self._send(h, 206, data[start:end + 1], {**meta, "Content-Range": f"bytes {start}-{end}/{len(data)}"})
