"""GF107: in-place torch function (``torch.relu_(x)``, ``F.elu_(x)``)."""

from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from ..context import RuleContext
from ..model import EnsureImport, Example, Fix, FixSafety, Report, ReplaceNode
from ..optable import INPLACE_FUNCTIONS, NO_REWRITE
from ..rewrite import is_assignable, rebind_in_place, strip_position, touches_data
from .. import prescreen as text
from ..rule import Rule
from ..tensors import TensorKind


def _twin_call(call: cst.Call, twin: str, ctx: RuleContext) -> tuple[cst.Call, tuple[str, ...]]:
    """The same call to the out-of-place twin, spelled as the user spelled the original."""
    func = call.func
    twin_name = twin.rsplit(".", 1)[-1]
    if isinstance(func, cst.Attribute):
        return call.with_changes(func=func.with_changes(attr=cst.Name(twin_name))), ()
    # `from torch import relu_`: the twin may not be imported, so spell it through torch.
    module = twin.rsplit(".", 1)[0]
    torch_name = ctx.torch_module_name()
    imports: tuple[str, ...] = ()
    if torch_name is None:
        torch_name, imports = "torch", ("torch",)
    dotted: cst.BaseExpression = cst.Name(torch_name)
    for part in module.split(".")[1:] + [twin_name]:
        dotted = cst.Attribute(value=dotted, attr=cst.Name(part))
    return call.with_changes(func=dotted), imports


def _written_argument(call: cst.Call) -> Optional[cst.BaseExpression]:
    for arg in call.args:
        if arg.keyword is None and arg.star == "":
            return arg.value
        if arg.keyword is not None and arg.keyword.value in ("input", "self"):
            return arg.value
    return None


class InplaceFunction(Rule):
    code = "GF107"
    name = "inplace-torch-function"
    why = "`torch.relu_(x)`, `F.elu_(x)` and other in-place functions overwrite their argument, which autograd may need."
    explanation = (
        "The module-level in-place functions (`torch.relu_`, `torch.sigmoid_`, `torch.clamp_`, `F.relu_`, "
        "`F.leaky_relu_`, `F.elu_`, `F.hardtanh_`, ...) write their result into their first argument. On a leaf "
        "that requires grad torch raises `a leaf Variable that requires grad is being used in an in-place "
        "operation`; on a tensor an earlier op saved for backward, `backward()` raises `one of the variables "
        "needed for gradient computation has been modified by an inplace operation`. The out-of-place twin, "
        "assigned back (`x = torch.relu(x)`), computes the same values into a new tensor.\n\n"
        "The list of functions and twins comes from the installed torch (`scripts/generate_optable.py`): every "
        "public `torch.*_` and `torch.nn.functional.*_` function with a same-named out-of-place twin. "
        "`nn.init.*_` functions are initializers, not findings."
    )
    not_flagged = (
        "Writes into tensors no backward needs (`F.relu_` on a batch-norm or convolution output, as in ResNet "
        "blocks); `nn.init.*_`; no-grad blocks, initializers, optimizer steps and `autograd.Function` methods."
    )
    fix_safety = (
        "Safe when the argument is a local name bound to a fresh tensor that nothing else can see; unsafe for "
        "parameters, attributes and possible aliases (their other holders saw the in-place change). A call on a "
        "temporary (`F.relu_(torch.sigmoid(x))`) becomes the twin in place, safe. Display-only inside a lambda, "
        "comprehension or conditional expression, and for `torch.as_strided_`."
    )
    node_types = (cst.Call,)
    prescreen = text.INPLACE_NAME
    examples = (
        Example(
            before="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    torch.clamp_(y, 0.1, 0.9)\n    return y\n",
            after="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    y = torch.clamp(y, 0.1, 0.9)\n    return y\n",
        ),
        Example(
            before="import torch\nimport torch.nn.functional as F\ndef f(a):\n    return F.relu_(torch.exp(a))\n",
            after="import torch\nimport torch.nn.functional as F\ndef f(a):\n    return F.relu(torch.exp(a))\n",
        ),
        Example(
            before=(
                "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\nbn = nn.BatchNorm1d(4)\n"
                "conv = nn.Conv1d(4, 4, 1)\n\ndef block(x, identity):\n    out = bn(conv(x))\n"
                "    out += identity\n    out = F.relu_(out)\n    return out\n"
            ),
            findings=0,
        ),
    )

    def check(self, node: cst.CSTNode, ctx: RuleContext) -> Iterator[Report]:
        assert isinstance(node, cst.Call)
        twin = next((INPLACE_FUNCTIONS[n] for n in ctx.imported_names(node.func) if n in INPLACE_FUNCTIONS), None)
        if twin is None:
            return
        target = _written_argument(node)
        if target is None or touches_data(target):
            return
        kind = ctx.tensor_kind(target)
        if kind is TensorKind.NOT_TENSOR and not ctx.proven(node):
            return
        level, why = ctx.hazard(target, node)
        if level is None:
            return
        function = ctx.code(node.func)
        message = f"in-place `{function}` on `{ctx.code(target)[:40]}`: {why}"
        if twin.rsplit(".", 1)[-1] + "_" in NO_REWRITE:
            yield Report(node, f"{message}; it has no out-of-place form", target=target, level=level)
            return
        new_call, imports = _twin_call(node, twin, ctx)
        if is_assignable(target):
            yield rebind_in_place(ctx, node, target, strip_position(new_call), kind, message, imports, level)
            return
        # A temporary argument: nothing else names it, so the twin can stand in place.
        if isinstance(ctx.parent(node), cst.Expr):
            yield Report(node, f"{message}; the result is discarded", target=target, level=level)
            return
        safety = FixSafety.SAFE if kind is TensorKind.TENSOR else FixSafety.UNSAFE
        edits = (ReplaceNode(node, new_call),) + tuple(EnsureImport(m) for m in imports)
        title = f"Use the out-of-place `{twin.rsplit('.', 1)[-1]}`"
        yield Report(node, message, Fix(title, edits, safety), target=target, level=level)
