"""The pre-screen (codemods/prescreen.py) changes how much libcst reads, never what is found.

Every test compares the focused analysis (the default) with ``focus=False``, which runs every
rule over the whole file with libcst: findings, fixed text, fixes counted, remaining findings
and errors must be identical.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from fixture_files import all_fixtures

from gradfix.codemods import ALL_RULES, Level, SourceSyntaxError, check_source, fix_source
from gradfix.codemods import prescreen
from gradfix.codemods.engine import select_rules

ROOT = Path(__file__).resolve().parent.parent


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def outcome(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except SourceSyntaxError as error:
        return ("syntax error", error.message, error.line, error.col)


def check_both(source: str, **kwargs) -> list:
    focused = outcome(check_source, source, "mod.py", **kwargs)
    whole = outcome(check_source, source, "mod.py", focus=False, **kwargs)
    assert focused == whole
    return whole


def fix_both(source: str, **kwargs):
    focused = outcome(fix_source, source, "mod.py", **kwargs)
    whole = outcome(fix_source, source, "mod.py", focus=False, **kwargs)
    assert focused == whole
    return whole


def assert_same(source: str, fix_modes=((False, Level.ERROR), (True, Level.WARNING))) -> None:
    for keep_silenced in (False, True):
        check_both(source, keep_silenced=keep_silenced)
    for unsafe, level in fix_modes:
        fix_both(source, unsafe_fixes=unsafe, level=level)


def planned(source: str, keep_silenced: bool = False):
    return prescreen.plan(source, select_rules(), keep_silenced)


def left_out(plan, header: str) -> bool:
    """Is the definition that starts with ``header`` (``def name``) a stub in the focused text?"""
    return any(line.lstrip().startswith(header + ("():" if header.startswith("def ") else ":")) and "gradfix-focus-" in line
               for line in plan.text.splitlines())


# --- the shipped examples and fixtures -----------------------------------------------------------------

FIXTURES = all_fixtures()


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.id for f in FIXTURES])
def test_fixture_same_as_whole_file(fixture):
    source = fixture.path.read_text(encoding="utf-8")
    assert_same(source, fix_modes=((True, Level.WARNING),))
    if fixture.fixed_path is not None:
        check_both(fixture.fixed_path.read_text(encoding="utf-8"), keep_silenced=True)


EXAMPLES = [(rule, index, example) for rule in ALL_RULES for index, example in enumerate(rule.examples)]


@pytest.mark.parametrize("rule,index,example", EXAMPLES, ids=[f"{r.code}-{i}" for r, i, _ in EXAMPLES])
def test_rule_example_same_as_whole_file(rule, index, example):
    for text in (example.before, example.after or example.before):
        for keep_silenced in (False, True):
            check_both(text, keep_silenced=keep_silenced)
    check_both(example.before, select=(rule.code,))
    fix_both(example.before, select=(rule.code,), unsafe_fixes=example.unsafe_fixes,
             level=Level.WARNING if example.fix_warnings else Level.ERROR)


# --- definitions left out, and what they must still provide ------------------------------------------

ALIASES = src("""
    import torch
    import torch.nn.functional as F
    from torch import relu_ as r

    G = torch.nn.functional


    def unrelated(a):
        return a + 1


    def f(x):
        y = torch.sigmoid(x)
        F.relu_(y)
        G.relu_(y)
        r(torch.exp(x))
        return y


    def later(z):
        return z * 2
""")

MODULE_SEQUENTIAL = src("""
    import torch
    from torch import nn

    block = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.ReLU(inplace=True))
    act = nn.ReLU(inplace=True)


    def other():
        return 1


    def run(x):
        h = torch.sigmoid(x)
        return act(block(h))


    def unrelated(q):
        return q
""")

CLASS_MODULES = src("""
    import torch
    from torch import nn


    class Helper:
        def method(self):
            return [1, 2]


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.ReLU(inplace=True)
            self.sig = nn.Sigmoid()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            h = self.sig(self.fc(x))
            h = self.act(h)
            h.mul_(2)
            self.w.data.mul_(0.5)
            return h

        class Inner:
            def go(self, t):
                t += 1
                return t


    def unrelated():
        return Helper().method()
