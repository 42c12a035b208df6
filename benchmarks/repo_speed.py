"""gradfix at repository scale against TorchFix, Fixit and Ruff: same files, same run.

    python benchmarks/repo_speed.py [--corpus nn,torch] [--skip torchfix,fixit] [--timeout 120]

Corpora: ``torch/nn`` and all of torch's installed Python sources (the torch in
this interpreter's site-packages), copied (``.py`` files only) to a temporary
folder outside any git repository: Fixit skips files that a ``.gitignore`` above
them ignores, and a virtual environment usually is. Every tool gets the same
explicit list of files, run from that folder so paths read ``torch/...``.

gradfix runs from a commit of this repository (``--rev``, default HEAD) unpacked
on ``PYTHONPATH``: what is measured is a known revision, and edits made to the
working tree meanwhile neither change it nor invalidate the warm cache between
the cold and the warm run.

Measured, one after the other on the same machine:

- gradfix check, cold (a fresh cache folder) and warm (the same folder again),
  ``--jobs`` at its default (one worker per core) unless ``--jobs`` is given;
- TorchFix 0.7.0 (``torchfix``, its default jobs), Fixit 2.2.1 (``fixit lint``),
  Ruff (``ruff check --no-cache``, default rules and ``--select ALL``).

The peers are installed into a throwaway virtual environment (``--env``, default
``build/bench-peers``; ``--fresh`` rebuilds it). TorchFix goes in with ``--no-deps``
and its dependencies (flake8, PyYAML, libcst<1.6) explicitly, so pip never
resolves torch; the script refuses an environment that has torch in it.

For each run: wall time, files per second, peak memory as the largest single
process (``ru_maxrss`` of the tool and every process it waited for) and as the
sum over the process tree (sampled every 0.1 s: forked workers share pages, so
this sum overstates), and the wall-time ratio to gradfix cold. A run that does
not finish within ``--timeout`` seconds is stopped and reported as ``> N s``.
Print ``uptime`` beside the table: the machine may be shared.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
PEERS = ["torchfix==0.7.0", "fixit==2.2.1", "ruff"]
# TorchFix 0.7.0's own requirements (its METADATA), installed explicitly beside it.
TORCHFIX_DEPENDENCIES = ["flake8>=3.8.2", "PyYAML", "libcst>=1.5.0,<1.6.0"]
TOOLS = ("gradfix", "torchfix", "fixit", "ruff")


@dataclass
class Measurement:
    tool: str
    corpus: str
    files: int
    wall: float
    timed_out: bool
    exit_code: Optional[int]
    max_process_mb: float
    tree_mb: float
    note: str = ""


# --- the throwaway environment -------------------------------------------------------------------


def peer_environment(env: Path, fresh: bool) -> Path:
    """The venv's bin folder with torchfix, fixit and ruff; built when missing."""
    bin_dir = env / "bin"
    marker = env / ".gradfix-bench-peers"
    wanted = "\n".join(PEERS + TORCHFIX_DEPENDENCIES)
    if fresh or not marker.is_file() or marker.read_text() != wanted:
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(pip + ["--no-deps", PEERS[0]], check=True)
        subprocess.run(pip + TORCHFIX_DEPENDENCIES + PEERS[1:], check=True)
        marker.write_text(wanted)
    has_torch = subprocess.run([str(bin_dir / "python"), "-c", "import importlib.util as u; print(u.find_spec('torch') is not None)"],
                               capture_output=True, text=True, check=True).stdout.strip()
    if has_torch != "False":
        raise SystemExit(f"{env} has torch installed: refusing (delete it and rerun)")
    return bin_dir


def version_of(bin_dir: Path, package: str) -> str:
    code = f"from importlib.metadata import version; print(version({package!r}))"
    done = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "?"


# --- corpora ----------------------------------------------------------------------------------------


def torch_root() -> Path:
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torch is not installed in this interpreter")
    return Path(list(spec.submodule_search_locations)[0])


def torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


