"""Chains of in-place tensor methods (``x.mul_(2).add_(1)``) and their out-of-place form.

Shared by GF102 (in-place methods) and GF103 (``x.data.mul_(k)``): both rewrite a
chain link by link with the twins from torch's operator registry (``optable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import libcst as cst

from .context import RuleContext
from .optable import INPLACE_METHODS
from .rewrite import clone_of, method_call, strip_position
from .tensors import TensorKind


@dataclass
class InplaceChain:
    """``root.m1_(a).m2_(b)``: the in-place links from the innermost out."""

    root: cst.BaseExpression
    links: list[cst.Call]


def inplace_method_name(call: cst.CSTNode) -> Optional[str]:
    """``add_`` for ``x.add_(y)``: the in-place method a call runs, if it is one."""
    if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute):
        name = call.func.attr.value
        if name in INPLACE_METHODS:
            return name
    return None


def inplace_chain(call: cst.Call) -> InplaceChain:
    links = [call]
    receiver = call.func.value  # type: ignore[union-attr]
    while inplace_method_name(receiver) is not None:
        links.append(receiver)  # type: ignore[arg-type]
        receiver = receiver.func.value  # type: ignore[union-attr]
    links.reverse()
    return InplaceChain(receiver, links)


def out_of_place(chain: InplaceChain, ctx: RuleContext) -> tuple[Optional[cst.BaseExpression], tuple[str, ...], str]:
    """The chain rewritten without in-place calls, the imports it needs, or why there is none."""
    value: cst.BaseExpression = strip_position(chain.root)
    imports: set[str] = set()
    for link in chain.links:
        method = inplace_method_name(link)
        entry = INPLACE_METHODS[method]  # type: ignore[index]
        args = [strip_position(arg) for arg in link.args]
        kind = entry["rewrite"]
        if kind == "twin":
            value = method_call(value, entry["out_of_place"], args)
            if entry["keeps_dtype"]:
                dtype = cst.Attribute(value=strip_position(chain.root), attr=cst.Name("dtype"))
                value = method_call(value, "to", [cst.Arg(dtype)])
        elif kind == "overwrite":
            torch_name = ctx.torch_module_name()
            if torch_name is None:
                torch_name = "torch"
                imports.add("torch")
            value = _overwrite(value, method, args, torch_name, ctx)  # type: ignore[arg-type]
        elif kind == "clone":
            value = method_call(clone_of(value), method, args)  # type: ignore[arg-type]
        else:
            return None, (), f"`{method}` changes the tensor's storage or size and has no out-of-place form"
    return value, tuple(sorted(imports)), ""


def _overwrite(value: cst.BaseExpression, method: str, args: Sequence[cst.Arg], torch_name: str, ctx: RuleContext) -> cst.BaseExpression:
    def torch_call(function: str, call_args: Sequence[cst.Arg]) -> cst.Call:
        return cst.Call(func=cst.Attribute(value=cst.Name(torch_name), attr=cst.Name(function)), args=list(call_args))

    like = cst.Arg(value)
    if method == "zero_":
        return torch_call("zeros_like", [like])
    if method == "fill_" and len(args) == 1 and args[0].keyword is None:
        if ctx.tensor_kind(args[0].value) is TensorKind.NOT_TENSOR:
            return torch_call("full_like", [like, args[0].with_changes(comma=cst.MaybeSentinel.DEFAULT)])
    # Random fills and copy_: the same call on a fresh buffer of the same shape, dtype and device.
    return method_call(torch_call("empty_like", [like]), method, args)
