"""The engine, as an editor needs it: lint a buffer, fix one finding, fix everything.

No pygls here: every function takes text and returns findings or text edits
(code-point offsets, see :mod:`gradfix.lsp.text`), so the logic is tested
without a server.

Two ways to lint:

* :func:`exact_lint` runs ``check_source`` on the whole buffer: the same result
  as ``gradfix check``.
* :func:`fast_lint` re-lints only the top-level definitions (functions, classes)
  whose text changed, together with the module-level statements, and reuses
  the findings of the unchanged definitions from the last result. The engine
  costs about 1.5 ms per line, so this is what keeps diagnostics interactive in
  long files. It is provisional: the server follows it with an exact lint.

One finding's fix (:func:`single_fix`) is what ``fix_source`` makes of the
buffer when that finding is the only one: every other finding that the same
run would fix is silenced with a temporary ``# noqa`` comment, the fix runs to
its fixed point, and the temporary comments are removed again.

In a long buffer both kinds of fix are computed on a :class:`Focus`: one
top-level definition with the module-level statements, which the engine reads
in tens of milliseconds instead of seconds. A focus is used only when the
engine reports there exactly the findings the buffer has on those lines, and
its edits are mapped back to the buffer (:func:`focus_fixes`,
:func:`fix_all_by_focus`). What a focus yields depends only on its text, so
the server keeps the results by that text: an edit in one definition leaves
the fixes of every other definition valid.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..codemods import Finding, FixResult, FixSafety, Level, SourceSyntaxError, check_source, fix_source
from .noqa import CommentSites
from .settings import LintSettings
from .text import Edit, apply_edits, minimal_edits, split_lines

#: The prefix of the temporary noqa codes that isolate one fix (a code to the noqa regex).
_MARKER = "GFLSPISOLATE"


@dataclass(frozen=True)
class Chunk:
    """A top-level function or class (decorators included): 0-based lines [start, end)."""

    start: int
    end: int
    text: str


@dataclass
class Layout:
    """The buffer cut into top-level definitions and the module-level statements around them."""

    lines: list[str]
    chunks: list[Chunk]
    prelude: list[int]  # 0-based lines of module-level statements (not in any chunk)
    statements: list[tuple[int, int]]  # every top-level statement, 0-based [start, end), in order
    _starts: Optional[list[int]] = field(default=None, repr=False, compare=False)
    _chunk_starts: Optional[list[int]] = field(default=None, repr=False, compare=False)
    # (ranges of the module-level statements, first line of a definition -> its range), with the
    # blank and comment lines after each: what every focus shares, computed once
    _focus_ranges: Optional[tuple[list[tuple[int, int]], dict[int, tuple[int, int]]]] = field(
        default=None, repr=False, compare=False
    )

    @property
    def starts(self) -> list[int]:
        """Offset of each line, and the length of the text at the end."""
        if self._starts is None:
            starts = [0]
            for line in self.lines:
                starts.append(starts[-1] + len(line))
            self._starts = starts
        return self._starts

    @property
    def prelude_text(self) -> str:
        return "".join(self.lines[i] for i in self.prelude)

    def chunk_at(self, line: int) -> Optional[Chunk]:
        """The chunk containing 0-based ``line``."""
        if self._chunk_starts is None:
            self._chunk_starts = [c.start for c in self.chunks]
        at = bisect.bisect_right(self._chunk_starts, line) - 1
        if at >= 0 and self.chunks[at].start <= line < self.chunks[at].end:
            return self.chunks[at]
        return None

    def focus_lines(self, chunk: Chunk) -> list[int]:
        """The lines of ``_focused(self, [chunk], gaps=True, leading=False)``, from ranges computed once."""
        if self._focus_ranges is None:
            definitions = {c.start for c in self.chunks}
            prelude: list[tuple[int, int]] = []
            owned: dict[int, tuple[int, int]] = {}
            cursor = 0  # statements on one line share it (a definition never shares a line)
            for index, (start, end) in enumerate(self.statements):
                following = self.statements[index + 1][0] if index + 1 < len(self.statements) else len(self.lines)
                span = (max(start, cursor), max(end, following))
                cursor = max(cursor, span[1])
                if start in definitions:
                    owned[start] = span
                else:
                    prelude.append(span)
            self._focus_ranges = (prelude, owned)
        prelude, owned = self._focus_ranges
        span = owned[chunk.start]
        at = bisect.bisect_left(prelude, span)
        return [i for first, stop in (*prelude[:at], span, *prelude[at:]) for i in range(first, stop)]

    def statement_at(self, line: int) -> Optional[tuple[int, int]]:
        at = bisect.bisect_right([start for start, _ in self.statements], line) - 1
        if at >= 0 and self.statements[at][0] <= line < self.statements[at][1]:
            return self.statements[at]
        return None


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _spans(tree: ast.Module, offset: int = 0) -> list[tuple[int, int, bool]]:
    """(start, end, is a definition) of each top-level statement, decorators included."""
    spans = []
    for node in tree.body:
        start = node.lineno - 1
        definition = isinstance(node, _DEFINITIONS)
        if definition:
            start = min([start] + [d.lineno - 1 for d in node.decorator_list])  # type: ignore[attr-defined]
        spans.append((start + offset, (node.end_lineno or node.lineno) + offset, definition))
    return spans


def _assemble(lines: list[str], spans: Sequence[tuple[int, int, bool]]) -> Layout:
    chunks: list[Chunk] = []
    prelude: list[int] = []
    for start, end, definition in spans:
        if definition:
            chunks.append(Chunk(start, end, "".join(lines[start:end])))
        else:
            prelude.extend(range(start, end))
    return Layout(lines, chunks, prelude, [(start, end) for start, end, _ in spans])


def layout(text: str) -> Layout:
    """Raises SyntaxError or ValueError (null bytes) when CPython cannot parse ``text``."""
    return _assemble(split_lines(text), _spans(ast.parse(text)))


def _common_prefix(a: str, b: str) -> int:
    low, high = 0, min(len(a), len(b))
    while low < high:  # slices compare in C: a binary search beats a character loop
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(a: str, b: str, limit: int) -> int:
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if a[len(a) - middle :] == b[len(b) - middle :]:
            low = middle
        else:
            high = middle - 1
    return low


def relayout(previous: Layout, old: str, new: str) -> Optional[Layout]:
    """The layout of ``new`` from ``previous`` (of ``old``), parsing only the statements the edit touched.

    The edited region grows to whole top-level statements, and to the statement
    on each side when it starts or ends between statements (typing at the end of
    a function extends that function). None when the region alone does not parse:
    then the whole buffer has to be parsed (for the error, or for what changed).
    """
    prefix = _common_prefix(old, new)
    suffix = _common_suffix(old, new, min(len(old), len(new)) - prefix)
    starts = [0]
    for line in previous.lines:
        starts.append(starts[-1] + len(line))
    # The end of a last line without a line break belongs to that line.
    open_end = bool(previous.lines) and not previous.lines[-1].endswith(("\n", "\r"))
    limit = len(previous.lines) - 1 if open_end else len(previous.lines)
    first = min(max(0, bisect.bisect_right(starts, prefix) - 1), limit)
    last = min(max(first, bisect.bisect_right(starts, len(old) - suffix) - 1), limit)
    begin, end = first, min(last + 1, len(previous.lines))
    statements = previous.statements
    index_before = bisect.bisect_right([s for s, _ in statements], begin) - 1
    # the statement at or before the first edited line, and at or after the last one
    if index_before >= 0:
        begin = min(begin, statements[index_before][0])
        end = max(end, statements[index_before][1])
    for start, stop in statements:
        if start < end and stop > begin:
            begin, end = min(begin, start), max(end, stop)
        elif start >= end:
            end = stop  # the next statement: an edit just before it may join it
            break
    lines = split_lines(new)
    delta = len(lines) - len(previous.lines)
    region_end = end + delta
    if region_end < begin:
        return None
    try:
        tree = ast.parse("".join(lines[begin:region_end]))
    except (SyntaxError, ValueError, RecursionError):
        return None
    chunk_starts = {c.start for c in previous.chunks}
    spans = [(s, e, s in chunk_starts) for s, e in statements if e <= begin]
    spans += _spans(tree, begin)
    spans += [(s + delta, e + delta, s in chunk_starts) for s, e in statements if s >= end]
    return _assemble(lines, spans)


@dataclass(frozen=True)
class SyntaxProblem:
    """Where the buffer stops parsing (1-based line and column, as the engine reports them)."""

    message: str
    line: int
    col: int


@dataclass
class LintOutcome:
    """One lint of one version of a buffer."""

    version: int
    text: str
    settings: LintSettings
    findings: list[Finding] = field(default_factory=list)
    syntax_error: Optional[SyntaxProblem] = None
    internal_error: Optional[str] = None
    exact: bool = True
    elapsed: float = 0.0
    layout: Optional[Layout] = None
    # (prelude text, chunk text) -> findings with lines relative to the chunk's first line
    cache: dict[tuple[str, str], tuple[Finding, ...]] = field(default_factory=dict)
    linted_lines: int = 0  # how many lines the engine parsed
    # first lines of the definitions a fast lint re-linted (their findings are the engine's on them)
    dirty: tuple[int, ...] = ()


def _shift(finding: Finding, delta: int) -> Finding:
    if not delta:
        return finding
    return dataclasses.replace(finding, line=finding.line + delta, end_line=finding.end_line + delta)


def _sort_key(finding: Finding) -> tuple:
    return (finding.line, finding.col, finding.code)


def _build_cache(found: Layout, findings: Sequence[Finding]) -> dict[tuple[str, str], tuple[Finding, ...]]:
    prelude = found.prelude_text
    by_chunk: dict[int, list[Finding]] = {id(c): [] for c in found.chunks}
    for finding in findings:
        chunk = found.chunk_at(finding.line - 1)
        if chunk is not None:
            by_chunk[id(chunk)].append(_shift(finding, -chunk.start))
    return {(prelude, c.text): tuple(by_chunk[id(c)]) for c in found.chunks}


def _syntax_outcome(version: int, text: str, settings: LintSettings, error: BaseException, started: float) -> LintOutcome:
    if isinstance(error, SourceSyntaxError):
        syntax = SyntaxProblem(error.message, error.line, error.col)
    elif isinstance(error, SyntaxError):
        syntax = SyntaxProblem(error.msg, error.lineno or 1, error.offset or 1)
    else:  # ValueError: source code string cannot contain null bytes
        syntax = SyntaxProblem(str(error), 1, 1)
    return LintOutcome(version, text, settings, syntax_error=syntax, elapsed=time.perf_counter() - started)


def exact_lint(version: int, text: str, path: str, settings: LintSettings) -> LintOutcome:
    """``check_source`` on the whole buffer."""
    started = time.perf_counter()
    try:
        findings = check_source(text, path, select=settings.select, ignore=settings.ignore)
    except SourceSyntaxError as error:
        return _syntax_outcome(version, text, settings, error, started)
    except Exception as error:  # a bug in a rule must not take the server down
        return LintOutcome(
            version, text, settings, internal_error=f"{type(error).__name__}: {error}",
            elapsed=time.perf_counter() - started,
        )
    outcome = LintOutcome(version, text, settings, findings=findings, linted_lines=text.count("\n") + 1)
    try:
        outcome.layout = layout(text)
        outcome.cache = _build_cache(outcome.layout, findings)
    except (SyntaxError, ValueError, RecursionError):  # libcst accepted what CPython does not
        pass
    outcome.elapsed = time.perf_counter() - started
    return outcome


def _focused(found: Layout, chunks: Sequence[Chunk], gaps: bool = False, leading: bool = True) -> tuple[str, list[int]]:
    """The module-level statements and ``chunks``, in order; and focused line -> buffer line (0-based).

    Blank and comment lines cost the engine time and change no finding, so they are
    left out; with ``gaps`` those that follow a kept statement stay (libcst places an
    added import, and the blank line after it, by them), and with ``leading`` too
    those before the first statement.
    """
    wanted = {c.start for c in chunks}
    definitions = {c.start for c in found.chunks}
    statements = found.statements
    total = len(found.lines)
    lines: list[int] = []
    if gaps and leading:
        lines.extend(range(statements[0][0] if statements else total))
    cursor = 0  # statements on one line (``a = 1; b = 2``) share it
    for index, (start, end) in enumerate(statements):
        if start in definitions and start not in wanted:
            continue
        stop = end
        if gaps:
            stop = max(end, statements[index + 1][0] if index + 1 < len(statements) else total)
        lines.extend(range(max(start, cursor), stop))
        cursor = max(cursor, stop)
    return "".join(found.lines[i] for i in lines), lines


def _map_finding(finding: Finding, lines: list[int]) -> Finding:
    return dataclasses.replace(finding, line=lines[finding.line - 1] + 1, end_line=lines[finding.end_line - 1] + 1)


def fast_lint(
    version: int,
    text: str,
    path: str,
    settings: LintSettings,
    previous: Optional[LintOutcome],
    max_share: float = 0.5,
) -> LintOutcome:
    """Lint only what changed since ``previous``; the whole buffer when that is not worth it."""
    started = time.perf_counter()
    try:
        found = None
        if previous is not None and previous.layout is not None:
            found = relayout(previous.layout, previous.text, text)
        if found is None:
            found = layout(text)
    except (SyntaxError, ValueError) as error:
        outcome = _syntax_outcome(version, text, settings, error, started)
        outcome.exact = False  # libcst's message for what CPython accepts comes from the exact lint
        return outcome
    except RecursionError:
        return exact_lint(version, text, path, settings)
    usable = previous is not None and previous.settings == settings and previous.cache
    if not usable or not found.chunks:
        return exact_lint(version, text, path, settings)
    prelude = found.prelude_text
    dirty = [c for c in found.chunks if (prelude, c.text) not in previous.cache]  # type: ignore[union-attr]
    focused_lines = len(found.prelude) + sum(c.end - c.start for c in dirty)
    if focused_lines > max_share * max(1, len(found.lines)):
        return exact_lint(version, text, path, settings)
    focused_text, lines = _focused(found, dirty)
    try:
        focused = check_source(focused_text, path, select=settings.select, ignore=settings.ignore)
    except Exception:  # libcst rejects a definition CPython accepts, or a rule failed: let the exact lint say
        return exact_lint(version, text, path, settings)
    findings = [_map_finding(f, lines) for f in focused]
    cache: dict[tuple[str, str], tuple[Finding, ...]] = {}
    fresh = _build_cache(found, findings)
    for chunk in found.chunks:
        key = (prelude, chunk.text)
        if key in fresh and chunk in dirty:
            cache[key] = fresh[key]
        else:
            cache[key] = previous.cache[key]  # type: ignore[union-attr]
            findings.extend(_shift(f, chunk.start) for f in cache[key])
    findings.sort(key=_sort_key)
    return LintOutcome(
        version, text, settings, findings=findings, exact=False, elapsed=time.perf_counter() - started,
        layout=found, cache=cache, linted_lines=focused_lines, dirty=tuple(c.start for c in dirty),
    )


# --- fixes ---------------------------------------------------------------------------------


def level_rank(level: object) -> int:
    """2 for error, 1 for warning (and for a finding without a level)."""
    return 2 if str(level) == "error" else 1


def fixed_by_run(finding: Finding, unsafe_fixes: bool, level: object = Level.WARNING) -> bool:
    """Would a ``fix_source`` run with ``unsafe_fixes`` and ``level`` rewrite this finding?"""
    if level_rank(getattr(finding, "level", None)) < level_rank(level):
        return False
    if finding.fix_safety is FixSafety.SAFE:
        return True
    return finding.fix_safety is FixSafety.UNSAFE and unsafe_fixes


@dataclass(frozen=True)
class SingleFix:
    edits: list[Edit]
    companions: int = 0  # findings of the same rule on the same line, fixed together with this one


def _isolated_text(
    text: str, path: str, target: Finding, findings: Sequence[Finding], settings: LintSettings
) -> Optional[tuple[str, int, FixResult]]:
    """``text`` after fixing ``target`` as if it were the only finding, the number of companions,
    and the engine's result (of the text with the temporary comments)."""
    unsafe = settings.unsafe_fixes or target.fix_safety is FixSafety.UNSAFE
    silence: dict[int, list[str]] = {}
    companions = 0
    for other in findings:
        if other == target or not fixed_by_run(other, unsafe):
            continue
        if other.line == target.line and other.code == target.code:
            companions += 1  # a line-wide noqa would silence the target too
            continue
        silence.setdefault(other.line, []).append(other.code)
    marked = text
    markers: list[str] = []
    if silence:
        sites = CommentSites(text)
        edits = []
        width = len(str(len(silence)))  # one width: no marker is the start of another (1 and 10)
        for number, (line, codes) in enumerate(sorted(silence.items())):
            marker = f"{_MARKER}{number:0{width}d}"
            edit = sites.noqa_edit(line, [*codes, marker], keep_whitespace=True)
            if edit is None:
                return None  # a finding on a line that cannot carry a comment: cannot isolate
            markers.append(edit.new_text)
            edits.append(edit)
        marked = apply_edits(text, edits)
    try:
        # Every level: the user picked this finding, whatever its level (`gradfix fix --level warning`).
        result = fix_source(
            marked, path, select=settings.select, ignore=settings.ignore, unsafe_fixes=unsafe, level=Level.WARNING
        )
    except Exception:
        return None
    fixed = result.source
    for inserted in markers:
        if fixed.count(inserted) != 1:
            return None  # a fix moved or rewrote a temporary comment: do not guess
        fixed = fixed.replace(inserted, "", 1)
    if _MARKER in fixed:
        return None
    return fixed, companions, result


