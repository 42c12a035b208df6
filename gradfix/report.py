"""What gradfix prints: finding lines, summaries, JSON. Nothing here reads or writes files."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from .codemods import Finding, FixSafety, Level


# --- streams ------------------------------------------------------------------------------


def _write(stream, text: str) -> None:
    try:
        stream.write(text)
    except UnicodeEncodeError:
        # A path or message the terminal's encoding cannot show: escape it rather than crash.
        stream.flush()
        encoding = getattr(stream, "encoding", None) or "utf-8"
        stream.buffer.write(text.encode(encoding, "backslashreplace"))
        stream.buffer.flush()


def out(line: str = "") -> None:
    _write(sys.stdout, line + "\n")


def err(line: str) -> None:
    _write(sys.stderr, line + "\n")


def out_bytes(data: bytes) -> None:
    """Raw bytes on stdout (diffs keep each file's own encoding)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# --- findings ----------------------------------------------------------------------------


def sort_key(finding: Finding) -> tuple:
    return (finding.path, finding.line, finding.col, finding.code)


def applicable(finding: Finding, unsafe_fixes: bool, fix_level: Level = Level.ERROR) -> bool:
    """Would ``gradfix fix`` (with these settings) rewrite it?"""
    if finding.level.rank < fix_level.rank:
        return False
    return finding.fix_safety is FixSafety.SAFE or (unsafe_fixes and finding.fix_safety is FixSafety.UNSAFE)


def finding_line(finding: Finding, unsafe_fixes: bool, fix_level: Level = Level.ERROR) -> str:
    """``path:line:col: CODE [*] level: message``; ``[*]`` when ``gradfix fix`` would fix it."""
    mark = " [*]" if applicable(finding, unsafe_fixes, fix_level) else ""
    return f"{finding.path}:{finding.line}:{finding.col}: {finding.code}{mark} {finding.level.value}: {finding.message}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _fixability(findings: Sequence[Finding], unsafe_fixes: bool, fix_level: Level = Level.ERROR) -> list[str]:
    fixed_level = [f for f in findings if f.level.rank >= fix_level.rank]
    safe = sum(1 for f in fixed_level if f.fix_safety is FixSafety.SAFE)
    unsafe = sum(1 for f in fixed_level if f.fix_safety is FixSafety.UNSAFE)
    warnings = sum(1 for f in findings if f.level.rank < fix_level.rank and f.fix_safety is not FixSafety.DISPLAY_ONLY)
    parts = []
    if unsafe_fixes:
        if safe + unsafe:
            command = "gradfix fix --unsafe-fixes" if unsafe else "gradfix fix"
            parts.append(f"{safe + unsafe} fixable with `{command}`")
    else:
        if safe:
            parts.append(f"{safe} fixable with `gradfix fix`")
        if unsafe:
            parts.append(f"{unsafe} more with `--unsafe-fixes`" if safe else f"{unsafe} fixable with `gradfix fix --unsafe-fixes`")
    if warnings:
        parts.append(f"{plural(warnings, 'warning')} fixed only with `--level warning`")
    return parts


def _failures(failed_files: int, verb: str) -> str:
    return f"{plural(failed_files, 'file')} could not be {verb} (errors on stderr)."


def check_summary(findings: Sequence[Finding], unsafe_fixes: bool, failed_files: int = 0,
                  fix_level: Level = Level.ERROR) -> str:
    """The last line of ``check``. ``failed_files``: files that could not be read or parsed."""
    if not findings:
        return f"No findings, but {_failures(failed_files, 'checked')}" if failed_files else "All checks passed!"
    parts = _fixability(findings, unsafe_fixes, fix_level)
    detail = f" ({', '.join(parts)})" if parts else ""
    summary = f"Found {plural(len(findings), 'finding')}{detail}."
    return f"{summary} {_failures(failed_files, 'checked')}" if failed_files else summary


def fix_summary(fixed: int, remaining: Sequence[Finding], unsafe_fixes: bool, failed_files: int = 0,
                fix_level: Level = Level.ERROR) -> str:
    if not fixed and not remaining:
        return f"No findings, but {_failures(failed_files, 'fully processed')}" if failed_files else "All checks passed!"
    summary = f"Found {plural(fixed + len(remaining), 'finding')} ({fixed} fixed, {len(remaining)} remaining)."
    if not unsafe_fixes:
        hidden = sum(1 for f in remaining if f.fix_safety is FixSafety.UNSAFE and f.level.rank >= fix_level.rank)
        if hidden:
            summary += f" {hidden} more fixable with `--unsafe-fixes`."
    warnings = sum(1 for f in remaining if f.level.rank < fix_level.rank and f.fix_safety is not FixSafety.DISPLAY_ONLY)
    if warnings:
        summary += f" {plural(warnings, 'warning')} left as is (fix them with `--level warning`)."
    return f"{summary} {_failures(failed_files, 'fully processed')}" if failed_files else summary


def applied_text(applied: dict[str, int]) -> str:
    """``GF101 ×2, GF102 ×1``"""
    return ", ".join(f"{code} \u00d7{count}" for code, count in sorted(applied.items()))


def fixed_line(display: str, applied: dict[str, int], dry_run: bool = False) -> str:
    total = sum(applied.values())
    verb = "Would fix" if dry_run else "Fixed"
    return f"{verb} {plural(total, 'finding')} in {display} ({applied_text(applied)})"


def findings_json(findings: Iterable[Finding]) -> str:
    return json.dumps([f.to_json() for f in findings], indent=2)


# --- GitHub Actions annotations -------------------------------------------------------------
# The workflow-command syntax of actions/toolkit (packages/core/src/command.ts): a message
# escapes %, CR and LF; a property value also escapes ':' and ','.


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(finding: Finding) -> str:
    """``::error file=...,line=...,col=...,endLine=...,endColumn=...,title=...::message``"""
    command = "error" if finding.level is Level.ERROR else "warning"
    properties = {
        "file": finding.path,
        "line": finding.line,
        "col": finding.col,
        "endLine": finding.end_line,
        "endColumn": finding.end_col,
        "title": f"gradfix {finding.code} ({finding.name})",
    }
    rendered = ",".join(f"{key}={_escape_property(str(value))}" for key, value in properties.items())
    return f"::{command} {rendered}::{_escape_data(finding.message)}"


# --- files that could not be checked, for the machine-readable outputs ------------------------


@dataclass(frozen=True)
class Problem:
    """A file gradfix could not check (unreadable, undecodable, a syntax error, an internal error)."""

    path: str
    message: str  # without the path
    line: Optional[int] = None
    col: Optional[int] = None


_POSITION = re.compile(r":(\d+)(?::(\d+))?: ")


def problem(path: str, text: str) -> Problem:
    """``text`` as the runner words it (``path: ...`` or ``path:line:col: ...``) for ``path``."""
    if text.startswith(path):
        rest = text[len(path):]
        match = _POSITION.match(rest)
        if match:
            line, col = match.group(1), match.group(2)
            return Problem(path, rest[match.end():], int(line), int(col) if col else None)
        if rest.startswith(": "):
            return Problem(path, rest[2:])
    return Problem(path, text)


def github_problem(item: Problem) -> str:
    """A workflow error annotation on the file (and line) that could not be checked."""
    properties = {"file": item.path, "title": "gradfix could not check this file"}
    if item.line is not None:
        properties["line"] = str(item.line)
        if item.col is not None:
            properties["col"] = str(item.col)
    rendered = ",".join(f"{key}={_escape_property(value)}" for key, value in properties.items())
    return f"::error {rendered}::{_escape_data(item.message)}"


# --- SARIF 2.1.0 ---------------------------------------------------------------------------------

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _sarif_uri(path: str) -> str:
    from urllib.parse import quote

    return quote(path.replace("\\", "/"))


def sarif_log(findings: Sequence[Finding], rules: Sequence, version: str, problems: Sequence[Problem] = ()) -> str:
    """One SARIF 2.1.0 log with one run: every rule in ``tool.driver.rules``, one result per finding.

    Paths are relative to the working directory (``uriBaseId`` ``%SRCROOT%``); regions are
    1-based, columns in Unicode code points, as gradfix counts them.
    """
    rule_index = {rule.code: index for index, rule in enumerate(rules)}
    descriptors = [
        {
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": rule.why},
            "defaultConfiguration": {"level": "error"},
        }
        for rule in rules
    ]
    results = []
    for finding in findings:
        result = {
            "ruleId": finding.code,
            "level": "error" if finding.level is Level.ERROR else "warning",
            "message": {"text": finding.message},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": _sarif_uri(finding.path), "uriBaseId": "%SRCROOT%"},
                    "region": {
                        "startLine": finding.line,
                        "startColumn": finding.col,
                        "endLine": finding.end_line,
                        "endColumn": finding.end_col,
                    },
                }
            }],
            "properties": {"fixSafety": finding.fix_safety.value},
        }
        if finding.code in rule_index:
            result["ruleIndex"] = rule_index[finding.code]
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "gradfix", "version": version, "rules": descriptors}},
            "columnKind": "unicodeCodePoints",
            "results": results,
            # Files that could not be checked: the run is not a clean bill of health for them.
            "invocations": [{
                "executionSuccessful": not problems,
                "toolExecutionNotifications": [_sarif_notification(item) for item in problems],
            }],
        }],
    }
    return json.dumps(log, indent=2, ensure_ascii=False)


def _sarif_notification(item: Problem) -> dict:
    location: dict = {"artifactLocation": {"uri": _sarif_uri(item.path), "uriBaseId": "%SRCROOT%"}}
    if item.line is not None:
        location["region"] = {"startLine": item.line, **({"startColumn": item.col} if item.col else {})}
    return {"level": "error", "message": {"text": item.message}, "locations": [{"physicalLocation": location}]}
