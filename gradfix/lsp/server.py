"""``gradfix lsp``: the Language Server Protocol server (pygls, stdio).

Diagnostics are pushed after open, change (debounced) and save, or pulled with
``textDocument/diagnostic`` by clients that support it (then nothing is pushed,
so the editor does not show each finding twice). Code actions: a quick fix per
finding (preferred when safe, "(unsafe)" when not), "Disable GFxxx for this
line", and ``source.fixAll.gradfix``. Edits are computed lazily through
``codeAction/resolve`` when the client supports it.

The engine is pure Python and costs about 1.5 ms per line, so work is kept off
the thread that speaks the protocol:

* the *fast lane*, a thread: lints of short buffers, re-lints of the changed
  definitions of long ones (:func:`analysis.fast_lint`), quick fixes asked for
  right now;
* the *full lane*, a worker process at low CPU priority (so it never holds this
  process's GIL): the exact whole-buffer lint that follows a fast one once
  typing pauses, and whole-buffer quick fixes of long buffers;
* the *fixes lane*, a second worker process: the fixes someone waits for (a
  quick fix being resolved, fix-all of a long buffer), the quick fixes of the
  actions the editor has just listed, and those of the definition just edited;
* the *ahead lane*, a third worker process at low CPU priority: the quick fixes
  and fix-all shares of every other definition of a long buffer, computed after
  each lint, so that resolving a quick fix or fix-all on save is a look-up.

In a long buffer, fixes are computed one definition at a time and kept by the
text the engine saw (:mod:`gradfix.lsp.fixstore`): an edit leaves the fixes of
the other definitions valid.

A lint always takes the buffer's latest text: changes that arrive meanwhile
are not queued, the next lint starts from the newest text. The server never
writes files; edits go to the editor.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcException, JsonRpcParseError
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import to_fs_path

from .. import __version__
from ..codemods import RULES_BY_CODE, Finding, FixSafety
from . import analysis
from .fixstore import DONE, FixStore, Job
from .noqa import CommentSites
from .settings import ClientOptions, DocumentSettings, parse_client_options, resolve, unknown_keys
from .text import UTF8, UTF16, UTF32, Edit, TextIndex
from ..cache import DEFAULT_TRACE_FILE
from .traces import TraceFiles, TraceFinding
from .worker import Worker, WorkerCrashed

logger = logging.getLogger("gradfix.lsp")

SOURCE = "gradfix"
TRACE_SOURCE = "gradfix trace"  # the findings of a `gradfix trace` run (proven at run time)
#: Where `gradfix trace` writes by default: the editor is told when it changes (a custom traceFile is
#: read again at the next lint).
TRACE_GLOB = f"**/{DEFAULT_TRACE_FILE}"
FIX_ALL_KIND = "source.fixAll.gradfix"
#: Quiet time after a change before linting (a burst of keystrokes is linted once).
DEBOUNCE = 0.02
#: Quiet time before the exact whole-buffer lint that follows a fast one.
EXACT_DELAY = 0.4
#: A buffer whose whole lint took less than this is always linted whole.
CHEAP_LINT = 0.1
#: Before the first lint: buffers up to this many lines count as cheap.
CHEAP_LINES = 100
#: Quiet time after a lint before the fixes of the definitions it did not touch are looked at
#: (a code-action request that follows the diagnostics goes first).
AHEAD_DELAY = 0.05
#: Fix-all waits for at most this many definitions' shares; with more missing (right after
#: opening a long file, or after an edit to the module-level statements) the engine's own
#: run on the whole buffer is faster, and the shares keep being computed ahead for next time.
FIX_ALL_MISSING = int(os.environ.get("GRADFIX_LSP_FIX_ALL_MISSING", "8"))
#: Larger buffers are not linted (as `gradfix check` skips files over 10 MiB).
MAX_CHARS = 10 * 1024 * 1024


@functools.lru_cache(maxsize=None)
def _local_docs() -> Optional[str]:
    """A file:// URI of docs/rules.md when gradfix runs from its source tree (an editable install)."""
    path = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
    return path.as_uri() if path.is_file() else None


class Lane:
    """One daemon worker thread; results come back as asyncio futures.

    With a :class:`~gradfix.lsp.worker.Worker`, the thread hands each job to that
    process and waits (without the GIL); if the process dies, the job runs here.
    """

    def __init__(self, name: str, worker: Optional[Worker] = None) -> None:
        self.worker = worker
        self._queue: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return future

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        if self.worker is not None:
            try:
                return self.worker.call(fn, *args)
            except WorkerCrashed:
                if self.worker.closed:
                    raise
                logger.exception("the worker process failed; running the job in the server")
        return fn(*args)

    def _run(self) -> None:
        while True:
            loop, future, fn, args = self._queue.get()
            if future.cancelled():  # nobody waits for it any more
                continue
            try:
                result, error = self._call(fn, args), None
            except BaseException as failure:  # noqa: BLE001 - handed to the waiting coroutine
                result, error = None, failure
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the event loop is closed: the server is exiting
                return


