"""The findings of a `gradfix trace` run in the editor: gradfix.lsp.traces, and the server showing them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from lsprotocol import types

from gradfix.lsp.settings import DEFAULT_TRACE_FILE, ClientOptions, parse_client_options, resolve, unknown_keys
from gradfix.lsp.traces import SEARCH_LINES, TraceFiles, current_findings, read_trace
from test_lsp_server import _until, change_doc, code_actions, diagnostics_for, open_doc, pull_diagnostics, session

# As fixtures/trace/saved_input_modified.py: `h.add_(1)` (line 9) overwrites what `h * h` (line 8) saved.
PROGRAM = """# gradfix trace fixture: a tensor saved as an input of `mul`, then modified in place
# trace: saved-input
import torch

torch.manual_seed(0)
x = torch.randn(4, requires_grad=True)
h = x * 2
energy = h * h  # saves
h.add_(1)  # culprit
loss = energy.sum() + h.sum()
loss.backward()
print(x.grad)
"""
WRITE_LINE = 9
TITLE = "saved input modified in place"


def trace_item(path: Path, text: str, line: int = WRITE_LINE, code: str = "GF102", sha: str | None = "auto") -> dict:
    """A finding as `gradfix trace` writes it (check's JSON schema plus `trace`)."""
    lines = text.splitlines()
    source = lines[line - 1].strip()
    indent = len(lines[line - 1]) - len(lines[line - 1].lstrip())
    location = lambda number: {"file": str(path), "line": number, "function": "<module>", "source": lines[number - 1].strip()}  # noqa: E731
    return {
        "path": path.name,
        "line": line,
        "col": indent + 1,
        "end_line": line,
        "end_col": indent + 1 + len("h.add_(1)"),
        "code": code,
        "name": "inplace-tensor-method",
        "message": "`h.add_(1)` overwrote output 0 of MulBackward0, which `mul` on line 8 saved as its input",
        "fix_safety": "safe",
        "fix_title": "Rewrite as `h = h.add(1)`",
        "level": "error",
        "context": None,
        "trace": {
            "kind": "saved-input",
            "title": TITLE,
            "write": {"file": str(path), "line": line, "source": source, "op": "add_", "version": 1},
            "saved_by": {"op": "mul", "as_input": True, "location": location(8)},
            "backward": location(11),
            "file": str(path),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest() if sha == "auto" else sha,
        },
    }


def write_trace(trace_file: Path, items: list[dict]) -> Path:
    trace_file.parent.mkdir(parents=True, exist_ok=True)
    trace_file.write_text(json.dumps(items, indent=2), encoding="utf-8")
    return trace_file


# --- traces.py ------------------------------------------------------------------------------------


def test_load_keys_findings_by_absolute_path(tmp_path):
    program = tmp_path / "prog.py"
    other = tmp_path / "other.py"
    trace = read_trace(str(write_trace(tmp_path / "t.json", [trace_item(program, PROGRAM), trace_item(other, PROGRAM, 8)])))
    assert trace.warning is None
    assert set(trace.findings) == {os.path.normcase(str(program)), os.path.normcase(str(other))}
    (finding,) = trace.for_document(str(program), PROGRAM)
    assert (finding.line, finding.col, finding.end_line, finding.end_col) == (9, 1, 9, 10)
    assert finding.code == "GF102" and finding.title == TITLE
    assert dict(finding.known_lines)[9] == "h.add_(1)  # culprit"
    assert trace.for_document(str(tmp_path / "unknown.py"), PROGRAM) == []


def test_cache_is_read_again_only_when_the_file_changes(tmp_path):
    program = tmp_path / "prog.py"
    path = str(write_trace(tmp_path / "t.json", [trace_item(program, PROGRAM)]))
    files = TraceFiles()
    first = files.get(path)
    assert files.get(path) is first  # not read again
    write_trace(Path(path), [trace_item(program, PROGRAM), trace_item(program, PROGRAM, 8)])
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    second = files.get(path)
    assert second is not first and len(second.for_document(str(program), PROGRAM)) == 2
    os.unlink(path)
    assert files.get(path).findings == {} and files.get(path).warning is None  # missing: no findings


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"a": 1}', '[{"line": 3}]', '[{"line": "x", "trace": {"file": "/a.py"}, "code": "GF102", "message": "m"}]', "\xff"],
)
def test_malformed_file_gives_a_warning_and_no_findings(tmp_path, content):
    path = tmp_path / "t.json"
    path.write_bytes(content.encode("latin-1"))
    trace = TraceFiles().get(str(path))
    assert trace.findings == {}
    assert trace.warning is not None and str(path) in trace.warning and "\n" not in trace.warning


