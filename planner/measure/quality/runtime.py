"""llama.cpp (through llama-cpp-python) as the evaluation runtime: load a GGUF file, tokenize, return logits.

The only module of planner.measure.quality that imports llama_cpp, and only inside the child process that planner.native
starts: `handle` is the child's side (it owns the loaded model), `LlamaModel` the parent's (it owns the child). A crash
of llama.cpp then ends the child, and LlamaModel raises planner.native.NativeCrash naming the signal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import PlannerError

INSTALL_HINT = "pip install 'llm-deploy-planner[llamacpp]' (builds llama.cpp from source, about 8 minutes on 2 cores)"
JOB = "planner.measure.quality.runtime:handle"  # what planner.native.Worker runs in the child


def llama_cpp_available() -> bool:
    """Whether llama_cpp can be imported (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def missing_error() -> PlannerError:
    """The error when llama-cpp-python is not installed."""
    return PlannerError(f"planner eval runs models through llama-cpp-python, which is not installed; {INSTALL_HINT}")


def _import():  # type: ignore[no-untyped-def]
    """llama_cpp (in the child process only)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise PlannerError(f"planner eval runs models through llama-cpp-python, which could not be imported ({exc}); "
                           f"{INSTALL_HINT}") from None
    return llama_cpp


# ------------------------------------------------------------------------------------------ the child's side


def handle(state: dict[str, Any], op: str, args: dict[str, Any],
           arrays: list[np.ndarray]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One request in the worker: load, tokenize, logits, gpu_offload."""
    if op == "gpu_offload":
        return {"supported": bool(_import().llama_supports_gpu_offload())}, []
    if op == "load":
        llama_cpp = _import()
        ctx = int(args["ctx"])
        try:
            llm = llama_cpp.Llama(model_path=args["path"], n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True,
                                  n_threads=args.get("threads"), verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise PlannerError(f"{args['path']}: llama.cpp could not load this file: {exc}") from None
        state["llm"] = llm
        model = getattr(llm, "_model", None)
        add = getattr(model, "add_bos_token", None)
        wants = bool(add()) if callable(add) else True
        tok = int(llm.token_bos())
        return {"n_vocab": int(llm.n_vocab()), "bos": tok if wants and tok >= 0 else None}, []
    llm = state["llm"]
    if op == "tokenize":
        toks = llm.tokenize(args["text"].encode("utf-8"), add_bos=False, special=False)
        return {}, [np.asarray(toks, dtype=np.int32)]
    if op == "logits":
        tokens = [int(t) for t in arrays[0]]
        llm.reset()
        llm.eval(tokens)
        return {}, [np.asarray(llm.scores[: len(tokens)], dtype=np.float32)]
    raise ValueError(f"unknown request {op!r}")


# ------------------------------------------------------------------------------------------ the parent's side


def gpu_offload_supported() -> bool:
    """Whether the installed llama-cpp-python can offload layers to a GPU (asked in a child process)."""
    from planner.native import Worker

    if not llama_cpp_available():
        raise missing_error()
    with Worker(JOB) as w:
        return bool(w.call("gpu_offload", doing="asking whether it can offload to a GPU")[0]["supported"])


class LlamaModel:
    """One GGUF file loaded in llama.cpp, in a child process, with logits for every position (logits_all)."""

    def __init__(self, path: Path | str, ctx: int, threads: int | None = None):
        from planner.native import Worker

        if not llama_cpp_available():
            raise missing_error()
        self.path = Path(path)
        self.ctx = ctx
        self.worker = Worker(JOB)
        try:
            info, _ = self.worker.call("load", {"path": str(path), "ctx": ctx, "threads": threads},
                                       doing=f"loading {path}")
        except BaseException:
            self.worker.close()
            raise
        self.n_vocab = int(info["n_vocab"])
        self.bos: int | None = info["bos"]

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens, without BOS."""
        _, (toks,) = self.worker.call("tokenize", {"text": text}, doing=f"tokenizing with {self.path}")
        return [int(t) for t in toks]

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Raw logits [len(tokens), vocab] (float32) for one sequence evaluated from an empty cache (one chunk per
        request: a few tens of MB over the socket, little beside llama.cpp's own time for the chunk)."""
        if len(tokens) > self.ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit a context of {self.ctx}")
        _, (out,) = self.worker.call("logits", {}, [np.asarray(tokens, dtype=np.int32)], doing=f"running {self.path}")
        return out

    def close(self) -> None:
        """Free the model (the child process exits)."""
        self.worker.close()
