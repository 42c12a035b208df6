"""Which parts of a module can hold a finding, decided before libcst parses it.

libcst's parse and metadata cost about a millisecond per line; CPython's ``ast`` is
more than ten times faster and the engine runs it on every file anyway (it is the
syntax check). So the engine asks this module first:

1. **Text.** Each rule's ``prescreen`` pattern finds the lines that could hold its
   construct (``+=``, a word ending in ``_``, ``.data``, ``] =``, ``inplace``/``True``,
   ``out=``). No line, no finding.
2. **Syntax.** At each such line the ``ast`` statement that holds it is examined for
   the rule's construct as the rule's own syntactic tests read it: an in-place method
   or torch function (also through ``import ... as``), an augmented operator torch
   implements in place, a ``.data`` write, ``inplace=True`` at the position the callee
   takes it, ``out=``. ``i += 1`` and ``d[k] = v`` count only where a conservative ast
   mirror of the tensor inference (``_Kinds``) cannot rule a tensor out. When findings in
   silenced contexts are not wanted, a construct where autograd surely does not record
   (an initializer, ``@torch.no_grad()``, ``with torch.no_grad():``, a ``.grad`` buffer)
   is dropped too. No candidate, no finding: libcst is not run at all.
3. **Focus.** Otherwise libcst analyses a *focused* text: every module-level statement,
   every top-level definition that holds a candidate, and the definitions the analyses can
   reach from those: uses of a module-level name a site writes (between the binding that
   reaches the site and the site, where ``hazard._uses`` looks), ``requires_grad`` switches
   on names it traces, and every use of a name a module-level site binds. Inside a kept
   class, methods that share no ``self.`` attribute, buffer or traced name with the kept
   ones are left out too. A left-out definition becomes a stub on its ``def``/``class`` line
   that keeps the binding and its position: ``def name():`` and a triple-quoted string that
   holds the line breaks of the rest of the definition (one token for libcst, where blank
   lines would each be a node). So every kept line keeps its number and text.
   :meth:`Plan.restore` puts the original definitions back into a fixed focused text. A
   ``global`` statement, or a rule this module does not know, means the whole file.

tests/test_prescreen.py checks that findings and fixes equal the whole-file analysis.
"""
from __future__ import annotations

import ast
import bisect
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator, Optional, Sequence

from .aliasing import ALIASING_METHODS
from .grad_context import AUTOGRAD_FUNCTION_METHODS, INITIALIZER_NAME, OPTIMIZER_METHODS
from .inplace_signatures import FUNCTIONAL, INPLACE_MODULES
from .optable import INPLACE_FUNCTIONS, INPLACE_METHODS, INPLACE_OPERATORS, TENSOR_METHODS
from .tensors import (
    NON_TENSOR_ANNOTATIONS,
    NON_TENSOR_ATTRIBUTES,
    NON_TENSOR_BUILTINS,
    NON_TENSOR_METHODS,
    NON_TENSOR_TORCH_CALLS,
    NON_TENSOR_TORCH_MODULES,
    TENSOR_ANNOTATIONS,
    TENSOR_ATTRIBUTES,
)
from .rule import Rule

# --- text ---------------------------------------------------------------------------------------------
#
# Each pattern starts with a literal, which Python's re searches for at C speed; one that starts
# with `\b` or a character class is ten to fifty times slower over a whole tree of sources.

# Whitespace, line continuations and comments may separate the tokens of one construct.
_GAP = r"[\s\\]*(?:#[^\r\n]*[\r\n][\s\\]*)*"  # a comment runs to its line's end: no backtracking


def _word(name: str) -> str:
    """``name`` as a whole word, its literal first."""
    return re.escape(name) + r"(?!\w)(?<!\w" + re.escape(name) + ")"


# After a name: `.requires_grad` (`_`), a switch of the name's requires_grad.
_SWITCH = _GAP + r"\." + _GAP + "requires_grad"


# The patterns built from names, compiled once each: a run over a tree builds thousands, more
# than ``re``'s own cache keeps, and compiling one costs as much as searching a long file.
_compiled = lru_cache(maxsize=16384)(re.compile)


INPLACE_FUNCTION_NAMES = frozenset(name.rsplit(".", 1)[-1] for name in INPLACE_FUNCTIONS)
INPLACE_ARGUMENT_NAMES = frozenset(FUNCTIONAL) | frozenset(INPLACE_MODULES)
GRAD_MODE_NAMES = frozenset({"no_grad", "inference_mode", "enable_grad", "set_grad_enabled"})
# The rules whose constructs _Syntax knows; with any other rule selected the whole file is analysed.
KNOWN_RULES = frozenset({"GF101", "GF102", "GF103", "GF104", "GF105", "GF106", "GF107"})


@lru_cache(maxsize=1)
def _mask_functions() -> frozenset[str]:
    from .rules.gf104_subscript_assignment import BOOL_FUNCTIONS

    return BOOL_FUNCTIONS | {"bool"}


@lru_cache(maxsize=1)
def _out_function_names() -> frozenset[str]:
    from .rules.gf106_out_argument import OUT_FUNCTIONS

    return frozenset(name.rsplit(".", 1)[-1] for name in OUT_FUNCTIONS)


# The rules' `prescreen` patterns: text every finding's statement holds.
#: GF101: an augmented operator torch implements in place (`x += y`); `@=` is not one.
AUGMENTED_ASSIGNMENT = re.compile(r"=(?<=[-+*/%&|^]=)|=(?<=<<=)|=(?<=>>=)")
#: GF102, GF107: a word ending in one underscore, as every in-place method and function does (`add_`, `t_`).
INPLACE_NAME = re.compile(r"_(?!\w)(?<=[A-Za-z0-9]_)")
#: GF103: the `data` attribute.
DATA_ATTRIBUTE = re.compile(r"\." + _GAP + r"data(?!\w)")
#: GF104: an assignment into a subscript: `] =` (also `(x[i]) =`).
SUBSCRIPT_ASSIGNMENT = re.compile(r"\][\s)\\]*(?:#[^\r\n]*[\r\n][\s)\\]*)*=(?!=)")
#: GF105: `inplace=True`, or a `True` passed by position (`nn.ReLU(True)`, `inplace=(True)`): after
#: a `(` or a `,` (most `True`s in code are keyword values, returns and assignments).
INPLACE_TRUE = re.compile(_word("inplace") + _GAP + "=" + _GAP + _word("True") + "|[(,]" + _GAP + _word("True"))
#: GF106: an `out=` keyword argument (not `out = ...`, not `out == ...`).
OUT_KEYWORD = re.compile(r"[(,]" + _GAP + r"out(?!\w)" + _GAP + r"=(?!=)")

_TRAILING_WORD = re.compile(r"\w+\Z")
_WORD_AFTER = re.compile(_GAP + r"(\w+)")
_AS = re.compile(r" as(?!\w)")
_ANY_AS = re.compile(r"(?<![\w])as(?!\w)")
GLOBAL_STATEMENT = re.compile(_word("global"))
# `torch` written other than as `torch.<attr>`: where the name could be bound to something else.
BARE_TORCH = re.compile(r"torch(?!\w)(?<![\w.]torch)(?![ \t]*\.)")


def text_candidate(source: str, rules: Sequence[Rule]) -> bool:
    """The first test: code that mentions torch and text one of the rules needs."""
    return "torch" in source and any(rule.prescreen.search(source) for rule in rules)


def _word_before(source: str, end: int) -> str:
    """The word before ``end``, across whitespace, line continuations and comments.

    Import statements hold no strings, so a ``#`` on the line starts a comment there.
    """
    text = source[max(0, end - 400):end]
    while True:
        text = text.rstrip(" \t\r\n\f\\")
        line_start = max(text.rfind("\n"), text.rfind("\r")) + 1
        hash_at = text.find("#", line_start)
        if hash_at < 0:
            break
        text = text[:hash_at]
    match = _TRAILING_WORD.search(text)
    return match.group(0) if match else ""


def import_aliases(source: str, wanted: frozenset[str]) -> dict[str, set[str]]:
    """``r`` -> {"relu_"} for ``from torch import relu_ as r``, for originals in ``wanted``.

    Read from the text (an over-approximation: `as` in a comment counts too).
    """
    aliases: dict[str, set[str]] = {}
    unusual = "\tas" in source or "\nas" in source or "\ras" in source or "\\as" in source
    for match in (_ANY_AS if unusual else _AS).finditer(source):
        start = match.start() + (1 if match.group(0)[0] == " " else 0)
        before = _word_before(source, start)
        if before not in wanted:
            continue
        after = _WORD_AFTER.match(source, match.end())
        if after is not None:
            aliases.setdefault(after.group(1), set()).add(before)
    return aliases


# --- syntax ------------------------------------------------------------------------------------------

_AUGMENTED_TEXT = {
    ast.Add: "+=", ast.Sub: "-=", ast.Mult: "*=", ast.Div: "/=", ast.FloorDiv: "//=", ast.Mod: "%=",
    ast.Pow: "**=", ast.LShift: "<<=", ast.RShift: ">>=", ast.BitOr: "|=", ast.BitXor: "^=", ast.BitAnd: "&=",
    ast.MatMult: "@=",
}
_INPLACE_AUGMENTED = tuple(op for op, text in _AUGMENTED_TEXT.items() if text in INPLACE_OPERATORS)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_WITH = (ast.With, ast.AsyncWith)
_STRING_CONSTANTS = (str, bytes)


def _chain_has(expr: ast.AST, attribute: str) -> bool:
    """grad_context.attribute_in_chain on the ast: ``p.grad.data[0].zero_`` has ``grad`` and ``data``."""
    node = expr
    while True:
        if isinstance(node, ast.Attribute):
            if node.attr == attribute:
                return True
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node = node.func.value
        else:
            return False


