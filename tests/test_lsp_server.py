"""`gradfix lsp` end to end: a real LSP client (pytest-lsp) talks to the server over stdio.

Every edit the server returns is applied to the text here, the way an editor
applies it, and compared with what the engine (`gradfix fix`) makes of the same
text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest
from lsprotocol import types
from pygls.protocol import default_converter
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, LanguageClient, register_lsp_features

from gradfix.codemods import FixSafety, Level, check_source, fix_source
from test_lsp_analysis import _fix_alone_by_hand as fix_alone_by_hand
from test_lsp_analysis import long_model

pytestmark = pytest.mark.asyncio

SERVER = [sys.executable, "-m", "gradfix", "lsp"]
TIMEOUT = 30

MODEL = '''import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.proj = nn.Linear(size, size)

    def forward(self, x):
        g = torch.sigmoid(self.proj(x))
        g.mul_(2)
        g[:, 0] += 1
        return g


def add_bias(h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    h += bias
    return h


def squash(x):
    t = torch.tanh(x)
    label = "é😀ü"; t.add_(1)  # résumé 😀
    return t


bump = lambda y: torch.sigmoid(y).add_(1)
'''

ONE_SAFE = '''import torch


def squash(x):
    t = torch.tanh(x)
    note = "naïve 😀"; t.mul_(0.5)
    return t
'''

ONE_UNSAFE = '''import torch


def add_bias(h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    h += bias  # 😀 keep
    return h
'''


# --- a client that remembers every publication ----------------------------------------------


def _client() -> LanguageClient:
    client = LanguageClient(converter_factory=default_converter)
    features = {k: v for k, v in DEFAULT_CLIENT_FEATURES.items() if k != types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS}
    register_lsp_features(client, features)
    client.published = []  # type: ignore[attr-defined]

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def publish(ls: LanguageClient, params: types.PublishDiagnosticsParams) -> None:
        ls.published.append(params)  # type: ignore[attr-defined]
        ls.diagnostics[params.uri] = params.diagnostics

    return client


def capabilities(
    *, lazy: bool = True, pull: bool = False, encodings: Optional[list[str]] = None,
    document_changes: bool = False, configuration: bool = False,
) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=encodings) if encodings else None,
        text_document=types.TextDocumentClientCapabilities(
            code_action=types.CodeActionClientCapabilities(
                code_action_literal_support=types.ClientCodeActionLiteralOptions(
                    code_action_kind=types.ClientCodeActionKindOptions(value_set=["quickfix", "source"])
                ),
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]) if lazy else None,
            ),
            diagnostic=types.DiagnosticClientCapabilities() if pull else None,
        ),
        workspace=types.WorkspaceClientCapabilities(
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=document_changes),
            configuration=configuration,
        ),
    )


@contextlib.asynccontextmanager
async def session(root: Path, init: Any = None, **caps: Any):
    client = _client()
    await client.start_io(*SERVER, cwd=str(root))
    result = await asyncio.wait_for(
        client.initialize_session(
            types.InitializeParams(
                capabilities=capabilities(**caps), root_uri=root.as_uri(), initialization_options=init
            )
        ),
        TIMEOUT,
    )
    client.server_encoding = result.capabilities.position_encoding or "utf-16"  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await asyncio.wait_for(client.shutdown_session(), TIMEOUT)
        await client.stop()


def open_doc(client: LanguageClient, path: Path, text: str, version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text))
    )
    return uri


def change_doc(client: LanguageClient, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


async def diagnostics_for(client: LanguageClient, uri: str, version: Optional[int] = None, count: Optional[int] = None):
    """The newest diagnostics published for ``uri`` (at ``version``; with ``count`` items)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for params in reversed(client.published):  # type: ignore[attr-defined]
            if params.uri != uri:
                continue
            if (version is None or params.version == version) and (count is None or len(params.diagnostics) == count):
                return list(params.diagnostics)
            break
        await asyncio.sleep(0.01)
    raise AssertionError(f"no diagnostics for {uri} version {version} count {count}: {client.published[-3:]}")  # type: ignore[attr-defined]


