"""How sure is gradfix that an in-place write breaks autograd? (issue 4's hazard levels)

``hazard_level(ctx, target, site)`` answers for a write into ``target`` at ``site``:

- ``Level.ERROR``: autograd will fail or give wrong gradients. The tensor is a
  leaf that requires grad (``requires_grad=True``, ``nn.Parameter``, a module's
  ``weight``), the output of an op whose backward needs its own output
  (``sigmoid``, ``exp``, ``softmax``, ...: ``optable.SAVES_OUTPUT``, measured on
  torch), a piece of ``unbind``/``split``/``chunk``, or it was passed before the
  write to an op that saves its inputs (``mul`` by a tensor, ``matmul``,
  ``pow``, a linear or conv layer: ``optable.SAVES_INPUT``).
- ``None``: no finding. The producer saves nothing the write touches (``add``,
  ``clone``, conv, linear and batch-norm outputs, fresh buffers) and no
  input-saving op read it before the write: ResNet's ``out += identity`` after
  batch norm, accumulators, running statistics.
- ``Level.WARNING``: possibly; the producer is unknown (a parameter, an
  attribute, a call gradfix cannot see into) or the value may not be a tensor.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Iterable, Optional

import libcst as cst
from libcst.metadata import Assignment

from .aliasing import ALIASING_METHODS, call_taking
from .inplace_signatures import MODULES
from .model import Level
from .optable import SAVES_INPUT, SAVES_OUTPUT
from .tensors import TensorKind

if TYPE_CHECKING:  # pragma: no cover
    from .context import RuleContext

FACTORIES = frozenset(
    {"empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "rand",
     "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "arange", "linspace",
     "logspace", "eye", "tensor", "as_tensor", "from_numpy", "empty_strided", "new_empty", "new_zeros",
     "new_ones", "new_full", "new_tensor"}
)
MULTI_OUTPUT = frozenset({"unbind", "split", "chunk", "tensor_split", "hsplit", "vsplit", "dsplit", "split_with_sizes"})
# Module classes and the functional op they run, where the names differ.
MODULE_OPS = {
    "ReLU": "relu", "ReLU6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax",
    "LogSoftmax": "log_softmax", "Softmin": "softmin", "ELU": "elu", "SELU": "selu", "CELU": "celu",
    "GELU": "gelu", "SiLU": "silu", "Mish": "mish", "Softplus": "softplus", "Hardtanh": "hardtanh",
    "LeakyReLU": "leaky_relu", "Hardsigmoid": "hardsigmoid", "Hardswish": "hardswish",
    "LogSigmoid": "logsigmoid", "Tanhshrink": "tanhshrink", "Softsign": "softsign",
    "Linear": "linear", "LayerNorm": "layer_norm", "BatchNorm1d": "batch_norm",
    "BatchNorm2d": "batch_norm", "BatchNorm3d": "batch_norm",
}
# Modules that save their input for backward (weights' gradients need it).
MODULES_SAVING_INPUT_PREFIXES = ("Linear", "Bilinear", "Conv", "LazyConv", "LazyLinear", "LSTM", "GRU", "RNN",
                                 "MultiheadAttention", "GroupNorm", "InstanceNorm", "LayerNorm", "BatchNorm",
                                 "Transformer", "Embedding")
# Composite ops (no entry of their own in the measured table) whose parts save their inputs.
_SAVING_CALLS = SAVES_INPUT | {"linear", "conv1d", "conv2d", "conv3d", "matmul", "mm", "bmm", "einsum"}
# Operators whose backward needs both operands (when the other one requires grad).
SAVING_OPERATORS = (cst.Multiply, cst.Divide, cst.MatrixMultiply, cst.Power)


class Producer(enum.Enum):
    LEAF = "a leaf that requires grad"
    SAVES_OUTPUT = "the output of an op whose backward needs it"
    MULTI_OUTPUT = "a piece of unbind/split/chunk"
    PLAIN = "a value no backward needs"
    UNKNOWN = "a value gradfix cannot trace"


_RANK = {Producer.PLAIN: 0, Producer.UNKNOWN: 1, Producer.MULTI_OUTPUT: 2, Producer.SAVES_OUTPUT: 2, Producer.LEAF: 2}


def _worst(producers: Iterable[Producer]) -> Producer:
    producers = list(producers)
    return max(producers, key=lambda p: _RANK[p]) if producers else Producer.UNKNOWN


def _last_name(ctx: "RuleContext", func: cst.BaseExpression) -> tuple[Optional[str], bool]:
    """The called op's last name and whether it is a torch function (vs a method).

    In-place variants answer for their twin: ``F.relu_(x)`` returns x holding relu's
    output, which relu's backward needs just the same.
    """
    for name in ctx.qualified_names(func):
        if name.startswith("torch."):
            return _twin(name.rsplit(".", 1)[-1]), True
    if isinstance(func, cst.Attribute):
        return _twin(func.attr.value), False
    return None, False


def _twin(name: str) -> str:
    return name[:-1] if name.endswith("_") and not name.endswith("__") and name[:-1] in SAVES_OUTPUT else name


def _module_output_producer(module: str, constructor: Optional[cst.Call]) -> Producer:
    """What a module's output is, from the table measured on torch (``inplace_signatures``)."""
    entry = MODULES.get(module)
    if entry is None:
        if module in ("Sequential", "ModuleList", "ModuleDict") or module.startswith(("Dropout", "AlphaDropout")):
            return Producer.UNKNOWN  # may return its input itself
        op = MODULE_OPS.get(module, module.lower())
        return Producer.SAVES_OUTPUT if op in SAVES_OUTPUT else Producer.PLAIN
    if entry["aliases_input"] != "never":
        return Producer.UNKNOWN  # Identity, Flatten, Dropout in eval mode: may return the input itself
    in_place = "inplace_index" in entry and constructor is not None and _takes_inplace(constructor, entry["inplace_index"])
    saves = entry["inplace_saves_output"] if in_place else entry["saves_output"]
    return Producer.SAVES_OUTPUT if saves else Producer.PLAIN