def test_same_text_all_findings_apply_at_their_lines(tmp_path):
    program = tmp_path / "prog.py"
    # A finding whose line's text the trace does not record still applies while the file is unchanged.
    unknown = {**trace_item(program, PROGRAM), "line": 5, "end_line": 5}
    trace = read_trace(str(write_trace(tmp_path / "t.json", [trace_item(program, PROGRAM), unknown])))
    assert [f.line for f in trace.for_document(str(program), PROGRAM)] == [9, 5]
    # edited: the one whose line is not known is dropped, the write's line is still found
    edited = PROGRAM.replace("print(x.grad)", "print(x.grad.sum())")
    assert [f.line for f in trace.for_document(str(program), edited)] == [9]


def test_shifted_line_is_found_and_edited_line_dropped(tmp_path):
    program = tmp_path / "prog.py"
    trace = read_trace(str(write_trace(tmp_path / "t.json", [trace_item(program, PROGRAM), trace_item(program, PROGRAM, 8)])))
    # lines inserted on top: both move down, columns kept
    shifted = "import os\nimport sys\n" + PROGRAM
    assert [(f.line, f.end_line, f.col) for f in trace.for_document(str(program), shifted)] == [(11, 11, 1), (10, 10, 1)]
    # lines removed above and a re-indent: the stripped text is what counts
    moved = PROGRAM.replace("torch.manual_seed(0)\n", "").replace("h.add_(1)  # culprit", "if True:\n    h.add_(1)  # culprit")
    assert [f.line for f in trace.for_document(str(program), moved)] == [9, 7]
    # the write itself edited: its finding is dropped, the other kept
    edited = PROGRAM.replace("h.add_(1)  # culprit", "h = h.add(1)  # culprit")
    assert [f.line for f in trace.for_document(str(program), edited)] == [8]
    # further away than the search goes: dropped
    far = "\n" * (SEARCH_LINES + 1) + PROGRAM
    assert trace.for_document(str(program), far) == []
    # the nearest copy of the line wins
    twice = PROGRAM.replace("h.add_(1)  # culprit\n", "h.add_(1)  # culprit\n" + "pass\n" * 5 + "h.add_(1)  # culprit\n")
    assert current_findings(trace.findings[os.path.normcase(str(program))][:1], "\n" + twice)[0].line == 10


def test_a_trace_without_digest_is_checked_line_by_line(tmp_path):
    program = tmp_path / "prog.py"
    trace = read_trace(str(write_trace(tmp_path / "t.json", [trace_item(program, PROGRAM, sha=None)])))
    assert [f.line for f in trace.for_document(str(program), PROGRAM)] == [9]


def test_trace_file_setting(tmp_path):
    options, errors = parse_client_options({"gradfix": {"traceFile": "out/t.json", "editorOnly": 1}})
    assert options.trace_file == "out/t.json" and errors == []
    assert unknown_keys({"traceFile": "x", "editorOnly": 1}) == ["editorOnly"]
    assert parse_client_options({"traceFile": 3})[0].trace_file is None
    assert "traceFile" in parse_client_options({"traceFile": 3})[1][0]
    doc = str(tmp_path / "a.py")
    assert resolve(doc, str(tmp_path), ClientOptions()).trace_file == str(tmp_path / DEFAULT_TRACE_FILE)
    assert resolve(doc, str(tmp_path), ClientOptions(trace_file="out/t.json")).trace_file == str(tmp_path / "out" / "t.json")
    assert resolve(doc, str(tmp_path), ClientOptions(trace_file="/abs/t.json")).trace_file == "/abs/t.json"
    # relative to the document's project (its pyproject.toml), not the workspace
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.gradfix]\n")
    resolved = resolve(str(project / "m.py"), str(tmp_path), ClientOptions()).trace_file
    assert resolved == str((project / DEFAULT_TRACE_FILE).resolve())


# --- the server ------------------------------------------------------------------------------------


def traced(diagnostics) -> list[types.Diagnostic]:
    return [d for d in diagnostics if d.source == "gradfix trace"]


