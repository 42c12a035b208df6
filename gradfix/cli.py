"""The ``gradfix`` command line. Thin: parsing options and choosing exit codes.

Exit codes (all commands): 0 nothing to report, 1 findings remain (or, for
``fix --diff``, there are changes; for ``apply``, a file was refused), 2 an
error (a file that cannot be read, decoded or parsed, a bad configuration, a
malformed patch). Files after a failing one are still processed.
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__, files, patches, report, runner
from .codemods import ALL_RULES
from .config import ConfigError, Settings, load_config, merge, parse_selectors
from .report import err, out, plural

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

app = typer.Typer(
    name="gradfix",
    help="Find and fix PyTorch in-place operations that break autograd.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


# --- shared options ----------------------------------------------------------------------

PathsArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="Files or directories (directories are searched for *.py). Default: the current directory.", show_default=False),
]
SelectOpt = Annotated[
    Optional[list[str]],
    typer.Option("--select", help="Only these rule codes or prefixes (comma-separated, repeatable; ALL for every rule).", show_default=False),
]
IgnoreOpt = Annotated[
    Optional[list[str]],
    typer.Option("--ignore", help="Skip these rule codes or prefixes (comma-separated, repeatable).", show_default=False),
]
UnsafeOpt = Annotated[
    Optional[bool],
    typer.Option("--unsafe-fixes/--no-unsafe-fixes", help="Also apply fixes that may change behaviour (default: the config's unsafe-fixes, else off).", show_default=False),
]
ExitZeroOpt = Annotated[bool, typer.Option("--exit-zero", help="Exit 0 even when findings remain (errors still exit 2).")]
ForceExcludeOpt = Annotated[
    bool, typer.Option("--force-exclude", help="Apply exclusions to paths named on the command line too.")
]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="Settings file (default: the nearest pyproject.toml with \\[tool.gradfix]).", show_default=False),
]


def _fail(message: str) -> typer.Exit:
    err(f"error: {message}")
    return typer.Exit(EXIT_ERROR)


def _prepare(
    paths: Optional[list[str]],
    select: Optional[list[str]],
    ignore: Optional[list[str]],
    unsafe_fixes: Optional[bool],
    config_path: Optional[Path],
    force_exclude: bool,
) -> tuple[Settings, files.Discovery]:
    """Load settings and find the files; exits 2 on a bad configuration."""
    paths = paths or ["."]
    try:
        config = load_config(config_path, paths[0])
        settings = merge(
            config,
            parse_selectors(select, "--select") if select else None,
            parse_selectors(ignore, "--ignore") if ignore else None,
            unsafe_fixes,
        )
    except ConfigError as error:
        raise _fail(str(error)) from None
    for warning in config.warnings:
        err(f"warning: {warning}")
    excluder = files.Excluder(config.exclude, config.root)
    discovery = files.discover(paths, excluder, force_exclude)
    if not discovery.files and not discovery.errors:
        err("warning: No Python files found under the given path(s)")
    return settings, discovery


def _report_problems(discovery: files.Discovery, outcomes: list[runner.FileOutcome]) -> int:
    """Print errors and notes (stderr); the number of paths that had an error."""
    for message in discovery.errors:
        err(message)
    failed = len(discovery.errors)
    for outcome in outcomes:
        for note in outcome.notes:
            err(note)
        for message in outcome.errors:
            err(message)
        failed += bool(outcome.errors)
    return failed


# --- commands -------------------------------------------------------------------------------


@app.command()
def check(
    paths: PathsArg = None,
    select: SelectOpt = None,
    ignore: IgnoreOpt = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.text,
    unsafe_fixes: UnsafeOpt = None,
    exit_zero: ExitZeroOpt = False,
    force_exclude: ForceExcludeOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Report in-place operations that break autograd."""
    settings, discovery = _prepare(paths, select, ignore, unsafe_fixes, config, force_exclude)
    outcomes = runner.run(discovery.files, settings, runner.CHECK)
    failed = _report_problems(discovery, outcomes)
    findings = sorted((f for o in outcomes for f in o.findings), key=report.sort_key)
    if output_format is OutputFormat.json:
        out(report.findings_json(findings))
    else:
        for finding in findings:
            out(report.finding_line(finding, settings.unsafe_fixes))
        out(report.check_summary(findings, settings.unsafe_fixes, failed))
    if failed:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_FINDINGS if findings and not exit_zero else EXIT_OK)