def _is_assignable(expr: ast.AST) -> bool:
    node = expr
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _data_receiver(expr: ast.AST) -> bool:
    """gf103.data_receiver is not None: ``x.data`` with ``x`` other than ``self``/``cls``."""
    if isinstance(expr, ast.Attribute) and expr.attr == "data":
        receiver = expr.value
        return not (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"))
    return False


def _data_under_index(expr: ast.AST) -> bool:
    node = expr
    while isinstance(node, ast.Subscript):
        node = node.value
    return node is not expr and _data_receiver(node)


def _inplace_method(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in INPLACE_METHODS:
        return node.func.attr
    return None


def _chain_root(call: ast.Call) -> ast.AST:
    receiver = call.func.value  # type: ignore[attr-defined]
    while _inplace_method(receiver) is not None:
        receiver = receiver.func.value  # type: ignore[attr-defined]
    return receiver


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_false(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _is_number(node: ast.AST) -> bool:
    # grad_context reads `0`/`1` by their text (libcst's Integer("0")); `0x0` is not `0` there.
    return isinstance(node, ast.Constant) and type(node.value) in (int, float, complex)


def _first_argument(call: ast.Call) -> Optional[ast.AST]:
    """libcst's ``call.args[0].value``: the first argument in source order, keyword or not."""
    first = [*call.args[:1], *(k.value for k in call.keywords[:1])]
    if not first:
        return None
    return min(first, key=lambda n: (n.lineno, n.col_offset)) if len(first) > 1 else first[0]


def _positional(call: ast.Call) -> list[ast.AST]:
    """gf105._positional: positional arguments up to the first ``*args``."""
    found = []
    for arg in call.args:
        if isinstance(arg, ast.Starred):
            break
        found.append(arg)
    return found


def _callee_names(func: ast.AST, aliases: dict[str, set[str]]) -> set[str]:
    """The last names a callee's qualified name can end with: ``F.relu_`` -> relu_; ``r`` -> what it aliases."""
    if isinstance(func, ast.Attribute):
        return {func.attr}
    if isinstance(func, ast.Name):
        return {func.id} | aliases.get(func.id, set())
    return set()


@dataclass
class _Candidate:
    code: str
    line: int
    silenceable: bool  # a finding here is dropped when the context says autograd does not record
    # Every name in the expression the rule asks the hazard analysis about as the written tensor
    # (the only one it follows to every use); None: any name of the statement may be.
    written: Optional[frozenset[str]] = None


def _names(expr: Optional[ast.AST]) -> frozenset[str]:
    return frozenset(node.id for node in ast.walk(expr) if isinstance(node, ast.Name)) if expr is not None else frozenset()


class _Syntax:
    """The rules' syntactic tests, on the ast, for one module."""

    def __init__(self, codes: frozenset[str], aliases: dict[str, set[str]]) -> None:
        self.codes = codes
        self.aliases = aliases
        self.out_names = _out_function_names() if "GF106" in codes else frozenset()

    def candidates(self, node: ast.AST, kinds: Optional["_Kinds"] = None) -> Iterator[_Candidate]:
        """The rules that may report ``node``; ``kinds``: tensor-ness in its scope (None: anything may be one)."""
        codes = self.codes
        if isinstance(node, ast.AugAssign):
            if not isinstance(node.op, _INPLACE_AUGMENTED):
                return
            target = node.target
            if "GF103" in codes and (_data_receiver(target) or _data_under_index(target)):
                yield _Candidate("GF103", node.lineno, True)
            if "GF101" in codes and not _chain_has(target, "data") and self._augmented_may_write_tensor(node, kinds):
                yield _Candidate("GF101", node.lineno, True, _names(target))
        elif isinstance(node, ast.Assign):
            if "GF104" in codes:
                for target in node.targets:
                    if (isinstance(target, ast.Subscript) and not _chain_has(target, "data") and not _string_key(target)
                            and self._index_write_may_be_tensor(node, target, kinds)):
                        # the rule checks every subscript target of the statement
                        yield _Candidate("GF104", node.lineno, True, frozenset().union(*map(_names, node.targets)))
                        break
            if "GF103" in codes:
                if any(_data_receiver(t) or _data_under_index(t) for t in node.targets) or (
                    len(node.targets) == 1 and _data_receiver(node.value)
                ):
                    yield _Candidate("GF103", node.lineno, True)
        elif isinstance(node, ast.Call):
            yield from self._call(node)

    @staticmethod
    def _augmented_may_write_tensor(node: ast.AugAssign, kinds: Optional["_Kinds"]) -> bool:
        """GF101's own tests: `kind is NOT_TENSOR or (kind is UNKNOWN and value is NOT_TENSOR)` report nothing."""
        target = node.target
        if isinstance(target, ast.Subscript):
            if kinds is None:
                return True
            root = _subscript_root(target)
            written = root if root is not None else target.value
            if kinds.surely_number(written):
                return False
            return kinds.may_be_tensor(written) or kinds.may_be_tensor(node.value)
        if not _is_assignable(target):
            return False
        if kinds is None:
            return True
        if kinds.surely_number(target):
            return False
        return kinds.may_be_tensor(target) or not kinds.surely_number(node.value)

    @staticmethod
    def _index_write_may_be_tensor(node: ast.Assign, target: ast.Subscript, kinds: Optional["_Kinds"]) -> bool:
        """GF104: a tensor, or a container with tensor evidence (a mask index, `[:, i]` with a tensor value)."""
        if kinds is None:
            return True
        root = _subscript_root(target)
        written = root if root is not None else target.value
        if kinds.surely_number(written):
            return False
        if kinds.may_be_tensor(written):
            return True
        index = target.slice
        elements = index.elts if isinstance(index, ast.Tuple) else [index]
        if any(kinds.may_be_mask(e) for e in elements if not isinstance(e, ast.Slice)):
            return True
        array_index = len(elements) > 1 and any(
            isinstance(e, ast.Slice) or (isinstance(e, ast.Constant) and (e.value is None or e.value is Ellipsis))
            for e in elements
        )
        return array_index and not kinds.surely_number(node.value)

    def grad_buffer(self, node: ast.AST, code: str) -> bool:
        """Is the report's target surely a ``.grad`` buffer (a context that silences it)?"""
        if code == "GF101" and isinstance(node, ast.AugAssign):
            return _chain_has(node.target, "grad")
        if code == "GF104" and isinstance(node, ast.Assign):
            subscripts = [t for t in node.targets if isinstance(t, ast.Subscript)]
            return bool(subscripts) and all(_chain_has(t, "grad") for t in subscripts)
        if code == "GF102" and _inplace_method(node) is not None:
            return _chain_has(_chain_root(node), "grad")  # type: ignore[arg-type]
        return False

    def _call(self, node: ast.Call) -> Iterator[_Candidate]:
        codes = self.codes
        line = node.lineno
        method = _inplace_method(node)
        if method is not None:
            root = _chain_root(node)
            if "GF102" in codes and not _chain_has(root, "data"):
                yield _Candidate("GF102", line, True, _names(root))
            if "GF103" in codes and (_data_receiver(root) or _data_under_index(root)):
                yield _Candidate("GF103", line, True)
        names = None
        if "GF105" in codes:
            names = _callee_names(node.func, self.aliases)
            argument = _inplace_argument_candidate(node, names)
            if argument is not None:
                yield _Candidate("GF105", line, argument)
        if "GF106" in codes:
            out = next((k for k in node.keywords if k.arg == "out"), None)
            if out is not None and not (isinstance(out.value, ast.Constant) and out.value.value is None):
                names = names if names is not None else _callee_names(node.func, self.aliases)
                if names & self.out_names:
                    yield _Candidate("GF106", line, True, _names(out.value))
        if "GF107" in codes:
            names = names if names is not None else _callee_names(node.func, self.aliases)
            written = _written_argument(node)
            if names & INPLACE_FUNCTION_NAMES and written is not None and not _chain_has(written, "data"):
                yield _Candidate("GF107", line, True, _names(written))


def _subscript_root(expr: ast.AST) -> Optional[ast.AST]:
    """rewrite.subscript_root: ``x`` for ``x[i][j]``, ``self.buf`` for ``self.buf[i]``, None for ``f()[i]``."""
    node = expr
    while isinstance(node, ast.Subscript):
        node = node.value
    return node if _is_assignable(node) else None


def _string_key(target: ast.Subscript) -> bool:
    """gf104._has_string_key, where the ast can tell: a single string index."""
    index = target.slice
    return isinstance(index, ast.JoinedStr) or (isinstance(index, ast.Constant) and isinstance(index.value, _STRING_CONSTANTS))


def _written_argument(call: ast.Call) -> Optional[ast.AST]:
    """gf107._written_argument: the first positional argument, else ``input=``/``self=``."""
    for arg in call.args:
        if not isinstance(arg, ast.Starred):
            return arg
    for keyword in call.keywords:
        if keyword.arg in ("input", "self"):
            return keyword.value
    return None


def _inplace_argument_candidate(call: ast.Call, names: set[str]) -> Optional[bool]:
    """GF105: None if no ``inplace=True`` applies; else whether a finding here is silenceable.

    ``F.relu(x, inplace=True)`` is reported where it runs (silenced in no-grad code); a
    module constructor's report names the places the module runs and ignores its own context.
    """
    functional = [FUNCTIONAL[n] for n in names if n in FUNCTIONAL]
    modules = [INPLACE_MODULES[n] for n in names if n in INPLACE_MODULES]
    if not functional and not modules:
        return None
    keyword = next((k for k in call.keywords if k.arg == "inplace"), None)
    if keyword is not None:
        if not _is_true(keyword.value):
            return None
    else:
        positional = _positional(call)
        indexes = {entry["inplace_index"] for entry in functional + modules}
        if not any(0 <= i < len(positional) and _is_true(positional[i]) for i in indexes):
            return None
    return not modules


# --- what surely is not a tensor ----------------------------------------------------------------------
#
# A conservative mirror of tensors.TensorInference: `may_be_tensor` is False only where that
# inference surely answers NOT_TENSOR or UNKNOWN, `surely_number` only where it surely answers
# NOT_TENSOR. GF101 and GF104 report nothing for `i += 1` on a non-tensor or `d[k] = v` on a
# container without tensor evidence, which are most augmented and index assignments in real code.

_NOT_TENSOR_NODES = (ast.List, ast.Tuple, ast.Dict, ast.Set, ast.ListComp, ast.SetComp, ast.DictComp,
                     ast.GeneratorExp, ast.Lambda, ast.Compare, ast.JoinedStr)
_NUMBER_METHODS = frozenset({"item", "tolist", "numel", "dim"})
_PYTHON_COMPARISONS = (ast.In, ast.NotIn, ast.Is, ast.IsNot)
_ELEMENTWISE = (ast.BitAnd, ast.BitOr, ast.BitXor)
_ANY = "any"  # a binding that may hold a tensor
_DEPTH = 12


class _Binding:
    __slots__ = ("how", "value", "extra")

    def __init__(self, how: str, value: Optional[ast.AST] = None, extra: object = None) -> None:
        self.how, self.value, self.extra = how, value, extra


# Nodes that bind no name themselves (their children may): _Scope only walks through them.
_BINDS_NOTHING = frozenset({
    ast.Expr, ast.Return, ast.If, ast.While, ast.Try, ast.Raise, ast.Assert, ast.Delete, ast.Pass, ast.Break,
    ast.Continue, ast.Call, ast.Attribute, ast.Subscript, ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp,
    ast.BoolOp, ast.Compare, ast.IfExp, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.Starred, ast.Slice,
    ast.JoinedStr, ast.FormattedValue, ast.keyword, ast.Await, ast.Yield, ast.YieldFrom,
})
# Fields that never hold a node that binds: expression contexts and operators.
_NO_BINDING_FIELDS = frozenset({"ctx", "op", "ops"})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def _child_fields(kind: type) -> tuple[str, ...]:
    fields = _CHILD_FIELDS.get(kind)
    if fields is None:
        fields = _CHILD_FIELDS[kind] = tuple(f for f in kind._fields if f not in _NO_BINDING_FIELDS)  # type: ignore[attr-defined]
    return fields


def _children(node: ast.AST) -> list[ast.AST]:
    """ast.iter_child_nodes without expression contexts and operators, as a list (several times faster)."""
    fields = _CHILD_FIELDS.get(type(node))
    if fields is None:
        fields = _child_fields(type(node))
    found: list[ast.AST] = []
    for field in fields:
        value = getattr(node, field, None)
        if isinstance(value, ast.AST):
            found.append(value)
        elif type(value) is list:
            found.extend(item for item in value if isinstance(item, ast.AST))
    return found


class _Scope:
    """The bindings of one function or class body, by name (libcst's scope for a local name)."""

    def __init__(self, owner: ast.AST, walrus: bool = True) -> None:
        """``walrus``: the code may hold ``:=``, the one binding an expression can make in this
        scope (a lambda's or a comprehension's names are their own); without one, no expression
        is walked."""
        self.names: dict[str, list[_Binding]] = {}
        if isinstance(owner, _FUNCTIONS):
            arguments = owner.args
            for arg in [*arguments.posonlyargs, *arguments.args, arguments.vararg, *arguments.kwonlyargs, arguments.kwarg]:
                if arg is not None:
                    self._add(arg.arg, _Binding("param", arg.annotation))
        stack: list[ast.AST] = list(owner.body)  # type: ignore[attr-defined]
        while stack:
            node = stack.pop()
            if not walrus and isinstance(node, ast.expr):
                continue
            if type(node) in _BINDS_NOTHING:
                stack.extend(_children(node))
                continue
            if isinstance(node, _DEFINITIONS):
                self._add(node.name, _Binding("other"))
                if isinstance(owner, _FUNCTIONS):
                    # `nonlocal x` in an inner function binds this scope's x (libcst records it here)
                    for name in _nonlocal_names(node):
                        self._add(name, _Binding(_ANY))
                # decorators, defaults and bases run in this scope; a walrus there binds here
                stack.extend(node.decorator_list)
                if isinstance(node, ast.ClassDef):
                    stack.extend(node.bases)
                    stack.extend(k.value for k in node.keywords)
                else:
                    stack.extend(d for d in [*node.args.defaults, *node.args.kw_defaults] if d is not None)
                continue
            if isinstance(node, ast.Lambda):
                stack.extend(d for d in [*node.args.defaults, *node.args.kw_defaults] if d is not None)
                continue
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                for name in node.names:
                    self._add(name, _Binding(_ANY))
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    self._target(target, node.value, len(node.targets) == 1)
            elif isinstance(node, ast.AugAssign):
                if isinstance(node.target, ast.Name):
                    self._add(node.target.id, _Binding("value", node.value))
            elif isinstance(node, ast.AnnAssign):
                if isinstance(node.target, ast.Name):
                    self._add(node.target.id, _Binding("annotated", node.value, node.annotation))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                if isinstance(node.target, ast.Name):
                    self._add(node.target.id, _Binding("for", node.iter))
                else:
                    for name in _names_in(node.target):
                        self._add(name, _Binding("other"))  # unpacked loop targets: never a tensor there
            elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
                self._add(node.target.id, _Binding("value", node.value))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    self._add(alias.asname or alias.name.split(".")[0], _Binding("other"))
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self._add(node.name, _Binding("other"))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        for name in _names_in(item.optional_vars):
                            self._add(name, _Binding("other"))
            elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
                self._add(node.name, _Binding("other"))
            elif isinstance(node, ast.MatchMapping) and node.rest:
                self._add(node.rest, _Binding("other"))
            elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                # the loop variables are the comprehension's own; a walrus inside binds here
                stack.extend(n for n in ast.walk(node) if isinstance(n, ast.NamedExpr))
                continue
            stack.extend(_children(node))

    def _add(self, name: str, binding: _Binding) -> None:
        self.names.setdefault(name, []).append(binding)

    def _target(self, target: ast.AST, value: ast.AST, single: bool) -> None:
        if isinstance(target, ast.Name):
            self._add(target.id, _Binding("assign", value, single))
        elif isinstance(target, (ast.Tuple, ast.List)):
            for name in _names_in(target):
                self._add(name, _Binding("unpacked", value))
        elif isinstance(target, ast.Starred):
            self._target(target.value, value, False)


def _nonlocal_names(definition: ast.stmt) -> list[str]:
    """The names ``nonlocal`` statements anywhere inside ``definition`` declare."""
    found: list[str] = []
    stack: list[ast.AST] = [definition]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Nonlocal):
            found.extend(node.names)
        else:  # statements, handlers, match cases: expressions hold no statement
            stack.extend(child for child in _children(node) if not isinstance(child, ast.expr))
    return found


def _names_in(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


class _Imports:
    """Where libcst's qualified names come from: every import of the module, by the name it binds.

    Imports anywhere count (a superset of what one scope sees). ``bound_otherwise``: names the
    module binds at module level other than by an import.
    """

    def __init__(self, tree: ast.Module, names: "_Names") -> None:
        self.paths: dict[str, set[str]] = {}
        self.star_from_torch = False
        pending: list[list[ast.stmt]] = [tree.body]
        while pending:
            for statement in pending.pop():
                if isinstance(statement, ast.Import):
                    for alias in statement.names:
                        if alias.asname:
                            self.paths.setdefault(alias.asname, set()).add(alias.name)
                        else:
                            root = alias.name.split(".")[0]
                            self.paths.setdefault(root, set()).add(root)
                elif isinstance(statement, ast.ImportFrom):
                    module = "." * statement.level + (statement.module or "")
                    for alias in statement.names:
                        if alias.name == "*":
                            self.star_from_torch |= module == "torch" or module.startswith("torch.")
                        else:
                            self.paths.setdefault(alias.asname or alias.name, set()).add(f"{module}.{alias.name}")
                else:
                    pending.extend(_statement_lists(statement))
        self.bound_otherwise = {name for name, kinds in names.kinds.items()
                                if not kinds <= {names.IMPORT, names.TORCH_IMPORT}}

    def torch_names(self, func: ast.AST) -> Optional[list[str]]:
        """The ``torch.*`` names libcst may give the callee (None: any name, after `from torch import *`)."""
        attributes: list[str] = []
        while isinstance(func, ast.Attribute):
            attributes.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return []
        root = func.id
        paths = set(self.paths.get(root, ()))
        if root == "torch":
            paths.add("torch")  # a module-level `torch` of any kind: libcst names its attributes torch.*
        if self.star_from_torch and root not in self.paths:
            return None
        found = (".".join([path, *reversed(attributes)]) for path in paths)
        return [full for full in found if full.startswith("torch.")]

    def module_class(self, func: ast.AST) -> bool:
        """May the callee be a torch.nn module class (``nn.Linear``)?"""
        names = self.torch_names(func)
        return names is None or any(_is_module_class(full) for full in names)

    def torch_verdict(self, func: ast.AST) -> Optional[bool]:
        """For a callee that libcst names ``torch.*``: does TensorInference answer TENSOR? None: no such name."""
        names = self.torch_names(func)
        if names is None:
            return True  # `from torch import *`: any name may be torch's
        verdicts = []
        for full in names:
            last = full.rsplit(".", 1)[-1]
            if last in NON_TENSOR_TORCH_CALLS or full.startswith(NON_TENSOR_TORCH_MODULES):
                verdicts.append(False)
            elif _is_module_class(full):
                verdicts.append(False)  # a module, not a tensor
            else:
                verdicts.append(True)
        return any(verdicts) if verdicts else None


def _is_module_class(name: str) -> bool:
    """TensorInference's test for a torch.nn module class (its constructor builds a module)."""
    last = name.rsplit(".", 1)[-1]
    return name.startswith("torch.nn.") and last[:1].isupper() and last != "Parameter"


class _Kinds:
    """Tensor-ness of expressions in one scope, as far as the ast can tell without libcst."""

    def __init__(self, scope: _Scope, aliases: dict[str, set[str]], imported: frozenset[str],
                 imports: Optional["_Imports"] = None, parent: Optional["_Kinds"] = None) -> None:
        self.scope = scope
        self.parent = parent  # where the names this scope does not bind are bound (None: nowhere known)
        self.aliases = aliases
        self.imported = imported  # every word of every import statement: names whose meaning is an import
        # the module's imports, at module level or in a top-level function, class or method (None: not used)
        self.imports = imports
        self._visiting: set[str] = set()
        self._visiting_numbers: set[str] = set()

    def may_be_tensor(self, expr: Optional[ast.AST], depth: int = 0) -> bool:
        if expr is None:
            return False
        if depth > _DEPTH:
            return True
        if isinstance(expr, ast.Constant) or isinstance(expr, _NOT_TENSOR_NODES):
            return False
        if isinstance(expr, ast.Name):
            return self._name_may_be_tensor(expr.id, depth)
        if isinstance(expr, ast.BinOp):
            return self.may_be_tensor(expr.left, depth + 1) or self.may_be_tensor(expr.right, depth + 1)
        if isinstance(expr, ast.UnaryOp):
            return not isinstance(expr.op, ast.Not) and self.may_be_tensor(expr.operand, depth + 1)
        if isinstance(expr, ast.BoolOp):
            return any(self.may_be_tensor(v, depth + 1) for v in expr.values)
        if isinstance(expr, ast.IfExp):
            return self.may_be_tensor(expr.body, depth + 1) or self.may_be_tensor(expr.orelse, depth + 1)
        if isinstance(expr, ast.NamedExpr):
            return self.may_be_tensor(expr.value, depth + 1)
        if isinstance(expr, ast.Subscript):
            return self.may_be_tensor(expr.value, depth + 1)
        if isinstance(expr, ast.Attribute):
            return expr.attr in TENSOR_ATTRIBUTES and self.may_be_tensor(expr.value, depth + 1)
        if isinstance(expr, ast.Call):
            return self._call_may_be_tensor(expr, depth)
        return False  # TensorInference answers UNKNOWN for anything else (await, starred, ...)

    def _call_may_be_tensor(self, call: ast.Call, depth: int) -> bool:
        """TensorInference._call_kind may answer TENSOR: the callee is a torch function that returns
        tensors (known by its import), a tensor method of what may be a tensor, or maybe a module."""
        if self.surely_number(call):
            return False
        imports = self.imports
        if imports is None:
            return True
        func = call.func
        verdict = imports.torch_verdict(func)
        if verdict is not None:
            if verdict or not self._import_only(func):
                return True
            return False  # `make_tensor(...)` from torch.testing, `torch.nn.Linear(...)`: not a tensor
        if isinstance(func, ast.Attribute):
            if func.attr in NON_TENSOR_METHODS:
                return False
            if func.attr in TENSOR_METHODS:
                return self.may_be_tensor(func.value, depth + 1)
            return isinstance(func.value, ast.Name) and func.value.id == "self"  # a module built in __init__
        if isinstance(func, ast.Name):
            # a name bound to a module built from torch.nn (`gru = nn.GRU(...)`, then `gru(x)`): as
            # module_constructor reads it, bound once, by `=`; a module-level name is not looked at
            local = self.scope.names.get(func.id)
            if local is None:
                return func.id in imports.bound_otherwise
            value = local[0].value
            return (len(local) == 1 and local[0].how == "assign" and isinstance(value, ast.Call)
                    and imports.module_class(value.func))
        return False

    def _import_only(self, func: ast.AST) -> bool:
        """Is the callee's root name bound by imports only, here and at module level?"""
        while isinstance(func, ast.Attribute):
            func = func.value
        assert isinstance(func, ast.Name) and self.imports is not None
        return func.id not in self.scope.names and func.id not in self.imports.bound_otherwise

    def _name_may_be_tensor(self, name: str, depth: int) -> bool:
        if name in ("True", "False", "None"):
            return False
        bindings = self.scope.names.get(name)
        if bindings is None:
            return self.parent is None or self.parent._name_may_be_tensor(name, depth)
        if name in self._visiting:
            return False  # a cycle (x = x + 1): the other bindings decide, as in TensorInference
        self._visiting.add(name)
        try:
            return any(self._binding_may_be_tensor(b, depth + 1) for b in bindings)
        finally:
            self._visiting.discard(name)

    def _binding_may_be_tensor(self, binding: _Binding, depth: int) -> bool:
        how = binding.how
        if how == "param":
            return binding.value is not None and _mentions_tensor_annotation(binding.value)
        if how in ("assign", "value"):
            return self.may_be_tensor(binding.value, depth)
        if how == "unpacked":
            value = binding.value
            if isinstance(value, (ast.Tuple, ast.List)):
                return any(self.may_be_tensor(e.value if isinstance(e, ast.Starred) else e, depth) for e in value.elts)
            return self.may_be_tensor(value, depth)
        if how == "annotated":
            return _mentions_tensor_annotation(binding.extra) or self.may_be_tensor(binding.value, depth)  # type: ignore[arg-type]
        if how == "for":
            iterable = binding.value
            if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and iterable.func.id == "range":
                return False
            return self.may_be_tensor(iterable, depth)
        if how == "other":
            return False
        return True

    def surely_number(self, expr: ast.AST, depth: int = 0) -> bool:
        """TensorInference surely answers NOT_TENSOR (a number, a string, a container...)."""
        if depth > _DEPTH:
            return False
        if isinstance(expr, ast.Constant):
            return expr.value is not Ellipsis
        if isinstance(expr, _NOT_TENSOR_NODES):
            return True
        if isinstance(expr, ast.Name):
            return self._name_surely_number(expr.id, depth)
        if isinstance(expr, ast.UnaryOp):
            return isinstance(expr.op, ast.Not) or self.surely_number(expr.operand, depth + 1)
        if isinstance(expr, ast.BinOp):
            return self.surely_number(expr.left, depth + 1) and self.surely_number(expr.right, depth + 1)
        if isinstance(expr, ast.BoolOp):
            return all(self.surely_number(v, depth + 1) for v in expr.values)
        if isinstance(expr, ast.IfExp):
            return self.surely_number(expr.body, depth + 1) and self.surely_number(expr.orelse, depth + 1)
        if isinstance(expr, ast.Attribute):
            return expr.attr in NON_TENSOR_ATTRIBUTES
        if isinstance(expr, ast.Call):
            func = expr.func
            if isinstance(func, ast.Name):
                return func.id in NON_TENSOR_BUILTINS and func.id not in self.imported
            if isinstance(func, ast.Attribute) and func.attr in _NUMBER_METHODS:
                root = func.value
                while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
                    root = root.func if isinstance(root, ast.Call) else root.value
                return not (isinstance(root, ast.Name) and root.id in self.imported)
        return False

    def _name_surely_number(self, name: str, depth: int) -> bool:
        """Every binding of ``name`` is surely no tensor (TensorInference joins them: NOT_TENSOR)."""
        bindings = self.scope.names.get(name)
        if bindings is None:
            return self.parent is not None and self.parent._name_surely_number(name, depth)
        if name in self._visiting_numbers:
            return False  # a cycle: TensorInference may answer UNKNOWN there
        self._visiting_numbers.add(name)
        try:
            return all(self._binding_surely_number(b, depth + 1) for b in bindings)
        finally:
            self._visiting_numbers.discard(name)

    def _binding_surely_number(self, binding: _Binding, depth: int) -> bool:
        how = binding.how
        if how in ("assign", "value"):
            return binding.value is not None and self.surely_number(binding.value, depth)
        if how == "for":
            iterable = binding.value
            return isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and iterable.func.id == "range"
        if how == "annotated":
            annotated = _annotation_kind(binding.extra)  # type: ignore[arg-type]
            if annotated == "unknown":
                return binding.value is not None and self.surely_number(binding.value, depth)
            return annotated == "not-tensor"
        return False  # parameters, unpacking, imports, definitions...: not surely

    def may_be_mask(self, expr: ast.AST, depth: int = 0) -> bool:
        """gf104.is_boolean_mask may answer True."""
        if depth > 4:
            return False
        if isinstance(expr, ast.Compare):
            if any(isinstance(op, _PYTHON_COMPARISONS) for op in expr.ops):
                return False
            return not all(self.surely_number(o) for o in [expr.left, *expr.comparators])
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Invert):
            return isinstance(expr.operand, ast.Name) or self.may_be_mask(expr.operand, depth + 1)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, _ELEMENTWISE):
            return self.may_be_mask(expr.left, depth + 1) and self.may_be_mask(expr.right, depth + 1)
        if isinstance(expr, ast.Call):
            return bool(_callee_names(expr.func, self.aliases) & _mask_functions())
        if isinstance(expr, ast.Name):
            bindings = self.scope.names.get(expr.id)
            if bindings is None:
                return self.parent is None or self.parent.may_be_mask(expr, depth)
            if len(bindings) != 1 or bindings[0].how != "assign" or not bindings[0].extra:
                return False  # gf104._single_binding: one plain assignment, else no mask
            return self.may_be_mask(bindings[0].value, depth + 1)  # type: ignore[arg-type]
        return False


def _annotation_kind(annotation: ast.AST) -> str:
    """TensorInference._annotation_kind: "not-tensor", "unknown", or "maybe-tensor" (which may be either)."""
    if isinstance(annotation, ast.Name):
        if annotation.id in TENSOR_ANNOTATIONS:
            return "maybe-tensor"
        return "not-tensor" if annotation.id in NON_TENSOR_ANNOTATIONS else "unknown"
    if isinstance(annotation, ast.Attribute):
        return "maybe-tensor" if annotation.attr in TENSOR_ANNOTATIONS else "unknown"
    if isinstance(annotation, ast.Subscript):
        base = annotation.value
        base_name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if base_name == "Optional":
            inner = annotation.slice
            return _annotation_kind(inner) if not isinstance(inner, ast.Tuple) else "maybe-tensor"
        return "not-tensor" if base_name in NON_TENSOR_ANNOTATIONS else "unknown"
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        tail = annotation.value.replace("torch.", "").replace("Optional[", "").rstrip("]").split("|")[0].strip()
        if tail in TENSOR_ANNOTATIONS:
            return "maybe-tensor"
        return "not-tensor" if tail in NON_TENSOR_ANNOTATIONS else "unknown"
    return "maybe-tensor"  # `X | Y` and the rest: not looked at


def _mentions_tensor_annotation(annotation: ast.AST) -> bool:
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id in TENSOR_ANNOTATIONS:
            return True
        if isinstance(node, ast.Attribute) and node.attr in TENSOR_ANNOTATIONS:
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and any(t in node.value for t in TENSOR_ANNOTATIONS):
            return True
    return False


_IMPORT = re.compile(_word("import"))


def imported_words(source: str) -> frozenset[str]:
    """Every word of every import statement (to the closing parenthesis or the line's end)."""
    words: set[str] = set()
    for match in _IMPORT.finditer(source):
        end = match.end()
        rest = source[end:end + 400]
        stripped = rest.lstrip(" \t\\")
        if stripped.startswith("("):
            close = rest.find(")")
            region = rest if close < 0 else rest[:close]
        else:
            region = rest
            position = 0
            while True:
                newline = min((i for i in (region.find("\n", position), region.find("\r", position)) if i >= 0), default=-1)
                if newline < 0:
                    break
                if region[:newline].rstrip(" \t").endswith("\\"):
                    position = newline + 1
                    continue
                region = region[:newline]
                break
        words.update(re.findall(r"\w+", region))
    # `from torch import x` names the module before the keyword; only the bound names matter.
    return frozenset(words)


# --- where autograd surely does not record ----------------------------------------------------------

_SURE_OFF, _SURE_NEUTRAL, _UNSURE = "off", "neutral", "unsure"


class _GradContext:
    """A conservative mirror of grad_context.enclosing_grad_context on ast ancestors.

    It answers True only where that function surely returns a context; ``torch`` must be the
    module's ``import torch`` (bound no other way) for ``torch.no_grad()`` and friends to count.
    """

    def __init__(self, torch_resolved: bool, aliases: dict[str, set[str]]) -> None:
        self.torch_resolved = torch_resolved
        self.aliases = aliases

    def silenced(self, path: Sequence[ast.AST], in_lambda: bool, header_of_innermost: bool) -> bool:
        """``path``: statements from the module down to the innermost one holding the node.

        ``header_of_innermost``: the node is in that statement's own fields (a decorator,
        a with item, a test), not in a statement nested in its body.
        """
        inside_function = in_lambda
        decided = False  # grad mode may have been set by an enable_grad-like item further in
        for depth in range(len(path) - 1, -1, -1):
            current = path[depth]
            innermost = depth == len(path) - 1
            if isinstance(current, _WITH):
                if innermost and header_of_innermost:
                    continue  # the node is in the items, not the body
                if not inside_function and not decided:
                    for item in reversed(current.items):
                        mode = self._mode(item.context_expr)
                        if mode == _SURE_OFF:
                            return True
                        if mode == _UNSURE:
                            decided = True
                            break
            elif isinstance(current, _FUNCTIONS):
                if not decided:
                    modes = [self._mode(d) for d in current.decorator_list]
                    if _SURE_OFF in modes:
                        return True
                    if _UNSURE in modes:
                        decided = True
                if INITIALIZER_NAME.match(current.name):
                    return True
                owner = path[depth - 1] if depth > 0 else None
                if isinstance(owner, ast.ClassDef):
                    if current.name in OPTIMIZER_METHODS and owner.name.endswith("Optimizer"):
                        return True
                    if current.name in AUTOGRAD_FUNCTION_METHODS and any(self._autograd_function(b) for b in owner.bases):
                        return True
                inside_function = True
        return False

    def _torch_chain(self, expr: ast.AST) -> Optional[list[str]]:
        """``torch.autograd.no_grad`` -> ["torch", "autograd", "no_grad"] when ``torch`` is the import."""
        parts = []
        node = expr
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "torch" and self.torch_resolved and parts:
            return ["torch", *reversed(parts)]
        return None

    def _autograd_function(self, base: ast.AST) -> bool:
        chain = self._torch_chain(base)
        return chain is not None and ".".join(chain) in ("torch.autograd.Function", "torch.autograd.function.Function")

    def _mode(self, expr: ast.AST) -> str:
        call = expr if isinstance(expr, ast.Call) else None
        func = call.func if call is not None else expr
        if isinstance(func, ast.Attribute):
            last = {func.attr}
        elif isinstance(func, ast.Name):
            last = {func.id} | self.aliases.get(func.id, set())
        else:
            return _UNSURE
        if not last & GRAD_MODE_NAMES:
            return _SURE_NEUTRAL
        chain = self._torch_chain(func)
        if chain is None or isinstance(func, ast.Name):
            return _UNSURE
        name = chain[-1]
        first = _first_argument(call) if call is not None else None
        if name == "no_grad":
            return _SURE_OFF
        if name == "inference_mode":
            if first is None:
                return _SURE_OFF
            if _is_false(first) or _is_number(first) or isinstance(first, ast.Starred):
                return _UNSURE
            return _SURE_OFF
        if name == "set_grad_enabled":
            if first is None:
                return _SURE_NEUTRAL
            if _is_false(first):
                return _SURE_OFF
            return _UNSURE
        return _UNSURE  # enable_grad


# --- statements that hold a line ---------------------------------------------------------------------


def _first_line(statement: ast.stmt) -> int:
    if isinstance(statement, _DEFINITIONS) and statement.decorator_list:
        return min(statement.lineno, *(d.lineno for d in statement.decorator_list))
    return statement.lineno


def _statement_lists(statement: ast.stmt) -> list[list[ast.stmt]]:
    lists = []
    for name in ("body", "orelse", "finalbody"):
        value = getattr(statement, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            lists.append(value)
    for handler in getattr(statement, "handlers", ()):
        lists.append(handler.body)
    for case in getattr(statement, "cases", ()):
        lists.append(case.body)
    return lists


def _own_expressions(statement: ast.stmt) -> Iterator[ast.AST]:
    """The statement's own fields (header, decorators, values), without the statements nested in it."""
    for name, value in ast.iter_fields(statement):
        if name in ("body", "orelse", "finalbody") and isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            continue
        if name == "handlers":
            for handler in value:
                if handler.type is not None:
                    yield handler.type
            continue
        if name == "cases":
            for case in value:
                yield case.pattern
                if case.guard is not None:
                    yield case.guard
            continue
        if isinstance(value, ast.AST):
            yield value
        elif isinstance(value, list):
            yield from (item for item in value if isinstance(item, ast.AST))


class _Block:
    """The statements of one body, searchable by line."""

    __slots__ = ("statements", "starts", "ends")

    def __init__(self, statements: list[ast.stmt]) -> None:
        self.statements = statements
        self.starts = [_first_line(s) for s in statements]
        self.ends = [s.end_lineno or s.lineno for s in statements]

    def holding(self, line: int) -> list[ast.stmt]:
        index = bisect.bisect_right(self.starts, line) - 1
        found = []
        while index >= 0 and self.ends[index] >= line:
            found.append(self.statements[index])
            index -= 1
        found.reverse()
        return found


# --- the plan ----------------------------------------------------------------------------------------


@dataclass
class _Stub:
    start: int  # offsets of the definition's lines in the source
    end: int
    text: str  # what replaces them in the focused text
    line: str  # the stub's own line, unique thanks to its marker
    code_lines: int = 1  # lines of ``text`` that are not blank


@dataclass
class Plan:
    """What libcst analyses for one source, and how to map a fixed focused text back."""

    source: str
    text: str  # the focused text; the source itself when nothing is left out
    candidates: int
    units: int  # top-level statements
    kept_units: int
    kept_lines: int  # lines of ``text`` that are not blank, stubs not counted
    stubs: list[_Stub] = field(default_factory=list)
    # where libcst may parse ``text`` piece by piece (engine.parse); empty for short texts
    piece_starts: tuple[int, ...] = ()

    @property
    def focused(self) -> bool:
        return bool(self.stubs)

    def restore(self, code: str) -> Optional[str]:
        """``code`` (the focused text after fixes) with the left-out definitions put back.

        Fixes never touch a stub; None if one is not where and as it was left (the caller
        then works on the whole text).
        """
        if not self.stubs:
            return code
        pieces = []
        position = 0
        for stub in self.stubs:
            at = code.find(stub.line, position)
            if at < 0:
                return None
            line_start = code.rfind("\n", 0, at) + 1
            line_start = max(line_start, code.rfind("\r", 0, at) + 1)
            before = stub.text.index(stub.line)
            start = at - before
            if start < position or code[start:start + len(stub.text)] != stub.text:
                return None
            pieces.append(code[position:start])
            pieces.append(self.source[stub.start:stub.end])
            position = start + len(stub.text)
        pieces.append(code[position:])
        return "".join(pieces)


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_NEWLINE = re.compile(r"\r\n|\r|\n")
# Names a kept definition may trace through the module: everything but the callee of a call,
# an annotation, and the object of an attribute that no analysis follows (`torch.zeros`, `np.pi`).
TRACED_ATTRIBUTES = frozenset(ALIASING_METHODS) | {"detach", "data"} | frozenset(INPLACE_METHODS)
# Fields no analysis traces a name through: annotations, and decorators (read for their qualified names only).
_ANNOTATION_FIELDS = {ast.arg: ("annotation",), ast.FunctionDef: ("returns", "decorator_list"),
                      ast.AsyncFunctionDef: ("returns", "decorator_list"), ast.ClassDef: ("decorator_list",),
                      ast.AnnAssign: ("annotation",)}


def _line_offsets(source: str) -> list[int]:
    """Offsets where each line starts (1-based lines: offsets[line - 1]), plus the end."""
    offsets = [0]
    offsets.extend(match.end() for match in _NEWLINE.finditer(source))
    if offsets[-1] != len(source):
        offsets.append(len(source))
    return offsets


class _Planner:
    def __init__(self, source: str, tree: ast.Module, rules: Sequence[Rule], keep_silenced: bool) -> None:
        self.source = source
        self.tree = tree
        self.codes = frozenset(rule.code for rule in rules)
        self.keep_silenced = keep_silenced
        self.aliases = import_aliases(source, INPLACE_FUNCTION_NAMES | INPLACE_ARGUMENT_NAMES | GRAD_MODE_NAMES
                                      | (_out_function_names() if "GF106" in self.codes else frozenset()))
        self.syntax = _Syntax(self.codes, self.aliases)
        self.walrus = ":=" in source  # else no expression binds a name in its scope (see _Scope)
        self.scopes: dict[int, _Kinds] = {}
        self._scopes: dict[int, _Scope] = {}  # by id of the function or class (see scope)
        self._own_names: dict[int, tuple[frozenset[str], frozenset[str]]] = {}  # see own_names
        self._global_owners: Optional[dict[str, set[int]]] = None
        # (name, top-level class) -> the methods whose code declares the name global; None when the
        # class body itself does (filled in by global_owners)
        self.global_methods: dict[tuple[str, int], Optional[list[ast.stmt]]] = {}
        self._names: Optional[_Names] = None
        self._imports: Optional[_Imports] = None
        self.imported: Optional[frozenset[str]] = None
        self.blocks: dict[int, _Block] = {}
        self.walked: set[int] = set()
        self.candidates: list[tuple[int, _Candidate]] = []  # (top-level index, candidate)
        # top-level class -> ids of the methods kept whole: those with candidates, and those that
        # declare a global the analysis needs (see _focused)
        self.class_members: dict[int, set[int]] = {}
        self.statements: dict[int, list[ast.stmt]] = {}  # top-level statement -> the statements holding candidates
        self.whole_classes: set[int] = set()  # classes with a candidate outside any method
        self.module_block = _Block(tree.body)
        self._lines: Optional[list[int]] = None
        self.grad = _GradContext(self._torch_resolved(), self.aliases) if not keep_silenced else None

    # -- text to lines ----------------------------------------------------------------------------

    @property
    def line_starts(self) -> list[int]:
        if self._lines is None:
            self._lines = [0] + [m.end() for m in _NEWLINE.finditer(self.source)]
        return self._lines

    def hit_lines(self, pattern: re.Pattern[str]) -> set[int]:
        starts = self.line_starts
        return {bisect.bisect_right(starts, match.start()) for match in pattern.finditer(self.source)}

    def _underscore_words(self, pattern: re.Pattern[str]) -> dict[str, list[int]]:
        """Each word the pattern ends (``add_`` for the ``_`` it finds), with its lines."""
        source, starts = self.source, self.line_starts
        found: dict[str, list[int]] = {}
        for match in pattern.finditer(source):
            end = match.end()
            start = end - 1
            while start > 0 and (source[start - 1].isalnum() or source[start - 1] == "_"):
                start -= 1
            found.setdefault(source[start:end], []).append(bisect.bisect_right(starts, start))
        return found

    # -- statements at a line ---------------------------------------------------------------------

    def block(self, statements: list[ast.stmt]) -> _Block:
        key = id(statements)
        found = self.blocks.get(key)
        if found is None:
            found = self.blocks[key] = _Block(statements)
        return found

    def paths_at(self, line: int) -> Iterator[list[ast.stmt]]:
        """Each chain of statements, from a top-level one down, whose innermost statement holds ``line``."""
        stack: list[tuple[list[ast.stmt], _Block]] = [([], self.module_block)]
        while stack:
            path, block = stack.pop()
            for statement in block.holding(line):
                inner = [*path, statement]
                yield inner
                for statements in _statement_lists(statement):
                    stack.append((inner, self.block(statements)))

    # -- candidates ---------------------------------------------------------------------------------

    def find(self, rules: Sequence[Rule]) -> None:
        lines: set[int] = set()
        words: Optional[dict[str, list[int]]] = None
        for rule in rules:
            if rule.code in ("GF102", "GF107"):
                if words is None:
                    words = self._underscore_words(rule.prescreen)
                wanted = INPLACE_METHODS if rule.code == "GF102" else INPLACE_FUNCTION_NAMES
                for word, at in words.items():
                    if word in wanted:
                        lines.update(at)
                if rule.code == "GF107":
                    aliased = [a for a, names in self.aliases.items() if names & INPLACE_FUNCTION_NAMES]
                    for alias in aliased:
                        lines |= self.hit_lines(_compiled(_word(alias)))
            else:
                lines |= self.hit_lines(rule.prescreen)
        for line in sorted(lines):
            for path in self.paths_at(line):
                statement = path[-1]
                if id(statement) not in self.walked:
                    self.walked.add(id(statement))
                    self._examine(path)

    def _examine(self, path: list[ast.stmt]) -> None:
        statement = path[-1]
        top = self.module_index[id(path[0])]
        syntax = self.syntax
        kinds = self._kinds(path) if isinstance(statement, (ast.Assign, ast.AugAssign)) else None
        # (node, inside a lambda) for the statement and every expression node it holds itself
        stack: list[tuple[ast.AST, bool]] = [(statement, False)]
        stack.extend((e, False) for e in _own_expressions(statement))
        while stack:
            node, in_lambda = stack.pop()
            for candidate in syntax.candidates(node, kinds if node is statement else None):
                if not self._silenced(candidate, node, path, in_lambda):
                    self.candidates.append((top, candidate))
                    self.statements.setdefault(top, []).append(statement)
                    self._member(path)
            if node is statement:
                continue
            nested = in_lambda or isinstance(node, ast.Lambda)
            stack.extend((child, nested) for child in _children(node))

    def _member(self, path: list[ast.stmt]) -> None:
        """Note the method of a top-level class that holds a candidate (or that the class itself does)."""
        if not isinstance(path[0], ast.ClassDef):
            return
        top = self.module_index[id(path[0])]
        if len(path) > 1 and isinstance(path[1], _FUNCTIONS):
            self.class_members.setdefault(top, set()).add(id(path[1]))
        else:
            self.whole_classes.add(top)  # in the class body or header itself

    def scope(self, function: ast.AST) -> _Scope:
        """The bindings of a function or class body (built once: the kinds and the tracing share it)."""
        found = self._scopes.get(id(function))
        if found is None:
            found = self._scopes[id(function)] = _Scope(function, walrus=self.walrus)
        return found

    def own_names(self, function: ast.AST) -> tuple[frozenset[str], frozenset[str]]:
        """The names a function or lambda binds for itself (its parameters, whatever its body binds,
        what inner functions declare nonlocal), and those it declares global: module-level names
        there, whatever an enclosing function binds."""
        found = self._own_names.get(id(function))
        if found is None:
            if isinstance(function, ast.Lambda):
                arguments = function.args
                found = (frozenset(a.arg for a in [*arguments.posonlyargs, *arguments.args, arguments.vararg,
                                                   *arguments.kwonlyargs, arguments.kwarg] if a is not None), frozenset())
            else:
                declared = frozenset(_declared_global(function))
                found = (frozenset(self.scope(function).names) - declared, declared)
            self._own_names[id(function)] = found
        return found

    def _kinds(self, path: list[ast.stmt]) -> Optional[_Kinds]:
        """Tensor-ness in the function or class body that holds the statement, or in the module."""
        return self._kinds_in([s for s in path[:-1] if isinstance(s, _DEFINITIONS)])

    def _kinds_in(self, enclosing: list[ast.stmt]) -> _Kinds:
        """The kinds of the innermost of ``enclosing`` (the module's when it is empty)."""
        owner = enclosing[-1] if enclosing else self.tree
        kinds = self.scopes.get(id(owner))
        if kinds is None:
            if self.imported is None:
                self.imported = imported_words(self.source)
            scope = self.scope(owner) if owner is not self.tree else _Scope(owner, walrus=self.walrus)
            if owner is self.tree:
                for name in self.global_names():
                    scope.names.setdefault(name, []).append(_Binding(_ANY))  # bound in a function too
            # Callees are resolved through the module's imports where no enclosing function may
            # bind their names: at module level, in a top-level function or class, or a method of a
            # top-level class.
            flat = len(enclosing) <= 1 or (len(enclosing) == 2 and isinstance(enclosing[0], ast.ClassDef))
            # A name this scope does not bind is libcst's binding in the nearest enclosing function
            # (a class body is not seen from its methods), else in the module.
            outer = enclosing[:-1]
            while outer and isinstance(outer[-1], ast.ClassDef):
                outer = outer[:-1]
            parent = self._kinds_in(outer) if enclosing else None
            kinds = self.scopes[id(owner)] = _Kinds(scope, self.aliases, self.imported,
                                                    self.imports() if flat and not self.global_names() else None,
                                                    parent)
        return kinds

    def _silenced(self, candidate: _Candidate, node: ast.AST, path: list[ast.stmt], in_lambda: bool) -> bool:
        if self.keep_silenced or not candidate.silenceable:
            return False
        if self.syntax.grad_buffer(node, candidate.code):
            return True
        return self.grad is not None and self.grad.silenced(path, in_lambda, header_of_innermost=True)

    @property
    def module_index(self) -> dict[int, int]:
        index = getattr(self, "_module_index", None)
        if index is None:
            index = self._module_index = {id(s): i for i, s in enumerate(self.tree.body)}
        return index

    # -- does `torch` mean the module everywhere? ---------------------------------------------------

    def _torch_resolved(self) -> bool:
        """A top-level ``import torch``, and ``torch`` bound nowhere to anything else."""
        if not any(
            isinstance(s, ast.Import) and any(a.name == "torch" and a.asname in (None, "torch") for a in s.names)
            for s in self.tree.body
        ):
            return False
        examined: set[int] = set()  # a long statement holds `torch` on many lines: walk it once
        for line in sorted(self.hit_lines(BARE_TORCH)):
            for path in self.paths_at(line):
                if id(path[-1]) in examined:
                    continue
                examined.add(id(path[-1]))
                if _binds(path[-1], "torch", allow_import=True):
                    return False
        return True

    def global_names(self) -> set[str]:
        """Names some ``global`` statement declares (functions bind them at module level)."""
        return set(self.global_owners())

    def has_global(self) -> bool:
        return bool(self.global_owners())

    def global_owners(self) -> dict[str, set[int]]:
        """Each name some ``global`` statement declares -> the top-level statements that hold one."""
        if self._global_owners is None:
            index = {id(statement): number for number, statement in enumerate(self.tree.body)}
            self._global_owners = {}
            for line in sorted(self.hit_lines(GLOBAL_STATEMENT)):
                for path in self.paths_at(line):
                    if isinstance(path[-1], ast.Global):
                        top = index[id(path[0])]
                        for name in path[-1].names:
                            self._global_owners.setdefault(name, set()).add(top)
                            if isinstance(path[0], ast.ClassDef):
                                method = path[1] if len(path) > 2 and isinstance(path[1], _FUNCTIONS) else None
                                methods = self.global_methods.get((name, top), [])
                                if methods is not None:
                                    self.global_methods[(name, top)] = methods + [method] if method is not None else None
        return self._global_owners

    def names(self) -> "_Names":
        if self._names is None:
            self._names = _Names(self.tree, walrus=self.walrus)
        return self._names

    def imports(self) -> "_Imports":
        if self._imports is None:
            self._imports = _Imports(self.tree, self.names())
        return self._imports


def _binds(statement: ast.stmt, name: str, allow_import: bool) -> bool:
    """Does the statement itself (not its nested statements) bind ``name`` other than by ``import torch``?"""
    if isinstance(statement, _DEFINITIONS) and statement.name == name:
        return True
    if isinstance(statement, (ast.Global, ast.Nonlocal)) and name in statement.names:
        return True
    if isinstance(statement, ast.Import):
        return any(
            (a.asname or a.name.split(".")[0]) == name
            and not (allow_import and (a.name == name or (a.asname is None and a.name.startswith(name + "."))))
            for a in statement.names
        )
    if isinstance(statement, ast.ImportFrom):
        return any((a.asname or a.name) == name for a in statement.names)
    for handler in getattr(statement, "handlers", ()):
        if handler.name == name:
            return True
    for expression in _own_expressions(statement):
        for node in ast.walk(expression):
            if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
                return True
            if isinstance(node, ast.arg) and node.arg == name:
                return True
            if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name == name:
                return True
            if isinstance(node, ast.MatchMapping) and node.rest == name:
                return True
    if isinstance(statement, _FUNCTIONS):
        arguments = statement.args
        every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
        return any(a is not None and a.arg == name for a in every)
    return False


# --- which top-level definitions the analysis of the kept ones can reach ----------------------------


class _Names:
    """Module-level bindings, by name: how each name is bound at module level."""

    TORCH_IMPORT, IMPORT, DEFINITION, OTHER = "torch-import", "import", "definition", "other"

    def __init__(self, tree: ast.Module, walrus: bool = True) -> None:
        """``walrus``: the module may hold ``:=``; without one, the only expressions that bind a
        module-level name are the targets of statements (a comprehension's names are its own)."""
        self.kinds: dict[str, set[str]] = {}
        self.bound_by: dict[str, list[int]] = {}  # name -> indexes of the top-level statements binding it
        for index, statement in enumerate(tree.body):
            if isinstance(statement, _DEFINITIONS):
                self._add(statement.name, self.DEFINITION, index)
                continue
            pending: list[ast.AST] = [statement]
            while pending:
                node = pending.pop()
                if not walrus:
                    if isinstance(node, ast.expr):
                        continue
                    for target in _statement_targets(node):
                        for name in ast.walk(target):
                            if isinstance(name, ast.Name) and not isinstance(name.ctx, ast.Load):
                                self._add(name.id, self.OTHER, index)
                pending.extend(_children(node))
                if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                    self._add(node.id, self.OTHER, index)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        torch = alias.name == "torch" or alias.name.startswith("torch.")
                        self._add(alias.asname or alias.name.split(".")[0], self.TORCH_IMPORT if torch else self.IMPORT, index)
                elif isinstance(node, ast.ImportFrom):
                    module = node.module or ""
                    torch = node.level == 0 and (module == "torch" or module.startswith("torch."))
                    for alias in node.names:
                        self._add(alias.asname or alias.name, self.TORCH_IMPORT if torch else self.IMPORT, index)
                elif isinstance(node, _DEFINITIONS):
                    self._add(node.name, self.DEFINITION, index)
                elif isinstance(node, ast.ExceptHandler) and node.name:
                    self._add(node.name, self.OTHER, index)
                elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
                    self._add(node.name, self.OTHER, index)
                elif isinstance(node, ast.MatchMapping) and node.rest:
                    self._add(node.rest, self.OTHER, index)

    def _add(self, name: str, kind: str, index: int) -> None:
        self.kinds.setdefault(name, set()).add(kind)
        self.bound_by.setdefault(name, []).append(index)

    def torch_only(self, name: str) -> bool:
        return self.kinds.get(name) == {self.TORCH_IMPORT}


def _statement_targets(node: ast.AST) -> list[ast.expr]:
    """The expressions a statement binds or deletes names through (``a, b = ...``, ``for i in``)."""
    if isinstance(node, (ast.Assign, ast.Delete)):
        return node.targets
    if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
        return [node.target]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [item.optional_vars for item in node.items if item.optional_vars is not None]
    return []


def _traced_names(root: ast.AST, names: _Names,
                  own_names: Callable[[ast.AST], tuple[frozenset[str], frozenset[str]]]) -> set[str]:
    """Module-level names ``root`` uses where an analysis may follow them to other definitions.

    The hazard analysis looks at every use of a module-level name it traces (a read by an
    op that saves its input, ``requires_grad_()``), wherever that use is. It traces the
    targets of writes and the values they were bound from; never a callee, an annotation,
    or the object of an attribute other than a view, an in-place method or ``.data``. A
    name a function, lambda or comprehension binds for itself is no module-level name
    there (``own_names``: :meth:`_Planner.own_names`).
    """
    found: set[str] = set()
    kinds = names.kinds
    stack: list[tuple[ast.AST, frozenset[str]]] = [(root, frozenset())]
    while stack:
        node, local = stack.pop()
        kind = type(node)
        if kind is ast.Name:
            if node.id in kinds and node.id not in local:  # type: ignore[attr-defined]
                found.add(node.id)  # type: ignore[attr-defined]
            continue
        if kind in _OWN_SCOPES:
            # defaults run in the enclosing scope; the body in the function's (decorators and
            # annotations are not traced)
            arguments = node.args  # type: ignore[attr-defined]
            stack.extend((default, local) for default in [*arguments.defaults, *arguments.kw_defaults] if default is not None)
            own, declared = own_names(node)
            inner = (local - declared) | own if declared else local | own
            body = node.body  # type: ignore[attr-defined]
            stack.extend((statement, inner) for statement in (body if type(body) is list else [body]))
            continue
        if kind in _COMPREHENSIONS:
            # the first iterable runs in the enclosing scope; the rest sees the loop names
            generators = node.generators  # type: ignore[attr-defined]
            inner = local.union(*(_names_in(generator.target) for generator in generators))
            stack.append((generators[0].iter, local))
            stack.extend((part, inner) for generator in generators for part in [generator.target, *generator.ifs])
            stack.extend((generator.iter, inner) for generator in generators[1:])
            stack.extend((part, inner) for part in ([node.key, node.value] if kind is ast.DictComp else [node.elt]))  # type: ignore[attr-defined]
            continue
        skip: tuple = _ANNOTATION_FIELDS.get(kind, ())  # type: ignore[assignment]
        for name in _child_fields(kind):
            if name in skip:
                continue
            value = getattr(node, name, None)
            if isinstance(value, list):
                stack.extend((item, local) for item in value if isinstance(item, ast.AST))
            elif isinstance(value, ast.AST):
                if kind is ast.Call and name == "func" and isinstance(value, ast.Name):
                    continue
                if kind is ast.Attribute and isinstance(value, ast.Name):
                    if node.attr not in TRACED_ATTRIBUTES:  # type: ignore[attr-defined]
                        continue
                    if names.torch_only(value.id) and node.attr != "data":  # type: ignore[attr-defined]
                        continue  # `torch.relu_(x)`, `torch.view(x)`: torch functions, which trace their arguments
                stack.append((value, local))
    return found


_OWN_SCOPES = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda})
_COMPREHENSIONS = frozenset({ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp})