""")

DECORATORS = src("""
    import functools
    import torch


    def deco(fn):
        return fn


    @deco
    @functools.lru_cache(
        maxsize=None,
    )
    def cached(n):
        return n


    @torch.no_grad()
    def update(p, g):
        p.add_(g)


    @deco
    def step(x):
        y = torch.tanh(x)
        y.add_(1)
        return y


    class Optim(torch.optim.Optimizer):
        @torch.no_grad()
        def step(self):
            for p in self.params:
                p.add_(1)


    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.mul_(2)
            return x


    def reset_parameters(w):
        w.normal_()


    def lam(x):
        with torch.no_grad():
            f = lambda: torch.sigmoid(x).mul_(2)
        return f
""")

MAIN_AND_TYPE_CHECKING = src("""
    from typing import TYPE_CHECKING

    import torch

    if TYPE_CHECKING:
        from torch import Tensor


    def helper(t: "Tensor") -> "Tensor":
        return t * 2


    def unrelated():
        return 0


    if __name__ == "__main__":
        x = torch.randn(3, requires_grad=True)
        y = torch.sigmoid(x)
        y += 1
        y.sum().backward()
""")

GLOBAL_TRACED = src("""
    import torch

    W = torch.randn(3)


    def before(x):
        return x


    def uses(x):
        return x @ W


    def g(x):
        W.add_(x)
        return W


    def after(x):
        return x @ W
""")

GLOBAL_STATEMENT = src("""
    import torch

    state = None


    def setup():
        global state
        state = torch.sigmoid(torch.randn(3))


    def unrelated():
        return 1


    def g():
        state.mul_(2)
""")

READ_AT_THE_SITE = src("""
    import torch

    SCALE = torch.ones(3)


    def reads():
        return SCALE * 2


    def flips():
        SCALE.requires_grad_()


    def site(x):
        y = torch.sigmoid(x)
        y.mul_(SCALE)
        return y
""")

GLOBAL_OWNER_READS = src("""
    import torch

    state = None
    LIMIT = torch.ones(3)


    def setup():
        global state
        state = torch.sigmoid(torch.randn(3)) * LIMIT


    def reads_limit():
        return LIMIT * 2


    def g():
        state.mul_(2)
""")

CLASS_DECLARES_GLOBAL = src("""
    import torch

    _cache = None


    class Runner:
        def reset(self):
            global _cache
            _cache = torch.zeros(3)

        def describe(self):
            return "runner"

        def step(self, x):
            y = torch.sigmoid(x)
            y.mul_(_cache)
            return y
""")

LOCAL_SHADOWS_MODULE_NAME = src("""
    import torch

    size = torch.ones(3)
    t = torch.ones(3)


    def reads_size():
        return size * 2


    def reads_t():
        return t * 2


    def site(x):
        size = torch.sigmoid(x)
        size.mul_(sum(t for t in x))
        return size
""")

GLOBAL_IN_A_NESTED_FUNCTION = src("""
    import torch

    W = torch.ones(3)


    def reads():
        return W * 2


    def outer(x):
        W = x

        def inner():
            global W
            W.mul_(2)
        return inner, W
""")

FRESH_NAME = src("""
    import torch


    def other():
        h_value = 3
        return h_value


    def f(a, w):
        h = torch.tanh(a)
        h[1] = torch.tanh(h[0] @ w)
        return h


    def unrelated():
        return 4
""")

IMPORT_ADDED = src("""
    from torch import nn
    import torch.nn.functional as F


    def unrelated():
        pass


    class M(nn.Module):
        def forward(self, x):
            y = F.sigmoid(x)
            y.zero_()
            return y


    def tail():
        return 2
""")

TORCH_REBOUND = src("""
    import torch


    def f(torch, x):
        with torch.no_grad():
            y = x.exp()
            y.add_(1)
        return y


    def unrelated():
        return 3


    def g(x):
        with torch.no_grad():
            y = x.exp()
            y.add_(1)
        return y
""")

FAR_ARGUMENTS = src("""
    import torch
    from torch import nn
    from torch.nn import functional as Fn


    def unrelated():
        return 0


    def f(a, b, c):
        torch.add(a, b,  # the output
                  out=c)
        d = torch.sigmoid(a)
        return Fn.relu(d, """ + " " * 250 + """True)


    block = nn.Sequential(nn.Tanh(), nn.ReLU(
        # a long comment that pushes the positional inplace flag far away from the call's name, far away
        True))
