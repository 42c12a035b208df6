"""Small builders shared by rules: the nodes of an out-of-place rewrite."""

from __future__ import annotations

import re
from typing import Optional, Sequence

import libcst as cst

from .context import RuleContext
from .grad_context import attribute_in_chain
from .model import EnsureImport, Fix, FixSafety, InsertBefore, Level, ReplaceNode, Report
from .tensors import TensorKind

# Expressions that need parentheses as the right operand of a binary operator.
_LOOSE_BINDING = (
    cst.BinaryOperation, cst.BooleanOperation, cst.Comparison, cst.IfExp, cst.Lambda,
    cst.NamedExpr, cst.UnaryOperation, cst.Yield, cst.Await,
)

AUGMENTED_TO_BINARY: dict[type, type] = {
    cst.AddAssign: cst.Add,
    cst.SubtractAssign: cst.Subtract,
    cst.MultiplyAssign: cst.Multiply,
    cst.DivideAssign: cst.Divide,
    cst.FloorDivideAssign: cst.FloorDivide,
    cst.ModuloAssign: cst.Modulo,
    cst.PowerAssign: cst.Power,
    cst.MatrixMultiplyAssign: cst.MatrixMultiply,
    cst.LeftShiftAssign: cst.LeftShift,
    cst.RightShiftAssign: cst.RightShift,
    cst.BitAndAssign: cst.BitAnd,
    cst.BitOrAssign: cst.BitOr,
    cst.BitXorAssign: cst.BitXor,
}


def strip_position(node: cst.CSTNode) -> cst.CSTNode:
    """A structural copy: reusing a parsed node twice in one tree confuses identity-based edits."""
    return node.deep_clone()