def _takes_inplace(constructor: cst.Call, index: int) -> bool:
    """``inplace=True`` given by keyword, or a literal True at the parameter's position."""
    for position, arg in enumerate(constructor.args):
        if arg.keyword is not None:
            if arg.keyword.value == "inplace":
                return _literal_bool(arg.value) is not False
        elif position == index and not arg.star:
            return _literal_bool(arg.value) is not False
    return False


def _module_class(ctx: "RuleContext", func: cst.BaseExpression) -> Optional[str]:
    constructor = ctx.module_constructor(func)
    if constructor is None:
        return None
    for name in ctx.qualified_names(constructor.func):
        return name.rsplit(".", 1)[-1]
    return None


class HazardAnalysis:
    def __init__(self, ctx: "RuleContext") -> None:
        self.ctx = ctx
        self._visiting: set[int] = set()

    # -- producers ---------------------------------------------------------------------

    def value_producer(self, value: cst.BaseExpression, site: cst.CSTNode) -> Producer:
        ctx = self.ctx
        if isinstance(value, (cst.BinaryOperation, cst.UnaryOperation)):
            return Producer.PLAIN
        if isinstance(value, (cst.Name, cst.Attribute)) and not isinstance(value, cst.Call):
            return self.target_producer(value, site)
        if isinstance(value, cst.Subscript):
            return self._view_of(self.target_producer(value.value, site) if _is_name_chain(value.value)
                                 else self.value_producer(value.value, site))
        if isinstance(value, cst.IfExp):
            return _worst([self.value_producer(value.body, site), self.value_producer(value.orelse, site)])
        if not isinstance(value, cst.Call):
            return Producer.UNKNOWN
        func = value.func
        module = _module_class(ctx, func)
        if module is not None:
            return _module_output_producer(module, ctx.module_constructor(func))
        name, is_torch = _last_name(ctx, func)
        if name is None:
            return Producer.UNKNOWN
        if name == "Parameter":
            return Producer.LEAF
        if name in FACTORIES:
            return Producer.LEAF if _requires_grad_true(value) else Producer.PLAIN
        if name in MULTI_OUTPUT:
            return Producer.MULTI_OUTPUT
        if name in SAVES_OUTPUT:
            return Producer.SAVES_OUTPUT
        if name == "clone":
            return Producer.PLAIN
        if name in ALIASING_METHODS or name == "detach":
            # A view shares the base's memory (and version counter): the base's producer decides.
            base = value.func.value if (isinstance(func, cst.Attribute) and not is_torch) else (value.args[0].value if value.args else None)
            if base is None:
                return Producer.UNKNOWN
            return self._view_of(self.value_producer(base, site) if not _is_name_chain(base) else self.target_producer(base, site))
        if is_torch or (isinstance(func, cst.Attribute) and ctx.tensor_kind(func.value) is TensorKind.TENSOR):
            return Producer.PLAIN
        return Producer.UNKNOWN

    def _view_of(self, base: Producer) -> Producer:
        return base if base is not Producer.PLAIN else Producer.PLAIN

    def target_producer(self, target: cst.BaseExpression, site: cst.CSTNode) -> Producer:
        key = id(target)
        if key in self._visiting:
            return Producer.UNKNOWN
        self._visiting.add(key)
        try:
            if isinstance(target, cst.Name):
                return self._name_producer(target, site)
            if isinstance(target, cst.Attribute):
                return self._attribute_producer(target, site)
            return self.value_producer(target, site)
        finally:
            self._visiting.discard(key)

    def _name_producer(self, name: cst.Name, site: cst.CSTNode) -> Producer:
        ctx = self.ctx
        scope = ctx.scope(name)
        if scope is None or id(site) in self._visiting:
            return Producer.UNKNOWN
        self._visiting.add(id(site))
        try:
            return self._name_producer_at(name, site, scope)
        finally:
            self._visiting.discard(id(site))

    def _name_producer_at(self, name: cst.Name, site: cst.CSTNode, scope) -> Producer:
        ctx = self.ctx
        bindings = [a for a in scope[name.value] if isinstance(a, Assignment)]
        reaching = self._reaching(bindings, site)
        if not reaching:
            return Producer.UNKNOWN  # a parameter or a global
        producers = []
        for binding in reaching:
            node = binding.node
            if isinstance(node, cst.Param):
                producers.append(Producer.UNKNOWN)
                continue
            parent = ctx.parent(node)
            if isinstance(parent, cst.AugAssign):
                # `x += y` writes into the same tensor: what made it before still decides.
                producers.append(self._name_producer(name, parent) if id(parent) not in self._visiting else Producer.PLAIN)
            elif isinstance(parent, cst.AssignTarget):
                statement = ctx.parent(parent)
                producers.append(self.value_producer(statement.value, site) if isinstance(statement, cst.Assign) else Producer.UNKNOWN)
            elif isinstance(parent, (cst.AnnAssign, cst.NamedExpr)) and parent.value is not None:
                producers.append(self.value_producer(parent.value, site))
            elif isinstance(parent, cst.Element):
                producers.append(self._unpacked_producer(parent, site))
            else:
                producers.append(Producer.UNKNOWN)
        producer = _worst(producers)
        if self._made_leaf(name, reaching, site):
            return Producer.LEAF
        return producer

    def _unpacked_producer(self, element: cst.Element, site: cst.CSTNode) -> Producer:
        ctx = self.ctx
        container = ctx.parent(element)
        target = ctx.parent(container) if container is not None else None
        statement = ctx.parent(target) if isinstance(target, cst.AssignTarget) else None
        if isinstance(statement, cst.Assign) and isinstance(statement.value, cst.Call):
            name, _ = _last_name(ctx, statement.value.func)
            if name in MULTI_OUTPUT:
                return Producer.MULTI_OUTPUT
        return Producer.UNKNOWN

    def _attribute_producer(self, attribute: cst.Attribute, site: cst.CSTNode) -> Producer:
        ctx = self.ctx
        if attribute.attr.value in ("weight", "bias") and _is_name_chain(attribute):
            return Producer.LEAF  # a module's parameter
        if not (isinstance(attribute.value, cst.Name) and attribute.value.value == "self"):
            return Producer.UNKNOWN
        # `self.h = torch.tanh(...)` earlier in the same function, else what the class stores there.
        function = _enclosing_function(ctx, site)
        latest: Optional[cst.Assign] = None
        if function is not None:
            for assign in _assignments_to(function, attribute):
                if ctx.start(assign) < ctx.start(site):
                    latest = assign
        if latest is not None:
            return self.value_producer(latest.value, site)
        constructor = ctx.module_constructor(attribute)
        if constructor is not None:
            return Producer.UNKNOWN
        cls = _enclosing_class(ctx, site)
        if cls is not None:
            for assign in _assignments_to(cls, attribute):
                value = assign.value
                if isinstance(value, cst.Call):
                    name, _ = _last_name(ctx, value.func)
                    if name == "Parameter":
                        return Producer.LEAF
        if cls is not None and _registers_buffer(cls, attribute.attr.value):
            return Producer.PLAIN
        return Producer.UNKNOWN

    # -- reaching definitions and uses (straight-line, loop-aware) --------------------------

    def _bound_at(self, binding: Assignment) -> tuple[int, int]:
        """Where a binding takes effect: after its whole statement (`out = conv(out)` reads the old out)."""
        statement = self.ctx.statement_of(binding.node)
        if isinstance(statement, cst.BaseSmallStatement):
            end = self.ctx.position(statement).end
            return (end.line, end.column)
        return self.ctx.start(binding.node)

    def _reaching(self, bindings: list[Assignment], site: cst.CSTNode) -> list[Assignment]:
        ctx = self.ctx
        site_start = ctx.start(site)
        before = [b for b in bindings if not isinstance(b.node, cst.Param) and self._bound_at(b) <= site_start]
        params = [b for b in bindings if isinstance(b.node, cst.Param)]
        reaching: list[Assignment] = []
        if before:
            reaching.append(max(before, key=self._bound_at))
        elif params:
            reaching.extend(params)
        loop = self._carrying_loop(reaching, site)
        if loop is not None:
            # The next iteration sees what the loop body binds after the site.
            reaching.extend(b for b in bindings if ctx.start(b.node) > site_start and ctx.is_inside(b.node, loop))
        return reaching

    def _carrying_loop(self, reaching: list[Assignment], site: cst.CSTNode) -> Optional[cst.CSTNode]:
        """The loop whose earlier iterations can reach ``site`` with the same tensor, if any.

        When the name is bound again inside the loop before the write, every iteration
        writes into a fresh tensor: nothing from the previous iteration reaches it.
        """
        loop = _enclosing_loop(self.ctx, site)
        if loop is None:
            return None
        if any(not isinstance(b.node, cst.Param) and self.ctx.is_inside(b.node, loop)
               and not isinstance(self.ctx.parent(b.node), cst.AugAssign) for b in reaching):
            return None
        return loop

    def _made_leaf(self, name: cst.Name, reaching: list[Assignment], site: cst.CSTNode) -> bool:
        """`y.requires_grad_()` (or `y.requires_grad = True`) after the binding: y is a leaf now."""
        ctx = self.ctx
        start = max((self._bound_at(b) for b in reaching if not isinstance(b.node, cst.Param)), default=(0, 0))
        for use in self._uses(name, start, site, self._carrying_loop(reaching, site)):
            parent = ctx.parent(use)
            if isinstance(parent, cst.Attribute) and parent.value is use and _switch_value(ctx, parent) is True:
                return True
        return False

    def requires_grad_switch(self, target: cst.BaseExpression, site: cst.CSTNode) -> Optional[tuple[bool, int]]:
        """The last ``T.requires_grad = v`` or ``T.requires_grad_(v)`` before ``site`` in the
        same function, on the written tensor ``T`` itself: ``(v, line)``.

        Code that switches grad off around a write (``w.requires_grad = False; w.copy_(...);
        w.requires_grad = True``: transformers' layer pruning) writes into a tensor autograd
        does not track at that moment.
        """
        ctx = self.ctx
        scope_root = _enclosing_function(ctx, site)
        if scope_root is None or not _is_name_chain(target):
            return None
        wanted = ctx.code(target)
        site_start = ctx.start(site)
        latest: Optional[tuple[tuple[int, int], bool]] = None
        for start, value, switched in _switches_in(ctx, scope_root):
            if switched == wanted and start < site_start and (latest is None or start > latest[0]):
                latest = (start, value)
        if latest is None:
            return None
        start, value = latest
        loop = _enclosing_loop(ctx, site)
        if loop is not None and not ctx.position(loop).start.line <= start[0] <= ctx.position(loop).end.line:
            # Set before the loop: a switch later in the loop body reaches the next iteration.
            return None
        return value, start[0]

    def _uses(self, name: cst.Name, after: tuple[int, int], site: cst.CSTNode,
              loop: Optional[cst.CSTNode] = None) -> list[cst.Name]:
        ctx = self.ctx
        scope = ctx.scope(name)
        if scope is None:
            return []
        site_start = ctx.start(site)
        uses = []
        for binding in scope[name.value]:
            if not isinstance(binding, Assignment):
                continue
            for access in binding.references:
                node = access.node
                if not isinstance(node, cst.Name) or ctx.is_inside(node, site):
                    continue
                start = ctx.start(node)
                if after < start < site_start or (loop is not None and ctx.is_inside(node, loop)):
                    uses.append(node)
        # libcst keeps bindings and references in sets: source order, so the line reported is stable
        uses.sort(key=ctx.start)
        return uses

    def saved_as_input(self, target: cst.BaseExpression, site: cst.CSTNode) -> Optional[str]:
        """How an input-saving op read ``target`` before the write, if one did."""
        if not isinstance(target, cst.Name):
            return None
        ctx = self.ctx
        scope = ctx.scope(target)
        if scope is None:
            return None
        bindings = [a for a in scope[target.value] if isinstance(a, Assignment)]
        reaching = self._reaching(bindings, site)
        start = max((self._bound_at(b) for b in reaching if not isinstance(b.node, cst.Param)), default=(0, 0))
        for use in self._uses(target, start, site, self._carrying_loop(reaching, site)):
            reason = self._saving_use(use)
            if reason:
                return f"{reason} (line {ctx.line(use)})"
        return None

    def _saving_use(self, use: cst.Name) -> Optional[str]:
        ctx = self.ctx
        # A view (`h[t]`, `h.t()`, `h.view(...)`) shares h's version counter: an op that saves
        # the view has saved h, as far as a later in-place write into h is concerned.
        use = _through_views(ctx, use)
        parent = ctx.parent(use)
        if isinstance(parent, cst.BinaryOperation) and isinstance(parent.operator, SAVING_OPERATORS):
            other = parent.right if parent.left is use else parent.left
            if isinstance(parent.operator, cst.Power) or not isinstance(other, (cst.Integer, cst.Float)):
                if isinstance(parent.operator, cst.Power) or ctx.tensor_kind(other) is not TensorKind.NOT_TENSOR:
                    return "an operator that saves its operands read it"
        if isinstance(parent, cst.Attribute) and parent.value is use:
            holder = ctx.parent(parent)
            if isinstance(holder, cst.Call) and holder.func is parent and parent.attr.value in _SAVING_CALLS:
                if parent.attr.value not in ("mul", "multiply", "div", "divide") or any(
                    ctx.tensor_kind(a.value) is not TensorKind.NOT_TENSOR for a in holder.args
                ):
                    return f"`{parent.attr.value}` saved it for backward"
        call = call_taking(use, ctx.parent)
        if call is not None:
            module = _module_class(ctx, call.func)
            if module is not None and module.startswith(MODULES_SAVING_INPUT_PREFIXES):
                return f"a `{module}` layer saved it for backward"
            name, is_torch = _last_name(ctx, call.func)
            if is_torch and name in _SAVING_CALLS:
                return f"`{name}` saved it for backward"
        return None


