"""Can rebinding a name change what other code sees?

Rewriting ``x.add_(1)`` as ``x = x.add(1)`` is invisible to the rest of the
program only if nothing else holds the tensor that ``x`` named: no caller (a
parameter), no other name, container, view or closure. This module answers
that for one target, conservatively: any use it cannot classify as a plain
read of the value makes the fix unsafe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import libcst as cst
from libcst.metadata import Assignment, ComprehensionScope, Scope

from .optable import INPLACE_METHODS, TENSOR_METHODS

# Tensor methods (and torch functions of the same name) whose result may share
# memory with the input, or be the input itself.
ALIASING_METHODS = frozenset(
    {"view", "view_as", "reshape", "reshape_as", "expand", "expand_as", "t", "transpose",
     "permute", "squeeze", "unsqueeze", "narrow", "select", "unfold", "flatten", "unflatten",
     "contiguous", "to", "type", "type_as", "detach", "split", "chunk", "unbind", "tensor_split",
     "as_strided", "diagonal", "movedim", "moveaxis", "swapaxes", "swapdims", "cpu", "cuda",
     "float", "double", "half", "bfloat16", "int", "long", "bool", "byte", "short", "char",
     "view_as_real", "view_as_complex", "real", "imag", "conj", "resolve_conj", "resolve_neg",
     "squeeze_", "requires_grad_", "align_as", "refine_names", "rename", "share_memory_",
     "pin_memory", "numpy", "storage", "untyped_storage", "data_ptr", "indices", "values",
     "crow_indices", "col_indices", "hsplit", "vsplit", "dsplit", "split_with_sizes", "mT", "mH",
     "adjoint", "positive", "coalesce", "to_dense", "atleast_1d", "atleast_2d", "atleast_3d",
     "broadcast_to", "broadcast_tensors", "meshgrid", "expand_copy", "as_subclass", "__getitem__"}
)
ALIASING_ATTRIBUTES = frozenset({"data", "T", "mT", "H", "mH", "real", "imag"})
VALUE_BUILTINS = frozenset(
    {"print", "len", "isinstance", "type", "id", "str", "repr", "float", "int", "bool", "hash",
     "format", "round", "abs"}
)
LOOPS = (cst.For, cst.While)
# torch.nn modules whose output can be their input itself, or a view of it.
MODULES_RETURNING_INPUT = frozenset(
    {"Identity", "Flatten", "Unflatten", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
     "AlphaDropout", "FeatureAlphaDropout", "Sequential", "ModuleList", "ModuleDict"}
)
_OWN_UPDATE = object()


def module_may_return_input(constructor: cst.Call, qualified_names: Callable[[cst.CSTNode], Iterable[str]]) -> bool:
    """``nn.Identity()``, ``nn.Dropout()`` (identity in eval mode), any ``inplace=True`` module."""
    for arg in constructor.args:
        if arg.keyword is not None and arg.keyword.value == "inplace":
            if not (isinstance(arg.value, cst.Name) and arg.value.value == "False"):
                return True
    return any(name.rsplit(".", 1)[-1] in MODULES_RETURNING_INPUT for name in qualified_names(constructor.func))


@dataclass(frozen=True)
class RebindVerdict:
    safe: bool
    reason: str = ""


class AliasAnalysis:
    def __init__(
        self,
        scope_of: Callable[[cst.CSTNode], Optional[Scope]],
        parent_of: Callable[[cst.CSTNode], Optional[cst.CSTNode]],
        qualified_names: Callable[[cst.CSTNode], Iterable[str]],
        start_of: Callable[[cst.CSTNode], tuple[int, int]],
        module_constructor: Callable[[cst.BaseExpression], Optional[cst.Call]],
        is_inside: Callable[[cst.CSTNode, cst.CSTNode], bool],
    ) -> None:
        self._is_inside = is_inside
        self._module_constructor = module_constructor
        self._scope_of = scope_of
        self._parent_of = parent_of
        self._qualified_names = qualified_names
        self._start_of = start_of

    def rebinding(self, target: cst.BaseExpression, site: cst.CSTNode) -> RebindVerdict:
        """Is ``target = <new tensor>`` at ``site`` invisible to every other reader?"""
        if isinstance(target, cst.Attribute):
            return RebindVerdict(False, "the target is an attribute: other references to the object see the in-place change")
        if not isinstance(target, cst.Name):
            return RebindVerdict(False, "the target is not a plain name")
        scope = self._scope_of(target)
        if scope is None:
            return RebindVerdict(False, "the name's scope is unknown")
        name = target.value
        if name in getattr(scope, "_globals", ()) or name in getattr(scope, "_nonlocals", ()):
            return RebindVerdict(False, f"`{name}` is declared global or nonlocal")
        # libcst keeps a scope's assignments in a set: in source order, so the reason given is always the same
        assignments = sorted((a for a in scope.assignments[name] if isinstance(a, Assignment)),
                             key=lambda a: self._start_of(a.node))
        if not assignments:
            return RebindVerdict(False, f"`{name}` is not bound in this scope")
        for assignment in assignments:
            if isinstance(assignment.node, cst.Param):
                return RebindVerdict(False, f"`{name}` is a parameter: the caller's tensor is mutated today")
        for assignment in assignments:
            value = self._bound_value(assignment.node)
            if value is _OWN_UPDATE:
                continue
            if value is None or not self._is_fresh(value):
                line = self._start_of(assignment.node)[0]
                return RebindVerdict(False, f"`{name}` is bound on line {line} to a value other code may share")
        enclosing_loop = self._enclosing_loop(site, scope)
        site_start = self._start_of(site)
        # references are sets too: the first use in source order is the one named
        accesses = {id(a.node): a for assignment in assignments for a in assignment.references
                    if isinstance(a.node, cst.Name)}
        for access in sorted(accesses.values(), key=lambda a: self._start_of(a.node)):
            node = access.node
            if self._is_inside(node, site):
                continue
            if access.scope is not scope and not isinstance(access.scope, ComprehensionScope):
                return RebindVerdict(False, f"`{name}` is used by an inner function or class")
            before = self._start_of(node) < site_start
            in_same_loop = enclosing_loop is not None and self._is_inside(node, enclosing_loop)
            if not (before or in_same_loop):
                continue
            if not self._reads_value_only(node, name):
                return RebindVerdict(
                    False, f"`{name}` may be shared with other code (line {self._start_of(node)[0]})"
                )
        return RebindVerdict(True)

    # -- helpers ---------------------------------------------------------------

    def _bound_value(self, node: cst.CSTNode):
        """The expression a binding stores, _OWN_UPDATE for ``x op= ...``, None if unknown."""
        parent = self._parent_of(node)
        if isinstance(parent, cst.AugAssign):
            return _OWN_UPDATE
        if isinstance(parent, cst.AssignTarget):
            statement = self._parent_of(parent)
            if isinstance(statement, cst.Assign) and len(statement.targets) == 1:
                return statement.value  # `a = b = value` binds one tensor to two names: shared
        if isinstance(parent, (cst.AnnAssign, cst.NamedExpr)):
            return parent.value
        if isinstance(parent, cst.Element):
            # `h, c = lstm(x)`: the pieces of a fresh result are fresh.
            container = self._parent_of(parent)
            target = self._parent_of(container) if container is not None else None
            if isinstance(target, cst.AssignTarget):
                statement = self._parent_of(target)
                if isinstance(statement, cst.Assign) and isinstance(statement.value, cst.Call):
                    return statement.value
        return None

    def _is_fresh(self, value: cst.BaseExpression) -> bool:
        """Does ``value`` build a new tensor that nothing else references?"""
        if isinstance(value, (cst.BinaryOperation, cst.UnaryOperation, cst.Integer, cst.Float,
                              cst.SimpleString, cst.List, cst.Tuple, cst.Dict, cst.Comparison)):
            return True
        if isinstance(value, cst.Name) and value.value in ("None", "True", "False"):
            return True
        if not isinstance(value, cst.Call):
            return False
        func = value.func
        names = list(self._qualified_names(func))
        imported = [n for n in names if n.startswith("torch.")]
        if imported:
            return not any(n.rsplit(".", 1)[-1] in ALIASING_METHODS for n in imported) and not any(
                n.startswith("torch.nn.") and n.rsplit(".", 1)[-1][:1].isupper() for n in imported
            )
        constructor = self._module_constructor(func)
        if constructor is not None:
            return not module_may_return_input(constructor, self._qualified_names)
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in ALIASING_METHODS:
                # A view of a fresh tensor (`x.clone().detach()`, `fc(x).view(-1)`) is still unshared.
                return self._is_fresh(func.value)
            return method in TENSOR_METHODS and method not in INPLACE_METHODS
        return False

    def _enclosing_loop(self, node: cst.CSTNode, scope: Scope) -> Optional[cst.CSTNode]:
        current = self._parent_of(node)
        while current is not None and not isinstance(current, (cst.FunctionDef, cst.Module)):
            if isinstance(current, LOOPS):
                return current
            current = self._parent_of(current)
        return None

    def _reads_value_only(self, name_node: cst.Name, name: str) -> bool:
        """True for uses that read the tensor's value without keeping a reference to it."""
        parent = self._parent_of(name_node)
        if isinstance(parent, (cst.BinaryOperation, cst.UnaryOperation, cst.ComparisonTarget,
                               cst.Comparison, cst.BooleanOperation, cst.Del, cst.Return)):
            return True
        if isinstance(parent, (cst.AugAssign, cst.If, cst.While, cst.Assert)):
            return True
        if isinstance(parent, cst.Attribute) and parent.value is name_node:
            attr = parent.attr.value
            holder = self._parent_of(parent)
            if isinstance(holder, cst.Call) and holder.func is parent:
                if attr in INPLACE_METHODS:
                    return True  # another in-place op on the same name: rewritten too
                if isinstance(self._parent_of(holder), cst.Expr):
                    return True  # `y.requires_grad_(True)`: the result, a possible alias, is dropped
                return attr in TENSOR_METHODS and attr not in ALIASING_METHODS
            return attr not in ALIASING_ATTRIBUTES
        if isinstance(parent, cst.Subscript) and parent.value is name_node:
            holder = self._parent_of(parent)
            if isinstance(holder, cst.AssignTarget) or (isinstance(holder, cst.AugAssign) and holder.target is parent):
                return True  # `x[i] = v` writes into x and keeps no reference to it
            # x[i] creates a view; only a read of its value (x[i] + 1, x[i].item()) is harmless.
            return self._reads_value_only_expr(parent)
        call = self._call_taking(name_node)
        if call is not None:
            func = call.func
            if isinstance(func, cst.Name) and func.value in VALUE_BUILTINS:
                return True
            constructor = self._module_constructor(func)
            if constructor is not None:
                return not module_may_return_input(constructor, self._qualified_names)
            for qualified in self._qualified_names(func):
                last = qualified.rsplit(".", 1)[-1]
                if qualified.startswith("torch.") and not qualified.startswith("torch.nn.") or qualified.startswith("torch.nn.functional."):
                    return last not in ALIASING_METHODS
        return False

    def _reads_value_only_expr(self, expr: cst.CSTNode) -> bool:
        parent = self._parent_of(expr)
        if isinstance(parent, (cst.BinaryOperation, cst.UnaryOperation, cst.ComparisonTarget, cst.Comparison)):
            return True
        if isinstance(parent, cst.Attribute) and parent.value is expr:
            holder = self._parent_of(parent)
            attr = parent.attr.value
            if isinstance(holder, cst.Call) and holder.func is parent:
                return attr in TENSOR_METHODS and attr not in ALIASING_METHODS and attr not in INPLACE_METHODS
            return attr not in ALIASING_ATTRIBUTES
        return False

    def _call_taking(self, node: cst.CSTNode) -> Optional[cst.Call]:
        return call_taking(node, self._parent_of)


def call_taking(node: cst.CSTNode, parent_of: Callable[[cst.CSTNode], Optional[cst.CSTNode]]) -> Optional[cst.Call]:
    """The call that receives ``node`` as an argument, looking through list/tuple literals."""
    current = parent_of(node)
    while isinstance(current, (cst.Element, cst.List, cst.Tuple)):
        current = parent_of(current)
    if isinstance(current, cst.Arg):
        call = parent_of(current)
        if isinstance(call, cst.Call):
            return call
    return None