def _settle(future: "asyncio.Future[Any]", result: Any, error: Optional[BaseException]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass(eq=False)
class Document:
    uri: str
    path: Optional[str]
    version: int
    text: str
    settings: DocumentSettings
    generation: int = 0  # bumped by every change of text or settings
    outcome: Optional[analysis.LintOutcome] = None  # the newest lint (maybe of an older generation)
    whole_cost: Optional[float] = None  # seconds the last whole-buffer lint took
    closed: bool = False
    timer: Optional[asyncio.TimerHandle] = None
    exact_timer: Optional[asyncio.TimerHandle] = None
    ahead_timer: Optional[asyncio.TimerHandle] = None
    lint_task: Optional["asyncio.Task[None]"] = None
    exact_task: Optional["asyncio.Task[None]"] = None
    exact_again: bool = False
    waiters: list["asyncio.Future[None]"] = field(default_factory=list)
    published: Optional[tuple] = None  # (generation, diagnostics key) last published
    result_id: str = ""
    result_count: int = 0
    pulled_generation: Optional[int] = None
    # quick fixes computed ahead, in the worker process, when the editor lists the actions
    prefetched: dict[tuple, "asyncio.Future[Any]"] = field(default_factory=dict)
    _index: Optional[TextIndex] = None

    def current(self) -> Optional[analysis.LintOutcome]:
        """The lint of the buffer as it is now, if there is one yet."""
        outcome = self.outcome
        return outcome if outcome is not None and outcome.version == self.generation else None

    def index(self, text: str, encoding: str) -> TextIndex:
        if self._index is None or self._index.text is not text or self._index.encoding != encoding:
            self._index = TextIndex(text, encoding)
        return self._index

    @property
    def engine_path(self) -> str:
        return self.path or self.uri

    @property
    def expensive(self) -> bool:
        if self.whole_cost is not None:
            return self.whole_cost >= CHEAP_LINT
        return self.text.count("\n") > CHEAP_LINES


_IGNORED = object()  # a request already answered with an error


class GradfixProtocol(LanguageServerProtocol):
    """Keeps documents in the server's own store (LSP line breaks, any position encoding),
    and answers a request whose parameters cannot be read with an error (pygls drops it)."""

    _server: "GradfixServer"

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if isinstance(data, dict) and "id" in data and "method" in data:
                self._send_response(data["id"], None, error.to_response_error())
                return _IGNORED
            raise

    def handle_message(self, message: Any) -> None:
        if message is _IGNORED:
            return
        super().handle_message(message)

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None


class GradfixServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("gradfix", __version__, protocol_cls=GradfixProtocol)
        self.documents: dict[str, Document] = {}
        self.init_options = ClientOptions()
        self.workspace_options = ClientOptions()
        self.options = ClientOptions()
        self.encoding = UTF16
        self.push = True
        self.lazy_edits = False
        self.document_changes = False
        self.refresh_support = False
        self.pull_configuration = False
        self.root: Optional[str] = None
        self.shown: set[str] = set()
        self.pending_messages: list[str] = []
        self._fast: Optional[Lane] = None
        self._full: Optional[Lane] = None
        self._fixes: Optional[Lane] = None
        self._ahead: Optional[Lane] = None
        self._workers_started = False
        self.store = FixStore()
        self.traces = TraceFiles()

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors outside a request go to the log, not to pop-ups; unreadable JSON gets a parse error."""
        if isinstance(error, json.JSONDecodeError):
            self.protocol._send_response(None, None, JsonRpcParseError(str(error)).to_response_error())  # type: ignore[arg-type]
        message = f"gradfix lsp: {type(error).__name__}: {error}"
        logger.error(message)
        try:
            self.window_log_message(types.LogMessageParams(type=types.MessageType.Error, message=message))
        except Exception:  # pragma: no cover - the writer itself failed
            pass

    # -- lanes --------------------------------------------------------------------------

    @property
    def fast(self) -> Lane:
        if self._fast is None:
            self._fast = Lane("gradfix-fast")
        return self._fast

    @property
    def full(self) -> Lane:
        if self._full is None:
            self._full = Lane("gradfix-full", Worker(niceness=10))
        return self._full

    @property
    def fixes(self) -> Lane:
        """Quick fixes computed ahead: a worker process of their own, never queued behind a whole-file lint."""
        if self._fixes is None:
            self._fixes = Lane("gradfix-fixes", Worker())
        return self._fixes

    @property
    def ahead(self) -> Lane:
        """Fixes computed ahead for a long buffer: low CPU priority, never in the way of a lint or a request."""
        if self._ahead is None:
            self._ahead = Lane("gradfix-ahead", Worker(niceness=10))
        return self._ahead

    def start_workers(self) -> None:
        """Start the worker processes before they are needed: their imports take a second."""
        if self._workers_started:
            return
        self._workers_started = True
        for lane in (self.full, self.fixes, self.ahead):
            if lane.worker is not None:
                threading.Thread(target=lane.worker.start, name="gradfix-worker-start", daemon=True).start()

    def lane_for(self, doc: Document) -> Lane:
        return self.full if doc.expensive else self.fast

    # -- messages -----------------------------------------------------------------------

    def tell(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """Show a message once (configuration problems, internal errors)."""
        self.window_log_message(types.LogMessageParams(type=kind, message=message))
        if message not in self.shown:
            self.shown.add(message)
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    # -- settings -------------------------------------------------------------------------

    def set_options(self, init: Optional[ClientOptions] = None, workspace: Optional[ClientOptions] = None) -> None:
        if init is not None:
            self.init_options = init
        if workspace is not None:
            self.workspace_options = workspace
        merged = {
            name: getattr(self.workspace_options, name)
            if getattr(self.workspace_options, name) is not None
            else getattr(self.init_options, name)
            for name in ClientOptions.__dataclass_fields__
        }
        self.options = ClientOptions(**merged)

    def read_options(self, raw: Any) -> ClientOptions:
        """Parse the editor's settings; bad values are shown, unknown keys logged."""
        options, errors = parse_client_options(raw)
        for message in errors:
            self.tell(message)
        unknown = unknown_keys(raw)
        if unknown:
            logger.info("gradfix settings: not read by the server: %s", ", ".join(map(repr, unknown)))
        return options

    def settings_for(self, path: Optional[str]) -> DocumentSettings:
        settings = resolve(path, self.root, self.options)
        for message in settings.messages:
            self.tell(message)
        return settings

    def docs_href(self, finding: Finding | TraceFinding) -> Optional[str]:
        rule = RULES_BY_CODE.get(finding.code)
        anchor = f"{finding.code.lower()}-{rule.name if rule is not None else finding.name}"
        base = self.options.docs_base_url or _local_docs()
        if not base:
            return None
        return base.split("#", 1)[0] + "#" + anchor

    def refresh_settings(self, docs: Optional[Sequence[Document]] = None, force: bool = False) -> None:
        """Re-read each document's settings; re-lint those whose settings changed."""
        for doc in list(docs if docs is not None else self.documents.values()):
            settings = self.settings_for(doc.path)
            if force or settings != doc.settings:
                doc.settings = settings
                doc.generation += 1
                self.schedule(doc, 0)
        if self.refresh_support and not self.push:
            self.workspace_diagnostic_refresh(None)

    async def pull_workspace_configuration(self) -> None:
        if not self.pull_configuration:
            return
        try:
            values = await self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section="gradfix")])
            )
        except Exception as error:  # a client that fails the request keeps the current settings
            logger.warning("workspace/configuration failed: %s", error)
            return
        raw = values[0] if values else None
        if isinstance(raw, dict):
            self.set_options(workspace=self.read_options(raw))

    # -- linting ----------------------------------------------------------------------------

    def schedule(self, doc: Document, delay: float = DEBOUNCE) -> None:
        if doc.timer is not None:
            doc.timer.cancel()
        loop = asyncio.get_running_loop()
        doc.timer = loop.call_later(delay, self._start_lint, doc)

    def _start_lint(self, doc: Document) -> None:
        doc.timer = None
        if doc.closed:
            return
        if doc.lint_task is None or doc.lint_task.done():
            doc.lint_task = asyncio.get_running_loop().create_task(self._lint_loop(doc))

    async def _lint_loop(self, doc: Document) -> None:
        while not doc.closed and doc.current() is None:
            generation, text, settings = doc.generation, doc.text, doc.settings
            try:
                if settings.excluded or len(text) > MAX_CHARS:
                    if len(text) > MAX_CHARS and not settings.excluded:
                        self.tell(f"{doc.engine_path}: not linted: larger than {MAX_CHARS // (1024 * 1024)} MiB")
                    outcome = analysis.LintOutcome(generation, text, settings.lint)
                elif not doc.expensive:
                    outcome = await self.fast.submit(analysis.exact_lint, generation, text, doc.engine_path, settings.lint)
                elif doc.outcome is not None and doc.outcome.cache and doc.outcome.settings == settings.lint:
                    outcome = await self.fast.submit(
                        analysis.fast_lint, generation, text, doc.engine_path, settings.lint, doc.outcome
                    )
                else:
                    outcome = await self.full.submit(analysis.exact_lint, generation, text, doc.engine_path, settings.lint)
            except Exception as error:  # pragma: no cover - the analysis functions catch engine errors
                logger.exception("lint failed")
                outcome = analysis.LintOutcome(generation, text, settings.lint, internal_error=str(error))
            self.accept(doc, outcome)

    def accept(self, doc: Document, outcome: analysis.LintOutcome) -> None:
        """Keep a finished lint; publish it if it is of the current text."""
        if doc.closed:
            return
        if outcome.exact and outcome.linted_lines:
            doc.whole_cost = outcome.elapsed
        if outcome.version == doc.generation and outcome.text == doc.text:
            outcome.text = doc.text  # the same object: position indexes are cached by identity
        previous = doc.outcome
        newer = previous is None or outcome.version > previous.version
        better = previous is not None and outcome.version == previous.version and outcome.exact and not previous.exact
        if newer or better:
            doc.outcome = outcome  # a stale one is still worth its cache
        if outcome is not doc.outcome or outcome.version != doc.generation:
            return
        if outcome.internal_error:
            self.tell(f"gradfix: internal error on {doc.engine_path}: {outcome.internal_error}", types.MessageType.Error)
        self.fixes_ahead(doc, outcome, fresh_only=True)  # the definition just edited: its fixes first
        self.publish(doc, outcome)
        for waiter in doc.waiters:
            if not waiter.done():
                waiter.set_result(None)
        doc.waiters.clear()
        if not outcome.exact:
            self.schedule_exact(doc)
        if doc.ahead_timer is not None:
            doc.ahead_timer.cancel()
        doc.ahead_timer = asyncio.get_running_loop().call_later(AHEAD_DELAY, self._fixes_ahead_later, doc)

    def _fixes_ahead_later(self, doc: Document) -> None:
        doc.ahead_timer = None
        outcome = doc.current()
        if outcome is not None and not doc.closed:
            self.fixes_ahead(doc, outcome)

    def schedule_exact(self, doc: Document) -> None:
        if doc.exact_timer is not None:
            doc.exact_timer.cancel()
        doc.exact_timer = asyncio.get_running_loop().call_later(EXACT_DELAY, self._start_exact, doc)

    def _start_exact(self, doc: Document) -> None:
        doc.exact_timer = None
        if doc.closed:
            return
        if doc.exact_task is not None and not doc.exact_task.done():
            doc.exact_again = True
            return
        doc.exact_task = asyncio.get_running_loop().create_task(self._exact_loop(doc))

    async def _exact_loop(self, doc: Document) -> None:
        while not doc.closed:
            doc.exact_again = False
            current = doc.current()
            if current is not None and current.exact:
                return
            generation, text, settings = doc.generation, doc.text, doc.settings.lint
            try:
                outcome = await self.full.submit(analysis.exact_lint, generation, text, doc.engine_path, settings)
            except Exception as error:  # the worker was closed at shutdown, or failed twice
                logger.warning("whole-buffer lint failed: %s", error)
                return
            self.accept(doc, outcome)
            if not doc.exact_again:
                return

    async def current_outcome(self, doc: Document) -> Optional[analysis.LintOutcome]:
        """The lint of the buffer's current text, linting now if needed (no debounce)."""
        while not doc.closed:
            outcome = doc.current()
            if outcome is not None:
                return outcome
            if doc.timer is not None:
                doc.timer.cancel()
                doc.timer = None
            self._start_lint(doc)
            waiter = asyncio.get_running_loop().create_future()
            doc.waiters.append(waiter)
            await waiter
        return None

    # -- diagnostics ------------------------------------------------------------------------

    def visible(self, outcome: analysis.LintOutcome) -> list[Finding]:
        lowest = analysis.level_rank(outcome.settings.level)
        return [f for f in outcome.findings if analysis.level_rank(getattr(f, "level", None)) >= lowest]

    def finding_range(self, doc: Document, outcome: analysis.LintOutcome, finding: Finding | TraceFinding) -> types.Range:
        index = doc.index(outcome.text, self.encoding)
        start = index.position_of_code_point(finding.line - 1, finding.col - 1)
        end = index.position_of_code_point(finding.end_line - 1, finding.end_col - 1)
        return types.Range(types.Position(start.line, start.character), types.Position(end.line, end.character))

    def diagnostic(self, doc: Document, outcome: analysis.LintOutcome, finding: Finding) -> types.Diagnostic:
        href = self.docs_href(finding)
        level = analysis.level_rank(getattr(finding, "level", None))
        return types.Diagnostic(
            range=self.finding_range(doc, outcome, finding),
            message=finding.message,
            severity=types.DiagnosticSeverity.Error if level == 2 else types.DiagnosticSeverity.Warning,
            code=finding.code,
            code_description=types.CodeDescription(href=href) if href else None,
            source=SOURCE,
            data={
                "fixSafety": finding.fix_safety.value,
                "fixTitle": finding.fix_title,
                "level": str(getattr(finding, "level", None) or "warning"),
            },
        )

    def diagnostics(self, doc: Document, outcome: analysis.LintOutcome) -> list[types.Diagnostic]:
        error = outcome.syntax_error
        if error is not None:
            index = doc.index(outcome.text, self.encoding)
            line = max(0, min(error.line - 1, index.line_count - 1))
            content = index.line_content(line)
            column = max(0, min(error.col - 1, len(content)))
            start = index.position_of_code_point(line, column)
            end = index.position_of_code_point(line, min(column + 1, len(content)))
            return [
                types.Diagnostic(
                    range=types.Range(types.Position(start.line, start.character), types.Position(end.line, end.character)),
                    message=f"syntax error: {error.message}",
                    severity=types.DiagnosticSeverity.Error,
                    source=SOURCE,
                )
            ] + self.trace_diagnostics(doc, outcome)
        return [self.diagnostic(doc, outcome, f) for f in self.visible(outcome)] + self.trace_diagnostics(doc, outcome)

    def trace_diagnostics(self, doc: Document, outcome: analysis.LintOutcome) -> list[types.Diagnostic]:
        """The findings a trace file names in this document, where its text still has their lines.

        No code action is tied to them: the engine's diagnostic on the same line has the quick fix.
        """
        trace_file = doc.settings.trace_file
        if doc.path is None or trace_file is None or doc.settings.excluded:
            return []
        trace = self.traces.get(trace_file)
        if trace.warning is not None and trace.warning not in self.shown:
            self.tell(trace.warning)  # once per problem, not at every lint
        diagnostics = []
        for finding in trace.for_document(doc.path, outcome.text):
            href = self.docs_href(finding) if finding.code in RULES_BY_CODE else None
            diagnostics.append(
                types.Diagnostic(
                    range=self.finding_range(doc, outcome, finding),
                    message=f"[{finding.title}] {finding.message}",
                    severity=types.DiagnosticSeverity.Error,
                    code=finding.code,
                    code_description=types.CodeDescription(href=href) if href else None,
                    source=TRACE_SOURCE,
                )
            )
        return diagnostics

    def show_traces_again(self) -> None:
        """A trace file changed: publish the diagnostics again (the lints still hold; unchanged ones are not sent)."""
        for doc in list(self.documents.values()):
            outcome = doc.current()
            if outcome is not None:
                self.publish(doc, outcome)

    def publish(self, doc: Document, outcome: analysis.LintOutcome) -> None:
        diagnostics = self.diagnostics(doc, outcome)
        key = (outcome.version, tuple(_diagnostic_key(d) for d in diagnostics))
        if doc.published == key:
            return
        doc.published = key
        doc.result_count += 1
        doc.result_id = f"{doc.generation}.{doc.result_count}"
        if self.push:
            self.text_document_publish_diagnostics(
                types.PublishDiagnosticsParams(uri=doc.uri, version=doc.version, diagnostics=diagnostics)
            )
        elif doc.pulled_generation == outcome.version and self.refresh_support:
            # The client already pulled this text (the fast lint's result); the exact one differs.
            self.workspace_diagnostic_refresh(None)

    # -- code actions -----------------------------------------------------------------------

    def workspace_edit(self, doc: Document, text: str, edits: Sequence[Edit]) -> types.WorkspaceEdit:
        index = doc.index(text, self.encoding)
        text_edits = []
        for edit in edits:
            start, end = index.position(edit.start), index.position(edit.end)
            text_edits.append(
                types.TextEdit(
                    range=types.Range(types.Position(start.line, start.character), types.Position(end.line, end.character)),
                    new_text=edit.new_text,
                )
            )
        if self.document_changes:
            return types.WorkspaceEdit(
                document_changes=[
                    types.TextDocumentEdit(
                        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
                        edits=text_edits,
                    )
                ]
            )
        return types.WorkspaceEdit(changes={doc.uri: text_edits})

    def noqa_edit(self, outcome: analysis.LintOutcome, finding: Finding) -> Optional[Edit]:
        found = outcome.layout
        span = found.statement_at(finding.line - 1) if found is not None else None
        if found is not None and span is not None:
            start, end = span
            offset = sum(len(line) for line in found.lines[:start])
            sites = CommentSites("".join(found.lines[start:end]), first_line=start + 1, first_offset=offset)
        else:
            sites = CommentSites(outcome.text)
        return sites.noqa_edit(finding.line, [finding.code])

    def prefetch_fix(self, doc: Document, outcome: analysis.LintOutcome, finding: Finding) -> None:
        """Start computing a quick fix in the worker process while the editor shows the actions.

        The worker does not share the server's GIL, so this costs the protocol and the
        fast lane nothing; a person takes longer to choose than the fix takes to compute.
        """
        if doc.expensive and outcome.layout is not None:
            focus = analysis.focus_for(outcome.layout, finding, outcome.findings)
            if focus is not None:
                self.focus_job(doc, outcome, focus, focus.local_of(finding))
                return
        key = (outcome.version, *_finding_id(finding))
        if key in doc.prefetched:
            return
        for old in [k for k in doc.prefetched if k[0] != outcome.version]:
            doc.prefetched.pop(old).cancel()  # an older text's: not needed any more
        future = self.fixes.submit(
            analysis.quick_fix, outcome.text, doc.engine_path, finding, outcome.findings, outcome.settings,
            outcome.layout, outcome.exact,
        )
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # failures fall back, unreported
        doc.prefetched[key] = future

    async def resolved_fix(self, doc: Document, outcome: analysis.LintOutcome, finding: Finding) -> Optional[analysis.SingleFix]:
        """A fix computed ahead if there is one, else computed now."""
        text, path, settings = outcome.text, doc.engine_path, outcome.settings
        if doc.expensive and outcome.layout is not None:
            focused, fix = await self.focused_quick_fix(doc, outcome, finding)
            if focused and fix is not None:
                return fix
            # No fix on the definition alone although the finding is fixable: rare (a job computed
            # for an outcome that was not exact yet); the whole buffer decides.
        else:
            future = doc.prefetched.get((outcome.version, *_finding_id(finding)))
            if future is not None and not future.cancelled():
                try:
                    return await asyncio.shield(future)  # computing it again here would only compete with it
                except Exception:  # the worker failed: compute it here
                    pass
        known = outcome.findings if outcome.exact else None
        return await self.lane_for(doc).submit(analysis.single_fix, text, path, finding, known, settings)

    async def fix_all(self, doc: Document, outcome: analysis.LintOutcome) -> list[Edit]:
        if not doc.expensive:
            return await self.fast.submit(analysis.fix_all, outcome.text, doc.engine_path, outcome.settings)
        edits = await self.fix_all_by_focus(doc, outcome)
        if edits is not None:
            return edits
        # Someone waits for it: normal CPU priority, not behind a whole-buffer lint or the work done ahead.
        return await self.fixes.submit(analysis.fix_all, outcome.text, doc.engine_path, outcome.settings)

    # -- fixes one definition at a time (long buffers) -----------------------------------------

    def focus_job(
        self,
        doc: Document,
        outcome: analysis.LintOutcome,
        focus: analysis.Focus,
        target: Optional[Finding] = None,
        fix_all: bool = False,
    ) -> None:
        """Have ``target``'s quick fix (and the fix-all share) on ``focus`` computed by a lane
        that is not behind the fixes computed ahead, unless it is known or on its way there."""
        path, settings = doc.engine_path, outcome.settings
        key = focus.key(path, settings)
        ident = analysis.fix_identity(target) if target is not None else None
        if self.store.known(key, ident, fix_all):
            return
        job = self.store.job(key, ident, fix_all, background=False)
        if job is not None:
            job.urgent = True
            return
        # A job for it may be queued in the ahead lane: whichever lane gets there first wins.
        targets = [target] if target is not None else []
        self._submit(self.fixes, key, focus, path, settings, targets, fix_all, True, bool(self.store.verified(key)))

    def _submit(
        self, lane: Lane, key: tuple, focus: analysis.Focus, path: str, settings: Any, targets: list[Finding],
        fix_all: bool, urgent: bool, verified: bool,
    ) -> Job:
        future = lane.submit(analysis.focus_fixes, focus.text, path, list(focus.local), settings, targets, fix_all, verified)
        future.add_done_callback(_log_failure)
        identities = frozenset(analysis.fix_identity(t) for t in targets)
        job = Job(key, identities, fix_all, urgent, lane is self._ahead, future)
        self.store.add(job)
        return job

    async def focused_quick_fix(
        self, doc: Document, outcome: analysis.LintOutcome, finding: Finding
    ) -> tuple[bool, Optional[analysis.SingleFix]]:
        """(True, the fix) when computed on ``finding``'s definition; (False, None): the whole buffer is needed."""
        found = outcome.layout
        focus = analysis.focus_for(found, finding, outcome.findings)
        local = focus.local_of(finding) if focus is not None else None
        if focus is None or local is None or found is None:
            return False, None
        key = focus.key(doc.engine_path, outcome.settings)
        ident = analysis.fix_identity(local)
        self.focus_job(doc, outcome, focus, local)
        await self.store.settled(key, ident)
        state, fix = self.store.quick(key, ident)
        if state != DONE or fix is None:
            return False, None
        edits = focus.to_buffer(fix.edits, found)
        if edits is None:
            return False, None
        return True, analysis.SingleFix(edits, fix.companions)

    async def fix_all_by_focus(self, doc: Document, outcome: analysis.LintOutcome) -> Optional[list[Edit]]:
        """Fix-all from each definition's share (kept, or computed now); None: the whole buffer is needed."""
        found = outcome.layout
        plan = analysis.fix_all_plan(outcome.findings, found, outcome.settings)
        if plan is None or found is None:
            return None
        keys = [focus.key(doc.engine_path, outcome.settings) for focus in plan]
        if sum(not self.store.known(key, fix_all=True) for key in keys) > FIX_ALL_MISSING:
            return None
        # The ahead lane works through its queue from the top of the buffer; the fixes lane starts
        # from the bottom, so the two meet in the middle.
        for focus in reversed(plan):
            fixable = [f for f in focus.local if f.fixable]
            # a definition's only quick fix is usually its fix-all share too: the same run gives both
            self.focus_job(doc, outcome, focus, fixable[0] if len(fixable) == 1 else None, fix_all=True)
        parts = []
        for focus, key in zip(plan, keys):
            await self.store.settled(key, fix_all=True)
            state, edits = self.store.fix_all(key)
            if state != DONE:
                return None
            mapped = focus.to_buffer(edits, found)  # type: ignore[arg-type]
            if mapped is None:
                return None
            parts.append(mapped)
        return analysis.merge_edits(parts)

    def fixes_ahead(self, doc: Document, outcome: analysis.LintOutcome, fresh_only: bool = False) -> None:
        """After a lint of a long buffer: compute the fixes nobody has asked for yet, in the background.

        The definitions the lint has just re-linted go first, to the fixes lane (their
        findings came from the engine on that definition alone: no check needed); the
        others (unless ``fresh_only``) to the ahead lane.
        """
        found = outcome.layout
        if not doc.expensive or found is None or len(found.chunks) < 2 or outcome.syntax_error or outcome.internal_error:
            return
        path, settings = doc.engine_path, outcome.settings
        holding: dict[int, analysis.Chunk] = {}
        for finding in outcome.findings:
            if finding.fixable:
                chunk = found.chunk_at(finding.line - 1)
                if chunk is not None:
                    holding.setdefault(chunk.start, chunk)
        dirty = set(outcome.dirty)
        keep: set[tuple] = set()
        for chunk in sorted(holding.values(), key=lambda c: c.start not in dirty):
            if fresh_only and chunk.start not in dirty:
                break
            focus = analysis.focus_of(found, chunk, outcome.findings)
            key = focus.key(path, settings)
            keep.add(key)
            targets = [
                f for f in focus.local
                if f.fixable
                and not self.store.known(key, analysis.fix_identity(f))
                and self.store.job(key, analysis.fix_identity(f)) is None
            ]
            want_fix_all = (
                any(analysis.fixed_by_run(f, settings.unsafe_fixes, settings.fix_level) for f in focus.local)
                and not self.store.known(key, fix_all=True)
                and self.store.job(key, fix_all=True) is None
            )
            if not targets and not want_fix_all:
                continue
            fresh = chunk.start in dirty
            # a fast lint of this definition alone: the engine's findings on it are these
            verified = bool(self.store.verified(key)) or (fresh and not outcome.exact and len(dirty) == 1)
            if fresh and len(targets) > 1:
                # any one of them may be asked for at once: a job each, the fix-all share last
                for target in targets:
                    self._submit(self.fixes, key, focus, path, settings, [target], False, False, verified)
                if want_fix_all:
                    self._submit(self.fixes, key, focus, path, settings, [], True, False, verified)
            else:
                lane = self.fixes if fresh else self.ahead
                self._submit(lane, key, focus, path, settings, targets, want_fix_all, False, verified)
        if not fresh_only:
            self.store.cancel_ahead(path, keep)