def single_fix(
    text: str,
    path: str,
    target: Finding,
    findings: Optional[Sequence[Finding]],
    settings: LintSettings,
) -> Optional[SingleFix]:
    """The edits of ``target``'s fix alone, on the whole buffer (None: nothing to apply).

    ``findings``: the buffer's findings (None: computed here, as ``check_source`` gives them).
    """
    if target.fix_safety is FixSafety.DISPLAY_ONLY:
        return None
    if findings is None:
        try:
            findings = check_source(text, path, select=settings.select, ignore=settings.ignore)
        except Exception:
            return None
        if target not in findings:
            return None
    isolated = _isolated_text(text, path, target, findings, settings)
    if isolated is None or isolated[0] == text:
        return None
    return SingleFix(minimal_edits(text, isolated[0]), isolated[1])


def focused_single_fix(
    text: str, path: str, target: Finding, findings: Sequence[Finding], settings: LintSettings, found: Layout
) -> Optional[SingleFix]:
    """:func:`single_fix` on ``target``'s top-level definition and the module-level statements only.

    Used when the engine reports the same findings there as in ``findings``; None
    when it does not, when ``target`` is not inside a definition, or when the
    edits do not carry over exactly (then the whole buffer is needed).
    """
    if target.fix_safety is FixSafety.DISPLAY_ONLY:
        return None
    return _focused_fix(text, path, target, findings, settings, found)