def _declared_global(function: ast.AST) -> set[str]:
    """The names ``global`` statements of the function itself declare (not of the functions and
    classes in it, whose declarations are theirs)."""
    found: set[str] = set()
    stack: list[ast.AST] = list(function.body)  # type: ignore[attr-defined]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Global):
            found.update(node.names)
        elif not isinstance(node, _DEFINITIONS):
            stack.extend(child for child in _children(node) if not isinstance(child, ast.expr))
    return found


def plan(source: str, rules: Sequence[Rule], keep_silenced: bool = False, focus: bool = True,
         tree: Optional[ast.Module] = None) -> Optional[Plan]:
    """None when no statement holds a construct any of ``rules`` reports; else what to analyse.

    Raises SyntaxError or ValueError where ``ast.parse`` does (pass ``tree`` if it is parsed).
    """
    if tree is None:
        tree = ast.parse(source)
    units = len(tree.body)
    lines = _code_lines(source)
    if any(rule.code not in KNOWN_RULES for rule in rules):
        return Plan(source, source, 0, units, units, lines)  # a rule this module knows nothing about
    planner = _Planner(source, tree, rules, keep_silenced)
    planner.find(rules)
    if not planner.candidates:
        return None
    whole = Plan(source, source, len(planner.candidates), units, units, lines)
    chosen = whole if not focus else _focused(planner, whole) or whole
    if chosen is not whole and planner.has_global() and not _declarations_kept(chosen.text, source, planner.global_names()):
        chosen = whole
    if len(chosen.text) > PIECE_CHARS:
        chosen.piece_starts = piece_starts(tree.body, chosen.text)
    return chosen


