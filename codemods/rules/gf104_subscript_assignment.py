"""GF104: subscript and masked assignment into a tensor (``x[idx] = v``)."""

from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst
from libcst.metadata import Assignment

from ..context import RuleContext
from ..model import EnsureImport, Example, Fix, FixSafety, Level, Report, ReplaceNode
from ..rewrite import (
    assign,
    clone_first,
    method_call,
    previous_statement_clones,
    rebinding_safety,
    strip_position,
    subscript_root,
    touches_data,
)
from .. import prescreen as text
from ..rule import Rule
from ..tensors import TensorKind

# Elementwise predicates: `torch.isnan(x)` and `x.isnan()` have x's shape and dtype bool.
BOOL_FUNCTIONS = frozenset(
    {"isnan", "isinf", "isfinite", "isposinf", "isneginf", "isreal", "signbit", "logical_not",
     "logical_and", "logical_or", "logical_xor", "eq", "ne", "lt", "le", "gt", "ge", "greater",
     "greater_equal", "less", "less_equal", "not_equal", "isclose"}
)
# Reductions over every element give a 0-dim tensor, which broadcasts to any shape.
FULL_REDUCTIONS = frozenset({"sum", "mean", "max", "min", "amax", "amin", "prod", "norm", "median", "std", "var"})
SCALAR_CONSTANTS = frozenset({"math.inf", "math.nan", "math.pi", "math.e", "numpy.inf", "numpy.nan", "numpy.pi", "numpy.e"})
_ELEMENTWISE_OPERATORS = (cst.BitAnd, cst.BitOr, cst.BitXor)
_PYTHON_COMPARISONS = (cst.In, cst.NotIn, cst.Is, cst.IsNot)
_STRINGS = (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)


def _index_elements(target: cst.Subscript) -> list[cst.BaseExpression]:
    return [element.slice.value for element in target.slice if isinstance(element.slice, cst.Index)]


def _has_string_key(target: cst.Subscript) -> bool:
    return any(isinstance(value, _STRINGS) for value in _index_elements(target))


def _is_array_index(target: cst.Subscript) -> bool:
    """``x[:, 0]``, ``x[..., i]``, ``x[None]``: syntax that dicts and lists do not take."""
    if len(target.slice) > 1:
        return any(
            isinstance(element.slice, cst.Slice)
            or (isinstance(element.slice, cst.Index) and isinstance(element.slice.value, (cst.Ellipsis,)))
            or (isinstance(element.slice, cst.Index) and isinstance(element.slice.value, cst.Name) and element.slice.value.value == "None")
            for element in target.slice
        )
    return False


def _single_binding(ctx: RuleContext, name: cst.Name) -> Optional[cst.BaseExpression]:
    """The value a local name is bound to, if it is bound exactly once by a plain assignment."""
    scope = ctx.scope(name)
    if scope is None:
        return None
    bindings = [a for a in scope[name.value] if isinstance(a, Assignment)]
    if len(bindings) != 1:
        return None
    target = ctx.parent(bindings[0].node)
    statement = ctx.parent(target) if isinstance(target, cst.AssignTarget) else None
    if isinstance(statement, cst.Assign) and len(statement.targets) == 1:
        return statement.value
    return None


def _bound_to_numpy(ctx: RuleContext, name: cst.Name) -> bool:
    """Is ``name`` bound somewhere in its scope to a numpy result (``np.zeros(n)``, ``np.array(x).reshape(...)``)?

    Torch code prepares index arrays with numpy; a name that ever holds an array is left alone.
    """
    scope = ctx.scope(name)
    if scope is None:
        return False
    for binding in scope[name.value]:
        if not isinstance(binding, Assignment):
            continue
        target = ctx.parent(binding.node)
        statement = ctx.parent(target) if isinstance(target, cst.AssignTarget) else None
        if isinstance(statement, cst.Assign) and _numpy_result(ctx, statement.value):
            return True
    return False


def _numpy_result(ctx: RuleContext, value: cst.BaseExpression) -> bool:
    while True:
        if isinstance(value, cst.Call):
            if any(n.startswith("numpy.") for n in ctx.qualified_names(value.func)):
                return True
            if isinstance(value.func, cst.Attribute):
                value = value.func.value  # np.array(x).reshape(...)
                continue
            return False
        if isinstance(value, cst.Subscript):
            value = value.value
            continue
        return False


def _call_name(ctx: RuleContext, call: cst.Call) -> Optional[str]:
    for name in ctx.qualified_names(call.func):
        if name.startswith("torch."):
            return name.rsplit(".", 1)[-1]
    if isinstance(call.func, cst.Attribute):
        return call.func.attr.value
    return None