def quick_fix(
    text: str,
    path: str,
    target: Finding,
    findings: Sequence[Finding],
    settings: LintSettings,
    found: Optional[Layout],
    exact: bool,
) -> Optional[SingleFix]:
    """:func:`focused_single_fix` when it applies, else :func:`single_fix` (one call, for the worker process).

    ``exact``: ``findings`` are the whole buffer's, as ``check_source`` gives them.
    """
    if found is not None:
        fix = focused_single_fix(text, path, target, findings, settings, found)
        if fix is not None:
            return fix
    return single_fix(text, path, target, findings if exact else None, settings)


def _focused_fix(
    text: str, path: str, target: Finding, findings: Sequence[Finding], settings: LintSettings, found: Layout
) -> Optional[SingleFix]:
    chunk = found.chunk_at(target.line - 1)
    if chunk is None or len(found.chunks) < 2:
        return None
    focused_text, lines = _focused(found, [chunk], gaps=True)
    back = {buffer_line: i for i, buffer_line in enumerate(lines)}
    kept = [f for f in findings if f.line - 1 in back and f.end_line - 1 in back]
    local = [dataclasses.replace(f, line=back[f.line - 1] + 1, end_line=back[f.end_line - 1] + 1) for f in kept]
    try:
        seen = check_source(focused_text, path, select=settings.select, ignore=settings.ignore)
    except Exception:
        return None
    if [_identity(f) for f in seen] != [_identity(f) for f in local]:
        return None  # the definition alone does not reproduce the buffer's findings
    local_target = local[kept.index(target)]
    isolated = _isolated_text(focused_text, path, local_target, local, settings)
    if isolated is None or isolated[0] == focused_text:
        return None
    edits = _map_edits(minimal_edits(focused_text, isolated[0]), focused_text, lines, found)
    if edits is None:
        return None
    return SingleFix(edits, isolated[1])


