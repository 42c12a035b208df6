"""gradfix's main job on the bundled fixtures, end to end (``make demo``).

Copies the fixtures' original programs to build/demo, runs ``gradfix check``,
prints the diff of ``gradfix fix --diff --unsafe-fixes``, applies the fix,
runs every program under torch before and after, and proves each rewrite with
the verifier (``gradfix verify``'s checks: runs, forward matches, gradients
present, gradients correct). Exit 0 when every rewritten program verifies and
every program gradfix left alone behaves as before.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "build" / "demo"
RUNNER = ROOT / "tests" / "script_runner.py"


def gradfix(*args: str) -> int:
    command = [sys.executable, "-m", "gradfix", *args]
    print(f"\n$ gradfix {' '.join(args)}", flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def run_programs(paths: list[Path]) -> dict[str, dict]:
    completed = subprocess.run(
        [sys.executable, str(RUNNER), *map(str, paths)], capture_output=True, text=True, check=True
    )
    return {r["path"]: r for r in json.loads(completed.stdout)}


def describe(result: dict) -> str:
    if result["status"] == "ok":
        return f"runs, backward x{result['backward_calls']}"
    message = result["message"] or ""
    for known, short in (
        ("a leaf Variable that requires grad", "leaf Variable used in an in-place operation"),
        ("one of the variables needed for gradient", "saved tensor modified by an inplace operation"),
    ):
        if message.startswith(known):
            message = short
    return f"{result['exception']}: {message[:50]}"


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    originals = sorted(p for p in (ROOT / "fixtures").glob("GF*/*.py") if not p.name.endswith(".fixed.py"))
    copies = []
    for path in originals:
        target = DEMO / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copies.append(target)
    relative = str(DEMO.relative_to(ROOT))
    before_text = {p: p.read_bytes() for p in copies}
    before = run_programs(copies)

    gradfix("check", relative)
    gradfix("fix", "--diff", "--unsafe-fixes", relative)
    gradfix("fix", "--unsafe-fixes", relative)

    after = run_programs(copies)
    print("\nEvery program, run under torch before and after `gradfix fix --unsafe-fixes`:\n")
    width = max(len(str(p.relative_to(DEMO))) for p in copies)
    failures = 0
    for path in copies:
        key = str(path)
        changed = path.read_bytes() != before_text[path]
        if changed:
            good = after[key]["status"] == "ok" and after[key]["backward_calls"] > 0
            verdict = ("fixed" if before[key]["status"] != "ok" else "rewritten") if good else "STILL FAILS"
        else:
            good = after[key]["status"] == before[key]["status"]
            verdict = "unchanged"
        failures += not good
        print(f"  {str(path.relative_to(DEMO)):<{width}}  {verdict:<11} {describe(before[key])}  ->  {describe(after[key])}")
    changed = [p for p in copies if p.read_bytes() != before_text[p]]
    print(f"\nEach rewrite proved against its original (gradfix verify, CPU):\n")
    from gradfix.verify import Program, WorkerSession, verify

    with WorkerSession() as session:
        for path in changed:
            original = Program(path, source=before_text[path].decode("utf-8"))
            verdict = verify(original, Program(path), session=session)
            failures += not verdict.verified
            print(f"  {str(path.relative_to(DEMO)):<{width}}  {verdict.headline()}  ({verdict.seconds:.2f}s)")
    print(f"\n{len(changed)} programs rewritten and verified; {failures} problem(s).")
    failures += trace_demo(width)
    return 1 if failures else 0


def trace_demo(width: int) -> int:
    """`gradfix trace` on the programs of fixtures/trace/, then `fix --from-trace` and verify."""
    from gradfix.verify import Program, WorkerSession, verify

    folder = DEMO / "trace"
    folder.mkdir(parents=True, exist_ok=True)
    programs = sorted((ROOT / "fixtures" / "trace").glob("*.py"))
    for path in programs:
        shutil.copyfile(path, folder / path.name)
    print("\n$ gradfix trace build/demo/trace/saved_output_modified.py   (the other programs: the table below)", flush=True)
    subprocess.run([sys.executable, "-m", "gradfix", "trace", "--output", "trace.json", "saved_output_modified.py"],
                   cwd=folder, stderr=subprocess.DEVNULL)
    print("\nEvery trace program: the line trace names, then `gradfix fix --from-trace` and gradfix verify:\n")
    problems = 0
    with WorkerSession() as session:
        for path in programs:
            copy = folder / path.name
            trace_file = f"{path.stem}.trace.json"
            completed = subprocess.run(
                [sys.executable, "-m", "gradfix", "trace", "--format", "json", "--output", trace_file, path.name],
                cwd=folder, capture_output=True, text=True,
            )
            findings = json.loads(completed.stdout or "[]")
            if not findings:
                problems += 1
                print(f"  {path.name:<{width}}  NOTHING TRACED")
                continue
            first = findings[0]
            named = f"line {first['line']} {first['code']} [{first['trace']['kind']}]"
            flags = ["--unsafe-fixes"] if "# fix: --unsafe-fixes" in path.read_text() else []
            subprocess.run([sys.executable, "-m", "gradfix", "fix", "--from-trace", trace_file, *flags],
                           cwd=folder, capture_output=True)
            if copy.read_bytes() == path.read_bytes():
                outcome = "display-only" if first["fix_safety"] == "display-only" else "NOT FIXED"
                problems += outcome != "display-only"
            else:
                verdict = verify(Program(path), Program(copy), session=session)
                outcome = f"fixed, {verdict.headline()}"
                problems += not verdict.verified
            print(f"  {path.name:<{width}}  {named:<40} {outcome}")
    print(f"\n{len(programs)} traced programs; {problems} problem(s).")
    return problems


if __name__ == "__main__":
    raise SystemExit(main())