def hazard_level(ctx: "RuleContext", target: cst.BaseExpression, site: cst.CSTNode) -> Optional[Level]:
    level, _ = explain(ctx, target, site)
    return level


def explain(ctx: "RuleContext", target: cst.BaseExpression, site: cst.CSTNode) -> tuple[Optional[Level], str]:
    """The level and a short reason, for messages."""
    kind = ctx.tensor_kind(target)
    if kind is TensorKind.NOT_TENSOR:
        return None, "not a tensor"
    analysis = HazardAnalysis(ctx)
    switch = analysis.requires_grad_switch(target, site)
    if switch is not None and switch[0] is False:
        return None, f"`requires_grad` is switched off before the write (line {switch[1]})"
    producer = analysis.target_producer(target, site) if _is_name_chain(target) else analysis.value_producer(target, site)
    if producer in (Producer.LEAF, Producer.SAVES_OUTPUT, Producer.MULTI_OUTPUT):
        return Level.ERROR, f"it is {producer.value}"
    saved = analysis.saved_as_input(target, site)
    if saved:
        return Level.ERROR, saved
    if producer is Producer.PLAIN and kind is TensorKind.TENSOR:
        return None, "nothing autograd needs is overwritten"
    if producer is Producer.PLAIN:
        return None, "nothing autograd needs is overwritten"
    return Level.WARNING, "gradfix cannot tell what produced it"


