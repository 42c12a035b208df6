"""The gradfix command line: check, fix, rules, configuration, discovery, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradfix import runner
from gradfix.cli import app
from gradfix.codemods import FixResult

SAFE = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny += 1\n"
SAFE_FIXED = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny = y + 1\n"
# Error level (sigmoid saved h), unsafe fix (outs holds h before the write).
UNSAFE = "import torch\ndef f(x, outs):\n    h = torch.sigmoid(x)\n    outs.append(h)\n    h += 1\n    return h\n"
UNSAFE_FIXED = "import torch\ndef f(x, outs):\n    h = torch.sigmoid(x)\n    outs.append(h)\n    h = h + 1\n    return h\n"
CLEAN = "import torch\nx = torch.zeros(3)\n"
BROKEN = "import torch\nx = (\n"


def run(*args: object, input: bytes | str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# --- check: output and exit codes -----------------------------------------------------------


def test_check_clean_exits_0(tmp_path):
    write(tmp_path / "a.py", CLEAN)
    result = run("check", "a.py")
    assert result.exit_code == 0
    assert result.stdout == "All checks passed!\n"
    assert result.stderr == ""


def test_check_finding_line_format_and_exit_1(tmp_path):
    write(tmp_path / "a.py", SAFE)
    result = run("check", "a.py")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("a.py:4:1: GF101 [*] error: in-place `+=` on tensor `y`")
    assert lines[-1] == "Found 1 finding (1 fixable with `gradfix fix`)."


def test_check_unsafe_fix_has_no_star_unless_unsafe_fixes(tmp_path):
    write(tmp_path / "a.py", SAFE)
    write(tmp_path / "b.py", UNSAFE)
    result = run("check", ".")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("a.py:4:1: GF101 [*] ")
    assert lines[1].startswith("b.py:5:5: GF101 error: in-place")
    assert lines[2] == "Found 2 findings (1 fixable with `gradfix fix`, 1 more with `--unsafe-fixes`)."

    result = run("check", ".", "--unsafe-fixes")
    assert result.stdout.splitlines()[1].startswith("b.py:5:5: GF101 [*] ")
    assert result.stdout.splitlines()[2] == "Found 2 findings (2 fixable with `gradfix fix --unsafe-fixes`)."


def test_check_output_sorted_by_path_then_line(tmp_path):
    write(tmp_path / "z.py", SAFE)
    write(tmp_path / "b" / "m.py", SAFE + "y *= 2\n")
    write(tmp_path / "a.py", UNSAFE)
    result = run("check", "z.py", "b", "a.py")
    places = [line.split(" ")[0] for line in result.stdout.splitlines()[:-1]]
    assert places == ["a.py:5:5:", "b/m.py:4:1:", "b/m.py:5:1:", "z.py:4:1:"]


def test_check_syntax_error_exit_2_other_files_still_checked(tmp_path):
    write(tmp_path / "bad.py", BROKEN)
    write(tmp_path / "good.py", SAFE)
    result = run("check", ".")
    assert result.exit_code == 2
    assert result.stderr.startswith("bad.py:2:5: syntax error: ")
    assert "good.py:4:1: GF101" in result.stdout


def test_errors_only_never_say_all_checks_passed(tmp_path):
    write(tmp_path / "bad.py", BROKEN)
    result = run("check", "bad.py")
    assert result.exit_code == 2
    assert result.stdout == "No findings, but 1 file could not be checked (errors on stderr).\n"
    write(tmp_path / "good.py", SAFE)
    result = run("fix", ".")
    assert result.stdout.splitlines()[-1] == (
        "Found 1 finding (1 fixed, 0 remaining). 1 file could not be fully processed (errors on stderr)."
    )


def test_json_stays_valid_when_a_file_fails(tmp_path):
    write(tmp_path / "bad.py", BROKEN)
    write(tmp_path / "good.py", SAFE)
    result = run("check", "--format", "json", ".")
    assert result.exit_code == 2
    assert [d["path"] for d in json.loads(result.stdout)] == ["good.py"]
    assert "bad.py:2:5: syntax error" in result.stderr


def test_check_missing_path_exit_2(tmp_path):
    write(tmp_path / "a.py", SAFE)
    result = run("check", "nope.py", "a.py")
    assert result.exit_code == 2
    assert "nope.py: No such file or directory" in result.stderr
    assert "a.py:4:1: GF101" in result.stdout


def test_check_exit_zero(tmp_path):
    write(tmp_path / "a.py", SAFE)
    assert run("check", "--exit-zero", "a.py").exit_code == 0
    write(tmp_path / "bad.py", BROKEN)
    assert run("check", "--exit-zero", ".").exit_code == 2  # errors still count


def test_check_json(tmp_path):
    write(tmp_path / "a.py", SAFE)
    write(tmp_path / "sub" / "b.py", UNSAFE)
    result = run("check", "--format", "json", ".")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [(d["path"], d["line"], d["col"], d["code"], d["fix_safety"]) for d in data] == [
        ("a.py", 4, 1, "GF101", "safe"),
        ("sub/b.py", 5, 5, "GF101", "unsafe"),
    ]
    assert data[0]["end_line"] == 4 and data[0]["name"] == "augmented-assignment-on-tensor"
    assert data[0]["fix_title"]


def test_check_json_clean_is_empty_array(tmp_path):
    write(tmp_path / "a.py", CLEAN)
    result = run("check", "--format", "json", "a.py")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


# --- rule selection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected_exit",
    [
        (["--select", "GF1"], 1),
        (["--select", "gf101"], 1),
        (["--select", "GF102"], 0),
        (["--select", "GF102,GF101"], 1),
        (["--select", "GF102", "--select", "GF101"], 1),
        (["--ignore", "GF101"], 0),
        (["--ignore", "GF1"], 0),
        (["--select", "GF", "--ignore", "GF10"], 0),
        (["--select", "ALL"], 1),
    ],
)
def test_select_and_ignore_prefixes(tmp_path, args, expected_exit):
    write(tmp_path / "a.py", SAFE)
    result = run("check", *args, "a.py")
    assert result.exit_code == expected_exit, result.output


def test_select_picks_between_rules(tmp_path):
    write(tmp_path / "a.py", SAFE + "w = torch.ones(3, requires_grad=True)\nw.add_(1)\n")
    codes = lambda *args: {d["code"] for d in json.loads(run("check", "--format", "json", *args, "a.py").stdout)}
    assert codes() == {"GF101", "GF102"}
    assert codes("--select", "GF102") == {"GF102"}
    assert codes("--ignore", "GF102") == {"GF101"}


def test_unknown_selector_is_an_error(tmp_path):
    write(tmp_path / "a.py", SAFE)
    result = run("check", "--select", "GF9", "a.py")
    assert result.exit_code == 2
    assert "unknown rule selector 'GF9'" in result.stderr


# --- discovery -------------------------------------------------------------------------------


def test_directory_walk_skips_environments_vcs_and_build_dirs(tmp_path):
    for skipped in [
        ".venv/lib/m.py", "venv/m.py", ".git/hooks/m.py", ".hg/m.py", "__pycache__/m.py", "build/m.py",
        "dist/m.py", ".tox/py/m.py", ".nox/m.py", "node_modules/m.py", "lib/site-packages/m.py",
        "pkg.egg-info/m.py", "myenv/lib/m.py",
    ]:
        write(tmp_path / "proj" / skipped, SAFE)
    write(tmp_path / "proj" / "myenv" / "pyvenv.cfg", "home = /usr\n")
    write(tmp_path / "proj" / "src" / "pkg" / "m.py", SAFE)
    write(tmp_path / "proj" / "top.py", SAFE)
    write(tmp_path / "proj" / "notes.txt", SAFE)
    result = run("check", "--format", "json", "proj")
    assert sorted(d["path"] for d in json.loads(result.stdout)) == ["proj/src/pkg/m.py", "proj/top.py"]


def test_explicit_file_is_checked_even_if_excluded_unless_force_exclude(tmp_path):
    write(tmp_path / ".venv" / "m.py", SAFE)
    write(tmp_path / "pyproject.toml", '[tool.gradfix]\nexclude = ["gen_*.py"]\n')
    write(tmp_path / "gen_a.py", SAFE)
    assert run("check", ".venv/m.py", "gen_a.py").exit_code == 1
    result = run("check", "--force-exclude", ".venv/m.py", "gen_a.py")
    assert result.exit_code == 0
    assert "No Python files found" in result.stderr


def test_no_python_files_is_a_warning_not_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("check", "empty")
    assert result.exit_code == 0
    assert "warning: No Python files found" in result.stderr


def test_default_path_is_cwd(tmp_path):
    write(tmp_path / "a.py", SAFE)
    result = run("check")
    assert result.exit_code == 1
    assert result.stdout.startswith("a.py:4:1:")


# --- configuration ---------------------------------------------------------------------------


def test_config_found_by_walking_up_with_relative_excludes(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    write(project / "pyproject.toml", '[tool.gradfix]\nexclude = ["generated", "src/legacy/*.py", "*_pb2.py"]\n')
    write(project / "src" / "keep.py", SAFE)
    write(project / "src" / "legacy" / "old.py", SAFE)
    write(project / "src" / "legacy" / "deeper" / "kept.py", SAFE)  # `*` does not cross folders
    write(project / "src" / "generated" / "g.py", SAFE)
    write(project / "src" / "api_pb2.py", SAFE)
    monkeypatch.chdir(project / "src")
    result = run("check", "--format", "json", ".")
    assert sorted(d["path"] for d in json.loads(result.stdout)) == ["keep.py", "legacy/deeper/kept.py"]


def test_config_found_from_first_path_not_cwd(tmp_path):
    write(tmp_path / "proj" / "pyproject.toml", '[tool.gradfix]\nignore = ["GF101"]\n')
    write(tmp_path / "proj" / "a.py", SAFE)
    assert run("check", "proj/a.py").exit_code == 0
    assert run("check", "proj/a.py", "--select", "GF101").exit_code == 1  # --select starts afresh
    assert run("check", "proj/a.py", "--ignore", "GF102").exit_code == 0  # --ignore adds to the file's


def test_pyproject_without_gradfix_table_is_skipped(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.gradfix]\nignore = ["GF101"]\n')
    write(tmp_path / "inner" / "pyproject.toml", '[project]\nname = "x"\n')
    write(tmp_path / "inner" / "a.py", SAFE)
    assert run("check", "inner").exit_code == 0


def test_config_unsafe_fixes_and_cli_override(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.gradfix]\nunsafe-fixes = true\n")
    write(tmp_path / "b.py", UNSAFE)
    result = run("fix", "--no-unsafe-fixes", "b.py")
    assert result.exit_code == 1
    assert (tmp_path / "b.py").read_text() == UNSAFE
    result = run("fix", "b.py")
    assert result.exit_code == 0
    assert (tmp_path / "b.py").read_text() == UNSAFE_FIXED


def test_config_select(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.gradfix]\nselect = ["GF102"]\n')
    write(tmp_path / "a.py", SAFE)
    assert run("check", "a.py").exit_code == 0


def test_explicit_config_file(tmp_path):
    write(tmp_path / "settings.toml", 'ignore = ["GF1"]\n')
    write(tmp_path / "a.py", SAFE)
    assert run("check", "--config", "settings.toml", "a.py").exit_code == 0
    result = run("check", "--config", "missing.toml", "a.py")
    assert result.exit_code == 2
    assert "missing.toml: configuration file not found" in result.stderr


def test_unknown_config_key_warns(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.gradfix]\nselct = ["GF101"]\n')
    write(tmp_path / "a.py", SAFE)
    result = run("check", "a.py")
    assert result.exit_code == 1
    assert "warning:" in result.stderr and "unknown key 'selct'" in result.stderr
    assert "did you mean 'select'" in result.stderr


@pytest.mark.parametrize(
    "body, message",
    [
        ('select = "GF101"', "`select` must be a list of strings, got a string"),
        ("ignore = [1]", "`ignore` must be a list of strings"),
        ('exclude = "build"', "`exclude` must be a list of strings"),
        ('unsafe-fixes = "yes"', "`unsafe-fixes` must be true or false"),
        ('select = ["XX1"]', "unknown rule selector 'XX1'"),
        ("select = [", "invalid TOML"),
    ],
)
def test_bad_config_exits_2(tmp_path, body, message):
    write(tmp_path / "pyproject.toml", f"[tool.gradfix]\n{body}\n")
    write(tmp_path / "a.py", SAFE)
    result = run("check", "a.py")
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert run("fix", "a.py").exit_code == 2
    assert (tmp_path / "a.py").read_text() == SAFE


# --- fix ------------------------------------------------------------------------------------


def test_fix_rewrites_and_reports(tmp_path):
    write(tmp_path / "a.py", SAFE + "y *= 2\n")
    result = run("fix", "a.py")
    assert result.exit_code == 0
    assert (tmp_path / "a.py").read_text() == SAFE_FIXED + "y = y * 2\n"
    assert result.stdout.splitlines() == [
        "Fixed 2 findings in a.py (GF101 \u00d72)",
        "Found 2 findings (2 fixed, 0 remaining).",
    ]


def test_fix_lists_what_remains_exit_1(tmp_path):
    write(tmp_path / "a.py", SAFE)
    write(tmp_path / "b.py", UNSAFE)
    result = run("fix", ".")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "Fixed 1 finding in a.py (GF101 \u00d71)"
    assert lines[1].startswith("b.py:5:5: GF101 error: in-place")
    assert lines[2] == "Found 2 findings (1 fixed, 1 remaining). 1 more fixable with `--unsafe-fixes`."
    assert (tmp_path / "b.py").read_text() == UNSAFE
    assert run("fix", "--exit-zero", ".").exit_code == 0


def test_fix_unsafe(tmp_path):
    write(tmp_path / "b.py", UNSAFE)
    result = run("fix", "--unsafe-fixes", "b.py")
    assert result.exit_code == 0
    assert (tmp_path / "b.py").read_text() == UNSAFE_FIXED


def test_fix_nothing_to_do(tmp_path):
    write(tmp_path / "a.py", CLEAN)
    result = run("fix", "a.py")
    assert result.exit_code == 0
    assert result.stdout == "All checks passed!\n"


def test_fix_twice_equals_fix_once(tmp_path):
    write(tmp_path / "a.py", SAFE + "y *= 2\ny[0] += 1\n")
    write(tmp_path / "b.py", UNSAFE)
    write(tmp_path / "c.py", SAFE.replace("\n", "\r\n"))
    first = run("fix", "--unsafe-fixes", ".")
    after_once = {p.name: p.read_bytes() for p in tmp_path.glob("*.py")}
    assert after_once["a.py"] != (SAFE + "y *= 2\ny[0] += 1\n").encode()
    second = run("fix", "--unsafe-fixes", ".")
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.py")} == after_once
    assert "Fixed" not in second.stdout
    assert first.exit_code == second.exit_code == 0


def test_fix_leaves_clean_files_untouched(tmp_path):
    clean = write(tmp_path / "clean.py", CLEAN)
    unsafe = write(tmp_path / "unsafe.py", UNSAFE)
    write(tmp_path / "a.py", SAFE)
    for path in (clean, unsafe):
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    run("fix", ".")
    for path, text in ((clean, CLEAN), (unsafe, UNSAFE)):
        assert path.stat().st_mtime_ns == 1_000_000_000_000_000_000
        assert path.read_bytes() == text.encode()
    assert (tmp_path / "a.py").read_text() == SAFE_FIXED


def test_fix_syntax_error_in_one_file_others_still_fixed(tmp_path):
    write(tmp_path / "bad.py", BROKEN)
    write(tmp_path / "good.py", SAFE)
    result = run("fix", ".")
    assert result.exit_code == 2
    assert "bad.py:2:5: syntax error: " in result.stderr
    assert (tmp_path / "good.py").read_text() == SAFE_FIXED
    assert (tmp_path / "bad.py").read_text() == BROKEN


def test_fix_engine_errors_are_reported_exit_2(tmp_path, monkeypatch):
    write(tmp_path / "a.py", SAFE)

    def fake_fix(source, path, **kwargs):
        return FixResult(source=source, errors=[f"{path}:4: GF101 fix produced invalid code; not applied"])

    monkeypatch.setattr(runner, "fix_source", fake_fix)
    result = run("fix", "a.py")
    assert result.exit_code == 2
    assert "a.py:4: GF101 fix produced invalid code; not applied" in result.stderr


def test_a_crash_in_the_engine_is_reported_per_file(tmp_path, monkeypatch):
    write(tmp_path / "a.py", SAFE)
    write(tmp_path / "b.py", SAFE)
    real = runner.check_source

    def crashing(source, path, **kwargs):
        if path == "a.py":
            raise RecursionError("maximum recursion depth exceeded")
        return real(source, path, **kwargs)

    monkeypatch.setattr(runner, "check_source", crashing)
    result = run("check", ".")
    assert result.exit_code == 2
    assert "a.py: internal error in gradfix (RecursionError: maximum recursion depth exceeded)" in result.stderr
    assert "b.py:4:1: GF101" in result.stdout


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    for index in range(40):
        write(tmp_path / f"m{index:02}.py", SAFE)
    result = run("check", ".")
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 41


# --- other commands ---------------------------------------------------------------------------


def test_rules_lists_every_rule():
    from gradfix.codemods import ALL_RULES

    result = run("rules")
    assert result.exit_code == 0
    for rule in ALL_RULES:
        assert any(line.startswith(rule.code) and rule.name in line for line in result.stdout.splitlines())
    data = json.loads(run("rules", "--format", "json").stdout)
    assert [r["code"] for r in data] == [r.code for r in ALL_RULES]


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("gradfix ")


# --- the real entry points ----------------------------------------------------------------------


def _subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, timeout=60)


def test_python_m_gradfix_exit_codes(tmp_path):
    write(tmp_path / "a.py", SAFE)
    command = [sys.executable, "-m", "gradfix"]
    checked = _subprocess(command + ["check", "a.py"], tmp_path)
    assert checked.returncode == 1
    assert checked.stdout.decode().startswith("a.py:4:1: GF101 [*]")
    write(tmp_path / "bad.py", BROKEN)
    assert _subprocess(command + ["check", "bad.py"], tmp_path).returncode == 2
    assert _subprocess(command + ["check", "--frobnicate"], tmp_path).returncode == 2


def test_console_script_fix(tmp_path):
    script = Path(sys.executable).parent / "gradfix"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    write(tmp_path / "a.py", SAFE)
    fixed = _subprocess([str(script), "fix", "a.py"], tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert (tmp_path / "a.py").read_text() == SAFE_FIXED
    assert _subprocess([str(script), "check", "a.py"], tmp_path).returncode == 0


WARNING_ONLY = "import torch\ndef f(h: torch.Tensor):\n    h.mul_(2)\n    return h\n"


def test_level_options_for_check_and_fix(tmp_path):
    write(tmp_path / "a.py", SAFE)
    write(tmp_path / "w.py", WARNING_ONLY)
    both = run("check", ".")
    assert [line.split(": ")[1] for line in both.stdout.splitlines()[:2]] == ["GF101 [*] error", "GF102 warning"]
    assert "1 warning fixed only with `--level warning`" in both.stdout
    errors_only = run("check", ".", "--level", "error")
    assert errors_only.stdout.count("GF10") == 1 and "w.py" not in errors_only.stdout
    fixed = run("fix", "--unsafe-fixes", ".")
    assert (tmp_path / "w.py").read_text() == WARNING_ONLY  # warnings are not fixed by default
    assert "1 warning left as is" in fixed.stdout
    run("fix", "--unsafe-fixes", "--level", "warning", ".")
    assert "h = h.mul(2)" in (tmp_path / "w.py").read_text()
