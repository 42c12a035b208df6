"""Unified diffs: building them for ``fix --diff`` and applying them for ``apply``.

Everything here works on *bytes*, the way ``git apply`` and ``patch`` do. A diff
is computed between the file's exact bytes and the exact bytes ``gradfix fix``
would write, split after ``\\n`` only (``str.splitlines`` would also split on
form feeds and other Unicode line boundaries that patch tools do not know).
So a CRLF line keeps its ``\\r``, a latin-1 file's diff carries latin-1 bytes,
a BOM is part of line 1, and a file without a final newline gets the
``\\ No newline at end of file`` marker: applying the diff with ``git apply``,
``patch -p1`` or ``gradfix apply`` gives the same bytes as ``gradfix fix``.

Parsing uses :mod:`unidiff` on the patch decoded as latin-1 (a lossless
byte-to-character mapping), so one patch may mix files in different encodings.
"""

from __future__ import annotations

import codecs
import difflib
import io
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

from unidiff import PatchSet
from unidiff.constants import DEV_NULL
from unidiff.errors import UnidiffParseError

from . import files

BOM = files.UTF8_BOM
NO_NEWLINE_MARKER = b"\\ No newline at end of file\n"


class PatchError(Exception):
    """The patch itself is unusable (malformed, or asks for something unsupported)."""


class HunkMismatch(Exception):
    """A hunk's context or removed lines are not in the file."""


# --- lines --------------------------------------------------------------------------------


def split_lines(data: bytes) -> list[bytes]:
    """Lines with their endings kept, split after ``\\n`` only."""
    lines = data.split(b"\n")
    result = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        result.append(lines[-1])
    return result


def _body(line: bytes) -> bytes:
    """The line without its ending (``\\n`` or ``\\r\\n``)."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    if line.endswith(b"\r"):  # a CRLF patch whose last line has "\ No newline"
        return line[:-1]
    return line


def _same_ignoring_eol(a: bytes, b: bytes) -> bool:
    return _body(a) == _body(b) and a.endswith(b"\n") == b.endswith(b"\n")


def _with_eol(line: bytes, eol: bytes) -> bytes:
    return _body(line) + eol if line.endswith(b"\n") else line


def _file_eol(lines: Sequence[bytes]) -> bytes:
    for line in lines:
        if line.endswith(b"\n"):
            return b"\r\n" if line.endswith(b"\r\n") else b"\n"
    return b"\n"


# --- building -------------------------------------------------------------------------------


def _quote_name(name: bytes) -> bytes:
    """Quote a header path the way git does when it contains characters a header cannot hold."""
    if not any(c < 0x20 or c in b'"\\' or c == 0x7F for c in name):
        return name
    out = bytearray(b'"')
    for c in name:
        if c in b'"\\':
            out += b"\\" + bytes([c])
        elif c == 0x09:
            out += b"\\t"
        elif c == 0x0A:
            out += b"\\n"
        elif c < 0x20 or c == 0x7F:
            out += b"\\%03o" % c
        else:
            out.append(c)
    out += b'"'
    return bytes(out)


def _header(prefix: bytes, side: bytes, name: bytes) -> bytes:
    quoted = _quote_name(side + name)
    # git ends a name containing a space with a tab so that GNU patch reads it whole.
    return prefix + quoted + (b"\t" if b" " in quoted and not quoted.startswith(b'"') else b"") + b"\n"


def unified_diff(relative_path: str, old: bytes, new: bytes, context: int = 3) -> bytes:
    """A ``--- a/PATH`` / ``+++ b/PATH`` unified diff from ``old`` to ``new`` (b"" when equal).

    The result is checked: it must parse with unidiff and, applied to ``old``,
    give ``new``.
    """
    if old == new:
        return b""
    a, b = split_lines(old), split_lines(new)
    name = os.fsencode(relative_path)
    out = [_header(b"--- ", b"a/", name), _header(b"+++ ", b"b/", name)]
    body = difflib.diff_bytes(difflib.unified_diff, a, b, b"", b"", b"", b"", n=context, lineterm=b"\n")
    for index, line in enumerate(body):
        if index < 2:  # difflib's own ---/+++ lines; ours are above
            continue
        if not line.endswith(b"\n"):
            line += b"\n" + NO_NEWLINE_MARKER
        out.append(line)
    diff = b"".join(out)
    # Self-check: a diff that does not round-trip must never be printed.
    patched = parse_patch(diff)
    if len(patched) != 1 or apply_hunks(old, patched[0].hunks) != new:
        raise AssertionError(f"gradfix built a diff for {relative_path} that does not reproduce the fix")
    return diff


# --- parsing --------------------------------------------------------------------------------


@dataclass
class Hunk:
    source_start: int
    source_length: int
    target_start: int
    target_length: int
    header: str
    lines: list[tuple[str, bytes]]  # (" " | "-" | "+", value with its line ending, if any)

    @property
    def old(self) -> list[bytes]:
        return [value for kind, value in self.lines if kind != "+"]

    @property
    def new(self) -> list[bytes]:
        return [value for kind, value in self.lines if kind != "-"]


@dataclass
class FilePatch:
    path: str  # with the a/ b/ prefix removed, as in ``patch -p1``
    hunks: list[Hunk] = field(default_factory=list)


def _unquote(name: str) -> bytes:
    """A header file name (latin-1 str of the patch bytes) as bytes; git's C-style quotes undone."""
    name = name.rstrip("\r")
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        raw = name[1:-1].encode("latin-1")
        return codecs.escape_decode(raw)[0]  # type: ignore[attr-defined]
    return name.encode("latin-1")


