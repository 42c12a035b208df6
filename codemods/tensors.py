"""Is this expression a tensor? A small, function-local inference.

Three answers: TENSOR (a torch call, a tensor method, a module call, arithmetic
on tensors, a ``Tensor`` annotation), NOT_TENSOR (numbers, strings, containers,
``.item()``, ``len()``, loop counters) and UNKNOWN. Rules report UNKNOWN with at
most an unsafe fix, and stay silent on NOT_TENSOR.
"""

from __future__ import annotations

import enum
from typing import Callable, Iterable, Optional

import libcst as cst
from libcst.metadata import Assignment, BuiltinAssignment, Scope

from .optable import TENSOR_METHODS


class TensorKind(enum.Enum):
    TENSOR = "tensor"
    NOT_TENSOR = "not-tensor"
    UNKNOWN = "unknown"


T, N, U = TensorKind.TENSOR, TensorKind.NOT_TENSOR, TensorKind.UNKNOWN

# torch.* callables that do not return a tensor.
NON_TENSOR_TORCH_CALLS = frozenset(
    {
        "is_tensor", "is_storage", "is_floating_point", "is_complex", "is_nonzero", "numel",
        "device", "dtype", "Size", "get_default_dtype", "is_grad_enabled", "no_grad",
        "enable_grad", "set_grad_enabled", "inference_mode", "manual_seed", "seed",
        "initial_seed", "get_rng_state", "set_rng_state", "is_available", "device_count",
        "current_device", "finfo", "iinfo", "jit", "compile", "load", "save", "cat_", "typename",
        "is_inference_mode_enabled", "are_deterministic_algorithms_enabled", "result_type",
        "promote_types", "can_cast", "broadcast_shapes", "empty_cache", "synchronize",
        "use_deterministic_algorithms", "set_default_dtype", "set_default_device",
        "set_printoptions", "set_num_threads", "get_num_threads", "Generator", "Stream", "Event",
        "autocast", "DataLoader", "Dataset", "SummaryWriter", "split_",
    }
)
# torch.* calls that build many tensors at once; treat their results as unknown.
NON_TENSOR_TORCH_MODULES = ("torch.utils.", "torch.distributed.", "torch.cuda.", "torch.backends.",
                            "torch.jit.", "torch.fx.", "torch.onnx.", "torch.optim.",
                            "torch.multiprocessing.", "torch.testing.", "torch._dynamo.",
                            "torch.profiler.", "torch.hub.")
# Tensor methods and attributes whose result is not a tensor.
NON_TENSOR_METHODS = frozenset(
    {"item", "tolist", "size", "dim", "ndimension", "numel", "nelement", "element_size",
     "is_contiguous", "is_floating_point", "is_complex", "data_ptr", "stride", "storage_offset",
     "untyped_storage", "storage", "get_device", "numpy", "__len__", "equal", "type", "is_set_to",
     "backward", "register_hook", "unbind", "split", "chunk", "tensor_split", "unflatten_"}
)
NON_TENSOR_ATTRIBUTES = frozenset(
    {"shape", "dtype", "device", "ndim", "is_leaf", "requires_grad", "is_cuda", "layout", "names",
     "grad_fn", "is_sparse", "is_quantized", "is_meta", "itemsize", "nbytes"}
)
TENSOR_ATTRIBUTES = frozenset({"T", "mT", "H", "mH", "data", "grad", "real", "imag"})
NON_TENSOR_BUILTINS = frozenset(
    {"len", "int", "float", "bool", "str", "list", "dict", "tuple", "set", "range", "enumerate",
     "zip", "sorted", "repr", "isinstance", "hasattr", "getattr", "id", "hash", "round", "abs",
     "min", "max", "sum", "any", "all", "open", "print", "format", "type", "divmod", "ord", "chr",
     "frozenset", "bytes", "math"}
)
TENSOR_ANNOTATIONS = frozenset({"Tensor", "Parameter", "FloatTensor", "LongTensor", "BoolTensor"})
NON_TENSOR_ANNOTATIONS = frozenset(
    {"int", "float", "bool", "str", "bytes", "list", "dict", "tuple", "set", "List", "Dict",
     "Tuple", "Set", "Sequence", "Mapping", "Iterable", "Callable", "Module", "Any", "None"}
)
# Literal constructs that can never be a tensor.
NON_TENSOR_NODES = (
    cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.ConcatenatedString,
    cst.FormattedString, cst.List, cst.Tuple, cst.Dict, cst.Set, cst.ListComp, cst.DictComp,
    cst.SetComp, cst.GeneratorExp, cst.Lambda, cst.Comparison,
)


