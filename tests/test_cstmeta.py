"""gradfix.codemods.cstmeta against libcst's own providers: the same metadata, node by node."""

from __future__ import annotations

import textwrap
from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import (
    ExpressionContext,
    ExpressionContextProvider,
    ParentNodeProvider,
    PositionProvider,
    ScopeProvider,
)

from gradfix.codemods import cstmeta

ROOT = Path(__file__).resolve().parent.parent

# Every construct that stores to a name, and the ones that load inside a target.
STORES = textwrap.dedent('''
    import os.path as osp, sys
    from typing import (Any as A, Optional)
    from . import *
    a = b = c.d = e[f] = 1
    (g, [h, *i]), j.k[l] = m
    n: int = 2
    o: "str"
    p += q
    if (r := s) and [t := u for v in w if (x := v)]:
        pass
    for y, (z, *aa) in bb:
        del cc, dd[ee]
    with ff as gg, hh() as (ii, jj):
        pass
    try:
        pass
    except KK as kk:
        pass
    class LL(MM, metaclass=NN):
        oo = 1
        def pp(self, qq: int = rr, *ss, tt, **uu) -> vv:
            global ww
            nonlocal_ = lambda xx, yy=zz: xx + yy
            return {aaa: bbb for aaa, bbb in ccc}, (ddd for ddd in eee), {fff for fff in ggg}
    async def hhh():
        async for iii in jjj:
            async with kkk as lll:
                await mmm
    match nnn:
        case [ooo, *ppp] | {"q": qqq, **rrr} if sss:
            pass
        case Point(x=ttt) as uuu:
            pass
    print(f"{vvv!r:>{www}} {xxx=}")
''')


def sources() -> list[tuple[str, str]]:
    found = [("stores", STORES)]
    for path in sorted((ROOT / "fixtures").rglob("*.py")):
        found.append((f"{path.parent.name}/{path.name}", path.read_text(encoding="utf-8")))
    torch = pytest.importorskip("torch")
    base = Path(torch.__file__).parent
    # Long modules with every kind of statement, decorators, f-strings, comments, CRLF-free tables.
    for relative in ("nn/modules/module.py", "optim/adam.py", "_tensor.py", "nn/functional.py"):
        found.append((relative, (base / relative).read_text(encoding="utf-8")))
    return found


SOURCES = sources()
# Line breaks inside tokens and between units: where Positions' units start (module_facts counts them).
UNITS = (
    "# header\n\n"
    'x = f"""a\n{b}\nc""" + \\\n  \'\'\'d\ne\'\'\'\n'
    "class A(B, \\\n        C):  # after the colon\n"
    "\t# first\n\n"
    "\tz = (1,\n\t     2)\n"
    "\tclass Inner:\n"
    '\t  """doc\n\n\t  string"""\n'
    "\t  @deco  # why\n\n"
    "\t  def m(self): return f'{self!r:>{3}}'\n"
    "\t    # a comment deeper than the block\n"
    "\t# between\n"
    "\tclass Short: pass\n"
    "\tdef after(self):\n\t\treturn 1\n"
    "  # indented comment after the class\n"
    "def f():\n    class Local:\n        y = 2\n    return Local\n"
    # blocks inside functions: their statements are units too, through else/elif/except/finally
    "async def g(a):\n"
    "  if a:\n     try:\n         x = '''1\n2'''\n     except (E,\n             F) as e:\n         pass\n"
    "     finally:\n         y = 1 + \\\n             2\n"
    "  elif b:  # elif\n      async with c as d:\n          # inside\n\n          z = 3\n"
    "  else:\n      for i in r:\n          continue\n      else:\n          while i:\n              break\n"
    "  match a:\n      case [1, *rest]:\n          w = rest\n      case _:\n          @deco\n"
    "          def inner(): return 4\n"
    "  return (lambda: 5)\n"
)
CRLF = [("crlf", STORES.replace("\n", "\r\n")), ("backslash", "x = 1 + \\\n    2\ny = '''a\nb''' + \"c\"\n"),
        ("units", UNITS), ("units-crlf", UNITS.replace("\n", "\r\n"))]