# --- small helpers ------------------------------------------------------------------------


def _is_name_chain(expr: cst.BaseExpression) -> bool:
    node = expr
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name)


def _requires_grad_true(call: cst.Call) -> bool:
    return any(
        arg.keyword is not None and arg.keyword.value == "requires_grad"
        and not (isinstance(arg.value, cst.Name) and arg.value.value == "False")
        for arg in call.args
    )


# Methods that return a view of their tensor (never a copy), so the view shares its version counter.
VIEW_METHODS = frozenset(
    {"view", "view_as", "expand", "expand_as", "t", "transpose", "permute", "squeeze", "unsqueeze", "narrow",
     "select", "unfold", "unflatten", "diagonal", "movedim", "moveaxis", "swapaxes", "swapdims", "detach",
     "as_strided", "real", "imag"}
)

VIEW_ATTRIBUTES = frozenset({"T", "mT", "H", "mH", "data"})


def _through_views(ctx: "RuleContext", node: cst.BaseExpression) -> cst.BaseExpression:
    """The outermost expression that is ``node`` seen through subscripts and view methods."""
    while True:
        parent = ctx.parent(node)
        if isinstance(parent, cst.Subscript) and parent.value is node:
            node = parent
            continue
        if isinstance(parent, cst.Attribute) and parent.value is node and parent.attr.value in VIEW_ATTRIBUTES:
            node = parent
            continue
        if isinstance(parent, cst.Attribute) and parent.value is node and parent.attr.value in VIEW_METHODS:
            call = ctx.parent(parent)
            if isinstance(call, cst.Call) and call.func is parent:
                node = call
                continue
        return node


