"""The ``gradfix`` command line. Thin: parsing options and choosing exit codes.

Exit codes (all commands): 0 nothing to report, 1 findings remain (or, for
``fix --diff``, there are changes; for ``apply``, a file was refused), 2 an
error (a file that cannot be read, decoded or parsed, a bad configuration, a
malformed patch). Files after a failing one are still processed.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__, files, patches, report, runner
from .codemods import Level
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


class CheckFormat(str, enum.Enum):
    text = "text"
    json = "json"
    github = "github"  # GitHub Actions workflow annotations
    sarif = "sarif"  # SARIF 2.1.0, for code-scanning tools


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
JobsOpt = Annotated[
    Optional[int],
    typer.Option("--jobs", "-j", min=1, help="Worker processes (default: one per core; 1 runs in this process).", show_default=False),
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache of per-file results.")]
CacheDirOpt = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Cache folder (default: $GRADFIX_CACHE_DIR, else .gradfix_cache in the project root).", show_default=False),
]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="Settings file (default: the nearest pyproject.toml with \\[tool.gradfix]).", show_default=False),
]


class DeviceChoice(str, enum.Enum):
    cpu = "cpu"
    cuda = "cuda"
    all = "all"


RunOpt = Annotated[
    Optional[str],
    typer.Option("--run", help="A driver script (a smoke test or training step) run against the original and the fixed library files.", show_default=False),
]
DeviceOpt = Annotated[DeviceChoice, typer.Option("--device", help="Where to verify: cpu, cuda, or all (cpu plus cuda where available).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds each run of a program may take.")]
PythonOpt = Annotated[Optional[str], typer.Option("--python", help="Interpreter with torch to run the programs (default: this one).", show_default=False)]
MemoryOpt = Annotated[int, typer.Option("--memory-mb", help="Memory cap for each run, in MB beyond torch's own (0: none; not applied on CUDA).")]


class LevelChoice(str, enum.Enum):
    error = "error"
    warning = "warning"


def _with_level(settings: Settings, report_level: Optional["LevelChoice"] = None, fix_level: Optional["LevelChoice"] = None) -> Settings:
    import dataclasses

    from .codemods import Level

    changes = {}
    if report_level is not None:
        changes["report_level"] = Level(report_level.value)
    if fix_level is not None:
        changes["fix_level"] = Level(fix_level.value)
    return dataclasses.replace(settings, **changes)


def _verify_options(device: "DeviceChoice", timeout: float, python: Optional[str], memory_mb: int):
    from .verification import Options

    return Options(device=device.value, timeout=timeout, python=python, memory_mb=memory_mb or None)


def _verify_then_write(outcomes: list[runner.FileOutcome], settings: Settings, driver: Optional[str], options) -> None:
    """fix --verify: write each planned fix only if it verifies."""
    from . import verification

    planned = [o for o in outcomes if o.applied and o.new_data]
    if not planned:
        return
    session = None
    try:
        session = verification.open_session(options)
        if driver:
            original, rewrite = verification.library_programs(driver, {o.path: o.new_text for o in planned})
            result = verification.run(original, rewrite, f"{driver} with {plural(len(planned), 'fixed file')}", options,
                                      session=session)
            verification.render_text([result])
            for outcome in planned:
                if result.verified:
                    runner.write_planned(outcome, settings)
                else:
                    runner.withdraw_planned(outcome, settings, "the driver does not verify with the fixes")
            return
        for outcome in planned:
            original = verification.Program(Path(outcome.path))
            rewrite = verification.Program(Path(outcome.path), source=outcome.new_text)
            result = verification.run(original, rewrite, outcome.display, options, session=session)
            verification.render_text([result])
            if result.verified:
                runner.write_planned(outcome, settings)
            else:
                headline = next((v.headline() for v in result.verdicts if not v.verified), "not verified")
                runner.withdraw_planned(outcome, settings, headline)
    except verification.VerifyUsageError as error:
        for outcome in planned:
            if not outcome.written:
                runner.withdraw_planned(outcome, settings, "verification could not run")
        raise _fail(str(error)) from None
    finally:
        if session is not None:
            session.close()


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


def _problems(discovery: files.Discovery, outcomes: list[runner.FileOutcome]) -> list[report.Problem]:
    """The files that could not be checked, for the machine-readable outputs (stderr has them too)."""
    found = [report.problem(message.split(": ", 1)[0], message) for message in discovery.errors]
    found += [report.problem(o.display, message) for o in outcomes for message in o.errors]
    return found


EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C


def _run_files(
    discovery: files.Discovery, settings: Settings, mode: str, jobs: Optional[int], no_cache: bool, cache_dir: Optional[Path]
) -> list[runner.FileOutcome]:
    """runner.run with the cache and worker options; Ctrl-C exits 130 without tracebacks."""
    from . import cache as result_cache

    store = None
    if not no_cache:
        store = result_cache.Cache(cache_dir or result_cache.default_cache_dir(), settings, runner.cache_command(mode))
        problem = store.prepare()
        if problem:
            err(f"warning: {problem}")
    try:
        return runner.run(discovery.files, settings, mode, jobs=jobs, cache=store)
    except KeyboardInterrupt:
        err("Interrupted." if mode == runner.CHECK else "Interrupted: files already written are fixed; the others are unchanged.")
        raise typer.Exit(EXIT_INTERRUPTED) from None


# --- commands -------------------------------------------------------------------------------


@app.command()
def check(
    paths: PathsArg = None,
    select: SelectOpt = None,
    ignore: IgnoreOpt = None,
    output_format: Annotated[CheckFormat, typer.Option("--format", help="Output format: text, json, github (workflow annotations), sarif (code scanning).")] = CheckFormat.text,
    unsafe_fixes: UnsafeOpt = None,
    exit_zero: ExitZeroOpt = False,
    force_exclude: ForceExcludeOpt = False,
    config: ConfigOpt = None,
    level: Annotated[LevelChoice, typer.Option("--level", help="Report errors and warnings (warning), or errors only (error).")] = LevelChoice.warning,
    jobs: JobsOpt = None,
    no_cache: NoCacheOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Report in-place operations that break autograd (errors, and warnings where it is not sure)."""
    settings, discovery = _prepare(paths, select, ignore, unsafe_fixes, config, force_exclude)
    settings = _with_level(settings, report_level=level)
    outcomes = _run_files(discovery, settings, runner.CHECK, jobs, no_cache, cache_dir)
    failed = _report_problems(discovery, outcomes)
    findings = sorted((f for o in outcomes for f in o.findings), key=report.sort_key)
    if output_format is CheckFormat.json:
        out(report.findings_json(findings))
    elif output_format is CheckFormat.github:
        for finding in findings:
            out(report.github_annotation(finding))
        for item in _problems(discovery, outcomes):
            out(report.github_problem(item))
    elif output_format is CheckFormat.sarif:
        from .codemods import ALL_RULES

        out(report.sarif_log(findings, ALL_RULES, __version__, _problems(discovery, outcomes)))
    else:
        for finding in findings:
            out(report.finding_line(finding, settings.unsafe_fixes, settings.fix_level))
        out(report.check_summary(findings, settings.unsafe_fixes, failed, settings.fix_level))
    if failed:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_FINDINGS if findings and not exit_zero else EXIT_OK)


