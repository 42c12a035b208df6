"""Latency of `gradfix lsp`: diagnostics after a change in a 3,000-line file, and code actions.

    python benchmarks/lsp_latency.py [--lines 3000] [--edits 10] [--quick]

A real client talks to `python -m gradfix lsp` over stdio (as an editor does)
and measures wall time from sending a message to receiving what it waits for:

* diagnostics after a change: `didChange` (an incremental edit inside one
  function) until `publishDiagnostics` for that version, with the editor
  idle before the change and while typing (an edit every 250 ms, so the
  server's exact whole-file lint is running in the background);
* code actions: `textDocument/codeAction` on a diagnostic until the response
  (edits resolved lazily, as VS Code and Neovim ask), then `codeAction/resolve`
  of the quick fix, right away and 300 ms later (a person choosing from the
  menu). Each time on a new version of the text: after an edit elsewhere (a
  comment at the top: the server has the fix computed ahead) and after an edit
  in the finding's own function (the fix is computed after the lint of that
  version, in a worker process);
* the same request from a client without resolve support (edits at once);
* `source.fixAll.gradfix` (request and resolve, as `codeActionsOnSave` does)
  after an edit in one function, and right after opening the file, before
  anything has been computed ahead.

Targets (issue 5): diagnostics at most 150 ms, code actions at most 50 ms.
The first diagnostics after opening the file are the engine's whole-file lint
and are printed for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parent.parent
DIAGNOSTICS_TARGET = 0.150
ACTION_TARGET = 0.050

HEADER = '''"""A generated model zoo: modules and helpers, some with in-place writes."""
import math

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN = 64

'''

MODULE = '''

class Block{i}(nn.Module):
    """Block {i}."""

    def __init__(self, size: int = HIDDEN) -> None:
        super().__init__()
        self.proj = nn.Linear(size, size)
        self.norm = nn.LayerNorm(size)
        self.scale = math.sqrt(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.proj(x))
        g = torch.sigmoid(h)
        {gate}
        out = g * h / self.scale
        for step in range(2):
            out = out + step
        return F.gelu(out)


def helper{i}(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(x)
    {helper}
    y = t + bias
    return y.sum(dim=-1)
'''


def make_source(lines: int) -> str:
    """About ``lines`` lines; a finding in roughly one function of three."""
    parts = [HEADER]
    i = 0
    while sum(p.count("\n") for p in parts) < lines:
        gate = "g.mul_(2)" if i % 3 == 0 else "g = g * 2"
        helper = "t += 1" if i % 3 == 1 else "t = t + 1"
        parts.append(MODULE.format(i=i, gate=gate, helper=helper))
        i += 1
    return "".join(parts)


class Client(LanguageClient):
    def __init__(self) -> None:
        super().__init__("gradfix-bench", "1")
        self.received: dict[tuple[str, Optional[int]], float] = {}
        self.last: dict[str, list[types.Diagnostic]] = {}
        self.event = asyncio.Event()

        @self.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def publish(params: types.PublishDiagnosticsParams) -> None:
            self.received.setdefault((params.uri, params.version), time.perf_counter())
            self.last[params.uri] = list(params.diagnostics)
            self.event.set()

    async def wait_version(self, uri: str, version: int, timeout: float = 600) -> float:
        deadline = time.perf_counter() + timeout
        while (uri, version) not in self.received:
            self.event.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no diagnostics for version {version}")
            try:
                await asyncio.wait_for(self.event.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.received[(uri, version)]


async def start(lazy: bool) -> Client:
    client = Client()
    await client.start_io(sys.executable, "-m", "gradfix", "lsp")
    resolve = types.ClientCodeActionResolveOptions(properties=["edit"]) if lazy else None
    caps = types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            code_action=types.CodeActionClientCapabilities(resolve_support=resolve)
        )
    )
    await client.initialize_async(types.InitializeParams(capabilities=caps, process_id=None))
    client.initialized(types.InitializedParams())
    return client


async def stop(client: Client) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


def insert_at(uri: str, version: int, line: int, text: str) -> types.DidChangeTextDocumentParams:
    where = types.Position(line, 0)
    return types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(where, where), text=text)],
    )


def delete_line(uri: str, version: int, line: int) -> types.DidChangeTextDocumentParams:
    return types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[
            types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(line, 0), types.Position(line + 1, 0)), text=""
            )
        ],
    )


async def edit_latencies(client: Client, uri: str, source: str, version: int, edits: int, pause: float) -> tuple[list[float], int]:
    """Insert, then remove, an in-place line inside helpers spread over the file."""
    lines = source.splitlines()
    helpers = [n for n, text in enumerate(lines) if text.startswith("def helper")]
    latencies = []
    for k in range(edits):
        target = helpers[(k * 7) % len(helpers)] + 2  # inside the helper's body
        version += 1
        sent = time.perf_counter()
        client.text_document_did_change(insert_at(uri, version, target, "    t.add_(0.5)\n"))
        latencies.append(await client.wait_version(uri, version) - sent)
        await asyncio.sleep(pause)
        version += 1
        client.text_document_did_change(delete_line(uri, version, target))
        await client.wait_version(uri, version)
        await asyncio.sleep(pause)
    return latencies, version


async def timed(coro) -> tuple[float, object]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


def action_params(uri: str, diagnostic: types.Diagnostic, only=None) -> types.CodeActionParams:
    return types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri),
        range=diagnostic.range,
        context=types.CodeActionContext(diagnostics=[diagnostic], only=only),
    )


async def fix_all_latency(client: Client, uri: str, diagnostic: types.Diagnostic) -> float:
    started = time.perf_counter()
    actions = await client.text_document_code_action_async(action_params(uri, diagnostic, only=["source.fixAll"]))
    resolved = await client.code_action_resolve_async(actions[0])
    if resolved.edit is None or not resolved.edit.changes:
        raise RuntimeError("fix-all returned no edits")
    return time.perf_counter() - started


def row(name: str, values: list[float], target: Optional[float]) -> str:
    values = sorted(values)
    median = statistics.median(values)
    worst = values[-1]
    verdict = ""
    if target is not None:
        verdict = "meets" if median <= target else f"misses by {median / target:.1f}x"
        verdict = f"target {target * 1000:.0f} ms: {verdict}"
    return f"{name:<64} median {median * 1000:8.1f} ms   max {worst * 1000:8.1f} ms   n={len(values):<3} {verdict}"


async def run(lines: int, edits: int, quick: bool) -> int:
    source = make_source(lines)
    total_lines = source.count("\n")
    print(f"gradfix lsp latency, {total_lines}-line file, Python {sys.version.split()[0]}")
    report: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "zoo.py"
        path.write_text(source, encoding="utf-8")
        uri = path.as_uri()
        client = await start(lazy=True)
        try:
            sent = time.perf_counter()
            client.text_document_did_open(
                types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=source))
            )
            first = await client.wait_version(uri, 1) - sent
            findings = len(client.last[uri])
            report.append(row(f"open: first diagnostics (whole-file lint, {findings} findings)", [first], None))

            # Idle editor: the exact lint that follows each fast one finishes before the next edit.
            settle = 0.2 if quick else max(2.0, first * 1.5)
            idle, version = await edit_latencies(client, uri, source, 1, max(2, edits // 2), settle)
            report.append(row("diagnostics after a change (idle before the change)", idle, DIAGNOSTICS_TARGET))
            typing, version = await edit_latencies(client, uri, source, version, edits, 0.25)
            report.append(row("diagnostics after a change (typing, whole-file lint running)", typing, DIAGNOSTICS_TARGET))
            await asyncio.sleep(settle)

            # Code actions on a finding in the second half, each time on a new version of the text:
            # after an edit elsewhere (a comment added at the top), and after an edit in the
            # finding's own definition (its fix has to be computed again).
            lines = source.splitlines(keepends=True)
            elsewhere: dict[str, list[float]] = {"request": [], "now": [], "later": []}
            own: dict[str, list[float]] = {"request": [], "now": [], "later": []}
            for k in range(2 * edits):
                same_definition = k % 2 == 1
                diagnostic = next(d for d in client.last[uri] if d.range.start.line > total_lines // 2)
                if same_definition:
                    # a statement at the top of the body of the function holding the finding
                    at = diagnostic.range.start.line
                    while not lines[at].lstrip().startswith("def "):
                        at -= 1
                    at += 1
                    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
                    added = f"{indent}pad{k} = {k}\n"
                else:
                    at, added = 0, f"# pass {k}\n"
                lines.insert(at, added)
                version += 1
                client.text_document_did_change(insert_at(uri, version, at, added))
                await client.wait_version(uri, version)
                figures = own if same_definition else elsewhere
                diagnostic = next(d for d in client.last[uri] if d.range.start.line > total_lines // 2)
                elapsed, actions = await timed(client.text_document_code_action_async(action_params(uri, diagnostic)))
                figures["request"].append(elapsed)
                fix = next(a for a in actions if a.kind == "quickfix" and a.edit is None)
                if (k // 2) % 2:
                    await asyncio.sleep(0.3)  # a person reading the menu
                    elapsed, _ = await timed(client.code_action_resolve_async(fix))
                    figures["later"].append(elapsed)
                else:
                    elapsed, _ = await timed(client.code_action_resolve_async(fix))
                    figures["now"].append(elapsed)
                await asyncio.sleep(0.5 if quick else 1.0)  # the exact lint of this version, before the next
            report.append(row("codeAction request (edits resolved lazily)", elsewhere["request"] + own["request"], ACTION_TARGET))
            report.append(row("codeAction/resolve at once, after an edit elsewhere", elsewhere["now"], ACTION_TARGET))
            report.append(row("codeAction/resolve 300 ms later, after an edit elsewhere", elsewhere["later"], ACTION_TARGET))
            report.append(row("codeAction/resolve at once, after an edit in its definition", own["now"], ACTION_TARGET))
            report.append(row("codeAction/resolve 300 ms later, after an edit in its definition", own["later"], ACTION_TARGET))
            # For reference: a short file (always linted whole).
            small = Path(folder) / "small.py"
            small_source = make_source(20)
            small_uri = small.as_uri()
            client.text_document_did_open(
                types.DidOpenTextDocumentParams(
                    types.TextDocumentItem(uri=small_uri, language_id="python", version=1, text=small_source)
                )
            )
            await client.wait_version(small_uri, 1)
            short, _ = await edit_latencies(client, small_uri, small_source, 1, max(2, edits // 2), 0.1)
            report.append(row(f"diagnostics after a change, {small_source.count(chr(10))}-line file", short, DIAGNOSTICS_TARGET))
            # Fix-all after an edit in one definition (as codeActionsOnSave asks on save).
            warm = []
            for k in range(3 if quick else max(3, edits // 2)):
                helper = next(n for n, text in enumerate(lines) if text.startswith(f"def helper{k * 5 + 1}("))
                lines.insert(helper + 1, f"    pad = {k}\n")
                version += 1
                client.text_document_did_change(insert_at(uri, version, helper + 1, f"    pad = {k}\n"))
                await client.wait_version(uri, version)
                warm.append(await fix_all_latency(client, uri, client.last[uri][0]))
                await asyncio.sleep(0.5 if quick else 1.0)
            report.append(row("source.fixAll.gradfix request + resolve, after an edit", warm, None))
        finally:
            await stop(client)

        if not quick:
            # Fix-all as soon as the first diagnostics are there: nothing computed ahead yet.
            client = await start(lazy=True)
            try:
                client.text_document_did_open(
                    types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=source))
                )
                await client.wait_version(uri, 1)
                cold = await fix_all_latency(client, uri, client.last[uri][0])
                report.append(row("source.fixAll.gradfix request + resolve, right after opening", [cold], None))
            finally:
                await stop(client)

        client = await start(lazy=False)
        try:
            client.text_document_did_open(
                types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=source))
            )
            await client.wait_version(uri, 1)
            diagnostics = client.last[uri]
            diagnostic = [d for d in diagnostics if d.range.start.line > total_lines // 2][0]
            eager = []
            for _ in range(max(3, edits // 2)):
                elapsed, _ = await timed(
                    client.text_document_code_action_async(action_params(uri, diagnostic, only=["quickfix"]))
                )
                eager.append(elapsed)
            report.append(row("codeAction request, client without resolve (edits at once)", eager, ACTION_TARGET))
        finally:
            await stop(client)
    print("\n".join(report))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=3000)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="short pauses, no fix-all (a smoke run)")
    args = parser.parse_args()
    return asyncio.run(run(args.lines, args.edits, args.quick))


if __name__ == "__main__":
    sys.exit(main())
