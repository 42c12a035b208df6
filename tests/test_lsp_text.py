"""gradfix.lsp.text and gradfix.lsp.noqa: LSP lines, position encodings, minimal edits, noqa comments."""

from __future__ import annotations

import random

import pytest

from gradfix.codemods import check_source
from gradfix.lsp.noqa import CommentSites
from gradfix.lsp.text import (
    UTF8,
    UTF16,
    UTF32,
    Edit,
    Position,
    TextIndex,
    apply_edits,
    apply_lsp_edits,
    lsp_edits,
    minimal_edits,
    split_lines,
)

# --- lines and positions -------------------------------------------------------------------


def test_lines_break_only_at_lsp_line_breaks():
    text = "a\r\nb\rc\nd\x0ce\u2028f\x85g"
    assert split_lines(text) == ["a\r\n", "b\r", "c\n", "d\x0ce\u2028f\x85g"]
    index = TextIndex(text)
    assert index.line_count == 4
    assert index.line_content(3) == "d\x0ce\u2028f\x85g"
    assert TextIndex("x\n").line_count == 2  # the empty line after a final newline exists
    assert TextIndex("").line_count == 1


@pytest.mark.parametrize(
    "encoding, expected",
    [(UTF16, [0, 1, 3, 4, 5]), (UTF8, [0, 2, 6, 9, 10]), (UTF32, [0, 1, 2, 3, 4])],
)
def test_positions_count_code_units_of_the_encoding(encoding, expected):
    line = "é😀€x"  # 2-byte, astral (2 UTF-16 units, 4 bytes), 3-byte, ASCII
    index = TextIndex("first\n" + line + "\n", encoding)
    for column, units in enumerate(expected):
        position = index.position_of_code_point(1, column)
        assert position == Position(1, units)
        assert index.offset(position) == 6 + column


def test_positions_inside_a_character_or_past_the_line_are_clamped():
    index = TextIndex("a😀b\nxy", UTF16)
    assert index.offset(Position(0, 2)) == 1  # half a surrogate pair: the character's start
    assert index.offset(Position(0, 99)) == 3  # past the end: the end of the line, not the next line
    assert index.offset(Position(5, 0)) == len(index.text)  # past the last line: the end of the text
    crlf = TextIndex("ab\r\ncd", UTF16)
    assert crlf.position(3) == Position(0, 2)  # between \r and \n: still the end of line 0
    assert crlf.offset(Position(1, 0)) == 4


# --- minimal edits ---------------------------------------------------------------------------


def test_minimal_edits_touch_only_what_changed():
    old = "import torch\n\n\ndef f(x):\n    y = x.sigmoid()\n    y.mul_(2)\n    return y\n"
    new = old.replace("    y.mul_(2)\n", "    y = y.mul(2)\n")
    edits = minimal_edits(old, new)
    assert apply_edits(old, edits) == new
    assert len(edits) == 1
    assert edits[0].end - edits[0].start <= len("y.mul_(2)")
    assert old.index("y.mul_(2)") <= edits[0].start


def test_minimal_edits_never_split_crlf_and_round_trip():
    rng = random.Random(5)
    pieces = ["x = 1\r\n", "y = 2\n", "é😀\r", "", "z\r\n", "\r\n", "torch\n", "a += b\r\n"]
    for _ in range(300):
        old = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        new = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        edits = minimal_edits(old, new)
        assert apply_edits(old, edits) == new
        for edit in edits:
            for at in (edit.start, edit.end):
                assert old[at - 1 : at + 1] != "\r\n" or at == 0
        for encoding in (UTF8, UTF16, UTF32):
            assert apply_lsp_edits(old, lsp_edits(old, edits, encoding), encoding) == new


def test_edit_positions_after_non_ascii_text_on_the_same_line():
    old = 'def f(t):\n    s = "é😀"; t.add_(1)\n'
    new = 'def f(t):\n    s = "é😀"; t = t.add(1)\n'
    (start, end, text), = lsp_edits(old, minimal_edits(old, new), UTF16)
    # "    s = "é😀"; t" is 15 code points and 16 UTF-16 units
    assert start.line == 1 and start.character >= 16
    assert apply_lsp_edits(old, [(start, end, text)], UTF16) == new
    assert apply_lsp_edits(old, lsp_edits(old, minimal_edits(old, new), UTF8), UTF8) == new


def test_overlapping_edits_are_refused():
    with pytest.raises(ValueError):
        apply_edits("abcdef", [Edit(0, 3, "x"), Edit(2, 4, "y")])


# --- noqa comments -----------------------------------------------------------------------------

SOURCE = """import torch


def f(x, y):
    x = x.sigmoid()
    x += y
    x -= y  # keep it
    x *= y  # noqa: E501
    x /= y  # NOQA:E501,W291 reason
    z = (x +
         y)
    s = \"\"\"a
    b\"\"\"; x **= 2
    w = 1 + \\
        2
    x += 3   \t
    return x
"""


def _after(line: int, codes=("GF101",), keep_whitespace: bool = False) -> str:
    edit = CommentSites(SOURCE).noqa_edit(line, codes, keep_whitespace=keep_whitespace)
    assert edit is not None
    return apply_edits(SOURCE, [edit]).splitlines()[line - 1]


def test_noqa_added_after_code_or_an_existing_comment():
    assert _after(6) == "    x += y  # noqa: GF101"
    assert _after(7) == "    x -= y  # keep it  # noqa: GF101"
    assert _after(16) == "    x += 3  # noqa: GF101"  # trailing whitespace replaced
    assert _after(16, keep_whitespace=True) == "    x += 3   \t  # noqa: GF101"


def test_noqa_extends_an_existing_code_list():
    assert _after(8) == "    x *= y  # noqa: E501, GF101"
    assert _after(9) == "    x /= y  # NOQA:E501,W291, GF101 reason"
    assert _after(10) == "    z = (x +  # noqa: GF101"  # inside brackets a comment is fine


def test_no_noqa_where_no_comment_can_go():
    sites = CommentSites(SOURCE)
    assert sites.noqa_edit(12, ["GF101"]) is None  # the line ends inside a string
    assert sites.noqa_edit(14, ["GF101"]) is None  # backslash continuation
    assert CommentSites("x = 1  # noqa\n").noqa_edit(1, ["GF101"]) is None  # a bare noqa already silences


def test_the_engine_honours_the_added_noqa():
    source = "import torch\n\ndef f(x, y):\n    x = x.sigmoid()\n    x += y  # accumulate\n    return x\n"
    assert [f.line for f in check_source(source, "t.py")] == [5]
    edit = CommentSites(source).noqa_edit(5, ["GF101"])
    assert check_source(apply_edits(source, [edit]), "t.py") == []
