"""The parent's side of the worker: start it once, send it jobs, read answers.

Starting the worker pays the interpreter start and ``import torch`` once per
verification session, however many programs it then runs (each in a child
forked from the worker).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

WORKER = Path(__file__).with_name("worker.py")


class WorkerError(Exception):
    """The worker could not start (no torch in that interpreter, ...) or stopped answering."""


class WorkerSession:
    def __init__(self, python: Optional[str] = None) -> None:
        self.python = python or sys.executable
        self.scratch = tempfile.TemporaryDirectory(prefix="gradfix-verify-")
        self._stderr = open(Path(self.scratch.name) / "worker-stderr.txt", "w+")
        try:
            self._process = subprocess.Popen(
                [self.python, str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                bufsize=1,
            )
        except OSError as error:
            raise WorkerError(f"cannot start {self.python}: {error}") from None
        # The worker imports torch while the caller goes on (making the fix, say);
        # the first request, or a question about the worker, waits for it.
        self._ready: Optional[dict[str, Any]] = None
        self._ids = itertools.count()

    def _wait_ready(self) -> dict[str, Any]:
        if self._ready is None:
            ready = self._read_line()
            if not ready.get("ready"):
                raise WorkerError(f"worker did not start: {ready}")
            self._ready = ready
        return self._ready

    @property
    def torch_version(self) -> str:
        return str(self._wait_ready().get("torch", "?"))

    @property
    def cuda_available(self) -> bool:
        return bool(self._wait_ready().get("cuda"))

    def start(self) -> "WorkerSession":
        """Wait until the worker has imported torch; raises WorkerError if it cannot."""
        self._wait_ready()
        return self

    def _read_line(self) -> dict[str, Any]:
        line = self._process.stdout.readline() if self._process.stdout else ""
        if not line:
            self._stderr.seek(0)
            tail = self._stderr.read()[-1500:].strip()
            raise WorkerError(f"the verifier's worker ({self.python}) stopped: {tail or 'no output'}")
        return json.loads(line)

    def new_dir(self) -> str:
        return tempfile.mkdtemp(dir=self.scratch.name)

    def request(self, job: dict[str, Any]) -> dict[str, Any]:
        self._wait_ready()
        job = dict(job, id=next(self._ids))
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(job) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            raise WorkerError("the verifier's worker is gone") from None
        return self._read_line()

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                if self._process.stdin:
                    self._process.stdin.close()
                self._process.wait(timeout=10)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self._process.kill()
        self._stderr.close()
        self.scratch.cleanup()

    def __enter__(self) -> "WorkerSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
