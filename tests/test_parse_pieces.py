"""engine.parse in pieces (prescreen.piece_starts) gives the module libcst parses from the whole text."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import libcst as cst
import pytest

from gradfix.codemods import engine, prescreen

ROOT = Path(__file__).resolve().parent.parent

EDGES = {
    # an indented comment after a block is that block's footer: no piece may start before it
    "block footer": "class A:\n    def f(self):\n        return 1\n\n    # later\n\n\nclass B:\n    x = 1\n",
    "column-0 comments": "import torch\n# about f\n\n# more\ndef f(x):\n    return x\n\n\n# about g\ndef g(x):\n    return x\n",
    "decorators": "import functools\n\n\n@functools.cache\n# between\n@functools.wraps(print)\ndef f():\n    pass\nx = 1; y = 2\n",
    # a first piece without an indented block reads four spaces: the pieces disagree, parse it whole
    "two spaces": "import os\nimport sys\n\n\ndef f(x):\n  if x:\n    return 1\n  return 2\n",
    "crlf": "import torch\r\n\r\n\r\ndef f(x):\r\n    x += 1\r\n    return x\r\n\r\n# end\r\n",
    "bom and coding": "\ufeff# -*- coding: utf-8 -*-\nimport torch\n\n\ndef f(x):\n    return x\n",
    "no trailing newline": "a = 1\n\n\ndef f():\n    return a",
    "footer comments": "a = 1\n\n\ndef f():\n    return a\n\n# the end\n",
    "one statement": "x = [\n    1,\n    2,\n]\n",
}


def _sources() -> list[tuple[str, str]]:
    found = list(EDGES.items())
    for path in sorted((ROOT / "fixtures").rglob("*.py"))[::3]:
        found.append((f"{path.parent.name}/{path.name}", path.read_text(encoding="utf-8")))
    torch = pytest.importorskip("torch")
    base = Path(torch.__file__).parent
    for relative in ("nn/modules/module.py", "_tensor.py", "optim/optimizer.py"):
        found.append((relative, (base / relative).read_text(encoding="utf-8")))
    return found


SOURCES = _sources()


@pytest.mark.parametrize("name,source", SOURCES, ids=[n for n, _ in SOURCES])
def test_pieces_give_the_whole_module(name, source):
    tree = ast.parse(source[1:] if source.startswith("\ufeff") else source)
    starts = prescreen.piece_starts(tree.body, source)
    pieced = engine.parse(source, starts, piece_chars=1)  # every place a piece may start
    whole = cst.parse_module(source)
    assert pieced.code == whole.code  # libcst leaves a byte order mark out of both
    assert pieced.deep_equals(whole)
    assert (pieced.encoding, pieced.default_indent, pieced.default_newline, pieced.has_trailing_newline) == (
        whole.encoding, whole.default_indent, whole.default_newline, whole.has_trailing_newline)
    if name in ("nn/modules/module.py", "_tensor.py", "column-0 comments", "crlf"):
        assert engine._parse_in_pieces(source, starts, 1) is not None  # really in pieces


def test_no_piece_starts_before_an_indented_comment_or_inside_a_statement():
    source = EDGES["block footer"]
    assert prescreen.piece_starts(ast.parse(source).body, source) == ()  # `    # later` ends class A
    source = EDGES["column-0 comments"]
    starts = prescreen.piece_starts(ast.parse(source).body, source)
    assert [source[s:].split("\n", 1)[0] for s in starts] == ["# about f", ""]
    assert prescreen.piece_starts(ast.parse(EDGES["one statement"]).body, EDGES["one statement"]) == ()


def test_long_texts_carry_piece_starts_and_findings_do_not_change():
    unit = textwrap.dedent('''
        def f{i}(x):
            y = torch.sigmoid(x)
            y.mul_(2)
            return y

        ''')
    source = "import torch\n" + "".join(unit.format(i=i) for i in range(prescreen.PIECE_CHARS // len(unit) * 3))
    plan = prescreen.plan(source, engine.select_rules())
    assert plan is not None and len(plan.piece_starts) > 100
    assert engine.check_source(source, "m.py") == engine.check_source(source, "m.py", focus=False)


def test_a_focused_text_with_stubs_is_parsed_in_pieces():
    """A left-out definition leaves its stub line and then empty lines: a piece starts right after
    the stub, else the empty lines would end a piece as its footer and the text be parsed whole."""
    kept = "def kept{i}(x):\n    y = torch.sigmoid(x)\n    y.mul_(2)\n    return y\n\n\n"
    left_out = "def other{i}(x):\n    z = x + 1\n    return z * 2\n\n\n"
    source = "import torch\n\n\n" + "".join((kept if i % 2 else left_out).format(i=i) for i in range(40))
    plan = prescreen.plan(source, engine.select_rules())
    assert plan is not None and plan.focused and 'def other0(): """gradfix-focus-' in plan.text
    starts = prescreen.piece_starts(ast.parse(source).body, plan.text)
    assert len(starts) == 40  # one after each top-level statement but the last
    pieced = engine._parse_in_pieces(plan.text, starts, 1)
    assert pieced is not None
    assert pieced.deep_equals(cst.parse_module(plan.text))