def _switches_in(ctx: "RuleContext", function: cst.FunctionDef) -> list[tuple[tuple[int, int], bool, str]]:
    """Every literal ``requires_grad`` switch in ``function`` (nested code too), in visit order:
    (start, value, the switched expression's code). Found once per function and module."""
    found = ctx.requires_grad_switches.get(id(function))
    if found is None and "requires_grad" not in ctx.source:
        found = ctx.requires_grad_switches[id(function)] = []  # most modules: nothing to visit
    if found is None:
        switches: list[tuple[tuple[int, int], bool, str]] = []

        class Switches(cst.CSTVisitor):
            def visit_Attribute(self, node: cst.Attribute) -> None:
                value = _switch_value(ctx, node)
                if value is not None:
                    switches.append((ctx.start(node), value, ctx.code(node.value)))

        function.visit(Switches())
        found = ctx.requires_grad_switches[id(function)] = switches
    return found


def _switch_value(ctx: "RuleContext", attribute: cst.Attribute) -> Optional[bool]:
    """For ``T.requires_grad = v`` or ``T.requires_grad_(v)`` (``attribute`` is ``T.requires_grad``
    or ``T.requires_grad_``): v when it is a literal (``requires_grad_()`` means True), else None."""
    holder = ctx.parent(attribute)
    if attribute.attr.value == "requires_grad" and isinstance(holder, cst.AssignTarget):
        assign = ctx.parent(holder)
        return _literal_bool(assign.value) if isinstance(assign, cst.Assign) else None
    if attribute.attr.value == "requires_grad_" and isinstance(holder, cst.Call) and holder.func is attribute:
        if not holder.args:
            return True
        return _literal_bool(holder.args[0].value)
    return None