def join(kinds: Iterable[TensorKind]) -> TensorKind:
    kinds = set(kinds)
    if not kinds:
        return U
    if T in kinds:
        # A name bound to a tensor anywhere in its scope is treated as one
        # (`total = 0` then `total = total + loss` holds a tensor after one step).
        return T
    if kinds == {N}:
        return N
    return U


class TensorInference:
    """Infers tensor kinds for expressions of one module, memoised per node."""

    def __init__(
        self,
        qualified_names: Callable[[cst.CSTNode], Iterable[str]],
        scope_of: Callable[[cst.CSTNode], Optional[Scope]],
        parent_of: Callable[[cst.CSTNode], Optional[cst.CSTNode]],
        module_constructor: Callable[[cst.BaseExpression], Optional[cst.Call]],
    ) -> None:
        self._qualified_names = qualified_names
        self._scope_of = scope_of
        self._parent_of = parent_of
        self._module_constructor = module_constructor
        self._memo: dict[int, TensorKind] = {}
        self._in_progress: set[int] = set()

    def kind(self, expr: cst.CSTNode) -> TensorKind:
        key = id(expr)
        if key in self._memo:
            return self._memo[key]
        if key in self._in_progress:
            return U  # a cycle (x = x + 1): the other bindings decide
        self._in_progress.add(key)
        try:
            result = self._infer(expr)
        finally:
            self._in_progress.discard(key)
        self._memo[key] = result
        return result

    # -- expressions ---------------------------------------------------------

    def _infer(self, expr: cst.CSTNode) -> TensorKind:
        if isinstance(expr, NON_TENSOR_NODES):
            return N
        if isinstance(expr, cst.Name):
            if expr.value in ("True", "False", "None"):
                return N
            return self._name_kind(expr)
        if isinstance(expr, cst.BinaryOperation):
            left, right = self.kind(expr.left), self.kind(expr.right)
            if T in (left, right):
                return T
            if left is N and right is N:
                return N
            return U
        if isinstance(expr, cst.UnaryOperation):
            if isinstance(expr.operator, cst.Not):
                return N
            return self.kind(expr.expression)
        if isinstance(expr, cst.BooleanOperation):
            return join([self.kind(expr.left), self.kind(expr.right)])
        if isinstance(expr, cst.IfExp):
            return join([self.kind(expr.body), self.kind(expr.orelse)])
        if isinstance(expr, cst.NamedExpr):
            return self.kind(expr.value)
        if isinstance(expr, cst.Subscript):
            base = self.kind(expr.value)
            return T if base is T else U
        if isinstance(expr, cst.Attribute):
            return self._attribute_kind(expr)
        if isinstance(expr, cst.Call):
            return self._call_kind(expr)
        if isinstance(expr, cst.Await):
            return U
        return U

    def _attribute_kind(self, expr: cst.Attribute) -> TensorKind:
        attr = expr.attr.value
        if attr in NON_TENSOR_ATTRIBUTES:
            return N
        base = self.kind(expr.value)
        if attr in TENSOR_ATTRIBUTES and base is T:
            return T
        if isinstance(expr.value, cst.Name) and expr.value.value == "self":
            return self._self_attribute_kind(expr)
        return U

    def _call_kind(self, call: cst.Call) -> TensorKind:
        func = call.func
        for name in self._qualified_names(func):
            if name.startswith("torch."):
                last = name.rsplit(".", 1)[-1]
                if last in NON_TENSOR_TORCH_CALLS or name.startswith(NON_TENSOR_TORCH_MODULES):
                    return N if last in NON_TENSOR_TORCH_CALLS else U
                if name.startswith("torch.nn.") and last[:1].isupper() and last != "Parameter":
                    return U  # constructing a module, not a tensor
                return T
            if name in NON_TENSOR_BUILTINS or name.startswith("math."):
                return N
        if isinstance(func, cst.Name) and func.value in NON_TENSOR_BUILTINS:
            return N
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in NON_TENSOR_METHODS:
                receiver = self.kind(func.value)
                return N if receiver is T or method in ("item", "tolist", "numel", "dim") else U
            if method in TENSOR_METHODS:
                receiver = self.kind(func.value)
                if receiver is T:
                    return T
                if receiver is N:
                    return N
                return U
        # self.linear(x) or gru(x): a module built from torch.nn.
        if self._module_constructor(func) is not None:
            return T
        return U

    # -- names ---------------------------------------------------------------

    def _name_kind(self, name: cst.Name) -> TensorKind:
        scope = self._scope_of(name)
        if scope is None:
            return U
        try:
            assignments = scope[name.value]
        except Exception:  # pragma: no cover - libcst raises for odd names
            return U
        kinds = [self._binding_kind(a) for a in assignments]
        return join(kinds)

    def _binding_kind(self, assignment) -> TensorKind:
        if isinstance(assignment, BuiltinAssignment) or not isinstance(assignment, Assignment):
            return U
        node = assignment.node
        if isinstance(node, cst.Param):
            return self._param_kind(node)
        parent = self._parent_of(node)
        if isinstance(parent, cst.AssignTarget):
            stmt = self._parent_of(parent)
            if isinstance(stmt, cst.Assign):
                return self.kind(stmt.value)
        if isinstance(parent, cst.AnnAssign):
            annotated = self._annotation_kind(parent.annotation.annotation)
            if annotated is not U:
                return annotated
            return self.kind(parent.value) if parent.value is not None else U
        if isinstance(parent, cst.AugAssign):
            # The other bindings of the name decide; the increment only adds evidence.
            return self.kind(parent.value)
        if isinstance(parent, cst.NamedExpr):
            return self.kind(parent.value)
        if isinstance(parent, (cst.For, cst.CompFor)):
            iterable = parent.iter
            if isinstance(iterable, cst.Call) and isinstance(iterable.func, cst.Name):
                if iterable.func.value == "range":
                    return N
            if self.kind(iterable) is T:
                return T  # iterating a tensor yields tensors
            return U
        if isinstance(parent, cst.Element):
            # Tuple unpacking: `for i, x in enumerate(xs)` gives i a number.
            return self._unpacked_kind(parent)
        return U

    def _unpacked_kind(self, element: cst.Element) -> TensorKind:
        container = self._parent_of(element)
        holder = self._parent_of(container) if container is not None else None
        if isinstance(holder, (cst.For, cst.CompFor)) and isinstance(container, (cst.Tuple, cst.List)):
            iterable = holder.iter
            if (
                isinstance(iterable, cst.Call)
                and isinstance(iterable.func, cst.Name)
                and iterable.func.value == "enumerate"
                and container.elements
                and container.elements[0] is element
            ):
                return N
        if isinstance(holder, cst.AssignTarget) and isinstance(container, (cst.Tuple, cst.List)):
            stmt = self._parent_of(holder)
            if isinstance(stmt, cst.Assign) and isinstance(stmt.value, (cst.Tuple, cst.List)):
                index = list(container.elements).index(element)
                values = stmt.value.elements
                if index < len(values) and not isinstance(values[index], cst.StarredElement):
                    return self.kind(values[index].value)
            if isinstance(stmt, cst.Assign) and self.kind(stmt.value) is T:
                return T  # `h, c = lstm(x)` style results are unknown; a tensor unpacks to tensors
        return U

    def _param_kind(self, param: cst.Param) -> TensorKind:
        if param.annotation is not None:
            return self._annotation_kind(param.annotation.annotation)
        if param.default is not None and isinstance(param.default, NON_TENSOR_NODES):
            return N
        return U

    def _annotation_kind(self, annotation: cst.BaseExpression) -> TensorKind:
        # Optional[Tensor], "Tensor", torch.Tensor, Tensor | None
        if isinstance(annotation, cst.SimpleString):
            text = annotation.evaluated_value if isinstance(annotation.evaluated_value, str) else ""
            tail = text.replace("torch.", "").replace("Optional[", "").rstrip("]").split("|")[0].strip()
            if tail in TENSOR_ANNOTATIONS:
                return T
            return N if tail in NON_TENSOR_ANNOTATIONS else U
        if isinstance(annotation, cst.Subscript):
            base = annotation.value
            base_name = base.attr.value if isinstance(base, cst.Attribute) else getattr(base, "value", "")
            if base_name == "Optional" and annotation.slice:
                inner = annotation.slice[0].slice
                if isinstance(inner, cst.Index):
                    return self._annotation_kind(inner.value)
            return N if base_name in NON_TENSOR_ANNOTATIONS else U
        if isinstance(annotation, cst.BinaryOperation):
            kinds = {self._annotation_kind(annotation.left), self._annotation_kind(annotation.right)}
            kinds.discard(N) if T in kinds else None
            return T if kinds == {T} else U
        if isinstance(annotation, cst.Attribute):
            return T if annotation.attr.value in TENSOR_ANNOTATIONS else U
        if isinstance(annotation, cst.Name):
            if annotation.value in TENSOR_ANNOTATIONS:
                return T
            if annotation.value in NON_TENSOR_ANNOTATIONS:
                return N
        return U

    def _self_attribute_kind(self, expr: cst.Attribute) -> TensorKind:
        return U
