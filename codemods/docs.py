"""Rule documentation, generated from the rule classes (Ruff-style pages).

``docs/rules.md`` is this module's output; ``tests/test_docs.py`` keeps it current:
    python scripts/generate_rule_docs.py
"""

from __future__ import annotations

from typing import Iterable, Optional

from .rule import Rule
from .rules import ALL_RULES


def anchor(rule: type[Rule]) -> str:
    return f"{rule.code.lower()}-{rule.name}"


def _flags(example) -> str:
    flags = [f for f, on in (("--unsafe-fixes", example.unsafe_fixes), ("--level warning", example.fix_warnings)) if on]
    return f" (with `{' '.join(flags)}`)" if flags else ""


def render_rule(rule: type[Rule]) -> str:
    example = next(e for e in rule.examples if e.after is not None and e.after != e.before)
    valid = next((e for e in rule.examples if e.findings == 0), None)
    parts = [
        f"## {rule.code} {rule.name}\n",
        f"**Why it is a problem.** {rule.why}\n",
        rule.explanation + "\n",
        "**Example**\n",
        "```python\n" + example.before + "```\n",
        "**Fix**" + _flags(example) + "\n",
        "```python\n" + example.after + "```\n",  # type: ignore[operator]
        f"**Fix safety.** {rule.fix_safety}\n",
        f"**Not flagged.** {rule.not_flagged}\n",
    ]
    if valid is not None:
        parts.append("```python\n# not flagged\n" + valid.before + "```\n")
    return "\n".join(parts)


def find_rule(key: str) -> Optional[type[Rule]]:
    """The rule with this code (any case) or name, if there is one."""
    wanted = key.strip().lower()
    return next((r for r in ALL_RULES if wanted in (r.code.lower(), r.name)), None)


def render_all(rules: Iterable[type[Rule]] = ALL_RULES) -> str:
    rules = list(rules)
    header = [
        "# gradfix rules\n",
        "Generated from the rule modules in `codemods/rules/` by `scripts/generate_rule_docs.py`; "
        "do not edit by hand.\n",
        "Fix safety follows Ruff: a **safe** fix cannot change behaviour that other code can see and is "
        "applied by `gradfix fix`; an **unsafe** fix is correct for autograd but may be visible elsewhere "
        "(a caller's tensor, an attribute, an alias) and needs `--unsafe-fixes`; a **display-only** finding "
        "says what to do and rewrites nothing.\n",
        "| code | name | why |",
        "| --- | --- | --- |",
    ]
    header += [f"| [{r.code}](#{anchor(r)}) | {r.name} | {r.why} |" for r in rules]
    return "\n".join(header) + "\n\n" + "\n".join(render_rule(r) for r in rules)
