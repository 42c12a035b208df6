"""`gradfix trace`: each kind of failure is traced to the right line, and `fix --from-trace` then verifies.

The fixtures in fixtures/trace/ mark their lines: `# culprit` (the line trace must name),
`# saves` (the forward line that saved the tensor), `# leaf` (where the leaf was made),
`# view` (where the multi-output view was made). Their headers give the kind
(`# trace: KIND`) and any fix flags (`# fix: --unsafe-fixes`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("torch")

from gradfix.codemods.model import Finding, FixSafety  # noqa: E402
from gradfix.verify import Program, WorkerSession, verify  # noqa: E402

TRACE_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"
FIXTURES = sorted(p for p in TRACE_FIXTURES.glob("*.py") if not p.name.endswith(".fixed.py"))
KINDS = {"saved-output", "saved-input", "leaf", "leaf-view", "multi-output-view", "out", "inplace-module", "data-write", "optimizer-step"}


def gradfix(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradfix", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def marked(path: Path, mark: str) -> int | None:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# {mark}"):
            return number
    return None


def header(path: Path, key: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {key}: "):
            return line.split(": ", 1)[1].strip()
    return None


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess, list]]:
    """Every fixture traced once (two at a time), each in a folder of its own."""

    def one(fixture: Path):
        folder = tmp_path_factory.mktemp(fixture.stem)
        copy = folder / fixture.name
        shutil.copy(fixture, copy)
        completed = gradfix("trace", "--format", "json", "--output", "trace.json", fixture.name, cwd=folder)
        findings = json.loads(completed.stdout) if completed.stdout.strip().startswith("[") else None
        return fixture.stem, (copy, completed, findings)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, FIXTURES))


def test_every_kind_has_a_fixture():
    assert {header(f, "trace") for f in FIXTURES} == KINDS


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_trace_names_the_culprit_line(fixture: Path, traced):
    copy, completed, findings = traced[fixture.stem]
    assert completed.returncode == 1, completed.stderr
    assert findings, completed.stderr
    first = findings[0]
    assert first["trace"]["kind"] == header(fixture, "trace")
    assert (first["path"], first["line"]) == (fixture.name, marked(fixture, "culprit")), first
    for mark, key in (("saves", "saved_by"), ("leaf", "leaf_created"), ("view", "view_created")):
        line = marked(fixture, mark)
        if line is None:
            continue
        place = first["trace"][key]
        place = place.get("location", place) if key != "leaf_created" else place
        assert place["line"] == line, (mark, first["trace"])
    # The findings are check's JSON, plus the trace.
    schema = set(Finding("p", 1, 1, 1, 1, "GF101", "n", "m", FixSafety.SAFE).to_json())
    assert set(first) == schema | {"trace"}
    assert first["level"] == "error"


def test_silent_data_write_is_reported_although_the_program_runs(traced):
    _, completed, findings = traced["data_write"]
    assert "None" in completed.stderr  # the program's own output (on stderr with --format json): the lost gradient
    assert findings[0]["code"] == "GF103" and findings[0]["fix_safety"] == "safe"


def test_optimizer_ordering_is_display_only(traced):
    _, _, findings = traced["optimizer_step"]
    (finding,) = findings
    assert finding["fix_safety"] == "display-only"
    assert finding["trace"]["step"]["optimizer"] == "SGD"
    assert finding["trace"]["backward"]["line"] == marked(TRACE_FIXTURES / "optimizer_step.py", "culprit") + 2
    assert "step() after that backward()" in finding["message"]


@pytest.fixture(scope="module")
def session():
    with WorkerSession() as worker:
        yield worker


@pytest.mark.parametrize("fixture", [f for f in FIXTURES if header(f, "trace") != "optimizer-step"], ids=lambda p: p.stem)
def test_fix_from_trace_then_verify(fixture: Path, traced, session):
    copy, _, _ = traced[fixture.stem]
    folder = copy.parent
    flags = (header(fixture, "fix") or "").split()
    fixed = gradfix("fix", "--from-trace", "trace.json", *flags, cwd=folder)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    after = copy.read_text()
    assert after != fixture.read_text()
    changed = [i for i, (a, b) in enumerate(zip(fixture.read_text().splitlines(), after.splitlines()), 1) if a != b]
    assert changed and changed[0] == marked(fixture, "culprit")  # exactly the traced line (a clone may follow it)
    verdict = verify(Program(fixture), Program(fixture, source=after), session=session)
    assert verdict.verified, verdict.to_json()
    # Traced again, the fixed program breaks nothing.
    again = gradfix("trace", "--format", "json", "--output", "again.json", copy.name, cwd=folder)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout) == []
    # A stale trace is refused: the file changed since it was traced.
    stale = gradfix("fix", "--from-trace", "trace.json", *flags, cwd=folder)
    assert stale.returncode == 2 and "changed since it was traced" in stale.stderr
    assert copy.read_text() == after


def untouched_copy_with_its_trace(traced, name: str, folder: Path) -> None:
    """The original fixture in ``folder`` with the trace made of it (which names files by absolute path)."""
    copy, _, _ = traced[name]
    findings = json.loads((copy.parent / "trace.json").read_text())
    for finding in findings:
        finding["trace"]["file"] = str(folder / f"{name}.py")
    (folder / "trace.json").write_text(json.dumps(findings))
    shutil.copy(TRACE_FIXTURES / f"{name}.py", folder / f"{name}.py")


def test_without_unsafe_fixes_an_unsafe_traced_fix_is_left_and_said(traced, tmp_path):
    untouched_copy_with_its_trace(traced, "leaf_view", tmp_path)
    result = gradfix("fix", "--from-trace", "trace.json", cwd=tmp_path)
    assert result.returncode == 1
    assert "GF102" in result.stdout and "--unsafe-fixes" in result.stderr
    assert (tmp_path / "leaf_view.py").read_bytes() == (TRACE_FIXTURES / "leaf_view.py").read_bytes()


def test_run_driver_names_the_line_in_the_library(tmp_path):
    library = tmp_path / "lib"
    library.mkdir()
    (library / "layers.py").write_text(
        "import torch\n\n\ndef squash(x):\n    y = torch.tanh(x)\n    y.add_(1)\n    return y\n"
    )
    (tmp_path / "drive.py").write_text(
        "import sys\nsys.path.insert(0, 'lib')\nimport torch\nfrom layers import squash\n\n"
        "x = torch.randn(3, requires_grad=True)\nsquash(x).sum().backward()\n"
    )
    result = gradfix("trace", "--format", "json", "--run", "drive.py", "lib", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    (finding,) = json.loads(result.stdout)
    assert (finding["path"], finding["line"], finding["code"]) == (os.path.join("lib", "layers.py"), 6, "GF102")
    assert finding["trace"]["saved_by"]["location"]["line"] == 5


def test_clean_program_runs_unchanged_and_exits_zero(tmp_path):
    program = tmp_path / "resnet_like.py"
    program.write_text(
        "import torch\nfrom torch import nn\n\ntorch.manual_seed(0)\nconv, bn = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)\n"
        "x = torch.randn(1, 2, 4, 4)\nout = bn(conv(x))\nout += x\nout = torch.relu_(out)\nout.sum().backward()\n"
        "with torch.no_grad():\n    for p in conv.parameters():\n        p.sub_(0.1 * p.grad)\n"
        "print(round(conv.weight.sum().item(), 5))\n"
    )
    plain = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, cwd=tmp_path)
    result = gradfix("trace", str(program.name), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert plain.stdout.strip() and plain.stdout.strip() in result.stdout
    assert "no in-place write broke autograd" in result.stdout


def test_program_arguments_and_failures_pass_through(tmp_path):
    (tmp_path / "args.py").write_text("import sys\nprint('args', sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    result = gradfix("trace", "args.py", "3", "--epochs", "2", cwd=tmp_path)
    assert "args ['3', '--epochs', '2']" in result.stdout
    assert result.returncode == 1 and "status 3" in result.stdout
    (tmp_path / "boom.py").write_text("raise ValueError('not autograd')\n")
    result = gradfix("trace", "boom.py", cwd=tmp_path)
    assert result.returncode == 1 and "ValueError: not autograd" in result.stderr
    assert "tracer.py" not in result.stderr  # the program's traceback, not gradfix's frames


@pytest.mark.parametrize(
    "content, message",
    [("{", "invalid JSON"), ('{"a": 1}', "expected the JSON list"), (None, "cannot read")],
    ids=["broken", "not-a-list", "missing"],
)
def test_bad_trace_file_is_a_one_line_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "trace.json").write_text(content)
    result = gradfix("fix", "--from-trace", "trace.json", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_script_is_a_usage_error(tmp_path):
    result = gradfix("trace", "nope.py", cwd=tmp_path)
    assert result.returncode == 2 and "nope.py" in result.stderr


def test_data_alias_write_on_a_saved_tensor_is_reported(tmp_path):
    (tmp_path / "alias.py").write_text(
        "import torch\n\nx = torch.randn(4, requires_grad=True)\ny = torch.exp(x)\ny.data.mul_(2)\n"
        "z = x * 3\nz.data = torch.zeros(4)\n(y.sum() + z.sum()).backward()\n"
    )
    result = gradfix("trace", "--format", "json", "alias.py", cwd=tmp_path)
    (finding,) = json.loads(result.stdout)  # `z.data = ...`: nothing saved z, no gradient changes
    assert (finding["line"], finding["code"], finding["trace"]["kind"]) == (5, "GF103", "data-write")
    assert finding["trace"]["saved_by"]["location"]["line"] == 4


def test_fix_from_trace_takes_unsafe_fixes_from_the_config(traced, tmp_path):
    untouched_copy_with_its_trace(traced, "leaf_view", tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.gradfix]\nunsafe-fixes = true\n")
    result = gradfix("fix", "--from-trace", "trace.json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "head = head.mul(0.5)" in (tmp_path / "leaf_view.py").read_text()
