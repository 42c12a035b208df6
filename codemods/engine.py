"""The engine: parse once, run every selected rule in one pass, apply fixes.

Front-ends (CLI, LSP) call :func:`check_source` and :func:`fix_source`; they
read and write files, the engine only sees text.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor

from . import prescreen
from .context import RuleContext
from .cstmeta import read_only_visits, unvalidated_nodes
from .grad_context import enclosing_grad_context, is_grad_buffer
from .model import (
    EnsureImport,
    Finding,
    Fix,
    FixResult,
    FixSafety,
    GradContext,
    InsertBefore,
    Level,
    RemoveStatement,
    ReplaceNode,
    Report,
)
from .rule import Rule
from .rules import ALL_RULES

MAX_FIX_PASSES = 10
NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)


class SourceSyntaxError(Exception):
    """The source does not parse. ``line``/``col`` are 1-based."""

    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col


def select_rules(select: Sequence[str] = (), ignore: Sequence[str] = ()) -> list[Rule]:
    """Rules whose code starts with one of ``select`` (all if empty) and none of ``ignore``."""
    chosen = []
    for rule_class in ALL_RULES:
        code = rule_class.code
        if select and not any(code.startswith(prefix.upper()) for prefix in select):
            continue
        if any(code.startswith(prefix.upper()) for prefix in ignore):
            continue
        chosen.append(rule_class())
    return chosen


def could_have_findings(source: str, rules: Sequence[Rule]) -> bool:
    """A cheap text test before the libcst parse: code that mentions torch and
    contains text that one of the rules needs (``+=``, ``.add_(``, ...)."""
    return prescreen.text_candidate(source, rules)


def _plan(source: str, rules: Sequence[Rule], keep_silenced: bool) -> Optional[prescreen.Plan]:
    """What libcst must analyse (see prescreen.py); None when nothing can be found.

    Its ``ast.parse`` of the whole source is also the syntax check, so a syntax error in a
    definition that libcst then skips is still reported, with CPython's message.
    """
    try:
        tree = ast.parse(source[1:] if source.startswith("\ufeff") else source)
    except SyntaxError as error:
        raise SourceSyntaxError(error.msg, error.lineno or 1, error.offset or 1) from None
    except ValueError as error:  # null bytes
        raise SourceSyntaxError(str(error), 1, 1) from None
    return prescreen.plan(source, rules, keep_silenced, tree=tree)


@dataclass
class _RawReport:
    rule: Rule
    report: Report
    context: Optional[GradContext]
    suppressed_by_noqa: bool


def parse(source: str, piece_starts: Sequence[int] = (), piece_chars: int = prescreen.PIECE_CHARS) -> cst.Module:
    """libcst's module for ``source``; in pieces of about ``piece_chars`` cut at ``piece_starts``
    (prescreen.piece_starts) when there are some, which gives the same module."""
    try:
        with unvalidated_nodes():  # parsed from text: libcst's validation would only check it again
            module = _parse_in_pieces(source, piece_starts, piece_chars) if piece_starts else None
            return module if module is not None else cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        # CPython's message and position are the ones users know; libcst's are the fallback
        # for code CPython accepts and libcst does not.
        _syntax_check_only(source)
        message = str(error.message if hasattr(error, "message") else error).splitlines()[0]
        raise SourceSyntaxError(message, error.raw_line, error.raw_column + 1) from None


def _parse_in_pieces(source: str, starts: Sequence[int], piece_chars: int) -> Optional[cst.Module]:
    """The module libcst parses from ``source``, put together from pieces; None: parse it whole.

    Each piece but the first begins with the lines before a top-level statement, which
    libcst reads as that piece's header: in the whole module they are the statement's
    leading lines. Pieces that read the indentation or line ending differently (a piece
    with no indented block falls back to four spaces) would give other nodes: not used.
    """
    cuts = [0]
    for start in starts:
        if start - cuts[-1] >= piece_chars:
            cuts.append(start)
    if len(cuts) == 1:
        return None
    cuts.append(len(source))
    try:
        pieces = [cst.parse_module(source[a:b]) for a, b in zip(cuts, cuts[1:])]
    except Exception:  # the whole parse reports it with the right position
        return None
    first, last = pieces[0], pieces[-1]
    body: list[cst.BaseStatement] = []
    for number, piece in enumerate(pieces):
        if (piece.default_indent != first.default_indent or piece.default_newline != first.default_newline
                or not piece.body or (piece is not last and (piece.footer or not piece.has_trailing_newline))):
            return None
        statements = list(piece.body)
        if number and piece.header:
            statements[0] = statements[0].with_changes(leading_lines=(*piece.header, *statements[0].leading_lines))
        body.extend(statements)
    return cst.Module(
        body=tuple(body), header=first.header, footer=last.footer, encoding=first.encoding,
        default_indent=first.default_indent, default_newline=first.default_newline,
        has_trailing_newline=last.has_trailing_newline,
    )


def _syntax_check_only(source: str) -> None:
    try:
        ast.parse(source[1:] if source.startswith("\ufeff") else source)  # libcst accepts a BOM too
    except SyntaxError as error:
        raise SourceSyntaxError(error.msg, error.lineno or 1, error.offset or 1) from None
    except ValueError as error:  # null bytes
        raise SourceSyntaxError(str(error), 1, 1) from None


def noqa_lines(source: str) -> dict[int, Optional[frozenset[str]]]:
    """Line -> codes silenced on it (None: every code, a bare ``# noqa``)."""
    result: dict[int, Optional[frozenset[str]]] = {}
    if "noqa" not in source:
        return result
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return result
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        match = NOQA.search(token.string)
        if not match:
            continue
        codes = match.group("codes")
        line = token.start[0]
        if codes is None:
            result[line] = None
        else:
            silenced = frozenset(c.upper() for c in re.split(r"[\s,]+", codes) if c)
            previous = result.get(line, frozenset())
            result[line] = None if previous is None and line in result else silenced | (previous or frozenset())
    return result


def _run_rules(rules: Sequence[Rule], module: cst.Module, proven_lines: frozenset[int],
               source: str) -> tuple[RuleContext, list[tuple[Rule, Report]]]:
    """Each rule's reports on the nodes of its types, met in the order a visit of ``module`` meets
    them (the context's walk collects them: no visit of its own)."""
    dispatch: dict[type, list[Rule]] = {}
    for rule in rules:
        for node_type in rule.node_types:
            dispatch.setdefault(node_type, []).append(rule)
    ctx = RuleContext(module, source=source, collect=frozenset(dispatch))
    ctx.proven_lines = proven_lines
    reports: list[tuple[Rule, Report]] = []
    for node in ctx.collected:
        for rule in dispatch[type(node)]:
            for report in rule.check(node, ctx):
                reports.append((rule, report))
    return ctx, reports


def _analyze(module: cst.Module, rules: Sequence[Rule], source: str,
             proven_lines: frozenset[int] = frozenset()) -> tuple[RuleContext, list[_RawReport]]:
    with read_only_visits():  # the rules' own visitors too: see cstmeta
        ctx, reports = _run_rules(rules, module, proven_lines, source)
        # noqa comments only matter on the lines reported on (tokenizing a long file is not free)
        report_lines = {ctx.line(report.node) for _, report in reports}
        lines = source.split("\n") if report_lines else []  # numbered as tokenize numbers them
        maybe_silenced = any(line <= len(lines) and "noqa" in lines[line - 1] for line in report_lines)
        silenced = noqa_lines(source) if maybe_silenced else {}
        raw: list[_RawReport] = []
        for rule, report in reports:
            context = None if report.ignore_context else enclosing_grad_context(report.node, ctx.parent, ctx.qualified_names)
            if context is None and report.target is not None and is_grad_buffer(report.target):
                context = GradContext.GRAD_BUFFER
            line = ctx.line(report.node)
            codes = silenced.get(line, frozenset())
            by_noqa = line in silenced and (codes is None or rule.code in codes)
            raw.append(_RawReport(rule, report, context, by_noqa))
    raw.sort(key=lambda r: (ctx.position(r.report.node).start.line, ctx.position(r.report.node).start.column, r.rule.code))
    return ctx, raw


def _finding(path: str, ctx: RuleContext, raw: _RawReport) -> Finding:
    pos = ctx.position(raw.report.node)
    fix = raw.report.fix
    return Finding(
        path=path,
        line=pos.start.line,
        col=pos.start.column + 1,
        end_line=pos.end.line,
        end_col=pos.end.column + 1,
        code=raw.rule.code,
        name=raw.rule.name,
        message=raw.report.message,
        fix_safety=raw.report.safety,
        fix_title=fix.title if fix else None,
        context=raw.context,
        level=raw.report.level,
    )


def check_source(
    source: str,
    path: str = "<string>",
    *,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    keep_silenced: bool = False,
    level: Level = Level.WARNING,
    focus: bool = True,
) -> list[Finding]:
    """Findings for ``source``, in line order. Raises :class:`SourceSyntaxError`.

    ``keep_silenced`` also returns findings in no-grad and similar contexts,
    with ``Finding.context`` set (for reports on how much context removes).
    ``level``: the lowest hazard level reported (WARNING: all; ERROR: errors only).
    ``focus=False`` analyses the whole file with libcst, skipping the pre-screen
    (the reference the pre-screen is tested against; same findings, much slower).
    """
    rules = select_rules(select, ignore)
    if not focus:
        return _check_whole(source, path, rules, keep_silenced, level)
    if not could_have_findings(source, rules):
        _syntax_check_only(source)
        return []
    plan = _plan(source, rules, keep_silenced)
    if plan is None:
        return []
    return _released_findings(path, parse(plan.text, plan.piece_starts), rules, source, keep_silenced, level)


def _check_whole(source: str, path: str, rules: Sequence[Rule], keep_silenced: bool, level: Level) -> list[Finding]:
    """The reference the focused analysis must equal: every rule on the whole file."""
    if "torch" not in source:
        _syntax_check_only(source)
        return []
    return _released_findings(path, parse(source), rules, source, keep_silenced, level)


def _released_findings(path: str, module: cst.Module, rules: Sequence[Rule], source: str, keep_silenced: bool,
                       level: Level) -> list[Finding]:
    """The findings of ``module``, its analysis released (RuleContext.release) once they are made."""
    ctx, raw = _analyze(module, rules, source)
    try:
        return _findings(path, ctx, raw, keep_silenced, level)
    finally:
        ctx.release()


def _findings(path: str, ctx: Optional[RuleContext], raw: Sequence[_RawReport], keep_silenced: bool, level: Level) -> list[Finding]:
    findings = []
    for item in raw:
        if item.suppressed_by_noqa:
            continue
        if item.context is not None and not keep_silenced:
            continue
        if item.report.level.rank < level.rank:
            continue
        findings.append(_finding(path, ctx, item))  # type: ignore[arg-type]
    return findings


# --- applying fixes ------------------------------------------------------------


class _EditApplier(cst.CSTTransformer):
    def __init__(self, edits: Iterable) -> None:
        super().__init__()
        self._replace: dict[int, cst.CSTNode] = {}
        self._insert: dict[int, list[cst.BaseSmallStatement]] = {}
        self._remove: set[int] = set()
        for edit in edits:
            if isinstance(edit, ReplaceNode):
                self._replace[id(edit.original)] = edit.replacement
            elif isinstance(edit, InsertBefore):
                self._insert.setdefault(id(edit.anchor), []).extend(edit.statements)
            elif isinstance(edit, RemoveStatement):
                self._remove.add(id(edit.anchor))

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):  # type: ignore[override]
        updated = super().on_leave(original, updated)
        if id(original) in self._replace:
            updated = self._replace[id(original)]
        if isinstance(original, cst.BaseCompoundStatement) and id(original) in self._insert:
            return self._insert_before_compound(original, updated)  # type: ignore[arg-type]
        return updated

    def _insert_before_compound(self, original: cst.BaseCompoundStatement, updated: cst.BaseCompoundStatement):
        new_lines = [cst.SimpleStatementLine(body=[stmt]) for stmt in self._insert[id(original)]]
        new_lines[0] = new_lines[0].with_changes(leading_lines=updated.leading_lines)
        return cst.FlattenSentinel([*new_lines, updated.with_changes(leading_lines=())])

    def _new_body(self, original_body: Sequence[cst.BaseSmallStatement], updated_body: Sequence[cst.BaseSmallStatement]):
        body: list[cst.BaseSmallStatement] = []
        for original, updated in zip(original_body, updated_body):
            body.extend(self._insert.get(id(original), ()))
            if id(original) not in self._remove:
                body.append(updated)
        # libcst puts semicolons between statements on one line; keep explicit ones only at the end.
        fixed = [s.with_changes(semicolon=cst.MaybeSentinel.DEFAULT) for s in body[:-1]]
        return fixed + body[-1:]

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        if not any(id(s) in self._insert or id(s) in self._remove for s in original.body):
            return updated
        body = self._new_body(original.body, updated.body)
        if not body:
            return cst.RemovalSentinel.REMOVE
        if len(original.body) == 1 and len(body) > 1:
            lines = [cst.SimpleStatementLine(body=[stmt]) for stmt in body[:-1]]
            lines[0] = lines[0].with_changes(leading_lines=updated.leading_lines)
            last = updated.with_changes(body=[body[-1]], leading_lines=() if lines else updated.leading_lines)
            return cst.FlattenSentinel([*lines, last])
        return updated.with_changes(body=body)

    def leave_SimpleStatementSuite(self, original: cst.SimpleStatementSuite, updated: cst.SimpleStatementSuite):
        if not any(id(s) in self._insert or id(s) in self._remove for s in original.body):
            return updated
        body = self._new_body(original.body, updated.body)
        return updated.with_changes(body=body or [cst.Pass()])


def _apply(module: cst.Module, fixes: Sequence[Fix]) -> cst.Module:
    edits = [edit for fix in fixes for edit in fix.edits]
    module = module.visit(_EditApplier(edits))
    imports = sorted({edit.module for edit in edits if isinstance(edit, EnsureImport)})
    if imports:
        context = CodemodContext()
        for name in imports:
            AddImportsVisitor.add_needed_import(context, name)
        module = AddImportsVisitor(context).transform_module(module)
    return module


def _choose_fixes(raw: Sequence[_RawReport], ctx: RuleContext, unsafe_fixes: bool, level: Level) -> list[_RawReport]:
    """At most one fix per statement, and none in a statement nested in a chosen one."""
    chosen: list[_RawReport] = []
    taken: list[cst.CSTNode] = []
    for item in raw:
        report = item.report
        if item.suppressed_by_noqa or item.context is not None or report.fix is None:
            continue
        if report.fix.safety is FixSafety.UNSAFE and not unsafe_fixes:
            continue
        if report.fix.safety is FixSafety.DISPLAY_ONLY or report.level.rank < level.rank:
            continue
        statement = report.statement or ctx.statement_of(report.node)
        if any(_related(statement, other, ctx) for other in taken):
            continue
        taken.append(statement)
        chosen.append(item)
    return chosen


def _related(a: cst.CSTNode, b: cst.CSTNode, ctx: RuleContext) -> bool:
    if a is b:
        return True
    for inner, outer in ((a, b), (b, a)):
        current = ctx.parent(inner)
        while current is not None:
            if current is outer:
                # A compound statement only conflicts through its header, not its body.
                return not isinstance(outer, cst.BaseCompoundStatement) or _in_header(inner, outer, ctx)
            current = ctx.parent(current)
    return False


def _in_header(node: cst.CSTNode, compound: cst.CSTNode, ctx: RuleContext) -> bool:
    body = getattr(compound, "body", None)
    current = node
    while current is not None and current is not compound:
        if current is body or isinstance(current, (cst.Else, cst.IndentedBlock)):
            return False
        current = ctx.parent(current)
    return True


def fix_source(
    source: str,
    path: str = "<string>",
    *,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    unsafe_fixes: bool = False,
    level: Level = Level.ERROR,
    focus: bool = True,
) -> FixResult:
    """Apply fixes until none is left to apply. Raises :class:`SourceSyntaxError`.

    By default only error-level findings are fixed; ``level=Level.WARNING`` fixes warnings too.

    A fix whose output does not parse is dropped and named in ``errors``; the
    rest still apply. The result never contains code that fails to parse. Bytes
    no fix touches stay as they were. Each pass analyses only the definitions that
    can still hold a finding (``focus=False``: the whole file, as check_source).
    """
    rules = select_rules(select, ignore)
    if not (could_have_findings(source, rules) if focus else "torch" in source):
        _syntax_check_only(source)
        return FixResult(source=source)
    result = FixResult(source=source)
    broken: set[tuple[str, int, int]] = set()  # (rule, line, col) of fixes that broke the code
    text = source
    latest: Optional[tuple[str, Optional[RuleContext], list[_RawReport]]] = None  # the last analysis, of which text
    for _ in range(MAX_FIX_PASSES):
        plan = _plan(text, rules, keep_silenced=False) if focus else None
        if focus and plan is None:
            _release(latest)
            latest = (text, None, [])
            break
        outcome = _fix_pass(text, plan, rules, unsafe_fixes, level, broken, result, path)
        if outcome is None and plan is not None and plan.focused:
            outcome = _fix_pass(text, None, rules, unsafe_fixes, level, broken, result, path)
        assert outcome is not None  # the whole text always maps back
        _release(latest)
        latest, new_text = (text, outcome.ctx, outcome.raw), outcome.new_text
        if new_text is None:
            if outcome.more:
                continue  # every fix broke the code: the next pass tries without them
            break
        for item in outcome.applied:
            result.applied[item.rule.code] = result.applied.get(item.rule.code, 0) + 1
        text = new_text
    result.source = text
    if latest is not None and latest[0] == text:
        # The last pass analysed the final text and found nothing more to fix: its findings remain.
        result.remaining = _findings(path, latest[1], latest[2], False, Level.WARNING)
    else:
        result.remaining = check_source(text, path, select=select, ignore=ignore, level=Level.WARNING, focus=focus)
    _release(latest)
    return result


def _release(analysis: Optional[tuple[str, Optional[RuleContext], list[_RawReport]]]) -> None:
    if analysis is not None and analysis[1] is not None:
        analysis[1].release()


def fix_lines(
    source: str,
    lines: Iterable[int],
    path: str = "<string>",
    *,
    unsafe_fixes: bool = False,
) -> FixResult:
    """Fix exactly the constructs on ``lines``, whatever level the static analysis gives them.

    For ``fix --from-trace``: a traced run proved that autograd breaks on those lines,
    so the engine's verdict there is overruled (``RuleContext.proven_lines``): findings
    the analysis rated as warnings, or not at all, are fixed like errors. Nothing
    elsewhere changes. One pass: the lines are the traced program's, and a fix can move
    the lines after it. ``remaining``: the findings still on those lines.
    Raises :class:`SourceSyntaxError`.
    """
    wanted = frozenset(lines)
    result = FixResult(source=source)
    analysed = _analyze_lines(source, wanted)
    if analysed is None:
        return result
    module, ctx, raw = analysed
    on_lines = [item for item in raw if _on_lines(ctx, item, wanted)]
    chosen = _choose_fixes(on_lines, ctx, unsafe_fixes, Level.WARNING)
    fixed, code = _apply_parsing(module, chosen, ctx, result, path) if chosen else ([], None)
    if code is not None:
        result.source = code
        for item in fixed:
            result.applied[item.rule.code] = result.applied.get(item.rule.code, 0) + 1
    chosen_ids = {id(item) for item in fixed}
    result.remaining = [_finding(path, ctx, item) for item in on_lines
                        if id(item) not in chosen_ids and not item.suppressed_by_noqa]
    return result


def check_lines(source: str, lines: Iterable[int], path: str = "<string>") -> list[Finding]:
    """The findings on ``lines`` as :func:`fix_lines` sees them (autograd proven to break there),
    including those a context or a ``noqa`` silences (``Finding.context`` says which context)."""
    wanted = frozenset(lines)
    analysed = _analyze_lines(source, wanted)
    if analysed is None:
        return []
    _, ctx, raw = analysed
    return [_finding(path, ctx, item) for item in raw if _on_lines(ctx, item, wanted)]


def _analyze_lines(source: str, lines: frozenset[int]) -> Optional[tuple[cst.Module, RuleContext, list[_RawReport]]]:
    if not lines or "torch" not in source:
        _syntax_check_only(source)
        return None
    module = parse(source)
    ctx, raw = _analyze(module, select_rules(), source, lines)
    return module, ctx, raw


def _on_lines(ctx: RuleContext, item: _RawReport, lines: frozenset[int]) -> bool:
    return ctx.spans_a_line(item.report.statement or ctx.statement_of(item.report.node), lines)


@dataclass
class _PassOutcome:
    ctx: RuleContext
    raw: list[_RawReport]
    applied: list[_RawReport]
    new_text: Optional[str]  # None: nothing changed
    more: bool = False  # nothing changed, but a pass without the broken fixes may


def _fix_pass(text: str, plan: Optional[prescreen.Plan], rules: Sequence[Rule], unsafe_fixes: bool, level: Level,
              broken: set[tuple[str, int, int]], result: FixResult, path: str) -> Optional[_PassOutcome]:
    """One pass over ``text`` (the plan's focused text when given). None: the plan's stubs did not map back."""
    module = parse(plan.text, plan.piece_starts) if plan is not None else parse(text)
    ctx, raw = _analyze(module, rules, text)
    candidates = [item for item in _choose_fixes(raw, ctx, unsafe_fixes, level) if _key(item, ctx) not in broken]
    if not candidates:
        return _PassOutcome(ctx, raw, [], None)
    broken_before, errors_before = set(broken), len(result.errors)
    good, code = _apply_parsing(module, candidates, ctx, result, path)
    kept = {id(item) for item in good}
    broken.update(_key(item, ctx) for item in candidates if id(item) not in kept)
    if code is None:
        return _PassOutcome(ctx, raw, [], None, more=True)
    candidates = good
    if code == module.code:
        return _PassOutcome(ctx, raw, [], None)
    new_text = plan.restore(code) if plan is not None else code
    if new_text is None:
        broken.clear()
        broken.update(broken_before)
        del result.errors[errors_before:]
        return None
    return _PassOutcome(ctx, raw, candidates, new_text)


def _apply_parsing(module: cst.Module, candidates: list[_RawReport], ctx: RuleContext, result: FixResult,
                   path: str) -> tuple[list[_RawReport], Optional[str]]:
    """The fixes applied together, and the code; a fix whose output does not parse is left out and
    named in ``result.errors`` (None: every fix broke the code)."""
    try:
        return candidates, cst.parse_module(_apply(module, [c.report.fix for c in candidates]).code).code  # type: ignore[misc]
    except (cst.ParserSyntaxError, cst.CSTValidationError):
        pass
    # Find the fixes that break the code, one at a time, and leave them out.
    good = []
    for item in candidates:
        try:
            cst.parse_module(_apply(module, [item.report.fix]).code)  # type: ignore[list-item]
            good.append(item)
        except (cst.ParserSyntaxError, cst.CSTValidationError):
            result.errors.append(f"{path}:{ctx.line(item.report.node)}: {item.rule.code} fix produced invalid code; not applied")
    if not good:
        return [], None
    return good, cst.parse_module(_apply(module, [c.report.fix for c in good]).code).code  # type: ignore[misc]


def _key(item: _RawReport, ctx: RuleContext) -> tuple[str, int, int]:
    pos = ctx.position(item.report.node).start
    return (item.rule.code, pos.line, pos.column)