@pytest.mark.parametrize("name,source", SOURCES + CRLF, ids=[n for n, _ in SOURCES + CRLF])
def test_metadata_equals_libcsts(name, source):
    module = cst.parse_module(source)
    wrapper = cst.MetadataWrapper(module, unsafe_skip_copy=True)
    expected = wrapper.resolve_many((PositionProvider, ScopeProvider, ExpressionContextProvider, ParentNodeProvider))

    spans = cstmeta.positions(module)
    want = expected[PositionProvider]
    assert spans.keys() == {id(node) for node in want}
    assert all(cstmeta.code_range(spans[id(node)]) == want[node] for node in want)

    parents, stores, _, _ = cstmeta.module_facts(module)
    assert parents == {id(child): parent for child, parent in expected[ParentNodeProvider].items()}
    stored = {n for n, c in expected[ExpressionContextProvider].items()
              if c is ExpressionContext.STORE and isinstance(n, cst.Name)}
    assert set(stores) == stored
    assert stored or "def" not in source

    scopes = cstmeta.scopes(module, stores)
    want_scopes = expected[ScopeProvider]
    tree = set(expected[ParentNodeProvider]) | {module}  # string annotations are parsed anew on each run: their nodes differ
    # whitespace, punctuation and operators are left out (nothing in them is scoped); every other node is there
    assert not any(type(n) in cstmeta._NOT_SCOPED for n in scopes)
    assert {n for n in scopes if n in tree} == {n for n in want_scopes if n in tree and type(n) not in cstmeta._NOT_SCOPED}
    tree = {n for n in tree if type(n) not in cstmeta._NOT_SCOPED}
    pairs: dict[object, object] = {}
    for node in (n for n in tree if n in want_scopes):  # the same partition of nodes into scopes
        assert pairs.setdefault(want_scopes[node], scopes[node]) is scopes[node]
    assert len(set(map(id, pairs.values()))) == len(pairs)
    for old, new in pairs.items():
        if old is None:
            continue
        assert type(old) is type(new)
        assert _assignments(old, tree) == _assignments(new, tree)
        assert _accesses(old, tree) == _accesses(new, tree)


def _key(node, tree):
    return id(node) if node in tree else (type(node).__name__, getattr(node, "value", None))


def _assignments(scope, tree) -> set:
    return {(a.name, _key(a.node, tree), type(a).__name__) for a in scope.assignments}


def _accesses(scope, tree) -> set:
    return {(_key(a.node, tree), a.is_annotation, a.is_type_hint,
             tuple(sorted(str(_key(r.node, tree)) for r in a.referents if hasattr(r, "node"))))
            for a in scope.accesses}