async def code_actions(client: LanguageClient, uri: str, rng: types.Range, only=None, diagnostics=()):
    return await asyncio.wait_for(
        client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri),
                range=rng,
                context=types.CodeActionContext(diagnostics=list(diagnostics), only=only),
            )
        ),
        TIMEOUT,
    )


async def edit_of(client: LanguageClient, action: types.CodeAction) -> types.WorkspaceEdit:
    if action.edit is None:
        action = await asyncio.wait_for(client.code_action_resolve_async(action), TIMEOUT)
    assert action.edit is not None
    return action.edit


# --- applying edits as an editor does (independently of gradfix.lsp.text) ----------------------


def _units(text: str, encoding: str) -> list[int]:
    """Code units of each character."""
    if encoding == "utf-8":
        return [len(c.encode("utf-8")) for c in text]
    if encoding == "utf-32":
        return [1 for _ in text]
    return [len(c.encode("utf-16-le")) // 2 for c in text]


def _offset(text: str, position: types.Position, encoding: str) -> int:
    lines = text.splitlines(keepends=True)
    offset = sum(len(line) for line in lines[: position.line])
    line = lines[position.line].rstrip("\r\n") if position.line < len(lines) else ""
    used = 0
    for char, size in zip(line, _units(line, encoding)):
        if used >= position.character:
            break
        used += size
        offset += 1
    return offset


def text_edits(edit: types.WorkspaceEdit, uri: str) -> list[types.TextEdit]:
    if edit.document_changes:
        return [e for change in edit.document_changes if change.text_document.uri == uri for e in change.edits]
    return list(edit.changes[uri])


def apply(text: str, edit: types.WorkspaceEdit, uri: str, encoding: str = "utf-16") -> str:
    spans = []
    for item in text_edits(edit, uri):
        spans.append((_offset(text, item.range.start, encoding), _offset(text, item.range.end, encoding), item.new_text))
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def expected_range(text: str, finding, encoding: str = "utf-16") -> tuple[tuple[int, int], tuple[int, int]]:
    lines = text.splitlines()

    def units(line: int, col: int) -> int:
        return sum(_units(lines[line - 1][: col - 1], encoding))

    return ((finding.line - 1, units(finding.line, finding.col)), (finding.end_line - 1, units(finding.end_line, finding.end_col)))


def as_tuple(rng: types.Range) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((rng.start.line, rng.start.character), (rng.end.line, rng.end.character))


# --- tests ---------------------------------------------------------------------------------------


async def test_diagnostics_quick_fixes_noqa_and_fix_all(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL, encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    findings = check_source(MODEL, str(path))
    async with session(tmp_path) as client:
        uri = open_doc(client, path, MODEL)
        diagnostics = await diagnostics_for(client, uri, 1)

        # Diagnostics: one per finding, positions in UTF-16 (the line with "é😀ü" counts the emoji twice).
        assert [d.code for d in diagnostics] == [f.code for f in findings]
        assert [d.message for d in diagnostics] == [f.message for f in findings]
        assert [as_tuple(d.range) for d in diagnostics] == [expected_range(MODEL, f) for f in findings]
        assert {d.source for d in diagnostics} == {"gradfix"}
        # severity from the hazard level
        severity = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning}
        assert [d.severity for d in diagnostics] == [severity[str(f.level)] for f in findings]
        assert {d.severity for d in diagnostics} == set(severity.values())  # MODEL has both
        for diagnostic in diagnostics:
            href = diagnostic.code_description.href
            page, anchor = href.split("#")
            assert anchor == f"{diagnostic.code.lower()}-{diagnostic.code_description and _rule_name(diagnostic.code)}"
            heading = f"## {diagnostic.code} {_rule_name(diagnostic.code)}"
            assert heading in Path(urllib.request.url2pathname(urllib.parse.urlparse(page).path)).read_text()

        for finding, diagnostic in zip(findings, diagnostics):
            actions = await code_actions(client, uri, diagnostic.range, diagnostics=[diagnostic])
            quick = [a for a in actions if a.kind == types.CodeActionKind.QuickFix and not a.title.startswith("Disable")]
            silence = [a for a in actions if a.title == f"Disable {finding.code} for this line"]
            assert len(silence) == 1
            if finding.fix_safety is FixSafety.DISPLAY_ONLY:
                assert quick == []  # nothing to rewrite: only "Disable ..."
                continue
            (action,) = [a for a in quick if a.diagnostics and as_tuple(a.diagnostics[0].range) == as_tuple(diagnostic.range)]
            if finding.fix_safety is FixSafety.SAFE:
                assert action.title == finding.fix_title and action.is_preferred
            else:
                assert action.title == f"{finding.fix_title} (unsafe)" and not action.is_preferred
            assert action.edit is None  # computed on codeAction/resolve
            edit = await edit_of(client, action)
            fixed = apply(MODEL, edit, uri)
            for item in text_edits(edit, uri):  # minimal edits, not the whole document
                assert item.range.end.line - item.range.start.line <= 2
            # what `gradfix fix --level warning` does when this finding is the only one (the others silenced)
            assert fixed == fix_alone_by_hand(MODEL, str(path), finding, findings)
            assert fixed != MODEL

            # Disable for this line: `# noqa: CODE`, or an existing comment extended.
            silenced = apply(MODEL, await edit_of(client, silence[0]), uri)
            line = silenced.splitlines()[finding.line - 1]
            assert line.endswith(f"# noqa: {finding.code}")
            assert len(check_source(silenced, str(path))) == len(findings) - 1

        # source.fixAll.gradfix: the safe fixes, as `gradfix fix` applies them.
        (fix_all,) = await code_actions(client, uri, diagnostics[0].range, only=["source.fixAll"])
        assert fix_all.kind == "source.fixAll.gradfix"
        assert apply(MODEL, await edit_of(client, fix_all), uri) == fix_source(MODEL, str(path)).source
        # A request that wants only source actions gets no quick fixes, and vice versa.
        assert all(a.kind == types.CodeActionKind.QuickFix for a in await code_actions(client, uri, diagnostics[0].range, only=["quickfix"]))

        # Save: diagnostics pushed again.
        published = len(client.published)
        client.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(uri)))
        await _until(lambda: len(client.published) > published)
    # The server never writes files: the edits went to the client only.
    assert path.read_text(encoding="utf-8") == MODEL
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _rule_name(code: str) -> str:
    from gradfix.codemods import RULES_BY_CODE

    return RULES_BY_CODE[code].name