def corpus_files(folder: Path, base: Path) -> list[str]:
    found = []
    for current, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        found += [os.path.relpath(os.path.join(current, name), base) for name in sorted(filenames) if name.endswith(".py")]
    return found


def copy_corpus(root: Path, target: Path) -> Path:
    """torch's .py files under ``target/torch``."""
    for path in corpus_files(root, root.parent):
        destination = target / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root.parent / path, destination)
    return target / root.name


def snapshot_gradfix(rev: str, target: Path) -> tuple[Path, str]:
    """gradfix at ``rev`` laid out as installed (gradfix, gradfix.codemods, gradfix.verify); and the commit."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    raw = target / "raw"
    raw.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "gradfix", "codemods", "verify"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(raw)], input=archive, check=True)
    package = target / "site" / "gradfix"
    shutil.move(raw / "gradfix", package)
    shutil.move(raw / "codemods", package / "codemods")
    shutil.move(raw / "verify", package / "verify")
    return target / "site", commit


def count_lines(paths: list[str], base: Path) -> int:
    total = 0
    for path in paths:
        with open(base / path, "rb") as handle:
            total += handle.read().count(b"\n")
    return total


# --- measuring one run -------------------------------------------------------------------------------


def measure(tool: str, corpus: str, command: list[str], files: int, cwd: Path, timeout: float,
            env: Optional[dict] = None) -> Measurement:
    try:
        import psutil
    except ImportError:  # the tree sum is then not measured
        psutil = None
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True, env=env)
    handle = psutil.Process(process.pid) if psutil else None
    status = None
    os.set_blocking(process.stderr.fileno(), False)
    try:
        status, rusage, tree_peak, timed_out, errors = _wait(process, handle, psutil, started, timeout)
    finally:
        if process.returncode is None and status is None:  # interrupted: leave no tool running
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    exit_code = None if timed_out else process.returncode
    note = ""
    if exit_code not in (None, 0, 1):
        tail = errors.decode(errors="replace").strip().splitlines()[-1:] or [""]
        note = f"exit {exit_code}: {tail[0][:100]}"
    return Measurement(tool, corpus, files, wall, timed_out, exit_code, rusage.ru_maxrss / 1024,
                       max(tree_peak, rusage.ru_maxrss * 1024) / (1024 * 1024), note)


def _wait(process, handle, psutil, started: float, timeout: float):
    """Poll until the tool exits (or the timeout), sampling the tree's memory; (status, rusage, peak, timed out, stderr)."""
    stderr_file = process.stderr
    errors = b""
    tree_peak = 0
    timed_out = False
    while True:
        pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if handle is not None:
            try:
                members = [handle] + handle.children(recursive=True)
                tree_peak = max(tree_peak, sum(_rss(member) for member in members))
            except psutil.Error:
                pass
        errors += stderr_file.read() or b""
        if time.perf_counter() - started > timeout:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(process.pid, 0)
            break
        time.sleep(0.1)
    errors += stderr_file.read() or b""
    return status, rusage, tree_peak, timed_out, errors


def _rss(process) -> int:
    try:
        return process.memory_info().rss
    except Exception:
        return 0


# --- the table -------------------------------------------------------------------------------------------


