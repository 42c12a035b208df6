"""What `gradfix trace` costs: a traced run of a training program against a plain run of it.

    python benchmarks/trace_overhead.py [--repeat N] [--only NAME] [--python PY] [--quick]

Four small self-contained programs are written into a temporary folder (they import
only torch, call ``torch.set_num_threads(1)`` so a shared machine's noise stays small,
and are correct: autograd never fails, so the tracer finds nothing and both runs go
to the end):

- ``mlp``: Linear/ReLU layers, SGD with momentum then Adam, 200 steps of batch 64;
- ``cnn``: Conv2d + BatchNorm2d + ReLU(inplace=True) blocks with a residual
  ``out += identity``, SGD, 30 steps on 8x3x32x32;
- ``transformer``: a TransformerEncoderLayer and an LSTM, Adam, 30 steps;
- ``tiny_ops``: many elementwise ops (and a few in-place writes) on 16-element
  tensors per step: the worst case, where the per-op cost of the tracer is all
  there is.

Each program runs a few warm-up steps, then times its training loop alone with
``time.perf_counter()`` and prints ``{"loop_seconds": ..., "steps": ...}`` as its last
line: torch's import time is not in it. Every workload is run N times (``--repeat``)
as ``PY prog.py`` (plain) and as ``PY verify/tracer.py --out EVENTS.json --root TMP --
prog.py`` (traced, what ``gradfix trace`` runs), alternating, and the medians are
printed: the loop seconds, the end-to-end wall seconds of the process (interpreter
start, ``import torch``, tracer start-up, the program, the events file), the CPU
seconds of the process, and its peak RSS (``ru_maxrss`` from ``os.wait4`` on the child
itself), each with the ratio traced / plain. The tracer's own counters (``stats`` in
its events file: in-place writes and tensors autograd saved) show how much it recorded;
``us/event`` is the extra loop time divided by what it recorded in the loop's steps
(the counters cover the warm-up too: scaled by steps / (steps + warm-up)); it also
carries the ops the dispatch mode sees and lets through (every aten op, mutating or not).

A fixed part of the traced wall time and RSS: the first op under any TorchDispatchMode
imports ``torch._dynamo`` (about 1 s and 70 MB here). A program that creates a torch
optimizer imports it anyway, so only ``tiny_ops`` (no optimizer) shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACER = ROOT / "verify" / "tracer.py"

HEADER = '''\
import json, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_num_threads(1)
STEPS = {steps}
WARMUP = {warmup}
'''

FOOTER = '''
for _ in range(WARMUP):
    step()
started = time.perf_counter()
for _ in range(STEPS):
    loss = step()
seconds = time.perf_counter() - started
assert torch.isfinite(torch.as_tensor(loss)).all()
print(json.dumps({{"loop_seconds": seconds, "steps": STEPS, "warmup": WARMUP}}))
'''

MLP = '''
model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
adam = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randn(64, 128)
y = torch.randint(0, 10, (64,))
count = 0


def step():
    global count
    count += 1
    optimizer = sgd if count % 2 else adam
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()
'''

CNN = '''
class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        out = self.blocks(self.stem(x))
        return self.head(out.mean((2, 3)))


model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
x = torch.randn(8, 3, 32, 32)
y = torch.randint(0, 10, (8,))


def step():
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()
'''

TRANSFORMER = '''
encoder = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.1, batch_first=True)
lstm = nn.LSTM(64, 64, batch_first=True)
head = nn.Linear(64, 10)
params = list(encoder.parameters()) + list(lstm.parameters()) + list(head.parameters())
optimizer = torch.optim.Adam(params, lr=1e-3)
x = torch.randn(8, 32, 64)
y = torch.randint(0, 10, (8,))


def step():
    optimizer.zero_grad()
    out, _ = lstm(encoder(x))
    loss = F.cross_entropy(head(out[:, -1]), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return loss.item()
'''

TINY_OPS = '''
OPS_PER_STEP = 200  # 50 rounds of 4 elementwise ops, then a few writes
w = torch.randn(16, requires_grad=True)
running = torch.zeros(16)
scale = torch.full((16,), 0.5)


def step():
    h = w
    for _ in range(50):
        h = torch.sin(h) * scale + h
        h = h.tanh()
    running.mul_(0.9).add_(h.detach(), alpha=0.1)  # in-place on a tensor autograd never saved
    loss = (h * h).sum()
    loss.backward()
    with torch.no_grad():
        w.sub_(0.01 * w.grad)
        w.grad.zero_()
    return loss.item()
'''

WORKLOADS = {  # name: (program body, steps, warm-up steps, quick steps)
    "mlp": (MLP, 200, 10, 20),
    "cnn": (CNN, 30, 3, 4),
    "transformer": (TRANSFORMER, 30, 3, 4),
    "tiny_ops": (TINY_OPS, 200, 10, 20),
}


@dataclass
class Run:
    loop: float
    wall: float
    cpu: float
    rss_mb: float
    stats: dict = field(default_factory=dict)


def run_child(command: list[str], cwd: Path, log: Path) -> Run:
    """Run one child to the end: its own loop time (last stdout line), wall, CPU and peak RSS (wait4)."""
    with open(log, "w") as out, open(str(log) + ".err", "w") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{text[-2000:]}\n"
                         f"{Path(str(log) + '.err').read_text()[-2000:]}")
    result = json.loads(text.strip().splitlines()[-1])
    return Run(result["loop_seconds"], wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def median_run(runs: list[Run]) -> Run:
    return Run(*(statistics.median(getattr(r, name) for r in runs) for name in ("loop", "wall", "cpu", "rss_mb")),
               stats=runs[-1].stats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each program, plain and traced (median)")
    parser.add_argument("--only", choices=sorted(WORKLOADS), help="one workload")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (with torch) that runs the programs")
    parser.add_argument("--quick", action="store_true", help="a few steps per workload: a smoke run")
    args = parser.parse_args()
    names = [args.only] if args.only else list(WORKLOADS)

    with tempfile.TemporaryDirectory(prefix="trace_overhead_") as tmp_name:
        tmp = Path(tmp_name)
        header = (f"{'workload':<12} {'steps':>5} {'plain loop':>10} {'traced loop':>11} {'ratio':>6} "
                  f"{'plain wall':>10} {'traced wall':>11} {'ratio':>6} {'cpu ratio':>9} "
                  f"{'plain RSS':>9} {'traced RSS':>10} {'ratio':>6} {'writes':>7} {'saved':>7} {'us/event':>8}")
        print(header)
        print("-" * len(header))
        for name in names:
            body, steps, warmup, quick_steps = WORKLOADS[name]
            if args.quick:
                steps, warmup = quick_steps, 1
            program = tmp / f"{name}.py"
            program.write_text(HEADER.format(steps=steps, warmup=warmup) + body + FOOTER.format())
            events = tmp / f"{name}.events.json"
            plain_runs, traced_runs = [], []
            for _ in range(args.repeat):  # alternating, so drifting load on the machine hits both alike
                plain_runs.append(run_child([args.python, str(program)], tmp, tmp / f"{name}.plain.log"))
                traced = run_child([args.python, str(TRACER), "--out", str(events), "--root", str(tmp), "--",
                                    str(program)], tmp, tmp / f"{name}.traced.log")
                report = json.loads(events.read_text())
                if report["status"] != 0 or report["reports"]:
                    raise SystemExit(f"{name}: the tracer reported something on a correct program: {report}")
                traced.stats = report["stats"]
                traced_runs.append(traced)
            plain, traced = median_run(plain_runs), median_run(traced_runs)
            writes, saved = traced.stats.get("writes", 0), traced.stats.get("saved", 0)
            in_loop = (writes + saved) * steps / (steps + warmup)
            per_event = (traced.loop - plain.loop) / in_loop * 1e6 if in_loop else float("nan")
            print(f"{name:<12} {steps:>5} {plain.loop:>9.3f}s {traced.loop:>10.3f}s {traced.loop / plain.loop:>5.2f}x "
                  f"{plain.wall:>9.2f}s {traced.wall:>10.2f}s {traced.wall / plain.wall:>5.2f}x "
                  f"{traced.cpu / plain.cpu:>8.2f}x "
                  f"{plain.rss_mb:>7.0f}MB {traced.rss_mb:>8.0f}MB {traced.rss_mb / plain.rss_mb:>5.2f}x "
                  f"{writes:>7} {saved:>7} {per_event:>8.1f}", flush=True)
    print(f"\nmedian of {args.repeat} runs each, plain and traced alternating; loop = the program's own timing of its "
          f"steps after warm-up (no import); wall, cpu, RSS = the whole process. writes/saved = the tracer's counts "
          f"(warm-up included); us/event = extra loop time per recorded write or saved tensor.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
