"""llama.cpp (through llama-cpp-python) as the evaluation runtime: load a GGUF file, tokenize, return logits.

The only module of planner.evaluation that imports llama_cpp, and only when a model is opened."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from planner.errors import PlannerError

INSTALL_HINT = "pip install 'llm-deploy-planner[llamacpp]' (builds llama.cpp from source, about 8 minutes on 2 cores)"


def llama_cpp_available() -> bool:
    """Whether llama_cpp can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _import():  # type: ignore[no-untyped-def]
    try:
        import llama_cpp
    except ImportError as exc:
        raise PlannerError(f"planner eval runs models through llama-cpp-python, which is not installed ({exc}); "
                           f"{INSTALL_HINT}") from None
    return llama_cpp


@contextlib.contextmanager
def _quiet_stderr():  # type: ignore[no-untyped-def]
    """Silence llama.cpp's C-level log lines on fd 2 while a model loads (verbose=False misses a few)."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


class LlamaModel:
    """One GGUF file loaded in llama.cpp with logits for every position (logits_all)."""

    def __init__(self, path: Path | str, ctx: int, threads: int | None = None):
        llama_cpp = _import()
        self.path = Path(path)
        self.ctx = ctx
        try:
            with _quiet_stderr():
                self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True,
                                           n_threads=threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise PlannerError(f"{path}: llama.cpp could not load this file: {exc}") from None
        self.n_vocab = int(self.llm.n_vocab())

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens, without BOS."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    @property
    def bos(self) -> int | None:
        """The BOS token id when the model wants one at the start of a sequence, else None."""
        model = getattr(self.llm, "_model", None)
        add = getattr(model, "add_bos_token", None)
        wants = bool(add()) if callable(add) else True
        tok = int(self.llm.token_bos())
        return tok if wants and tok >= 0 else None

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Raw logits [len(tokens), vocab] (float32) for one sequence evaluated from an empty cache."""
        if len(tokens) > self.ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit a context of {self.ctx}")
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32, copy=True)

    def close(self) -> None:
        """Free the model."""
        close = getattr(self.llm, "close", None)
        if callable(close):
            close()
