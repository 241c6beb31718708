"""Native libraries (llama.cpp through llama-cpp-python) run in a child process, so that a crash inside them
(SIGILL from a CPU instruction this machine cannot run, SIGABRT from a failed check, SIGSEGV) becomes one clear
PlannerError naming the signal and what to do, and the planner keeps what it measured before.

The child is a fresh interpreter (subprocess; a fork of a parent that may run threads can deadlock), given the
parent's import path; it imports the job module the parent names and answers requests over a socket pair. Each
message is a length-prefixed JSON header followed by the raw bytes of the numpy arrays it lists (dtype and shape);
nothing crossing the socket is pickled. The child's stderr goes to a scratch file, so llama.cpp's own log lines stay
off the terminal and its last words before a crash can be quoted in the error.

A job module defines `handle(state, op, args, arrays) -> (result, arrays)`: `state` is a dict that lives as long
as the child (a loaded model), `args`/`result` are JSON objects, `arrays` lists of numpy arrays.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import InvalidInputError, PlannerError

# How long the parent waits for a child that was asked to exit (or whose pipe closed) before killing it (assumed:
# freeing a loaded model takes well under a second).
EXIT_WAIT_S = 5.0
_LEN = struct.Struct("<Q")  # each frame on the socket: its length, then its bytes
LAST_WORDS_CHARS = 240  # at most this much of the child's stderr is quoted in an error (one readable line)

PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
REBUILD_HINT = (f'rebuild it portably: CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall '
                "--no-cache-dir --no-deps llama-cpp-python")  # the README's command

# What each signal most likely means when it kills a native runtime, and what the user can do about it.
_ADVICE = {
    "SIGILL": "the {lib} build uses CPU instructions this machine cannot run (built with -march=native on another "
              "CPU, or AVX-512/AMX the VM does not expose); " + REBUILD_HINT,
    "SIGABRT": "{lib} stopped on a failed internal check; the file may be one this {lib} version does not support, "
               "or the build is broken (" + REBUILD_HINT + ")",
    "SIGSEGV": "{lib} read memory it does not own; the file may be truncated or corrupt, or the build is broken ("
               + REBUILD_HINT + ")",
    "SIGBUS": "{lib} could not read the memory-mapped file; it may have been truncated or removed while in use, or the "
              "disk is full",
    "SIGFPE": "{lib} hit an arithmetic fault; the file may hold values this {lib} version cannot handle",
    "SIGKILL": "the process was killed from outside, most often by the kernel's out-of-memory killer: free memory or "
               "use a smaller model or context",
}


class NativeCrash(PlannerError):
    """A native runtime's child process died (a signal or an unexpected exit) while doing a job; exit code 1."""

    def __init__(self, message: str, signal_name: str | None = None):
        super().__init__(message)
        self.signal_name = signal_name


def signal_text(signum: int) -> str:
    """'SIGILL (illegal instruction)' for a signal number; the bare number for one Python does not know."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    desc = signal.strsignal(signum) or ""
    return f"{name} ({desc.lower()})" if desc else name


def crash_message(lib: str, exitcode: int | None, doing: str, last_words: str = "") -> tuple[str, str | None]:
    """(one-line message, signal name or None) for a child that died with `exitcode` (negative: a signal)."""
    said = f" ({lib}'s last message: {last_words})" if last_words else ""
    if exitcode is not None and exitcode < 0:
        try:
            name: str | None = signal.Signals(-exitcode).name
        except ValueError:
            name = None
        advice = _ADVICE.get(name or "", "the build may be broken ({hint})").format(lib=lib, hint=REBUILD_HINT)
        return f"{lib} crashed with {signal_text(-exitcode)} while {doing}{said}: {advice}", name
    code = "no exit code" if exitcode is None else f"exit code {exitcode}"
    return f"{lib} ended its process unexpectedly ({code}) while {doing}{said}", None


def _last_words(path: Path) -> str:
    """The most telling line of the child's stderr: a failed check or error if there is one, else the last line."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 64 * 1024))  # the end is what explains a crash
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    telling = [ln for ln in lines if any(k in ln for k in ("GGML_ASSERT", "GGML_ABORT", "error", "Error", "failed"))]
    line = (telling or lines or [""])[-1]
    return line if len(line) <= LAST_WORDS_CHARS else line[:LAST_WORDS_CHARS] + "..."


# ------------------------------------------------------------------------------------------ the wire format


def _send_frame(sock: socket.socket, data: bytes | memoryview) -> None:
    sock.sendall(_LEN.pack(len(data)))
    if len(data):
        sock.sendall(data)


def _recv_into(sock: socket.socket, buf: memoryview) -> None:
    got = 0
    while got < len(buf):
        n = sock.recv_into(buf[got:])
        if n == 0:
            raise EOFError("the other side closed the connection")
        got += n


def _recv_frame(sock: socket.socket) -> bytearray:
    head = bytearray(_LEN.size)
    _recv_into(sock, memoryview(head))
    (n,) = _LEN.unpack(head)
    data = bytearray(n)
    _recv_into(sock, memoryview(data))
    return data


