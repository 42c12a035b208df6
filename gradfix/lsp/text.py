"""Text, lines and positions as the Language Server Protocol counts them.

LSP lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (not at the other characters
``str.splitlines`` breaks on, such as form feed or U+2028), and a position's
``character`` counts code units of the negotiated encoding: UTF-16 unless the
client and server agreed on UTF-8 or UTF-32. Python strings index code points,
which is what the engine's columns count. Everything here converts between
the two and computes minimal edits; nothing here knows about pygls.
"""

from __future__ import annotations

import bisect
import difflib
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"

_EOL = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """Lines with their line breaks kept, split at LSP's line breaks only."""
    lines = []
    start = 0
    for match in _EOL.finditer(text):
        lines.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        lines.append(text[start:])
    return lines


def units(text: str, encoding: str) -> int:
    """How many code units of ``encoding`` ``text`` takes."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def code_points_for_units(line: str, count: int, encoding: str) -> int:
    """The code-point index in ``line`` that ``count`` code units reach.

    Past the end: the line's length (as the protocol says). In the middle of a
    character (half a surrogate pair, part of a UTF-8 sequence): that character's start.
    """
    if count <= 0:
        return 0
    if encoding == UTF32 or line.isascii():
        return min(count, len(line))
    used = 0
    for index, char in enumerate(line):
        size = _char_units(char, encoding)
        if used + size > count:
            return index
        used += size
        if used == count:
            return index + 1
    return len(line)


def _char_units(char: str, encoding: str) -> int:
    if encoding == UTF16:
        return 2 if ord(char) > 0xFFFF else 1
    if encoding == UTF8:
        return len(char.encode("utf-8", "surrogatepass"))
    return 1


@dataclass(frozen=True)
class Position:
    """A position in client units: 0-based line, ``character`` in code units."""

    line: int
    character: int


class TextIndex:
    """Line starts of one text, for offset <-> position conversion in a given encoding."""

    def __init__(self, text: str, encoding: str = UTF16) -> None:
        self.text = text
        self.encoding = encoding
        self.starts = [0] + [match.end() for match in _EOL.finditer(text)]

    @property
    def line_count(self) -> int:
        return len(self.starts)

    def line_content(self, line: int) -> str:
        """Line ``line`` (0-based) without its line break."""
        start = self.starts[line]
        end = self.starts[line + 1] if line + 1 < len(self.starts) else len(self.text)
        return _EOL.sub("", self.text[start:end], count=1) if end > start else ""

    def line_end(self, line: int) -> int:
        """Offset of the end of line ``line``'s content (before its line break)."""
        return self.starts[line] + len(self.line_content(line))

    def offset_of_code_point(self, line: int, column: int) -> int:
        """Offset of a 0-based (line, code-point column), clamped to the line."""
        line = max(0, min(line, self.line_count - 1))
        return self.starts[line] + max(0, min(column, len(self.line_content(line))))

    def offset(self, position: Position) -> int:
        """Offset of a client position; past the last line: the end of the text."""
        if position.line < 0:
            return 0
        if position.line >= self.line_count:
            return len(self.text)
        content = self.line_content(position.line)
        return self.starts[position.line] + code_points_for_units(content, position.character, self.encoding)

    def position(self, offset: int) -> Position:
        """Client position of an offset (clamped to the text)."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.starts, offset) - 1
        start = self.starts[line]
        content = self.line_content(line)
        column = min(offset - start, len(content))  # never inside a line break
        return Position(line, units(content[:column], self.encoding))

    def position_of_code_point(self, line: int, column: int) -> Position:
        """Client position of a 0-based (line, code-point column)."""
        return self.position(self.offset_of_code_point(line, column))


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` (code-point offsets) with ``new_text``."""

    start: int
    end: int
    new_text: str


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply non-overlapping offset edits (any order)."""
    result = text
    last_start = None
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        if last_start is not None and edit.end > last_start:
            raise ValueError(f"overlapping edits at offset {edit.end}")
        result = result[: edit.start] + edit.new_text + result[edit.end :]
        last_start = edit.start
    return result


def minimal_edits(old: str, new: str) -> list[Edit]:
    """Small edits that turn ``old`` into ``new``: a line diff, each block trimmed to what differs."""
    if old == new:
        return []
    old_lines, new_lines = split_lines(old), split_lines(new)
    # Common leading and trailing lines first: SequenceMatcher is quadratic in what it compares.
    head = 0
    while head < len(old_lines) and head < len(new_lines) and old_lines[head] == new_lines[head]:
        head += 1
    tail = 0
    while (
        tail < len(old_lines) - head
        and tail < len(new_lines) - head
        and old_lines[-1 - tail] == new_lines[-1 - tail]
    ):
        tail += 1
    old_mid = old_lines[head : len(old_lines) - tail]
    new_mid = new_lines[head : len(new_lines) - tail]
    starts = [0]
    for line in old_lines:
        starts.append(starts[-1] + len(line))
    matcher = difflib.SequenceMatcher(None, old_mid, new_mid, autojunk=False)
    edits = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        start, end = starts[head + i1], starts[head + i2]
        edits.append(_trim(old, start, end, "".join(new_mid[j1:j2])))
    return edits


def _trim(old: str, start: int, end: int, replacement: str) -> Edit:
    """Shrink a block edit to the characters that differ, never splitting a ``\\r\\n``."""
    segment = old[start:end]
    limit = min(len(segment), len(replacement))
    prefix = 0
    while prefix < limit and segment[prefix] == replacement[prefix]:
        prefix += 1
    while prefix and segment[prefix - 1 : prefix + 1] == "\r\n":
        prefix -= 1
    suffix = 0
    limit -= prefix
    while suffix < limit and segment[len(segment) - 1 - suffix] == replacement[len(replacement) - 1 - suffix]:
        suffix += 1
    while suffix and segment[len(segment) - suffix - 1 : len(segment) - suffix + 1] == "\r\n":
        suffix -= 1
    return Edit(start + prefix, end - suffix, replacement[prefix : len(replacement) - suffix])


def lsp_edits(text: str, edits: Sequence[Edit], encoding: str = UTF16) -> list[tuple[Position, Position, str]]:
    """Offset edits as (start, end, new_text) in client positions of ``text``."""
    index = TextIndex(text, encoding)
    return [(index.position(e.start), index.position(e.end), e.new_text) for e in edits]


def apply_lsp_edits(text: str, edits: Iterable[tuple[Position, Position, str]], encoding: str = UTF16) -> str:
    """Apply edits in client positions, as an editor does (positions refer to ``text``)."""
    index = TextIndex(text, encoding)
    return apply_edits(text, [Edit(index.offset(start), index.offset(end), new) for start, end, new in edits])