@app.command()
def fix(
    paths: PathsArg = None,
    diff: Annotated[bool, typer.Option("--diff", help="Write nothing; print the unified diff that fixing would apply.")] = False,
    unsafe_fixes: UnsafeOpt = None,
    select: SelectOpt = None,
    ignore: IgnoreOpt = None,
    exit_zero: ExitZeroOpt = False,
    force_exclude: ForceExcludeOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Rewrite in-place operations in place (safe fixes; --unsafe-fixes for all)."""
    settings, discovery = _prepare(paths, select, ignore, unsafe_fixes, config, force_exclude)
    outcomes = runner.run(discovery.files, settings, runner.DIFF if diff else runner.FIX)
    failed = _report_problems(discovery, outcomes)
    changed = [o for o in outcomes if o.applied]
    fixed = sum(sum(o.applied.values()) for o in changed)
    remaining = sorted((f for o in outcomes for f in o.findings), key=report.sort_key)

    if diff:
        for outcome in changed:
            if files.is_outside(files.patch_path(outcome.path)):
                err(f"warning: {outcome.display} is outside the current directory; git apply and patch refuse `..` paths")
            report.out_bytes(outcome.diff)
        if changed:
            err(f"Would fix {plural(fixed, 'finding')} in {plural(len(changed), 'file')}.")
        else:
            err("No fixes to apply.")
        raise typer.Exit(EXIT_ERROR if failed else EXIT_FINDINGS if changed else EXIT_OK)

    for outcome in changed:
        out(report.fixed_line(outcome.display, outcome.applied))
    for finding in remaining:
        out(report.finding_line(finding, settings.unsafe_fixes))
    out(report.fix_summary(fixed, remaining, settings.unsafe_fixes, failed))
    if failed:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_FINDINGS if remaining and not exit_zero else EXIT_OK)


@app.command()
def apply(
    patch: Annotated[str, typer.Argument(help="A unified diff (from `gradfix fix --diff`, possibly edited), or - for stdin.")],
) -> None:
    """Apply a reviewed patch: each file gets all its hunks or none.

    Run it from the folder where `gradfix fix --diff` made the patch (paths are relative to it).

    Context and removed lines must match the file exactly (a shifted position is
    found, as git and patch do; no fuzz). A file that does not match is left
    untouched and named on stderr; the other files are still patched.
    """
    if patch == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = files.read_bytes(patch, patch)
        except files.FileError as error:
            raise _fail(str(error)) from None
    try:
        file_patches = patches.parse_patch(data)
    except patches.PatchError as error:
        raise _fail(f"{patch if patch != '-' else '<stdin>'}: {error}") from None
    if not file_patches:
        out("Nothing to apply: the patch is empty.")
        raise typer.Exit(EXIT_OK)

    outcomes = patches.apply_patch(file_patches)
    refused = errors = 0
    for outcome in outcomes:
        if outcome.applied:
            out(f"Patched {outcome.display} ({plural(outcome.hunks, 'hunk')})")
        elif outcome.refused:
            err(outcome.refused)
            refused += 1
        elif outcome.error:
            err(outcome.error)
            errors += 1
    applied = sum(1 for o in outcomes if o.applied)
    summary = f"Applied the patch to {plural(applied, 'file')}"
    if refused:
        summary += f"; refused {plural(refused, 'file')} whose content no longer matches"
    if errors:
        summary += f"; {plural(errors, 'file')} could not be read or written"
    out(summary + ".")
    raise typer.Exit(EXIT_ERROR if errors else EXIT_FINDINGS if refused else EXIT_OK)


@app.command("rules")
def rules(
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.text,
) -> None:
    """List the rules: code, name and what goes wrong."""
    if output_format is OutputFormat.json:
        out(json.dumps([{"code": r.code, "name": r.name, "why": r.why} for r in ALL_RULES], indent=2))
        return
    width = max((len(r.name) for r in ALL_RULES), default=0)
    for rule in ALL_RULES:
        out(f"{rule.code}  {rule.name:<{width}}  {rule.why}")


def _version(value: bool) -> None:
    if value:
        out(f"gradfix {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Find and fix PyTorch in-place operations that break autograd."""


def main() -> None:
    """Console-script entry point."""
    app(prog_name="gradfix")
