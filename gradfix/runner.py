"""Running the engine over files: read, check or fix, encode, write or diff.

One :class:`FileOutcome` per file; the CLI turns them into output and an exit
code. A problem with one file (unreadable, undecodable, a syntax error, even a
crash inside a rule) is recorded on that file and never stops the others.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, TypeVar

from . import files, patches
from .codemods import Finding, SourceSyntaxError, check_source, fix_source
from .config import Settings, engine_selection

#: Show a progress bar (on a terminal only) from this many files on.
PROGRESS_THRESHOLD = 30

# PLAN computes fixes without writing them (``fix --verify`` writes what verifies).
CHECK, FIX, DIFF, PLAN = "check", "fix", "diff", "plan"

T = TypeVar("T")


@dataclass
class FileOutcome:
    path: str
    display: str
    findings: list[Finding] = field(default_factory=list)  # check: all; fix/diff: what remains
    applied: dict[str, int] = field(default_factory=dict)  # fixes written (fix) or that would be (diff)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # skipped files and similar, not errors
    diff: bytes = b""
    written: bool = False
    original_text: str = ""  # PLAN: the text before and after fixing, and the bytes to write
    new_text: str = ""
    new_data: bytes = b""


def _progress(items: Sequence[T], description: str) -> Iterator[T]:
    if len(items) <= PROGRESS_THRESHOLD or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as progress:
        task = progress.add_task(description, total=len(items))
        for item in items:
            yield item
            progress.advance(task)


def run(paths: Sequence[str], settings: Settings, mode: str, cwd: Optional[str] = None) -> list[FileOutcome]:
    cwd = cwd or os.getcwd()
    description = {CHECK: "Checking", FIX: "Fixing", DIFF: "Diffing", PLAN: "Fixing"}[mode]
    outcomes = []
    for path in _progress(list(paths), description):
        display = files.display_path(path, cwd)
        if mode == CHECK:
            outcomes.append(_check_file(path, display, settings))
        else:
            outcomes.append(_fix_file(path, display, settings, mode, cwd))
    outcomes.sort(key=lambda o: o.display)
    return outcomes


def _read(outcome: FileOutcome) -> Optional[files.SourceFile]:
    try:
        return files.read_source(outcome.path, outcome.display)
    except files.FileSkipped as skipped:
        outcome.notes.append(str(skipped))
    except files.FileError as error:
        outcome.errors.append(str(error))
    return None


def _syntax_error(display: str, error: SourceSyntaxError) -> str:
    return f"{display}:{error.line}:{error.col}: syntax error: {error.message}"


def _internal_error(display: str, error: BaseException) -> str:
    return f"{display}: internal error in gradfix ({type(error).__name__}: {error}); file left unchanged"


def write_planned(outcome: FileOutcome, settings: Settings) -> None:
    """Write a PLAN outcome's fixed bytes; on failure, record the error and restore its findings."""
    try:
        files.write_atomic(outcome.path, outcome.new_data, outcome.display)
    except files.FileError as error:
        outcome.errors.append(str(error))
        _keep_original(outcome, settings)
        return
    outcome.written = True


def withdraw_planned(outcome: FileOutcome, settings: Settings, reason: str) -> None:
    """A PLAN outcome that will not be written: its original findings remain."""
    _keep_original(outcome, settings)
    outcome.notes.append(f"{outcome.display}: not written: {reason}")


def _keep_original(outcome: FileOutcome, settings: Settings) -> None:
    select, ignore = engine_selection(settings.select, settings.ignore)
    outcome.findings = check_source(outcome.original_text, outcome.display, select=select, ignore=ignore,
                                    level=settings.report_level)
    outcome.applied = {}


def _check_file(path: str, display: str, settings: Settings) -> FileOutcome:
    outcome = FileOutcome(path, display)
    source = _read(outcome)
    if source is None:
        return outcome
    select, ignore = engine_selection(settings.select, settings.ignore)
    try:
        outcome.findings = check_source(source.text, display, select=select, ignore=ignore, level=settings.report_level)
    except SourceSyntaxError as error:
        outcome.errors.append(_syntax_error(display, error))
    except Exception as error:  # a bug in a rule must not stop the run
        outcome.errors.append(_internal_error(display, error))
    return outcome


def _fix_file(path: str, display: str, settings: Settings, mode: str, cwd: str) -> FileOutcome:
    outcome = FileOutcome(path, display)
    source = _read(outcome)
    if source is None:
        return outcome
    select, ignore = engine_selection(settings.select, settings.ignore)
    try:
        result = fix_source(source.text, display, select=select, ignore=ignore, unsafe_fixes=settings.unsafe_fixes,
                            level=settings.fix_level)
    except SourceSyntaxError as error:
        outcome.errors.append(_syntax_error(display, error))
        return outcome
    except Exception as error:
        outcome.errors.append(_internal_error(display, error))
        return outcome
    outcome.errors.extend(result.errors)
    outcome.findings = list(result.remaining)
    if result.source == source.text:
        return outcome
    try:
        new_data = source.encode(result.source)
    except files.FileError as error:
        outcome.errors.append(str(error))
        # Nothing is written, so everything found in the original remains.
        outcome.findings = check_source(source.text, display, select=select, ignore=ignore, level=settings.report_level)
        return outcome
    if new_data == source.data:  # pragma: no cover - text differs, so bytes do
        return outcome
    if mode == PLAN:
        outcome.original_text, outcome.new_text, outcome.new_data = source.text, result.source, new_data
        outcome.applied = dict(result.applied)
        return outcome
    if mode == DIFF:
        try:
            outcome.diff = patches.unified_diff(files.patch_path(path, cwd), source.data, new_data)
        except Exception as error:  # the diff's self-check failed: print nothing rather than a wrong diff
            outcome.errors.append(_internal_error(display, error))
            return outcome
        outcome.applied = dict(result.applied)
        return outcome
    try:
        files.write_atomic(path, new_data, display)
    except files.FileError as error:
        outcome.errors.append(str(error))
        outcome.findings = check_source(source.text, display, select=select, ignore=ignore, level=settings.report_level)
        return outcome
    outcome.written = True
    outcome.applied = dict(result.applied)
    return outcome