@app.command()
def fix(
    paths: PathsArg = None,
    diff: Annotated[bool, typer.Option("--diff", help="Write nothing; print the unified diff that fixing would apply.")] = False,
    verify_fixes: Annotated[bool, typer.Option("--verify", help="Write a file's fix only if `gradfix verify` proves it (script files, or with --run).")] = False,
    run_driver: RunOpt = None,
    unsafe_fixes: UnsafeOpt = None,
    select: SelectOpt = None,
    ignore: IgnoreOpt = None,
    exit_zero: ExitZeroOpt = False,
    force_exclude: ForceExcludeOpt = False,
    config: ConfigOpt = None,
    device: DeviceOpt = DeviceChoice.all,
    timeout: TimeoutOpt = 120.0,
    python: PythonOpt = None,
    memory_mb: MemoryOpt = 8192,
    level: Annotated[LevelChoice, typer.Option("--level", help="Fix error-level findings (error), or warnings too (warning).")] = LevelChoice.error,
    exit_non_zero_on_fix: Annotated[bool, typer.Option("--exit-non-zero-on-fix", help="Exit 1 when a file was fixed, even if nothing remains (for pre-commit hooks).")] = False,
    jobs: JobsOpt = None,
    no_cache: NoCacheOpt = False,
    cache_dir: CacheDirOpt = None,
    from_trace: Annotated[
        Optional[str],
        typer.Option("--from-trace", help="Fix exactly the lines a `gradfix trace` JSON file names, whatever their static level.", show_default=False),
    ] = None,
) -> None:
    """Rewrite in-place operations in place: safe fixes of errors by default; --unsafe-fixes, --level warning for more."""
    if from_trace:
        if paths or verify_fixes or run_driver:
            raise _fail("--from-trace takes the files from the trace: give no paths, --verify or --run")
        try:  # the config's `unsafe-fixes` holds here too; the flag overrides it
            trace_settings = merge(load_config(config, "."), None, None, unsafe_fixes)
        except ConfigError as error:
            raise _fail(str(error)) from None
        _fix_from_trace(from_trace, diff, trace_settings.unsafe_fixes)
    settings, discovery = _prepare(paths, select, ignore, unsafe_fixes, config, force_exclude)
    settings = _with_level(settings, fix_level=level)
    if run_driver and not verify_fixes:
        raise _fail("--run goes with --verify (or use `gradfix verify --run`)")
    if verify_fixes and diff:
        raise _fail("--verify writes verified fixes; --diff writes nothing: use one of them")
    mode = runner.DIFF if diff else runner.PLAN if verify_fixes else runner.FIX
    outcomes = _run_files(discovery, settings, mode, jobs, no_cache, cache_dir)
    if verify_fixes:
        _verify_then_write(outcomes, settings, run_driver, _verify_options(device, timeout, python, memory_mb))
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
        out(report.finding_line(finding, settings.unsafe_fixes, settings.fix_level))
    out(report.fix_summary(fixed, remaining, settings.unsafe_fixes, failed, settings.fix_level))
    if failed:
        raise typer.Exit(EXIT_ERROR)
    if exit_non_zero_on_fix and any(o.written for o in changed):
        raise typer.Exit(EXIT_FINDINGS)
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


