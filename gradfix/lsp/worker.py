"""A separate process for whole-buffer work, so that it never holds the server's GIL.

The engine costs about 1.5 ms per line, all of it Python: a whole-file lint of a
long buffer in a thread of the server would slow every other thread (the
protocol, the fast lane) for seconds. The server runs such work here instead:
``python -m gradfix.lsp.worker`` reads ``(function, args)`` pickles from stdin and
writes ``(ok, result)`` pickles to stdout, one at a time. Only the server's own
functions are sent, over a pipe to its own child.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO, Callable, Optional

_HEADER = struct.Struct("!Q")


def _write(stream: BinaryIO, payload: Any) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the other end closed the pipe")
    (length,) = _HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("the other end closed the pipe")
    return pickle.loads(data)


class WorkerCrashed(RuntimeError):
    """The worker process died during a call."""


class Worker:
    """The server's side: one child process, restarted when it dies. Calls are serialised."""

    def __init__(self, niceness: int = 0) -> None:
        """``niceness``: how much lower the process's CPU priority is (background work yields to the editor)."""
        self.niceness = niceness
        self._process: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        self.closed = False

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "gradfix.lsp.worker", str(self.niceness)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self._process

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.closed:
            raise WorkerCrashed("the gradfix worker process was closed")
        with self._lock:
            process = self._ensure()
            try:
                _write(process.stdin, (fn, args))  # type: ignore[arg-type]
                ok, result = _read(process.stdout)  # type: ignore[arg-type]
            except (EOFError, OSError, pickle.PickleError) as error:
                self._kill()
                raise WorkerCrashed(f"the gradfix worker process failed: {error}") from None
        if not ok:
            raise RuntimeError(result)
        return result

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def close(self) -> None:
        self.closed = True
        process = self._process
        self._process = None
        if process is not None and process.poll() is None:
            try:
                process.stdin.close()  # type: ignore[union-attr]
                process.wait(timeout=2)
            except Exception:
                process.kill()


def main() -> None:
    niceness = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if niceness and hasattr(os, "nice"):
        try:
            os.nice(niceness)
        except OSError:  # pragma: no cover - not permitted: run at normal priority
            pass
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the pipe
    # Every job is a function of gradfix.lsp.analysis: import the engine now (a second or
    # more), not when the first job, maybe one a person waits for, arrives.
    import gradfix.lsp.analysis  # noqa: F401
    while True:
        try:
            fn, args = _read(stdin)
        except EOFError:
            return
        try:
            reply = (True, fn(*args))
        except BaseException as error:  # noqa: BLE001 - reported to the server
            reply = (False, f"{type(error).__name__}: {error}")
        _write(stdout, reply)


if __name__ == "__main__":
    main()
