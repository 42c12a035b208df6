"""GF102: in-place tensor method (``x.add_(y)``)."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import libcst as cst

from ..aliasing import ALIASING_METHODS
from ..context import RuleContext
from ..inplace_chain import InplaceChain, inplace_chain, inplace_method_name, out_of_place
from ..model import EnsureImport, Example, Fix, FixSafety, InsertBefore, Report, ReplaceNode
from ..optable import INPLACE_METHODS
from ..rewrite import (
    assign,
    rebind_in_place,
    clone_of,
    is_assignable,
    previous_statement_clones,
    rebinding_safety,
    touches_data,
)
from .. import prescreen as text
from ..rule import Rule
from ..tensors import TensorKind

# torch functions whose result is a fresh tensor with no autograd history
# (unless asked for with requires_grad=True): writing into it is always legal.
FRESH_FACTORIES = frozenset(
    {"empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
     "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "arange",
     "linspace", "logspace", "eye", "tensor", "as_tensor", "from_numpy", "empty_strided",
     "new_empty", "new_zeros", "new_ones", "new_full", "new_tensor", "clone"}
)


class InplaceMethod(Rule):
    code = "GF102"
    name = "inplace-tensor-method"
    why = "`x.add_(y)` and other `*_` methods overwrite a tensor that autograd may need, or a leaf that requires grad."
    explanation = (
        "Tensor methods ending in `_` write their result into the tensor itself. On a leaf that requires grad "
        "torch raises `a leaf Variable that requires grad is being used in an in-place operation` at once; on a "
        "tensor that an earlier operation saved for backward (the output of `sigmoid`, `exp`, `tanh`, `softmax`, "
        "or an input of `mul`, `matmul`, ...) `backward()` raises `one of the variables needed for gradient "
        "computation has been modified by an inplace operation`. The out-of-place twin (`x = x.add(y)`) computes "
        "the same values into a new tensor.\n\n"
        "The list of in-place methods and their twins is generated from torch's operator registry "
        "(`scripts/generate_optable.py`). Methods without a twin are rewritten explicitly: `zero_()` "
        "becomes `torch.zeros_like(x)`, `fill_(v)` becomes `torch.full_like(x, v)`, `copy_(src)`, `normal_()` "
        "and the other fills write into a fresh `torch.empty_like(x)`, and `fill_diagonal_` into a clone. "
        "In-place comparisons (`x.gt_(0)`) keep the tensor's dtype, so their rewrite casts back "
        "(`x = x.gt(0).to(x.dtype)`). When the call is part of a larger expression (`y = x.add_(1)`, "
        "`return x.mul_(2)`, `f(x.relu_())`) the rewrite is hoisted into a statement before it; where Python "
        "gives no such place (a lambda, a comprehension, a conditional expression, the right side of `and`), "
        "the finding is display-only."
    )
    not_flagged = (
        "Methods that change autograd metadata only (`requires_grad_`, `detach_`); writes into a fresh "
        "factory result (`torch.zeros(3).fill_(1)`); module functions such as `nn.init.normal_` (GF107); "
        "no-grad blocks, initializers, optimizer steps, `autograd.Function` methods, `.grad` buffers and "
        "`.data` targets (GF103)."
    )
    fix_safety = (
        "Safe when the written name is a local that nothing else can see: not a parameter, not global, "
        "not used by an inner function, bound to a fresh tensor, and not shared (stored, viewed, passed to "
        "unknown code) before the write or in the same loop. Unsafe for attributes (`self.h`), parameters, "
        "possible aliases, and values gradfix cannot prove are tensors: there the caller or an alias may have "
        "relied on the mutation. Note also that an out-of-place operation follows type promotion "
        "(a float32 tensor plus a float64 tensor gives float64) where the in-place one kept the dtype."
        "Display-only inside a lambda, comprehension, conditional expression, the right side of `and`/`or`, an `elif` or `while` test, and for `resize_`/`set_`, which have no out-of-place form."
    )
    node_types = (cst.Call,)
    prescreen = text.INPLACE_NAME
    examples = (
        Example(
            before="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    y.mul_(2)\n    return y\n",
            after="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    y = y.mul(2)\n    return y\n",
        ),
        Example(
            before="import torch\ndef f(a):\n    y = torch.exp(a)\n    return y.add_(1)\n",
            after="import torch\ndef f(a):\n    y = torch.exp(a)\n    y = y.add(1)\n    return y\n",
        ),
        Example(
            before="import torch\ndef f(a):\n    y = torch.tanh(a)\n    y.mul_(2).add_(1)\n    return y\n",
            after="import torch\ndef f(a):\n    y = torch.tanh(a)\n    y = y.mul(2).add(1)\n    return y\n",
        ),
        Example(
            before="import torch\ndef f(a):\n    return torch.sigmoid(a).mul_(2)\n",
            after="import torch\ndef f(a):\n    return torch.sigmoid(a).mul(2)\n",
        ),
        Example(
            before="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    g = lambda: y.add_(1)\n    return g\n",
            after=None,
        ),
        Example(before="import torch\ndef f(p):\n    p.grad.zero_()\n    p.requires_grad_(True)\n", findings=0),
        Example(before="import torch\nfrom torch import nn\ndef init(w):\n    nn.init.normal_(w)\n    return torch.zeros(3).fill_(1)\n", findings=0),
    )

    def check(self, node: cst.CSTNode, ctx: RuleContext) -> Iterator[Report]:
        assert isinstance(node, cst.Call)
        method = inplace_method_name(node)
        if method is None:
            return
        if is_assignable(node.func) and ctx.imported_names(node.func):
            return  # torch.relu_(x), nn.init.normal_(w): module functions, not tensor methods
        parent = ctx.parent(node)
        if isinstance(parent, cst.Attribute) and inplace_method_name(ctx.parent(parent)) is not None:
            return  # an inner link of a chain: reported with the outermost call
        chain = inplace_chain(node)
        root = chain.root
        if touches_data(root) or self._is_fresh(root, ctx):
            return
        kind = ctx.tensor_kind(root)
        if kind is TensorKind.NOT_TENSOR and not ctx.proven(node):
            return
        written = root
        while isinstance(written, cst.Subscript):
            written = written.value  # x[0].mul_(2) writes into x
        level, why = ctx.hazard(written, node)
        if level is None:
            return
        methods = ", ".join(f"`{inplace_method_name(link)}`" for link in chain.links)
        subject = ctx.code(root)
        if len(subject) > 40:
            subject = subject[:37] + "..."
        message = f"in-place {methods} on `{subject}`: {why}"
        if is_assignable(root):
            report = self._rebind(node, chain, kind, message, ctx)
        elif isinstance(root, cst.Subscript):
            report = self._clone_first(node, chain, kind, message, ctx)
        else:
            report = self._temporary(node, chain, kind, message, ctx)
        if report is not None:
            yield dataclasses.replace(report, level=level)

    # -- the three shapes of receiver ----------------------------------------------

    def _rebind(self, node: cst.Call, chain: InplaceChain, kind: TensorKind, message: str, ctx: RuleContext) -> Report:
        """``x.add_(1)`` becomes ``x = x.add(1)``, hoisted before the statement if need be."""
        new_value, imports, problem = out_of_place(chain, ctx)
        if new_value is None:
            return Report(node, f"{message}; {problem}", target=chain.root)
        return rebind_in_place(ctx, node, chain.root, new_value, kind, message, imports)

    def _clone_first(self, node: cst.Call, chain: InplaceChain, kind: TensorKind, message: str, ctx: RuleContext) -> Optional[Report]:
        """``x[0].mul_(2)`` writes through a view: clone ``x`` first, as GF101 does."""
        view = chain.root
        base = view
        while isinstance(base, cst.Subscript):
            base = base.value
        if not is_assignable(base):
            return Report(node, f"{message}; clone the tensor before writing into it", target=view)
        site = ctx.hoist_site(node)
        if site.anchor is None:
            return Report(node, f"{message}; no automatic fix {site.reason}", target=view)
        if previous_statement_clones(ctx, site.anchor, base):
            return None  # already writing into a fresh clone
        base_kind = ctx.tensor_kind(base)
        safety, reason = rebinding_safety(ctx, base, node, base_kind)
        if reason:
            message += f" (fix is unsafe: {reason})"
        title = f"Clone `{ctx.code(base)}` before writing into it"
        edit = InsertBefore(site.anchor, (assign(base, clone_of(base)),))
        return Report(node, message, Fix(title, (edit,), safety), statement=site.anchor, target=view)

    def _temporary(self, node: cst.Call, chain: InplaceChain, kind: TensorKind, message: str, ctx: RuleContext) -> Report:
        """``torch.sigmoid(a).mul_(2)``: nothing else names the tensor, use the twin in place."""
        statement = ctx.parent(node)
        if isinstance(statement, cst.Expr):
            return Report(node, f"{message}; the result is discarded, so the call only matters through a view it writes into", target=chain.root)
        if any(INPLACE_METHODS[inplace_method_name(link)]["keeps_dtype"] for link in chain.links):  # type: ignore[index]
            return Report(node, f"{message}; compute it out of place and cast back to the original dtype", target=chain.root)
        new_value, imports, problem = out_of_place(chain, ctx)
        if new_value is None:
            return Report(node, f"{message}; {problem}", target=chain.root)
        safety = FixSafety.SAFE
        reason = ""
        if kind is not TensorKind.TENSOR:
            safety, reason = FixSafety.UNSAFE, "gradfix could not tell that the receiver is a tensor"
        elif self._may_alias(chain.root, ctx):
            safety, reason = FixSafety.UNSAFE, "the receiver may be a view of another tensor, which is no longer modified"
        if reason:
            message += f" (fix is unsafe: {reason})"
        edits = (ReplaceNode(node, new_value),) + tuple(EnsureImport(m) for m in imports)
        title = "Use the out-of-place " + ", ".join(f"`{inplace_method_name(link)[:-1]}`" for link in chain.links)  # type: ignore[index]
        return Report(node, message, Fix(title, edits, safety), target=chain.root)

    # -- helpers -----------------------------------------------------------------

    def _is_fresh(self, expr: cst.BaseExpression, ctx: RuleContext) -> bool:
        """A factory call without requires_grad=True: writing into it is always legal."""
        if not isinstance(expr, cst.Call):
            return False
        func = expr.func
        names = list(ctx.qualified_names(func))
        last = func.attr.value if isinstance(func, cst.Attribute) else getattr(func, "value", "")
        is_factory = any(n.startswith("torch.") and n.rsplit(".", 1)[-1] in FRESH_FACTORIES for n in names)
        is_method_factory = isinstance(func, cst.Attribute) and last in FRESH_FACTORIES and last.startswith(("new_", "clone"))
        if not (is_factory or is_method_factory):
            return False
        for arg in expr.args:
            if arg.keyword is not None and arg.keyword.value == "requires_grad":
                return isinstance(arg.value, cst.Name) and arg.value.value == "False"
        return True

    def _may_alias(self, expr: cst.BaseExpression, ctx: RuleContext) -> bool:
        if isinstance(expr, cst.Call):
            func = expr.func
            if isinstance(func, cst.Attribute) and not ctx.imported_names(func):
                return func.attr.value in ALIASING_METHODS or func.attr.value not in INPLACE_METHODS and ctx.tensor_kind(expr) is not TensorKind.TENSOR
            names = [n.rsplit(".", 1)[-1] for n in ctx.qualified_names(func)]
            return not names or any(n in ALIASING_METHODS for n in names)
        return not isinstance(expr, (cst.BinaryOperation, cst.UnaryOperation))