def is_boolean_mask(ctx: RuleContext, expr: cst.BaseExpression, depth: int = 0) -> bool:
    """A comparison, ``~m``, ``a & b``/``a | b`` of such, an elementwise predicate, or a name bound to one."""
    if depth > 4:
        return False
    if isinstance(expr, cst.Comparison):
        if any(isinstance(c.operator, _PYTHON_COMPARISONS) for c in expr.comparisons):
            return False
        operands = [expr.left] + [c.comparator for c in expr.comparisons]
        return any(ctx.tensor_kind(o) is not TensorKind.NOT_TENSOR for o in operands)
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.BitInvert):
        inner = expr.expression
        return isinstance(inner, cst.Name) and ctx.tensor_kind(inner) is not TensorKind.NOT_TENSOR or is_boolean_mask(ctx, inner, depth + 1)
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, _ELEMENTWISE_OPERATORS):
        return is_boolean_mask(ctx, expr.left, depth + 1) and is_boolean_mask(ctx, expr.right, depth + 1)
    if isinstance(expr, cst.Call):
        name = _call_name(ctx, expr)
        if name in BOOL_FUNCTIONS or name == "bool" and isinstance(expr.func, cst.Attribute) and not expr.args:
            return ctx.tensor_kind(expr) is not TensorKind.NOT_TENSOR
    if isinstance(expr, cst.Name):
        value = _single_binding(ctx, expr)
        return value is not None and is_boolean_mask(ctx, value, depth + 1)
    return False


def _mask_has_shape_of(ctx: RuleContext, mask: cst.BaseExpression, root: cst.BaseExpression, depth: int = 0) -> bool:
    """Does ``mask`` certainly have ``root``'s shape whenever ``root[mask] = v`` runs?

    A boolean index must match the leading dimensions of the tensor; a mask built
    elementwise from the tensor itself (``x < 0``, ``torch.isnan(x)``, ``~(x > 1) & m``)
    covers all of them, so ``masked_fill``, which broadcasts from the right, sees the same mask.
    """
    if depth > 4:
        return False
    if isinstance(mask, cst.Comparison):
        operands = [mask.left] + [c.comparator for c in mask.comparisons]
        return any(o.deep_equals(root) for o in operands)
    if isinstance(mask, cst.UnaryOperation):
        return _mask_has_shape_of(ctx, mask.expression, root, depth + 1)
    if isinstance(mask, cst.BinaryOperation):
        return _mask_has_shape_of(ctx, mask.left, root, depth + 1) or _mask_has_shape_of(ctx, mask.right, root, depth + 1)
    if isinstance(mask, cst.Call):
        if isinstance(mask.func, cst.Attribute) and mask.func.value.deep_equals(root):
            return True
        return any(a.value.deep_equals(root) for a in mask.args)
    if isinstance(mask, cst.Name):
        value = _single_binding(ctx, mask)
        return value is not None and _mask_has_shape_of(ctx, value, root, depth + 1)
    return False


def _is_scalar(ctx: RuleContext, value: cst.BaseExpression) -> bool:
    if isinstance(value, (cst.Integer, cst.Float)):
        return True
    if isinstance(value, (cst.Name, cst.Attribute)) and any(n in SCALAR_CONSTANTS for n in ctx.qualified_names(value)):
        return True  # math.inf, np.nan
    if (
        isinstance(value, cst.Attribute) and value.attr.value in ("min", "max", "eps", "tiny")
        and isinstance(value.value, cst.Call)
        and any(n in ("torch.finfo", "torch.iinfo") for n in ctx.qualified_names(value.value.func))
    ):
        return True  # torch.finfo(x.dtype).min
    if isinstance(value, cst.UnaryOperation) and isinstance(value.operator, (cst.Minus, cst.Plus)):
        return _is_scalar(ctx, value.expression)
    if isinstance(value, _STRINGS) or isinstance(value, cst.Name) and value.value == "None":
        return False
    return ctx.tensor_kind(value) is TensorKind.NOT_TENSOR