def _declarations_kept(text: str, source: str, names: set[str]) -> bool:
    """Where ``text`` (the focused text) mentions a name a ``global`` statement declares, does it
    keep every such statement of ``source``? (A function left out would hide a binding.)"""
    for name in names:
        if _compiled(_word(name)).search(text) is None:
            continue
        declaration = _compiled(r"(?<![\w.])global[ \t]+[^\n#]*" + _word(name))
        if len(declaration.findall(text)) != len(declaration.findall(source)):
            return False
    return True


#: libcst's parser holds about 500 bytes per character of its input while it runs: a long
#: text is parsed in pieces of about this size, so that the longest file sets no memory peak.
PIECE_CHARS = 60_000


def piece_starts(body: Sequence[ast.stmt], text: str) -> tuple[int, ...]:
    """Offsets in ``text`` where a piece may start: libcst reads the pieces as it reads the whole.

    ``text`` is laid out line for line as the module ``body`` was parsed from (a focused
    text keeps every line). A piece starts at the line after a top-level statement (after a
    stub's own line) when all lines up to the next one are empty or comments in column 0:
    libcst makes those the next statement's leading lines (an indented comment there may end
    the block before it). A piece must not end in empty lines: libcst would make them its footer.
    """
    lines = _LINE.findall(text)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    starts = []
    previous_end = None
    for statement in body:
        first = _first_line(statement)
        if previous_end is not None and first <= len(lines):
            gap = lines[previous_end:first - 1]
            if all(line.startswith("#") or not line.strip("\r\n") for line in gap):
                starts.append(offsets[previous_end])
        end = statement.end_lineno or statement.lineno
        while end > first and not lines[end - 1].strip():
            end -= 1  # a left-out definition: its stub line, then the blanked lines its body had
        previous_end = end
    return tuple(starts)


