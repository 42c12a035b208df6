"""gradfix at repository scale: worker processes, the result cache, CI formats, pre-commit hooks."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradfix import cache, report, runner
from gradfix.cli import app
from gradfix.codemods import ALL_RULES, Finding, FixSafety, Level

ROOT = Path(__file__).resolve().parents[1]

SAFE = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny += 1\n"
SAFE_FIXED = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny = y + 1\n"
UNSAFE = "import torch\ndef f(x, outs):\n    h = torch.sigmoid(x)\n    outs.append(h)\n    h += 1\n    return h\n"
TWO = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny += 1\ny.mul_(2)\n"
CLEAN = "import torch\nx = torch.zeros(3)\n"
BROKEN = "import torch\nx = (\n"
WARNING_ONLY = "import torch\ndef f(h: torch.Tensor):\n    h.mul_(2)\n    return h\n"


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cache.CACHE_DIR_ENV, raising=False)


def make_tree(root: Path, count: int = 24) -> None:
    """Files of every kind: findings (safe, unsafe, two), clean, a syntax error, nested folders."""
    kinds = [SAFE, UNSAFE, TWO, CLEAN]
    for index in range(count):
        write(root / f"pkg{index % 3}" / f"m{index:02}.py", kinds[index % len(kinds)])
    write(root / "pkg1" / "broken.py", BROKEN)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.py"))}


def record_calls(monkeypatch, log: Path, name: str = "check_source", delay_for=None):
    """Wrap the engine entry point: each call appends ``pid path`` to ``log`` (workers too: fork)."""
    real = getattr(runner, name)

    def recording(source, path, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {path}\n")
        if delay_for is not None:
            time.sleep(delay_for(path))
        return real(source, path, **kwargs)

    monkeypatch.setattr(runner, name, recording)


def calls(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(pid), path) for pid, path in (line.split(" ", 1) for line in log.read_text().splitlines())]


# --- worker processes ---------------------------------------------------------------------------


def test_parallel_check_prints_exactly_what_a_serial_run_prints(tmp_path, monkeypatch):
    make_tree(tmp_path)
    serial = run("check", ".", "--jobs", "1", "--no-cache")
    log = tmp_path.parent / f"{tmp_path.name}.calls"
    # Files that sort first finish last, so completion order is the reverse of display order.
    record_calls(monkeypatch, log, delay_for=lambda path: 0.05 if "m0" in path else 0.0)
    parallel = run("check", ".", "--jobs", "3", "--no-cache")
    assert serial.exit_code == parallel.exit_code == 2  # broken.py
    assert parallel.stdout == serial.stdout
    assert parallel.stderr == serial.stderr
    assert "pkg1/broken.py:2:" in parallel.stderr
    workers = {pid for pid, _ in calls(log)}
    assert os.getpid() not in workers and len(workers) >= 2  # really analysed in worker processes
    assert sorted(path for _, path in calls(log)) == sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.py"))


def test_parallel_fix_writes_the_same_bytes_as_a_serial_fix(tmp_path):
    make_tree(tmp_path / "serial")
    make_tree(tmp_path / "parallel")
    os.chdir(tmp_path / "serial")
    serial = run("fix", ".", "--jobs", "1", "--no-cache", "--unsafe-fixes")
    os.chdir(tmp_path / "parallel")
    parallel = run("fix", ".", "--jobs", "2", "--no-cache", "--unsafe-fixes")
    assert parallel.stdout == serial.stdout and parallel.exit_code == serial.exit_code
    assert snapshot(tmp_path / "parallel") == snapshot(tmp_path / "serial")
    assert (tmp_path / "parallel" / "pkg0" / "m00.py").read_text() == SAFE_FIXED
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]


def test_a_rule_crash_in_a_worker_is_recorded_on_its_file(tmp_path, monkeypatch):
    make_tree(tmp_path)
    real = runner.check_source

    def crashing(source, path, **kwargs):
        if path.endswith("m05.py"):
            raise RecursionError("maximum recursion depth exceeded")
        return real(source, path, **kwargs)

    monkeypatch.setattr(runner, "check_source", crashing)
    result = run("check", ".", "--jobs", "2", "--no-cache")
    assert result.exit_code == 2
    assert "pkg2/m05.py: internal error in gradfix (RecursionError: maximum recursion depth exceeded)" in result.stderr
    assert "pkg0/m00.py:4:1: GF101" in result.stdout


def test_a_worker_process_that_dies_costs_only_its_own_file(tmp_path, monkeypatch):
    make_tree(tmp_path)
    real = runner.check_source

    def dying(source, path, **kwargs):
        if path.endswith("m06.py"):
            os._exit(3)  # as a segfault in a parser or the OOM killer would
        return real(source, path, **kwargs)

    expected = run("check", ".", "--jobs", "1", "--no-cache").stdout
    monkeypatch.setattr(runner, "check_source", dying)
    result = run("check", ".", "--jobs", "2", "--no-cache")
    assert result.exit_code == 2
    assert "pkg0/m06.py: the worker process analysing this file died; file left unchanged" in result.stderr
    # Every other file's findings are there; m06.py (a TWO file) lost its two and only those.
    lost = [line for line in expected.splitlines() if line.startswith("pkg0/m06.py:")]
    assert len(lost) == 2
    kept = [line for line in expected.splitlines()[:-1] if not line.startswith("pkg0/m06.py:")]
    assert result.stdout.splitlines()[:-1] == kept


def test_one_job_and_a_handful_of_files_start_no_pool(tmp_path, monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(runner, "ProcessPoolExecutor", no_pool)
    make_tree(tmp_path)
    assert run("check", ".", "--jobs", "1", "--no-cache").exit_code == 2
    for index in range(runner.FILES_PER_WORKER * 2 - 1):
        write(tmp_path / "few" / f"f{index}.py", SAFE)
    result = run("check", "few", "--jobs", "8", "--no-cache")
    assert result.exit_code == 1 and "Found 7 findings" in result.stdout


def test_chunks_put_the_largest_files_first_and_cover_every_file():
    pending = [(f"f{i}.py", f"f{i}.py", size) for i, size in enumerate([5, 900, 30, 900, 1, 70] * 20)]
    chunks = runner._chunks(pending, workers=2)
    flat = [display for chunk in chunks for _, display in chunk]
    assert sorted(flat) == sorted(display for _, display, _ in pending)
    sizes = {display: size for _, display, size in pending}
    assert [sizes[d] for d in flat] == sorted((sizes[d] for d in flat), reverse=True)


SLOW_DRIVER = textwrap.dedent("""
    import os, sys, time
    from gradfix import runner
    from gradfix.cli import main

    def slow(source, path, **kwargs):
        open(os.environ["STARTED"], "a").close()
        time.sleep(60)
        raise AssertionError("not interrupted")
    runner.fix_source = slow
    sys.argv = ["gradfix", *sys.argv[1:]]
    main()