def _strip_prefix(name: bytes, prefix: bytes) -> bytes:
    return name[len(prefix) :] if name.startswith(prefix) else name


def parse_patch(data: bytes) -> list[FilePatch]:
    """The files and hunks of a unified diff. Raises PatchError when malformed."""
    text = data.decode("latin-1")
    try:
        patch_set = PatchSet(io.StringIO(text))
    except UnidiffParseError as error:
        raise PatchError(f"malformed patch: {error}".rstrip()) from None
    if not len(patch_set) and text.strip():
        raise PatchError("malformed patch: no file changes found (expected `--- a/PATH`, `+++ b/PATH` and `@@` hunks)")
    result: list[FilePatch] = []
    for patched in patch_set:
        if patched.is_binary_file:
            raise PatchError(f"{patched.path}: binary patches are not supported")
        if patched.source_file == DEV_NULL or patched.target_file.rstrip("\r") == DEV_NULL:
            raise PatchError(f"{patched.path}: creating or deleting files is not supported")
        source = _strip_prefix(_unquote(patched.source_file), b"a/")
        target = _strip_prefix(_unquote(patched.target_file), b"b/")
        if source != target:
            raise PatchError(
                f"{os.fsdecode(target)}: renaming files is not supported "
                f"(patch names {os.fsdecode(source)!r} and {os.fsdecode(target)!r})"
            )
        if not source:
            raise PatchError("malformed patch: a file header has no path")
        file_patch = FilePatch(path=os.fsdecode(source))
        for hunk in patched:
            lines: list[tuple[str, bytes]] = []
            for line in hunk:
                if line.line_type == "\\":
                    if lines:
                        kind, value = lines[-1]
                        lines[-1] = (kind, value[:-1] if value.endswith(b"\n") else value)
                    continue
                if line.line_type not in (" ", "-", "+"):
                    continue  # blank separator lines unidiff keeps after a hunk
                lines.append((line.line_type, line.value.encode("latin-1")))
            file_patch.hunks.append(
                Hunk(
                    hunk.source_start,
                    hunk.source_length,
                    hunk.target_start,
                    hunk.target_length,
                    f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start},{hunk.target_length} @@",
                    lines,
                )
            )
        result.append(file_patch)
    return result


# --- applying -------------------------------------------------------------------------------


def _strip_bom(line: bytes) -> bytes:
    return line[len(BOM) :] if line.startswith(BOM) else line


def _match_at(lines: Sequence[bytes], old: Sequence[bytes], pos: int) -> Optional[bool]:
    """None: no match at ``pos``; True: byte-exact; False: equal except for CRLF/LF."""
    exact = True
    for offset, expected in enumerate(old):
        actual = lines[pos + offset]
        if actual == expected:
            continue
        if not _same_ignoring_eol(actual, expected):
            return None
        exact = False
    return exact


def _find(lines: Sequence[bytes], old: Sequence[bytes], expected: int, lowest: int) -> tuple[Optional[int], bool]:
    """The position nearest ``expected`` (not before ``lowest``) where ``old`` appears, as patch searches."""
    highest = len(lines) - len(old)
    if highest < lowest:
        return None, False
    expected = min(max(expected, lowest), highest)
    for distance in range(0, max(expected - lowest, highest - expected) + 1):
        for pos in (expected + distance, expected - distance) if distance else (expected,):
            if lowest <= pos <= highest:
                exact = _match_at(lines, old, pos)
                if exact is not None:
                    return pos, exact
    return None, False


