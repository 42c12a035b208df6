"""The verifier: fixtures verify, wrong rewrites fail on the right check, silent bugs are caught."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from gradfix.verify import Program, WorkerError, WorkerSession, verify  # noqa: E402

from fixture_files import all_fixtures  # noqa: E402

CASES = Path(__file__).with_name("verify_cases")
PAIRS = [f for f in all_fixtures() if f.fixed_path]


@pytest.fixture(scope="module")
def session():
    with WorkerSession() as worker:
        yield worker


def check(session, original: Path, rewrite_text: str | None = None, **kwargs):
    rewrite = Program(original, source=rewrite_text) if rewrite_text is not None else Program(original)
    return verify(Program(original), rewrite, session=session, **kwargs)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# --- every fixture pair verifies -----------------------------------------------------------


@pytest.mark.parametrize("fixture", PAIRS, ids=lambda f: f.id)
def test_fixture_pair_verifies(session, fixture):
    verdict = check(session, fixture.path, fixture.fixed_path.read_text(encoding="utf-8"))
    assert verdict.status == "verified", verdict.headline()
    assert [c.status for c in verdict.checks] == ["passed"] * 4


# --- wrong rewrites are caught, by the right check -------------------------------------------

WRONG = {
    "wrong_detach_operand": ("gate", "gradients correct"),
    "wrong_drop_term": ("gate", "forward matches"),
    "wrong_swap_order": ("gate", "forward matches"),
    "wrong_clone_cuts_graph": ("gate", "gradients present"),
    "wrong_changes_forward": ("gate", "forward matches"),
    "wrong_crashes": ("gate", "runs"),
    "wrong_keeps_data_write": ("scale", "gradients correct"),
}


@pytest.mark.parametrize("rewrite,expected", WRONG.items(), ids=WRONG.keys())
def test_wrong_rewrite_fails_on_the_right_check(session, rewrite, expected):
    original, check_name = expected
    verdict = check(session, CASES / f"{original}.py", (CASES / f"{rewrite}.py").read_text())
    assert verdict.status == "failed"
    assert verdict.reason.startswith(check_name + ":"), verdict.reason
    failed = [c for c in verdict.checks if c.status == "failed"]
    assert [c.name for c in failed] == [check_name]


@pytest.mark.parametrize("original,right", [("gate", "gate_right"), ("scale", "scale_right")])
def test_right_rewrites_of_the_same_programs_verify(session, original, right):
    verdict = check(session, CASES / f"{original}.py", (CASES / f"{right}.py").read_text())
    assert verdict.verified, verdict.headline()


def test_gradient_failure_names_the_leaf_and_the_numbers(session):
    verdict = check(session, CASES / "gate.py", (CASES / "wrong_detach_operand.py").read_text())
    assert "leaf #0 (shape [4], first read at gate.py:7)" in verdict.reason
    assert "finite difference" in verdict.reason and "autograd" in verdict.reason


# --- the seeds' silent .data bugs ---------------------------------------------------------


@pytest.mark.parametrize("name,check_name", [("data_rnn", "gradients present"), ("data_scale", "gradients correct")])
def test_silent_data_bug_fails_and_its_fix_verifies(session, name, check_name):
    original = CASES / f"{name}.py"
    # The original checked as its own rewrite: its autograd gradients are wrong or missing.
    broken = check(session, original)
    assert broken.status == "failed" and broken.reason.startswith(check_name), broken.headline()
    fixed = check(session, original, (CASES / f"{name}_fixed.py").read_text())
    assert fixed.verified, fixed.headline()


# --- reference mode and its pitfalls --------------------------------------------------------


def test_program_branching_on_grad_mode_sees_a_normal_run(session, tmp_path):
    path = write(tmp_path, "branch.py", """
        import torch
        x = torch.randn(3, requires_grad=True)
        with torch.no_grad():
            with torch.enable_grad():
                assert torch.is_grad_enabled()
                y = torch.exp(x)
        assert torch.is_grad_enabled()
        scale = 2.0 if torch.is_grad_enabled() else 100.0
        y.mul_(scale)
        y.sum().backward()
    """)
    rewrite = path.read_text().replace("y.mul_(scale)", "y = y.mul(scale)")
    verdict = check(session, path, rewrite)
    assert verdict.verified, verdict.headline()


def test_overlapping_inplace_operand_is_computed_from_a_snapshot(session, tmp_path):
    path = write(tmp_path, "overlap.py", """
        import torch
        w = torch.randn(3, 3, requires_grad=True)
        y = torch.exp(w)
        y += y.t()
        y.sum().backward()
    """)
    verdict = check(session, path, path.read_text().replace("y += y.t()", "y = y + y.t()"))
    assert verdict.verified, verdict.headline()


def test_explicit_float32_is_promoted_for_the_gradient_check(session, tmp_path):
    path = write(tmp_path, "f32.py", """
        import torch
        x = torch.randn(50, dtype=torch.float32, requires_grad=True)
        w = torch.randn(50).float().to(torch.float32).requires_grad_()
        h = torch.tanh(x * w)
        h.mul_(3)
        (h ** 3).sum().backward()
    """)
    verdict = check(session, path, path.read_text().replace("h.mul_(3)", "h = h.mul(3)"))
    assert verdict.verified, verdict.headline()


def test_initializer_overwrites_do_not_hide_parameters(session, tmp_path):
    path = write(tmp_path, "init.py", """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 3)
                with torch.no_grad():
                    self.fc.weight.copy_(torch.randn(3, 4))
                nn.init.constant_(self.fc.bias, 0.1)

            def forward(self, x):
                h = torch.sigmoid(self.fc(x))
                h.mul_(2)
                return h

        torch.manual_seed(0)
        Net()(torch.randn(2, 4)).sum().backward()
    """)
    verdict = check(session, path, path.read_text().replace("h.mul_(2)", "h = h.mul(2)"))
    assert verdict.verified, verdict.headline()
    assert "2 of 2 leaves" in verdict.checks[2].detail


def test_detach_and_item_are_stop_gradient_points(session, tmp_path):
    path = write(tmp_path, "stop.py", """
        import torch
        x = torch.randn(4, requires_grad=True)
        h = torch.exp(x)
        center = h.mean().item()
        baseline = h.detach().sum()
        with torch.no_grad():
            running = h * 0.5
        h.sub_(center)
        ((h - baseline - running) ** 2).sum().backward()
    """)
    verdict = check(session, path, path.read_text().replace("h.sub_(center)", "h = h.sub(center)"))
    assert verdict.verified, verdict.headline()


def test_kink_at_the_starting_point_is_rechecked_nearby(session, tmp_path):
    path = write(tmp_path, "kink.py", """
        import torch
        w = torch.zeros(6, requires_grad=True)
        h = torch.relu(w)
        h += w * 0.5
        (h * torch.arange(6.0)).sum().backward()
    """)
    verdict = check(session, path, path.read_text().replace("h += w * 0.5", "h = h + w * 0.5"))
    assert verdict.verified, verdict.headline()
    assert any("kink" in note for note in verdict.notes)


def test_leaves_read_in_another_order_are_paired_by_value(session, tmp_path):
    path = write(tmp_path, "order.py", """
        import torch
        a = torch.randn(3, requires_grad=True)
        b = torch.randn(3, requires_grad=True)
        h = torch.exp(a)
        h.add_(b * 3)
        h.sum().backward()
    """)
    rewrite = path.read_text().replace("h = torch.exp(a)\nh.add_(b * 3)", "t = b * 3\nh = torch.exp(a) + t")
    verdict = check(session, path, rewrite)
    assert verdict.verified, verdict.headline()


def test_later_backward_calls_are_reported_as_not_compared(session, tmp_path):
    path = write(tmp_path, "loop.py", """
        import torch
        w = torch.randn(3, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            h = torch.sigmoid(w)
            h.mul_(2)
            h.sum().backward()
            opt.step()
    """)
    verdict = check(session, path, path.read_text().replace("h.mul_(2)", "h = h.mul(2)"))
    assert verdict.verified, verdict.headline()
    assert any("only the first of 3 backward() calls" in note for note in verdict.notes)


# --- inconclusive and failing runs ------------------------------------------------------------


def test_no_backward_is_inconclusive(session, tmp_path):
    path = write(tmp_path, "nob.py", "import torch\nx = torch.ones(2)\nprint(x * 2)\n")
    verdict = check(session, path)
    assert verdict.status == "inconclusive" and "never calls backward" in verdict.reason


def test_nondeterministic_forward_is_inconclusive(session, tmp_path):
    path = write(tmp_path, "rand.py", """
        import os
        import torch
        x = torch.randn(3, requires_grad=True)
        noise = int.from_bytes(os.urandom(4), "little") / 2**32
        (x * noise).sum().backward()
    """)
    verdict = check(session, path)
    assert verdict.status == "inconclusive" and "not deterministic" in verdict.reason


def test_hanging_rewrite_fails_runs_with_a_timeout(session, tmp_path):
    path = write(tmp_path, "hang.py", "import torch\nx = torch.ones(2, requires_grad=True)\n(x * 2).sum().backward()\n")
    verdict = check(session, path, "import torch\nwhile True:\n    pass\n", timeout=2)
    assert verdict.status == "failed" and verdict.reason.startswith("runs:") and "2" in verdict.reason


def test_crashing_rewrite_is_reported_not_propagated(session, tmp_path):
    path = write(tmp_path, "ok.py", "import torch\nx = torch.ones(2, requires_grad=True)\n(x * 2).sum().backward()\n")
    verdict = check(session, path, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert verdict.status == "failed" and "died" in verdict.reason
    # The worker survives the crash and serves the next job.
    assert check(session, path).verified


def test_memory_cap_stops_a_runaway_program(session, tmp_path):
    path = write(tmp_path, "mem.py", "import torch\nx = torch.ones(2, requires_grad=True)\n(x * 2).sum().backward()\n")
    hog = "import torch\nblocks = [torch.ones(256, 1024, 1024) for _ in range(64)]\n"
    verdict = check(session, path, hog, memory_mb=512)
    assert verdict.status == "failed" and verdict.reason.startswith("runs:")


def test_interpreter_without_torch_is_a_clear_error(tmp_path):
    bare = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = bare / "bin" / "python"
    with pytest.raises(WorkerError) as info:
        WorkerSession(str(python)).start()
    assert "torch" in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_cuda_path_verifies_a_fixture(session):
    fixture = next(f for f in PAIRS if f.id == "GF102/sigmoid_mul")
    verdict = check(session, fixture.path, fixture.fixed_path.read_text(), device="cuda")
    assert verdict.verified and verdict.device == "cuda", verdict.headline()


# --- the command line ---------------------------------------------------------------------------


def gradfix(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradfix", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_verify_script_json_and_exit_codes(tmp_path):
    shutil.copy(CASES / "gate.py", tmp_path / "gate.py")
    before = (tmp_path / "gate.py").read_bytes()
    done = gradfix("verify", "gate.py", "--format", "json", "--device", "all", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)
    assert report["verified"] and report["verdicts"][0]["device"] == "cpu"
    assert (tmp_path / "gate.py").read_bytes() == before  # nothing written
    wrong = gradfix("verify", "gate.py", "--fixed", str(CASES / "wrong_drop_term.py"), cwd=tmp_path)
    assert wrong.returncode == 1 and "forward matches" in wrong.stdout
    if not torch.cuda.is_available():
        cuda = gradfix("verify", "gate.py", "--device", "cuda", cwd=tmp_path)
        assert cuda.returncode == 2 and "CUDA is not available" in cuda.stderr


def test_cli_verify_level_warning_verifies_the_fix_of_a_warning(tmp_path):
    # `h` is a parameter: gradfix cannot see its producer (sigmoid), so the finding is a warning.
    write(tmp_path, "prog.py", """
        import torch

        def scale(h):
            h.mul_(2)
            return h

        torch.manual_seed(0)
        x = torch.randn(4, requires_grad=True)
        scale(torch.sigmoid(x)).sum().backward()
    """)
    errors_only = gradfix("verify", "prog.py", "--unsafe-fixes", "--device", "cpu", cwd=tmp_path)
    assert errors_only.returncode == 1 and "no fix applies" in errors_only.stdout
    warnings_too = gradfix("verify", "prog.py", "--unsafe-fixes", "--level", "warning", "--device", "cpu", cwd=tmp_path)
    assert warnings_too.returncode == 0, warnings_too.stdout + warnings_too.stderr
    assert "verified" in warnings_too.stdout


def test_cli_verify_run_serves_fixed_library_through_an_import_hook(tmp_path):
    package = tmp_path / "lib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text(textwrap.dedent("""
        import torch

        def gate(x, w):
            g = torch.sigmoid(x * w)
            g.mul_(2)
            return g
    """).lstrip())
    (tmp_path / "driver.py").write_text(textwrap.dedent("""
        import torch
        from lib.layers import gate

        torch.manual_seed(0)
        x = torch.randn(5, requires_grad=True)
        w = torch.randn(5, requires_grad=True)
        gate(x, w).pow(2).sum().backward()
    """).lstrip())
    before = (package / "layers.py").read_bytes()
    done = gradfix("verify", "--run", "driver.py", "lib", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified" in done.stdout and "1 fixed file" in done.stdout
    assert (package / "layers.py").read_bytes() == before
    # fix --verify --run writes the library fix only because the driver verifies.
    written = gradfix("fix", "--verify", "--run", "driver.py", "lib", "--device", "cpu", cwd=tmp_path)
    assert written.returncode == 0, written.stdout + written.stderr
    assert "g = g.mul(2)" in (package / "layers.py").read_text()


def test_overrides_of_modules_torch_already_imported_reach_the_program(session, tmp_path):
    # The worker has imported torch before any program runs; a fixed version of one of
    # torch's own files must still be what the program executes (a fresh interpreter).
    linear = Path(torch.nn.modules.linear.__file__)
    text = linear.read_text(encoding="utf-8")
    original_line = "return F.linear(input, self.weight, self.bias)"
    assert original_line in text
    driver = write(tmp_path, "driver.py", """
        import torch
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 2)
        layer(torch.randn(4, 3)).pow(2).sum().backward()
    """)
    served = {str(linear): text.replace(original_line, "return 2 * F.linear(input, self.weight, self.bias)")}
    changed = verify(Program(driver), Program(driver, overrides=served), session=session)
    assert changed.status == "failed" and changed.reason.startswith("forward matches:"), changed.headline()
    unchanged = verify(Program(driver), Program(driver, overrides={str(linear): text}), session=session)
    assert unchanged.verified, unchanged.headline()


def test_cli_fix_verify_withholds_a_fix_that_does_not_verify(tmp_path):
    # The unsafe hoisting changes evaluation order: `g(h)` sees h before the add in the original.
    (tmp_path / "order.py").write_text(textwrap.dedent("""
        import torch

        def g(t):
            return t.sum()

        x = torch.randn(3, requires_grad=True)
        h = torch.exp(x)
        y = g(h) + h.add_(1)
        y.sum().backward()
    """).lstrip())
    (tmp_path / "good.py").write_text((CASES / "gate.py").read_text())
    order_before = (tmp_path / "order.py").read_bytes()
    done = gradfix("fix", "--verify", "--unsafe-fixes", "--device", "cpu", "order.py", "good.py", cwd=tmp_path)
    assert "order.py: not written" in done.stderr
    assert (tmp_path / "order.py").read_bytes() == order_before
    assert "g = g.mul(2)" in (tmp_path / "good.py").read_text()
    assert done.returncode == 1  # order.py's finding remains