@pytest.mark.asyncio
async def test_server_shows_the_trace_and_follows_edits(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text(PROGRAM, encoding="utf-8")
    trace_file = write_trace(tmp_path / ".gradfix_cache" / "trace.json", [trace_item(program, PROGRAM)])
    async with session(tmp_path) as client:
        uri = open_doc(client, program, PROGRAM)
        diagnostics = await diagnostics_for(client, uri, 1)
        (diagnostic,) = traced(diagnostics)
        assert diagnostic.severity == types.DiagnosticSeverity.Error and diagnostic.code == "GF102"
        assert diagnostic.message.startswith(f"[{TITLE}] `h.add_(1)` overwrote")
        assert (diagnostic.range.start.line, diagnostic.range.start.character) == (WRITE_LINE - 1, 0)
        assert (diagnostic.range.end.line, diagnostic.range.end.character) == (WRITE_LINE - 1, 9)
        assert diagnostic.code_description is not None and diagnostic.code_description.href.endswith("#gf102-inplace-tensor-method")
        # the engine's own finding on that line is still there, and its quick fix with it
        (engine,) = [d for d in diagnostics if d.source == "gradfix" and d.range.start.line == WRITE_LINE - 1]
        actions = await code_actions(client, uri, diagnostic.range, diagnostics=[diagnostic, engine])
        fixes = [a for a in actions if a.kind == "quickfix" and not a.title.startswith("Disable")]
        assert [a.title for a in fixes] == ["Rewrite as `h = h.add(1)`"]
        assert all(d.source == "gradfix" for a in actions for d in a.diagnostics or [])

        # A line on top: the traced line moved down by one, and its diagnostic with it.
        change_doc(client, uri, "import os\n" + PROGRAM, 2)
        (moved,) = traced(await diagnostics_for(client, uri, 2))
        assert moved.range.start.line == WRITE_LINE and moved.range.end.line == WRITE_LINE
        # The traced line itself edited: the trace no longer applies there.
        change_doc(client, uri, PROGRAM.replace("h.add_(1)", "h = h + 1"), 3)
        assert traced(await diagnostics_for(client, uri, 3)) == []
        change_doc(client, uri, PROGRAM, 4)
        assert len(traced(await diagnostics_for(client, uri, 4))) == 1

        # The trace file rewritten (a new run): the editor's file watcher tells the server.
        write_trace(trace_file, [trace_item(program, PROGRAM), trace_item(program, PROGRAM, 8, code="GF100")])
        client.workspace_did_change_watched_files(
            types.DidChangeWatchedFilesParams(changes=[types.FileEvent(uri=trace_file.as_uri(), type=types.FileChangeType.Changed)])
        )
        await _until(lambda: len(traced(client.diagnostics[uri])) == 2)
        gf100 = next(d for d in traced(client.diagnostics[uri]) if d.code == "GF100")
        assert gf100.code_description is None and gf100.range.start.line == 7  # not a rule: no link

        # A malformed trace file: no trace findings, one message, the server keeps serving.
        trace_file.write_text("[{", encoding="utf-8")
        change_doc(client, uri, PROGRAM + "\n", 5)
        assert traced(await diagnostics_for(client, uri, 5)) == []
        await _until(lambda: any("not a trace" in m.message for m in client.messages))
        change_doc(client, uri, PROGRAM, 6)
        await diagnostics_for(client, uri, 6)
        assert sum("not a trace" in m.message for m in client.messages) == 1

    assert program.read_text(encoding="utf-8") == PROGRAM


@pytest.mark.asyncio
async def test_trace_file_option(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text(PROGRAM, encoding="utf-8")
    write_trace(tmp_path / ".gradfix_cache" / "trace.json", [trace_item(program, PROGRAM)])  # not this one
    write_trace(tmp_path / "runs" / "last.json", [trace_item(program, PROGRAM, 8)])
    async with session(tmp_path, init={"traceFile": "runs/last.json"}) as client:
        uri = open_doc(client, program, PROGRAM)
        (diagnostic,) = traced(await diagnostics_for(client, uri, 1))
        assert diagnostic.range.start.line == 7
        # changed in the editor's settings: an absolute path, then a file that does not exist
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"gradfix": {"traceFile": str(tmp_path / ".gradfix_cache" / "trace.json")}})
        )
        await _until(lambda: [d.range.start.line for d in traced(client.diagnostics[uri])] == [WRITE_LINE - 1])
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"gradfix": {"traceFile": "nowhere.json"}})
        )
        await _until(lambda: traced(client.diagnostics[uri]) == [])
        assert client.diagnostics[uri]  # the engine's findings stay


@pytest.mark.asyncio
async def test_pulled_diagnostics_include_the_trace(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text(PROGRAM, encoding="utf-8")
    trace_file = write_trace(tmp_path / ".gradfix_cache" / "trace.json", [trace_item(program, PROGRAM)])
    async with session(tmp_path, pull=True) as client:
        uri = open_doc(client, program, PROGRAM)

        report = await pull_diagnostics(client, uri)
        assert [d.range.start.line for d in traced(report.items)] == [WRITE_LINE - 1]
        assert (await pull_diagnostics(client, uri, report.result_id)).kind == "unchanged"
        # a new trace run: the same text has new diagnostics (a new result id)
        write_trace(trace_file, [trace_item(program, PROGRAM), trace_item(program, PROGRAM, 8)])
        again = await pull_diagnostics(client, uri, report.result_id)
        assert again.kind == "full" and len(traced(again.items)) == 2
        assert client.published == []  # nothing pushed to a pull client