""")

KINDS = src("""
    import torch
    from torch import Tensor


    def annotated(x: Tensor, k: int):
        total = 0
        total = total + x
        total += 1
        k += 1
        return total


    def annotated_local(a):
        h: Tensor = a.exp()
        h += 1
        n: int = 0
        n += 1
        return h


    def loops(x):
        for t in torch.sigmoid(x):
            t += 1
        for i in range(3):
            i += 1
        for j, u in enumerate(x):
            j += 1
            u += 1
        return x


    def unpacked(x):
        a, b = torch.chunk(torch.tanh(x), 2)
        a += 1
        c, d = 0, torch.exp(x)
        d += 1
        c += 1
        p = q = torch.sigmoid(x)
        p += 1
        if (n := torch.exp(x)) is not None:
            n += 1
        return a, b, d, p, q


    def containers(x, buffers, m):
        d = {}
        mask = x > 0
        d[mask] = 0
        buffers[mask] = 0
        buffers[:, 0] = x
        buffers[:, 1] = 0
        counts = [0, 0]
        counts[0] += 1
        key = m.bool()
        buffers[key] = 1
        buffers[~m] = 2
        buffers[m & mask] = 3
        self_len = len(x)
        self_len += 1
        return d


    def closures(x):
        acc = torch.exp(x)

        def inner():
            nonlocal acc
            acc += 1

        inner()
        return acc


    class Holder:
        scale = torch.ones(3)
        scale += 1
        count = 0
        count += 1

        def method(self, x):
            self.count += 1
            self.total += x
            self.buf[x > 0] = 0
            return x
""")

METHODS = src("""
    import torch
    from torch import nn

    SCALE = torch.ones(4)


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.gate = nn.Sigmoid()
            self.act = nn.ReLU(inplace=True)
            self.register_buffer("mask", torch.ones(4))

        def extra_repr(self):
            return "block"

        @property
        def width(self):
            return 4

        def reads_scale(self, x):
            return x @ SCALE

        def forward(self, x):
            h = self.gate(self.fc(x))
            h = self.act(h)
            h.mul_(self.mask)
            SCALE.add_(1)
            return h

        def later(self, x):
            return self.fc(x)

        async def unrelated(self):
            return [
                1,
            ]
""")

SWITCHED = src("""
    import torch

    V = torch.zeros(3)


    def flip():
        V.requires_grad_()


    def reads():
        return V * 2


    def site():
        y = V.view(3)
        y.add_(1)
        return y
""")

SWITCHED_IN_A_CLASS = src("""
    import torch

    V = torch.zeros(3)


    class Box:
        def flip(self):
            V.requires_grad_()

        def mentions(self, x):
            x.requires_grad = True
            return V * 2

        def site(self):
            y = V.view(3)
            y.add_(1)
            return y
""")

ATTRIBUTE_CHAIN = src("""
    import torch
    from torch import nn


    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = nn.Parameter(torch.ones(3))
            self.k = 2

        def set_k(self, k):
            self.k = k

        def make_base(self):
            self.base = nn.Parameter(torch.zeros(3))

        def build(self):
            self.g = self.base.view(3)

        def set_unrelated(self):
            self.z = torch.ones(3)

        def reads(self, x):
            return x * self.h + self.z

        def forward(self, x):
            self.h.add_(x)
            torch.mul(x, self.k, out=self.g)
            return self.h
""")

ASSIGNED_FROM_ANOTHER_ATTRIBUTE = src("""
    import torch
    from torch import nn


    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = self.w * 2

        def set_w(self):
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            self.h.add_(x)
            return self.h
""")

CALLEES = src("""
    import torch
    import torch.nn as nn
    from functools import partial
    from torch.testing import make_tensor
    from helpers import build


    def made_by_testing(n):
        inp = make_tensor(n)  # torch.testing: TensorInference cannot tell
        inp[2] = float("nan")
        return inp


    def made_by_partial(n):
        make = partial(make_tensor, dtype=torch.float)  # a local name, bound once, not to a module
        t = make(n)
        t[0] = 1
        return t


    def made_elsewhere(n):
        table = build(n)
        table[0] = 1
        return table


    def made_by_torch(x):
        y = torch.sigmoid(x)
        y[0] = 1
        return y


    def shadowed(x, make_tensor):
        y = make_tensor(x)
        y[0] = 1
        return y


    def built_module(x):
        layer = nn.Linear(3, 3)
        h = layer(x).sigmoid()
        h[0] = 1
        return h


    def tensor_method(x):
        y = torch.exp(x).clone()
        y[0] = 1
        return y
