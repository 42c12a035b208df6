"""gradfix.lsp.worker: the process that runs whole-buffer work for the language server."""

from __future__ import annotations

import os

import pytest

from gradfix.lsp.analysis import exact_lint
from gradfix.lsp.settings import LintSettings
from gradfix.lsp.worker import Worker, WorkerCrashed

SOURCE = "import torch\n\n\ndef f(x):\n    y = torch.sigmoid(x)\n    y.mul_(2)\n    return y\n"


def test_calls_errors_and_a_crash_are_survived():
    worker = Worker(niceness=5)
    try:
        outcome = worker.call(exact_lint, 3, SOURCE, "f.py", LintSettings())
        assert outcome.version == 3 and [f.code for f in outcome.findings] == ["GF102"]
        assert worker.call(exact_lint, 4, SOURCE + "(", "f.py", LintSettings()).syntax_error is not None
        with pytest.raises(RuntimeError, match="ValueError"):
            worker.call(int, "not a number")
        with pytest.raises(WorkerCrashed):
            worker.call(os._exit, 3)  # the process dies mid-call
        assert worker.call(len, "again") == 5  # a new process
    finally:
        worker.close()
    with pytest.raises(WorkerCrashed):
        worker.call(len, "closed")
