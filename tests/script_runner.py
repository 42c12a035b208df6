"""Run fixture scripts under torch and report how each ended, as JSON on stdout.

    python tests/script_runner.py a.py b.py ...
    python tests/script_runner.py --summary a.py b.py ...   (one readable line per script)

torch is imported once; each script runs in a forked child, so scripts stay
isolated while the suite pays the import only once. For every script it
reports whether it raised (type and first line of the message) and how many
times ``backward`` ran, so tests can tell "ran and backpropagated" from "ran".
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback

import torch

TIMEOUT_SECONDS = 60


def _run_child(path: str, write_fd: int) -> None:
    calls = {"backward": 0}
    original_autograd_backward = torch.autograd.backward

    # Tensor.backward() goes through torch.autograd.backward, so one patch counts both.
    def counting_autograd_backward(*args, **kwargs):
        calls["backward"] += 1
        return original_autograd_backward(*args, **kwargs)

    torch.autograd.backward = counting_autograd_backward  # type: ignore[assignment]
    torch.manual_seed(0)
    result = {"path": path, "status": "ok", "exception": None, "message": None}
    try:
        runpy.run_path(path, run_name="__main__")
    except BaseException as error:  # noqa: BLE001 - the point is to report any ending
        result["status"] = "raised"
        result["exception"] = type(error).__name__
        text = str(error).strip()
        result["message"] = text.splitlines()[0] if text else ""
        result["traceback"] = traceback.format_exc(limit=-3)
    result["backward_calls"] = calls["backward"]
    with os.fdopen(write_fd, "w") as out:
        json.dump(result, out)


def run(path: str) -> dict:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)  # scripts' prints would corrupt our JSON
            _run_child(path, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    import signal

    signal.alarm(TIMEOUT_SECONDS)
    try:
        with os.fdopen(read_fd) as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
    finally:
        signal.alarm(0)
    if not data:
        return {"path": path, "status": "crashed", "exception": None, "message": "child died", "backward_calls": 0}
    return json.loads(data)


def main(argv: list[str]) -> int:
    summary = "--summary" in argv
    paths = [a for a in argv if a != "--summary"]
    results = [run(path) for path in paths]
    if not summary:
        json.dump(results, sys.stdout)
        return 0
    width = max((len(r["path"]) for r in results), default=0)
    for r in results:
        if r["status"] == "ok":
            outcome = f"runs, backward() called {r['backward_calls']}x"
        else:
            outcome = f"{r['status']}: {r['exception']}: {(r['message'] or '')[:80]}"
        print(f"{r['path']:<{width}}  {outcome}")
    ok = sum(r["status"] == "ok" and r["backward_calls"] > 0 for r in results)
    print(f"{ok} of {len(results)} programs ran forward and backward without error")
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