def _focused(planner: _Planner, whole: Plan) -> Optional[Plan]:
    tree, source = planner.tree, planner.source
    body = tree.body
    definitions = [i for i, s in enumerate(body) if isinstance(s, _DEFINITIONS)]
    kept = {i for i in range(len(body)) if not isinstance(body[i], _DEFINITIONS)}
    sites = {index for index, _ in planner.candidates}
    offsets = _line_offsets(source)
    names = planner.names()

    def unit_text(index: int) -> str:
        statement = body[index]
        return source[offsets[_first_line(statement) - 1]:offsets[min(statement.end_lineno or statement.lineno, len(offsets) - 1)]]

    texts: dict[int, str] = {}

    def mentions(index: int, pattern: re.Pattern[str]) -> bool:
        if index not in texts:
            texts[index] = unit_text(index)
        return pattern.search(texts[index]) is not None

    # The hazard analysis follows a module-level name a site traces to its uses elsewhere, between
    # the binding that reaches the site and the site (hazard._uses): a use there may switch
    # requires_grad on (every traced name), or, for the written tensor itself, save it for backward.
    # A site in module-level code follows every use (rebinding, where a module runs).
    SITE, MODULE, USED = "site", "module", "used"
    candidate_lines: dict[int, list[int]] = {}
    unit_candidates: dict[int, list[_Candidate]] = {}  # in the order of planner.statements[top]
    for top, candidate in planner.candidates:
        candidate_lines.setdefault(top, []).append(candidate.line)
        unit_candidates.setdefault(top, []).append(candidate)
    for found_lines in candidate_lines.values():
        found_lines.sort()
    traced_cache: dict[int, set[str]] = {}

    def traced_from(index: int) -> set[str]:
        """The module-level names an analysis can follow from statement ``index``: in a long
        literal table, only from the elements that hold a candidate (see _element_roots)."""
        if index not in traced_cache:
            roots = _element_roots(body[index], candidate_lines.get(index, []))
            found: set[str] = set()
            for root in roots if roots is not None else [body[index]]:
                found |= _traced_names(root, names, planner.own_names)
            traced_cache[index] = found
        return traced_cache[index]
    kept |= sites
    gf105_units = {index for index, candidate in planner.candidates if candidate.code == "GF105"}
    full_names: set[str] = set()  # followed to every use in the window
    switch_names: set[str] = set()  # followed to `name.requires_grad` uses only
    queue = [(index, SITE if isinstance(body[index], _DEFINITIONS) else MODULE) for index in sorted(sites)]
    seen: set[tuple[int, str]] = set()
    declared = planner.global_owners()

    def keep_owner(name: str, index: int) -> set[str]:
        """Keep the code of ``index`` that declares ``name`` global; the names it traces."""
        kept.add(index)
        methods = planner.global_methods.get((name, index))
        if not isinstance(body[index], ast.ClassDef) or methods is None:
            if isinstance(body[index], ast.ClassDef):
                planner.whole_classes.add(index)
            return traced_from(index)
        # the rest of the class is left out or kept as for any kept class (_left_out_methods)
        planner.class_members.setdefault(index, set()).update(id(method) for method in methods)
        return set().union(*(_traced_names(method, names, planner.own_names) for method in methods))
    while queue:
        index, mode = queue.pop()
        if (index, mode) in seen:
            continue
        seen.add((index, mode))
        written: Optional[set[str]] = None  # names a site's candidates may write into
        if mode == SITE and index not in gf105_units:
            written = set()
            for candidate, statement in zip(unit_candidates[index], planner.statements[index]):
                if candidate.written is not None:
                    written |= candidate.written
                else:  # any name of its statement
                    written.update(_WORDS.findall(source[offsets[statement.lineno - 1]:offsets[min(statement.end_lineno or statement.lineno, len(offsets) - 1)]]))
        pending = {(name, written is None or name in written) for name in traced_from(index)}
        done: set[tuple[str, bool]] = set()
        while pending:
            name, full = pending.pop()
            if (name, full) in done or (name, True) in done:
                continue
            done.add((name, full))
            (full_names if full else switch_names).add(name)
            bindings = names.bound_by.get(name, [])
            if mode != MODULE:
                latest = max((i for i in bindings if i < index), default=-1)
                window = range(latest + 1, index)
                if latest >= 0 and not isinstance(body[latest], _DEFINITIONS):
                    # the value it was bound from: traced as a value (full in a module-level site's chain)
                    pending |= {(n, mode != SITE) for n in traced_from(latest)}
            else:
                window = range(len(body))
                for i in bindings:
                    if not isinstance(body[i], _DEFINITIONS):
                        pending |= {(n, True) for n in traced_from(i)}
            for owner in declared.get(name, ()):
                # A function that declares the name global binds it too, outside the module-level
                # bindings the window starts from: keep it, and follow every name it mentions as
                # a bound value's (as the latest binding's above: to every use only in a module-level chain).
                pending |= {(n, mode != SITE) for n in keep_owner(name, owner)}
            pattern = _compiled(_word(name) if full else _word(name) + _SWITCH)
            for other in window:
                if other not in kept and isinstance(body[other], _DEFINITIONS) and mentions(other, pattern):
                    kept.add(other)
                    if mode == MODULE:
                        queue.append((other, USED))  # a module a site builds may run there: a site of its own
    if declared:
        # A function that declares a name global binds it at module level: where kept code reads
        # the name, keep that function whole, so that libcst sees every binding.
        pending_names = dict(declared)
        grew = True
        while grew:
            grew = False
            for name, owners in list(pending_names.items()):
                pattern = _compiled(_word(name))
                if any(mentions(i, pattern) for i in kept):
                    for owner in owners:
                        keep_owner(name, owner)
                    del pending_names[name]
                    grew = True
    left_out: list[ast.stmt] = [body[i] for i in definitions if i not in kept]
    for index in sorted(kept):
        if isinstance(body[index], ast.ClassDef) and index not in planner.whole_classes:
            follows_values = any(c.code in ("GF105", "GF106") for c in unit_candidates.get(index, ()))
            left_out.extend(_left_out_methods(body[index], planner.class_members.get(index, set()), full_names,
                                              switch_names, index in gf105_units, follows_values, source, offsets))
    tables = _left_out_tables(body, kept, sites, full_names | switch_names, unit_text)
    left_out.extend(tables)
    table_ids = {id(t) for t in tables}
    # A traced name bound at module level only by imports and definitions is a module, function
    # or class: a value in a table that names it is not a tensor any analysis follows.
    valued = {n for n in full_names | switch_names
              if not names.kinds.get(n, {names.OTHER}) <= {names.IMPORT, names.TORCH_IMPORT, names.DEFINITION}}
    elements = _left_out_elements(planner, [i for i in sorted(kept) if id(body[i]) not in table_ids],
                                  candidate_lines, valued, offsets)
    if not left_out and not elements:
        return None
    marker = "gradfix-focus-"
    while marker in source:
        marker += "x"
    stubs = []
    for number, statement in enumerate(sorted(left_out, key=lambda s: s.lineno)):
        if id(statement) in table_ids:
            stub = _table_stub(statement, source, offsets, f"{marker}{number}")
        else:
            stub = _stub(statement, source, offsets, f"{marker}{number}")
        if stub is not None:
            stubs.append(stub)
    top_stubs = sum(1 for stub in stubs if not stub.line[:1].isspace())
    for number, element in enumerate(elements, start=len(left_out)):
        stub = _element_stub(element, source, offsets, f"{marker}{number}")
        if stub is not None:
            stubs.append(stub)
    if not stubs:
        return None
    stubs.sort(key=lambda stub: stub.start)
    pieces = []
    position = 0
    for stub in stubs:
        pieces.append(source[position:stub.start])
        pieces.append(stub.text)
        position = stub.end
    pieces.append(source[position:])
    text = "".join(pieces)
    kept_lines = _code_lines(text) - sum(stub.code_lines for stub in stubs)
    return Plan(source, text, whole.candidates, whole.units, whole.units - top_stubs, kept_lines, stubs)


