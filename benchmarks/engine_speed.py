"""How fast is gradfix's engine on real code, in one process, and where does the time go?

    python benchmarks/engine_speed.py [--root DIR] [--reference DIR] [--skip-all]

Times ``check_source`` (the default check: no silenced findings) over every ``.py`` file under
torch/nn and then under all of the installed torch, single-threaded, cold (nothing cached;
parallel workers are the front-end's business). For each tree it prints files/s and lines/s,
how many files the text test keeps, how many the ``ast`` stage keeps (a candidate construct in
code where autograd records), how many lines libcst then reads, and the time of each stage.

In the same run it times the unfocused engine (``focus=False``: every rule over the whole file
with libcst, as before the pre-screen) on the reference tree (torch/nn by default) and prints
the ratio. Findings of both must be identical; the script says so or exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gradfix.codemods import engine
from gradfix.codemods.engine import SourceSyntaxError, check_source, select_rules


@dataclass
class Tally:
    files: int = 0
    lines: int = 0
    text_kept: int = 0
    ast_kept: int = 0
    libcst_lines: int = 0
    findings: int = 0
    errors: int = 0
    total: float = 0.0
    cpu: float = 0.0  # this process's CPU seconds: what an idle core would take, on a shared machine
    text_time: float = 0.0
    ast_time: float = 0.0
    libcst_time: float = 0.0
    results: dict[str, object] = field(default_factory=dict)


def read(root: Path) -> list[tuple[str, str]]:
    sources = []
    for path in sorted(root.rglob("*.py")):
        try:
            sources.append((str(path), path.read_bytes().decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return sources


def staged(sources: list[tuple[str, str]]) -> Tally:
    """check_source's own steps, timed one by one (the same calls check_source makes)."""
    rules = select_rules()
    tally = Tally()
    started, cpu = time.perf_counter(), time.process_time()
    for path, source in sources:
        tally.files += 1
        tally.lines += source.count("\n") + 1
        a = time.perf_counter()
        gate = engine.could_have_findings(source, rules)
        b = time.perf_counter()
        tally.text_time += b - a
        try:
            if not gate:
                engine._syntax_check_only(source)
                tally.ast_time += time.perf_counter() - b
                tally.results[path] = []
                continue
            tally.text_kept += 1
            plan = engine._plan(source, rules, keep_silenced=False)
            c = time.perf_counter()
            tally.ast_time += c - b
            if plan is None:
                tally.results[path] = []
                continue
            tally.ast_kept += 1
            tally.libcst_lines += plan.kept_lines
            ctx, raw = engine._analyze(engine.parse(plan.text), rules, source)
            findings = engine._findings(path, ctx, raw, False, engine.Level.WARNING)
            tally.libcst_time += time.perf_counter() - c
        except SourceSyntaxError as error:
            tally.errors += 1
            tally.results[path] = ("syntax error", error.message, error.line, error.col)
            continue
        tally.findings += len(findings)
        tally.results[path] = findings
    tally.total, tally.cpu = time.perf_counter() - started, time.process_time() - cpu
    return tally


def whole(sources: list[tuple[str, str]], focus: bool) -> Tally:
    tally = Tally()
    started, cpu = time.perf_counter(), time.process_time()
    for path, source in sources:
        tally.files += 1
        tally.lines += source.count("\n") + 1
        try:
            findings = check_source(source, path, focus=focus)
        except SourceSyntaxError as error:
            tally.errors += 1
            tally.results[path] = ("syntax error", error.message, error.line, error.col)
            continue
        tally.findings += len(findings)
        tally.results[path] = findings
    tally.total, tally.cpu = time.perf_counter() - started, time.process_time() - cpu
    return tally


def show(name: str, tally: Tally) -> None:
    print(f"{name}: {tally.files} files, {tally.lines:,} lines in {tally.total:.1f} s ({tally.cpu:.1f} s CPU): "
          f"{tally.files / tally.cpu:.0f} files/s, {tally.lines / tally.cpu:,.0f} lines/s of CPU; "
          f"{tally.findings} findings, {tally.errors} syntax errors")
    if tally.text_kept:
        print(f"  text test keeps {tally.text_kept} files ({tally.text_time:.2f} s); "
              f"ast stage (syntax check included) keeps {tally.ast_kept} ({tally.ast_time:.2f} s); "
              f"libcst reads {tally.libcst_lines:,} lines ({100 * tally.libcst_lines / max(1, tally.lines):.1f} %) "
              f"in {tally.libcst_time:.2f} s")


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    torch_root = Path(torch.__file__).parent
    parser.add_argument("--root", type=Path, default=torch_root, help="the tree to time (default: all of torch)")
    parser.add_argument("--reference", type=Path, default=torch_root / "nn",
                        help="the tree also timed with the unfocused engine (default: torch/nn)")
    parser.add_argument("--skip-all", action="store_true", help="time only the reference tree")
    parser.add_argument("--only-all", action="store_true", help="time only the whole tree (no reference run)")
    parser.add_argument("--shard", default="1/1", help="K/N: time every N-th file of the tree from the K-th "
                        "(run N shards side by side and add their CPU times)")
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")

    same = True
    if not args.only_all:
        reference = read(args.reference)
        focused = staged(reference)
        show(f"{args.reference} (focused)", focused)
        unfocused = whole(reference, focus=False)
        show(f"{args.reference} (unfocused, as before the pre-screen)", unfocused)
        same = focused.results == unfocused.results
        print(f"  focused / unfocused CPU time: 1 / {unfocused.cpu / focused.cpu:.1f}; findings identical: {same}")
    if not args.skip_all:
        shard, shards = (int(x) for x in args.shard.split("/"))
        show(f"{args.root} (focused, shard {args.shard})", staged(read(args.root)[shard - 1::shards]))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
