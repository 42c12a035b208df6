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