""")


# Names a function does not bind itself: libcst's scope answers with the enclosing function's
# bindings, else the module's, never a class body's.
ENCLOSING_NAMES = src("""
    import torch
    from typing import Dict

    REGISTRY: Dict[str, int] = {}
    TABLE = {}
    COUNT = 0
    WEIGHT = torch.zeros(3, requires_grad=True)
    OTHER = compute_somewhere()
    name = "x"
    name += "y"


    def register(key, value):
        REGISTRY[key] = value
        TABLE[key] = value


    def bump_module_tensor(x):
        WEIGHT[0] = x.sum()
        return WEIGHT


    def bump_unknown(x):
        OTHER[x > 0] = 0
        return OTHER


    def outer(x):
        seen = {}
        acc = torch.exp(x)
        depth = 0

        def inner(k, v):
            seen[k] = v
            acc[0] = v
            return depth

        inner(0, x)
        return acc


    def rebound_inside(a):
        x = 0
        y = 0

        def reset():
            nonlocal x
            try:
                pass
            except ValueError:
                nonlocal y
            x = torch.sigmoid(a)
            y = torch.exp(a)

        def bump():
            y[0] = 1

        reset()
        bump()
        x += 1
        return x, y


    class Holder:
        cache = torch.zeros(2)

        def method(self, x):
            cache[0] = x
            return x


    def renamed(x):
        text = "a"
        text += name
        return text + x
