"""A stand-in for llama.cpp in eval tests: logits from a fixed random table, plus noise per format (file stem)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fake_runtime(noise: dict[str, float], n_vocab: int = 300) -> type:
    """A class opened like planner.measure.quality.runtime.LlamaModel(path, ctx) whose 'quantized' files are the F16
    table plus Gaussian noise of `noise[format]` (the file's stem), so the quality order is set by the test."""

    class Fake:
        bos = None

        def __init__(self, path: Path | str, ctx: int):
            self.n_vocab = n_vocab
            self.fmt = Path(path).stem
            self.table = np.random.default_rng(0).standard_normal((n_vocab, n_vocab)) * 3

        def tokenize(self, text: str) -> list[int]:
            return list(text.encode())

        def logits(self, tokens: list[int]) -> np.ndarray:
            base = self.table[np.asarray(tokens)]
            return base + np.random.default_rng(len(tokens)).standard_normal(base.shape) * noise[self.fmt]

        def close(self) -> None:
            pass

    return Fake
