"""GF105: ``inplace=True`` on a ``torch.nn`` module or a ``torch.nn.functional`` function."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import libcst as cst
from libcst.metadata import Assignment

from ..aliasing import ALIASING_METHODS
from ..bindings import bound_at, bound_value, enclosing, module_class, reaching_binding, torch_name
from ..context import RuleContext
from ..grad_context import enclosing_grad_context
from ..hazard import FACTORIES
from ..inplace_signatures import FUNCTIONAL, FUNCTIONS_SAVING_OUTPUT, INPLACE_MODULES, MODULES
from ..model import Example, Fix, FixSafety, Level, Report, ReplaceNode
from ..optable import SAVES_INPUT, SAVES_OUTPUT
from ..rewrite import is_assignable, rebind_in_place, without_argument
from .. import prescreen as text
from ..rule import Rule
from ..tensors import TensorKind

# Compound statements whose body may not run: a binding inside one does not reach past it on every path.
_VIEW_ATTRIBUTES = frozenset({"T", "mT", "H", "mH", "real", "imag"})
# Reads that look at a tensor's metadata, never at (or into) its values.
_METADATA_READS = frozenset({"shape", "dtype", "device", "ndim", "size", "dim", "numel", "requires_grad", "is_leaf"})
_BINARY_OPS = {cst.Add: "add", cst.Subtract: "sub", cst.Multiply: "mul", cst.Divide: "div", cst.MatrixMultiply: "matmul"}


def read_after(ctx: RuleContext, name: cst.Name, call: cst.CSTNode) -> Optional[cst.Name]:
    """A read of ``name``'s value after ``call`` (before the name is bound again), if any."""
    scope = ctx.scope(name)
    if scope is None:
        return None
    end = ctx.position(call).end
    after = (end.line, end.column)
    loop = enclosing(ctx, call, (cst.For, cst.While))
    rebound = [
        bound_at(ctx, a.node) for a in scope[name.value]
        if isinstance(a, Assignment) and not isinstance(a.node, cst.Param) and ctx.start(a.node) >= after
        and not isinstance(ctx.parent(a.node), cst.AugAssign)
    ]
    statement = ctx.statement_of(call)
    if isinstance(statement, cst.Assign) and any(
        isinstance(t.target, cst.Name) and t.target.value == name.value for t in statement.targets
    ):
        rebound.append(after)
    next_binding = min(rebound, default=None)
    for access in scope.accesses[name.value]:
        node = access.node
        if not isinstance(node, cst.Name) or ctx.is_inside(node, call):
            continue
        start = ctx.start(node)
        later = start >= after and (next_binding is None or start < next_binding)
        if later or (loop is not None and ctx.is_inside(node, loop) and start < ctx.start(call)):
            parent = ctx.parent(node)
            if isinstance(parent, cst.Attribute) and parent.value is node and parent.attr.value in _METADATA_READS:
                continue
            return node
    return None


# --- producers: what made the tensor an in-place activation overwrites -------------------------------


class Verdict(enum.Enum):
    SAVES = "saves"  # the producer's backward needs this tensor: overwriting it breaks backward()
    LEAF = "leaf"  # a leaf that requires grad: torch refuses the in-place write
    EVAL = "eval"  # saved only in eval mode, through a module that then returns its input (Dropout)
    KEEPS = "keeps"  # the producer saves only its inputs, or nothing: the write is correct
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Producer:
    verdict: Verdict
    what: str = ""  # "`torch.sigmoid`", "`nn.ReLU(inplace=True)` (line 9)"
    fresh: bool = False  # a new tensor that nothing else holds (overwriting it changes nothing visible)

    @property
    def level(self) -> Optional[Level]:
        if self.verdict in (Verdict.SAVES, Verdict.LEAF):
            return Level.ERROR
        if self.verdict is Verdict.KEEPS:
            return None
        return Level.WARNING

    def explain(self) -> str:
        if self.verdict is Verdict.SAVES:
            return f"the output of {self.what}, which its backward needs"
        if self.verdict is Verdict.LEAF:
            return f"{self.what}, a leaf that requires grad"
        if self.verdict is Verdict.EVAL:
            return f"in eval mode the output of {self.what}, which its backward needs"
        if self.verdict is Verdict.KEEPS:
            return f"the output of {self.what}, which no backward needs"
        return "a tensor gradfix cannot trace" + (f" ({self.what})" if self.what else "")


UNKNOWN = Producer(Verdict.UNKNOWN)


