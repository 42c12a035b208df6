"""libcst metadata for the rules: the same positions, scopes and parents, at a fraction of the cost.

On long modules, libcst's metadata cost the engine several times the rules themselves,
and most of it does nothing for us:

* every traversal, even a read-only :class:`~libcst.CSTVisitor`'s, rebuilds each node it
  passes (``CSTNode.visit`` goes through ``_visit_and_replace_children``) and drops the copy;
* each batchable provider is a traversal of its own plus the batched one that calls it;
* :class:`~libcst.metadata.ExpressionContextProvider` is a whole traversal, and all
  ScopeProvider reads from it is which names are stored to;
* :class:`~libcst.metadata.PositionProvider` splits every token with a regular expression and
  builds three frozen dataclasses per node.

So here: one walk over the fields gives parents and stored names; scopes come from
libcst's own ScopeVisitor, run once, while read-only visits do not rebuild nodes
(:func:`read_only_visits`); positions come from libcst's code generation with a lighter
recording state, one statement at a time when a rule asks (:class:`Positions`). Nodes
are keyed by ``id`` where the whole tree is alive (a node's ``__hash__`` is a Python call).

This leans on libcst internals (the field helpers' names, ScopeVisitor, the codegen
states); ``tests/test_cstmeta.py`` holds every piece against libcst's own providers and
visit order, so a libcst release that changes them fails there, not in users' findings.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import threading
import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence, Union

import libcst as cst
from libcst._nodes.base import CSTNode
from libcst._typed_visitor import CSTTypedVisitorFunctions
from libcst.metadata import CodePosition, CodeRange, ExpressionContext, ExpressionContextProvider, ScopeProvider
from libcst.metadata.position_provider import NEWLINE_RE, PositionProvidingCodegenState
from libcst.metadata.scope_provider import _ASSIGNMENT_LIKE_NODES, ScopeVisitor

# -- read-only traversals that do not rebuild the tree -----------------------------------------

# The helpers a node's _visit_and_replace_children visits its fields with; each calls the
# visitor's on_visit_attribute and on_leave_attribute around the field, even when it is None.
_FIELD_VISITORS = frozenset({
    "visit_required", "visit_optional", "visit_sentinel", "visit_sequence", "visit_iterable",
    "visit_body_sequence", "visit_body_iterable",
})

#: _visit_and_replace_children -> its fields in visiting order, each with "skipped when None"
#: (a field visited only under ``... if field is not None else None``); None: read it as libcst does.
_ORDERS: dict[Callable[..., Any], Optional[tuple[tuple[str, bool], ...]]] = {}


def _field_order(function: Callable[..., Any]) -> Optional[tuple[tuple[str, bool], ...]]:
    """The fields ``function`` visits, in order, read from its source; None when it does more
    than call the field helpers on ``self.<field>`` (that node type then keeps libcst's visit)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return None
    found: dict[str, tuple[int, int, bool]] = {}
    understood = True

    def scan(node: ast.AST, skipped_when_none: bool) -> None:
        nonlocal understood
        if isinstance(node, ast.IfExp):
            none_else = isinstance(node.orelse, ast.Constant) and node.orelse.value is None
            scan(node.test, skipped_when_none)
            scan(node.body, skipped_when_none or none_else)
            scan(node.orelse, skipped_when_none)
            return
        if isinstance(node, (ast.If, ast.For, ast.While, ast.Try, ast.With, ast.Lambda, ast.comprehension)):
            understood = False
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in _FIELD_VISITORS:
            args = node.args
            if len(args) != 4 or not isinstance(args[1], ast.Constant) or not isinstance(args[1].value, str):
                understood = False
                return
            field = args[1].value
            value = args[2]
            reads_field = (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
                           and value.value.id == "self" and value.attr == field)
            # `names = self.names` first, then `visit_...(self, "names", names, visitor)`
            reads_local = isinstance(value, ast.Name) and value.id == field
            if not (reads_field or reads_local):
                understood = False
            if field not in found:
                found[field] = (node.lineno, node.col_offset, skipped_when_none)
            return
        for child in ast.iter_child_nodes(node):
            scan(child, skipped_when_none)

    scan(tree, False)
    if not understood:
        return None
    return tuple((field, skipped) for field, (_, _, skipped) in sorted(found.items(), key=lambda item: item[1][:2]))


_original_visit = CSTNode.visit
_HOOK_PREFIXES = ("visit_", "leave_")
_FieldPlan = tuple[str, bool, Optional[Callable[..., Any]], Optional[Callable[..., Any]]]


class _Dispatch:
    """How a visitor type's hooks resolve, per node type, worked out once.

    libcst's CSTVisitor hooks look up ``visit_<Node>``, ``leave_<Node>`` and
    ``visit_<Node>_<field>`` by name on every call, and find libcst's empty defaults
    for most; where a visitor type keeps a base hook, the method it would find is
    looked up here once, and an empty default is not called at all.
    """

    def __init__(self, visitor_type: type) -> None:
        self.type = visitor_type
        base = cst.CSTVisitor
        self.own_visit = visitor_type.on_visit is not base.on_visit
        self.own_leave = visitor_type.on_leave is not base.on_leave
        self.own_visit_attribute = visitor_type.on_visit_attribute is not base.on_visit_attribute
        self.own_leave_attribute = visitor_type.on_leave_attribute is not base.on_leave_attribute
        self.nodes: dict[type, Optional[tuple[Any, Any, tuple[_FieldPlan, ...]]]] = {}
        # names of the hooks the visitor's classes define (libcst's empty defaults are in _typed_visitor)
        self.hooks = {name for klass in visitor_type.__mro__ if klass.__module__ != CSTTypedVisitorFunctions.__module__
                      for name in vars(klass) if name.startswith(_HOOK_PREFIXES)}

    def method(self, name: str) -> Optional[Callable[..., Any]]:
        """The function ``getattr(visitor, name)`` finds; None when it is an empty default."""
        if name not in self.hooks:
            return None
        found = inspect.getattr_static(self.type, name, None)
        if found is None or found is inspect.getattr_static(CSTTypedVisitorFunctions, name, None):
            return None
        if not isinstance(found, types.FunctionType):
            raise _Unusual(name)
        return found

    def plan(self, node_type: type) -> Optional[tuple[Any, Any, tuple[_FieldPlan, ...]]]:
        function = node_type._visit_and_replace_children
        order = _ORDERS.get(function, False)
        if order is False:
            order = _ORDERS[function] = _field_order(function)
        if order is None:
            return None
        name = node_type.__name__
        try:
            fields = tuple(
                (field, skipped, self.method(f"visit_{name}_{field}"), self.method(f"leave_{name}_{field}"))
                for field, skipped in order
            )
            return self.method(f"visit_{name}"), self.method(f"leave_{name}"), fields
        except _Unusual:
            return None


class _Unusual(Exception):
    """A hook that is not a plain function (a staticmethod, a callable object): libcst's visit decides."""


# By visitor type, for types defined at module level only: rules define small visitor classes
# inside functions, a new type on each call whose methods hold on to that call's variables.
_DISPATCH: dict[type, Optional[_Dispatch]] = {}


def _visit(node: CSTNode, visitor: Any) -> Any:
    kind = type(visitor)
    dispatch = _DISPATCH.get(kind, False)
    if dispatch is False:
        dispatch = _Dispatch(kind) if issubclass(kind, cst.CSTVisitor) else None
        if "<locals>" not in kind.__qualname__:
            _DISPATCH[kind] = dispatch
    if kind is _ScopeVisitor:  # the one walk over every node of every file: see _scope_walk
        _scope_walk(node, visitor, dispatch, visitor.provider._computed)
        return node
    if dispatch is None or any(k.startswith(_HOOK_PREFIXES) for k in getattr(visitor, "__dict__", ())):
        return _original_visit(node, visitor)  # a transformer, or hooks set on the instance
    _walk(node, visitor, dispatch)
    return node


def _walk(node: CSTNode, visitor: Any, dispatch: _Dispatch) -> None:
    """What CSTNode.visit does for a CSTVisitor, without building the copy of ``node`` it drops."""
    kind = type(node)
    nodes = dispatch.nodes
    plan = nodes.get(kind, False)
    if plan is False:
        plan = nodes[kind] = dispatch.plan(kind)
    if plan is None:
        _original_visit(node, visitor)
        return
    visit, leave, fields = plan
    if dispatch.own_visit:
        go = visitor.on_visit(node)
    else:
        go = visit is None or visit(visitor, node) is not False
    if go:
        own_visit_attribute, own_leave_attribute = dispatch.own_visit_attribute, dispatch.own_leave_attribute
        for field, skipped_when_none, visit_field, leave_field in fields:
            value = getattr(node, field)
            if value is None and skipped_when_none:
                continue
            if own_visit_attribute:
                visitor.on_visit_attribute(node, field)
            elif visit_field is not None:
                visit_field(visitor, node)
            if type(value) is tuple or type(value) is list:
                for item in value:
                    _walk(item, visitor, dispatch)
            elif value is not None and type(value) is not cst.MaybeSentinel:
                _walk(value, visitor, dispatch)
            if own_leave_attribute:
                visitor.on_leave_attribute(node, field)
            elif leave_field is not None:
                leave_field(visitor, node)
    if dispatch.own_leave:
        visitor.on_leave(node)
    elif leave is not None:
        leave(visitor, node)


_patch_lock = threading.Lock()
_patch_depth = 0


@contextmanager
def read_only_visits() -> Iterator[None]:
    """While inside, read-only visitors (``CSTVisitor``) walk the tree without rebuilding it.

    They see the same calls in the same order: the only difference is the copy libcst
    builds and drops. Transformers are untouched. Nested and concurrent uses share one patch.
    """
    global _patch_depth
    with _patch_lock:
        if _patch_depth == 0:
            CSTNode.visit = _visit  # type: ignore[method-assign]
        _patch_depth += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                CSTNode.visit = _original_visit  # type: ignore[method-assign]


# -- parsing without re-validation ----------------------------------------------------------------

_original_post_init = CSTNode.__post_init__
_unvalidated = threading.local()  # this thread's nodes skip validation while `skip` is set
_unvalidated_depth = 0


def _post_init(self: CSTNode) -> None:
    if not getattr(_unvalidated, "skip", False):
        self._validate()


@contextmanager
def unvalidated_nodes() -> Iterator[None]:
    """While inside, the nodes this thread builds skip libcst's validation (``_validate``).

    For parsing text only: the parser builds nodes from what it read, which validation just
    checks again (about 15% of a parse). Nodes that code builds (a fix) need it, and other
    threads keep it: the class keeps one patch while any thread is inside.
    """
    global _unvalidated_depth
    with _patch_lock:
        if _unvalidated_depth == 0:
            CSTNode.__post_init__ = _post_init  # type: ignore[method-assign]
        _unvalidated_depth += 1
    previous = getattr(_unvalidated, "skip", False)
    _unvalidated.skip = True
    try:
        yield
    finally:
        _unvalidated.skip = previous
        with _patch_lock:
            _unvalidated_depth -= 1
            if _unvalidated_depth == 0:
                CSTNode.__post_init__ = _original_post_init  # type: ignore[method-assign]


# -- parents and stored names: one walk over the fields ------------------------------------------

_FIELDS: dict[type, tuple[str, ...]] = {}
_WALK_FIELDS: dict[type, tuple[str, ...]] = {}

# Where a name is stored to, as ExpressionContextProvider reads it: the fields that hold targets.
_STORE_FIELDS: dict[type, str] = {
    cst.AssignTarget: "target", cst.AnnAssign: "target", cst.AugAssign: "target", cst.NamedExpr: "target",
    cst.AsName: "name", cst.CompFor: "target", cst.For: "target", cst.ClassDef: "name",
    cst.FunctionDef: "name", cst.Param: "name",
}
# Inside a target, these are loaded from (``a.b = ...`` stores to no name; ``a[i] = ...`` neither).
_LOADED_INSIDE = (cst.Attribute, cst.Subscript)


_NODE_TYPES: dict[type, bool] = {}


def _is_node(kind: type) -> bool:
    """issubclass(kind, CSTNode), remembered (isinstance against libcst's abstract base is slow)."""
    found = _NODE_TYPES.get(kind)
    if found is None:
        found = _NODE_TYPES[kind] = issubclass(kind, CSTNode)
    return found


def _children(node: CSTNode) -> Iterator[CSTNode]:
    names = _FIELDS.get(type(node))
    if names is None:
        names = _FIELDS[type(node)] = tuple(f.name for f in dataclasses.fields(node))
    for name in names:
        value = getattr(node, name)
        kind = type(value)
        if kind is tuple or kind is list:
            for item in value:
                if _is_node(type(item)):
                    yield item
        elif _is_node(kind):
            yield value


# The nodes whose code holds line breaks: a Newline is one; in these, their ``value`` may hold some
# (a string, a backslash continuation in whitespace).
_LINE_BREAK_VALUES: dict[type, bool] = {
    cst.Newline: False, cst.SimpleWhitespace: True, cst.SimpleString: True, cst.FormattedStringText: True,
}
if hasattr(cst, "TemplatedStringText"):  # libcst 1.9: t-strings
    _LINE_BREAK_VALUES[cst.TemplatedStringText] = True
# Nodes the walk must take in source order: those between the module and a unit (see Positions).
_SOURCE_ORDER = {cst.Module: ("header", "body", "footer"), cst.IndentedBlock: ("header", "body", "footer")}


# The clauses between a compound statement and a block of its own, at the statement's indentation.
_CLAUSES = frozenset({cst.If, cst.Else, cst.Finally, cst.ExceptHandler, cst.ExceptStarHandler})


class ModuleFacts(NamedTuple):
    """What one walk over a module's fields gives (:func:`module_facts`)."""

    parents: dict[int, CSTNode]  # id(child) -> parent, as ParentNodeProvider gives
    stores: dict[CSTNode, ExpressionContext]  # every Name stored to: ExpressionContext.STORE
    unit_starts: dict[int, tuple[int, tuple[str, ...]]]  # id(unit) -> (line, indentation): see Positions
    collected: list[CSTNode]  # the nodes of the types asked for, in the order a visitor meets them


def _walk_order(kind: type) -> tuple[str, ...]:
    """A node type's fields, in the reverse of the order the walk takes them in (it pops a stack):
    the order libcst's visitors take them in, so that the walk meets nodes as a visit does."""
    names = [f.name for f in dataclasses.fields(kind)]
    order = _SOURCE_ORDER.get(kind)
    if order is None:
        visit = getattr(kind, "_visit_and_replace_children", None)
        order = tuple(field for field, _ in (_field_order(visit) if visit is not None else None) or ())
        if kind is cst.ClassDef and "body" not in order:  # pragma: no cover - a libcst release that visits a class otherwise
            raise RuntimeError("libcst's ClassDef no longer visits its body: cstmeta needs updating")
    if order:
        names = list(order) + [name for name in names if name not in order]
    text_only = {f.name for f in dataclasses.fields(kind) if f.type in _TEXT_TYPES}
    return tuple(reversed([name for name in names if name not in text_only]))


# The field types that never hold a node (a Name's value, an EmptyLine's indent): not walked.
_TEXT_TYPES = (str, bool, Optional[str], Union[str, cst.MaybeSentinel])


def module_facts(module: cst.Module, collect: frozenset[type] = frozenset()) -> ModuleFacts:
    """Parents of every node (keyed by ``id``: a node's own ``__hash__`` is a Python call), every
    Name stored to (what ScopeProvider reads of ExpressionContextProvider: every other name is
    read as an access), and where each unit of :class:`Positions` starts, from one walk.

    The walk takes the fields in the order libcst's visitors do (the module, class and block
    fields in source order, so it reaches a unit after every line break of the code before it),
    and meets the nodes in a visit's order: ``collected`` lists those whose type is in ``collect``.
    """
    collected: list[CSTNode] = []
    parents: dict[int, CSTNode] = {}
    targets: list[CSTNode] = []
    unit_starts: dict[int, tuple[int, tuple[str, ...]]] = {}
    unit_indents: dict[int, tuple[str, ...]] = {id(statement): () for statement in module.body}
    default_indent = module.default_indent
    line = 1
    stack: list[CSTNode] = [module]
    store_fields, fields, node_types, line_breaks = _STORE_FIELDS, _WALK_FIELDS, _NODE_TYPES, _LINE_BREAK_VALUES
    while stack:  # _children inlined, with the parent kept: this loop runs once per node of every file
        node = stack.pop()
        kind = type(node)
        if kind in collect:
            collected.append(node)
        in_value = line_breaks.get(kind)
        if in_value is not None:
            if not in_value:
                line += 1
            else:
                value = node.value  # type: ignore[attr-defined]
                if "\n" in value or "\r" in value:
                    line += len(NEWLINE_RE.split(value)) - 1
        else:
            store_field = store_fields.get(kind)
            if store_field is not None:
                targets.append(getattr(node, store_field))
            if id(node) in unit_indents:
                unit_starts[id(node)] = (line, unit_indents.pop(id(node)))
            elif kind is cst.IndentedBlock:
                if not node.body:  # type: ignore[attr-defined]
                    line += 1  # code generation writes `pass` and a line break (a parse never gives one)
                else:
                    # A block's statements are units too, indented one step further than the unit
                    # that holds the block (through `else:`, `elif`, `except:`, `finally:`, which
                    # sit at its indentation; a `case:` body is left to the `match` unit).
                    owner = parents.get(id(node))
                    while owner is not None and id(owner) not in unit_starts and type(owner) in _CLAUSES:
                        owner = parents.get(id(owner))
                    if owner is not None and id(owner) in unit_starts:
                        block_indent = default_indent if node.indent is None else node.indent  # type: ignore[attr-defined]
                        inner = (*unit_starts[id(owner)][1], block_indent)
                        unit_indents.update((id(statement), inner) for statement in node.body)  # type: ignore[attr-defined]
        names = fields.get(kind)
        if names is None:
            names = fields[kind] = _walk_order(kind)
        for name in names:
            value = getattr(node, name)
            for item in reversed(value) if type(value) is tuple or type(value) is list else (value,):
                is_node = node_types.get(type(item))
                if is_node is None:
                    is_node = _is_node(type(item))
                if is_node:
                    parents[id(item)] = node
                    stack.append(item)
    stores: dict[CSTNode, ExpressionContext] = {}
    store = ExpressionContext.STORE
    while targets:
        node = targets.pop()
        if type(node) is cst.Name:
            stores[node] = store
        elif not isinstance(node, _LOADED_INSIDE):  # tuples, lists, starred, their elements, parentheses
            targets.extend(_children(node))
    return ModuleFacts(parents, stores, unit_starts, collected)


# -- scopes: libcst's ScopeVisitor, run once ------------------------------------------------------

_ASSIGNMENT_LIKE: dict[type, bool] = {}


class _ScopeVisitor(ScopeVisitor):
    """libcst's ScopeVisitor with an on_leave that does the same at less cost."""

    _leaves: dict[type, Optional[Callable[..., Any]]] = {}

    def on_leave(self, original_node: CSTNode) -> None:
        kind = type(original_node)
        self.provider._computed[original_node] = self.scope
        counts = _ASSIGNMENT_LIKE.get(kind)
        if counts is None:
            counts = _ASSIGNMENT_LIKE[kind] = issubclass(kind, _ASSIGNMENT_LIKE_NODES)
        if counts:
            self.scope._assignment_count += 1
        leave = self._leaves.get(kind, False)
        if leave is False:
            leave = self._leaves[kind] = getattr(type(self), f"leave_{kind.__name__}", None)
        if leave is not None:
            leave(self, original_node)


def _all_subclasses(kind: type) -> Iterator[type]:
    for sub in kind.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


# Whitespace, comments, punctuation and operators: two thirds of a module's nodes, and nothing in
# them is scoped (no name, no expression, no hook of the scope visitor). The scope walk skips them,
# and the scope metadata has none of them: no analysis asks for one.
_NOT_SCOPED = frozenset({
    cst.SimpleWhitespace, cst.ParenthesizedWhitespace, cst.TrailingWhitespace, cst.EmptyLine, cst.Newline,
    cst.Comment, cst.Comma, cst.Dot, cst.Colon, cst.Semicolon, cst.AssignEqual, cst.LeftParen, cst.RightParen,
    cst.LeftSquareBracket, cst.RightSquareBracket, cst.LeftCurlyBrace, cst.RightCurlyBrace, cst.ImportStar,
    cst.MaybeSentinel,
    *(sub for base in (cst.BaseBinaryOp, cst.BaseBooleanOp, cst.BaseCompOp, cst.BaseUnaryOp, cst.BaseAugOp)
      for sub in _all_subclasses(base)),
})


def _scope_walk(node: CSTNode, visitor: _ScopeVisitor, dispatch: _Dispatch, computed: dict[CSTNode, Any]) -> None:
    """_walk for the scope visitor, with its on_leave written in: the same calls, less overhead
    on the millions of nodes (its hooks start their own walks of the children they visit);
    nodes of the _NOT_SCOPED types are not walked."""
    kind = type(node)
    plan = dispatch.nodes.get(kind, False)
    if plan is False:
        plan = dispatch.nodes[kind] = dispatch.plan(kind)
    if plan is None:
        _original_visit(node, visitor)  # libcst's visit, which calls visitor.on_leave
        return
    visit, leave, fields = plan
    if visit is None or visit(visitor, node) is not False:
        for field, skipped_when_none, visit_field, leave_field in fields:
            value = getattr(node, field)
            if value is None and skipped_when_none:
                continue
            if visit_field is not None:
                visit_field(visitor, node)
            if type(value) is tuple or type(value) is list:
                for item in value:
                    if type(item) not in _NOT_SCOPED:
                        _scope_walk(item, visitor, dispatch, computed)
            elif value is not None and type(value) not in _NOT_SCOPED:
                _scope_walk(value, visitor, dispatch, computed)
            if leave_field is not None:
                leave_field(visitor, node)
    scope = visitor.scope
    computed[node] = scope
    counts = _ASSIGNMENT_LIKE.get(kind)
    if counts is None:
        counts = _ASSIGNMENT_LIKE[kind] = issubclass(kind, _ASSIGNMENT_LIKE_NODES)
    if counts:
        scope._assignment_count += 1
    if leave is not None:
        leave(visitor, node)


def scopes(module: cst.Module, stores: dict[CSTNode, ExpressionContext]) -> dict[CSTNode, Any]:
    """ScopeProvider's metadata (node -> Scope), from one ScopeVisitor traversal.

    ``stores``: from :func:`module_facts`, in place of ExpressionContextProvider.
    """
    provider = ScopeProvider()
    provider.metadata = {ExpressionContextProvider: stores}
    with read_only_visits():  # what ScopeProvider.visit_Module does, with the cheaper visitor
        visitor = _ScopeVisitor(provider)
        module.visit(visitor)
        visitor.infer_accesses()
    return provider._computed


# -- positions: libcst's code generation with a lighter recording state ---------------------------

Span = tuple[int, int, int, int]  # start line, start column, end line, end column


class _Syntactic:
    """record_syntactic_position as a plain context manager (libcst's is a generator)."""

    __slots__ = ("state", "node", "start_node", "end_node", "line", "column")

    def __init__(self, state: "_PositionState", node: CSTNode, start_node: Optional[CSTNode],
                 end_node: Optional[CSTNode]) -> None:
        self.state, self.node, self.start_node, self.end_node = state, node, start_node, end_node
        self.line, self.column = state.line, state.column

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        state = self.state
        spans = state.spans
        if self.start_node is not None:
            first = spans[id(self.start_node)]
            line, column = first[0], first[1]
        else:
            line, column = self.line, self.column
        if self.end_node is not None:
            last = spans[id(self.end_node)]
            spans[id(self.node)] = (line, column, last[2], last[3])
        else:
            spans[id(self.node)] = (line, column, state.line, state.column)
        return False


@dataclasses.dataclass
class _PositionState(PositionProvidingCodegenState):
    spans: dict[int, Span] = dataclasses.field(default_factory=dict)  # by id(node)

    def add_indent_tokens(self) -> None:
        for token in self.indent_tokens:
            self.add_token(token)

    def add_token(self, value: str) -> None:
        self.tokens.append(value)
        if "\n" in value or "\r" in value:
            segments = NEWLINE_RE.split(value)
            self.line += len(segments) - 1
            self.column = len(segments[-1])
        else:
            self.column += len(value)

    def before_codegen(self, node: CSTNode) -> None:
        self._stack.append((self.line, self.column))  # type: ignore[arg-type]

    def after_codegen(self, node: CSTNode) -> None:
        line, column = self._stack.pop()  # type: ignore[misc]
        key = id(node)
        if key not in self.spans:  # a syntactic position, recorded inside, wins
            self.spans[key] = (line, column, self.line, self.column)

    def record_syntactic_position(self, node: CSTNode, *, start_node: Optional[CSTNode] = None,
                                  end_node: Optional[CSTNode] = None) -> _Syntactic:  # type: ignore[override]
        return _Syntactic(self, node, start_node, end_node)


def positions(module: cst.Module) -> dict[int, Span]:
    """PositionProvider's ranges for every node, by ``id(node)``, as (start line, start column,
    end line, end column)."""
    state = _PositionState(default_indent=module.default_indent, default_newline=module.default_newline,
                           provider=None)
    module._codegen(state)
    return state.spans


class Positions:
    """PositionProvider's ranges (as spans, by node), computed for one unit at a time when asked.

    The units are the statements: at module level and in the indented blocks of classes,
    functions and compound statements (not those of ``case`` clauses). A rule asks about a
    few nodes, and recording every node's position costs a third of the metadata, so a
    node's positions come from the code generation of the innermost unit that holds it. The
    walk of :func:`module_facts` counts the line breaks before each unit; a unit's own code
    generation, from there and with its indentation, gives its nodes the positions the whole
    module's gives them. A node outside every unit (the module's header) has every position
    computed at once.
    """

    def __init__(self, module: cst.Module, facts: ModuleFacts) -> None:
        self.module = module
        self.parents = facts.parents
        self.starts = facts.unit_starts
        self.spans: dict[int, Span] = {}
        self._everything = False

    def __getitem__(self, node: CSTNode) -> Span:
        span = self.spans.get(id(node))
        if span is None:
            self._record_around(node)
            span = self.spans[id(node)]
        return span

    def _record_around(self, node: CSTNode) -> None:
        starts = self.starts
        current: Optional[CSTNode] = node
        while current is not None and id(current) not in starts:
            current = self.parents.get(id(current))
        if current is None or self._everything:
            if not self._everything:
                self._everything = True
                self.spans.update(positions(self.module))
            return
        line, indent = starts[id(current)]
        module = self.module
        state = _PositionState(default_indent=module.default_indent, default_newline=module.default_newline,
                               provider=None, indent_tokens=list(indent), line=line)
        current._codegen(state)
        self.spans.update(state.spans)


def code_range(span: Span) -> CodeRange:
    return CodeRange(CodePosition(span[0], span[1]), CodePosition(span[2], span[3]))
