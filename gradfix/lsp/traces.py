"""The findings of a ``gradfix trace`` run, for the documents the editor has open.

A trace file (``gradfix trace --output FILE``, by default ``.gradfix_cache/trace.json``)
is a JSON list of findings in ``check``'s schema, each with a ``trace`` object that
names its file (absolute), that file's SHA-256 when it was traced, and the text of the
lines it saw (the write, what saved the tensor, the backward...). The trace
describes the file as it was then: while a document's text is still that file's,
every finding applies; once it was edited, a finding is kept only where the line it
names can still be found with the same text (an edit above shifts it down), else it
is dropped: a stale trace shows nothing rather than something wrong.

Nothing here knows about pygls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from .text import split_lines

#: How far from the line it names a finding's line is looked for after an edit.
SEARCH_LINES = 50


@dataclass(frozen=True)
class TraceFinding:
    """One traced finding; lines and columns 1-based (columns count code points)."""

    line: int
    col: int
    end_line: int
    end_col: int
    code: str
    name: str
    message: str
    title: str  # the trace's short phrase ("saved input modified in place")
    sha256: Optional[str]  # of the file's bytes when traced
    # the stripped text of the lines of this file the tracer saw, by line (the write's, the saver's...)
    known_lines: tuple[tuple[int, str], ...] = ()

    def shifted(self, delta: int) -> "TraceFinding":
        return dataclasses.replace(self, line=self.line + delta, end_line=self.end_line + delta)

    def text_of(self, line: int) -> Optional[str]:
        return next((text for number, text in self.known_lines if number == line), None)


@dataclass(frozen=True)
class TraceFile:
    """A trace file as read: findings by the absolute path of their file."""

    findings: dict[str, list[TraceFinding]] = field(default_factory=dict)
    warning: Optional[str] = None  # why the file could not be read (then there are no findings)

    def for_document(self, path: str, text: str) -> list[TraceFinding]:
        """The findings on the file at ``path`` that still apply to ``text``, at their current lines."""
        traced = self.findings.get(_key(path))
        if traced is None:
            traced = self.findings.get(_key(os.path.realpath(path)), [])
        return current_findings(traced, text)


EMPTY = TraceFile()


def current_findings(traced: Sequence[TraceFinding], text: str) -> list[TraceFinding]:
    """``traced`` where they still apply to ``text`` (see the module's docstring)."""
    if not traced:
        return []
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    lines: Optional[list[str]] = None
    kept = []
    for finding in traced:
        if finding.sha256 is not None and finding.sha256 == digest:
            kept.append(finding)
            continue
        expected = finding.text_of(finding.line)
        if expected is None:
            continue  # what that line said is not known: it cannot be checked
        if lines is None:
            lines = [line.strip() for line in split_lines(text)]
        found = _find_line(lines, finding.line - 1, expected)
        if found is not None:
            kept.append(finding.shifted(found - (finding.line - 1)))
    return kept


def _find_line(lines: Sequence[str], line: int, expected: str) -> Optional[int]:
    """The 0-based line nearest ``line`` (itself first, below before above on a tie) whose stripped text is ``expected``."""
    for distance in range(SEARCH_LINES + 1):
        for candidate in (line + distance, line - distance) if distance else (line,):
            if 0 <= candidate < len(lines) and lines[candidate] == expected:
                return candidate
    return None


class TraceFiles:
    """Trace files read once and kept until they change on disk (by modification time and size)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int], TraceFile]] = {}

    def get(self, path: str) -> TraceFile:
        """The trace at ``path``; a missing file is an empty trace."""
        try:
            stat = os.stat(path)
        except OSError:
            self._cache.pop(path, None)
            return EMPTY
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        trace = read_trace(path)
        self._cache[path] = (stamp, trace)
        return trace


class _Malformed(Exception):
    pass


def read_trace(path: str) -> TraceFile:
    """Read a trace file; one that cannot be read gives no findings and a warning."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return EMPTY
    except OSError as error:
        return TraceFile(warning=f"gradfix trace file {path}: cannot read: {error.strerror or error}")
    except ValueError as error:  # invalid JSON or UTF-8
        return TraceFile(warning=f"gradfix trace file {path}: not a trace (invalid JSON: {error}); ignored")
    try:
        return TraceFile(findings=parse_trace(data))
    except _Malformed as error:
        return TraceFile(warning=f"gradfix trace file {path}: not a trace ({error}); ignored")


def parse_trace(data: Any) -> dict[str, list[TraceFinding]]:
    if not isinstance(data, list):
        raise _Malformed("expected the JSON list `gradfix trace` writes")
    findings: dict[str, list[TraceFinding]] = {}
    for number, item in enumerate(data, start=1):
        trace = item.get("trace") if isinstance(item, dict) else None
        if not isinstance(trace, dict) or not isinstance(trace.get("file"), str) or not trace["file"]:
            raise _Malformed(f"finding {number} has no `trace.file`")
        file = os.path.abspath(trace["file"])
        line = _int(item, "line", number)
        col = _int(item, "col", number, 1)
        end_line = _int(item, "end_line", number, line)
        end_col = _int(item, "end_col", number, col)
        code, message = item.get("code"), item.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            raise _Malformed(f"finding {number} has no `code` or `message`")
        sha = trace.get("sha256")
        finding = TraceFinding(
            line=line, col=col, end_line=end_line, end_col=end_col, code=code,
            name=str(item.get("name") or ""), message=message,
            title=str(trace.get("title") or trace.get("kind") or "trace"),
            sha256=sha if isinstance(sha, str) else None,
            known_lines=tuple(_known_lines(trace, file)),
        )
        findings.setdefault(_key(file), []).append(finding)
    return findings


def _int(item: dict, key: str, number: int, default: Optional[int] = None) -> int:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Malformed(f"finding {number}: `{key}` must be a positive integer, got {value!r}")
    return value


def _known_lines(trace: dict, file: str) -> Iterator[tuple[int, str]]:
    """(line, stripped text) of every location in ``trace`` on ``file`` (the write's, the saver's...)."""
    seen: set[int] = set()
    for where in _locations(trace):
        line, source, place = where.get("line"), where.get("source"), where.get("file")
        if (
            isinstance(line, int) and line not in seen and isinstance(source, str) and isinstance(place, str)
            and _key(place) == _key(file)
        ):
            seen.add(line)
            yield line, source.strip()


def _locations(value: Any) -> Iterator[dict]:
    """Every dict with a file, a line and a source text, however deep (saved_by.location, backward...)."""
    if isinstance(value, dict):
        if {"file", "line", "source"} <= value.keys():
            yield value
        for inner in value.values():
            if isinstance(inner, (dict, list)):
                yield from _locations(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _locations(inner)


def _key(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))