def _send(sock: socket.socket, header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> None:
    """A JSON header naming each array's dtype and shape, then each array's bytes."""
    arrs = [np.ascontiguousarray(a) for a in arrays]
    header = {**header, "arrays": [[a.dtype.str, list(a.shape)] for a in arrs]}
    _send_frame(sock, json.dumps(header).encode())
    for a in arrs:
        _send_frame(sock, memoryview(a.reshape(-1)).cast("B"))


def _recv(sock: socket.socket) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The inverse of _send; arrays are received straight into their buffers, and only plain number dtypes are
    accepted (nothing from the wire becomes an object)."""
    header = json.loads(_recv_frame(sock))
    arrays = []
    for dtype, shape in header.pop("arrays", []):
        dt = np.dtype(dtype)
        if dt.kind not in "biuf":
            raise ValueError(f"unexpected array dtype {dtype} from the other side")
        head = bytearray(_LEN.size)
        _recv_into(sock, memoryview(head))
        (n,) = _LEN.unpack(head)
        out = np.empty(shape, dtype=dt)
        if n != out.nbytes:
            raise ValueError(f"array of {n} bytes where {out.nbytes} were announced")
        _recv_into(sock, memoryview(out.reshape(-1)).cast("B"))
        arrays.append(out)
    return header, arrays


# ------------------------------------------------------------------------------------------ the child


def _child_main(fd: int, job: str) -> None:
    """The child's loop (stderr is already the log file): one request at a time until asked to exit or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this process
    sock = socket.socket(fileno=fd)
    module, _, func = job.partition(":")
    handle = getattr(importlib.import_module(module), func or "handle")
    state: dict[str, Any] = {}
    while True:
        try:
            header, arrays = _recv(sock)
        except (EOFError, OSError):
            return
        if header.get("op") == "exit":
            return
        try:
            result, out = handle(state, header["op"], header.get("args") or {}, arrays)
        except PlannerError as exc:
            _send(sock, {"ok": False, "error": str(exc), "invalid_input": isinstance(exc, InvalidInputError)})
            continue
        except Exception as exc:  # a bug in the job: the parent raises it (exit 3) with the child's words
            _send(sock, {"ok": False, "bug": f"{type(exc).__name__}: {exc}"})
            continue
        _send(sock, {"ok": True, "result": result}, out)


# The child: a fresh interpreter (not a fork of a parent that may run threads), given the parent's import path so it
# imports the same planner (and a test's job module), and nothing of the parent's __main__.
_CHILD = ("import json, sys; sys.path[:0] = json.loads(sys.argv[3]); from planner.native import _child_main; "
          "_child_main(int(sys.argv[1]), sys.argv[2])")


# ------------------------------------------------------------------------------------------ the parent


class Worker:
    """A child process running one job module; `call` sends one request and returns its answer, or raises
    NativeCrash when the child died doing it. Use as a context manager (or call close())."""

    def __init__(self, job: str, lib: str = "llama.cpp"):
        import subprocess
        import sys

        self.job = job
        self.lib = lib
        self.busy = False
        fd, log = tempfile.mkstemp(prefix="planner-native-", suffix=".log")
        self.log = Path(log)
        self.sock, child = socket.socketpair()
        path = json.dumps([p or os.getcwd() for p in sys.path])
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(child.fileno()), job, path],
                                         pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=fd)
        except BaseException:
            self.sock.close()
            self.log.unlink(missing_ok=True)
            raise
        finally:
            child.close()  # the child's end stays open only in the child: EOF here once it is gone
            os.close(fd)

    def call(self, op: str, args: dict[str, Any] | None = None, arrays: Sequence[np.ndarray] = (), *,
             doing: str) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Run `op` in the child; `doing` ("loading X") completes the crash message."""
        self.busy = True  # until the answer is in: a close() before then (Ctrl-C) ends the child at once
        try:
            _send(self.sock, {"op": op, "args": args or {}}, arrays)
            header, out = _recv(self.sock)
        except (EOFError, OSError):
            raise self._crashed(doing) from None
        self.busy = False
        if header.get("ok"):
            return header.get("result") or {}, out
        if "bug" in header:
            raise RuntimeError(f"{self.lib} worker failed while {doing}: {header['bug']}")
        err = InvalidInputError if header.get("invalid_input") else PlannerError
        raise err(header.get("error", f"{self.lib} failed while {doing}"))

    def _crashed(self, doing: str) -> NativeCrash:
        code = self._wait()
        message, name = crash_message(self.lib, code, doing, _last_words(self.log))
        self.close()
        return NativeCrash(message, name)

    def _wait(self) -> int | None:
        """The child's exit status, ending it if it does not exit in time."""
        import subprocess

        try:
            return self.proc.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def close(self) -> None:
        """Ask the child to exit (end it if it is still working on an interrupted request, or does not exit), and
        remove its log."""
        if self.proc.poll() is None:
            if self.busy:
                self.proc.kill()
            else:
                try:
                    _send(self.sock, {"op": "exit"})
                except OSError:
                    pass
            self._wait()
        self.sock.close()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