async def _until(condition, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8", "utf-32"])
async def test_single_finding_quick_fix_equals_gradfix_fix(tmp_path, encoding):
    """Eager edits (no resolve support), versioned document changes, each position encoding."""
    async with session(tmp_path, lazy=False, encodings=[encoding], document_changes=True) as client:
        assert client.server_encoding == encoding
        for name, text, unsafe in (("safe.py", ONE_SAFE, False), ("unsafe.py", ONE_UNSAFE, True)):
            path = tmp_path / name
            uri = open_doc(client, path, text, version=7)
            (diagnostic,) = await diagnostics_for(client, uri, 7)
            (finding,) = check_source(text, str(path))
            assert as_tuple(diagnostic.range) == expected_range(text, finding, encoding)
            actions = await code_actions(client, uri, diagnostic.range)
            (action,) = [a for a in actions if a.kind == "quickfix" and not a.title.startswith("Disable")]
            assert action.edit is not None and action.edit.document_changes[0].text_document.version == 7
            # `gradfix fix --level warning [--unsafe-fixes]`: a quick fix is offered whatever the finding's level
            expected = fix_source(text, str(path), unsafe_fixes=unsafe, level=Level.WARNING).source
            assert apply(text, action.edit, uri, encoding) == expected
            assert action.title.endswith("(unsafe)") == unsafe
            (silence,) = [a for a in actions if a.title.startswith("Disable")]
            silenced = apply(text, silence.edit, uri, encoding)
            assert check_source(silenced, str(path)) == []
            if unsafe:  # an existing comment: the noqa goes after it
                assert "h += bias  # 😀 keep  # noqa: GF101" in silenced
            fix_all = [a for a in actions if a.kind == "source.fixAll.gradfix"]
            # fix-all leaves unsafe fixes out unless configured: nothing to offer for the unsafe file
            assert len(fix_all) == (0 if unsafe else 1)


async def test_noqa_extends_an_existing_code_list(tmp_path):
    text = ONE_SAFE.replace("t.mul_(0.5)\n", "t.mul_(0.5)  # noqa: E501\n")
    async with session(tmp_path, lazy=False) as client:
        uri = open_doc(client, tmp_path / "n.py", text)
        (diagnostic,) = await diagnostics_for(client, uri, 1)
        actions = await code_actions(client, uri, diagnostic.range)
        (silence,) = [a for a in actions if a.title == "Disable GF102 for this line"]
        silenced = apply(text, silence.edit, uri)
        assert 't.mul_(0.5)  # noqa: E501, GF102\n' in silenced
        change_doc(client, uri, silenced, 2)
        assert list(await diagnostics_for(client, uri, 2)) == []


async def test_syntax_error_buffer(tmp_path):
    async with session(tmp_path) as client:
        uri = open_doc(client, tmp_path / "m.py", MODEL)
        assert len(await diagnostics_for(client, uri, 1)) == len(check_source(MODEL, "m.py"))
        broken = MODEL.replace("def squash(x):", "def squash(x:")
        change_doc(client, uri, broken, 2)
        (only,) = await diagnostics_for(client, uri, 2)
        assert only.severity == types.DiagnosticSeverity.Error
        assert only.message.startswith("syntax error:") and only.source == "gradfix"
        assert only.range.start.line == MODEL.splitlines().index("def squash(x):")
        assert list(await code_actions(client, uri, only.range)) == []
        change_doc(client, uri, MODEL, 3)
        assert len(await diagnostics_for(client, uri, 3)) == len(check_source(MODEL, "m.py"))


async def test_project_configuration_client_overrides_and_changes(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.gradfix]\nselect = ["GF101"]\nexclude = ["legacy"]\n')
    (project / "legacy").mkdir()
    codes = lambda diagnostics: sorted({d.code for d in diagnostics})  # noqa: E731
    async with session(tmp_path, configuration=True) as client:
        uri = open_doc(client, project / "m.py", MODEL)
        assert codes(await diagnostics_for(client, uri, 1)) == ["GF101"]  # the project's select
        excluded = open_doc(client, project / "legacy" / "old.py", MODEL)
        assert list(await diagnostics_for(client, excluded, 1)) == []  # the project's exclude

        # didChangeConfiguration with settings: they layer over the project's as flags do.
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"gradfix": {"select": ["GF102"]}})
        )
        await diagnostics_for(client, uri, 1, count=sum(f.code == "GF102" for f in check_source(MODEL, "m.py")))
        assert codes(client.diagnostics[uri]) == ["GF102"]

        # Without settings in the notification the server asks for the `gradfix` section.
        client.set_configuration({"ignore": ["GF1"]}, section="gradfix")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        await diagnostics_for(client, uri, 1, count=0)

        # level: only error-level findings are shown
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"gradfix": {"level": "error"}}))
        errors = [f for f in check_source(MODEL, "m.py") if str(f.level) == "error" and f.code == "GF101"]
        await diagnostics_for(client, uri, 1, count=len(errors))
        assert {d.severity for d in client.diagnostics[uri]} <= {types.DiagnosticSeverity.Error}

        # The project's pyproject.toml changes on disk: the editor's file watcher tells the server.
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"gradfix": {"level": "warning"}}))
        (project / "pyproject.toml").write_text('[tool.gradfix]\nselect = ["GF102"]\n')
        client.workspace_did_change_watched_files(
            types.DidChangeWatchedFilesParams(
                changes=[types.FileEvent(uri=(project / "pyproject.toml").as_uri(), type=types.FileChangeType.Changed)]
            )
        )
        await diagnostics_for(client, uri, 1, count=sum(f.code == "GF102" for f in check_source(MODEL, "m.py")))
        assert codes(client.diagnostics[uri]) == ["GF102"]
        (project / "pyproject.toml").write_text('[tool.gradfix]\nselect = ["GF101"]\nexclude = ["legacy"]\n')
        client.workspace_did_change_watched_files(
            types.DidChangeWatchedFilesParams(
                changes=[types.FileEvent(uri=(project / "pyproject.toml").as_uri(), type=types.FileChangeType.Changed)]
            )
        )

        # Bad values are reported and left out.
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"gradfix": {"select": ["XX9"], "unsafeFixes": "yes"}})
        )
        await diagnostics_for(client, uri, 1, count=sum(f.code == "GF101" for f in check_source(MODEL, "m.py")))
        await _until(lambda: any("XX9" in m.message for m in client.messages))
        assert any("unsafeFixes" in m.message for m in client.messages)


