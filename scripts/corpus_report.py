"""Run gradfix's engine over a tree of real code and tabulate what it finds.

    python scripts/corpus_report.py [ROOT ...] [--jobs N] [--json OUT] [--fix]

ROOT defaults to the installed torch package. For every file: parsed or not,
findings per rule and fix safety, and findings that a context silences
(no_grad, initializer, optimizer step, ...), counted per context. A crash of
the engine on any file is reported and makes the exit status 1.

With --fix it also applies every fix (safe and unsafe) in memory, and checks
that the result parses and that fixing it again changes nothing; files where
either fails are listed and make the exit status 1. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path


def _check(path: str, fix: bool = False) -> dict:
    started = time.perf_counter()
    result = _check_file(path)
    if fix and result["status"] == "ok" and result["findings"]:
        result.update(_fix_file(path))
    result["seconds"] = time.perf_counter() - started
    return result


def _fix_file(path: str) -> dict:
    import libcst as cst

    from gradfix.codemods import fix_source

    source = Path(path).read_bytes().decode("utf-8")
    try:
        first = fix_source(source, path, unsafe_fixes=True)
        cst.parse_module(first.source)
        second = fix_source(first.source, path, unsafe_fixes=True)
    except Exception:  # noqa: BLE001
        return {"fix": "crash", "fix_detail": traceback.format_exc()}
    if second.source != first.source:
        return {"fix": "not-idempotent", "fix_detail": f"second pass applied {second.applied}"}
    return {"fix": "ok", "fixes_applied": sum(first.applied.values()), "fix_errors": first.errors}


def _check_file(path: str) -> dict:
    from gradfix.codemods import SourceSyntaxError, check_source

    try:
        source = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        return {"path": path, "status": "undecodable", "detail": str(error)}
    try:
        findings = check_source(source, path, keep_silenced=True)
    except SourceSyntaxError as error:
        return {"path": path, "status": "syntax-error", "detail": f"{error.line}:{error.col} {error.message}"}
    except Exception:  # noqa: BLE001 - a crash is exactly what this script looks for
        return {"path": path, "status": "crash", "detail": traceback.format_exc()}
    return {
        "path": path,
        "status": "ok",
        "findings": [
            {"code": f.code, "safety": f.fix_safety.value, "context": f.context.value if f.context else None, "line": f.line}
            for f in findings
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--fix", action="store_true", help="also apply all fixes in memory and check them")
    args = parser.parse_args(argv)
    roots = args.roots
    if not roots:
        import importlib.util

        spec = importlib.util.find_spec("torch")
        if spec is None or spec.origin is None:
            print("torch is not installed; name a folder", file=sys.stderr)
            return 2
        roots = [str(Path(spec.origin).parent)]
    files = sorted(str(p) for root in roots for p in Path(root).rglob("*.py"))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(partial(_check, fix=args.fix), files, chunksize=4))
    elapsed = time.perf_counter() - start

    statuses = Counter(r["status"] for r in results)
    active = Counter()
    silenced = Counter()
    for result in results:
        for finding in result.get("findings", ()):
            if finding["context"] is None:
                active[(finding["code"], finding["safety"])] += 1
            else:
                silenced[(finding["code"], finding["context"])] += 1
    lines = sum(Path(f).read_bytes().count(b"\n") for f in files)
    print(f"{len(files)} files, {lines:,} lines, {elapsed:.1f} s with {args.jobs} workers")
    print("files: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    print("\nreported findings (rule, fix safety):")
    for (code, safety), count in sorted(active.items()):
        print(f"  {code}  {safety:<13} {count:>6}")
    print(f"  total              {sum(active.values()):>6}")
    print("\nsilenced by context (rule, context):")
    for (code, context), count in sorted(silenced.items()):
        print(f"  {code}  {context:<24} {count:>6}")
    print(f"  total                        {sum(silenced.values()):>6}")
    slowest = sorted(results, key=lambda r: -r["seconds"])[:5]
    print("\nslowest files: " + ", ".join(f"{Path(r['path']).name} {r['seconds']:.1f}s" for r in slowest))
    for result in results:
        if result["status"] in ("crash", "syntax-error", "undecodable"):
            print(f"\n{result['status']}: {result['path']}\n{result['detail']}")
    if args.fix:
        fixed = [r for r in results if "fix" in r]
        applied = sum(r.get("fixes_applied", 0) for r in fixed)
        problems = [r for r in fixed if r["fix"] != "ok"]
        dropped = sum(len(r.get("fix_errors", ())) for r in fixed)
        print(f"\nfix --unsafe-fixes in memory: {len(fixed)} files, {applied} fixes applied, "
              f"{dropped} fixes dropped as invalid, {len(problems)} files crashed or not idempotent")
        for r in problems:
            print(f"  {r['fix']}: {r['path']}\n{r['fix_detail']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results), encoding="utf-8")
    fix_problems = any(r.get("fix", "ok") != "ok" for r in results)
    return 1 if statuses.get("crash") or fix_problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