def apply_hunks(original: bytes, hunks: Sequence[Hunk]) -> bytes:
    """Apply every hunk or raise HunkMismatch (naming the first that does not match).

    Context and removed lines must equal the file's lines (no fuzz); a hunk may
    sit at another position than its header says (the offset search patch and
    git do). Line endings: when a hunk matches byte for byte its added lines
    are used as they are; when it matches only after ignoring CRLF/LF (a patch
    re-saved by an editor) the added lines take the file's line ending. A UTF-8
    BOM stays as the file had it.
    """
    bom = original.startswith(BOM)
    lines = split_lines(original[len(BOM) :] if bom else original)
    eol = _file_eol(lines)
    out: list[bytes] = []
    cursor = 0  # lines[:cursor] are already copied or consumed
    offset = 0  # how far the previous hunk was from its stated position
    for number, hunk in enumerate(sorted(hunks, key=lambda h: h.source_start), 1):
        old = [_strip_bom(line) for line in hunk.old]
        stated = hunk.source_start if hunk.source_length == 0 else hunk.source_start - 1
        if old:
            pos, exact = _find(lines, old, stated + offset, cursor)
        else:  # a pure insertion has nothing to check; it goes where it says
            pos = stated + offset
            if not cursor <= pos <= len(lines):
                pos = None
            added = [value for kind, value in hunk.lines if kind == "+"]
            exact = all(_with_eol(line, eol) == line for line in added)
        if pos is None:
            raise HunkMismatch(_mismatch_message(number, hunk, lines, stated + offset))
        offset = pos - stated
        out.extend(lines[cursor:pos])
        matched = iter(lines[pos : pos + len(old)])
        for kind, value in hunk.lines:
            if kind == " ":
                out.append(next(matched))  # the file's own bytes for context
            elif kind == "-":
                next(matched)
            else:
                value = _strip_bom(value)
                out.append(value if exact else _with_eol(value, eol))
        cursor = pos + len(old)
    out.extend(lines[cursor:])
    for index, line in enumerate(out[:-1]):
        if not line.endswith(b"\n"):
            raise HunkMismatch(f"the patch leaves line {index + 1} without a line ending in the middle of the file")
    return (BOM if bom else b"") + b"".join(out)


def _mismatch_message(number: int, hunk: Hunk, lines: Sequence[bytes], expected: int) -> str:
    message = f"hunk {number} ({hunk.header}) does not match the file"
    old = [_strip_bom(line) for line in hunk.old]
    first_bad = None
    if 0 <= expected < len(lines):
        for offset, want in enumerate(old):
            index = expected + offset
            if index >= len(lines) or not _same_ignoring_eol(lines[index], want):
                first_bad = index + 1
                break
    if first_bad is not None:
        message += f" (first difference at line {first_bad})"
    new = [_strip_bom(line) for line in hunk.new]
    if new and _find(lines, new, expected, 0)[0] is not None:
        message += "; it looks already applied"
    return message


# --- applying a patch to files ----------------------------------------------------------------


@dataclass
class ApplyOutcome:
    display: str
    hunks: int = 0
    applied: bool = False
    refused: Optional[str] = None  # why the file was left unchanged (hunks do not match)
    error: Optional[str] = None  # a missing or unreadable or unwritable file


def apply_patch(file_patches: Sequence[FilePatch], cwd: Optional[str] = None) -> list[ApplyOutcome]:
    """Apply each file's hunks all-or-nothing; files are independent of each other.

    Paths are relative to ``cwd`` (the folder ``gradfix fix --diff`` ran in).
    Several sections for one file apply in order, as one unit.
    """
    cwd = cwd or os.getcwd()
    grouped: dict[str, list[FilePatch]] = {}
    for file_patch in file_patches:
        path = file_patch.path if os.path.isabs(file_patch.path) else os.path.join(cwd, file_patch.path)
        grouped.setdefault(os.path.normpath(path), []).append(file_patch)
    outcomes = []
    for path, sections in grouped.items():
        display = files.display_path(path, cwd)
        outcome = ApplyOutcome(display, hunks=sum(len(s.hunks) for s in sections))
        outcomes.append(outcome)
        try:
            original = files.read_bytes(path, display)
        except files.FileError as error:
            outcome.error = str(error)
            continue
        data = original
        try:
            for section in sections:
                data = apply_hunks(data, section.hunks)
        except HunkMismatch as mismatch:
            outcome.refused = f"{display}: patch does not apply: {mismatch}; file left unchanged"
            continue
        if _decodes(original, display):
            try:
                files.decode(data, display)
            except files.FileError as error:
                outcome.refused = f"{display}: the patched file would not decode ({error.message}); file left unchanged"
                continue
        if data != original:
            try:
                files.write_atomic(path, data, display)
            except files.FileError as error:
                outcome.error = str(error)
                continue
        outcome.applied = True
    return outcomes


def _decodes(data: bytes, display: str) -> bool:
    try:
        files.decode(data, display)
    except files.FileError:
        return False
    return True
