"""Where a ``# noqa: CODE`` comment can go, and the edit that adds or extends it.

A comment fits on a line when the line ends outside a string and without a
backslash continuation: exactly the lines on which the tokenizer emits a
NEWLINE, NL or COMMENT token. An existing ``# noqa: X`` is extended
(``# noqa: X, GF101``), another comment gets the noqa after it, a bare
``# noqa`` already silences everything.
"""

from __future__ import annotations

import tokenize
from dataclasses import dataclass
from typing import Iterable, Optional

from ..codemods.engine import NOQA
from .text import Edit, split_lines

_WHITESPACE = " \t\f"


@dataclass(frozen=True)
class _Comment:
    start: int  # code-point column of '#'
    end: int  # column after the comment, trailing whitespace excluded
    text: str


class CommentSites:
    """The comment facts of each line of ``text`` (1-based lines, as the engine counts)."""

    def __init__(self, text: str, first_line: int = 1, first_offset: int = 0) -> None:
        self.lines = split_lines(text)
        self.first_line = first_line
        self.first_offset = first_offset
        self.comments: dict[int, _Comment] = {}
        self.open_ends: set[int] = set()  # lines whose end is outside any string or continuation
        self.ok = True
        readline = iter(self.lines).__next__
        try:
            for token in tokenize.generate_tokens(lambda: _next_or_empty(readline)):
                if token.type == tokenize.COMMENT:
                    row, col = token.start
                    stripped = token.string.rstrip(_WHITESPACE)
                    self.comments[row] = _Comment(col, col + len(stripped), stripped)
                    self.open_ends.add(row)
                elif token.type in (tokenize.NEWLINE, tokenize.NL):
                    self.open_ends.add(token.start[0])
        except (tokenize.TokenError, SyntaxError, IndentationError, ValueError):
            self.ok = False
        self._offsets = [first_offset]
        for line in self.lines:
            self._offsets.append(self._offsets[-1] + len(line))

    def _local(self, line: int) -> Optional[int]:
        row = line - self.first_line + 1
        return row if self.ok and 1 <= row <= len(self.lines) else None

    def _content(self, row: int) -> str:
        return self.lines[row - 1].rstrip("\r\n")

    def noqa_edit(self, line: int, codes: Iterable[str], keep_whitespace: bool = False) -> Optional[Edit]:
        """The edit that makes ``line`` silence ``codes`` (offsets in the whole document).

        None when no comment can go on that line, or when a bare ``# noqa`` already
        silences it. ``keep_whitespace`` leaves trailing whitespace where it is (the
        inserted text is then removable exactly).
        """
        row = self._local(line)
        if row is None or row not in self.open_ends:
            return None
        base = self._offsets[row - 1]
        comment = self.comments.get(row)
        if comment is not None:
            match = NOQA.search(comment.text)
            if match is not None:
                if match.group("codes") is None:
                    return None
                present = {c.upper() for c in match.group("codes").replace(",", " ").split()}
                wanted = [c for c in _unique(codes) if c.upper() not in present]
                if not wanted:
                    return None
                at = base + comment.start + match.end("codes")
                return Edit(at, at, ", " + ", ".join(wanted))
            at = base + comment.end
            return Edit(at, at, "  # noqa: " + ", ".join(_unique(codes)))
        content = self._content(row)
        end = base + len(content)
        if keep_whitespace:
            return Edit(end, end, "  # noqa: " + ", ".join(_unique(codes)))
        stripped = content.rstrip(_WHITESPACE)
        return Edit(base + len(stripped), end, "  # noqa: " + ", ".join(_unique(codes)))


def _unique(codes: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for code in codes:
        if code not in seen:
            seen.append(code)
    return seen


def _next_or_empty(readline) -> str:
    try:
        return readline()
    except StopIteration:
        return ""