async def test_initialization_options(tmp_path):
    init = {"ignore": ["GF102"], "unsafeFixes": True, "docsBaseUrl": "https://docs.example/rules.html"}
    async with session(tmp_path, init=init, lazy=False) as client:
        uri = open_doc(client, tmp_path / "m.py", MODEL)
        diagnostics = await diagnostics_for(client, uri, 1)
        assert {d.code for d in diagnostics} == {"GF101"}
        assert diagnostics[0].code_description.href == "https://docs.example/rules.html#gf101-augmented-assignment-on-tensor"
        (fix_all,) = await code_actions(client, uri, diagnostics[0].range, only=["source.fixAll.gradfix"])
        expected = fix_source(MODEL, "m.py", ignore=["GF102"], unsafe_fixes=True).source
        assert apply(MODEL, fix_all.edit, uri) == expected


async def pull_diagnostics(client, uri: str, previous: str | None = None):
    """textDocument/diagnostic, with the result id of the previous report if any."""
    return await asyncio.wait_for(
        client.text_document_diagnostic_async(
            types.DocumentDiagnosticParams(types.TextDocumentIdentifier(uri), previous_result_id=previous)
        ),
        TIMEOUT,
    )


async def test_pull_diagnostics(tmp_path):
    async with session(tmp_path, pull=True) as client:
        uri = open_doc(client, tmp_path / "m.py", MODEL)

        report = await pull_diagnostics(client, uri)
        assert report.kind == "full"
        assert [d.code for d in report.items] == [f.code for f in check_source(MODEL, "m.py")]
        again = await pull_diagnostics(client, uri, report.result_id)
        assert again.kind == "unchanged" and again.result_id == report.result_id
        change_doc(client, uri, ONE_SAFE, 2)
        changed = await pull_diagnostics(client, uri, report.result_id)
        assert changed.kind == "full" and len(changed.items) == 1
        await asyncio.sleep(0.2)
        assert client.published == []  # a pull client gets nothing pushed (no duplicates)