""")


def test_ctrl_c_exits_130_without_tracebacks_or_leftover_workers(tmp_path):
    make_tree(tmp_path / "tree")
    before = snapshot(tmp_path / "tree")
    write(tmp_path / "driver.py", SLOW_DRIVER)
    started = tmp_path / "started"
    env = {**os.environ, "STARTED": str(started)}
    process = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), "fix", "tree", "--jobs", "2", "--no-cache"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "no worker started"
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends: the whole process group
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert stderr.decode() == "Interrupted: files already written are fixed; the others are unchanged.\n"
    with pytest.raises(ProcessLookupError):  # no worker outlives the run
        os.killpg(process.pid, 0)
    assert snapshot(tmp_path / "tree") == before  # every worker was still analysing: nothing written
    assert not [p for p in (tmp_path / "tree").rglob("*") if "tmp" in p.name]


# --- the cache --------------------------------------------------------------------------------------


@pytest.fixture
def engine_calls(tmp_path, monkeypatch):
    """The files the engine analysed (check or fix), in this process (--jobs 1)."""
    log = tmp_path.parent / f"{tmp_path.name}.calls"
    record_calls(monkeypatch, log, "check_source")
    record_calls(monkeypatch, log, "fix_source")

    def analysed() -> list[str]:
        paths = sorted(path for _, path in calls(log))
        log.unlink(missing_ok=True)
        return paths

    return analysed


def test_a_second_check_analyses_nothing_and_prints_the_same(tmp_path, engine_calls):
    make_tree(tmp_path, 8)
    first = run("check", ".", "--jobs", "1")
    assert len(engine_calls()) == 9
    second = run("check", ".", "--jobs", "1")
    assert engine_calls() == []
    assert (second.stdout, second.stderr, second.exit_code) == (first.stdout, first.stderr, first.exit_code)
    assert "pkg1/broken.py:2:" in second.stderr  # syntax errors come from the cache too
    marker = tmp_path / ".gradfix_cache"
    assert (marker / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (marker / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_no_cache_neither_reads_nor_writes(tmp_path, engine_calls):
    write(tmp_path / "a.py", SAFE)
    run("check", ".", "--jobs", "1")
    engine_calls()
    assert run("check", ".", "--jobs", "1", "--no-cache").exit_code == 1
    assert engine_calls() == ["a.py"]
    shutil.rmtree(tmp_path / ".gradfix_cache")
    run("check", ".", "--no-cache")
    assert not (tmp_path / ".gradfix_cache").exists()


def test_a_changed_file_is_analysed_again_even_with_the_same_size_and_mtime(tmp_path, engine_calls):
    make_tree(tmp_path, 8)
    run("check", ".", "--jobs", "1")
    engine_calls()
    target = tmp_path / "pkg0" / "m03.py"  # CLEAN
    info = target.stat()
    new = CLEAN.replace("zeros(3)", "zeros(4)")
    assert len(new) == len(CLEAN)
    target.write_text(new)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    result = run("check", ".", "--jobs", "1")
    assert engine_calls() == ["pkg0/m03.py"]
    assert "pkg0/m03.py" not in result.stdout
    target.write_text(SAFE)
    result = run("check", ".", "--jobs", "1")
    assert engine_calls() == ["pkg0/m03.py"]
    assert "pkg0/m03.py:4:1: GF101" in result.stdout


@pytest.mark.parametrize("flags", [("--select", "GF102"), ("--level", "error"), ("--unsafe-fixes",), ("--ignore", "GF101")])
def test_changed_settings_miss_the_cache(tmp_path, engine_calls, flags):
    write(tmp_path / "a.py", TWO)
    run("check", "a.py", "--jobs", "1")
    engine_calls()
    changed = run("check", "a.py", "--jobs", "1", *flags)
    assert engine_calls() == ["a.py"]
    again = run("check", "a.py", "--jobs", "1", *flags)
    assert engine_calls() == []
    assert again.stdout == changed.stdout


def test_config_file_settings_are_part_of_the_key(tmp_path, engine_calls):
    write(tmp_path / "a.py", TWO)
    write(tmp_path / "pyproject.toml", "[tool.gradfix]\n")
    assert "GF101" in run("check", ".", "--jobs", "1").stdout
    engine_calls()
    write(tmp_path / "pyproject.toml", "[tool.gradfix]\nignore = ['GF101']\n")
    result = run("check", ".", "--jobs", "1")
    assert engine_calls() == ["a.py"]
    assert "GF101" not in result.stdout and "GF102" in result.stdout


def test_another_gradfix_build_misses_the_cache(tmp_path, engine_calls, monkeypatch):
    write(tmp_path / "a.py", SAFE)
    run("check", ".", "--jobs", "1")
    engine_calls()
    monkeypatch.setattr(cache, "__version__", "99.0")
    monkeypatch.setattr(cache, "_fingerprint", None)
    run("check", ".", "--jobs", "1")
    assert engine_calls() == ["a.py"]
    assert len([p for p in (tmp_path / ".gradfix_cache").iterdir() if p.is_dir()]) == 2
    assert any(p.name.startswith("99.0-") for p in (tmp_path / ".gradfix_cache").iterdir())


def test_the_fingerprint_covers_every_engine_source(monkeypatch):
    from gradfix import codemods

    seen: list[Path] = []
    real = Path.read_bytes

    def reading(self):
        seen.append(self.resolve())
        return real(self)

    monkeypatch.setattr(cache, "_fingerprint", None)
    monkeypatch.setattr(Path, "read_bytes", reading)
    before = cache.engine_fingerprint()
    engine_root = Path(codemods.__file__).resolve().parent
    for source in list(engine_root.rglob("*.py")) + list(engine_root.rglob("*.json")):
        assert source.resolve() in seen, source
    assert Path(runner.__file__).resolve() in seen
    # An edited rule gives another fingerprint.
    rule = min((engine_root / "rules").glob("gf1*.py"))
    edited = real(rule) + b"\n# edited\n"
    monkeypatch.setattr(Path, "read_bytes", lambda self: edited if self.resolve() == rule.resolve() else real(self))
    monkeypatch.setattr(cache, "_fingerprint", None)
    assert cache.engine_fingerprint() != before


def test_check_and_fix_keep_separate_entries_and_fix_skips_files_with_nothing_to_fix(tmp_path, engine_calls):
    write(tmp_path / "a.py", SAFE)
    write(tmp_path / "clean.py", CLEAN)
    write(tmp_path / "unsafe.py", UNSAFE)
    run("check", ".", "--jobs", "1")
    engine_calls()
    first = run("fix", ".", "--jobs", "1")
    assert engine_calls() == ["a.py", "clean.py", "unsafe.py"]  # check's entries are not fix's
    assert first.exit_code == 1 and (tmp_path / "a.py").read_text() == SAFE_FIXED
    second = run("fix", ".", "--jobs", "1")
    # clean.py and unsafe.py (nothing fixable without --unsafe-fixes) are not analysed again;
    # a.py was rewritten, so its new content is.
    assert engine_calls() == ["a.py"]
    remaining = [line for line in first.stdout.splitlines() if line.startswith("unsafe.py:")]
    assert remaining and [line for line in second.stdout.splitlines() if ".py:" in line] == remaining
    third = run("fix", ".", "--jobs", "1", "--diff")
    assert engine_calls() == [] and third.exit_code == 0
    run("fix", ".", "--jobs", "1", "--unsafe-fixes")
    assert engine_calls() == ["a.py", "clean.py", "unsafe.py"]
    assert "h = h + 1" in (tmp_path / "unsafe.py").read_text()


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"path": "a.py"}', b'{"path": "a.py", "content": 1, "findings": 7, "errors": []}',
                                    b"\xff\xfe\x00binary"])
def test_a_corrupt_cache_entry_is_ignored_and_replaced(tmp_path, engine_calls, damage):
    write(tmp_path / "a.py", SAFE)
    first = run("check", ".", "--jobs", "1")
    engine_calls()
    entries = [p for p in (tmp_path / ".gradfix_cache").rglob("*") if p.is_file() and p.parent.parent.name.startswith("0")]
    assert len(entries) == 1
    entries[0].write_bytes(damage)
    second = run("check", ".", "--jobs", "1")
    assert engine_calls() == ["a.py"]
    assert (second.stdout, second.stderr, second.exit_code) == (first.stdout, first.stderr, first.exit_code)
    assert json.loads(entries[0].read_bytes())["path"] == "a.py"  # rewritten whole


def test_a_finding_with_the_wrong_content_hash_is_never_used(tmp_path):
    write(tmp_path / "a.py", SAFE)
    run("check", ".", "--jobs", "1")
    (entry,) = [p for p in (tmp_path / ".gradfix_cache").rglob("*") if p.is_file() and len(p.name) == 40]
    data = json.loads(entry.read_text())
    data["findings"][0]["message"] = "planted"
    entry.write_text(json.dumps(data))
    assert "planted" in run("check", ".", "--jobs", "1").stdout  # same bytes: the entry is trusted
    write(tmp_path / "a.py", SAFE + "\n")
    assert "planted" not in run("check", ".", "--jobs", "1").stdout


def test_an_unwritable_cache_warns_once_and_the_run_goes_on(tmp_path):
    for index in range(12):
        write(tmp_path / f"m{index}.py", SAFE)
    blocker = write(tmp_path / "not-a-folder", "")
    result = run("check", ".", "--cache-dir", blocker / "cache")
    assert result.exit_code == 1
    assert "Found 12 findings" in result.stdout
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: cannot write the cache in ")
    assert blocker.read_text() == ""


def test_internal_errors_are_not_cached(tmp_path, monkeypatch):
    write(tmp_path / "a.py", SAFE)
    real = runner.check_source

    def crashing(source, path, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(runner, "check_source", crashing)
    assert run("check", ".", "--jobs", "1").exit_code == 2
    monkeypatch.setattr(runner, "check_source", real)
    result = run("check", ".", "--jobs", "1")
    assert result.exit_code == 1 and "a.py:4:1: GF101" in result.stdout


def test_the_cache_lives_in_the_project_root_or_where_gradfix_cache_dir_says(tmp_path, monkeypatch):
    write(tmp_path / "project" / "pyproject.toml", "[project]\nname = 'x'\n")
    write(tmp_path / "project" / "src" / "a.py", SAFE)
    os.chdir(tmp_path / "project" / "src")
    run("check", "a.py")
    assert (tmp_path / "project" / ".gradfix_cache" / "CACHEDIR.TAG").is_file()
    assert not (tmp_path / "project" / "src" / ".gradfix_cache").exists()
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "elsewhere"))
    run("check", "a.py")
    assert (tmp_path / "elsewhere" / "CACHEDIR.TAG").is_file()


def test_a_cache_opened_for_other_settings_is_refused(tmp_path):
    from gradfix.config import Settings

    settings = Settings(select=(), ignore=(), unsafe_fixes=False)
    store = cache.Cache(tmp_path / "c", settings, "fix")
    with pytest.raises(ValueError):
        runner.run([], settings, runner.CHECK, cache=store)


# --- only the files given ---------------------------------------------------------------------------


def test_files_passed_by_a_hook_are_the_only_files_read(tmp_path, monkeypatch):
    make_tree(tmp_path)
    from gradfix import files

    read: list[str] = []
    real_read = files.read_bytes

    def reading(path, display, max_bytes=None):
        read.append(os.path.normpath(path))
        return real_read(path, display, max_bytes)

    def no_walk(*args, **kwargs):
        raise AssertionError(f"walked {args[0]}")

    monkeypatch.setattr(files, "read_bytes", reading)
    monkeypatch.setattr(os, "walk", no_walk)
    monkeypatch.setattr(os, "scandir", no_walk)
    monkeypatch.setattr(os, "listdir", no_walk)
    given = ["pkg0/m00.py", "pkg2/m02.py"]
    result = run("check", *given, "--jobs", "1", "--force-exclude")
    assert result.exit_code == 1  # pkg1/broken.py, beside them, was not read
    assert set(read) == set(given)
    assert {line.split(":")[0] for line in result.stdout.splitlines()[:-1]} == set(given)


# --- formats --------------------------------------------------------------------------------------------


def _finding(**changes) -> Finding:
    values = dict(path="a.py", line=3, col=5, end_line=3, end_col=9, code="GF101", name="augmented-assignment-on-tensor",
                  message="in-place `+=` on `y`", fix_safety=FixSafety.SAFE, level=Level.ERROR)
    values.update(changes)
    return Finding(**values)


def _unescape(text: str) -> str:
    """The runner's side of actions/toolkit's escaping."""
    for escaped, char in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(escaped, char)
    return text


def test_github_annotation_escapes_data_and_properties():
    finding = _finding(path="dir,x/a:b%.py", message="50% of\r\nlines: a, b", level=Level.WARNING)
    line = report.github_annotation(finding)
    assert line == ("::warning file=dir%2Cx/a%3Ab%25.py,line=3,col=5,endLine=3,endColumn=9,"
                    "title=gradfix GF101 (augmented-assignment-on-tensor)::50%25 of%0D%0Alines: a, b")
    command, rest = line[2:].split(" ", 1)
    properties, message = rest.split("::", 1)
    assert command == "warning" and "\n" not in line and "\r" not in line
    fields = dict(item.split("=", 1) for item in properties.split(","))
    assert _unescape(fields["file"]) == finding.path
    assert message.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%") == finding.message
    assert report.github_annotation(_finding()).startswith("::error file=a.py,line=3,col=5,")


def test_check_format_github_from_the_command_line(tmp_path):
    write(tmp_path / "a,b.py", SAFE)
    write(tmp_path / "w.py", WARNING_ONLY)
    result = run("check", ".", "--format", "github")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("::error file=a%2Cb.py,line=4,col=1,endLine=4,endColumn=")
    assert all(line.startswith(("::error ", "::warning ")) for line in lines)
    assert len(lines) == len(json.loads(run("check", ".", "--format", "json").stdout)) == 2


SARIF_LEVELS = {"none", "note", "warning", "error"}


def assert_sarif_shape(log: dict) -> None:
    """The parts of the SARIF 2.1.0 schema a code-scanning upload relies on."""
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(log["runs"], list) and log["runs"]
    for run_ in log["runs"]:
        driver = run_["tool"]["driver"]
        assert isinstance(driver["name"], str) and driver["name"]
        ids = [rule["id"] for rule in driver["rules"]]
        assert len(ids) == len(set(ids))
        for rule in driver["rules"]:
            assert rule["shortDescription"]["text"]
            assert rule["defaultConfiguration"]["level"] in SARIF_LEVELS
        assert run_.get("columnKind") in (None, "utf16CodeUnits", "unicodeCodePoints")
        for result in run_["results"]:
            assert result["ruleId"] in ids
            if "ruleIndex" in result:
                assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
            assert result["level"] in SARIF_LEVELS
            assert isinstance(result["message"]["text"], str) and result["message"]["text"]
            assert result["locations"]
            for location in result["locations"]:
                physical = location["physicalLocation"]
                uri = physical["artifactLocation"]["uri"]
                assert not uri.startswith("/") and "\\" not in uri
                region = physical["region"]
                assert region["startLine"] >= 1 and region["startColumn"] >= 1
                assert region["endLine"] >= region["startLine"]
                if region["endLine"] == region["startLine"]:
                    assert region["endColumn"] >= region["startColumn"]


def test_check_format_sarif_matches_the_text_report(tmp_path):
    write(tmp_path / "sub dir" / "a.py", TWO)
    write(tmp_path / "w.py", WARNING_ONLY)
    sarif = run("check", ".", "--format", "sarif")
    assert sarif.exit_code == 1
    log = json.loads(sarif.stdout)
    assert_sarif_shape(log)
    (only,) = log["runs"]
    assert [rule["id"] for rule in only["tool"]["driver"]["rules"]] == [rule.code for rule in ALL_RULES]
    text = run("check", ".").stdout.splitlines()[:-1]
    rebuilt = []
    for result in only["results"]:
        location = result["locations"][0]["physicalLocation"]
        path = location["artifactLocation"]["uri"].replace("%20", " ")
        region = location["region"]
        rebuilt.append(f"{path}:{region['startLine']}:{region['startColumn']}: {result['ruleId']}")
    assert rebuilt == [line.split(" [*]")[0].split(" error:")[0].split(" warning:")[0] for line in text]
    assert {r["level"] for r in only["results"]} == {"error", "warning"}


def test_sarif_with_no_findings_is_still_a_valid_log(tmp_path):
    write(tmp_path / "a.py", CLEAN)
    result = run("check", ".", "--format", "sarif")
    assert result.exit_code == 0
    log = json.loads(result.stdout)
    assert_sarif_shape(log)
    assert log["runs"][0]["results"] == []


def test_files_that_cannot_be_checked_appear_in_github_and_sarif_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.py", SAFE)
    write(tmp_path / "broken.py", BROKEN)
    (tmp_path / "latin.py").write_bytes(b"\xff\xfe x = 1\n")
    github = run("check", ".", "--format", "github", "--no-cache")
    assert github.exit_code == 2
    problems = [line for line in github.stdout.splitlines() if "could not check" in line]
    assert len(problems) == 2
    (broken,) = [line for line in problems if "file=broken.py" in line]
    assert ",line=2" in broken and "syntax error" in broken
    assert any(line.startswith("::error file=latin.py,") and "decode" in line for line in problems)
    sarif = run("check", ".", "--format", "sarif", "--no-cache")
    log = json.loads(sarif.stdout)
    assert_sarif_shape(log)
    (invocation,) = log["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    notes = {n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: n for n in invocation["toolExecutionNotifications"]}
    assert set(notes) == {"broken.py", "latin.py"}
    assert notes["broken.py"]["locations"][0]["physicalLocation"]["region"]["startLine"] == 2
    assert all(n["level"] == "error" and n["message"]["text"] for n in notes.values())
    clean = json.loads(run("check", "a.py", "--format", "sarif", "--no-cache").stdout)
    assert clean["runs"][0]["invocations"] == [{"executionSuccessful": True, "toolExecutionNotifications": []}]


# --- progress ------------------------------------------------------------------------------------------


def test_the_progress_bar_shows_files_per_second_and_findings_so_far():
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=150)
    with runner._Progress(10, "Checking", console=console) as progress:
        progress.advance(3, 4)
        time.sleep(0.2)
        progress.advance(3, 3)
        progress._bar.refresh()
        shown = screen.getvalue()
    assert "6/10" in shown
    assert "7 findings" in shown
    assert "files/s" in shown and "- files/s" not in shown.splitlines()[-1]


# --- pre-commit -------------------------------------------------------------------------------------


def _local_hook_config() -> str:
    """The published hooks as `repo: local` hooks run by this interpreter (no install from the net)."""
    yaml = pytest.importorskip("yaml")
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    local = []
    for hook in hooks:
        assert hook["entry"].startswith("gradfix ")
        local.append({**hook, "language": "system", "entry": f"{sys.executable} -m gradfix {hook['entry'][len('gradfix '):]}"})
    return yaml.safe_dump({"repos": [{"repo": "local", "hooks": local}]})


@pytest.fixture
def git_repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    pytest.importorskip("pre_commit")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env.pop(cache.CACHE_DIR_ENV, None)

    def sh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300)

    sh("git", "init", "-q")
    write(repo / ".pre-commit-config.yaml", _local_hook_config())
    return repo, sh


def pre_commit(sh, *args: str) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "pre_commit", "run", *args)


def test_pre_commit_fix_hook_fixes_staged_files_fails_then_passes(git_repo):
    repo, sh = git_repo
    write(repo / "a.py", SAFE)
    write(repo / "clean.py", CLEAN)
    write(repo / "untracked_broken.py", BROKEN)  # not staged: never passed, never read
    sh("git", "add", "a.py", "clean.py", ".pre-commit-config.yaml")
    first = pre_commit(sh, "gradfix-fix")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Fixed 1 finding in a.py" in first.stdout
    assert "untracked_broken.py" not in first.stdout
    assert (repo / "a.py").read_text() == SAFE_FIXED
    sh("git", "add", "a.py")
    second = pre_commit(sh, "gradfix-fix")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Passed" in second.stdout


def test_pre_commit_check_hook_reports_and_fails(git_repo):
    repo, sh = git_repo
    write(repo / "b.py", UNSAFE)
    sh("git", "add", "b.py", ".pre-commit-config.yaml")
    result = pre_commit(sh, "gradfix-check")
    assert result.returncode == 1
    assert "b.py:5:5: GF101 error:" in result.stdout
    assert (repo / "b.py").read_text() == UNSAFE
    sh("git", "rm", "-q", "--cached", "b.py")
    write(repo / "c.py", CLEAN)
    sh("git", "add", "c.py")
    assert pre_commit(sh, "gradfix-check").returncode == 0


def test_fix_exit_non_zero_on_fix_only_when_something_was_written(tmp_path):
    write(tmp_path / "a.py", SAFE)
    assert run("fix", "a.py").exit_code == 0  # fixed, nothing remains
    write(tmp_path / "a.py", SAFE)
    assert run("fix", "a.py", "--exit-non-zero-on-fix").exit_code == 1
    assert run("fix", "a.py", "--exit-non-zero-on-fix").exit_code == 0  # already fixed


def test_a_large_file_travels_alone_and_small_files_in_groups():
    pending = [("big.py", "big.py", 10_000_000)] + [(f"s{i}.py", f"s{i}.py", 100) for i in range(200)]
    chunks = list(runner._chunks(pending, workers=2))
    assert chunks[0] == [("big.py", "big.py")]
    assert all(len(chunk) <= runner.MAX_CHUNK_FILES for chunk in chunks)
    assert len(chunks) == 1 + 200 // runner.MAX_CHUNK_FILES + (200 % runner.MAX_CHUNK_FILES > 0)