def _identity(finding: Finding) -> tuple:
    return (finding.line, finding.col, finding.end_line, finding.end_col, finding.code, finding.fix_safety, finding.fix_title)


def _map_edits(edits: list[Edit], focused_text: str, lines: list[int], found: Layout) -> Optional[list[Edit]]:
    """Edits of the focused text as edits of the buffer; None if one does not carry over exactly.

    An offset at the start of a focused line whose buffer line does not follow the
    previous kept line (left-out lines in between) is ambiguous: the end of a
    replaced range and an insertion (an added import) belong after the previous
    kept line, the start of a replaced range at the start of its own line.
    """
    focused_starts = [0]
    for i in lines:
        focused_starts.append(focused_starts[-1] + len(found.lines[i]))
    buffer_starts = found.starts

    def to_buffer(offset: int, after_previous: bool) -> int:
        row = bisect.bisect_right(focused_starts, offset) - 1
        if row >= len(lines):  # the end of the focused text: after its last line
            return buffer_starts[lines[-1] + 1]
        if after_previous and row > 0 and offset == focused_starts[row]:
            return buffer_starts[lines[row - 1] + 1]
        return buffer_starts[lines[row]] + offset - focused_starts[row]

    mapped = []
    for edit in edits:
        start = to_buffer(edit.start, after_previous=edit.start == edit.end)
        end = to_buffer(edit.end, after_previous=True)
        if _buffer_slice(found, start, end) != focused_text[edit.start : edit.end]:
            return None
        mapped.append(Edit(start, end, edit.new_text))
    return mapped


