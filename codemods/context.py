"""What a rule may ask about the module it is checking.

One RuleContext per parse: it wraps libcst's metadata (positions, qualified
names, scopes, parents) and the analyses built on them (tensor-ness, aliasing,
where statements can be hoisted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import libcst as cst
from libcst.metadata import CodeRange, QualifiedNameSource, Scope

from . import cstmeta
from .aliasing import AliasAnalysis, RebindVerdict
from .model import Level
from .tensors import TensorInference, TensorKind

# Expressions a statement can not be hoisted out of: doing so would change
# when (or whether) the in-place call runs.
HOIST_BARRIERS = (
    cst.Lambda, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp, cst.IfExp,
    cst.BooleanOperation, cst.FormattedString, cst.Decorator, cst.Param,
)


@dataclass(frozen=True)
class HoistSite:
    """The statement before which hoisted statements go, or why there is none."""

    anchor: Optional[cst.CSTNode]
    reason: str = ""


class RuleContext:
    def __init__(self, module: cst.Module, source: str, collect: frozenset[type] = frozenset()) -> None:
        """``source``: the text ``module`` was parsed or focused from. Each line of the module is
        that text's line, or a stub or blank: a word the text lacks, the module lacks too.
        ``collect``: node types whose nodes :attr:`collected` lists, in a visitor's order."""
        self.module = module
        self.source = source
        # libcst's positions, scopes and parents, computed as cstmeta explains; qualified names
        # are asked of the node's scope when a rule wants them, as libcst's lazy values do.
        facts = cstmeta.module_facts(module, collect)
        self.collected = facts.collected
        self._parents = facts.parents
        self._spans = cstmeta.Positions(module, facts)
        self._ranges: dict[cst.CSTNode, CodeRange] = {}
        self._scopes = cstmeta.scopes(module, facts.stores)
        self._qualified: dict[cst.CSTNode, object] = {}
        self._module_attributes: dict[int, dict[str, cst.Call]] = {}
        # hazard's table of the requires_grad switches in each function, by the function's id
        self.requires_grad_switches: dict[int, list[tuple[tuple[int, int], bool, str]]] = {}
        self._torch_name: Optional[str] = None
        self.tensors = TensorInference(
            self.qualified_names, self.scope, self.parent, self.module_constructor
        )
        self.aliases = AliasAnalysis(self.scope, self.parent, self.qualified_names, self.start, self.module_constructor, self.is_inside)
        # Lines where a traced run (``gradfix trace``) saw the write break autograd: the static
        # verdict there is overruled (``fix --from-trace``).
        self.proven_lines: frozenset[int] = frozenset()

    def release(self) -> None:
        """Break the reference cycles of the scope analysis, and forget the module.

        libcst's scopes, assignments and accesses point at one another, so without this a
        module's whole tree (millions of objects over a repository) waits for a full run of the
        garbage collector, which walks all of it. Afterwards reference counting frees it at
        once. The context cannot be used any more.
        """
        scopes: dict[int, Scope] = {}
        for scope in self._scopes.values():
            while scope is not None and id(scope) not in scopes:
                scopes[id(scope)] = scope
                scope = getattr(scope, "parent", None)
        for scope in scopes.values():
            for assignments in getattr(scope, "_assignments", {}).values():
                for assignment in assignments:
                    if hasattr(assignment, "__dict__"):
                        assignment.__dict__.clear()  # its accesses point back at it
            scope.__dict__.clear()
        self.__dict__.clear()

    # -- metadata ----------------------------------------------------------------

    def position(self, node: cst.CSTNode) -> CodeRange:
        found = self._ranges.get(node)
        if found is None:
            found = self._ranges[node] = cstmeta.code_range(self._spans[node])
        return found

    def line(self, node: cst.CSTNode) -> int:
        return self._spans[node][0]

    def start(self, node: cst.CSTNode) -> tuple[int, int]:
        span = self._spans[node]
        return (span[0], span[1])

    def parent(self, node: cst.CSTNode) -> Optional[cst.CSTNode]:
        return self._parents.get(id(node))

    def is_inside(self, node: cst.CSTNode, ancestor: cst.CSTNode) -> bool:
        current: Optional[cst.CSTNode] = node
        while current is not None:
            if current is ancestor:
                return True
            current = self.parent(current)
        return False

    def scope(self, node: cst.CSTNode) -> Optional[Scope]:
        return self._scopes.get(node)

    def _qualified_of(self, node: cst.CSTNode):
        value = self._qualified.get(node)
        if value is None:
            # What QualifiedNameProvider computes (lazily) for every node that has a scope.
            scope = self._scopes.get(node)
            value = self._qualified[node] = scope.get_qualified_names_for(node) if scope else ()
        return value

    def qualified_names(self, node: cst.CSTNode) -> Iterable[str]:
        return [q.name for q in self._qualified_of(node)]

    def imported_names(self, node: cst.CSTNode) -> list[str]:
        """Qualified names of ``node`` that come from an import (``nn.init.normal_``)."""
        return [q.name for q in self._qualified_of(node) if q.source is QualifiedNameSource.IMPORT]

    def torch_module_name(self) -> Optional[str]:
        """The name this module binds to ``torch`` at top level (``torch``, or ``T`` for ``import torch as T``)."""
        if self._torch_name is None:
            self._torch_name = ""
            for statement in self.module.body:
                if isinstance(statement, cst.SimpleStatementLine):
                    for small in statement.body:
                        if isinstance(small, cst.Import):
                            for alias in small.names:
                                if self.code(alias.name) == "torch":
                                    self._torch_name = alias.evaluated_alias or "torch"
        return self._torch_name or None

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    # -- analyses ----------------------------------------------------------------

    def tensor_kind(self, expr: cst.BaseExpression) -> TensorKind:
        return self.tensors.kind(expr)

    def hazard_level(self, target: cst.BaseExpression, site: cst.CSTNode):
        """ERROR, WARNING, or None (no finding) for an in-place write into ``target`` at ``site``."""
        return self.hazard(target, site)[0]

    def hazard(self, target: cst.BaseExpression, site: cst.CSTNode):
        """(level, reason): the level as in hazard_level, and a few words on why."""
        from .hazard import explain

        level, why = explain(self, target, site)
        if level is not Level.ERROR and self.proven(site):
            return Level.ERROR, "a traced run showed that autograd needed it"
        return level, why

    def proven(self, node: cst.CSTNode) -> bool:
        """Does ``node``'s statement hold a line where a traced run saw autograd break?"""
        return bool(self.proven_lines) and self.spans_a_line(self.statement_of(node), self.proven_lines)

    def spans_a_line(self, node: cst.CSTNode, lines: frozenset[int]) -> bool:
        """Does ``node`` run over one of ``lines``?"""
        first, _, last, _ = self._spans[node]
        return any(first <= line <= last for line in lines)

    def rebinding(self, target: cst.BaseExpression, site: cst.CSTNode) -> RebindVerdict:
        return self.aliases.rebinding(target, site)

    def statement_of(self, node: cst.CSTNode) -> cst.CSTNode:
        """The small statement, or compound statement header, that contains ``node``."""
        current: cst.CSTNode = node
        while True:
            parent = self.parent(current)
            if parent is None or isinstance(current, (cst.BaseSmallStatement, cst.BaseCompoundStatement)):
                return current
            current = parent

    def hoist_site(self, expr: cst.CSTNode) -> HoistSite:
        """Where statements computing ``expr`` beforehand may go, keeping evaluation order."""
        current: cst.CSTNode = expr
        while True:
            parent = self.parent(current)
            if parent is None:
                return HoistSite(None, "no enclosing statement")
            if isinstance(parent, HOIST_BARRIERS):
                if isinstance(parent, cst.IfExp) and current is parent.test:
                    pass  # the test always runs
                elif isinstance(parent, cst.BooleanOperation) and current is parent.left:
                    pass  # the left operand always runs
                else:
                    return HoistSite(None, f"inside a {type(parent).__name__.lower()}, where it may not run")
            if isinstance(parent, cst.BaseSmallStatement):
                if isinstance(parent, (cst.Assert, cst.AugAssign)):
                    # assert disappears under -O; an augmented target is read before its value.
                    return HoistSite(None, f"inside an {type(parent).__name__.lower()} statement")
                return HoistSite(parent)
            if isinstance(parent, cst.If):
                if current is parent.test and not self._is_elif(parent):
                    return HoistSite(parent)
                return HoistSite(None, "in an elif test, which runs only after the tests above")
            if isinstance(parent, cst.For):
                if current is parent.iter:
                    return HoistSite(parent)
                return HoistSite(None, "in a for target")
            if isinstance(parent, (cst.While, cst.With, cst.Match, cst.Try, cst.FunctionDef, cst.ClassDef)):
                return HoistSite(None, f"in a {type(parent).__name__.lower()} header")
            current = parent

    def _is_elif(self, node: cst.If) -> bool:
        parent = self.parent(node)
        return isinstance(parent, cst.If) and parent.orelse is node

    def module_constructor(self, callee: cst.BaseExpression) -> Optional[cst.Call]:
        """The ``torch.nn.X(...)`` call that built the module ``callee`` names, if known.

        Handles a local name (``gru = nn.GRU(...)``) and ``self.X`` assigned in the class.
        """
        if isinstance(callee, cst.Attribute) and isinstance(callee.value, cst.Name) and callee.value.value == "self":
            return self._class_modules(callee).get(callee.attr.value)
        if isinstance(callee, cst.Name):
            scope = self.scope(callee)
            if scope is None:
                return None
            values = []
            for assignment in scope[callee.value]:
                node = getattr(assignment, "node", None)
                target = self.parent(node) if node is not None else None
                statement = self.parent(target) if isinstance(target, cst.AssignTarget) else None
                if not isinstance(statement, cst.Assign):
                    return None
                values.append(statement.value)
            if len(values) == 1 and self._is_module_constructor(values[0]):
                return values[0]  # type: ignore[return-value]
        return None

    def _is_module_constructor(self, value: cst.BaseExpression) -> bool:
        if not isinstance(value, cst.Call):
            return False
        for name in self.qualified_names(value.func):
            last = name.rsplit(".", 1)[-1]
            if name.startswith("torch.nn.") and last[:1].isupper() and last != "Parameter":
                return True
        return False

    def _class_modules(self, node: cst.CSTNode) -> dict[str, cst.Call]:
        cls = self.parent(node)
        while cls is not None and not isinstance(cls, cst.ClassDef):
            cls = self.parent(cls)
        if cls is None:
            return {}
        key = id(cls)
        if key not in self._module_attributes:
            modules: dict[str, cst.Call] = {}
            for assign in _self_assignments(cls):
                if self._is_module_constructor(assign.value):
                    for target in assign.targets:
                        modules[target.target.attr.value] = assign.value  # type: ignore[union-attr, assignment]
            self._module_attributes[key] = modules
        return self._module_attributes[key]


def _self_assignments(cls: cst.ClassDef) -> Iterable[cst.Assign]:
    found: list[cst.Assign] = []

    class Collector(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            if all(
                isinstance(t.target, cst.Attribute)
                and isinstance(t.target.value, cst.Name)
                and t.target.value.value == "self"
                for t in node.targets
            ):
                found.append(node)

    cls.visit(Collector())
    return found