def _left_out_tables(body: list[ast.stmt], kept: set[int], sites: set[int], traced: set[str],
                     unit_text) -> list[ast.stmt]:
    """Module-level assignments (and expressions) that no analysis of the kept code can read.

    Left out when the statement holds no candidate, binds only plain names, none of which
    any other kept text mentions (a word test over the kept text: strings and comments
    count, which only keeps more), and mentions no name a site traces.
    """
    bound: dict[int, set[str]] = {}
    for i in sorted(kept):
        if i in sites or not isinstance(body[i], (ast.Assign, ast.AnnAssign, ast.Expr)):
            continue
        statement = body[i]
        targets = statement.targets if isinstance(statement, ast.Assign) else \
            [statement.target] if isinstance(statement, ast.AnnAssign) else []
        names: set[str] = set()
        for target in targets:
            if not isinstance(target, ast.Name):
                break
            names.add(target.id)
        else:
            bound[i] = names
    if not bound:
        return []
    # Words of everything that stays (a kept class's left-out methods count too: that only keeps more).
    words: set[str] = set()
    for i in sorted(kept):
        if i not in bound:
            words.update(_WORDS.findall(unit_text(i)))
    own = {i: set(_WORDS.findall(unit_text(i))) for i in bound}
    dropped = {
        i for i in bound
        if own[i].isdisjoint(traced) and "requires_grad" not in own[i]
    }
    words.update(*(own[i] for i in bound if i not in dropped))
    changed = True
    while changed:  # a table that a kept table reads stays, and then what it reads stays
        changed = False
        for i in sorted(dropped):
            if not words.isdisjoint(bound[i]):
                dropped.discard(i)
                words.update(own[i])
                changed = True
    return [body[i] for i in sorted(dropped)]