@app.command("verify")
def verify_command(
    paths: Annotated[
        list[str],
        typer.Argument(help="SCRIPT.py to verify against gradfix's fix of it; with --run, the library files or folders whose fixes are served to the driver."),
    ],
    fixed: Annotated[Optional[str], typer.Option("--fixed", help="Verify this rewrite of SCRIPT instead of gradfix's own fix.", show_default=False)] = None,
    run_driver: RunOpt = None,
    device: DeviceOpt = DeviceChoice.all,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.text,
    timeout: TimeoutOpt = 120.0,
    python: PythonOpt = None,
    memory_mb: MemoryOpt = 8192,
    unsafe_fixes: UnsafeOpt = None,
    level: Annotated[
        Optional[LevelChoice],
        typer.Option("--level", help="Which findings the verified fix rewrites: errors (error), or warnings too (warning). Default: the config's, else error.", show_default=False),
    ] = None,
    select: SelectOpt = None,
    ignore: IgnoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Prove a rewrite: run original and rewritten code under torch and compare.

    Checks, in order: the rewrite runs (forward and backward); its loss equals the
    original's intended forward (the original run with autograd off); every leaf it
    reads gets a gradient; the gradients agree with finite differences (float64,
    random directions). Exit 0 verified, 1 failed or inconclusive, 2 usage error.
    Nothing is written.
    """
    from . import verification

    options = _verify_options(device, timeout, python, memory_mb)
    try:
        session = verification.open_session(options)
    except verification.VerifyUsageError as error:
        raise _fail(str(error)) from None
    try:
        if run_driver:
            if fixed:
                raise _fail("--fixed verifies one script; with --run the fixes are gradfix's own")
            settings, discovery = _prepare(paths, select, ignore, unsafe_fixes, config, False)
            settings = _with_level(settings, fix_level=level)
            outcomes = runner.run(discovery.files, settings, runner.PLAN)
            if _report_problems(discovery, outcomes):
                raise typer.Exit(EXIT_ERROR)
            planned = {o.path: o.new_text for o in outcomes if o.new_text}
            notes = [] if planned else ["no fix applies to the given files: the driver is checked against the originals"]
            original, rewrite = verification.library_programs(run_driver, planned)
            subject = f"{run_driver} with {plural(len(planned), 'fixed file')}"
            reports = [verification.run(original, rewrite, subject, options, notes, session)]
        else:
            if len(paths) != 1:
                raise _fail("verify takes one SCRIPT.py (or --run DRIVER.py with library paths)")
            settings, _ = _prepare(paths, select, ignore, unsafe_fixes, config, False)
            settings = _with_level(settings, fix_level=level)
            original, rewrite, notes = verification.script_programs(paths[0], fixed, settings)
            reports = [verification.run(original, rewrite, paths[0], options, notes, session)]
    except (verification.VerifyUsageError, files.FileError) as error:
        raise _fail(str(error)) from None
    finally:
        session.close()
    if output_format is OutputFormat.json:
        out(verification.render_json(reports))
    else:
        verification.render_text(reports)
    raise typer.Exit(EXIT_OK if all(r.verified for r in reports) else EXIT_FINDINGS)


@app.command(
    "trace",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def trace_command(
    ctx: typer.Context,
    script: Annotated[Optional[str], typer.Argument(help="SCRIPT.py to run, followed by its arguments (put gradfix's options first; `--` ends them).", show_default=False)] = None,
    run_driver: Annotated[
        Optional[str],
        typer.Option("--run", help="Run this driver script instead; the paths after it are the files whose lines are reported.", show_default=False),
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format: text, or json (check's schema, each finding with a `trace` object).")] = OutputFormat.text,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Also write the trace (JSON) here, for `gradfix fix --from-trace` and the editor. Default: .gradfix_cache/trace.json.", show_default=False),
    ] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop the program after this many seconds (default: no limit).", show_default=False)] = None,
    python: PythonOpt = None,
    unsafe_fixes: UnsafeOpt = None,
) -> None:
    """Run a program and name the lines whose in-place writes broke autograd.

    Every in-place write is recorded with its line; when backward() fails (or a
    `.data` write silently changes what it computes), the writes that did it are
    named, with what saved the tensor and the engine's fix. `gradfix fix
    --from-trace` applies those fixes. Exit 0 nothing found, 1 failures traced (or
    the program failed), 2 usage error.
    """
    from . import tracing

    rest = list(ctx.args)
    if run_driver:
        program = [run_driver]
        roots = ([script] if script else []) + rest + [os.path.dirname(os.path.abspath(run_driver))]
    else:
        if not script:
            raise _fail("trace takes SCRIPT.py [ARGS...] (or --run DRIVER.py PATH...)")
        program = [script, *rest]
        roots = [os.path.dirname(os.path.abspath(script))]
    for root in roots:
        if not os.path.exists(root):
            raise _fail(f"{root}: no such file or directory")
    try:
        traced = tracing.run(program, roots, python=python, timeout=timeout,
                             quiet_stdout=output_format is OutputFormat.json)
    except tracing.TraceError as error:
        raise _fail(str(error)) from None
    from .cache import DEFAULT_TRACE_FILE

    target = str(output) if output else DEFAULT_TRACE_FILE
    try:
        tracing.write_trace_file(target, traced)
    except OSError as error:
        err(f"warning: could not write the trace to {target}: {error.strerror or error}")
    if output_format is OutputFormat.json:
        out(tracing.dump(traced))
    else:
        for line in tracing.render_text(traced, bool(unsafe_fixes)):
            out(line)
        ran = f"the program exited with status {traced.status}"
        if traced.findings:
            out(f"gradfix trace: {plural(len(traced.findings), 'line')} named; {ran}; trace written to {target}")
        else:
            out(f"gradfix trace: no in-place write broke autograd in this run; {ran}")
    raise typer.Exit(EXIT_FINDINGS if traced.findings or traced.status else EXIT_OK)


def _fix_from_trace(trace_file: str, diff: bool, unsafe_fixes: bool) -> None:
    """`fix --from-trace`: the engine's rewrite on exactly the traced lines, whatever their static level."""
    from . import patches, tracing
    from .codemods.engine import SourceSyntaxError, fix_lines

    try:
        traced = tracing.load(trace_file)
    except tracing.TraceError as error:
        raise _fail(str(error)) from None
    failed = fixed = 0
    remaining: list = []
    changed_files = 0
    for path, lines in sorted(traced.lines.items()):
        display = files.display_path(path)
        try:
            source = files.read_source(path, display)
        except files.FileError as error:
            err(str(error))
            failed += 1
            continue
        if tracing.stale(source, traced.digests.get(path)):
            err(f"{display}: changed since it was traced; run `gradfix trace` again (file not written)")
            failed += 1
            continue
        try:
            result = fix_lines(source.text, sorted(lines), display, unsafe_fixes=unsafe_fixes)
        except SourceSyntaxError as error:
            err(f"{display}:{error.line}:{error.col}: syntax error: {error.message}")
            failed += 1
            continue
        for message in result.errors:
            err(message)
        remaining += result.remaining
        if result.source == source.text:
            continue
        try:
            data = source.encode(result.source)
            if diff:
                report.out_bytes(patches.unified_diff(files.patch_path(path), source.data, data))
            else:
                files.write_atomic(path, data, display)
                out(report.fixed_line(display, result.applied))
        except files.FileError as error:
            err(str(error))
            failed += 1
            continue
        changed_files += 1
        fixed += result.changed_count
    for finding in remaining:
        out(report.finding_line(finding, unsafe_fixes, Level.WARNING))
    verb = "Would fix" if diff else "Fixed"
    summary = f"{verb} {plural(fixed, 'traced line')} in {plural(changed_files, 'file')}"
    if remaining:
        summary += f"; {plural(len(remaining), 'finding')} left on traced lines" + ("" if unsafe_fixes else " (some may need --unsafe-fixes)")
    if traced.display_only:
        summary += f"; {plural(traced.display_only, 'traced failure')} with no local rewrite (see the trace)"
    err(summary + ".")
    if failed:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_FINDINGS if (diff and changed_files) or remaining else EXIT_OK)


@app.command("rules")
def rules(
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.text,
) -> None:
    """List the rules: code, name and what goes wrong."""
    from .codemods import ALL_RULES

    if output_format is OutputFormat.json:
        out(json.dumps([{"code": r.code, "name": r.name, "why": r.why} for r in ALL_RULES], indent=2))
        return
    width = max((len(r.name) for r in ALL_RULES), default=0)
    for rule in ALL_RULES:
        out(f"{rule.code}  {rule.name:<{width}}  {rule.why}")


@app.command("rule")
def rule(
    key: Annotated[str, typer.Argument(help="A rule's code (GF104) or name (subscript-assignment-on-tensor).", show_default=False)],
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.text,
) -> None:
    """Explain one rule: why it is a problem, an example and its fix, fix safety, what is not flagged."""
    from .codemods.docs import find_rule, render_rule

    found = find_rule(key)
    if found is None:
        raise _fail(f"unknown rule {key!r}; `gradfix rules` lists them")
    if output_format is OutputFormat.json:
        out(json.dumps({"code": found.code, "name": found.name, "why": found.why, "explanation": found.explanation,
                        "fix_safety": found.fix_safety, "not_flagged": found.not_flagged,
                        "markdown": render_rule(found)}, indent=2))
        return
    out(render_rule(found).rstrip("\n"))


@app.command("lsp")
def lsp(
    stdio: Annotated[bool, typer.Option("--stdio", help="Accepted for editors that pass it: stdin/stdout is the only transport.")] = False,
) -> None:
    """Run the language server (LSP over stdio) for editors: diagnostics, quick fixes, fix-all."""
    try:
        from .lsp.server import main as serve
    except ImportError as error:  # pygls is needed only here
        raise _fail(f"gradfix lsp needs pygls and lsprotocol ({error}); install them: pip install 'pygls>=2' lsprotocol") from None
    serve()


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