def _is_true(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "True"


def _positional(call: cst.Call) -> list[cst.Arg]:
    """The positional arguments, or [] after a ``*args`` (positions are unknown from there)."""
    found = []
    for arg in call.args:
        if arg.star:
            break
        if arg.keyword is None:
            found.append(arg)
    return found


def inplace_argument(call: cst.Call, index: int) -> Optional[cst.Arg]:
    """The ``inplace=True`` argument, by keyword or at position ``index``."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "inplace":
            return arg if _is_true(arg.value) else None
    positional = _positional(call)
    if 0 <= index < len(positional) and _is_true(positional[index].value):
        return positional[index]
    return None


def first_input(call: cst.Call) -> Optional[cst.BaseExpression]:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "input":
            return arg.value
    positional = _positional(call)
    return positional[0].value if positional and not positional[0].star else None


def _module_inplace(ctx: RuleContext, constructor: cst.Call, cls: str) -> bool:
    entry = INPLACE_MODULES.get(cls)
    return entry is not None and inplace_argument(constructor, entry["inplace_index"]) is not None


def _code(ctx: RuleContext, node: cst.CSTNode, limit: int = 40) -> str:
    """The node's code on one line, shortened to ``limit`` characters."""
    text = " ".join(ctx.code(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(ctx: RuleContext, node: cst.CSTNode) -> str:
    text = " ".join(ctx.code(node).split())
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"`{text}` (line {ctx.line(node)})"


class Producers:
    """Classifies the tensor that an in-place activation overwrites, from the code that made it."""

    def __init__(self, ctx: RuleContext) -> None:
        self.ctx = ctx
        self._depth = 0

    def of_value(self, expr: cst.BaseExpression, site: cst.CSTNode) -> Producer:
        if self._depth > 12:
            return UNKNOWN
        self._depth += 1
        try:
            return self._of_value(expr, site)
        finally:
            self._depth -= 1

    def _of_value(self, expr: cst.BaseExpression, site: cst.CSTNode) -> Producer:
        ctx = self.ctx
        if isinstance(expr, cst.Name):
            return self._of_name(expr, site)
        if isinstance(expr, cst.Subscript):
            return self.of_value(expr.value, site)  # a view: its base's producer decides
        if isinstance(expr, cst.Attribute):
            if expr.attr.value in _VIEW_ATTRIBUTES:
                return self.of_value(expr.value, site)
            return Producer(Verdict.UNKNOWN, f"`{_code(ctx, expr)}`")
        if isinstance(expr, cst.BinaryOperation):
            op = _BINARY_OPS.get(type(expr.operator))
            if op is not None and FUNCTIONS_SAVING_OUTPUT.get(op) is False:
                return Producer(Verdict.KEEPS, f"`{ctx.code(expr.operator).strip()}`", fresh=True)
            return UNKNOWN
        if isinstance(expr, cst.Call):
            return self._of_call(expr, site)
        return UNKNOWN

    def _of_name(self, name: cst.Name, site: cst.CSTNode) -> Producer:
        ctx = self.ctx
        binding = reaching_binding(ctx, name, site)
        if binding is None or isinstance(binding, cst.Param):
            return Producer(Verdict.UNKNOWN, f"`{name.value}` is a parameter" if binding is not None else "")
        parent = ctx.parent(binding)
        if isinstance(parent, cst.AugAssign):
            # `out += identity` writes into the same tensor (add_ saves nothing): what made it decides.
            if isinstance(parent.operator, (cst.AddAssign, cst.SubtractAssign)):
                producer = self.of_value(name, parent)
                return Producer(producer.verdict, producer.what)
            return UNKNOWN
        value = bound_value(ctx, binding)
        if value is None:
            return UNKNOWN
        producer = self.of_value(value, value)
        return Producer(producer.verdict, producer.what)  # a named tensor is held by its name: not fresh

    def _of_call(self, call: cst.Call, site: cst.CSTNode) -> Producer:
        ctx = self.ctx
        func = call.func
        constructor = func if isinstance(func, cst.Call) and module_class(ctx, func) else ctx.module_constructor(func)
        if constructor is not None:
            argument = first_input(call)
            return self.of_module(constructor, lambda: self.of_value(argument, call) if argument is not None else UNKNOWN)
        qualified = torch_name(ctx, func)
        if qualified is not None:
            return self._of_function(call, qualified, site)
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in ALIASING_METHODS or method == "detach":
                return self.of_value(func.value, site)
            if method == "clone":
                return Producer(Verdict.KEEPS, "`clone`", fresh=True)
            if ctx.tensor_kind(func.value) is TensorKind.TENSOR:
                return self._by_name(method, f"`.{method}()`")
        return UNKNOWN

    def _of_function(self, call: cst.Call, qualified: str, site: cst.CSTNode) -> Producer:
        last = qualified.rsplit(".", 1)[-1]
        shown = f"`{qualified}`"
        if last == "Parameter":
            return Producer(Verdict.LEAF, f"an `nn.Parameter` (line {self.ctx.line(call)})")
        if last in FACTORIES:
            for arg in call.args:
                if arg.keyword is not None and arg.keyword.value == "requires_grad" and not (
                    isinstance(arg.value, cst.Name) and arg.value.value == "False"
                ):
                    return Producer(Verdict.LEAF, f"`{last}(..., requires_grad=True)` (line {self.ctx.line(call)})")
            return Producer(Verdict.KEEPS, shown, fresh=True)
        entry = FUNCTIONAL.get(last) if qualified.startswith("torch.nn.functional.") else None
        if entry is not None and inplace_argument(call, entry["inplace_index"]) is not None:
            argument = first_input(call)
            previous = self.of_value(argument, call) if argument is not None else UNKNOWN  # it returns its input
            if entry["inplace_saves_output"]:
                return Producer(Verdict.SAVES, f"`{last}(..., inplace=True)`", fresh=previous.fresh)
            return previous
        if last in ALIASING_METHODS or last == "detach":
            argument = first_input(call)
            return self.of_value(argument, site) if argument is not None else UNKNOWN
        return self._by_name(last, shown)

    def _by_name(self, name: str, shown: str) -> Producer:
        """Measured tables first (inplace_signatures), then optable's registry measurements."""
        if name in FUNCTIONAL:
            saves = FUNCTIONAL[name]["saves_output"]
        elif name in FUNCTIONS_SAVING_OUTPUT:
            saves = FUNCTIONS_SAVING_OUTPUT[name]
        elif name in SAVES_OUTPUT:
            saves = True
        elif name in SAVES_INPUT:
            saves = False
        else:
            return Producer(Verdict.UNKNOWN, shown)
        return Producer(Verdict.SAVES if saves else Verdict.KEEPS, shown, fresh=True)

    def of_module(self, constructor: cst.Call, before: Callable[[], Producer]) -> Producer:
        """The output of the module ``constructor`` builds; ``before`` classifies its input."""
        ctx = self.ctx
        cls = module_class(ctx, constructor)
        if cls is None:
            return UNKNOWN
        shown = _shown(ctx, constructor)
        if _module_inplace(ctx, constructor, cls):
            previous = before()  # it writes into its input and returns it
            if INPLACE_MODULES[cls].get("inplace_saves_output"):
                return Producer(Verdict.SAVES, shown, fresh=previous.fresh)
            return previous
        entry = MODULES.get(cls)
        if entry is None:
            return Producer(Verdict.UNKNOWN, shown)
        if entry.get("saves_output"):
            return Producer(Verdict.SAVES, shown, fresh=True)
        if entry.get("aliases_input") == "always":
            return before()  # its input itself, or a view of it
        if entry.get("aliases_input") == "eval":
            previous = before()  # a new tensor in training mode, its input in eval mode
            if previous.verdict in (Verdict.SAVES, Verdict.LEAF):
                return Producer(Verdict.EVAL, previous.what, fresh=previous.fresh)
            return previous
        return Producer(Verdict.KEEPS, shown, fresh=True)

    def of_sequence_item(self, items: Sequence[Optional[cst.BaseExpression]], index: int,
                         before: Callable[[], Producer]) -> Producer:
        """The output of ``items[index]`` in a chain of modules; ``before`` is what precedes ``items[0]``."""
        if index < 0:
            return before()
        item = items[index]
        if item is None:
            return UNKNOWN
        previous = lambda: self.of_sequence_item(items, index - 1, before)  # noqa: E731
        constructor = item if isinstance(item, cst.Call) else self.ctx.module_constructor(item)
        if constructor is None:
            return Producer(Verdict.UNKNOWN, f"`{_code(self.ctx, item)}`")
        if module_class(self.ctx, constructor) == "Sequential":
            inner = _sequence_items(self.ctx, constructor)
            if inner is None:
                return UNKNOWN
            return self.of_sequence_item(inner, len(inner) - 1, previous)
        return self.of_module(constructor, previous)


# --- where a module is used --------------------------------------------------------------------------


def _sequence_items(ctx: RuleContext, call: cst.Call) -> Optional[list[Optional[cst.BaseExpression]]]:
    """``nn.Sequential(a, b, c)`` -> [a, b, c]; ``nn.Sequential(OrderedDict([("a", a), ...]))`` too."""
    args = list(call.args)
    if len(args) == 1 and isinstance(args[0].value, cst.Call) and args[0].value.args:
        inner = args[0].value.args[0].value
        if isinstance(inner, (cst.List, cst.Tuple)) and ctx.code(args[0].value.func).endswith("OrderedDict"):
            return _list_items(inner)
    if any(arg.keyword is not None for arg in args):
        return None
    return [None if arg.star else arg.value for arg in args]


def _list_items(container: cst.BaseExpression) -> list[Optional[cst.BaseExpression]]:
    items: list[Optional[cst.BaseExpression]] = []
    for element in container.elements:  # type: ignore[attr-defined]
        if isinstance(element, cst.StarredElement):
            items.append(None)
        elif isinstance(element.value, cst.Tuple) and len(element.value.elements) == 2:
            items.append(element.value.elements[1].value)  # ("name", module) of an OrderedDict
        else:
            items.append(element.value)
    return items


@dataclass(frozen=True)
class Use:
    """One place a module runs: called (``call``), in a chain (``items[index]``), or unknown."""

    call: Optional[cst.Call] = None
    items: Optional[list] = None
    index: int = 0
    unknown: str = ""


def _sequence_use(ctx: RuleContext, expr: cst.CSTNode) -> Optional[Use]:
    """``expr`` as an element of ``nn.Sequential(...)``, a list or tuple of modules, or an OrderedDict."""
    parent = ctx.parent(expr)
    if isinstance(parent, cst.Arg) and parent.keyword is None and not parent.star:
        call = ctx.parent(parent)
        if isinstance(call, cst.Call) and _is_sequential(ctx, call):
            items = _sequence_items(ctx, call)
            if items is not None:
                return Use(items=items, index=_index(items, expr))
        return None
    if isinstance(parent, cst.Element):
        container = ctx.parent(parent)
        if isinstance(container, cst.Tuple) and len(container.elements) == 2 and container.elements[1] is parent:
            pair = ctx.parent(container)
            holder = ctx.parent(pair) if isinstance(pair, cst.Element) else None
            if isinstance(holder, (cst.List, cst.Tuple)):
                return Use(items=_list_items(holder), index=_index(holder.elements, pair))
        if isinstance(container, (cst.List, cst.Tuple)):
            return Use(items=_list_items(container), index=_index(container.elements, parent))
    return None


def _index(items: Sequence, node: cst.CSTNode) -> int:
    return next(i for i, item in enumerate(items) if item is node)


def _is_sequential(ctx: RuleContext, call: cst.Call) -> bool:
    name = torch_name(ctx, call.func)
    return name is not None and name.startswith("torch.nn.") and name.endswith(".Sequential")


def _use_of_reference(ctx: RuleContext, ref: cst.CSTNode) -> Use:
    parent = ctx.parent(ref)
    if isinstance(parent, cst.Call) and parent.func is ref:
        return Use(call=parent)
    sequence = _sequence_use(ctx, ref)
    if sequence is not None:
        return sequence
    return Use(unknown=f"`{_code(ctx, ref)}` is used on line {ctx.line(ref)} in a way gradfix does not follow")


def _class_of(ctx: RuleContext, node: cst.CSTNode) -> Optional[cst.ClassDef]:
    current = ctx.parent(node)
    while current is not None and not isinstance(current, cst.ClassDef):
        current = ctx.parent(current)
    return current


def _self_references(ctx: RuleContext, cls: cst.ClassDef, attr: str, target: cst.CSTNode) -> list[cst.Attribute]:
    found: list[cst.Attribute] = []

    class Collector(cst.CSTVisitor):
        def visit_Attribute(self, node: cst.Attribute) -> None:
            if (node is not target and node.attr.value == attr and isinstance(node.value, cst.Name)
                    and node.value.value == "self"):
                found.append(node)

    cls.visit(Collector())
    return found


def _appended_after(ctx: RuleContext, constructor: cst.Call) -> Optional[Use]:
    """``layers.append(nn.ReLU(True))`` right after ``layers.append(conv)`` (or ``layers += [..., conv]``)."""
    arg = ctx.parent(constructor)
    call = ctx.parent(arg) if isinstance(arg, cst.Arg) else None
    if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and call.func.attr.value == "append"
            and len(call.args) == 1 and isinstance(ctx.parent(call), cst.Expr)):
        return None
    receiver = ctx.code(call.func.value)
    line = ctx.parent(ctx.parent(call))
    block = ctx.parent(line) if isinstance(line, cst.SimpleStatementLine) else None
    siblings = list(getattr(block, "body", ()) or ())
    index = next((i for i, s in enumerate(siblings) if s is line), 0)
    previous = siblings[index - 1] if index > 0 else None
    if not isinstance(previous, cst.SimpleStatementLine) or len(previous.body) != 1:
        return Use(items=[None, constructor], index=1)
    statement = previous.body[0]
    before: Optional[cst.BaseExpression] = None
    if isinstance(statement, cst.Expr) and isinstance(statement.value, cst.Call):
        func = statement.value.func
        if isinstance(func, cst.Attribute) and ctx.code(func.value) == receiver and statement.value.args:
            if func.attr.value == "append":
                before = statement.value.args[0].value
            elif func.attr.value == "extend" and isinstance(statement.value.args[0].value, (cst.List, cst.Tuple)):
                before = (_list_items(statement.value.args[0].value) or [None])[-1]
    elif isinstance(statement, cst.AugAssign) and isinstance(statement.operator, cst.AddAssign):
        if ctx.code(statement.target) == receiver and isinstance(statement.value, (cst.List, cst.Tuple)):
            before = (_list_items(statement.value) or [None])[-1]
    return Use(items=[before, constructor], index=1)


def module_uses(ctx: RuleContext, constructor: cst.Call) -> list[Use]:
    """Where the module built by ``constructor`` runs."""
    parent = ctx.parent(constructor)
    if isinstance(parent, cst.Call) and parent.func is constructor:
        return [Use(call=parent)]
    sequence = _sequence_use(ctx, constructor) or _appended_after(ctx, constructor)
    if sequence is not None:
        return [sequence]
    value: cst.CSTNode = constructor
    while isinstance(parent, cst.IfExp) and value is not parent.test:
        value, parent = parent, ctx.parent(parent)  # `nn.ReLU(inplace=True) if normed else nn.Softplus()`
    if isinstance(parent, cst.Assign) and parent.value is value and len(parent.targets) == 1:
        target = parent.targets[0].target
        if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.value.value == "self":
            cls = _class_of(ctx, constructor)
            references = _self_references(ctx, cls, target.attr.value, target) if cls is not None else []
        elif isinstance(target, cst.Name):
            scope = ctx.scope(target)
            references = list({id(r.node): r.node for a in scope.assignments[target.value] for r in a.references}.values()) if scope is not None else []
        else:
            references = []
        if not references:
            return [Use(unknown=f"gradfix finds no use of `{ctx.code(target)}`; a subclass or other code may run it")]
        return [_use_of_reference(ctx, ref) for ref in references]
    return [Use(unknown="the module is passed on, and gradfix does not follow where it runs")]


# --- the fix ------------------------------------------------------------------------------------------


def _fresh_temporary(ctx: RuleContext, producers: Producers, expr: cst.BaseExpression, site: cst.CSTNode) -> bool:
    """A call or arithmetic result that nothing else holds (not a view of something)."""
    if not isinstance(expr, (cst.Call, cst.BinaryOperation)):
        return False
    return producers.of_value(expr, site).fresh


class InplaceArgument(Rule):
    code = "GF105"
    name = "inplace-argument"
    why = "`inplace=True` makes an activation or dropout overwrite its input, which the op before it may need for backward."
    explanation = (
        "`nn.ReLU(inplace=True)`, `nn.Dropout(p, inplace=True)`, `F.relu(x, inplace=True)` and the other "
        "modules and functions that take `inplace` write their result into their input. That input is the "
        "output of the layer before. If that layer's backward needs its own output (`Sigmoid`, `Tanh`, "
        "`Softmax`, `ReLU`, and `ELU`, `LeakyReLU`, `SELU`, `CELU`, `RReLU` when they run in place), "
        "`backward()` raises `one of the variables needed for gradient computation has been modified by an "
        "inplace operation`; if it is a leaf that requires grad, the call raises `a leaf Variable that requires "
        "grad is being used in an in-place operation`. After a convolution, a linear layer or a batch norm, "
        "whose backward needs only their inputs, `inplace=True` is correct and saves memory: it is not "
        "reported.\n\n"
        "gradfix follows the order in which modules run: the arguments of a literal `nn.Sequential(...)` (or a "
        "list of modules, or an `OrderedDict`), and the calls of submodules built in `__init__` "
        "(`self.act = nn.ReLU(inplace=True)`) in the methods that use them, tracing each call's input back "
        "to the statement that made it. For `F.relu(t, inplace=True)` it traces `t`. Where the producer is "
        "unknown (the first module of a chain, a function parameter) the finding is a warning.\n\n"
        "Which modules and functions take `inplace`, at which position (`nn.ReLU(True)`, "
        "`F.dropout(x, 0.5, True, True)`), and which of them save their output in each mode is read from "
        "the installed torch and measured (`python -m gradfix.codemods.inplace_signatures`). Measured on "
        "torch 2.13: `nn.ReLU(inplace=True)` then `nn.Dropout(inplace=True)` raises; `nn.SiLU(inplace=True)`, "
        "`nn.Hardtanh(inplace=True)` or `nn.ReLU6(inplace=True)` then `nn.Dropout(inplace=True)` does not.\n\n"
        "The fix drops `inplace=True` (a positional `True` that other positional arguments follow becomes "
        "`False`). A discarded `F.relu(x, inplace=True)` becomes `x = F.relu(x)`."
    )
    not_flagged = (
        "`inplace=True` after a producer whose backward does not need its output (convolutions, linear "
        "layers, batch, layer and group norm, pooling, additions: ResNet's `nn.ReLU(inplace=True)` after "
        "`BatchNorm2d`); `inplace=False` and `inplace=<expression>`; modules used only under `torch.no_grad()` "
        "and other no-grad contexts; functional calls in no-grad contexts and initializers."
    )
    fix_safety = (
        "Dropping `inplace=True` from a module is safe when every place it runs uses its result and nothing "
        "reads its input afterwards (a chain of `nn.Sequential`, `out = self.act(out)`). It is unsafe when the "
        "module's input is a parameter, shared, read again later (the code sees the activation's result there "
        "today), when a call discards the result, and when gradfix cannot see every use. For "
        "`F.relu(x, inplace=True)`: rebinding `x` follows GF102's rules (safe for a fresh local, unsafe for "
        "parameters, attributes and shared names); a temporary input is safe unless it may be a view of another "
        "tensor. Either fix needs more memory than the in-place form."
    )
    node_types = (cst.Call,)
    prescreen = text.INPLACE_TRUE
    examples = (
        Example(
            before=(
                "import torch\nfrom torch import nn\n\n"
                "head = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Dropout(0.1, inplace=True))\n"
            ),
            after=(
                "import torch\nfrom torch import nn\n\n"
                "head = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Dropout(0.1))\n"
            ),
        ),
        Example(
            before="import torch\nimport torch.nn.functional as F\n\ndef f(x):\n    return F.relu(torch.tanh(x), inplace=True)\n",
            after="import torch\nimport torch.nn.functional as F\n\ndef f(x):\n    return F.relu(torch.tanh(x))\n",
        ),
        Example(
            before=(
                "import torch\nfrom torch import nn\n\n"
                "block = nn.Sequential(nn.Linear(4, 4), nn.ReLU(True), nn.Dropout(0.5, True))\n"
            ),
            after="import torch\nfrom torch import nn\n\nblock = nn.Sequential(nn.Linear(4, 4), nn.ReLU(True), nn.Dropout(0.5))\n",
        ),
        Example(
            before=(
                "import torch\nfrom torch import nn\n\n"
                "stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True))\n"
            ),
            findings=0,
        ),
        Example(
            before=(
                "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
                "class Block(nn.Module):\n"
                "    def __init__(self):\n"
                "        super().__init__()\n"
                "        self.bn = nn.BatchNorm1d(4)\n"
                "        self.relu = nn.ReLU(inplace=True)\n"
                "        self.fc = nn.Linear(4, 4)\n\n"
                "    def forward(self, x):\n"
                "        out = self.bn(x)\n"
                "        out = self.relu(out)\n"
                "        return F.dropout(self.fc(out), 0.1, self.training, True)\n"
            ),
            findings=0,
        ),
    )

    def check(self, node: cst.CSTNode, ctx: RuleContext) -> Iterator[Report]:
        assert isinstance(node, cst.Call)
        qualified = torch_name(ctx, node.func)
        if qualified is None or not qualified.startswith("torch.nn."):
            return
        last = qualified.rsplit(".", 1)[-1]
        if qualified.startswith("torch.nn.functional."):
            entry = FUNCTIONAL.get(last)
            argument = inplace_argument(node, entry["inplace_index"]) if entry else None
            if argument is not None:
                report = self._functional(node, argument, last, ctx)
                if report is not None:
                    yield report
            return
        entry = INPLACE_MODULES.get(last)
        argument = inplace_argument(node, entry["inplace_index"]) if entry else None
        if argument is not None:
            report = self._module(node, argument, last, ctx)
            if report is not None:
                yield report

    # -- F.relu(x, inplace=True) ---------------------------------------------------------------------

    def _functional(self, call: cst.Call, argument: cst.Arg, function: str, ctx: RuleContext) -> Optional[Report]:
        source = first_input(call)
        if source is None:
            return None
        producers = Producers(ctx)
        level, why = _level_at(ctx, producers, source, call)
        if level is None:
            return None
        shown = f"`{_code(ctx, source)}`" if len(_code(ctx, source, 1000)) <= 30 else "its input"
        message = f"`inplace=True` on `F.{function}` overwrites {shown}: {why}"
        new_call = without_argument(call, argument, cst.Name("False"))
        title = f"Drop `inplace=True` from `F.{function}`"
        statement = ctx.parent(call)
        if isinstance(statement, cst.Expr) or (is_assignable(source) and isinstance(source, cst.Name)
                                                 and not _rebinds_itself(ctx, call, source)
                                                 and read_after(ctx, source, call) is not None):
            # The caller may rely on the input being modified: keep that, out of place.
            if is_assignable(source):
                return rebind_in_place(ctx, call, source, new_call, TensorKind.TENSOR, message, level=level)
            return Report(call, f"{message}; assign the result where the input was used", level=level)
        if isinstance(source, cst.Name):
            reason = private_name(ctx, producers, source, call)
            safety = FixSafety.UNSAFE if reason else FixSafety.SAFE
        elif _fresh_temporary(ctx, producers, source, call):
            safety, reason = FixSafety.SAFE, ""
        elif is_assignable(source):
            safety, reason = FixSafety.UNSAFE, f"`{_code(ctx, source)}` is no longer modified, and other code may see it"
        else:
            safety, reason = FixSafety.UNSAFE, "the input may be a view of another tensor, which is no longer modified"
        if reason:
            message += f" (fix is unsafe: {reason})"
        return Report(call, message, Fix(title, (ReplaceNode(call, new_call),), safety), level=level, target=source)

    # -- nn.ReLU(inplace=True) ------------------------------------------------------------------------

    def _module(self, constructor: cst.Call, argument: cst.Arg, cls: str, ctx: RuleContext) -> Optional[Report]:
        producers = Producers(ctx)
        worst: Optional[Level] = None
        worst_why = ""
        unsafe_reasons: list[str] = []
        for use in module_uses(ctx, constructor):
            level, why, unsafe = self._use(ctx, producers, use)
            if unsafe:
                unsafe_reasons.append(unsafe)
            if level is not None and (worst is None or level.rank > worst.rank):
                worst, worst_why = level, why
        if worst is None and ctx.proven(constructor):
            worst, worst_why = Level.ERROR, "a traced run showed that autograd needed it"
        if worst is None:
            return None
        message = f"`inplace=True` on `nn.{cls}` overwrites its input: {worst_why}"
        safety = FixSafety.UNSAFE if unsafe_reasons else FixSafety.SAFE
        if unsafe_reasons:
            message += f" (fix is unsafe: {unsafe_reasons[0]})"
        new_constructor = without_argument(constructor, argument, cst.Name("False"))
        fix = Fix(f"Drop `inplace=True` from `nn.{cls}`", (ReplaceNode(constructor, new_constructor),), safety)
        # The hazard is where the module runs (checked above, with its no-grad contexts), not where
        # `__init__` builds it, so the engine's initializer context must not silence it.
        return Report(constructor, message, fix, level=worst, ignore_context=True)

    def _use(self, ctx: RuleContext, producers: Producers, use: Use) -> tuple[Optional[Level], str, str]:
        """(level, why, reason the fix is unsafe or "") for one place the module runs."""
        if use.unknown:
            return Level.WARNING, use.unknown, use.unknown
        if use.items is not None:
            first = lambda: Producer(Verdict.UNKNOWN, "the input of the chain")  # noqa: E731
            producer = producers.of_sequence_item(use.items, use.index - 1, first)
            unsafe = "" if producer.fresh else "it may overwrite the chain's input, which the caller holds"
            return producer.level, producer.explain(), unsafe
        call = use.call
        assert call is not None
        if enclosing_grad_context(call, ctx.parent, ctx.qualified_names) is not None:
            return None, "", ""  # no autograd there
        source = first_input(call)
        if source is None:
            return Level.WARNING, "gradfix cannot tell what it is called with", "the call's input is unknown"
        level, why = _level_at(ctx, producers, source, call)
        if isinstance(ctx.parent(call), cst.Expr):
            return level, why, f"line {ctx.line(call)} discards the result: it relies on `{_code(ctx, source)}` being modified"
        if isinstance(source, cst.Name):
            later = read_after(ctx, source, call) if not _rebinds_itself(ctx, call, source) else None
            if later is not None:
                return level, why, f"`{source.value}` is read on line {ctx.line(later)}, where it holds the activation's result today"
            return level, why, private_name(ctx, producers, source, call)
        if _fresh_temporary(ctx, producers, source, call):
            return level, why, ""
        return level, why, f"`{_code(ctx, source)}` may be seen by other code, and is no longer modified"


def private_name(ctx: RuleContext, producers: Producers, name: cst.Name, call: cst.CSTNode) -> str:
    """"" if the tensor ``name`` holds at ``call`` is held by nothing else, else why it may be.

    Fresh (made by an op or module that returns a new tensor, possibly passed through
    ``h = self.relu(h)`` steps that return their input), and read on the way to ``call``
    only for its value. Otherwise GF102's rebinding verdict decides.
    """
    if _is_private(ctx, producers, name, call, 0):
        return ""
    verdict = ctx.rebinding(name, call)
    return "" if verdict.safe else verdict.reason


def _is_private(ctx: RuleContext, producers: Producers, name: cst.Name, site: cst.CSTNode, depth: int) -> bool:
    binding = reaching_binding(ctx, name, site)
    scope = ctx.scope(name)
    if depth > 8 or binding is None or isinstance(binding, cst.Param) or scope is None:
        return False
    if not _only_value_reads(ctx, scope, name, binding, site):
        return False
    augmented = ctx.parent(binding)
    if isinstance(augmented, cst.AugAssign):
        return _is_private(ctx, producers, name, augmented, depth + 1)  # `out += identity`: the same tensor
    value = bound_value(ctx, binding)
    if value is None:
        return False
    producer = producers.of_value(value, value)
    if producer.fresh:
        return True
    # `h = self.relu(h)` with an in-place module: the same tensor, still held by `h` alone.
    source = first_input(value) if isinstance(value, cst.Call) else None
    return (
        isinstance(source, cst.Name) and source.value == name.value and producer.verdict is not Verdict.UNKNOWN
        and _is_private(ctx, producers, source, value, depth + 1)
    )


def _only_value_reads(ctx: RuleContext, scope, name: cst.Name, binding: cst.CSTNode, call: cst.CSTNode) -> bool:
    """Between ``binding`` and ``call``, and in a loop around ``call``, ``name`` is only read for its value."""
    start, end = bound_at(ctx, binding), ctx.start(call)
    loop = enclosing(ctx, call, (cst.For, cst.While))
    for assignment in scope.assignments[name.value]:
        for access in assignment.references:
            node = access.node
            if not isinstance(node, cst.Name) or ctx.is_inside(node, call):
                continue
            if access.scope is not scope:
                return False  # an inner function or class holds the name
            position = ctx.start(node)
            if not (start <= position < end or (loop is not None and ctx.is_inside(node, loop))):
                continue
            parent = ctx.parent(node)
            if isinstance(parent, (cst.BinaryOperation, cst.UnaryOperation, cst.Comparison, cst.ComparisonTarget)):
                continue
            if isinstance(parent, cst.Attribute) and parent.value is node and parent.attr.value in _METADATA_READS:
                continue
            return False
    return True


def _rebinds_itself(ctx: RuleContext, call: cst.Call, name: cst.Name) -> bool:
    """``x = f(x)``: the statement rebinds the name it passes."""
    statement = ctx.parent(call)
    return isinstance(statement, cst.Assign) and statement.value is call and any(
        isinstance(t.target, cst.Name) and t.target.value == name.value for t in statement.targets
    )


def _level_at(ctx: RuleContext, producers: Producers, source: cst.BaseExpression, site: cst.CSTNode) -> tuple[Optional[Level], str]:
    """The level of overwriting ``source`` at ``site``: gradfix's measured producers first, then the hazard analysis."""
    producer = producers.of_value(source, site)
    if producer.verdict in (Verdict.SAVES, Verdict.LEAF):
        return Level.ERROR, f"it is {producer.explain()}"
    hazard, reason = ctx.hazard(source, site)
    if hazard is Level.ERROR:
        return Level.ERROR, reason
    if producer.verdict is Verdict.KEEPS:
        return None, ""
    if producer.verdict is Verdict.EVAL:
        return Level.WARNING, f"it is {producer.explain()}"
    if hazard is None:
        return None, ""
    return Level.WARNING, f"breaks autograd if it is a leaf that requires grad or was saved for backward ({reason})"