def _log_failure(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("a fix on one definition failed: %s", future.exception())


def _diagnostic_key(diagnostic: types.Diagnostic) -> tuple:
    r = diagnostic.range
    return (r.start.line, r.start.character, r.end.line, r.end.character, diagnostic.code, diagnostic.severity, diagnostic.message)


def _wants(kind: str, only: Optional[Sequence[str]]) -> bool:
    if not only:
        return True
    return any(kind == wanted or kind.startswith(wanted + ".") for wanted in only)


def _overlaps(a: types.Range, b: types.Range) -> bool:
    def key(p: types.Position) -> tuple[int, int]:
        return (p.line, p.character)

    return key(a.start) <= key(b.end) and key(b.start) <= key(a.end)


def _finding_id(finding: Finding) -> list:
    return [finding.code, finding.line, finding.col, finding.end_line, finding.end_col]


def _capability(obj: Any, *names: str) -> Any:
    for name in names:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def create_server() -> GradfixServer:
    server = GradfixServer()

    @server.feature(types.INITIALIZE)
    def initialize(ls: GradfixServer, params: types.InitializeParams) -> None:
        caps = params.capabilities
        encoding = ls.workspace.position_encoding
        ls.encoding = {types.PositionEncodingKind.Utf8: UTF8, types.PositionEncodingKind.Utf32: UTF32}.get(
            encoding, UTF16  # type: ignore[arg-type]
        )
        ls.push = _capability(caps, "text_document", "diagnostic") is None
        ls.refresh_support = bool(_capability(caps, "workspace", "diagnostics", "refresh_support"))
        properties = _capability(caps, "text_document", "code_action", "resolve_support", "properties") or []
        ls.lazy_edits = "edit" in properties
        ls.document_changes = bool(_capability(caps, "workspace", "workspace_edit", "document_changes"))
        ls.pull_configuration = bool(_capability(caps, "workspace", "configuration"))
        if params.workspace_folders:
            ls.root = to_fs_path(params.workspace_folders[0].uri)
        elif params.root_uri:
            ls.root = to_fs_path(params.root_uri)
        elif params.root_path:
            ls.root = params.root_path
        options, errors = parse_client_options(params.initialization_options)
        ls.pending_messages.extend(errors)  # shown once the client is initialized
        ls.set_options(init=options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: GradfixServer, params: types.InitializedParams) -> None:
        for message in ls.pending_messages:
            ls.tell(message)
        ls.pending_messages.clear()
        if _capability(ls.client_capabilities, "workspace", "did_change_watched_files", "dynamic_registration"):
            try:
                ls.client_register_capability(
                    types.RegistrationParams(
                        registrations=[
                            types.Registration(
                                id="gradfix-pyproject",
                                method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                                register_options=types.DidChangeWatchedFilesRegistrationOptions(
                                    watchers=[
                                        types.FileSystemWatcher(glob_pattern="**/pyproject.toml"),
                                        types.FileSystemWatcher(glob_pattern=TRACE_GLOB),
                                    ]
                                ),
                            )
                        ]
                    )
                )
            except Exception:  # pragma: no cover - optional
                logger.warning("could not register a pyproject.toml watcher")
        before = ls.options
        await ls.pull_workspace_configuration()
        if ls.options != before:
            ls.refresh_settings()

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: GradfixServer, params: None) -> None:
        for doc in ls.documents.values():
            _close(doc)
        ls.store.cancel_all()
        for lane in (ls._full, ls._fixes, ls._ahead):
            if lane is not None and lane.worker is not None:
                lane.worker.close()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: GradfixServer, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        old = ls.documents.pop(item.uri, None)
        if old is not None:
            _close(old)
        path = to_fs_path(item.uri) if item.uri.startswith("file:") else None
        doc = Document(item.uri, path, item.version, item.text, ls.settings_for(path))
        ls.documents[item.uri] = doc
        if doc.expensive:  # long buffers use the worker processes: start them now
            ls.start_workers()
        ls.schedule(doc, 0)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: GradfixServer, params: types.DidChangeTextDocumentParams) -> None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            logger.warning("didChange for a document that is not open: %s", params.text_document.uri)
            return
        text = doc.text
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                index = TextIndex(text, ls.encoding)
                start = index.offset(_position(change.range.start))
                end = index.offset(_position(change.range.end))
                start, end = min(start, end), max(start, end)
                text = text[:start] + change.text + text[end:]
            else:
                text = change.text
        doc.text = text
        doc.version = params.text_document.version
        doc.generation += 1
        ls.schedule(doc)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: GradfixServer, params: types.DidSaveTextDocumentParams) -> None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            if params.text_document.uri.endswith("pyproject.toml"):
                ls.refresh_settings()
            return
        settings = ls.settings_for(doc.path)
        if settings != doc.settings:
            doc.settings = settings
            doc.generation += 1
            ls.schedule(doc, 0)
            return
        outcome = doc.current()
        if outcome is not None and ls.push:
            doc.published = None  # pushed again on save
            ls.publish(doc, outcome)
        elif outcome is None:
            ls.schedule(doc, 0)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: GradfixServer, params: types.DidCloseTextDocumentParams) -> None:
        doc = ls.documents.pop(params.text_document.uri, None)
        if doc is None:
            return
        _close(doc)
        ls.store.cancel_ahead(doc.engine_path, set())
        if ls.push:
            ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=doc.uri, diagnostics=[]))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: GradfixServer, params: types.DidChangeConfigurationParams) -> None:
        raw = params.settings
        section = raw.get("gradfix") if isinstance(raw, dict) and "gradfix" in raw else raw
        if isinstance(section, dict) and section:
            ls.set_options(workspace=ls.read_options(section))
        else:
            await ls.pull_workspace_configuration()
        ls.refresh_settings(force=True)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: GradfixServer, params: types.DidChangeWatchedFilesParams) -> None:
        if any(change.uri.endswith("pyproject.toml") for change in params.changes):
            ls.refresh_settings()
        if any(change.uri.endswith(".json") for change in params.changes):
            ls.show_traces_again()

    @server.feature(
        types.TEXT_DOCUMENT_DIAGNOSTIC,
        types.DiagnosticOptions(identifier=SOURCE, inter_file_dependencies=False, workspace_diagnostics=False),
    )
    async def pull_diagnostics(ls: GradfixServer, params: types.DocumentDiagnosticParams):
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            return types.RelatedFullDocumentDiagnosticReport(items=[])
        outcome = await ls.current_outcome(doc)
        if outcome is None:
            return types.RelatedFullDocumentDiagnosticReport(items=[])
        diagnostics = ls.diagnostics(doc, outcome)
        ls.publish(doc, outcome)  # assigns the result id (nothing is pushed to a pull client)
        doc.pulled_generation = outcome.version
        if params.previous_result_id and params.previous_result_id == doc.result_id:
            return types.RelatedUnchangedDocumentDiagnosticReport(result_id=doc.result_id)
        return types.RelatedFullDocumentDiagnosticReport(items=diagnostics, result_id=doc.result_id)

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[types.CodeActionKind.QuickFix, FIX_ALL_KIND],
            resolve_provider=True,
        ),
    )
    async def code_action(ls: GradfixServer, params: types.CodeActionParams):
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            return []
        outcome = await ls.current_outcome(doc)
        if outcome is None or outcome.syntax_error is not None or outcome.internal_error:
            return []
        only = params.context.only
        settings = outcome.settings
        fixes: list[types.CodeAction] = []
        silencers: list[types.CodeAction] = []
        if _wants(types.CodeActionKind.QuickFix, only):
            first, last = params.range.start.line, params.range.end.line
            for finding in ls.visible(outcome):
                if finding.end_line - 1 < first or finding.line - 1 > last:
                    continue
                diagnostic = ls.diagnostic(doc, outcome, finding)
                if not _overlaps(diagnostic.range, params.range):
                    continue
                if finding.fixable:
                    action = await _fix_action(ls, doc, outcome, finding, diagnostic)
                    if action is not None:
                        fixes.append(action)
                edit = ls.noqa_edit(outcome, finding)
                if edit is not None:
                    silencers.append(
                        types.CodeAction(
                            title=f"Disable {finding.code} for this line",
                            kind=types.CodeActionKind.QuickFix,
                            diagnostics=[diagnostic],
                            edit=ls.workspace_edit(doc, outcome.text, [edit]),
                        )
                    )
        actions = fixes + silencers
        if _wants(FIX_ALL_KIND, only) and any(
            analysis.fixed_by_run(f, settings.unsafe_fixes, settings.fix_level) for f in outcome.findings
        ):
            title = "gradfix: fix all" + (" (unsafe fixes included)" if settings.unsafe_fixes else " safe fixes")
            action = types.CodeAction(
                title=title, kind=FIX_ALL_KIND, data={"uri": doc.uri, "generation": outcome.version, "kind": "fixAll"}
            )
            if not ls.lazy_edits:
                edits = await ls.fix_all(doc, outcome)
                if not edits:
                    return actions
                action.edit = ls.workspace_edit(doc, outcome.text, edits)
                action.data = None
            actions.append(action)
        return actions

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve_code_action(ls: GradfixServer, action: types.CodeAction) -> types.CodeAction:
        data = action.data if isinstance(action.data, dict) else {}
        doc = ls.documents.get(data.get("uri", ""))
        if doc is None or doc.generation != data.get("generation"):
            raise JsonRpcContentModified("the document changed since the code action was computed")
        outcome = await ls.current_outcome(doc)
        if outcome is None or outcome.version != data.get("generation"):
            raise JsonRpcContentModified("the document changed since the code action was computed")
        if data.get("kind") == "fixAll":
            edits = await ls.fix_all(doc, outcome)
        elif data.get("kind") == "fix":
            finding = next((f for f in outcome.findings if _finding_id(f) == data.get("finding")), None)
            fix = await ls.resolved_fix(doc, outcome, finding) if finding is not None else None
            edits = fix.edits if fix is not None else []
        else:
            return action
        if doc.generation != data.get("generation"):
            raise JsonRpcContentModified("the document changed while the edit was computed")
        action.edit = ls.workspace_edit(doc, outcome.text, edits)
        return action

    return server


