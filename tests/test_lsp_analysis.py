"""gradfix.lsp.analysis: one finding's fix, fix-all, and the fast re-lint of changed definitions."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from gradfix.codemods import FixSafety, Level, check_source, fix_source
from gradfix.lsp import analysis
from gradfix.lsp.analysis import exact_lint, fast_lint, fix_all, focused_single_fix, layout, relayout, single_fix
from gradfix.lsp.settings import LintSettings
from gradfix.lsp.text import Edit, apply_edits

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted(p for p in (ROOT / "fixtures").glob("GF*/*.py") if not p.name.endswith(".fixed.py"))
DEFAULT = LintSettings()

MODEL = '''"""A model."""
import torch
from torch import nn

# module-level comment


class Gate(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.proj = nn.Linear(size, size)

    def forward(self, x):
        g = torch.sigmoid(self.proj(x))
        g.mul_(2)
        g[:, 0] += 1
        return g


def add_bias(h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    h += bias
    return h


def squash(x):
    t = torch.tanh(x)
    t += 1; t *= 2
    label = "é😀"; t.add_(1)
    return t


@torch.no_grad()
def update(p, g):
    p.add_(g)


bump = lambda y: torch.sigmoid(y).add_(1)
'''

IMPORTS = '''"""Docstring."""
from torch import nn, zeros

# a comment


def reset(w):
    h = zeros(3, requires_grad=True).sigmoid()
    h.zero_()
    h.fill_(1.0)
    return h


class M(nn.Module):
    def forward(self, x):
        return x
'''


def _fixable(finding, unsafe_fixes=False):
    return finding.fix_safety is FixSafety.SAFE or (finding.fix_safety is FixSafety.UNSAFE and unsafe_fixes)


def _fix_alone_by_hand(source, path, target, findings):
    """What `gradfix fix --level warning` makes of ``source`` when ``target`` is its only fixable finding:
    every other line with a finding gets a noqa comment by hand, removed again afterwards."""
    unsafe = target.fix_safety is FixSafety.UNSAFE
    lines = source.splitlines(keepends=True)
    added = {}
    for other in findings:
        if other == target or not _fixable(other, unsafe) or other.line == target.line:
            continue
        codes = sorted({f.code for f in findings if f.line == other.line})
        added[other.line] = f"  # noqa: {', '.join(codes)}, ZZ{other.line:06d}"
    for line, comment in added.items():
        body = lines[line - 1].rstrip("\r\n")
        lines[line - 1] = body + comment + lines[line - 1][len(body):]
    fixed = fix_source("".join(lines), path, unsafe_fixes=unsafe, level=Level.WARNING).source
    for comment in added.values():
        assert fixed.count(comment) == 1
        fixed = fixed.replace(comment, "")
    return fixed


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_single_fix_is_gradfix_fix_when_it_is_the_only_finding(path):
    source = path.read_text(encoding="utf-8")
    findings = check_source(source, str(path))
    for finding in findings:
        fix = single_fix(source, str(path), finding, findings, DEFAULT)
        if not finding.fixable:
            assert fix is None
            continue
        assert fix is not None, finding
        result = apply_edits(source, fix.edits)
        unsafe = finding.fix_safety is FixSafety.UNSAFE
        if fix.companions:
            continue
        assert result == _fix_alone_by_hand(source, str(path), finding, findings)
        if not [f for f in findings if f != finding and _fixable(f, unsafe)]:
            assert result == fix_source(source, str(path), unsafe_fixes=unsafe, level=Level.WARNING).source


def test_single_fix_leaves_every_other_finding_alone():
    findings = check_source(MODEL, "m.py")
    fixable = [f for f in findings if f.fixable]
    assert len(fixable) >= 5
    for finding in fixable:
        fix = single_fix(MODEL, "m.py", finding, findings, DEFAULT)
        assert fix is not None
        result = apply_edits(MODEL, fix.edits)
        if fix.companions:
            assert result != MODEL
        else:
            assert result == _fix_alone_by_hand(MODEL, "m.py", finding, findings)


def test_single_fix_in_a_buffer_with_more_than_ten_other_fixes():
    """Each other fixable finding gets a numbered temporary comment: the 1st must not be read as the 10th's start."""
    source = long_model(5)
    findings = check_source(source, "m.py")
    fixable = [f for f in findings if _fixable(f, False)]
    assert len(fixable) > 11
    for finding in fixable[-3:]:
        fix = single_fix(source, "m.py", finding, findings, DEFAULT)
        assert fix is not None, finding
        if not fix.companions:
            assert apply_edits(source, fix.edits) == _fix_alone_by_hand(source, "m.py", finding, findings)