""")

CASES = {
    "callees": CALLEES,
    "switched": SWITCHED,
    "kinds": KINDS,
    "methods": METHODS,
    "aliases": ALIASES,
    "module-sequential": MODULE_SEQUENTIAL,
    "class-modules": CLASS_MODULES,
    "decorators": DECORATORS,
    "main-and-type-checking": MAIN_AND_TYPE_CHECKING,
    "global-traced": GLOBAL_TRACED,
    "global-statement": GLOBAL_STATEMENT,
    "fresh-name": FRESH_NAME,
    "import-added": IMPORT_ADDED,
    "torch-rebound": TORCH_REBOUND,
    "far-arguments": FAR_ARGUMENTS,
    "attribute-chain": ATTRIBUTE_CHAIN,
    "enclosing-names": ENCLOSING_NAMES,
}


@pytest.mark.parametrize("name", list(CASES))
def test_synthetic_case_same_as_whole_file(name):
    assert_same(CASES[name])


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_line_endings_same_as_whole_file(name, newline):
    assert_same(CASES[name].replace("\n", newline), fix_modes=((True, Level.WARNING),))


def test_tabs_and_no_final_newline_same_as_whole_file():
    source = CLASS_MODULES.replace("    ", "\t").rstrip("\n")
    assert_same(source)
    assert_same(ALIASES + "\n   \n  ")  # whitespace-only lines at the end, no final newline


def test_cases_find_something_and_leave_definitions_out():
    """The synthetic cases exercise focusing: findings exist and some definitions are stubs."""
    for name in ("aliases", "module-sequential", "class-modules", "decorators", "global-traced", "fresh-name",
                 "import-added", "torch-rebound", "far-arguments", "methods"):
        source = CASES[name]
        assert check_source(source, keep_silenced=True), name
        plan = planned(source)
        assert plan is not None and plan.focused, name


def test_calls_that_are_not_tensors_leave_their_definitions_out():
    """Callees resolved through the imports: a helper's or torch.testing's result is not written
    into as a tensor; torch's results, a shadowing local name and a module's output are."""
    plan = planned(CALLEES)
    assert plan is not None and plan.focused
    kept = {line.split("(")[0][4:] for line in plan.text.splitlines() if line.startswith("def ") and "gradfix-focus" not in line}
    assert kept == {"made_by_torch", "shadowed", "built_module", "tensor_method"}
    assert {f.line for f in check_source(CALLEES)} == {29, 42}  # made_by_torch, built_module


def test_names_bound_in_enclosing_scopes_are_read_there():
    """A dict the module binds is no tensor; a tensor the module or an enclosing function binds, a
    value of unknown kind with a mask index, and a class attribute read as a plain name (the
    class body is not the method's scope) stay candidates."""
    plan = planned(ENCLOSING_NAMES)
    assert plan is not None and plan.focused
    kept = {re.match(r"(?:def|class) (\w+)", line).group(1) for line in plan.text.splitlines()
            if line.startswith(("def ", "class ")) and "gradfix-focus" not in line}
    assert kept == {"bump_module_tensor", "bump_unknown", "outer", "rebound_inside", "Holder"}
    # a nonlocal in an inner function binds the enclosing function's name too
    assert {f.line for f in check_source(ENCLOSING_NAMES)} == {19, 24, 35, 56, 60}


def test_far_arguments_are_found():
    codes = sorted(f.code for f in check_source(FAR_ARGUMENTS))
    assert codes == ["GF105", "GF105", "GF106"], codes


def test_traced_global_keeps_the_definition_that_reads_it():
    plan = planned(GLOBAL_TRACED)
    assert not left_out(plan, "def uses") and "return x @ W" in plan.text.split("def g")[0]  # uses() is kept
    assert left_out(plan, "def before") and left_out(plan, "def after")
    finding = check_source(GLOBAL_TRACED)[0]
    assert finding.level is Level.ERROR and "(line 11)" in finding.message  # the read in uses()


def test_methods_no_kept_method_reads_become_stubs():
    plan = planned(METHODS)
    stubbed = {stub.line.split("(")[0].strip() for stub in plan.stubs}
    assert stubbed == {"def extra_repr", "def width", "async def unrelated"}, stubbed
    fixed = fix_source(METHODS, unsafe_fixes=True, level=Level.WARNING)
    assert fixed.applied and "def extra_repr(self):\n        return \"block\"" in fixed.source


def test_methods_that_only_read_wanted_attributes_become_stubs():
    """Without a GF105 candidate, only methods that assign a wanted attribute matter, followed
    through the values they assign (``g`` from ``base``)."""
    plan = planned(ATTRIBUTE_CHAIN)
    stubbed = {stub.line.split("(")[0].strip() for stub in plan.stubs}
    assert stubbed == {"def set_unrelated", "def reads"}, stubbed
    findings = check_source(ATTRIBUTE_CHAIN)
    assert findings == check_source(ATTRIBUTE_CHAIN, focus=False)
    assert {(f.line, f.level) for f in findings} == {(27, Level.ERROR), (28, Level.ERROR)}, findings  # 28: through build, make_base


def test_only_gf105_and_gf106_follow_an_assigned_attribute_to_the_attributes_its_method_mentions():
    """`__init__` assigns `self.h`, which `forward` writes: it is kept. The hazard analysis reads
    how `self.h` is assigned, not what `self.w` is, so `set_w` is left out; GF106, which follows
    the assigned value, keeps it."""
    plan = planned(ASSIGNED_FROM_ANOTHER_ATTRIBUTE)
    assert not left_out(plan, "def __init__") and left_out(plan, "def set_w")
    assert_same(ASSIGNED_FROM_ANOTHER_ATTRIBUTE)
    out = ASSIGNED_FROM_ANOTHER_ATTRIBUTE.replace("self.h.add_(x)", "torch.mul(x, 2, out=self.h)")
    assert not left_out(planned(out), "def set_w")
    assert_same(out)


def test_a_method_is_kept_for_a_switch_of_the_traced_name_not_for_mentioning_both():
    plan = planned(SWITCHED_IN_A_CLASS)
    assert not left_out(plan, "def flip") and left_out(plan, "def mentions")
    assert_same(SWITCHED_IN_A_CLASS)


def test_a_traced_value_keeps_only_definitions_that_switch_requires_grad():
    plan = planned(SWITCHED)
    assert left_out(plan, "def reads") and "V.requires_grad_()" in plan.text
    assert check_source(SWITCHED) == check_source(SWITCHED, focus=False) != []


GLOBAL_ELSEWHERE = src("""
    import torch


    def reset():
        global _cache
        _cache = {}


    def helper(x):
        return x * 2


    def step(x):
        y = torch.sigmoid(x)
        y.mul_(2)
        return y
""")


def test_a_global_statement_keeps_the_focus_and_the_functions_that_rebind_what_is_read():
    plan = planned(GLOBAL_ELSEWHERE)
    assert plan is not None and plan.focused  # `reset` and `helper` left out: nothing kept reads `_cache`
    assert left_out(plan, "def reset") and "def step(x):" in plan.text
    assert_same(GLOBAL_ELSEWHERE)
    reads = GLOBAL_ELSEWHERE.replace("    y.mul_(2)\n", "    y.mul_(len(_cache))\n")
    plan = planned(reads)  # the kept code reads a name `reset` rebinds: `reset` is kept, `helper` is not
    assert plan.focused and "    global _cache\n" in plan.text and left_out(plan, "def helper")
    assert_same(reads)


def test_a_traced_name_declared_global_keeps_the_function_that_rebinds_it():
    """`g` writes into `state`, which `setup` rebinds: `setup` is analysed too, `unrelated` is not."""
    plan = planned(GLOBAL_STATEMENT)
    assert plan is not None and plan.focused
    assert "    global state\n    state = torch.sigmoid" in plan.text and left_out(plan, "def unrelated")
    assert_same(GLOBAL_STATEMENT)


def test_a_name_the_site_reads_but_does_not_write_is_followed_to_its_switches_only():
    """Only the written tensor's uses can save it for backward: `SCALE`, an argument of the
    write, is followed to its `requires_grad` switches (`flips`), not to its reads (`reads`)."""
    plan = planned(READ_AT_THE_SITE)
    assert left_out(plan, "def reads") and not left_out(plan, "def flips")
    assert_same(READ_AT_THE_SITE)
    written = READ_AT_THE_SITE.replace("    y = torch.sigmoid(x)\n    y.mul_(SCALE)\n    return y\n", "    SCALE.mul_(x)\n")
    assert not left_out(planned(written), "def reads")  # now SCALE is the written tensor: its reads matter
    assert_same(written)


def test_the_names_a_global_owner_binds_from_are_followed_as_bound_values():
    """`setup` binds `state`, which `g` writes: it is kept whole, and `LIMIT`, which it reads, is
    followed as any bound value is (to its switches), so `reads_limit` is left out."""
    plan = planned(GLOBAL_OWNER_READS)
    assert not left_out(plan, "def setup") and left_out(plan, "def reads_limit")
    assert_same(GLOBAL_OWNER_READS)


def test_a_class_that_declares_a_global_keeps_the_declaring_method_not_the_whole_class():
    plan = planned(CLASS_DECLARES_GLOBAL)
    assert "        global _cache\n" in plan.text and left_out(plan, "def describe")
    assert_same(CLASS_DECLARES_GLOBAL)
    in_the_body = CLASS_DECLARES_GLOBAL.replace("class Runner:\n", "class Runner:\n    global _cache\n")
    assert not left_out(planned(in_the_body), "def describe")  # declared by the class body: kept whole
    assert_same(in_the_body)


def test_a_name_a_function_or_comprehension_binds_for_itself_is_not_followed_elsewhere():
    """`size` is the site's own local and `t` its generator's: the module-level tensors with those
    names are never what the site writes or reads, so the functions that read them are left out."""
    plan = planned(LOCAL_SHADOWS_MODULE_NAME)
    assert left_out(plan, "def reads_size") and left_out(plan, "def reads_t")
    assert_same(LOCAL_SHADOWS_MODULE_NAME)
    module_level = LOCAL_SHADOWS_MODULE_NAME.replace("    size = torch.sigmoid(x)\n", "")
    assert module_level != LOCAL_SHADOWS_MODULE_NAME
    assert not left_out(planned(module_level), "def reads_size")  # now the site writes the module's `size`
    assert_same(module_level)


def test_a_name_declared_global_in_a_nested_function_is_the_modules():
    plan = planned(GLOBAL_IN_A_NESTED_FUNCTION)
    assert not left_out(plan, "def reads")  # `inner` writes the module's W, which `reads` saves
    assert_same(GLOBAL_IN_A_NESTED_FUNCTION)


def test_fresh_name_sees_names_in_left_out_definitions():
    """fresh_name reads the source text, so `other` (which binds h_value) need not be analysed."""
    plan = planned(FRESH_NAME)
    assert plan is not None and left_out(plan, "def other")
    fixed = fix_source(FRESH_NAME, unsafe_fixes=True, level=Level.WARNING).source
    assert "h_value_1 = torch.tanh(h[0] @ w)" in fixed
    commented = FRESH_NAME.replace("def unrelated():", "# h_value_1 is taken here\ndef unrelated():")
    assert "h_value_2 = torch.tanh(h[0] @ w)" in fix_both(commented, unsafe_fixes=True, level=Level.WARNING).source


def test_focused_text_keeps_every_kept_line_and_line_count():
    plan = planned(CLASS_MODULES)
    original, focused = CLASS_MODULES.splitlines(), plan.text.splitlines()
    assert len(original) == len(focused)
    assert focused[original.index("class Helper:")].startswith('class Helper: """gradfix-focus-')
    for before, after in zip(original, focused):
        # a stub's own line, or the line that closes the string its left-out lines became
        assert after == before or after == "" or "gradfix-focus-" in after or after == '"""'


def test_restore_puts_left_out_definitions_back_byte_for_byte():
    source = IMPORT_ADDED.replace("\n", "\r\n")
    plan = planned(source)
    assert plan.focused and plan.restore(plan.text) == source
    assert plan.restore(plan.text.replace("gradfix-focus-0", "gradfix-focus-x")) is None
    fixed = fix_source(source, unsafe_fixes=True).source
    assert "import torch.nn.functional as F\r\nimport torch\r\n" in fixed and "def unrelated():\r\n    pass\r\n" in fixed


def test_no_candidate_means_no_libcst(monkeypatch):
    from gradfix.codemods import engine

    def refuse(source):
        raise AssertionError("libcst parse")

    monkeypatch.setattr(engine, "parse", refuse)
    source = src("""
        import torch

        class A:
            def __init__(self):
                self.counts = {}
                self.counts["a"] = 1
                self.w = torch.zeros(3)
                self.w.add_(1)

        def f(options, x):
            options["scale"] = 2
            return x.add(1)
    """)
    assert planned(source, keep_silenced=True) is not None  # silenced writes are candidates for --keep-silenced
    assert check_source(source) == []
    assert fix_source(source).source == source


TABLES = src("""
    import torch
    from torch import nn

    UNUSED = [
    """) + "".join(f"    ({i}, 'name{i}'),\n" for i in range(25)) + src("""
    ]
    SCALES = {
    """) + "".join(f"    'k{i}': {i},\n" for i in range(25)) + src("""
    }
    OPS = [
        dict(
            name="relu",
            op=lambda x: x.relu_(),
        ),
        dict(
            name="plain",
            op=lambda x: x.relu(),
        ),
        dict(  # ünïcode before the element's end
            name="sigmoid",
            op=lambda x: x.sigmoid(),
        ),
    """) + "".join(f"    dict(\n        name='op{i}',\n        op=None,\n    ),\n" for i in range(12)) + src("""
    ]


    def gate(x):
        y = torch.sigmoid(x)
        y.mul_(SCALES["k1"])
        return y
    """)


def test_long_module_statements_nothing_reads_are_left_out_and_restored():
    plan = planned(TABLES)
    assert plan is not None and plan.focused
    assert "name7" not in plan.text  # UNUSED: nothing kept reads it
    assert "'k7': 7" in plan.text  # SCALES: `gate` reads it
    # OPS holds a candidate (`x.relu_()`): its element stays, its quiet multi-line siblings become None
    assert "x.relu_()" in plan.text and "x.sigmoid()" not in plan.text and "op3" not in plan.text
    assert len(plan.text.splitlines()) == len(TABLES.splitlines())
    assert_same(TABLES)
    fixed = fix_both(TABLES, unsafe_fixes=True, level=Level.WARNING)
    assert "name7" in fixed.source and "x.sigmoid()" in fixed.source and fixed.source != TABLES


def test_a_table_a_kept_table_reads_stays():
    text = src("""
        import torch

        BASE = [
        """) + "".join(f"    {i},\n" for i in range(25)) + src("""
        ]
        DERIVED = [b * 2 for b in BASE]


        def f(x):
            x.add_(DERIVED[0])
            return x
        """)
    plan = planned(text)
    assert plan is None or "    24," in plan.text
    assert_same(text)


def test_only_a_table_element_with_a_candidate_is_traced():
    """In a long literal table, the names the other elements mention are not followed: the
    definitions only they name are left out, and so are those elements."""
    helpers = "".join(f"def sample_{i}(op):\n    t = torch.ones(2)\n    t.add_(1)\n    return t\n\n\n" for i in range(3))
    table = "OPS = [\n" + "".join(
        f"    dict(\n        name='op{i}',\n        sample=sample_{i % 3},\n        op=lambda x: x.{'relu_' if i == 0 else 'relu'}(),\n    ),\n"
        for i in range(15)
    ) + "]\n"
    text = "import torch\n\n\n" + helpers + table + "\n\nUSES = [op for op in OPS]\n"
    plan = planned(text)
    assert plan is not None
    assert "x.relu_()" in plan.text and "name='op5'" not in plan.text
    assert_same(text)


def test_syntax_error_in_a_left_out_definition_is_reported_as_cpython_does():
    source = src("""
        import torch

        def f(x):
            y = torch.sigmoid(x)
            y.add_(1)
            return y

        def broken(:
            pass
    """)
    with pytest.raises(SourceSyntaxError) as info:
        check_source(source)
    assert (info.value.message, info.value.line, info.value.col) == ("invalid syntax", 8, 12)
    assert_same(source)
    with pytest.raises(SourceSyntaxError):
        fix_source(source)


def test_bom_and_null_bytes_fail_as_before():
    assert_same("\ufeffimport torch\nx = torch.ones(3)\nx.add_(1)\n")
    assert_same("import torch\nx = 1\0\n")


# --- the text patterns ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,pattern", [
    ("x.add_(1)", prescreen.INPLACE_NAME),
    ("x.t_()", prescreen.INPLACE_NAME),
    ("x += 1", prescreen.AUGMENTED_ASSIGNMENT),
    ("x **= 2", prescreen.AUGMENTED_ASSIGNMENT),
    ("x <<= 2", prescreen.AUGMENTED_ASSIGNMENT),
    ("w.data = v", prescreen.DATA_ATTRIBUTE),
    ("w.  \\\n  data.mul_(2)", prescreen.DATA_ATTRIBUTE),
    ("(x[0]  # c\n) = 1", prescreen.SUBSCRIPT_ASSIGNMENT),
    ("nn.ReLU(True)", prescreen.INPLACE_TRUE),
    ("F.relu(x, inplace = True)", prescreen.INPLACE_TRUE),
    ("F.relu(x, inplace=(True))", prescreen.INPLACE_TRUE),
    ("nn.Dropout(0.5,  # p\n           True)", prescreen.INPLACE_TRUE),
    ("torch.add(a, b,  # c\n out=c)", prescreen.OUT_KEYWORD),
])
def test_text_patterns_find(text, pattern):
    assert pattern.search(text)