class Recorder(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []

    def on_visit(self, node):
        self.events.append(("visit", id(node)))
        return not isinstance(node, cst.Lambda)  # a visitor that skips a subtree

    def on_leave(self, original_node):
        self.events.append(("leave", id(original_node)))

    def on_visit_attribute(self, node, attribute):
        self.events.append(("in", id(node), attribute))

    def on_leave_attribute(self, original_node, attribute):
        self.events.append(("out", id(original_node), attribute))


@pytest.mark.parametrize("name,source", SOURCES[:1] + SOURCES[-4:], ids=[n for n, _ in SOURCES[:1] + SOURCES[-4:]])
def test_read_only_visits_make_the_same_calls_in_the_same_order(name, source):
    module = cst.parse_module(source)
    slow = Recorder()
    module.visit(slow)
    fast = Recorder()
    with cstmeta.read_only_visits():
        assert module.visit(fast) is module
    assert fast.events == slow.events
    assert len(slow.events) > 100


def test_read_only_visits_leave_transformers_alone_and_undo_the_patch():
    original = cst.CSTNode.visit

    class Rename(cst.CSTTransformer):
        def leave_Name(self, original_node, updated_node):
            return updated_node.with_changes(value=updated_node.value.upper())

    module = cst.parse_module("a = b\n")
    with cstmeta.read_only_visits():
        with cstmeta.read_only_visits():
            assert module.visit(Rename()).code == "A = B\n"
        assert cst.CSTNode.visit is not original
    assert cst.CSTNode.visit is original


class Typed(cst.CSTVisitor):
    """A visitor with libcst's named hooks (looked up once per node type by the fast walk)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []

    def visit_Name(self, node):
        self.events.append(("name", node.value))

    def visit_Attribute(self, node):
        self.events.append(("attribute", id(node)))
        return False

    def visit_FunctionDef(self, node):
        self.events.append(("def", node.name.value))
        return not node.name.value.startswith("_")

    def leave_Call(self, original_node):
        self.events.append(("call", id(original_node)))

    def visit_Call_func(self, node):
        self.events.append(("func", id(node)))

    def leave_Call_args(self, node):
        self.events.append(("args", id(node)))


class OnInstance(Typed):
    def __init__(self) -> None:
        super().__init__()
        self.visit_Integer = lambda node: self.events.append(("integer", node.value))


@pytest.mark.parametrize("visitor_type", [Typed, OnInstance])
@pytest.mark.parametrize("name,source", SOURCES[:1] + SOURCES[-2:], ids=[n for n, _ in SOURCES[:1] + SOURCES[-2:]])
def test_named_hooks_are_called_as_libcst_calls_them(name, source, visitor_type):
    module = cst.parse_module(source + "\nx = 1\n")
    slow = visitor_type()
    module.visit(slow)
    fast = visitor_type()
    with cstmeta.read_only_visits():
        module.visit(fast)
    assert fast.events == slow.events
    assert {event[0] for event in slow.events} >= {"name", "attribute", "def", "call", "func", "args"}


def test_visitor_classes_made_per_call_are_not_kept():
    """A class defined in a function holds that call's variables (a tree, a context): it must go with the call."""
    import gc
    import weakref

    class Held:  # stands for what such a visitor's methods hold on to
        pass

    def count_names(source: str) -> tuple[int, "weakref.ref"]:
        module = cst.parse_module(source)
        held = Held()

        class Names(cst.CSTVisitor):
            found = 0

            def visit_Name(self, node):
                Names.found += 1 if held is not None else 0

        with cstmeta.read_only_visits():
            module.visit(Names())
        return Names.found, weakref.ref(held)

    found, witness = count_names("a = b + c\n")
    gc.collect()
    assert found == 3
    assert witness() is None


@pytest.mark.parametrize("name,source", SOURCES + CRLF, ids=[n for n, _ in SOURCES + CRLF])
def test_positions_a_unit_at_a_time_equal_libcsts(name, source):
    import random

    module = cst.parse_module(source)
    want = cst.MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    facts = cstmeta.module_facts(module)
    parents = facts.parents

    def in_a_statement(node) -> bool:  # a method, a function or a simple statement: within a unit
        while node is not None:
            if isinstance(node, (cst.FunctionDef, cst.SimpleStatementLine)):
                return True
            node = parents.get(id(node))
        return False

    nodes = [n for n in want if in_a_statement(n)]
    random.Random(len(source)).shuffle(nodes)
    lazy = cstmeta.Positions(module, facts)
    for node in nodes[:300]:  # a unit at a time, in no particular order
        assert cstmeta.code_range(lazy[node]) == want[node], (name, type(node).__name__)
    assert not lazy._everything
    lazy = cstmeta.Positions(module, facts)
    for node in nodes:  # every node in a statement, each from its innermost unit first
        assert cstmeta.code_range(lazy[node]) == want[node], (name, type(node).__name__)
    assert not lazy._everything
    for node in want:  # then every node, the class headers and the module too
        assert cstmeta.code_range(lazy[node]) == want[node], (name, type(node).__name__)


def test_unvalidated_nodes_skip_validation_in_this_thread_only():
    import threading

    from libcst._nodes.base import CSTNode

    original = CSTNode.__post_init__
    with pytest.raises(cst.CSTValidationError):
        cst.Name("")
    seen_elsewhere: list[BaseException] = []

    def build_elsewhere() -> None:
        try:
            cst.Name("")
        except cst.CSTValidationError as error:
            seen_elsewhere.append(error)

    with cstmeta.unvalidated_nodes():
        with cstmeta.unvalidated_nodes():  # nested uses share the patch
            assert cst.Name("").value == ""  # not checked here
        assert cst.Name("").value == ""
        other = threading.Thread(target=build_elsewhere)
        other.start()
        other.join()
        assert len(seen_elsewhere) == 1  # another thread still validates
        module = cst.parse_module("x = [1,\n  2]  # c\n")
    assert module.deep_equals(cst.parse_module("x = [1,\n  2]  # c\n"))
    assert CSTNode.__post_init__ is original
    with pytest.raises(cst.CSTValidationError):
        cst.Name("")


@pytest.mark.parametrize("name,source", SOURCES, ids=[n for n, _ in SOURCES])
def test_collected_nodes_come_in_a_visits_order(name, source):
    """The rules run on module_facts' collected nodes instead of a visit: same nodes, same order."""
    module = cst.parse_module(source)
    wanted = frozenset({cst.Call, cst.Assign, cst.AugAssign, cst.Name, cst.Attribute, cst.Decorator, cst.Param})
    visited: list[cst.CSTNode] = []

    class Visit(cst.CSTVisitor):  # libcst's own visit (outside read_only_visits)
        def on_visit(self, node: cst.CSTNode) -> bool:
            if type(node) in wanted:
                visited.append(node)
            return True

    module.visit(Visit())
    collected = cstmeta.module_facts(module, wanted).collected
    assert len(collected) == len(visited) > 0
    assert all(a is b for a, b in zip(collected, visited))