async def _fix_action(
    ls: GradfixServer, doc: Document, outcome: analysis.LintOutcome, finding: Finding, diagnostic: types.Diagnostic
) -> Optional[types.CodeAction]:
    unsafe = finding.fix_safety is FixSafety.UNSAFE
    companions = sum(
        1
        for other in outcome.findings
        if other != finding
        and other.line == finding.line
        and other.code == finding.code
        and analysis.fixed_by_run(other, outcome.settings.unsafe_fixes or unsafe)
    )
    title = finding.fix_title or f"Fix {finding.code}"
    if companions:
        title += f" (with {companions} more {finding.code} {'fix' if companions == 1 else 'fixes'} on this line)"
    if unsafe:
        title += " (unsafe)"
    action = types.CodeAction(
        title=title,
        kind=types.CodeActionKind.QuickFix,
        diagnostics=[diagnostic],
        is_preferred=True if finding.fix_safety is FixSafety.SAFE else None,
        data={"uri": doc.uri, "generation": outcome.version, "kind": "fix", "finding": _finding_id(finding)},
    )
    if ls.lazy_edits:
        ls.prefetch_fix(doc, outcome, finding)
        return action
    fix = await ls.resolved_fix(doc, outcome, finding)
    if fix is None:
        return None
    action.edit = ls.workspace_edit(doc, outcome.text, fix.edits)
    action.data = None
    return action


def _position(position: types.Position):
    from .text import Position

    return Position(position.line, position.character)


def _close(doc: Document) -> None:
    doc.closed = True
    for future in doc.prefetched.values():
        future.cancel()
    doc.prefetched.clear()
    for timer in (doc.timer, doc.exact_timer, doc.ahead_timer):
        if timer is not None:
            timer.cancel()
    for waiter in doc.waiters:
        if not waiter.done():
            waiter.set_result(None)
    doc.waiters.clear()


def main() -> None:
    """Serve over stdin/stdout until the client says exit."""
    create_server().start_io()