def _where_value(ctx: RuleContext, value: cst.BaseExpression, mask: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """The tensor for ``torch.where(mask, <it>, x)`` when ``x[mask] = value``, if gradfix can tell it broadcasts.

    ``y[mask]`` with the same mask gives ``y``; a full reduction (``y.mean()``) or
    ``torch.tensor(number)`` is 0-dim and broadcasts as it is.
    """
    if isinstance(value, cst.Subscript) and len(value.slice) == 1 and isinstance(value.slice[0].slice, cst.Index):
        if value.slice[0].slice.value.deep_equals(mask) and ctx.tensor_kind(value.value) is not TensorKind.NOT_TENSOR:
            return value.value
        return None
    if isinstance(value, cst.Call) and ctx.tensor_kind(value) is not TensorKind.NOT_TENSOR:
        name = _call_name(ctx, value)
        if isinstance(value.func, cst.Attribute) and name in FULL_REDUCTIONS and not value.args:
            return value
        if name == "tensor" and len(value.args) == 1 and _is_scalar(ctx, value.args[0].value):
            return value
    return None


class SubscriptAssignment(Rule):
    code = "GF104"
    name = "subscript-assignment-on-tensor"
    why = "`x[idx] = v` writes into the tensor in place (`index_put_`), which autograd may reject or which corrupts a saved tensor."
    explanation = (
        "Assigning through an index (`x[mask] = 0`, `x[:, 0] = v`, `x[i] = row`) is an in-place write: torch runs "
        "`index_put_` or `copy_` on `x`'s memory. On a leaf that requires grad it raises `a leaf Variable that "
        "requires grad is being used in an in-place operation` at that line; on the output of an op whose backward "
        "needs it (`sigmoid`, `exp`, `softmax`, ...), or on a tensor an earlier op saved (`h[t] @ w` saves a view "
        "of `h`), `backward()` raises `one of the variables needed for gradient computation has been modified by "
        "an inplace operation`.\n\n"
        "gradfix rewrites the write out of place where torch has a function for it: a boolean mask with a scalar "
        "becomes `x = x.masked_fill(mask, v)`, a boolean mask with a tensor that broadcasts to `x` (`y[mask]` with "
        "the same mask, a full reduction, `torch.tensor(number)`) becomes `x = torch.where(mask, y, x)`. Every "
        "other index (slices, integers, index tensors, a mask with a tensor of unknown shape) is written into a "
        "fresh clone: `x = x.clone()` then `x[idx] = v`. gradfix never emits `x[idx] = x[idx] + y`-style forms, "
        "which are still in-place. When the value reads `x` itself (`h[t + 1] = torch.tanh(h[t] @ w)`) it is "
        "computed into a new name before the clone; otherwise the op would save a view of the clone that the write "
        "then modifies."
    )
    not_flagged = (
        "Dicts, lists and other containers (`outputs[name] = y`, `cache[\"k\"] = h`, `hs[t] = h` on a list): a "
        "string key is never a tensor index, and a container gradfix cannot prove to be a tensor needs tensor "
        "evidence (an array-style index such as `[:, 0]`, a boolean mask). Writes that autograd does not need to "
        "see: into a fresh buffer that nothing saved (`out = torch.zeros(n, d)` then `out[i] = ...`), no-grad "
        "blocks, initializers, optimizer steps, `autograd.Function` methods, `.grad` buffers. `.data[...]` targets "
        "are GF103's; `masked_fill_` and other in-place methods are GF102's."
    )
    fix_safety = (
        "Safe when the written name is a local that nothing else can see (as for GF101) and, for `masked_fill` "
        "and `torch.where`, the mask is built elementwise from the tensor itself (`x < 0`, `torch.isnan(x)`), so "
        "it has the tensor's shape. Unsafe for attributes, parameters and possible aliases (they no longer see the "
        "write), for values gradfix cannot prove are tensors, and for masks of unknown shape: `x[m] = v` with a "
        "mask of fewer dimensions selects whole rows, while `masked_fill` broadcasts the mask from the right. "
        "`torch.where` follows type promotion where the assignment casts to `x`'s dtype. Display-only when the "
        "tensor has no name to rebind (`f()[i] = v`) or the statement assigns several targets."
    )
    node_types = (cst.Assign,)
    prescreen = text.SUBSCRIPT_ASSIGNMENT
    examples = (
        Example(
            before="import torch\ndef f(a):\n    x = torch.exp(a)\n    x[x > 2] = 2.0\n    return x\n",
            after="import torch\ndef f(a):\n    x = torch.exp(a)\n    x = x.masked_fill(x > 2, 2.0)\n    return x\n",
        ),
        Example(
            before="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    y[:, 0] = 1.0\n    return y\n",
            after="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    y = y.clone()\n    y[:, 0] = 1.0\n    return y\n",
        ),
        Example(
            before="import torch\ndef f(a, b):\n    x = torch.tanh(a)\n    x[x < 0] = b[x < 0]\n    return x\n",
            after="import torch\ndef f(a, b):\n    x = torch.tanh(a)\n    x = torch.where(x < 0, b, x)\n    return x\n",
            findings=1,
        ),
        Example(
            before="import torch\ndef f(x, n):\n    out = torch.zeros(n, 3)\n    for i in range(n):\n        out[i] = x * i\n    stats = {}\n    stats[\"mean\"] = out.mean()\n    return out, stats\n",
            findings=0,
        ),
    )

    def check(self, node: cst.CSTNode, ctx: RuleContext) -> Iterator[Report]:
        assert isinstance(node, cst.Assign)
        targets = [t.target for t in node.targets if isinstance(t.target, cst.Subscript)]
        for target in targets:
            report = self._check_target(node, target, ctx, alone=len(node.targets) == 1)
            if report is not None:
                yield report

    def _check_target(self, node: cst.Assign, target: cst.Subscript, ctx: RuleContext, alone: bool) -> Optional[Report]:
        if touches_data(target) or _has_string_key(target):
            return None
        root = subscript_root(target)
        written = root if root is not None else target.value
        kind = ctx.tensor_kind(written)
        if kind is TensorKind.NOT_TENSOR and not ctx.proven(node):
            return None
        if kind is TensorKind.UNKNOWN and not self._tensor_evidence(node, target, root, ctx) and not ctx.proven(node):
            return None
        level, why = ctx.hazard(written, node)
        if level is None:
            return None
        name = ctx.code(target)
        if len(name) > 40:
            name = name[:37] + "..."
        message = f"assignment into `{name}` writes into the tensor in place: {why}"
        if root is None:
            return Report(node, message + "; clone the tensor into a name before writing into it", target=target, level=level)
        if not alone:
            return Report(node, message + "; assign one target per statement so that it can be rewritten", target=target, level=level)
        if previous_statement_clones(ctx, node, root):
            return None  # already writing into a fresh clone
        safety, reason = rebinding_safety(ctx, root, node, kind)
        mask = self._mask(target, root, ctx)
        if mask is not None:
            report = self._masked(node, target, root, mask, safety, reason, message, level, ctx)
            if report is not None:
                return report
        edits, title = clone_first(ctx, node, root, node.value)
        if reason:
            message += f" (fix is unsafe: {reason})"
        return Report(node, message, Fix(title, edits, safety), target=target, level=level)

    # -- helpers ---------------------------------------------------------------------

    def _tensor_evidence(self, node: cst.Assign, target: cst.Subscript, root: Optional[cst.BaseExpression], ctx: RuleContext) -> bool:
        """For a container gradfix cannot classify: is the index or value tensor-only?"""
        if isinstance(root, cst.Name) and _bound_to_numpy(ctx, root):
            return False  # `a = np.zeros(n)` then `a[a < 0] = 0`: an array, not a tensor
        if any(is_boolean_mask(ctx, value) for value in _index_elements(target)):
            return True
        return _is_array_index(target) and ctx.tensor_kind(node.value) is not TensorKind.NOT_TENSOR

    def _mask(self, target: cst.Subscript, root: cst.BaseExpression, ctx: RuleContext) -> Optional[cst.BaseExpression]:
        if target.value is not root or len(target.slice) != 1:
            return None
        element = target.slice[0].slice
        if isinstance(element, cst.Index) and element.star is None and is_boolean_mask(ctx, element.value):
            return element.value
        return None

    def _masked(
        self, node: cst.Assign, target: cst.Subscript, root: cst.BaseExpression, mask: cst.BaseExpression,
        safety: FixSafety, reason: str, message: str, level: Level, ctx: RuleContext,
    ) -> Optional[Report]:
        """``x = x.masked_fill(mask, v)`` or ``x = torch.where(mask, y, x)``; None: use the clone form."""
        value = node.value
        root_code = ctx.code(root)
        imports: tuple = ()
        if _is_scalar(ctx, value):
            new_value: cst.BaseExpression = method_call(root, "masked_fill", [cst.Arg(strip_position(mask)), cst.Arg(strip_position(value))])
            title = f"Rewrite as `{root_code} = {root_code}.masked_fill(...)`"
        else:
            source = _where_value(ctx, value, mask)
            if source is None:
                return None
            torch_name = ctx.torch_module_name()
            if torch_name is None:
                torch_name, imports = "torch", (EnsureImport("torch"),)
            new_value = cst.Call(
                func=cst.Attribute(value=cst.Name(torch_name), attr=cst.Name("where")),
                args=[cst.Arg(strip_position(mask)), cst.Arg(strip_position(source)), cst.Arg(strip_position(root))],
            )
            title = f"Rewrite as `{root_code} = torch.where(...)`"
        if safety is FixSafety.SAFE and not _mask_has_shape_of(ctx, mask, root):
            safety, reason = FixSafety.UNSAFE, (
                f"gradfix cannot tell that the mask has `{root_code}`'s shape; with fewer dimensions it selects "
                "whole rows, while the rewrite broadcasts it from the right"
            )
        if reason:
            message += f" (fix is unsafe: {reason})"
        edits = (ReplaceNode(node, assign(root, new_value)),) + imports
        return Report(node, message, Fix(title, edits, safety), target=target, level=level)