# A kept module-level statement at least this long is focused inside: the elements of its list,
# tuple, set and dict literals that hold no candidate become `None` (op databases, generated tables).
ELEMENT_STATEMENT_LINES = 50


def _left_out_elements(planner: "_Planner", indices: list[int], candidate_lines: dict[int, list[int]],
                       traced: set[str], offsets: list[int]) -> list[ast.expr]:
    """Multi-line elements of literals in long module-level statements that no analysis reads.

    A literal's elements are independent values: in a :func:`_literal_table`, an element with
    no candidate, no name a site traces, no ``requires_grad`` and no ``:=`` is replaced by ``None``. Call arguments are left
    whole (a call's arguments are read together). ``candidate_lines``: sorted, per statement.
    """
    body = planner.tree.body
    source = planner.source
    found: list[ast.expr] = []
    for index in indices:
        statement = body[index]
        if not _literal_table(statement):
            continue
        lines = candidate_lines.get(index, [])

        def quiet(node: ast.expr) -> bool:
            if (node.end_lineno or node.lineno) == node.lineno or _holds_line(node, lines):
                return False
            segment = source[_char_offset(source, offsets, node.lineno, node.col_offset):
                             _char_offset(source, offsets, node.end_lineno or node.lineno, node.end_col_offset or 0)]
            if "requires_grad" in segment:
                return False
            return not _reads_any(node, traced)

        stack: list[ast.AST] = [statement]
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                elements = list(node.elts)
            elif isinstance(node, ast.Dict):
                elements = list(node.values)
            else:
                elements = []
            if elements:
                for element in elements:
                    if not isinstance(element, ast.Starred) and quiet(element):
                        found.append(element)
                    elif _holds_line(element, lines) or not isinstance(element, ast.Starred):
                        stack.append(element)
                if isinstance(node, ast.Dict):
                    stack.extend(k for k in node.keys if k is not None)
                continue
            if isinstance(node, ast.Call):
                continue  # its arguments are read together; only literals are split
            stack.extend(_children(node))
    found.sort(key=lambda e: (e.lineno, e.col_offset))
    return found