async def test_bursts_of_changes_and_closing_while_linting(tmp_path):
    async with session(tmp_path) as client:
        uri = open_doc(client, tmp_path / "m.py", MODEL)
        await diagnostics_for(client, uri, 1)
        texts = [MODEL.replace("    return t\n", "    t.add_(1)\n" * (i % 4) + "    return t\n") for i in range(40)]
        for version, text in enumerate(texts, start=2):
            change_doc(client, uri, text, version)
        final = await diagnostics_for(client, uri, 41)
        assert [d.message for d in final] == [f.message for f in check_source(texts[-1], "m.py")]
        # Only the latest text is linted: far fewer publications than changes.
        assert sum(1 for p in client.published if p.uri == uri) < 10

        # Close a document right after opening it (its lint usually pending): cleared, never published after.
        # (On a loaded machine the lint may finish before the server reads the close: then it was
        # published first, and the clear must still come last.)
        other = open_doc(client, tmp_path / "other.py", MODEL)
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(other)))
        await _until(lambda: any(p.uri == other and not p.diagnostics for p in client.published))
        await asyncio.sleep(0.5)
        published = [list(p.diagnostics) for p in client.published if p.uri == other]
        assert published[-1] == [] and published.count([]) == 1 and len(published) <= 2
        # and the server is still there
        assert list(await code_actions(client, other, final[0].range)) == []
        assert await code_actions(client, uri, final[0].range)