def _buffer_slice(found: Layout, start: int, end: int) -> str:
    """``text[start:end]`` of the layout's text, joining only the lines it spans."""
    if end <= start:
        return ""
    first = bisect.bisect_right(found.starts, start) - 1
    last = bisect.bisect_left(found.starts, end)
    offset = found.starts[first]
    return "".join(found.lines[first:last])[start - offset : end - offset]


def fix_all(text: str, path: str, settings: LintSettings) -> list[Edit]:
    """The edits of ``gradfix fix`` on the buffer: safe fixes (unsafe ones too when configured)
    of error-level findings (warnings too with ``fixLevel = "warning"``)."""
    result = fix_source(
        text, path, select=settings.select, ignore=settings.ignore, unsafe_fixes=settings.unsafe_fixes,
        level=Level(settings.fix_level),
    )
    return minimal_edits(text, result.source)


# --- fixes on one definition at a time ---------------------------------------------------------


def fix_identity(finding: Finding) -> tuple:
    """What decides a finding's fix: where it is, its rule, its fix and its level."""
    return (*_identity(finding), str(getattr(finding, "level", None)))


@dataclass(frozen=True)
class Focus:
    """One top-level definition with the module-level statements, as the engine sees them alone.

    ``text`` holds those lines of the buffer in order, with the blank and comment
    lines that follow a module-level statement (libcst places an added import by
    them); the lines before the first statement are left out, so that what the
    engine sees, and the key of what it makes of it, does not change with them.
    """

    text: str
    lines: tuple[int, ...]  # focused line -> buffer line (0-based)
    chunk: Chunk
    kept: tuple[Finding, ...]  # the buffer's findings on those lines
    local: tuple[Finding, ...]  # the same findings, numbered as in ``text``

    def key(self, path: str, settings: LintSettings) -> tuple:
        """Everything a fix computed on this focus depends on (the text and findings as a digest:
        the key is hashed at every look-up)."""
        digest = hashlib.blake2b(self.text.encode("utf-8", "surrogatepass"), digest_size=16)
        digest.update(repr([fix_identity(f) for f in self.local]).encode("utf-8", "surrogatepass"))
        return (path, settings, digest.digest())

    def local_of(self, finding: Finding) -> Optional[Finding]:
        """``finding`` (of the buffer) as numbered in the focus."""
        try:
            return self.local[self.kept.index(finding)]
        except ValueError:
            return None

    def to_buffer(self, edits: Sequence[Edit], found: Layout) -> Optional[list[Edit]]:
        return _map_edits(list(edits), self.text, list(self.lines), found)


