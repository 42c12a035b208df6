"""How long `gradfix verify` takes on the fixture programs, against running the program once.

    python benchmarks/verify_speed.py [--repeat N]

For every before/after fixture pair: the wall time of `python FIXED.py` (one
plain run of the rewritten program: interpreter start, `import torch`, the
program) and of `gradfix verify BEFORE.py --device cpu` (which makes the fix in
memory and runs the four checks: about ten runs of the programs). Both are
measured in the same session, best of N, and printed with their ratio; the
target is a ratio of at most 2. The time per check comes from the verifier's
own report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fixture_files import all_fixtures  # noqa: E402


def wall(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - started, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    pairs = [f for f in all_fixtures() if f.fixed_path]
    rows = []
    check_times: dict[str, list[float]] = {}
    print(f"{'fixture':<34} {'plain run':>10} {'verify':>8} {'ratio':>6}  verdict")
    for fixture in pairs:
        plain = min(wall([sys.executable, str(fixture.fixed_path)], fixture.path.parent)[0] for _ in range(args.repeat))
        best = None
        for _ in range(args.repeat):
            seconds, done = wall([sys.executable, "-m", "gradfix", "verify", str(fixture.path), "--device", "cpu",
                                  "--format", "json"] + (["--unsafe-fixes"] if fixture.unsafe_fixes else []), ROOT)
            if best is None or seconds < best[0]:
                best = (seconds, done)
        seconds, done = best  # type: ignore[misc]
        report = json.loads(done.stdout)[0] if done.stdout.strip().startswith("[") else None
        verdict = report["verdicts"][0] if report else {"status": f"error: {done.stderr.strip()[-80:]}", "checks": []}
        for check in verdict["checks"]:
            check_times.setdefault(check["name"], []).append(check["seconds"])
        rows.append((fixture.id, plain, seconds, seconds / plain))
        print(f"{fixture.id:<34} {plain:>9.2f}s {seconds:>7.2f}s {seconds / plain:>6.2f}  {verdict['status']}")
    ratios = [r[3] for r in rows]
    print(f"\n{len(rows)} programs; verify / plain run: median {statistics.median(ratios):.2f}x, "
          f"max {max(ratios):.2f}x (target: at most 2x)")
    print("time per check (median over the programs): " + ", ".join(
        f"{name} {statistics.median(times):.2f}s" for name, times in check_times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
