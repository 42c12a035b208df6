"""GF101: augmented assignment on a tensor (``x += y``)."""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ..context import RuleContext
from ..model import Example, Fix, InsertBefore, Report, ReplaceNode
from ..rewrite import (
    AUGMENTED_TO_BINARY,
    assign,
    clone_of,
    is_assignable,
    parenthesized,
    previous_statement_clones,
    rebinding_safety,
    strip_position,
    subscript_root,
    touches_data,
)
from ..optable import INPLACE_OPERATORS
from .. import prescreen as text
from ..rule import Rule
from ..tensors import TensorKind


def _operator_text(node: cst.AugAssign) -> str:
    return cst.Module([]).code_for_node(node.operator).strip()


class AugmentedAssignment(Rule):
    code = "GF101"
    name = "augmented-assignment-on-tensor"
    why = "`x += y` on a tensor is an in-place write that autograd may reject or that corrupts a saved tensor."
    explanation = (
        "On a tensor, `x += y` calls `x.add_(y)`: it overwrites `x`'s memory. If `x` is a leaf that "
        "requires grad, torch raises `a leaf Variable that requires grad is being used in an in-place "
        "operation` at that line. If an earlier operation saved `x` for its backward (`sigmoid`, `exp`, "
        "`tanh`, a matrix product), `backward()` raises `one of the variables needed for gradient "
        "computation has been modified by an inplace operation`, far from the line that caused it. "
        "`x = x + y` computes the same values in a new tensor and leaves the saved one intact.\n\n"
        "For an indexed target (`x[i] += y`) gradfix does not emit `x[i] = x[i] + y`, which is still an "
        "in-place write (`index_put_`) and fails in the same way; it clones first: `x = x.clone()` then "
        "`x[i] += y`, which writes into the fresh clone that no backward has saved.\n\n"
        "Which operators write in place is read from torch (`scripts/generate_optable.py`): in "
        "torch 2.13 `torch.Tensor` has no `__imatmul__`, so `x @= w` already means `x = x @ w` and is "
        "not reported."
    )
    not_flagged = (
        "Plain Python values (`i += 1`, `total += loss.item()`, `lst += [x]`); code under "
        "`torch.no_grad()`, `torch.inference_mode()`, `torch.set_grad_enabled(False)`; initializers; "
        "optimizer `step()`; `autograd.Function` methods; `.grad` buffers; `.data` targets (GF103)."
    )
    fix_safety = (
        "Safe when the written name is a local that nothing else can see: not a parameter, not global, "
        "not used by an inner function, bound to a fresh tensor, and not shared (stored, viewed, passed to "
        "unknown code) before the write or in the same loop. Unsafe for attributes (`self.h`), parameters, "
        "possible aliases, and values gradfix cannot prove are tensors: there the caller or an alias may have "
        "relied on the mutation. Note also that an out-of-place operation follows type promotion "
        "(a float32 tensor plus a float64 tensor gives float64) where the in-place one kept the dtype."
    )
    node_types = (cst.AugAssign,)
    prescreen = text.AUGMENTED_ASSIGNMENT
    examples = (
        Example(
            before="import torch\ndef f(a):\n    x = torch.sigmoid(a)\n    x *= 2\n    return x\n",
            after="import torch\ndef f(a):\n    x = torch.sigmoid(a)\n    x = x * 2\n    return x\n",
        ),
        Example(
            before="import torch\ndef f(a):\n    x = torch.exp(a)\n    x[0] += 1\n    return x\n",
            after="import torch\ndef f(a):\n    x = torch.exp(a)\n    x = x.clone()\n    x[0] += 1\n    return x\n",
        ),
        Example(
            before="import torch\ndef f(h: torch.Tensor, y):\n    h += y\n    return h\n",
            after="import torch\ndef f(h: torch.Tensor, y):\n    h = h + y\n    return h\n",
            unsafe_fixes=True,
            fix_warnings=True,
        ),
        Example(before="import torch\ndef f(xs):\n    total = 0\n    for x in xs:\n        total += x.item()\n    return total\n", findings=0),
        Example(before="import torch\n@torch.no_grad()\ndef f(p, g):\n    p += g\n", findings=0),
    )

    def check(self, node: cst.CSTNode, ctx: RuleContext) -> Iterator[Report]:
        assert isinstance(node, cst.AugAssign)
        target = node.target
        if touches_data(target):
            return
        op = _operator_text(node)
        if op not in INPLACE_OPERATORS:
            return  # e.g. `@=`: torch.Tensor has no __imatmul__, so Python already rebinds
        if isinstance(target, cst.Subscript):
            yield from self._check_subscript(node, target, op, ctx)
            return
        if not is_assignable(target):
            return
        kind = ctx.tensor_kind(target)
        value_kind = ctx.tensor_kind(node.value)
        not_tensor = kind is TensorKind.NOT_TENSOR or (kind is TensorKind.UNKNOWN and value_kind is TensorKind.NOT_TENSOR)
        if not_tensor and not ctx.proven(node):  # a traced run saw a tensor there
            return
        level, why = ctx.hazard(target, node)
        if level is None:
            return
        binary = AUGMENTED_TO_BINARY[type(node.operator)]
        new_value = cst.BinaryOperation(
            left=strip_position(target),
            operator=binary(),
            right=parenthesized(strip_position(node.value)),
        )
        safety, reason = rebinding_safety(ctx, target, node, kind)
        name = ctx.code(target)
        title = f"Rewrite `{name} {op} ...` as `{name} = {name} {op[:-1]} ...`"
        message = f"in-place `{op}` on tensor `{name}`: {why}"
        if reason:
            message += f" (fix is unsafe: {reason})"
        yield Report(
            node=node,
            message=message,
            fix=Fix(title, (ReplaceNode(node, assign(target, new_value)),), safety),
            target=target,
            level=level,
        )

    def _check_subscript(self, node: cst.AugAssign, target: cst.Subscript, op: str, ctx: RuleContext) -> Iterator[Report]:
        root = subscript_root(target)
        kind = ctx.tensor_kind(root if root is not None else target.value)
        if kind is TensorKind.NOT_TENSOR and not ctx.proven(node):
            return
        if kind is TensorKind.UNKNOWN and ctx.tensor_kind(node.value) is not TensorKind.TENSOR:
            return  # `counts[k] += 1` on dicts and lists is the common case
        level, why = ctx.hazard(root if root is not None else target.value, node)
        if level is None:
            return
        name = ctx.code(target)
        message = f"in-place `{op}` on an indexed tensor `{name}`: {why}"
        if root is None:
            yield Report(node=node, message=message + "; clone the tensor before writing into it", target=target, level=level)
            return
        if previous_statement_clones(ctx, node, root):
            return
        root_name = ctx.code(root)
        safety, reason = rebinding_safety(ctx, root, node, kind)
        if reason:
            message += f" (fix is unsafe: {reason})"
        title = f"Clone `{root_name}` before the indexed `{op}`"
        edit = InsertBefore(node, (assign(root, clone_of(root)),))
        yield Report(node=node, message=message, fix=Fix(title, (edit,), safety), target=target, level=level)