def render(results: list[Measurement]) -> str:
    cold = {m.corpus: m.wall for m in results if m.tool == "gradfix (cold)" and not m.timed_out}
    header = f"{'tool':<24} {'corpus':<8} {'files':>6} {'wall s':>9} {'files/s':>8} {'peak MB':>8} {'tree MB':>8} {'× gradfix':>10}"
    lines = [header, "-" * len(header)]
    for m in results:
        wall = f"> {m.wall:.0f}" if m.timed_out else f"{m.wall:.2f}"
        rate = f"< {m.files / m.wall:.0f}" if m.timed_out else f"{m.files / m.wall:,.0f}"
        base = cold.get(m.corpus)
        ratio = "" if base is None else (f"> {m.wall / base:.1f}" if m.timed_out else f"{m.wall / base:.2f}")
        lines.append(f"{m.tool:<24} {m.corpus:<8} {m.files:>6} {wall:>9} {rate:>8} {m.max_process_mb:>8.0f} "
                     f"{m.tree_mb:>8.0f} {ratio:>10}" + (f"  ({m.note})" if m.note else ""))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="nn,torch", help="nn, torch or both (comma-separated)")
    parser.add_argument("--skip", default="", help=f"tools to leave out, from {', '.join(TOOLS[1:])}")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a run is stopped")
    parser.add_argument("--gradfix-timeout", type=float, default=1800.0, help="seconds before a gradfix run is stopped")
    parser.add_argument("--rev", default="HEAD", help="the gradfix commit to measure")
    parser.add_argument("--jobs", type=int, default=None, help="gradfix --jobs (default: gradfix's own default)")
    parser.add_argument("--env", type=Path, default=ROOT / "build" / "bench-peers", help="the peers' throwaway venv")
    parser.add_argument("--fresh", action="store_true", help="rebuild the peers' venv")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that temporary folders are removed
    corpora = [c.strip() for c in args.corpus.split(",") if c.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = [c for c in corpora if c not in ("nn", "torch")] + [s for s in skip if s not in TOOLS[1:]]
    if unknown:
        parser.error(f"unknown corpus or tool: {', '.join(unknown)}")

    bin_dir = peer_environment(args.env, args.fresh) if {"torchfix", "fixit", "ruff"} - skip else None
    work = Path(tempfile.mkdtemp(prefix="gradfix-bench-"))
    try:
        return run_all(args, corpora, skip, bin_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(args, corpora: list[str], skip: set[str], bin_dir: Optional[Path], work: Path) -> int:
    root = copy_corpus(torch_root(), work / "corpus")
    base = root.parent
    source, commit = snapshot_gradfix(args.rev, work / "gradfix-src")
    print(f"gradfix at {commit}", flush=True)
    gradfix_env = {**os.environ, "PYTHONPATH": str(source)}
    gradfix = [sys.executable, "-m", "gradfix", "check", "--exit-zero"] + (["--jobs", str(args.jobs)] if args.jobs else [])
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min); "
          f"{os.cpu_count()} cores", flush=True)
    if bin_dir is not None:
        print("peers: " + ", ".join(f"{p} {version_of(bin_dir, p)}" for p in ("torchfix", "fixit", "ruff", "libcst")),
              flush=True)

    results: list[Measurement] = []
    for corpus in corpora:
        folder = root / "nn" if corpus == "nn" else root
        paths = corpus_files(folder, base)
        print(f"corpus {corpus}: {len(paths)} files, {count_lines(paths, base):,} lines (torch {torch_version()})",
              flush=True)
        with tempfile.TemporaryDirectory(prefix="gradfix-bench-cache-") as cache_dir:
            env = {**gradfix_env, "GRADFIX_CACHE_DIR": cache_dir}
            runs = [("gradfix (cold)", gradfix + paths, env), ("gradfix (warm)", gradfix + paths, env)]
            if bin_dir is not None:
                if "torchfix" not in skip:
                    runs.append(("torchfix", [str(bin_dir / "torchfix"), *paths], None))
                if "fixit" not in skip:
                    runs.append(("fixit lint", [str(bin_dir / "fixit"), "lint", *paths], None))
                if "ruff" not in skip:
                    ruff = [str(bin_dir / "ruff"), "check", "--no-cache", "--exit-zero", "--quiet"]
                    runs.append(("ruff (default rules)", ruff + paths, None))
                    runs.append(("ruff --select ALL", ruff + ["--select", "ALL"] + paths, None))
            for tool, command, tool_env in runs:
                limit = args.gradfix_timeout if tool.startswith("gradfix") else args.timeout
                measurement = measure(tool, corpus, command, len(paths), base, limit, tool_env)
                results.append(measurement)
                print(f"  {tool}: {'> %.0f' % limit if measurement.timed_out else '%.2f' % measurement.wall} s",
                      flush=True)
    print()
    print(render(results))
    print(f"\nload after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