def _reads_any(node: ast.AST, names: set[str]) -> bool:
    """Does ``node`` hold a ``:=``, or a Name from ``names`` that no lambda or comprehension
    inside it binds (an analysis follows module-level names through Name nodes only)?"""
    stack: list[tuple[ast.AST, frozenset[str]]] = [(node, frozenset())]
    while stack:
        current, local = stack.pop()
        if isinstance(current, ast.NamedExpr):
            return True
        if isinstance(current, ast.Name):
            if current.id in names and current.id not in local:
                return True
            continue
        if isinstance(current, ast.Lambda):
            arguments = current.args
            bound = {a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                     arguments.vararg, arguments.kwarg) if a is not None}
            stack.extend((d, local) for d in (*arguments.defaults, *arguments.kw_defaults) if d is not None)
            stack.append((current.body, local | bound))
            continue
        if isinstance(current, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            bound = {n.id for g in current.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
            inner = local | bound
            stack.append((current.generators[0].iter, local))  # the first iterable is evaluated outside
            for number, generator in enumerate(current.generators):
                if number:
                    stack.append((generator.iter, inner))
                stack.extend((condition, inner) for condition in generator.ifs)
            parts = (current.key, current.value) if isinstance(current, ast.DictComp) else (current.elt,)
            stack.extend((part, inner) for part in parts)
            continue
        stack.extend((child, local) for child in _children(current))
    return False


def _literal_table(statement: ast.stmt) -> bool:
    """A long module-level assignment or expression of plain names whose literals can be split."""
    if not isinstance(statement, (ast.Assign, ast.AnnAssign, ast.Expr)):
        return False
    if (statement.end_lineno or statement.lineno) - _first_line(statement) + 1 < ELEMENT_STATEMENT_LINES:
        return False
    targets = statement.targets if isinstance(statement, ast.Assign) else \
        [statement.target] if isinstance(statement, ast.AnnAssign) else []
    if not all(isinstance(t, ast.Name) for t in targets):
        return False  # `a, b = [x, y]`: the elements are the names' values
    # `[nn.Linear(...), nn.ReLU(inplace=True)]`: GF105 reads the items before the module
    return not _builds_inplace_module(statement)


def _element_roots(statement: ast.stmt, lines: list[int]) -> Optional[list[ast.AST]]:
    """What an analysis can reach in a literal table: its targets, and the innermost literal
    elements that hold a candidate (with every non-literal part on the way); None: the whole
    statement (not a literal table). ``lines``: the statement's candidate lines, sorted.

    An element of a list, tuple, set or dict literal is a value of its own: no analysis of a
    candidate in one element reads its siblings (the table's kind, a collection, does not depend
    on them), so names only the other elements mention are not followed.
    """
    if not _literal_table(statement):
        return None
    roots: list[ast.AST] = []
    if isinstance(statement, ast.Assign):
        roots.extend(statement.targets)
    elif isinstance(statement, ast.AnnAssign):
        roots.append(statement.target)
    stack: list[ast.AST] = [statement.value] if statement.value is not None else []  # type: ignore[union-attr]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            elements: list[ast.AST] = list(node.elts)
        elif isinstance(node, ast.Dict):
            elements = [n for n in (*node.keys, *node.values) if n is not None]
        else:
            roots.append(node)
            continue
        stack.extend(e for e in elements if _holds_line(e, lines) or isinstance(e, ast.Starred))
    return roots


def _holds_line(node: ast.AST, lines: list[int]) -> bool:
    """Does ``node`` span one of the (sorted) ``lines``?"""
    at = bisect.bisect_left(lines, node.lineno)
    return at < len(lines) and lines[at] <= (node.end_lineno or node.lineno)


def _builds_inplace_module(statement: ast.stmt) -> bool:
    """Does it construct a module with ``inplace`` (a capitalised callee given ``inplace=``)?"""
    for node in ast.walk(statement):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if any(k.arg == "inplace" for k in node.keywords):
            if callee[:1].isupper():
                return True
        elif node.args and callee in INPLACE_MODULES:  # `nn.ReLU(True)`: inplace by position
            return True
    return False


def _char_offset(source: str, offsets: list[int], line: int, column: int) -> int:
    """The offset in ``source`` of an ast position (its columns count UTF-8 bytes)."""
    start = offsets[line - 1]
    text = source[start:offsets[min(line, len(offsets) - 1)]]
    if text.isascii():
        return start + column
    return start + len(text.encode("utf-8")[:column].decode("utf-8", "replace"))


def _element_stub(element: ast.expr, source: str, offsets: list[int], marker: str) -> Optional[_Stub]:
    """``None`` and a marker comment where the element starts, blank lines for the rest of it."""
    first, last = element.lineno, element.end_lineno or element.lineno
    if last <= first or element.end_col_offset is None:
        return None
    start = _char_offset(source, offsets, first, element.col_offset)
    end = _char_offset(source, offsets, last, element.end_col_offset)
    text = source[start:end]
    breaks = _NEWLINE.findall(text)
    if len(breaks) != last - first:
        return None
    stub_line = f"None  # {marker}"
    return _Stub(start, end, stub_line + "".join(breaks), stub_line)


SELF_ATTRIBUTE = re.compile(r"self(?!\w)(?<!\wself)[ \t]*\.[ \t]*(\w+)")
# `self.a = v`, `self.a: T = v` (and, harmlessly, `{self.a: v}`): where a method may assign the attribute.
SELF_ASSIGNED = re.compile(r"self(?!\w)(?<!\wself)[ \t]*\.[ \t]*(\w+)\s*(?:=(?!=)|:)")
_WORDS = re.compile(r"\w+")


def _left_out_methods(cls: ast.ClassDef, with_candidates: set[int], traced: set[str], switched: set[str],
                      references_matter: bool, follows_values: bool, source: str, offsets: list[int]) -> list[ast.stmt]:
    """The methods of a kept class that no analysis of the kept ones reads.

    The class-wide analyses (modules built in ``__init__``, parameters, buffers) look up, by
    name, the ``self.<name> = value`` assignments and ``register_buffer`` calls anywhere in the
    class; GF105 also looks up every ``self.<name>`` use (where a submodule runs). So the wanted
    attributes start as those the methods with candidates, the class statements and the
    otherwise kept methods mention (a local name there may carry one to a site); a method that
    assigns a wanted attribute (``self.a =``, ``self.a:``) is kept; with ``references_matter``
    (a GF105 candidate) a method that merely mentions one is kept too. Only GF105 and GF106
    follow an assigned value further (through the locals and attributes of the method that
    assigns it): with ``follows_values``, a method kept that way adds the attributes it
    mentions. Methods that register a buffer, use a module-level name an analysis follows to
    every use, or switch ``requires_grad`` on one it follows to its switches, are kept; the
    rest become stubs.
    """
    methods = [m for m in cls.body if isinstance(m, _FUNCTIONS)]
    if not methods:
        return []

    def text(statement: ast.stmt) -> str:
        return source[offsets[_first_line(statement) - 1]:offsets[min(statement.end_lineno or statement.lineno, len(offsets) - 1)]]

    attributes: set[str] = set()
    for statement in cls.body:
        if not isinstance(statement, _FUNCTIONS):
            attributes.update(SELF_ATTRIBUTE.findall(text(statement)))
    pending = []
    for method in methods:
        body = text(method)
        found = set(SELF_ATTRIBUTE.findall(body))
        words = set(_WORDS.findall(body))
        if id(method) in with_candidates or "register_buffer" in body or not traced.isdisjoint(words) \
                or ("requires_grad" in body and any(_compiled(_word(name) + _SWITCH).search(body) for name in switched & words)):
            attributes |= found
        else:
            pending.append((method, found, found if references_matter else set(SELF_ASSIGNED.findall(body))))
    changed = True
    while changed:
        changed = False
        still = []
        for method, found, assigned in pending:
            if assigned & attributes:
                if follows_values and not found <= attributes:
                    attributes |= found
                    changed = True
            else:
                still.append((method, found, assigned))
        pending = still
    return [method for method, _, _ in pending]


def _code_lines(text: str) -> int:
    """Lines that are not blank (what libcst has to read, roughly), whatever the line endings."""
    return len(_CODE_LINE.findall(text))


_CODE_LINE = re.compile(r"\S[^\r\n]*")  # from a line's first non-blank character to its end


def _table_stub(statement: ast.stmt, source: str, offsets: list[int], marker: str) -> Optional[_Stub]:
    """Blank lines for a left-out module-level statement, and a marker comment on its first line."""
    first, last = _first_line(statement), statement.end_lineno or statement.lineno
    start, end = offsets[first - 1], offsets[min(last, len(offsets) - 1)]
    text = source[start:end]
    lines = _LINE.findall(text)
    if len(lines) != last - first + 1 or statement.col_offset != 0:
        return None
    stub_line = f"# {marker}"
    return _Stub(start, end, _blanked(lines, 0, stub_line), stub_line)


_DEF_LINE = re.compile(r"(?:async[ \t]+)?def[ \t]+(\w+)|class[ \t]+(\w+)")


def _stub(statement: ast.stmt, source: str, offsets: list[int], marker: str) -> Optional[_Stub]:
    """``def name(): pass`` on the definition's ``def`` line when that is its last; else
    ``def name():`` whose body is a triple-quoted string holding the line breaks of the lines after it."""
    first, keyword, last = _first_line(statement), statement.lineno, statement.end_lineno or statement.lineno
    start, end = offsets[first - 1], offsets[min(last, len(offsets) - 1)]
    text = source[start:end]
    lines = _LINE.findall(text)
    if len(lines) != last - first + 1:
        return None
    header = lines[keyword - first]
    indent = statement.col_offset
    match = _DEF_LINE.match(header, indent)
    if match is None or (match.group(1) or match.group(2)) != statement.name or header[:indent].strip(" \t"):
        return None  # the name is not on the keyword's line: keep the definition
    suffix = ":" if isinstance(statement, ast.ClassDef) else "():"
    at = keyword - first
    if at == len(lines) - 1:  # the definition ends on its keyword's line
        stub_line = f"{header[:indent]}{match.group(0)}{suffix} pass  # {marker}"
        return _Stub(start, end, _blanked(lines, at, stub_line), stub_line)
    # The lines after the keyword's go into one string, the stub's body: one token where
    # blank lines would each be a node for libcst to build and every walk to pass.
    stub_line = f'{header[:indent]}{match.group(0)}{suffix} """{marker}'
    text = _blanked(lines[:at], -1, "") + stub_line + "".join(_ending(line) for line in lines[at:-1]) + '"""' + _ending(lines[-1])
    return _Stub(start, end, text, stub_line, code_lines=2)


def _ending(line: str) -> str:
    return line[len(line.rstrip("\r\n")):]


def _blanked(lines: list[str], at: int, stub_line: str) -> str:
    """``lines`` emptied, keeping their endings, with ``stub_line`` on line ``at`` (-1: none)."""
    return "".join((stub_line if number == at else "") + line[len(line.rstrip("\r\n")):]
                   for number, line in enumerate(lines))
