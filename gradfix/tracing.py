"""``gradfix trace``: run a program under the tracer and turn what it saw into findings.

The tracer (``verify/tracer.py``) runs in the program's interpreter and reports
each failure it explained: its kind, the culprit writes' lines, what saved the
tensor, which ``backward()`` needed it. Here each culprit line becomes a
finding in ``check``'s JSON schema, with the rule engine's finding on that line
(its code and fix; ``engine.check_lines`` rates the line as proven broken) and a
``trace`` object with the rest. ``fix --from-trace`` reads that file back.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from . import files
from .codemods.engine import SourceSyntaxError, check_lines
from .codemods.model import Finding, FixSafety, Level

from . import verify as _verify_package  # noqa: E402  (light: imports no torch)

# Run as a script by the program's interpreter, which need not have gradfix installed.
TRACER = Path(_verify_package.__file__).with_name("tracer.py")

#: A traced failure that no rule's rewrite fixes (no engine finding on its line).
TRACE_CODE, TRACE_NAME = "GF100", "traced-autograd-failure"

KIND_TITLES = {
    "saved-output": "saved output modified in place",
    "saved-input": "saved input modified in place",
    "leaf": "in-place write on a leaf that requires grad",
    "leaf-view": "in-place write on a view of a leaf that requires grad",
    "multi-output-view": "in-place write on a piece of a multi-output view",
    "view": "in-place write on a view",
    "out": "`out=` with an input that requires grad",
    "inplace-module": "in-place module overwrote a tensor backward needs",
    "data-write": "silent `.data` write",
    "optimizer-step": "optimizer step before the backward that needs the old parameters",
}
#: Kinds that no local rewrite fixes: the order of calls is the problem.
DISPLAY_ONLY_KINDS = frozenset({"optimizer-step"})


class TraceError(Exception):
    """The trace could not be run or read (a one-line message)."""


@dataclass
class TraceRun:
    status: int  # the program's exit status
    failure: Optional[str]  # its uncaught error, if any
    findings: list[Finding]
    traces: list[dict]  # per finding: the ``trace`` object (same order)
    stats: dict = field(default_factory=dict)

    def to_json(self) -> list[dict]:
        return [{**finding.to_json(), "trace": trace} for finding, trace in zip(self.findings, self.traces)]


def run(
    program: Sequence[str],
    roots: Sequence[str],
    python: Optional[str] = None,
    timeout: Optional[float] = None,
    cwd: Optional[str] = None,
    quiet_stdout: bool = False,
) -> TraceRun:
    """Run ``program`` (a script and its arguments) under the tracer; its output goes to ours
    (``quiet_stdout``: its standard output to our standard error, which keeps ours machine-readable)."""
    script = program[0]
    if not os.path.isfile(script):
        raise TraceError(f"{script}: no such file")
    with tempfile.TemporaryDirectory(prefix="gradfix-trace-") as folder:
        events_path = os.path.join(folder, "events.json")
        command = [python or sys.executable, str(TRACER), "--out", events_path]
        for root in roots:
            command += ["--root", os.path.abspath(root)]
        command += ["--", *program]
        try:
            completed = subprocess.run(command, timeout=timeout, cwd=cwd, stdout=sys.stderr if quiet_stdout else None)
        except FileNotFoundError:
            raise TraceError(f"{command[0]}: interpreter not found") from None
        except subprocess.TimeoutExpired:
            raise TraceError(f"{script}: the traced run took more than {timeout:g} s; stopped") from None
        try:
            with open(events_path, encoding="utf-8") as handle:
                events = json.load(handle)
        except (OSError, ValueError):
            raise TraceError(
                f"{script}: the tracer wrote no events (exit status {completed.returncode}; "
                "is torch installed for this interpreter?)"
            ) from None
    return from_events(events)


def from_events(events: dict) -> TraceRun:
    findings: list[Finding] = []
    traces: list[dict] = []
    sources: dict[str, Optional[files.SourceFile]] = {}
    for report in events.get("reports", []):
        for culprit in report.get("culprits", []):
            site = culprit.get("fix_at") or culprit
            path, line = site.get("file"), site.get("line")
            if not path or not line:
                continue
            if path not in sources:
                try:
                    sources[path] = files.read_source(path)
                except files.FileError:
                    sources[path] = None
            source = sources[path]
            finding = _finding(report, culprit, path, line, source)
            trace = {
                "kind": report["kind"],
                "title": KIND_TITLES.get(report["kind"], report["kind"]),
                "error": report.get("error"),
                "write": {k: culprit.get(k) for k in ("file", "line", "source", "op", "version")},
                **{k: report[k] for k in ("tensor", "saved_by", "backward", "leaf_created", "view_created") if report.get(k)},
                **({"module": culprit["module"]} if culprit.get("module") else {}),
                **({"step": culprit["step"]} if culprit.get("step") else {}),
                "file": os.path.abspath(path),  # the finding's file, wherever the trace file is read
                "sha256": hashlib.sha256(source.data).hexdigest() if source is not None else None,
            }
            if any(f.path == finding.path and f.line == finding.line and t["kind"] == trace["kind"] for f, t in zip(findings, traces)):
                continue  # the same line for the same reason (a write repeated in a loop)
            findings.append(finding)
            traces.append(trace)
    return TraceRun(events.get("status", 0), events.get("failure"), findings, traces, events.get("stats", {}))


def _finding(report: dict, culprit: dict, path: str, line: int, source: Optional[files.SourceFile]) -> Finding:
    kind = report["kind"]
    display = files.display_path(path)
    static: Optional[Finding] = None
    if source is not None and kind not in DISPLAY_ONLY_KINDS:
        try:
            on_line = [f for f in check_lines(source.text, [line], display) if f.line <= line <= f.end_line]
        except SourceSyntaxError:
            on_line = []
        # The rule whose construct is the write: a fixable one first.
        on_line.sort(key=lambda f: (not f.fixable, f.line != line, f.col))
        static = on_line[0] if on_line else None
    message = describe(report, culprit, os.path.abspath(path))
    if static is not None:
        return Finding(
            path=display, line=static.line, col=static.col, end_line=static.end_line, end_col=static.end_col,
            code=static.code, name=static.name, message=message, fix_safety=static.fix_safety,
            fix_title=static.fix_title, level=Level.ERROR, context=static.context,
        )
    text = source.text.splitlines()[line - 1] if source is not None and line <= len(source.text.splitlines()) else ""
    col = len(text) - len(text.lstrip()) + 1
    return Finding(
        path=display, line=line, col=col, end_line=line, end_col=len(text.rstrip()) + 1,
        code=TRACE_CODE, name=TRACE_NAME, message=message, fix_safety=FixSafety.DISPLAY_ONLY, level=Level.ERROR,
    )


def describe(report: dict, culprit: dict, here: Optional[str] = None) -> str:
    """One sentence: what the write did and what needed the old value (``here``: the finding's file)."""

    def _at(location: Optional[dict]) -> str:
        if not location or not location.get("line"):
            return "an unknown line"
        elsewhere = location.get("file") and os.path.abspath(location["file"]) != here
        return f"line {location['line']}" + (f" of {files.display_path(location['file'])}" if elsewhere else "")

    kind = report["kind"]
    write = f"`{_code(culprit.get('source') or '') or culprit.get('op')}`"
    tensor = report.get("tensor") or {}
    saved = report.get("saved_by") or {}
    backward = report.get("backward")
    versions = (f" (saved at version {tensor.get('saved_version')}, found at version {tensor.get('version')})"
                if tensor else "")
    needed = f"backward() on {_at(backward)}" if backward else "backward()"
    if kind in ("saved-output", "saved-input", "inplace-module"):
        what = tensor.get("producer") or "a tensor"
        role = "its input" if saved.get("as_input") else "its output"
        saver = f"`{saved.get('op')}`" if saved.get("op") else "an op"
        lead = write
        if kind == "inplace-module" and culprit.get("module"):
            lead = f"`nn.{culprit['module']['class']}(inplace=True)`"
        return (f"{lead} overwrote {what}, which {saver} on {_at(saved.get('location'))} saved as {role}; "
                f"{needed} needed it{versions}")
    if kind == "optimizer-step":
        step = culprit.get("step") or {}
        return (f"`{step.get('optimizer', 'optimizer')}.step()` on {_at(step.get('call'))} updated a parameter in place "
                f"that {saved.get('op') and '`' + saved['op'] + '`' or 'the forward'} on {_at(saved.get('location'))} "
                f"had saved; {needed} needed the old value{versions}: call step() after that backward(), "
                "or run the forward again after the step")
    if kind == "leaf":
        return f"{write} writes in place into a leaf that requires grad, created on {_at(report.get('leaf_created'))}"
    if kind == "leaf-view":
        return f"{write} writes in place into a view of a leaf that requires grad, created on {_at(report.get('leaf_created'))}"
    if kind == "multi-output-view":
        view = report.get("view_created") or {}
        made = f" made by `{view.get('op')}` on {_at(view.get('location'))}" if view else ""
        return f"{write} writes in place into a piece of a multi-output view{made}; torch forbids it"
    if kind == "out":
        return f"{write} passes `out=` while an input requires grad; autograd cannot record it"
    if kind == "data-write":
        return f"{write}: {report.get('message', 'a silent .data write')}"
    return f"{write}: {report.get('error') or kind}"


def _code(line: str) -> str:
    """A source line without its trailing comment (tokenize knows where strings end)."""
    import io
    import tokenize

    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            if token.type == tokenize.COMMENT:
                return line[: token.start[1]].rstrip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return line.strip()


# --- the trace file, read back -----------------------------------------------------------------


@dataclass
class TracedLines:
    """What ``fix --from-trace`` fixes: per file, the lines and the content they were traced on."""

    lines: dict[str, set[int]] = field(default_factory=dict)
    digests: dict[str, Optional[str]] = field(default_factory=dict)
    display_only: int = 0


def load(trace_file: str) -> TracedLines:
    try:
        with open(trace_file, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as error:
        raise TraceError(f"{trace_file}: cannot read: {error.strerror or error}") from None
    except ValueError as error:
        raise TraceError(f"{trace_file}: not a trace (invalid JSON: {error})") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) and "trace" in item for item in data):
        raise TraceError(f"{trace_file}: not a trace (expected the JSON list `gradfix trace --format json` writes)")
    base = os.path.dirname(os.path.abspath(trace_file))
    traced = TracedLines()
    for item in data:
        try:
            path, line, trace = str(item["path"]), int(item["line"]), item["trace"]
        except (KeyError, TypeError, ValueError):
            raise TraceError(f"{trace_file}: a finding without a path and a line") from None
        if item.get("fix_safety") == FixSafety.DISPLAY_ONLY.value or trace.get("kind") in DISPLAY_ONLY_KINDS:
            traced.display_only += 1
            continue
        resolved = trace.get("file") or (path if os.path.isabs(path) or os.path.exists(path) else os.path.join(base, path))
        traced.lines.setdefault(resolved, set()).add(line)
        traced.digests.setdefault(resolved, trace.get("sha256"))
    return traced


