"""GF106: ``out=`` on a torch function where autograd records (``torch.add(a, b, out=c)``)."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import libcst as cst
from libcst.metadata import Assignment

from ..bindings import bound_value, module_class, reaching_binding
from ..context import RuleContext
from ..hazard import FACTORIES
from ..inplace_signatures import MODULES, OUT_FUNCTIONS
from ..model import Example, FixSafety, Level, Report
from ..rewrite import is_assignable, rebind_in_place, without_argument
from .. import prescreen as text
from ..rule import Rule
from ..tensors import NON_TENSOR_NODES, TensorKind

# Results that never require grad, whatever they are computed from.
_NO_GRAD_METHODS = frozenset(
    {"detach", "item", "tolist", "numpy", "size", "dim", "numel", "argmax", "argmin", "argsort", "long", "int",
     "bool", "byte", "short", "char", "nonzero", "eq", "ne", "lt", "le", "gt", "ge", "sign", "isnan", "isinf"}
)
_NO_GRAD_FUNCTIONS = _NO_GRAD_METHODS | {"no_grad", "is_tensor", "numel", "randint", "randperm", "bernoulli", "multinomial"}
_NO_GRAD_ATTRIBUTES = frozenset({"data", "grad", "shape", "dtype", "device", "ndim", "requires_grad", "is_leaf"})
_VIEW_ATTRIBUTES = frozenset({"T", "mT", "H", "mH", "real", "imag"})


def _combine(flags) -> Optional[bool]:
    """True if one requires grad, False if none does, None if gradfix cannot tell."""
    flags = list(flags)
    if any(flag is True for flag in flags):
        return True
    if all(flag is False for flag in flags):
        return False
    return None


def _keyword(call: cst.Call, name: str) -> Optional[cst.Arg]:
    return next((a for a in call.args if a.keyword is not None and a.keyword.value == name), None)


def _is_false(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "False"


class GradTracker:
    """Does an expression require grad? True, False (plainly not), or None (unknown)."""

    def __init__(self, ctx: RuleContext) -> None:
        self.ctx = ctx
        self._depth = 0

    def requires_grad(self, expr: cst.BaseExpression, site: cst.CSTNode) -> Optional[bool]:
        if self._depth > 16:
            return None
        self._depth += 1
        try:
            return self._requires_grad(expr, site)
        finally:
            self._depth -= 1

    def _requires_grad(self, expr: cst.BaseExpression, site: cst.CSTNode) -> Optional[bool]:
        ctx = self.ctx
        if isinstance(expr, (cst.List, cst.Tuple)):
            return _combine(self.requires_grad(e.value, site) for e in expr.elements)
        if isinstance(expr, NON_TENSOR_NODES) or ctx.tensor_kind(expr) is TensorKind.NOT_TENSOR:
            return False
        if isinstance(expr, cst.Name):
            return self._name(expr, site)
        if isinstance(expr, cst.Attribute):
            return self._attribute(expr, site)
        if isinstance(expr, cst.Subscript):
            return self.requires_grad(expr.value, site)
        if isinstance(expr, cst.UnaryOperation):
            return self.requires_grad(expr.expression, site)
        if isinstance(expr, cst.BinaryOperation):
            return _combine([self.requires_grad(expr.left, site), self.requires_grad(expr.right, site)])
        if isinstance(expr, cst.Call):
            return self._call(expr, site)
        return None

    def _name(self, name: cst.Name, site: cst.CSTNode) -> Optional[bool]:
        ctx = self.ctx
        if name.value in ("None", "True", "False"):
            return False
        binding = reaching_binding(ctx, name, site)
        if binding is None or isinstance(binding, cst.Param):
            return None
        if self._made_leaf(name, binding, site):
            return True
        parent = ctx.parent(binding)
        if isinstance(parent, cst.AugAssign):
            return _combine([self.requires_grad(name, parent), self.requires_grad(parent.value, parent)])
        value = bound_value(ctx, binding)
        return self.requires_grad(value, value) if value is not None else None

    def _made_leaf(self, name: cst.Name, binding: cst.CSTNode, site: cst.CSTNode) -> bool:
        """``x.requires_grad_()`` or ``x.requires_grad = True`` between the binding and ``site``."""
        ctx = self.ctx
        scope = ctx.scope(name)
        if scope is None:
            return False
        start, end = ctx.start(binding), ctx.start(site)
        for access in scope.accesses[name.value]:
            node = access.node
            if not isinstance(node, cst.Name) or not (start < ctx.start(node) < end):
                continue
            parent = ctx.parent(node)
            if isinstance(parent, cst.Attribute) and parent.value is node:
                holder = ctx.parent(parent)
                if parent.attr.value == "requires_grad_" and isinstance(holder, cst.Call) and not (
                    holder.args and _is_false(holder.args[0].value)
                ):
                    return True
                if parent.attr.value == "requires_grad" and isinstance(holder, cst.AssignTarget):
                    return True
        return False

    def _attribute(self, attribute: cst.Attribute, site: cst.CSTNode) -> Optional[bool]:
        ctx = self.ctx
        attr = attribute.attr.value
        if attr in _NO_GRAD_ATTRIBUTES:
            return False
        if attr in _VIEW_ATTRIBUTES:
            return self.requires_grad(attribute.value, site)
        if attr in ("weight", "bias"):
            constructor = ctx.module_constructor(attribute.value)
            if constructor is not None:
                entry = MODULES.get(module_class(ctx, constructor) or "")
                return True if entry and entry.get("has_parameters") else None
        if isinstance(attribute.value, cst.Name) and attribute.value.value == "self":
            # What the class stores there: a parameter, a buffer, or values gradfix can follow.
            values = self._class_assignments(attribute)
            if values:
                return _combine(self.requires_grad(value, value) for value in values)
        return None

    def _class_assignments(self, attribute: cst.Attribute) -> list[cst.BaseExpression]:
        ctx = self.ctx
        cls = ctx.parent(attribute)
        while cls is not None and not isinstance(cls, cst.ClassDef):
            cls = ctx.parent(cls)
        if cls is None:
            return []
        wanted = attribute.attr.value
        found: list[cst.BaseExpression] = []

        class Collector(cst.CSTVisitor):
            def visit_Assign(self, node: cst.Assign) -> None:
                for target in node.targets:
                    t = target.target
                    if isinstance(t, cst.Attribute) and t.attr.value == wanted and isinstance(t.value, cst.Name) and t.value.value == "self":
                        found.append(node.value)

            def visit_Call(self, node: cst.Call) -> None:
                # self.register_buffer("name", value)
                func = node.func
                if isinstance(func, cst.Attribute) and func.attr.value == "register_buffer" and len(node.args) >= 2:
                    first = node.args[0].value
                    if isinstance(first, cst.SimpleString) and first.evaluated_value == wanted:
                        found.append(node.args[1].value)

        cls.visit(Collector())
        return found

    def _call(self, call: cst.Call, site: cst.CSTNode) -> Optional[bool]:
        ctx = self.ctx
        func = call.func
        arguments = [arg.value for arg in call.args if arg.keyword is None or arg.keyword.value != "out"]
        constructor = ctx.module_constructor(func)
        if constructor is not None:
            entry = MODULES.get(module_class(ctx, constructor) or "")
            if entry is not None and entry.get("has_parameters"):
                return True  # its parameters require grad
            inputs = _combine(self.requires_grad(a, site) for a in arguments)
            return inputs if entry is not None else (True if inputs else None)
        qualified = next((n for n in ctx.qualified_names(func) if n.startswith("torch.")), None)
        if qualified is not None:
            last = qualified.rsplit(".", 1)[-1]
            if last == "Parameter":
                flag = _keyword(call, "requires_grad")
                return not (flag is not None and _is_false(flag.value))
            if last in FACTORIES or last in _NO_GRAD_FUNCTIONS:
                flag = _keyword(call, "requires_grad")
                return flag is not None and not _is_false(flag.value)
            return _combine(self.requires_grad(a, site) for a in arguments)
        if isinstance(func, cst.Attribute) and ctx.tensor_kind(func.value) is not TensorKind.NOT_TENSOR:
            method = func.attr.value
            if method in _NO_GRAD_METHODS:
                return False
            if method == "requires_grad_":
                return not (call.args and _is_false(call.args[0].value))
            return _combine([self.requires_grad(func.value, site)] + [self.requires_grad(a, site) for a in arguments])
        return None


class OutArgument(Rule):
    code = "GF106"
    name = "out-argument"
    why = "`out=` writes a result into an existing tensor, which autograd cannot record: torch refuses it when an input requires grad."
    explanation = (
        "`torch.add(a, b, out=c)` computes into `c`'s memory. torch does not differentiate through such "
        "calls: when any argument requires grad (a parameter, a tensor created with `requires_grad=True`, or "
        "anything computed from one), the call raises `add(): functions with out=... arguments don't support "
        "automatic differentiation, but one of the arguments requires grad.` (measured on torch 2.13, for "
        "leaves and non-leaves alike). The out-of-place call returns a new tensor that autograd records: "
        "`c = torch.add(a, b)`. Where the call's value is used (`y = torch.mul(x, w, out=buf)`), the "
        "assignment is hoisted before the statement and the call replaced by the buffer's name.\n\n"
        "The functions that take `out=` are read from torch's operator registry: every ATen operator with an "
        "`out` overload that is public as `torch.<name>` (or `torch.linalg`, `torch.special`, `torch.fft`, "
        "`torch.nn.functional`). A finding is an error when gradfix sees an argument that requires grad, "
        "a warning when it cannot tell (a function parameter, an attribute)."
    )
    not_flagged = (
        "`out=` under `torch.no_grad()`, `torch.inference_mode()` and other no-grad contexts, in "
        "initializers and optimizer steps; calls whose arguments plainly do not require grad (fresh "
        "`torch.zeros`/`torch.randn` without `requires_grad=True`, `.detach()` results, numbers); functions "
        "without an `out` overload."
    )
    fix_safety = (
        "Rebinding the buffer follows GF102's rules: safe when it is a local bound to a fresh tensor that "
        "nothing else holds; unsafe for attributes (`out=self.buf`), parameters and shared names, whose other "
        "holders saw the result through the buffer before. Unsafe too when the buffer was made with an "
        "explicit `dtype`: `out=` casts into it, the out-of-place call follows type promotion. Display-only "
        "when the buffer is not a name (`out=buf[0]`)."
    )
    node_types = (cst.Call,)
    prescreen = text.OUT_KEYWORD
    examples = (
        Example(
            before=(
                "import torch\n\nw = torch.randn(3, requires_grad=True)\nacc = torch.empty(3)\n"
                "torch.mul(w, 2.0, out=acc)\nacc.sum().backward()\n"
            ),
            after=(
                "import torch\n\nw = torch.randn(3, requires_grad=True)\nacc = torch.empty(3)\n"
                "acc = torch.mul(w, 2.0)\nacc.sum().backward()\n"
            ),
        ),
        Example(
            before=(
                "import torch\n\ndef head(x, w):\n    buf = torch.empty(2, 4)\n    h = torch.tanh(torch.mm(x, w, out=buf))\n    return h\n"
            ),
            after=(
                "import torch\n\ndef head(x, w):\n    buf = torch.empty(2, 4)\n    buf = torch.mm(x, w)\n    h = torch.tanh(buf)\n    return h\n"
            ),
            fix_warnings=True,
        ),
        Example(
            before="import torch\n\na, b = torch.randn(3), torch.randn(3)\nc = torch.empty(3)\ntorch.add(a, b, out=c)\n",
            findings=0,
        ),
        Example(
            before=(
                "import torch\n\nw = torch.randn(3, requires_grad=True)\nc = torch.empty(3)\n"
                "with torch.no_grad():\n    torch.add(w, 1, out=c)\n"
            ),
            findings=0,
        ),
    )

    def check(self, node: cst.CSTNode, ctx: RuleContext) -> Iterator[Report]:
        assert isinstance(node, cst.Call)
        out = _keyword(node, "out")
        if out is None or (isinstance(out.value, cst.Name) and out.value.value == "None"):
            return  # `out=None` is the out-of-place call
        function = next((n for n in ctx.qualified_names(node.func) if n in OUT_FUNCTIONS), None)
        if function is None:
            return
        tracker = GradTracker(ctx)
        inputs = [arg.value for arg in node.args if arg is not out and not arg.star]
        flags = [(expr, tracker.requires_grad(expr, node)) for expr in inputs + [out.value]]
        if all(flag is False for _, flag in flags) and not any(arg.star for arg in node.args):
            return  # nothing here requires grad: out= is harmless
        short = function.replace("torch.nn.functional.", "F.")
        grad = next((expr for expr, flag in flags if flag is True), None)
        if grad is not None:
            level = Level.ERROR
            message = (f"`out=` on `{short}`: `{_shown(ctx, grad)}` requires grad, and functions with out= "
                       "arguments do not support automatic differentiation")
        else:
            level = Level.WARNING
            unknown = next((expr for expr, flag in flags if flag is None), None)
            shown = _shown(ctx, unknown) if unknown is not None else "*args"
            message = f"`out=` on `{short}`: breaks autograd if an input requires grad (gradfix cannot tell whether `{shown}` does)"
        new_call = without_argument(node, out)
        target = out.value
        if isinstance(target, cst.Tuple) and all(is_assignable(e.value) for e in target.elements):
            report = rebind_in_place(ctx, node, target, new_call, TensorKind.TENSOR, message, level=level)
        elif is_assignable(target):
            report = rebind_in_place(ctx, node, target, new_call, TensorKind.TENSOR, message, level=level)
            dtype = _explicit_dtype(ctx, target, node)
            if dtype and report.fix is not None and report.fix.safety is FixSafety.SAFE:
                report = dataclasses.replace(
                    report,
                    message=report.message + f" (fix is unsafe: `{ctx.code(target)}` was made with `{dtype}`, "
                    "which out= casts to; the out-of-place result follows type promotion)",
                    fix=dataclasses.replace(report.fix, safety=FixSafety.UNSAFE),
                )
        else:
            report = Report(node, f"{message}; compute it out of place and write it where `{_shown(ctx, target)}` points",
                            level=level, target=target)
        yield report


def _shown(ctx: RuleContext, expr: cst.CSTNode) -> str:
    text = " ".join(ctx.code(expr).split())
    return text if len(text) <= 30 else text[:27] + "..."


def _explicit_dtype(ctx: RuleContext, target: cst.BaseExpression, site: cst.CSTNode) -> str:
    """``dtype=...`` given where the buffer ``target`` was made, if it was."""
    if not isinstance(target, cst.Name):
        return ""
    scope = ctx.scope(target)
    if scope is None:
        return ""
    for assignment in scope[target.value]:
        if not isinstance(assignment, Assignment) or isinstance(assignment.node, cst.Param):
            continue
        value = bound_value(ctx, assignment.node)
        if isinstance(value, cst.Call):
            dtype = _keyword(value, "dtype")
            if dtype is not None:
                return f"dtype={ctx.code(dtype.value)}"
    return ""
