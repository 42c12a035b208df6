"""What a name holds at a point of a function, and which torch object an expression names.

Shared by the rules that follow a tensor or a module back to where it was made
(GF105 ``inplace=True``, GF106 ``out=``).
"""

from __future__ import annotations

from typing import Optional

import libcst as cst
from libcst.metadata import Assignment

from .context import RuleContext

# Blocks that run on some paths only: a binding inside one does not reach every later line.
CONDITIONAL_BLOCKS = (cst.If, cst.For, cst.While, cst.Try, cst.Match, cst.ExceptHandler, cst.Else, cst.Finally)


def bound_at(ctx: RuleContext, node: cst.CSTNode) -> tuple[int, int]:
    """Where a binding takes effect: after its statement (`out = conv(out)` reads the old `out`)."""
    statement = ctx.statement_of(node)
    end = ctx.position(statement).end if isinstance(statement, cst.BaseSmallStatement) else ctx.position(node).end
    return (end.line, end.column)


def enclosing(ctx: RuleContext, node: cst.CSTNode, kinds: tuple) -> Optional[cst.CSTNode]:
    current = ctx.parent(node)
    while current is not None and not isinstance(current, (cst.FunctionDef, cst.ClassDef, cst.Module)):
        if isinstance(current, kinds):
            return current
        current = ctx.parent(current)
    return None


def reaching_binding(ctx: RuleContext, name: cst.Name, site: cst.CSTNode) -> Optional[cst.CSTNode]:
    """The node that bound ``name`` last before ``site`` on every path, or None if that is not clear.

    The answer is the name's target node (its parent says how: ``AssignTarget``,
    ``AugAssign``, ...) or a ``Param``. Straight-line and loop-aware: a binding in a
    branch that does not hold ``site``, or one later in a loop around ``site``, makes it unclear.
    """
    scope = ctx.scope(name)
    if scope is None:
        return None
    assignments = [a for a in scope[name.value] if isinstance(a, Assignment)]
    site_start = ctx.start(site)
    before, params = [], []
    for assignment in assignments:
        node = assignment.node
        if isinstance(node, cst.Param):
            params.append(node)
        elif not ctx.is_inside(node, site) and bound_at(ctx, node) <= site_start:
            before.append(node)
    loop = enclosing(ctx, site, (cst.For, cst.While))
    if loop is not None and any(
        not isinstance(a.node, cst.Param) and ctx.start(a.node) > site_start and ctx.is_inside(a.node, loop)
        for a in assignments
    ):
        return None  # the next iteration sees a later binding
    if not before:
        return params[0] if len(params) == 1 else None
    latest = max(before, key=lambda n: bound_at(ctx, n))
    branch = enclosing(ctx, latest, CONDITIONAL_BLOCKS)
    while branch is not None:
        if not ctx.is_inside(site, branch):
            return None  # bound on one path only
        branch = enclosing(ctx, branch, CONDITIONAL_BLOCKS)
    return latest


def bound_value(ctx: RuleContext, binding: cst.CSTNode) -> Optional[cst.BaseExpression]:
    """The expression a name's target node was bound to (``x = value``), or None."""
    parent = ctx.parent(binding)
    if isinstance(parent, cst.AssignTarget):
        statement = ctx.parent(parent)
        if isinstance(statement, cst.Assign):
            return statement.value
    if isinstance(parent, (cst.AnnAssign, cst.NamedExpr)) and parent.value is not None:
        return parent.value
    if isinstance(parent, cst.Element):
        # `a, b = x, y`: the matching element of a literal tuple.
        container = ctx.parent(parent)
        target = ctx.parent(container) if container is not None else None
        statement = ctx.parent(target) if isinstance(target, cst.AssignTarget) else None
        if isinstance(statement, cst.Assign) and isinstance(container, (cst.Tuple, cst.List)):
            values = statement.value
            if isinstance(values, (cst.Tuple, cst.List)) and len(values.elements) == len(container.elements):
                index = next(i for i, e in enumerate(container.elements) if e is parent)
                element = values.elements[index]
                if not isinstance(element, cst.StarredElement) and not any(
                    isinstance(e, cst.StarredElement) for e in container.elements
                ):
                    return element.value
    return None


def torch_name(ctx: RuleContext, func: cst.BaseExpression) -> Optional[str]:
    for name in ctx.qualified_names(func):
        if name.startswith("torch."):
            return name
    return None


def module_class(ctx: RuleContext, constructor: cst.Call) -> Optional[str]:
    name = torch_name(ctx, constructor.func)
    if name is not None and name.startswith("torch.nn.") and not name.startswith("torch.nn.functional."):
        return name.rsplit(".", 1)[-1]
    return None