def test_two_findings_of_one_rule_on_one_line_are_fixed_together():
    findings = check_source(MODEL, "m.py")
    same_line = [f for f in findings if f.line == 27]
    assert [f.code for f in same_line] == ["GF101", "GF101"]
    fix = single_fix(MODEL, "m.py", same_line[0], findings, DEFAULT)
    assert fix is not None and fix.companions == 1
    assert "t = t + 1; t = t * 2" in apply_edits(MODEL, fix.edits)


@pytest.mark.parametrize("source", [MODEL, IMPORTS], ids=["model", "imports"])
def test_focused_fix_equals_the_whole_buffer_fix(source):
    findings = check_source(source, "m.py")
    found = layout(source)
    checked = 0
    for finding in findings:
        if not finding.fixable or found.chunk_at(finding.line - 1) is None:
            continue
        whole = single_fix(source, "m.py", finding, findings, DEFAULT)
        focused = focused_single_fix(source, "m.py", finding, findings, DEFAULT, found)
        assert focused is not None, finding
        assert apply_edits(source, focused.edits) == apply_edits(source, whole.edits)
        checked += 1
    assert checked >= 2
    if source is IMPORTS:
        fixed = apply_edits(source, focused.edits)
        assert fixed.splitlines()[2] == "import torch"  # right after the last import, as gradfix fix puts it


def test_focused_fix_declines_when_the_definition_alone_reads_differently():
    findings = check_source(MODEL, "m.py")
    target = next(f for f in findings if f.line == 15)
    wrong = [f if f != target else f.__class__(**{**f.__dict__, "fix_safety": FixSafety.UNSAFE}) for f in findings]
    assert focused_single_fix(MODEL, "m.py", wrong[findings.index(target)], wrong, DEFAULT, layout(MODEL)) is None


def test_fix_all_is_gradfix_fix():
    assert apply_edits(MODEL, fix_all(MODEL, "m.py", DEFAULT)) == fix_source(MODEL, "m.py").source
    unsafe = LintSettings(unsafe_fixes=True)
    assert apply_edits(MODEL, fix_all(MODEL, "m.py", unsafe)) == fix_source(MODEL, "m.py", unsafe_fixes=True).source
    assert fix_all("x = 1\n", "m.py", DEFAULT) == []
    warnings = LintSettings(unsafe_fixes=True, fix_level="warning")
    expected = fix_source(MODEL, "m.py", unsafe_fixes=True, level=Level.WARNING).source
    assert apply_edits(MODEL, fix_all(MODEL, "m.py", warnings)) == expected


# --- fast re-lint ----------------------------------------------------------------------------

EDITS = [
    ("a new finding in one function", lambda s: s.replace("    return h\n", "    h -= bias\n    return h\n")),
    ("a finding removed", lambda s: s.replace("        g.mul_(2)\n", "")),
    ("lines added above everything", lambda s: s.replace("class Gate", "def helper(z):\n    z.add_(1)\n    return z\n\n\nclass Gate")),
    ("a function deleted", lambda s: s.replace("@torch.no_grad()\ndef update(p, g):\n    p.add_(g)\n", "")),
    ("a noqa added", lambda s: s.replace("    h += bias\n", "    h += bias  # noqa: GF101\n")),
    ("the prelude changed", lambda s: s.replace("from torch import nn\n", "from torch import nn\nimport math\n")),
]


def _bigger(source: str, copies: int = 6) -> str:
    extra = "".join(
        f"\n\ndef filler{i}(x):\n    y = torch.relu(x)\n    y.mul_(3)\n    return y\n" for i in range(copies)
    )
    return source + extra