@pytest.mark.parametrize("text,pattern", [
    ("def __init__(self):", prescreen.INPLACE_NAME),
    ("x = y == z; a <= b; c >= d; e != f", prescreen.AUGMENTED_ASSIGNMENT),
    ("x @= w", prescreen.AUGMENTED_ASSIGNMENT),
    ("metadata = 1; self.database", prescreen.DATA_ATTRIBUTE),
    ("x[0] == 1", prescreen.SUBSCRIPT_ASSIGNMENT),
    ("Trueish = 1", prescreen.INPLACE_TRUE),
    ("return True\nx = True\nf(strict=True)\ny = [True]", prescreen.INPLACE_TRUE),  # no positional True
    ("out = self.conv(x)\nout == y\nf(out_=1)", prescreen.OUT_KEYWORD),
])
def test_text_patterns_skip(text, pattern):
    assert not pattern.search(text)


def test_import_aliases_from_text():
    text = "from torch import relu_ as r, (\n    clamp_  # comment\n    as c)\nimport torch.nn.functional as F\n"
    assert prescreen.import_aliases(text, frozenset({"relu_", "clamp_"})) == {"r": {"relu_"}, "c": {"clamp_"}}


# --- the installed torch -------------------------------------------------------------------------------


@pytest.mark.corpus
def test_torch_nn_same_as_whole_file():
    """Focused and whole-file findings over torch/nn (also with silenced ones): no difference."""
    import torch

    root = Path(os.environ.get("GRADFIX_CORPUS", Path(torch.__file__).parent / "nn"))
    files = sorted(root.rglob("*.py"))
    compared = findings = 0
    differences = []
    for path in files:
        source = path.read_bytes().decode("utf-8")
        whole = outcome(check_source, source, str(path), keep_silenced=True, focus=False)
        focused = outcome(check_source, source, str(path), keep_silenced=True)
        compared += 1
        findings += len(whole) if isinstance(whole, list) else 0
        if whole != focused:
            differences.append(str(path))
    print(f"\n{compared} files, {findings} findings (silenced included), {len(differences)} differences")
    assert not differences