def focus_of(found: Layout, chunk: Chunk, findings: Sequence[Finding]) -> Focus:
    lines = found.focus_lines(chunk)
    text = "".join([found.lines[i] for i in lines])
    back = {buffer_line: i for i, buffer_line in enumerate(lines)}
    kept = tuple(f for f in findings if f.line - 1 in back and f.end_line - 1 in back)
    local = tuple(dataclasses.replace(f, line=back[f.line - 1] + 1, end_line=back[f.end_line - 1] + 1) for f in kept)
    return Focus(text, tuple(lines), chunk, kept, local)


def focus_for(found: Optional[Layout], finding: Finding, findings: Sequence[Finding]) -> Optional[Focus]:
    """The focus of the definition holding ``finding``; None when it is not in one (or there is only one)."""
    if found is None or len(found.chunks) < 2:
        return None
    chunk = found.chunk_at(finding.line - 1)
    if chunk is None or found.chunk_at(finding.end_line - 1) is not chunk:
        return None
    return focus_of(found, chunk, findings)


@dataclass(frozen=True)
class FocusedFix:
    """A fix as edits of a focus's text."""

    edits: tuple[Edit, ...]
    companions: int = 0


@dataclass
class FocusFixes:
    """What :func:`focus_fixes` computed on one focus; edits are of the focus's text.

    ``verified`` False: the engine reads the focus differently from the buffer, and
    nothing else was computed (the whole buffer is needed).
    """

    verified: bool
    quick: dict[tuple, Optional[FocusedFix]] = field(default_factory=dict)  # by fix_identity; None: no fix
    fix_all_done: bool = False
    fix_all: Optional[tuple[Edit, ...]] = None  # None (when done): the focus cannot stand for the buffer