class RawClient:
    """JSON-RPC by hand, for messages a well-behaved client cannot send."""

    def __init__(self, root: Path) -> None:
        import subprocess

        self.process = subprocess.Popen(SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root)

    def send_bytes(self, body: bytes) -> None:
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.process.stdin.flush()

    def send(self, message: dict) -> None:
        self.send_bytes(json.dumps({"jsonrpc": "2.0", **message}).encode())

    def receive(self) -> dict:
        length = 0
        while True:
            line = self.process.stdout.readline()
            assert line, "the server closed its output"
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return json.loads(self.process.stdout.read(length))

    def response(self, id_: Any) -> dict:
        while True:
            message = self.receive()
            if message.get("id") == id_ and "method" not in message:
                return message

    def close(self) -> None:
        self.send({"id": "shutdown", "method": "shutdown"})
        self.response("shutdown")
        self.send({"method": "exit"})
        self.process.wait(TIMEOUT)


@pytest.mark.parametrize("_", [None], ids=["raw"])
def test_malformed_and_unknown_requests_get_errors(tmp_path, _):
    client = RawClient(tmp_path)
    try:
        client.send({"id": 1, "method": "initialize", "params": {"capabilities": {}, "processId": None, "rootUri": None}})
        assert "capabilities" in client.response(1)["result"]
        client.send({"method": "initialized", "params": {}})
        client.send({"id": 2, "method": "gradfix/unknown", "params": {}})
        assert client.response(2)["error"]["code"] == -32601  # method not found
        client.send({"id": 3, "method": "textDocument/codeAction", "params": {"textDocument": 5}})
        assert client.response(3)["error"]["code"] in (-32602, -32603)  # invalid params
        client.send({"id": 4, "method": "codeAction/resolve", "params": {"title": "x", "data": {"uri": "file:///x.py", "generation": 3, "kind": "fix"}}})
        assert client.response(4)["error"]["code"] == -32801  # content modified
        client.send_bytes(b"{not json")  # not JSON at all
        client.send({"id": 5, "method": "textDocument/codeAction", "params": {
            "textDocument": {"uri": (tmp_path / "closed.py").as_uri()},
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
            "context": {"diagnostics": []},
        }})
        assert client.response(5)["result"] == []  # still serving; a document that is not open has no actions
        uri = (tmp_path / "m.py").as_uri()
        client.send({"method": "textDocument/didOpen", "params": {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": ONE_SAFE}}})
        while True:
            message = client.receive()
            if message.get("method") == "textDocument/publishDiagnostics" and message["params"]["uri"] == uri:
                assert len(message["params"]["diagnostics"]) == 1
                break
        client.close()
        assert client.process.returncode == 0
    finally:
        if client.process.poll() is None:
            client.process.kill()


async def test_long_buffer_relints_the_changed_definition(tmp_path):
    filler = "".join(
        f"\n\ndef filler{i}(x):\n    y = torch.relu(x)\n    y.mul_(3)\n    return y + {i}\n" for i in range(60)
    )
    text = MODEL + filler
    async with session(tmp_path) as client:
        uri = open_doc(client, tmp_path / "long.py", text)
        first = await diagnostics_for(client, uri, 1)
        assert len(first) == len(check_source(text, "long.py"))
        changed = text.replace("    return y + 7\n", "    y += 1\n    return y + 7\n")
        change_doc(client, uri, changed, 2)
        expected = check_source(changed, "long.py")
        second = await diagnostics_for(client, uri, 2)
        assert [d.message for d in second] == [f.message for f in expected]
        # A quick fix in one definition of the long buffer (computed on that definition).
        target = next(d for d in second if d.code == "GF101" and d.range.start.line > 40)
        actions = await code_actions(client, uri, target.range)
        (action,) = [a for a in actions if a.kind == "quickfix" and not a.title.startswith("Disable")]
        fixed = apply(changed, await edit_of(client, action), uri)
        assert "    y = y + 1\n    return y + 7\n" in fixed
        assert len(check_source(fixed, "long.py")) == len(expected) - 1


async def test_a_very_large_buffer_holds_up_nothing(tmp_path):
    big = "import torch\n\n" + "".join(
        f"\n\ndef f{i}(x):\n    y = torch.sigmoid(x)\n    y.mul_(2)\n    return y\n" for i in range(500)
    )
    async with session(tmp_path) as client:
        big_uri = open_doc(client, tmp_path / "big.py", big)  # 3,000 lines: seconds for the engine
        started = time.monotonic()
        small = open_doc(client, tmp_path / "small.py", ONE_SAFE)
        assert len(await diagnostics_for(client, small, 1)) == 1
        assert time.monotonic() - started < 5  # not queued behind the big buffer's whole-file lint
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(big_uri)))

        huge = "x = 1\n" * (2 * 1024 * 1024)  # over 10 MiB: not linted, as `gradfix check` skips it
        huge_uri = open_doc(client, tmp_path / "huge.py", huge)
        assert list(await diagnostics_for(client, huge_uri, 1)) == []
        await _until(lambda: any("not linted" in m.message for m in client.messages))


@pytest.mark.parametrize("lazy", [True, False], ids=["resolve", "edits at once"])
async def test_long_buffer_fixes_one_definition_at_a_time(tmp_path, lazy, monkeypatch):
    """In a long buffer quick fixes and fix-all are computed per definition (ahead, and kept across
    edits elsewhere); applied to the text, they are what the engine makes of the whole text."""
    monkeypatch.setenv("GRADFIX_LSP_FIX_ALL_MISSING", "1000")  # fix-all from the shares even right after opening
    text = long_model(5)
    path = tmp_path / "long.py"
    init = {"unsafeFixes": True, "fixLevel": "warning"}
    async with session(tmp_path, init=init, lazy=lazy) as client:
        uri = open_doc(client, path, text)
        await diagnostics_for(client, uri, 1)
        versions = [
            text,
            text.replace("def squash3(x):\n", "def squash3(x):\n    pad = 1\n"),  # an edit in one definition
            "# a comment on top\n" + text.replace("def squash3(x):\n", "def squash3(x):\n    pad = 1\n"),
        ]
        for version, current in enumerate(versions, start=1):
            if version > 1:
                change_doc(client, uri, current, version)
            diagnostics = await diagnostics_for(client, uri, version)
            findings = check_source(current, str(path))
            assert [d.message for d in diagnostics] == [f.message for f in findings]

            (fix_all,) = await code_actions(client, uri, diagnostics[0].range, only=["source.fixAll"])
            expected = fix_source(current, str(path), unsafe_fixes=True, level=Level.WARNING).source
            assert apply(current, await edit_of(client, fix_all), uri) == expected
            assert expected.count("import torch\n") == 1

            # quick fixes: in the edited definition, and in others (one of them unsafe, one with a companion)
            for name in ("squash3", "reset4", "add_bias1"):
                start = current.splitlines().index(next(l for l in current.splitlines() if name + "(" in l))
                finding = next(f for f in findings if f.line > start + 1 and f.fixable)
                diagnostic = diagnostics[findings.index(finding)]
                actions = await code_actions(client, uri, diagnostic.range, diagnostics=[diagnostic])
                matching = [
                    a for a in actions
                    if a.kind == "quickfix" and not a.title.startswith("Disable")
                    and as_tuple(a.diagnostics[0].range) == as_tuple(diagnostic.range)
                ]
                assert len(matching) == 1, (version, name, finding.line, diagnostic.range, [(a.title, a.kind, a.diagnostics and a.diagnostics[0].range) for a in actions])
                (action,) = matching
                fixed = apply(current, await edit_of(client, action), uri)
                if "more" in action.title:  # fixed with the other finding of its rule on its line
                    assert fixed.count("t = t + 1; t = t * 2") == 1
                else:
                    assert fixed == fix_alone_by_hand(current, str(path), finding, findings)