def stale(source: files.SourceFile, digest: Optional[str]) -> bool:
    return digest is not None and hashlib.sha256(source.data).hexdigest() != digest


def dump(run_: TraceRun) -> str:
    return json.dumps(run_.to_json(), indent=2)


def write_trace_file(path: str, run_: TraceRun) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    data = (dump(run_) + "\n").encode("utf-8")
    fd, temp = tempfile.mkstemp(prefix=".trace.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


def render_text(run_: TraceRun, unsafe_fixes: bool) -> list[str]:
    lines: list[str] = []
    for finding, trace in zip(run_.findings, run_.traces):
        lines.append(f"{finding.path}:{finding.line}:{finding.col}: {finding.code} error [{trace['title']}] {finding.message}")
        write = trace.get("write") or {}
        if write.get("line") and write.get("line") != finding.line:
            lines.append(f"    the write: line {write['line']}: {write.get('source', '')}")
        for label, key in (("saved by", "saved_by"),):
            location = (trace.get(key) or {}).get("location")
            if location and location.get("line"):
                lines.append(f"    {label}: line {location['line']}: {location.get('source', '')}")
        for label, key in (("leaf created", "leaf_created"),):
            location = trace.get(key)
            if location and location.get("line"):
                lines.append(f"    {label}: line {location['line']}: {location.get('source', '')}")
        if finding.fixable:
            safety = " (unsafe)" if finding.fix_safety is FixSafety.UNSAFE else ""
            command = "gradfix fix --from-trace TRACE.json" + (" --unsafe-fixes" if finding.fix_safety is FixSafety.UNSAFE and not unsafe_fixes else "")
            lines.append(f"    fix{safety}: {finding.fix_title}  [{command}]")
        elif trace["kind"] in DISPLAY_ONLY_KINDS:
            lines.append("    no local rewrite: the order of the calls is the problem")
    return lines