def parenthesized(expr: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(expr, _LOOSE_BINDING) and not expr.lpar:
        return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return expr


def assign(target: cst.BaseAssignTargetExpression, value: cst.BaseExpression) -> cst.Assign:
    return cst.Assign(targets=[cst.AssignTarget(target=strip_position(target))], value=value)


def clone_of(expr: cst.BaseExpression) -> cst.Call:
    """``expr.clone()``"""
    return method_call(expr, "clone", ())


def method_call(receiver: cst.BaseExpression, method: str, args) -> cst.Call:
    receiver = strip_position(receiver)
    if isinstance(receiver, _LOOSE_BINDING) and not receiver.lpar:
        receiver = receiver.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.Call(func=cst.Attribute(value=receiver, attr=cst.Name(method)), args=list(args))


def subscript_root(expr: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """``x`` for ``x[i][j]``; ``self.buf`` for ``self.buf[i]``; None for ``f()[i]``."""
    node = expr
    while isinstance(node, cst.Subscript):
        node = node.value
    if is_assignable(node):
        return node
    return None


def is_assignable(expr: cst.BaseExpression) -> bool:
    """A plain name or a chain of attributes on a name (``self.h``), without calls."""
    node = expr
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name)


def touches_data(expr: cst.BaseExpression) -> bool:
    """``x.data``, ``x.data[i]``, ``x.data.t()``: GF103's domain, not the generic rules'."""
    return attribute_in_chain(expr, "data")


def rebinding_safety(
    ctx: RuleContext, target: cst.BaseExpression, site: cst.CSTNode, kind: TensorKind
) -> tuple[FixSafety, str]:
    """Safety of replacing an in-place write on ``target`` by rebinding it, and why."""
    verdict = ctx.rebinding(target, site)
    if not verdict.safe:
        return FixSafety.UNSAFE, verdict.reason
    if kind is not TensorKind.TENSOR:
        return FixSafety.UNSAFE, "gradfix could not tell that the target is a tensor"
    return FixSafety.SAFE, ""


def previous_statement_clones(ctx: RuleContext, statement: cst.CSTNode, root: cst.BaseExpression) -> bool:
    """True when the statement just before ``statement`` is ``root = root.clone()``.

    That clone is gradfix's own rewrite (or the author's): in-place writes on a
    fresh clone are legal under autograd, so the rule must not fire again.
    """
    line = ctx.parent(statement)
    if isinstance(line, cst.SimpleStatementLine):
        body = line.body
        index = next(i for i, s in enumerate(body) if s is statement)
        if index > 0:
            return _is_self_clone(body[index - 1], root)
        block = ctx.parent(line)
        siblings = getattr(block, "body", None)
        if not isinstance(siblings, (list, tuple)):
            return False
        position = next((i for i, s in enumerate(siblings) if s is line), 0)
        if position == 0:
            return False
        previous = siblings[position - 1]
        return isinstance(previous, cst.SimpleStatementLine) and _is_self_clone(previous.body[-1], root)
    if isinstance(line, cst.SimpleStatementSuite):
        index = next(i for i, s in enumerate(line.body) if s is statement)
        return index > 0 and _is_self_clone(line.body[index - 1], root)
    return False


def _is_self_clone(statement: cst.BaseSmallStatement, root: cst.BaseExpression) -> bool:
    if not isinstance(statement, cst.Assign) or len(statement.targets) != 1:
        return False
    target = statement.targets[0].target
    value = statement.value
    return (
        target.deep_equals(root)
        and isinstance(value, cst.Call)
        and isinstance(value.func, cst.Attribute)
        and value.func.attr.value == "clone"
        and value.func.value.deep_equals(root)
    )


def rebind_in_place(
    ctx: RuleContext,
    node: cst.CSTNode,
    target: cst.BaseExpression,
    new_value: cst.BaseExpression,
    kind: TensorKind,
    message: str,
    imports: Sequence[str] = (),
    level: Level = Level.ERROR,
) -> Report:
    """The report for an in-place call ``node`` that writes ``target``, fixed as ``target = new_value``.

    As a statement of its own the call is replaced; where its value is used
    (``y = x.add_(1)``, ``return x.mul_(2)``, ``f(x.relu_())``) the assignment is
    hoisted before the statement and the call replaced by ``target``. Where no
    statement can hold it, the finding is display-only.
    """
    name = ctx.code(target)
    shown = ctx.code(new_value)
    title = f"Rewrite as `{name} = {shown if len(shown) < 50 else '...'}`"
    statement = ctx.parent(node)
    safety, reason = rebinding_safety(ctx, target, node, kind)
    if isinstance(statement, cst.Expr):
        edits: tuple = (ReplaceNode(statement, assign(target, new_value)),)
        anchor: cst.CSTNode = statement
    else:
        site = ctx.hoist_site(node)
        if site.anchor is None:
            return Report(node, f"{message}; no automatic fix {site.reason}: compute it out of place in a statement before",
                          target=target, level=level)
        if safety is FixSafety.SAFE and reads_before(ctx, node, site.anchor, target):
            safety, reason = FixSafety.UNSAFE, "the statement reads the tensor before the in-place call"
        edits = (InsertBefore(site.anchor, (assign(target, new_value),)), ReplaceNode(node, strip_position(target)))
        anchor = site.anchor
    edits += tuple(EnsureImport(module) for module in imports)
    if reason:
        message += f" (fix is unsafe: {reason})"
    return Report(node, message, Fix(title, edits, safety), statement=anchor, target=target, level=level)


def reads_before(ctx: RuleContext, node: cst.CSTNode, anchor: cst.CSTNode, root: cst.BaseExpression) -> bool:
    """Does the statement evaluate something before ``node`` that could see the change?"""
    start = ctx.start(node)
    root_code = ctx.code(root)
    found = False

    class Finder(cst.CSTVisitor):
        def on_visit(self, other: cst.CSTNode) -> bool:
            nonlocal found
            if other is node or found:
                return False
            if isinstance(other, (cst.Name, cst.Attribute)) and ctx.code(other) == root_code:
                if ctx.start(other) < start:
                    found = True
            if isinstance(other, cst.Call) and ctx.start(other) < start and not ctx.is_inside(node, other):
                found = True
            return True

    if isinstance(anchor, cst.If):
        evaluated_first: cst.CSTNode = anchor.test
    elif isinstance(anchor, cst.For):
        evaluated_first = anchor.iter
    elif isinstance(anchor, (cst.Assign, cst.AnnAssign)) and anchor.value is not None:
        evaluated_first = anchor.value  # targets are assigned after the value is computed
    else:
        evaluated_first = anchor
    evaluated_first.visit(Finder())
    return found


# --- writing into a clone -------------------------------------------------------------------

# Reads of a tensor's metadata: they give integers and booleans, which no backward saves.
METADATA_ATTRIBUTES = frozenset({"shape", "size", "dtype", "device", "ndim", "dim", "numel", "requires_grad", "is_cuda"})


def reads(ctx: RuleContext, expr: cst.CSTNode, root: cst.BaseExpression) -> bool:
    """Does ``expr`` read ``root``'s values (``h``, ``self.h``) where an op could save them?

    Reads inside an index (``b[x < 0]``) and of metadata (``x.shape``, ``x.size(0)``)
    give integers and booleans, which no backward saves.
    """
    root_code = ctx.code(root)
    found = False

    class Finder(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            nonlocal found
            if isinstance(node, cst.SubscriptElement):
                return False
            if isinstance(node, cst.Attribute) and node.attr.value in METADATA_ATTRIBUTES and ctx.code(node.value) == root_code:
                return False
            if isinstance(node, (cst.Name, cst.Attribute)) and ctx.code(node) == root_code:
                found = True
            return not found

    expr.visit(Finder())
    return found


def fresh_name(ctx: RuleContext, base: str) -> str:
    """A name nothing in the module uses: ``base``, ``base_1``, ...

    Read from the text the module was focused from (``ctx.source``), as a word anywhere in it,
    comments and strings too: the pick is then the same whatever definitions the analysed
    module leaves out, and never a name one of them uses.
    """

    def taken(name: str) -> bool:
        return re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", ctx.source) is not None

    candidate, n = base, 0
    while taken(candidate):
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def clone_first(
    ctx: RuleContext, statement: cst.BaseSmallStatement, root: cst.BaseExpression, value: Optional[cst.BaseExpression]
) -> tuple[tuple, str]:
    """Edits that put ``root = root.clone()`` before ``statement``, and the fix's title.

    When the assigned ``value`` reads ``root`` (``h[t + 1] = torch.tanh(h[t] @ w)``),
    it is computed into a fresh name first: evaluated after the clone, an op such as
    ``@`` would save a view of the clone that the write then modifies.
    """
    base = root.attr.value if isinstance(root, cst.Attribute) else ctx.code(root)
    clone = assign(root, clone_of(root))
    if value is not None and reads(ctx, value, root):
        temp = fresh_name(ctx, f"{base}_value")
        edits: tuple = (
            InsertBefore(statement, (assign(cst.Name(temp), strip_position(value)), clone)),
            ReplaceNode(value, cst.Name(temp)),
        )
        return edits, f"Compute the value into `{temp}`, then clone `{ctx.code(root)}` before writing into it"
    return (InsertBefore(statement, (clone,)),), f"Clone `{ctx.code(root)}` before writing into it"


def without_argument(call: cst.Call, arg: cst.Arg, keep_as: Optional[cst.BaseExpression] = None) -> cst.Call:
    """``call`` without ``arg``; a positional argument followed by others becomes ``keep_as`` instead."""
    args = list(call.args)
    index = next(i for i, a in enumerate(args) if a is arg)
    later_positional = any(a.keyword is None and not a.star for a in args[index + 1:])
    if arg.keyword is None and later_positional:
        if keep_as is None:
            raise ValueError("a positional argument with others after it can only be replaced")
        args[index] = arg.with_changes(value=keep_as)
    else:
        del args[index]
        if index == len(args) and args:
            args[-1] = args[-1].with_changes(comma=arg.comma)
    return strip_position(call.with_changes(args=args))  # type: ignore[return-value]
