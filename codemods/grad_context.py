"""Where autograd is not recording: no-grad blocks, initializers, optimizer steps.

An in-place write there is what the author meant and is never a finding.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Optional

import libcst as cst
import libcst.matchers as m

from .model import GradContext

INITIALIZER_NAME = re.compile(
    r"^(__init__|__post_init__|_?reset_param(eter)?s|_?init(ialize)?_?weights?|weights?_init"
    r"|_?init_param(eter)?s|_?initialize(_parameters)?)$"
)
# Methods of a torch.autograd.Function subclass run with grad mode off.
AUTOGRAD_FUNCTION_METHODS = frozenset({"forward", "backward", "setup_context", "jvp", "vjp"})
OPTIMIZER_METHODS = frozenset({"step", "zero_grad"})

QualifiedNamesOf = Callable[[cst.CSTNode], Iterable[str]]


def _last_part(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _is_torch_name(name: str, *last_parts: str) -> bool:
    """``torch.no_grad``, ``torch.autograd.grad_mode.no_grad`` or a relative import of it."""
    if _last_part(name) not in last_parts:
        return False
    return name.startswith(("torch.", ".")) or name in last_parts


def _is_false(node: cst.BaseExpression) -> bool:
    return m.matches(node, m.Name("False")) or m.matches(node, m.Integer("0"))


def _is_true(node: cst.BaseExpression) -> bool:
    return m.matches(node, m.Name("True")) or m.matches(node, m.Integer("1"))


def grad_mode_of(expr: cst.BaseExpression, qualified_names: QualifiedNamesOf) -> Optional[bool]:
    """What a context manager or decorator does to grad mode: False off, True on, None neither."""
    call = expr if isinstance(expr, cst.Call) else None
    func = call.func if call else expr
    for name in qualified_names(func):
        if _is_torch_name(name, "no_grad"):
            return False
        if _is_torch_name(name, "inference_mode"):
            # inference_mode(False) re-enables normal mode.
            if call and call.args and _is_false(call.args[0].value):
                return None
            return False
        if _is_torch_name(name, "enable_grad"):
            return True
        if _is_torch_name(name, "set_grad_enabled") and call and call.args:
            if _is_false(call.args[0].value):
                return False
            if _is_true(call.args[0].value):
                return True
    return None


def _grad_mode_reason(expr: cst.BaseExpression, qualified_names: QualifiedNamesOf) -> GradContext:
    func = expr.func if isinstance(expr, cst.Call) else expr
    for name in qualified_names(func):
        if _last_part(name) == "inference_mode":
            return GradContext.INFERENCE_MODE
        if _last_part(name) == "set_grad_enabled":
            return GradContext.GRAD_DISABLED
    return GradContext.NO_GRAD


def _class_bases(cls: cst.ClassDef, qualified_names: QualifiedNamesOf) -> set[str]:
    names: set[str] = set()
    for base in cls.bases:
        names.update(qualified_names(base.value))
        if isinstance(base.value, cst.Name):
            names.add(base.value.value)
        elif isinstance(base.value, cst.Attribute):
            names.add(base.value.attr.value)
    return names


def is_autograd_function(cls: cst.ClassDef, qualified_names: QualifiedNamesOf) -> bool:
    for name in _class_bases(cls, qualified_names):
        if name in ("torch.autograd.Function", "torch.autograd.function.Function"):
            return True
        if name.endswith(".function.Function") or name.endswith("autograd.Function"):
            return True
    return False


def is_optimizer_class(cls: cst.ClassDef, qualified_names: QualifiedNamesOf) -> bool:
    if cls.name.value.endswith("Optimizer"):
        return True
    for name in _class_bases(cls, qualified_names):
        if name.startswith("torch.optim.") or _last_part(name) == "Optimizer":
            return True
    return False


def enclosing_grad_context(
    node: cst.CSTNode,
    parent_of: Callable[[cst.CSTNode], Optional[cst.CSTNode]],
    qualified_names: QualifiedNamesOf,
) -> Optional[GradContext]:
    """The innermost reason why autograd does not record ``node``, or None.

    Walks outwards. ``with`` blocks only count inside the function that holds
    them: a function defined in a no-grad block may be called anywhere.
    """
    child: cst.CSTNode = node
    current = parent_of(node)
    inside_function = False
    grad_mode_decided = False
    while current is not None:
        if isinstance(current, cst.With) and not inside_function and not grad_mode_decided:
            if child is current.body:
                for item in reversed(current.items):
                    mode = grad_mode_of(item.item, qualified_names)
                    if mode is False:
                        return _grad_mode_reason(item.item, qualified_names)
                    if mode is True:
                        grad_mode_decided = True
                        break
        elif isinstance(current, (cst.FunctionDef, cst.Lambda)):
            if isinstance(current, cst.FunctionDef):
                if not grad_mode_decided:
                    for decorator in current.decorators:
                        mode = grad_mode_of(decorator.decorator, qualified_names)
                        if mode is False:
                            return _grad_mode_reason(decorator.decorator, qualified_names)
                        if mode is True:
                            grad_mode_decided = True
                if INITIALIZER_NAME.match(current.name.value):
                    return GradContext.INITIALIZER
                owner = parent_of(current)
                if isinstance(owner, cst.IndentedBlock):
                    owner = parent_of(owner)
                if isinstance(owner, cst.ClassDef):
                    method = current.name.value
                    if method in AUTOGRAD_FUNCTION_METHODS and is_autograd_function(owner, qualified_names):
                        return GradContext.AUTOGRAD_FUNCTION
                    if method in OPTIMIZER_METHODS and is_optimizer_class(owner, qualified_names):
                        return GradContext.OPTIMIZER_STEP
            inside_function = True
        child = current
        current = parent_of(current)
    return None


def attribute_in_chain(expr: cst.BaseExpression, attribute: str) -> bool:
    """Does ``attribute`` appear along ``expr``'s receivers (``p.grad.data[0].zero_``)?"""
    node: cst.CSTNode = expr
    while True:
        if isinstance(node, cst.Attribute):
            if node.attr.value == attribute:
                return True
            node = node.value
        elif isinstance(node, cst.Subscript):
            node = node.value
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            node = node.func.value
        else:
            return False


def is_grad_buffer(expr: cst.BaseExpression) -> bool:
    """``p.grad``, ``p.grad.data``, ``p.grad[i]``: gradient buffers are not part of the graph."""
    return attribute_in_chain(expr, "grad")