@pytest.mark.parametrize("name, change", EDITS, ids=[e[0] for e in EDITS])
def test_fast_lint_matches_the_whole_lint(name, change):
    before = _bigger(MODEL)
    previous = exact_lint(1, before, "m.py", DEFAULT)
    after = change(before)
    assert after != before
    fast = fast_lint(2, after, "m.py", DEFAULT, previous)
    assert fast.findings == check_source(after, "m.py")
    if name == "the prelude changed":
        assert fast.exact  # every definition is dirty: the whole buffer is linted
    else:
        assert not fast.exact and fast.linted_lines < len(after.splitlines()) / 2
    # and again from the fast result (a chain of edits)
    again = fast_lint(3, after.replace("    return y\n", "    y += 1\n    return y\n", 1), "m.py", DEFAULT, fast)
    assert again.findings == check_source(again.text, "m.py")


def test_fast_lint_reports_syntax_errors_and_no_stale_findings():
    previous = exact_lint(1, MODEL, "m.py", DEFAULT)
    broken = MODEL.replace("def squash(x):", "def squash(x:")
    outcome = fast_lint(2, broken, "m.py", DEFAULT, previous)
    assert outcome.findings == [] and outcome.syntax_error is not None
    assert outcome.syntax_error.line == MODEL.splitlines().index("def squash(x):") + 1
    exact = exact_lint(2, broken, "m.py", DEFAULT)
    assert (exact.syntax_error.line, exact.syntax_error.message) == (outcome.syntax_error.line, outcome.syntax_error.message)


def test_lint_of_null_bytes_and_internal_errors_do_not_raise(monkeypatch):
    assert exact_lint(1, "x = 1\x00\n", "m.py", DEFAULT).syntax_error is not None
    assert fast_lint(1, "x = 1\x00\n", "m.py", DEFAULT, None).syntax_error is not None

    def boom(*args, **kwargs):
        raise RuntimeError("rule crashed")

    monkeypatch.setattr("gradfix.lsp.analysis.check_source", boom)
    outcome = exact_lint(1, MODEL, "m.py", DEFAULT)
    assert outcome.internal_error == "RuntimeError: rule crashed" and outcome.findings == []


def test_relayout_equals_a_whole_parse():
    rng = random.Random(7)
    pieces = ["    t.add_(1)\n", "\n", "def extra(z):\n    return z\n", "@torch.no_grad()\n", "x = (\n", ")\n",
              "# comment\n", "    ", "class K:\n    pass\n", '"""\n', "import os\n", "        y = 1\n"]
    text = _bigger(MODEL, 3)
    found = layout(text)
    reparsed = 0
    for _ in range(400):
        lines = text.splitlines(keepends=True)
        at = rng.randrange(len(lines) + 1)
        if rng.random() < 0.5 and at < len(lines):
            del lines[at : at + rng.randint(1, 3)]
        else:
            lines[at:at] = [rng.choice(pieces)]
        new = "".join(lines)
        try:
            expected = layout(new)
        except (SyntaxError, ValueError):
            assert relayout(found, text, new) is None
            continue
        for chunk in expected.chunks:  # a focus's lines, from ranges kept by the layout
            assert expected.focus_lines(chunk) == analysis._focused(expected, [chunk], gaps=True, leading=False)[1]
        got = relayout(found, text, new)
        if got is None:
            reparsed += 1
        else:
            assert (got.statements, got.chunks, got.prelude) == (expected.statements, expected.chunks, expected.prelude)
        text, found = new, expected
    assert reparsed < 100


# --- fixes on one definition at a time ---------------------------------------------------------