def focus_fixes(
    text: str,
    path: str,
    local: Sequence[Finding],
    settings: LintSettings,
    targets: Sequence[Finding] = (),
    want_fix_all: bool = False,
    verified: bool = False,
) -> FocusFixes:
    """The quick fixes of ``targets`` and, with ``want_fix_all``, the fix-all, on a focus's text.

    ``local``: the buffer's findings on the focus, numbered as in ``text``;
    ``verified``: the caller knows the engine reports exactly those there, so the
    check is skipped. Takes only small arguments: it runs in a worker process.
    """
    if not verified:
        try:
            seen = check_source(text, path, select=settings.select, ignore=settings.ignore)
        except Exception:
            return FocusFixes(False)
        if [fix_identity(f) for f in seen] != [fix_identity(f) for f in local]:
            return FocusFixes(False)
    outcome = FocusFixes(True)
    for target in targets:
        key = fix_identity(target)
        isolated = None
        if target.fix_safety is not FixSafety.DISPLAY_ONLY and target in local:
            isolated = _isolated_text(text, path, target, local, settings)
        if isolated is None or isolated[0] == text:
            outcome.quick[key] = None
            continue
        fixed, companions, result = isolated
        edits = tuple(minimal_edits(text, fixed))
        outcome.quick[key] = FocusedFix(edits, companions)
        if want_fix_all and not outcome.fix_all_done and _fix_all_is_the_quick_fix(target, local, settings, result):
            outcome.fix_all_done, outcome.fix_all = True, edits
    if want_fix_all and not outcome.fix_all_done:
        outcome.fix_all_done = True
        if any(fixed_by_run(f, settings.unsafe_fixes, settings.fix_level) for f in local):
            try:
                result = fix_source(
                    text, path, select=settings.select, ignore=settings.ignore, unsafe_fixes=settings.unsafe_fixes,
                    level=Level(settings.fix_level),
                )
            except Exception:
                outcome.fix_all = None
            else:
                outcome.fix_all = tuple(minimal_edits(text, result.source))
        else:
            outcome.fix_all = ()
    return outcome


