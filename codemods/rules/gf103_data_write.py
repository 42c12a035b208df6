"""GF103: writes through ``.data`` (``x.data = e``, ``x.data.mul_(k)``, ``x.data *= k``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Optional

import libcst as cst
from libcst.metadata import Assignment

from ..context import RuleContext
from ..inplace_chain import InplaceChain, inplace_chain, inplace_method_name, out_of_place
from ..model import EnsureImport, Example, Fix, FixSafety, Level, Report, ReplaceNode
from ..optable import INPLACE_OPERATORS
from ..rewrite import (
    AUGMENTED_TO_BINARY,
    assign,
    clone_first,
    is_assignable,
    parenthesized,
    previous_statement_clones,
    rebind_in_place,
    rebinding_safety,
    strip_position,
)
from .. import prescreen as text
from ..rule import Rule
from ..tensors import TensorKind

# Attribute names that hold a module's parameters: weight, bias, weight_ih_l0, in_proj_weight, bias_k.
PARAMETER_ATTRIBUTE = re.compile(r"^(weight|bias)(_\w+)?$|_(weight|bias)$")
PARAMETER_ITERATORS = frozenset({"parameters", "named_parameters"})


def _augmented_text(node: cst.AugAssign) -> str:
    return cst.Module([]).code_for_node(node.operator).strip()


def data_receiver(expr: cst.CSTNode) -> Optional[cst.BaseExpression]:
    """``x`` for ``x.data``; None for anything else, and for ``self.data`` (an attribute named data)."""
    if isinstance(expr, cst.Attribute) and expr.attr.value == "data":
        receiver = expr.value
        if isinstance(receiver, cst.Name) and receiver.value in ("self", "cls"):
            return None
        return receiver
    return None


def _data_under_index(expr: cst.BaseExpression) -> Optional[cst.Attribute]:
    """The ``x.data`` of ``x.data[i]`` or ``x.data[i][j]``."""
    node = expr
    while isinstance(node, cst.Subscript):
        node = node.value
    if node is not expr and data_receiver(node) is not None:
        return node  # type: ignore[return-value]
    return None


def _enclosing_function_names(ctx: RuleContext, node: cst.CSTNode) -> list[str]:
    names = []
    current = ctx.parent(node)
    while current is not None:
        if isinstance(current, cst.FunctionDef):
            names.append(current.name.value)
        current = ctx.parent(current)
    return names


def _inside_forward(ctx: RuleContext, node: cst.CSTNode) -> bool:
    return "forward" in _enclosing_function_names(ctx, node)


def _computed(ctx: RuleContext, receiver: cst.BaseExpression, site: cst.CSTNode,
              value: Optional[cst.BaseExpression], forward: bool) -> bool:
    """Is ``receiver`` a tensor the computation produces here, so that a write into it is part of the computation?

    Yes for a local name bound only to tensor computations (``h = torch.zeros(...)``, ``x = a @ w``) and, inside
    ``forward``, for its inputs and the module's non-parameter attributes (``self.hidden``). No for loop variables
    (the pieces of a container others hold), names fetched from elsewhere (``mask = self.masks[name]``), the
    parameters of other functions, and leaves made with ``requires_grad=True`` unless the value reads them
    (``x.data = x * scale``): those writes update state, and the fix keeps the update.
    """
    if isinstance(receiver, cst.Attribute):
        return forward
    if not isinstance(receiver, cst.Name):
        return False
    scope = ctx.scope(receiver)
    if scope is None:
        return False
    bindings = [a for a in scope[receiver.value] if isinstance(a, Assignment)]
    if not bindings:
        return False
    for binding in bindings:
        node = binding.node
        if isinstance(node, cst.Param):
            if not forward:
                return False
            continue
        parent = ctx.parent(node)
        bound: Optional[cst.BaseExpression] = None
        if isinstance(parent, cst.AugAssign):
            continue
        if isinstance(parent, cst.AssignTarget):
            statement = ctx.parent(parent)
            bound = statement.value if isinstance(statement, cst.Assign) else None
        elif isinstance(parent, (cst.AnnAssign, cst.NamedExpr)):
            bound = parent.value
        elif isinstance(parent, cst.Element):  # `out, h = rnn(x, h)`
            holder = ctx.parent(ctx.parent(parent) or parent)
            statement = ctx.parent(holder) if isinstance(holder, cst.AssignTarget) else None
            bound = statement.value if isinstance(statement, cst.Assign) else None
        if bound is None:
            return False
        if isinstance(bound, cst.Call) and _requires_grad(bound) and not (value is not None and _mentions(ctx, value, receiver)):
            return False  # a leaf given new values
        if not (ctx.tensor_kind(bound) is TensorKind.TENSOR or isinstance(bound, (cst.BinaryOperation, cst.UnaryOperation))):
            return False
    return True


def _requires_grad(call: cst.Call) -> bool:
    return any(
        arg.keyword is not None and arg.keyword.value == "requires_grad"
        and not (isinstance(arg.value, cst.Name) and arg.value.value == "False")
        for arg in call.args
    )


def _mentions(ctx: RuleContext, expr: cst.CSTNode, name: cst.BaseExpression) -> bool:
    code = ctx.code(name)
    found = False

    class Finder(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            nonlocal found
            if isinstance(node, (cst.Name, cst.Attribute)) and ctx.code(node) == code:
                found = True
            return not found

    expr.visit(Finder())
    return found


@dataclass(frozen=True)
class _Verdict:
    level: Level
    state: bool  # the write updates state that others hold: written under torch.no_grad(), not rebound
    noun: str  # "parameter `p`" or "`mask`", for messages


def _class_of(ctx: RuleContext, node: cst.CSTNode) -> Optional[cst.ClassDef]:
    current = ctx.parent(node)
    while current is not None and not isinstance(current, cst.ClassDef):
        current = ctx.parent(current)
    return current


def _is_parameter_constructor(ctx: RuleContext, value: cst.BaseExpression) -> bool:
    if not isinstance(value, cst.Call):
        return False
    return any(n.startswith("torch.nn.") and n.endswith("Parameter") for n in ctx.qualified_names(value.func))


def is_parameter(ctx: RuleContext, expr: cst.BaseExpression) -> bool:
    """A module's parameter: ``self.weight``, ``model.fc.bias``, ``self.p`` bound to ``nn.Parameter(...)``,
    or a name bound to one (``for p in model.parameters()``, ``w = nn.Parameter(...)``)."""
    if isinstance(expr, cst.Attribute):
        if PARAMETER_ATTRIBUTE.match(expr.attr.value) and is_assignable(expr):
            return True
        if isinstance(expr.value, cst.Name) and expr.value.value == "self":
            cls = _class_of(ctx, expr)
            return cls is not None and _class_assigns_parameter(ctx, cls, expr.attr.value)
        return False
    if not isinstance(expr, cst.Name):
        return False
    scope = ctx.scope(expr)
    if scope is None:
        return False
    bindings = [a for a in scope[expr.value] if isinstance(a, Assignment)]
    return bool(bindings) and all(_binds_parameter(ctx, b.node) for b in bindings)


def _binds_parameter(ctx: RuleContext, node: cst.CSTNode) -> bool:
    if isinstance(node, cst.Param):
        annotation = node.annotation.annotation if node.annotation is not None else None
        return annotation is not None and ctx.code(annotation).rsplit(".", 1)[-1] == "Parameter"
    parent = ctx.parent(node)
    loop = parent
    if isinstance(parent, cst.Element):  # `for name, p in model.named_parameters()`
        loop = ctx.parent(ctx.parent(parent) or parent)
    if isinstance(loop, cst.For) and isinstance(loop.iter, cst.Call) and isinstance(loop.iter.func, cst.Attribute):
        method = loop.iter.func.attr.value
        if method == "parameters" and parent is loop:
            return True
        if method == "named_parameters" and isinstance(parent, cst.Element):
            container = ctx.parent(parent)
            return isinstance(container, (cst.Tuple, cst.List)) and len(container.elements) == 2 and container.elements[1] is parent
        return False
    if isinstance(parent, cst.AssignTarget):
        statement = ctx.parent(parent)
        if isinstance(statement, cst.Assign):
            value = statement.value
            return _is_parameter_constructor(ctx, value) or (
                isinstance(value, cst.Attribute) and bool(PARAMETER_ATTRIBUTE.match(value.attr.value)) and is_assignable(value)
            )
    return False


def _class_assigns_parameter(ctx: RuleContext, cls: cst.ClassDef, attribute: str) -> bool:
    found = False

    class Finder(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            nonlocal found
            for target in node.targets:
                t = target.target
                if (
                    isinstance(t, cst.Attribute) and t.attr.value == attribute
                    and isinstance(t.value, cst.Name) and t.value.value == "self"
                    and _is_parameter_constructor(ctx, node.value)
                ):
                    found = True

    cls.visit(Finder())
    return found


_STATE_WHY = {
    Level.ERROR: "autograd does not track it, and the graph being built may already have saved the old values",
    Level.WARNING: "legal between steps, but autograd cannot check it; `torch.no_grad()` is the tracked form",
}
_SCALING_OPERATORS = (cst.Multiply, cst.Divide, cst.MatrixMultiply, cst.Power)


def _tensor_arithmetic(ctx: RuleContext, value: cst.BaseExpression, receiver: cst.BaseExpression) -> bool:
    """``x * scale / norm.data``, ``p.data * 0.5``: scaling arithmetic on the receiver itself.

    Evidence that ``x.data = value`` is a tensor write even where gradfix cannot type ``x``.
    Concatenation (``+``), slicing and copies (``ds.data = ds.data[:100]``, ``ds.data = other.data``)
    are what datasets do, and are no evidence.
    """
    found = False

    class Finder(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            nonlocal found
            if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, _SCALING_OPERATORS):
                if any(o.deep_equals(receiver) or (data_receiver(o) or o).deep_equals(receiver) for o in (node.left, node.right)):
                    found = True
            return not found

    value.visit(Finder())
    return found


def _without_data(tree: cst.CSTNode, data: cst.Attribute) -> cst.CSTNode:
    """A copy of ``tree`` with ``x.data`` replaced by ``x``."""

    class Strip(cst.CSTTransformer):
        def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):  # type: ignore[override]
            if original is data:
                return updated.value  # type: ignore[attr-defined]
            return updated

    return strip_position(tree.visit(Strip()))


class DataWrite(Rule):
    code = "GF103"
    name = "data-write"
    why = "Writes through `.data` are invisible to autograd: no error, and gradients silently `None` or wrong."
    explanation = (
        "`x.data` is the same memory as `x` without autograd's bookkeeping. Writing through it "
        "(`x.data = e`, `x.data.mul_(k)`, `x.data *= k`, `x.data[i] = v`) changes the values the forward pass "
        "uses, but autograd neither records the operation nor bumps the version counter that would report a "
        "saved tensor as modified. Nothing raises: `backward()` runs and computes the gradient of a graph that "
        "is not the one that ran. In an RNN, `hidden.data = torch.tanh(self.i2h(combined))` leaves `i2h` with no "
        "gradient at all; in a scaling layer, `x.data = x * scale / norm.data` gives `x` the gradient of the "
        "identity. gradfix's verifier finds both by comparing gradients with finite differences.\n\n"
        "On a tensor the computation produces (a local bound to a tensor op, an input of `forward`, a module's "
        "non-parameter attribute inside `forward`), the write is meant as part of the computation: gradfix "
        "rewrites it out of place so autograd sees it: `x.data = e` becomes `x = e`, `x.data.mul_(k)` becomes "
        "`x = x.mul(k)` (the same twins as GF102), `x.data *= k` becomes `x = x * k`, and `x.data[i] = v` "
        "becomes `x = x.clone()` then `x[i] = v`. `.data` reads on the right side stay: they are deliberate "
        "stop-gradients, and gradfix's verifier treats them so.\n\n"
        "On state that other code holds, the write is meant to bypass autograd: a module parameter "
        "(`self.fc.weight.data = ...`, weight tying, pruning, clipping), a loop variable over "
        "`model.parameters()` or any container, a tensor fetched from elsewhere (`mask = self.masks[name]`), a "
        "leaf given new values. Rebinding a name there would silently drop the update, so the modern form does "
        "it under `torch.no_grad()`, which autograd tracks: `with torch.no_grad(): self.fc.weight.copy_(e)` (and "
        "`p.clamp_(...)`, `p *= k`, `p[i] = v` for the other writes). Such a write is an error inside `forward`, "
        "where the graph being built may already have saved the old values, and a warning elsewhere: between "
        "steps it is legal (WGAN weight clipping), only unchecked.\n\n"
        "A `.data` read that cuts the graph (`h = h.data`, truncated backpropagation) is reported without a "
        "fix: `h = h.detach()` says the same, and autograd then reports in-place writes into the shared memory "
        "instead of silently using them."
    )
    not_flagged = (
        "`.data` reads used as a stop-gradient inside an expression (`x * scale / norm.data`, `y = x.data`); "
        "`.data` writes in initializers (`__init__`, `reset_parameters`, `_init_weights`), no-grad blocks, "
        "optimizer `step()` and `autograd.Function` methods; `p.grad.data.zero_()`; attributes named `data` on "
        "other objects (`self.data = ...`, `dataset.data = dataset.data[:100]`: no tensor evidence)."
    )
    fix_safety = (
        "`x.data = e` as `x = e` (and the other rebinding forms) is safe when `x` is a local that nothing else "
        "can see (as for GF101); unsafe for attributes, inputs of `forward` and possible aliases, which kept "
        "seeing the tensor the `.data` write changed. The `torch.no_grad()` form is always unsafe: `copy_` needs "
        "a shape that broadcasts and copies values where `.data =` shared `e`'s memory (weight tying by `.data` "
        "becomes a copy), and the write now bumps the version counter, so a tensor saved by a forward whose "
        "backward has not run yet is reported instead of silently used. Display-only where the statement shares "
        "its line with others or sits in a one-line block (a `with` block needs lines of its own), where the "
        "in-place call's result is used as a value (it was a detached view), for `x = x.data` reads, and where "
        "the tensor has no name to rebind."
    )
    node_types = (cst.Assign, cst.AugAssign, cst.Call)
    prescreen = text.DATA_ATTRIBUTE
    examples = (
        Example(
            before=(
                "import torch\ndef f(a, scale):\n    x = torch.tanh(a)\n    norm = x.norm()\n"
                "    x.data = x * scale / norm.data\n    return x\n"
            ),
            after=(
                "import torch\ndef f(a, scale):\n    x = torch.tanh(a)\n    norm = x.norm()\n"
                "    x = x * scale / norm.data\n    return x\n"
            ),
        ),
        Example(
            before="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    y.data.mul_(2)\n    return y\n",
            after="import torch\ndef f(a):\n    y = torch.sigmoid(a)\n    y = y.mul(2)\n    return y\n",
        ),
        Example(
            before=(
                "import torch\nfrom torch import nn\nclass Pruned(nn.Module):\n    def forward(self, x):\n"
                "        self.fc.weight.data = self.fc.weight.data * self.mask\n        return self.fc(x)\n"
            ),
            after=(
                "import torch\nfrom torch import nn\nclass Pruned(nn.Module):\n    def forward(self, x):\n"
                "        with torch.no_grad():\n            self.fc.weight.copy_(self.fc.weight.data * self.mask)\n"
                "        return self.fc(x)\n"
            ),
            unsafe_fixes=True,
        ),
        Example(
            before="import torch\ndef f(h, x):\n    h = torch.tanh(h + x)\n    h = h.data\n    return h\n",
            after=None,
        ),
        Example(
            before=(
                "import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def reset_parameters(self):\n"
                "        self.fc.weight.data.normal_(0, 0.02)\n    def forward(self, x, norm):\n"
                "        return x * 2 / norm.data\n"
            ),
            findings=0,
        ),
    )

    def check(self, node: cst.CSTNode, ctx: RuleContext) -> Iterator[Report]:
        if isinstance(node, cst.Assign):
            yield from self._check_assign(node, ctx)
        elif isinstance(node, cst.AugAssign):
            report = self._check_augmented(node, ctx)
            if report is not None:
                yield report
        elif isinstance(node, cst.Call):
            report = self._check_call(node, ctx)
            if report is not None:
                yield report

    # -- the three statements ----------------------------------------------------------

    def _check_assign(self, node: cst.Assign, ctx: RuleContext) -> Iterator[Report]:
        alone = len(node.targets) == 1
        for assign_target in node.targets:
            target = assign_target.target
            receiver = data_receiver(target)
            if receiver is not None:
                report = self._data_assign(node, target, receiver, ctx, alone)  # type: ignore[arg-type]
            elif (data := _data_under_index(target)) is not None:
                report = self._indexed(node, data, node.value, "assignment into", ctx, alone)
            else:
                continue
            if report is not None:
                yield report
        if alone:
            report = self._graph_cut(node, ctx)
            if report is not None:
                yield report

    def _check_augmented(self, node: cst.AugAssign, ctx: RuleContext) -> Optional[Report]:
        op = _augmented_text(node)
        if op not in INPLACE_OPERATORS:
            return None  # `@=` rebinds
        receiver = data_receiver(node.target)
        if receiver is None:
            data = _data_under_index(node.target)
            if data is None:
                return None
            return self._indexed(node, data, node.value, f"`{op}` on", ctx, True)
        verdict = self._classify(ctx, receiver, node, node.value, syntactic=True)
        if verdict is None:
            return None
        level = verdict.level
        name = ctx.code(receiver)
        if verdict.state:
            new_statement = node.with_changes(target=strip_position(receiver))
            message = f"in-place `{op}` on {verdict.noun} through `.data`: {_STATE_WHY[level]}"
            return self._under_no_grad(node, node, new_statement, receiver, message,
                                       f"Write `{name} {op} ...` under `torch.no_grad()`", level, ctx)
        message = f"in-place `{op}` through `{name}.data`: autograd does not see it, so gradients through `{name}` are silently wrong"
        if not is_assignable(receiver):
            return Report(node, message + f"; compute it out of place", target=receiver, level=level)
        new_value = cst.BinaryOperation(
            left=strip_position(receiver), operator=AUGMENTED_TO_BINARY[type(node.operator)](),
            right=parenthesized(strip_position(node.value)),
        )
        safety, reason = rebinding_safety(ctx, receiver, node, ctx.tensor_kind(receiver))
        if reason:
            message += f" (fix is unsafe: {reason})"
        title = f"Rewrite `{name}.data {op} ...` as `{name} = {name} {op[:-1]} ...`"
        return Report(node, message, Fix(title, (ReplaceNode(node, assign(receiver, new_value)),), safety), target=receiver, level=level)

    def _check_call(self, node: cst.Call, ctx: RuleContext) -> Optional[Report]:
        method = inplace_method_name(node)
        if method is None:
            return None
        parent = ctx.parent(node)
        if isinstance(parent, cst.Attribute) and inplace_method_name(ctx.parent(parent)) is not None:
            return None  # an inner link of a chain: reported with the outermost call
        chain = inplace_chain(node)
        receiver = data_receiver(chain.root)
        if receiver is None:
            data = _data_under_index(chain.root)
            if data is None:
                return None
            methods = ", ".join(f"`{inplace_method_name(link)}`" for link in chain.links)
            return self._indexed(node, data, None, f"in-place {methods} on", ctx, True)
        verdict = self._classify(ctx, receiver, node, None, syntactic=True)
        if verdict is None:
            return None
        level = verdict.level
        name = ctx.code(receiver)
        methods = ", ".join(f"`{inplace_method_name(link)}`" for link in chain.links)
        if verdict.state:
            message = f"in-place {methods} on {verdict.noun} through `.data`: {_STATE_WHY[level]}"
            statement = parent if isinstance(parent, cst.Expr) else None
            if statement is None:
                return Report(node, message + f"; call it on `{name}` under `torch.no_grad()` in a statement of its own",
                              target=receiver, level=level)
            new_statement = _without_data(statement, chain.root)  # type: ignore[arg-type]
            return self._under_no_grad(node, statement, new_statement, receiver, message,
                                       f"Call {methods} on `{name}` under `torch.no_grad()`", level, ctx)
        message = f"in-place {methods} through `{name}.data`: autograd does not see it, so gradients through `{name}` are silently wrong"
        if not is_assignable(receiver):
            return Report(node, message + "; compute it out of place", target=receiver, level=level)
        if not isinstance(parent, cst.Expr):
            # The result is a `.data` view: detached where it is used. Rebinding would attach it.
            return Report(node, message + f"; its result is used: compute `{name} = ...` out of place in a statement "
                          f"before, and use `{name}.detach()` where the value must stay cut from the graph",
                          target=receiver, level=level)
        new_value, imports, problem = out_of_place(InplaceChain(receiver, chain.links), ctx)
        if new_value is None:
            return Report(node, f"{message}; {problem}", target=receiver, level=level)
        return rebind_in_place(ctx, node, receiver, new_value, ctx.tensor_kind(receiver), message, imports, level=level)

    # -- shapes of writes ----------------------------------------------------------------

    def _data_assign(self, node: cst.Assign, target: cst.Attribute, receiver: cst.BaseExpression, ctx: RuleContext, alone: bool) -> Optional[Report]:
        verdict = self._classify(ctx, receiver, node, node.value, syntactic=False)
        if verdict is None:
            return None
        level = verdict.level
        name = ctx.code(receiver)
        if verdict.state:
            message = f"`{name}.data = ...` replaces the values of {verdict.noun}: {_STATE_WHY[level]}"
            if not alone:
                return Report(node, message + "; assign one target per statement", target=receiver, level=level)
            copy = cst.Expr(cst.Call(
                func=cst.Attribute(value=strip_position(receiver), attr=cst.Name("copy_")),
                args=[cst.Arg(strip_position(node.value))],
            ))
            return self._under_no_grad(node, node, copy, receiver, message,
                                       f"Copy into `{name}` under `torch.no_grad()`", level, ctx, copies=True)
        message = f"`{name}.data = ...` is invisible to autograd: gradients through `{name}` are silently missing or wrong"
        if not alone or not is_assignable(receiver):
            return Report(node, message + f"; assign `{name} = ...` in a statement of its own", target=receiver, level=level)
        safety, reason = rebinding_safety(ctx, receiver, node, ctx.tensor_kind(receiver))
        if reason:
            message += f" (fix is unsafe: {reason})"
        title = f"Rewrite as `{name} = ...`"
        return Report(node, message, Fix(title, (ReplaceNode(node, assign(receiver, strip_position(node.value))),), safety),
                      target=receiver, level=level)

    def _indexed(self, node: cst.CSTNode, data: cst.Attribute, value: Optional[cst.BaseExpression], what: str,
                 ctx: RuleContext, alone: bool) -> Optional[Report]:
        """``x.data[i] = v``, ``x.data[i] += v``, ``x.data[i].zero_()``."""
        receiver = data.value
        verdict = self._classify(ctx, receiver, node, value, syntactic=not isinstance(node, cst.Assign))
        if verdict is None:
            return None
        level = verdict.level
        name = ctx.code(receiver)
        statement = node if not isinstance(node, cst.Call) else ctx.parent(node)
        if verdict.state:
            message = f"{what} {verdict.noun} through `.data`: {_STATE_WHY[level]}"
            if not alone or not isinstance(statement, (cst.Assign, cst.AugAssign, cst.Expr)):
                return Report(node, message + f"; write into `{name}` under `torch.no_grad()` in a statement of its own",
                              target=receiver, level=level)
            return self._under_no_grad(node, statement, _without_data(statement, data), receiver, message,
                                       f"Write into `{name}` under `torch.no_grad()`", level, ctx)
        message = f"{what} `{ctx.code(data)}[...]`: autograd does not see the write, so gradients through `{name}` are silently wrong"
        if not alone or not is_assignable(receiver):
            return Report(node, message + f"; clone `{name}` and write into the clone", target=receiver, level=level)
        site = ctx.hoist_site(node) if isinstance(node, cst.Call) else None
        anchor = site.anchor if site is not None else node
        if anchor is None:
            return Report(node, f"{message}; no automatic fix {site.reason}", target=receiver, level=level)  # type: ignore[union-attr]
        if previous_statement_clones(ctx, anchor, receiver):
            clone_edits: tuple = ()
            title = f"Write into `{name}` instead of `{name}.data`"
        else:
            clone_edits, title = clone_first(ctx, anchor, receiver, value)  # type: ignore[arg-type]
        safety, reason = rebinding_safety(ctx, receiver, node, ctx.tensor_kind(receiver))
        if reason:
            message += f" (fix is unsafe: {reason})"
        edits = clone_edits + (ReplaceNode(data, strip_position(receiver)),)
        return Report(node, message, Fix(title, edits, safety), statement=anchor, target=receiver, level=level)

    def _graph_cut(self, node: cst.Assign, ctx: RuleContext) -> Optional[Report]:
        """``h = h.data``: a stop-gradient that autograd cannot check; ``h.detach()`` says the same."""
        target = node.targets[0].target
        receiver = data_receiver(node.value)
        if receiver is None or not receiver.deep_equals(target) or not is_assignable(target):
            return None
        if ctx.tensor_kind(receiver) is not TensorKind.TENSOR:
            return None
        name = ctx.code(target)
        message = (
            f"`{name} = {name}.data` cuts the graph without autograd's version tracking: use `{name} = {name}.detach()`, "
            "which stops gradients the same way and reports later in-place writes into the shared memory"
        )
        return Report(node, message, target=target, level=Level.WARNING)

    # -- helpers ------------------------------------------------------------------------

    def _classify(self, ctx: RuleContext, receiver: cst.BaseExpression, site: cst.CSTNode,
                  value: Optional[cst.BaseExpression], syntactic: bool) -> Optional[_Verdict]:
        """What the write is (a computed tensor or state) and how sure gradfix is; None: not shown to be a tensor.

        ``syntactic``: the write itself only exists on tensors (``x.data.mul_(k)``, ``x.data *= k``).
        ``value``: the assigned value, evidence by its kind or shape (``x * scale / norm.data``)."""
        parameter = is_parameter(ctx, receiver)
        kind = ctx.tensor_kind(receiver)
        if kind is TensorKind.NOT_TENSOR and not parameter:
            return None
        value_kind = ctx.tensor_kind(value) if value is not None else TensorKind.UNKNOWN
        evidence = parameter or kind is TensorKind.TENSOR or value_kind is TensorKind.TENSOR
        if not evidence and not (syntactic or (value is not None and _tensor_arithmetic(ctx, value, receiver))):
            return None
        forward = _inside_forward(ctx, site)
        name = ctx.code(receiver)
        if parameter or not _computed(ctx, receiver, site, value, forward):
            # State that others hold (a parameter, a buffer, a loop variable over a container): a hazard
            # inside forward, where the graph being built reads it; between steps the write is legal.
            noun = f"parameter `{name}`" if parameter else f"`{name}`"
            return _Verdict(Level.ERROR if forward else Level.WARNING, True, noun)
        return _Verdict(Level.ERROR if evidence else Level.WARNING, False, f"`{name}`")

    def _under_no_grad(self, node: cst.CSTNode, statement: cst.CSTNode, new_statement: cst.CSTNode,
                       receiver: cst.BaseExpression, message: str, title: str, level: Level, ctx: RuleContext,
                       copies: bool = False) -> Report:
        """The finding on ``node``, fixed by replacing ``statement``'s line with ``with torch.no_grad():``
        around ``new_statement``."""
        line = ctx.parent(statement)
        block = ctx.parent(line) if line is not None else None
        if not (isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1 and isinstance(block, (cst.IndentedBlock, cst.Module))):
            return Report(node, message + "; write it under `with torch.no_grad():` on lines of its own",
                          target=receiver, level=level)
        torch_name = ctx.torch_module_name()
        edits: tuple = ()
        if torch_name is None:
            torch_name, edits = "torch", (EnsureImport("torch"),)
        small = new_statement.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)  # type: ignore[attr-defined]
        with_block = cst.With(
            items=[cst.WithItem(cst.Call(func=cst.Attribute(value=cst.Name(torch_name), attr=cst.Name("no_grad"))))],
            body=cst.IndentedBlock(body=[cst.SimpleStatementLine(body=[small], trailing_whitespace=line.trailing_whitespace)]),
            leading_lines=line.leading_lines,
        )
        reason = ("under `torch.no_grad()` the write bumps the version counter, so a pending backward that saved "
                  "the tensor raises instead of silently using the new values")
        if copies:
            reason = "`copy_` needs a shape that broadcasts and copies where `.data =` shared memory; " + reason
        message += f" (fix is unsafe: {reason})"
        return Report(node, message, Fix(title, (ReplaceNode(line, with_block),) + edits, FixSafety.UNSAFE),
                      statement=line, target=receiver, level=level)
