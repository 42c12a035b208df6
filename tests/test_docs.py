"""docs/rules.md is generated from the rule classes and must be current."""

from pathlib import Path

from gradfix.codemods import ALL_RULES
from gradfix.codemods.docs import render_all

ROOT = Path(__file__).resolve().parent.parent


def test_rules_md_is_generated_from_the_rules():
    assert (ROOT / "docs" / "rules.md").read_text(encoding="utf-8") == render_all(), (
        "stale docs: run python scripts/generate_rule_docs.py"
    )


def test_readme_lists_every_rule():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for rule in ALL_RULES:
        assert rule.code in readme and rule.name in readme


def test_rule_command_prints_one_rules_page_by_code_or_name():
    import json

    from typer.testing import CliRunner

    from gradfix.cli import app

    runner = CliRunner()
    by_code = runner.invoke(app, ["rule", "gf104"])
    assert by_code.exit_code == 0
    assert by_code.stdout.startswith("## GF104 subscript-assignment-on-tensor")
    assert "**Fix safety.**" in by_code.stdout and "## GF105" not in by_code.stdout
    by_name = runner.invoke(app, ["rule", "inplace-argument", "--format", "json"])
    assert json.loads(by_name.stdout)["code"] == "GF105"
    unknown = runner.invoke(app, ["rule", "GF999"])
    assert unknown.exit_code == 2 and "unknown rule 'GF999'" in unknown.output


def test_rule_codes_known_at_start_up_match_the_registry():
    from gradfix.codemods import ALL_RULES
    from gradfix.codemods.codes import RULE_CODES

    assert RULE_CODES == tuple(rule.code for rule in ALL_RULES)


def test_a_cached_run_does_not_load_libcst():
    """The CLI's start-up and a warm-cache run need no parser: libcst loads in the workers that parse."""
    import subprocess
    import sys

    code = "import sys, gradfix.cli, gradfix.runner, gradfix.cache, gradfix.report; print('libcst' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