def _fix_all_is_the_quick_fix(target: Finding, local: Sequence[Finding], settings: LintSettings, result: FixResult) -> bool:
    """Did the quick fix's engine run do exactly what the fix-all run would?

    It did when ``target`` is the only finding that either run fixes (so no comment
    was added and both first passes fix the same), and nothing the quick fix's run
    could fix was left at its end (so its second pass had nothing to do; the
    fix-all run, with fewer levels or safeties, has nothing either).
    """
    unsafe = settings.unsafe_fixes or target.fix_safety is FixSafety.UNSAFE
    if [f for f in local if fixed_by_run(f, unsafe)] != [target]:
        return False
    if not fixed_by_run(target, settings.unsafe_fixes, settings.fix_level):
        return False
    return not any(fixed_by_run(f, unsafe) for f in result.remaining)


def fix_all_targets(findings: Sequence[Finding], settings: LintSettings) -> list[Finding]:
    return [f for f in findings if fixed_by_run(f, settings.unsafe_fixes, settings.fix_level)]


def fix_all_plan(findings: Sequence[Finding], found: Optional[Layout], settings: LintSettings) -> Optional[list[Focus]]:
    """The foci of the definitions holding a finding fix-all fixes.

    None when one lies outside every definition (a module-level fix changes what
    every definition reads: the whole buffer is needed).
    """
    if found is None or len(found.chunks) < 2:
        return None
    chunks: list[Chunk] = []
    for finding in fix_all_targets(findings, settings):
        chunk = found.chunk_at(finding.line - 1)
        if chunk is None or found.chunk_at(finding.end_line - 1) is not chunk:
            return None
        if chunk not in chunks:
            chunks.append(chunk)
    return [focus_of(found, chunk, findings) for chunk in chunks]


def merge_edits(parts: Sequence[Sequence[Edit]]) -> Optional[list[Edit]]:
    """The edits of every part, the same edit once; None if two touch the same text.

    Each definition's edits lie in that definition, but two may add the same import:
    that is one edit. Two different edits at one place (two imports added by one
    line) would need the engine's own order: None.
    """
    merged = sorted({edit for part in parts for edit in part}, key=lambda e: (e.start, e.end))
    for before, after in zip(merged, merged[1:]):
        if before.end > after.start:
            return None
        if before.end == after.start and (before.start == before.end or after.start == after.end):
            return None
    return merged


def fix_all_by_focus(text: str, path: str, settings: LintSettings, findings: Sequence[Finding], found: Optional[Layout]) -> Optional[list[Edit]]:
    """:func:`fix_all` computed one definition at a time; None when the whole buffer is needed.

    ``findings``: the buffer's, as ``check_source`` gives them. The server does the
    same with results it keeps; this is the plain version (and what the tests check).
    """
    plan = fix_all_plan(findings, found, settings)
    if plan is None:
        return None
    parts = []
    for focus in plan:
        result = focus_fixes(focus.text, path, focus.local, settings, want_fix_all=True)
        if not result.verified or result.fix_all is None:
            return None
        mapped = focus.to_buffer(result.fix_all, found)  # type: ignore[arg-type]
        if mapped is None:
            return None
        parts.append(mapped)
    return merge_edits(parts)