def _literal_bool(value: cst.BaseExpression) -> Optional[bool]:
    if isinstance(value, cst.Name) and value.value in ("True", "False"):
        return value.value == "True"
    return None


def _enclosing_loop(ctx: "RuleContext", node: cst.CSTNode) -> Optional[cst.CSTNode]:
    current = ctx.parent(node)
    while current is not None and not isinstance(current, (cst.FunctionDef, cst.Module, cst.ClassDef)):
        if isinstance(current, (cst.For, cst.While)):
            return current
        current = ctx.parent(current)
    return None


def _enclosing_function(ctx: "RuleContext", node: cst.CSTNode) -> Optional[cst.FunctionDef]:
    current = ctx.parent(node)
    while current is not None and not isinstance(current, cst.FunctionDef):
        current = ctx.parent(current)
    return current


def _enclosing_class(ctx: "RuleContext", node: cst.CSTNode) -> Optional[cst.ClassDef]:
    current = ctx.parent(node)
    while current is not None and not isinstance(current, cst.ClassDef):
        current = ctx.parent(current)
    return current


def _assignments_to(root: cst.CSTNode, attribute: cst.Attribute) -> list[cst.Assign]:
    found: list[cst.Assign] = []
    wanted = attribute.attr.value

    class Collector(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            for target in node.targets:
                t = target.target
                if isinstance(t, cst.Attribute) and t.attr.value == wanted and isinstance(t.value, cst.Name) and t.value.value == "self":
                    found.append(node)

    root.visit(Collector())
    return found


def _registers_buffer(cls: cst.ClassDef, name: str) -> bool:
    found = False

    class Collector(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            nonlocal found
            func = node.func
            if isinstance(func, cst.Attribute) and func.attr.value == "register_buffer" and node.args:
                first = node.args[0].value
                if isinstance(first, cst.SimpleString) and first.evaluated_value == name:
                    found = True

    cls.visit(Collector())
    return found
