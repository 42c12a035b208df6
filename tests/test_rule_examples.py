"""Each rule's own examples (Fixit's VALID/INVALID idea): findings count and exact rewrite."""

from __future__ import annotations

import pytest

from gradfix.codemods import ALL_RULES, Level, check_source, fix_source

CASES = [(rule, index, example) for rule in ALL_RULES for index, example in enumerate(rule.examples)]


@pytest.mark.parametrize("rule,index,example", CASES, ids=[f"{r.code}-{i}" for r, i, _ in CASES])
def test_rule_example(rule, index, example):
    findings = check_source(example.before, select=[rule.code])
    assert len(findings) == example.findings, findings
    assert all(f.code == rule.code for f in findings)
    level = Level.WARNING if example.fix_warnings else Level.ERROR
    fixed = fix_source(example.before, select=[rule.code], unsafe_fixes=example.unsafe_fixes, level=level).source
    assert fixed == (example.after if example.after is not None else example.before)


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_rule_is_documented(rule):
    assert rule.code.startswith("GF") and len(rule.code) == 5
    assert rule.name and rule.why and rule.explanation and rule.not_flagged
    assert any(e.after is not None and e.after != e.before for e in rule.examples), "needs a fixed example"
    assert any(e.findings == 0 for e in rule.examples), "needs a valid (not flagged) example"
