"""Every fixture gives exactly its expected findings and fixed text, and is executed under torch:
the original fails the way its header says (so fixtures stay honest as torch changes), and the
fixed file and every negative run forward and backward without error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradfix.codemods import FixSafety, Level, check_source, fix_source

from fixture_files import FIXTURES, Fixture, all_fixtures

FIXTURE_LIST = all_fixtures()
IDS = [f.id for f in FIXTURE_LIST]
RUNNER = Path(__file__).with_name("script_runner.py")


def test_every_rule_has_fixtures():
    from gradfix.codemods import ALL_RULES

    for rule in ALL_RULES:
        folder = FIXTURES / rule.code
        pairs = list(folder.glob("*.fixed.py"))
        negatives = list(folder.glob("neg_*.py"))
        assert len(pairs) >= 3, f"{rule.code} needs before/after fixtures"
        assert len(negatives) >= 2, f"{rule.code} needs negative fixtures"


@pytest.mark.parametrize("fixture", FIXTURE_LIST, ids=IDS)
def test_findings_are_exactly_the_expected_ones(fixture: Fixture):
    source = fixture.path.read_text(encoding="utf-8")
    findings = check_source(source, str(fixture.path))
    got = [(f.line, f.col, f.code, f.fix_safety.value, f.level.value) for f in findings]
    assert got == fixture.expected
    if fixture.is_negative:
        assert got == []


@pytest.mark.parametrize("fixture", FIXTURE_LIST, ids=IDS)
def test_fix_gives_the_fixed_file(fixture: Fixture):
    source = fixture.path.read_text(encoding="utf-8")
    result = fix_source(source, str(fixture.path), **fixture.fix_options)
    assert result.errors == []
    expected = fixture.fixed_path.read_text(encoding="utf-8") if fixture.fixed_path else source
    assert result.source == expected
    # Idempotent: fixing the fixed text changes nothing.
    assert fix_source(result.source, **fixture.fix_options).source == result.source
    # What remains is only what this mode does not fix.
    for finding in result.remaining:
        assert (
            finding.fix_safety is FixSafety.DISPLAY_ONLY
            or (finding.fix_safety is FixSafety.UNSAFE and not fixture.unsafe_fixes)
            or (finding.level is Level.WARNING and not fixture.fix_warnings)
        ), finding


@pytest.mark.parametrize("fixture", [f for f in FIXTURE_LIST if f.unsafe_fixes or f.fix_warnings], ids=lambda f: f.id)
def test_fixture_needing_flags_is_untouched_by_default_fix(fixture: Fixture):
    source = fixture.path.read_text(encoding="utf-8")
    assert fix_source(source).source == source


@pytest.mark.parametrize("fixture", [f for f in FIXTURE_LIST if f.is_negative], ids=lambda f: f.id)
def test_negative_is_byte_identical_under_unsafe_fixes(fixture: Fixture):
    source = fixture.path.read_text(encoding="utf-8")
    assert fix_source(source, unsafe_fixes=True, level=Level.WARNING).source == source


# --- execution under torch --------------------------------------------------------


@pytest.fixture(scope="module")
def run_results() -> dict[str, dict]:
    """Run every fixture and fixed file once, in one process that imports torch once."""
    pytest.importorskip("torch")
    paths = [str(f.path) for f in FIXTURE_LIST] + [str(f.fixed_path) for f in FIXTURE_LIST if f.fixed_path]
    completed = subprocess.run(
        [sys.executable, str(RUNNER), *paths], capture_output=True, text=True, timeout=600, check=True
    )
    return {item["path"]: item for item in json.loads(completed.stdout)}


@pytest.mark.parametrize("fixture", FIXTURE_LIST, ids=IDS)
def test_original_behaves_as_its_header_says(fixture: Fixture, run_results):
    result = run_results[str(fixture.path)]
    if fixture.original_raises is None:
        assert result["status"] == "ok", result
        assert result["backward_calls"] >= 1
    else:
        exception, message = fixture.original_raises
        assert result["status"] == "raised", f"{fixture.id} was expected to fail but ran"
        assert result["exception"] == exception
        assert result["message"].startswith(message), result["message"]


@pytest.mark.parametrize("fixture", [f for f in FIXTURE_LIST if f.fixed_path], ids=lambda f: f.id)
def test_fixed_file_runs_forward_and_backward(fixture: Fixture, run_results):
    result = run_results[str(fixture.fixed_path)]
    assert result["status"] == "ok", result.get("traceback")
    assert result["backward_calls"] >= 1