def long_model(copies: int, header: str = "#!/usr/bin/env python\n# a long module\n\n") -> str:
    """A long module: fixes that each need the same import, two fixes on one line, unsafe and
    warning-level findings, module-level statements between the definitions."""
    parts = [header + '"""Generated."""\nfrom torch import nn, zeros\nimport math\n\n# settings\nSCALE = 2\n']
    for i in range(copies):
        parts.append(f'''

def reset{i}(w):
    h = zeros(3, requires_grad=True).sigmoid()
    h.zero_()
    return h * w


class Gate{i}(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.proj = nn.Linear(size, size)

    def forward(self, x):
        g = self.proj(x).sigmoid()
        g.mul_(2)
        g[:, 0] += 1
        return g


def squash{i}(x):
    t = zeros(3, requires_grad=True).tanh()
    t += 1; t *= 2  # two on one line
    return t


def add_bias{i}(h, bias):
    h += bias
    return h


LIMIT_{i} = math.sqrt({i + 1})
''')
    return "".join(parts)


def combined_fixtures() -> str:
    """The definitions of every fixture in one module (renamed apart), their imports first."""
    import ast
    import re

    imports: list[str] = []
    bodies: list[str] = []
    for k, path in enumerate(FIXTURES):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        names = [node.name for node in tree.body if isinstance(node, definitions)]
        lines = source.splitlines(keepends=True)
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                segment = ast.get_source_segment(source, node)
                if segment not in imports and getattr(node, "module", None) != "__future__":
                    imports.append(segment)
            elif isinstance(node, definitions):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
                text = "".join(lines[start : node.end_lineno])
                for name in names:
                    text = re.sub(rf"\b{name}\b", f"{name}_{k}", text)
                bodies.append(text)
        bodies.append(f"SCALE_{k} = {k}.5\n")
    return "\n".join(imports) + "\n\n\n" + "\n\n".join(bodies)


FIX_SETTINGS = [DEFAULT, LintSettings(unsafe_fixes=True), LintSettings(unsafe_fixes=True, fix_level="warning")]


def _expected_fix_all(source: str, settings: LintSettings) -> str:
    return fix_source(
        source, "m.py", unsafe_fixes=settings.unsafe_fixes, level=Level(settings.fix_level)
    ).source


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fix_all_by_focus_is_gradfix_fix_on_the_fixtures(path):
    source = path.read_text(encoding="utf-8")
    findings = check_source(source, "m.py")
    for settings in FIX_SETTINGS:
        edits = analysis.fix_all_by_focus(source, "m.py", settings, findings, layout(source))
        if edits is not None:  # None: module-level findings or one definition: the whole buffer is fixed
            assert apply_edits(source, edits) == _expected_fix_all(source, settings)


@pytest.mark.parametrize(
    "name", ["long model", "long model, CRLF", "long model, no header", "every fixture's definitions"]
)
def test_fix_all_by_focus_is_gradfix_fix_on_long_files(name):
    source = {
        "long model": lambda: long_model(4),
        "long model, CRLF": lambda: long_model(2).replace("\n", "\r\n"),
        "long model, no header": lambda: long_model(2, header=""),
        "every fixture's definitions": combined_fixtures,
    }[name]()
    findings = check_source(source, "m.py")
    found = layout(source)
    for settings in FIX_SETTINGS:
        plan = analysis.fix_all_plan(findings, found, settings)
        assert plan is not None and len(plan) >= 2
        edits = analysis.fix_all_by_focus(source, "m.py", settings, findings, found)
        assert edits is not None  # each definition alone reads as in the buffer
        assert apply_edits(source, edits) == _expected_fix_all(source, settings)
    if name == "long model":  # three definitions add `import torch`: once
        assert apply_edits(source, edits).count("import torch\n") == 1


def test_quick_fixes_on_a_focus_are_the_whole_buffer_fixes():
    source = long_model(2)
    findings = check_source(source, "m.py")
    found = layout(source)
    checked = 0
    for finding in findings:
        focus = analysis.focus_for(found, finding, findings)
        if focus is None:
            continue
        local = focus.local_of(finding)
        result = analysis.focus_fixes(focus.text, "m.py", focus.local, DEFAULT, targets=[local])
        assert result.verified
        fix = result.quick[analysis.fix_identity(local)]
        whole = single_fix(source, "m.py", finding, findings, DEFAULT)
        if whole is None:
            assert fix is None
            continue
        assert fix is not None
        edits = focus.to_buffer(fix.edits, found)
        assert edits is not None
        assert apply_edits(source, edits) == apply_edits(source, whole.edits)
        assert fix.companions == whole.companions
        checked += 1
    assert checked >= 8


