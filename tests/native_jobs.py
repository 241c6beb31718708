"""Jobs that tests run in planner.native's child process: a deliberate crash by signal, plain answers, and the
llama-cpp-python calls the llama.cpp tests compare against (so a crash of llama.cpp fails a test, not pytest)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import numpy as np

from planner.errors import InvalidInputError, PlannerError

JOB = "native_jobs:handle"  # importable in the child: spawn passes the parent's sys.path (pytest puts tests/ on it)


def handle(state: dict[str, Any], op: str, args: dict[str, Any],
           arrays: list[np.ndarray]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Test requests: echo, crash (a real signal in the child), fail, invalid, bug, greedy, logprobs."""
    if op == "echo":
        state["calls"] = state.get("calls", 0) + 1
        return {"args": args, "calls": state["calls"]}, [a * 2 for a in arrays]
    if op == "crash":
        print("GGML_ASSERT(test) failed: deliberate crash for a test", file=sys.stderr, flush=True)
        os.kill(os.getpid(), getattr(signal, args["signal"]))
        raise AssertionError("still alive after the signal")
    if op == "time":  # stands in for planner.measure.speed.llamacpp's timing job: llama.cpp dies of an illegal instruction
        os.kill(os.getpid(), signal.SIGILL)
        raise AssertionError("still alive after the signal")
    if op == "sleep":  # a long request (Ctrl-C arrives in the parent while the child works)
        import time

        time.sleep(float(args["s"]))
        return {}, []
    if op == "fail":
        raise PlannerError("a domain error in the child")
    if op == "invalid":
        raise InvalidInputError("a bad file in the child")
    if op == "bug":
        raise KeyError("no such thing")
    if op == "greedy":  # llama-cpp-python's own generation: n tokens after a prompt, greedily
        import itertools

        import llama_cpp

        llm = llama_cpp.Llama(model_path=args["path"], n_ctx=128, verbose=False)
        toks = llm.tokenize(args["prompt"].encode(), add_bos=False)
        out = list(itertools.islice(llm.generate(toks, top_k=1, temp=0.0, repeat_penalty=1.0), int(args["n"])))
        text = llm.detokenize(out).decode("utf-8", "replace")
        llm.close()
        return {"tokens": [int(t) for t in out], "text": text}, []
    if op == "logprobs":  # llama-cpp-python's own evaluation and log-softmax of one chunk (default batch settings)
        import llama_cpp

        if "llm" not in state:
            state["llm"] = llama_cpp.Llama(model_path=args["path"], n_ctx=int(args["ctx"]), logits_all=True,
                                           verbose=False)
        llm = state["llm"]
        chunk = [int(t) for t in arrays[0]]
        llm.reset()
        llm.eval(chunk)
        return {}, [np.asarray(llama_cpp.Llama.logits_to_logprobs(np.array(llm.scores[:len(chunk)])), dtype=np.float32)]
    if op == "tokens_logits":  # llama.cpp's tokens of a text and its logits over them (any GGUF it loads)
        import llama_cpp

        llm = llama_cpp.Llama(model_path=args["path"], n_ctx=int(args.get("ctx", 256)), logits_all=True, verbose=False)
        toks = llm.tokenize(args["text"].encode(), add_bos=False, special=False)
        llm.eval(toks)
        logits = np.asarray(llm.scores[: len(toks)], dtype=np.float32)
        llm.close()
        return {}, [np.asarray(toks, dtype=np.int32), logits]
    if op == "logits":  # llama.cpp's logits over given token ids, for each GGUF in args["paths"] (one load each)
        import llama_cpp

        toks = [int(t) for t in arrays[0]]
        out = []
        for path in args["paths"]:
            llm = llama_cpp.Llama(model_path=path, n_ctx=int(args.get("ctx", 64)), logits_all=True, verbose=False)
            llm.eval(toks)
            out.append(np.asarray(llm.scores[: len(toks)], dtype=np.float32))
            llm.close()
        return {}, out
    if op == "llama_quantize":  # llama.cpp's own quantizer (what llama-quantize runs): F16 GGUF -> file type
        import ctypes

        import llama_cpp

        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = int(args["ftype"])
        p.nthread = 1
        rc = llama_cpp.llama_model_quantize(args["src"].encode(), args["dst"].encode(), ctypes.byref(p))
        return {"rc": int(rc)}, []
    if op == "ggml_quantize":  # ggml's own row quantizer (ggml_quantize_chunk, what llama-quantize calls per tensor)
        import ctypes
        from pathlib import Path

        import llama_cpp

        libs = sorted((Path(llama_cpp.__file__).parent / "lib").glob("*ggml-base.*"))  # .so, .dylib or .dll
        if not libs:
            raise PlannerError("llama-cpp-python ships no ggml-base library beside it: cannot call ggml_quantize_chunk")
        lib = ctypes.CDLL(str(libs[0]))
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        x = np.ascontiguousarray(arrays[0], dtype=np.float32)
        dst = np.zeros(x.size * 4, dtype=np.uint8)
        n = lib.ggml_quantize_chunk(int(args["type"]), x.ctypes.data, dst.ctypes.data, 0, x.shape[0], x.shape[1], None)
        return {}, [dst[:n].reshape(x.shape[0], -1)]
    raise ValueError(op)
