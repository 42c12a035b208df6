"""The CLI's side of ``gradfix verify`` and ``gradfix fix --verify``.

Builds the original and rewritten programs (the rewrite is gradfix's own fix,
made in memory: nothing is written), chooses devices, and renders verdicts.
The checks themselves live in ``gradfix.verify``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from . import files
from .codemods import SourceSyntaxError, fix_source
from .config import Settings, engine_selection
from .verify import Program, Verdict, WorkerError, WorkerSession, verify

DEVICES = ("cpu", "cuda", "all")


class VerifyUsageError(Exception):
    """Bad arguments or an environment that cannot verify (exit 2)."""


@dataclass
class Options:
    device: str = "all"
    timeout: float = 120.0
    python: Optional[str] = None
    memory_mb: Optional[int] = 8192


@dataclass
class Report:
    subject: str
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.verdicts) and all(v.verified for v in self.verdicts)


def fixed_text(path: str, settings: Settings) -> tuple[str, str]:
    """The file's text and gradfix's fix of it, in memory."""
    source = files.read_source(path, path)
    select, ignore = engine_selection(settings.select, settings.ignore)
    try:
        result = fix_source(source.text, path, select=select, ignore=ignore, unsafe_fixes=settings.unsafe_fixes,
                            level=settings.fix_level)
    except SourceSyntaxError as error:
        raise VerifyUsageError(f"{path}:{error.line}:{error.col}: syntax error: {error.message}") from None
    return source.text, result.source


def devices_for(choice: str, session: WorkerSession) -> tuple[list[str], list[str]]:
    """The devices to run on, and notes about the choice."""
    if choice == "cpu":
        return ["cpu"], []
    if choice == "cuda":
        if not session.cuda_available:
            raise VerifyUsageError(f"--device cuda: CUDA is not available to {session.python} (torch {session.torch_version})")
        return ["cuda"], []
    if session.cuda_available:
        return ["cpu", "cuda"], []
    return ["cpu"], ["CUDA is not available here: checked on CPU only"]


def open_session(options: Options) -> WorkerSession:
    """Start the worker now: it imports torch while gradfix makes the fix."""
    try:
        return WorkerSession(options.python)
    except WorkerError as error:
        raise VerifyUsageError(str(error)) from None


def run(original: Program, rewrite: Program, subject: str, options: Options, notes: Sequence[str] = (),
        session: Optional[WorkerSession] = None) -> Report:
    report = Report(subject, notes=list(notes))
    own = session is None
    try:
        session = session or WorkerSession(options.python)
        devices, device_notes = devices_for(options.device, session)
        report.notes.extend(device_notes)
        for device in devices:
            report.verdicts.append(
                verify(original, rewrite, device=device, timeout=options.timeout,
                       memory_mb=options.memory_mb, session=session)
            )
    except WorkerError as error:
        raise VerifyUsageError(str(error)) from None
    finally:
        if own and session is not None:
            session.close()
    return report


def script_programs(script: str, fixed: Optional[str], settings: Settings) -> tuple[Program, Program, list[str]]:
    path = Path(script)
    if fixed is not None:
        rewrite_text = files.read_source(fixed, fixed).text
        return Program(path), Program(path, source=rewrite_text), [f"the rewrite is {fixed}"]
    original_text, rewrite_text = fixed_text(script, settings)
    notes = []
    if rewrite_text == original_text:
        notes.append("no fix applies: the original is checked as its own rewrite")
    return Program(path), Program(path, source=rewrite_text), notes


def library_programs(driver: str, sources: dict[str, str]) -> tuple[Program, Program]:
    """The driver against the original files on disk, and against their fixes served from memory."""
    path = Path(driver)
    return Program(path), Program(path, overrides=sources)


# --- rendering ---------------------------------------------------------------------------------


def render_text(reports: Sequence[Report]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    styles = {"passed": "green", "failed": "bold red", "inconclusive": "yellow", "skipped": "dim"}
    for report in reports:
        for verdict in report.verdicts:
            headline_style = "green" if verdict.verified else ("red" if verdict.status == "failed" else "yellow")
            console.print(f"[bold]{report.subject}[/bold] ({verdict.device}): [{headline_style}]{verdict.headline()}[/]")
            table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            table.add_column("check")
            table.add_column("result")
            table.add_column("evidence", overflow="fold")
            table.add_column("time", justify="right")
            for check in verdict.checks:
                table.add_row(check.name, f"[{styles.get(check.status, '')}]{check.status}[/]", check.detail,
                              f"{check.seconds:.2f}s" if check.seconds else "")
            console.print(table)
            for note in verdict.notes:
                console.print(f"  note: {note}")
        for note in report.notes:
            console.print(f"  note: {note}")


def render_json(reports: Sequence[Report]) -> str:
    return json.dumps(
        [
            {"subject": r.subject, "verified": r.verified, "notes": r.notes, "verdicts": [v.to_json() for v in r.verdicts]}
            for r in reports
        ],
        indent=2,
    )