def test_a_focus_that_reads_differently_is_refused():
    source = long_model(2)
    findings = check_source(source, "m.py")
    found = layout(source)
    target = next(f for f in findings if f.code == "GF102")
    focus = analysis.focus_for(found, target, findings)
    wrong = tuple(dataclasses.replace(f, fix_safety=FixSafety.UNSAFE) for f in focus.local)
    result = analysis.focus_fixes(focus.text, "m.py", wrong, DEFAULT, targets=list(wrong), want_fix_all=True)
    assert not result.verified and result.quick == {} and result.fix_all is None


def test_fix_all_share_taken_from_the_quick_fix_equals_its_own_run(monkeypatch):
    source = long_model(3)
    findings = check_source(source, "m.py")
    found = layout(source)
    runs = []
    real = analysis.fix_source
    monkeypatch.setattr(analysis, "fix_source", lambda *a, **k: runs.append(1) or real(*a, **k))
    reused = 0
    for settings in FIX_SETTINGS:
        for focus in analysis.fix_all_plan(findings, found, settings):
            targets = [f for f in focus.local if f.fixable]
            runs.clear()
            together = analysis.focus_fixes(focus.text, "m.py", focus.local, settings, targets, want_fix_all=True)
            if len(runs) == len(targets):  # no run of its own: the quick fix's run was the fix-all's
                reused += 1
            alone = analysis.focus_fixes(focus.text, "m.py", focus.local, settings, (), want_fix_all=True)
            assert together.fix_all == alone.fix_all
    assert reused >= 6


def test_a_focus_and_its_key_do_not_change_with_edits_elsewhere():
    source = long_model(3)
    findings = check_source(source, "m.py")
    target = next(f for f in findings if f.code == "GF102" and f.line > 40)
    before = analysis.focus_for(layout(source), target, findings)
    key = before.key("m.py", DEFAULT)
    elsewhere = [
        source.replace("def squash0(x):\n", "def squash0(x):\n    pad = 1\n"),  # another definition, above
        "# a new first line\n" + source,  # before the first statement
        source.replace("def add_bias0(", "def added(z):\n    return z\n\n\ndef add_bias0("),  # a definition added
    ]
    for text in elsewhere:
        now = check_source(text, "m.py")
        shifted = next(f for f in now if f.message == target.message and f.code == "GF102" and f.line >= target.line)
        found = layout(text)
        focus = analysis.focus_for(found, shifted, now)
        assert focus.key("m.py", DEFAULT) == key
        # a fix computed before the edit, mapped to the text after it, is the fix of that text
        result = analysis.focus_fixes(before.text, "m.py", before.local, DEFAULT, targets=[before.local_of(target)])
        fix = result.quick[analysis.fix_identity(before.local_of(target))]
        edits = focus.to_buffer(fix.edits, found)
        assert apply_edits(text, edits) == apply_edits(text, single_fix(text, "m.py", shifted, now, DEFAULT).edits)
    prelude_changed = source.replace("import math\n", "import math\nimport os\n")
    now = check_source(prelude_changed, "m.py")
    shifted = next(f for f in now if f.message == target.message and f.line >= target.line)
    assert analysis.focus_for(layout(prelude_changed), shifted, now).key("m.py", DEFAULT) != key


def test_merged_edits_keep_one_of_each_and_refuse_clashes():
    add = Edit(10, 10, "import torch\n")
    assert analysis.merge_edits([[add, Edit(50, 55, "x")], [add, Edit(80, 81, "")]]) == [add, Edit(50, 55, "x"), Edit(80, 81, "")]
    assert analysis.merge_edits([[Edit(10, 10, "import torch\n")], [Edit(10, 10, "import math\n")]]) is None
    assert analysis.merge_edits([[Edit(10, 20, "a")], [Edit(15, 25, "b")]]) is None
    assert analysis.merge_edits([]) == []
