"""The engine: contexts, tensor-ness, aliases, suppression, hoisting, fix application."""

from __future__ import annotations

import re
import textwrap

import pytest

from gradfix.codemods import FixSafety, GradContext, Level, SourceSyntaxError, check_source, fix_source
from gradfix.codemods import engine


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def codes(text: str, **kwargs) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in check_source(src(text), **kwargs)]


def fixed(text: str, **kwargs) -> str:
    return fix_source(src(text), **kwargs).source


# --- contexts where autograd does not record -------------------------------------------

CONTEXT_CASES = {
    "with no_grad": ("with torch.no_grad():\n        h.add_(1)", GradContext.NO_GRAD),
    "alias T": ("with T.no_grad():\n        h.add_(1)", GradContext.NO_GRAD),
    "from import": ("with no_grad():\n        h.add_(1)", GradContext.NO_GRAD),
    "inference_mode": ("with torch.inference_mode():\n        h.add_(1)", GradContext.INFERENCE_MODE),
    "set_grad_enabled(False)": ("with torch.set_grad_enabled(False):\n        h.add_(1)", GradContext.GRAD_DISABLED),
    "grad buffer": ("h.grad.zero_()", GradContext.GRAD_BUFFER),
    "grad buffer augassign": ("h.grad += 1", GradContext.GRAD_BUFFER),
}


@pytest.mark.parametrize("body,context", CONTEXT_CASES.values(), ids=CONTEXT_CASES.keys())
def test_no_finding_where_autograd_does_not_record(body, context):
    text = f"import torch\nimport torch as T\nfrom torch import no_grad\ndef f(x):\n    h = torch.exp(x)\n    {body}\n"
    assert check_source(text) == []
    kept = check_source(text, keep_silenced=True)
    assert [f.context for f in kept] == [context]


def test_enable_grad_inside_no_grad_records_again():
    text = src("""
        import torch
        def f(x):
            with torch.no_grad():
                with torch.enable_grad():
                    h = torch.exp(x)
                    h.add_(1)
    """)
    assert [f.code for f in check_source(text)] == ["GF102"]


def test_set_grad_enabled_true_is_not_a_no_grad_context():
    assert codes("""
        import torch
        def f(x):
            with torch.set_grad_enabled(True):
                h = torch.exp(x)
                h.add_(1)
    """) == [(5, "GF102")]


def test_decorated_functions_initializers_optimizer_and_autograd_function():
    text = src("""
        import torch
        from torch import nn

        @torch.no_grad()
        def update(x):
            x.add_(1)

        @torch.inference_mode
        def infer(x):
            x.mul_(2)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.ones(3))
                self.w.mul_(0.1)

            def reset_parameters(self):
                self.w.zero_()

        class Opt(torch.optim.Optimizer):
            def step(self, closure=None):
                for p in self.params:
                    p.add_(p.grad)

        class Double(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                y = torch.exp(x)
                y.mul_(2)
                return y
    """)
    assert check_source(text) == []
    contexts = sorted({f.context.value for f in check_source(text, keep_silenced=True)})
    assert contexts == sorted(
        [GradContext.NO_GRAD.value, GradContext.INITIALIZER.value, GradContext.OPTIMIZER_STEP.value,
         GradContext.AUTOGRAD_FUNCTION.value, GradContext.INFERENCE_MODE.value]
    )


def test_function_defined_in_no_grad_block_is_still_checked():
    # The `with` does not apply when the function is called later.
    assert codes("""
        import torch
        with torch.no_grad():
            def later(x):
                h = torch.exp(x)
                h.add_(1)
                return h
    """) == [(5, "GF102")]


# --- tensor-ness ------------------------------------------------------------------------


def test_plain_python_values_are_not_findings():
    assert codes("""
        import torch
        def f(batches, loss_fn):
            i = 0
            total = 0.0
            names = []
            text = "a"
            for step, batch in enumerate(batches):
                i += 1
                step += 1
                total += loss_fn(batch).item()
                names += ["x"]
                text += "b"
            n: int = 3
            n += 1
            return i, total
    """) == []


def test_tensor_sources_are_recognised():
    text = """
        import torch
        import torch.nn.functional as F
        def f(x: torch.Tensor, y, lin):
            a = F.relu(y)
            a += 1
            b = torch.exp(x * 2)
            b += 1
            x += 1
            c = y.sum().sigmoid()
            c.mul_(2)
    """
    found = check_source(src(text))
    assert [(f.line, f.code, f.level.value) for f in found] == [
        (5, "GF101", "error"), (7, "GF101", "error"), (8, "GF101", "warning"), (10, "GF102", "error")
    ]
    # x is an annotated parameter: reported as a warning (its producer is the caller's), with an unsafe fix.
    assert found[2].fix_safety is FixSafety.UNSAFE


def test_unknown_values_get_at_most_an_unsafe_fix():
    found = check_source(src("""
        import torch
        def f(h, y):
            h.add_(y)
            return h
    """))
    assert len(found) == 1 and found[0].fix_safety is FixSafety.UNSAFE


def test_module_functions_are_not_tensor_methods():
    text = """
        import torch
        from torch import nn
        def f(w):
            nn.init.normal_(w)
            torch.nn.init.zeros_(w)
            return torch.relu_(w)
    """
    assert codes(text, select=["GF102"]) == []
    assert codes(text) == [(6, "GF107")]  # torch.relu_ is GF107's; nn.init.*_ are initializers


# --- aliasing and fix safety ----------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    [
        "h = torch.exp(x)\n    keep = h",
        "h = torch.exp(x)\n    outs.append(h)",
        "h = x",
        "h = x.view(-1)",
        "h = torch.exp(x)\n    v = h[0]",
        "h = torch.exp(x)\n    v = h.t()",
        "h = other = torch.exp(x)",
    ],
)
def test_possible_aliases_make_the_fix_unsafe(setup):
    text = f"import torch\ndef f(x, outs):\n    {setup}\n    h.add_(1)\n    return h\n"
    found = check_source(text)
    assert [f.code for f in found] == ["GF102"]
    assert found[0].fix_safety is FixSafety.UNSAFE
    assert fix_source(text).source == text  # safe-only fix leaves it alone


def test_alias_created_after_the_write_outside_a_loop_is_harmless():
    found = check_source(src("""
        import torch
        def f(x, outs):
            h = torch.exp(x)
            h.add_(1)
            outs.append(h)
            return h
    """))
    assert found[0].fix_safety is FixSafety.SAFE


@pytest.mark.parametrize("write", ["h[0] = 0.0", "h[:, 1] += 1.0"])
def test_index_write_into_the_tensor_before_the_site_shares_nothing(write):
    # A write into h keeps no reference to h: rebinding h later is still invisible to others.
    text = f"import torch\ndef f(x):\n    h = torch.exp(x)\n    {write}\n    h.add_(1)\n    return h\n"
    [found] = [f for f in check_source(text) if f.code == "GF102"]
    assert found.fix_safety is FixSafety.SAFE


def test_alias_created_later_in_the_same_loop_makes_it_unsafe():
    found = check_source(src("""
        import torch
        def f(x, outs):
            h = torch.exp(x)
            for _ in range(3):
                h.add_(1)
                outs.append(h)
            return h
    """))
    assert found[0].fix_safety is FixSafety.UNSAFE


def test_closure_use_makes_the_fix_unsafe():
    found = check_source(src("""
        import torch
        def f(x):
            h = torch.exp(x)
            def g():
                return h
            h.add_(1)
            return g
    """))
    assert found[0].fix_safety is FixSafety.UNSAFE


# --- hoisting -----------------------------------------------------------------------------


def test_hoisting_out_of_if_test_and_for_iter():
    out = fixed("""
        import torch
        def f(x):
            h = torch.exp(x)
            if h.add_(1).sum() > 0:
                pass
            for v in h.mul_(2):
                pass
    """)
    assert "    h = h.add(1)\n    if h.sum() > 0:" in out
    assert "    h = h.mul(2)\n    for v in h:" in out


@pytest.mark.parametrize(
    "expression",
    [
        "[h.add_(1) for _ in range(2)]",
        "(lambda: h.add_(1))",
        "h.add_(1) if x.sum() > 0 else h",
        "x.sum() > 0 and h.add_(1)",
    ],
)
def test_no_hoisting_where_the_call_may_not_run(expression):
    text = f"import torch\ndef f(x):\n    h = torch.exp(x)\n    y = {expression}\n    return y\n"
    found = check_source(text)
    assert [f.fix_safety for f in found] == [FixSafety.DISPLAY_ONLY]
    assert fix_source(text, unsafe_fixes=True).source == text


def test_elif_and_while_tests_are_display_only():
    text = src("""
        import torch
        def f(x):
            h = torch.exp(x)
            if x.sum() > 0:
                pass
            elif h.add_(1).sum() > 0:
                pass
            while h.mul_(2).sum() < 10:
                pass
    """)
    assert [f.fix_safety for f in check_source(text)] == [FixSafety.DISPLAY_ONLY] * 2


def test_evaluation_order_makes_hoisting_unsafe():
    found = check_source(src("""
        import torch
        def f(x, g):
            h = torch.exp(x)
            y = g(h.sum()) + h.add_(1)
            return y
    """))
    assert found[0].fix_safety is FixSafety.UNSAFE


# --- layout of the rewritten code ---------------------------------------------------------


def test_comments_blank_lines_and_semicolons_survive():
    out = fixed("""
        import torch


        def f(x):
            # the gate
            g = torch.sigmoid(x)

            # scale it
            g.mul_(2)  # trailing comment
            a = 1; g.add_(1)
            if a: g.sub_(1)
            return g
    """)
    assert out == src("""
        import torch


        def f(x):
            # the gate
            g = torch.sigmoid(x)

            # scale it
            g = g.mul(2)  # trailing comment
            a = 1; g = g.add(1)
            if a: g = g.sub(1)
            return g
    """)


def test_hoisted_statement_keeps_leading_comment_above_it():
    out = fixed("""
        import torch
        def f(x):
            h = torch.exp(x)
            # result
            y = h.add_(1)
            return y
    """)
    assert "    # result\n    h = h.add(1)\n    y = h\n" in out


def test_crlf_is_kept_in_rewritten_and_inserted_lines():
    text = "import torch\r\ndef f(x):\r\n    y = torch.exp(x)\r\n    y[0] += 1\r\n    return y\r\n"
    out = fix_source(text).source
    assert out == "import torch\r\ndef f(x):\r\n    y = torch.exp(x)\r\n    y = y.clone()\r\n    y[0] += 1\r\n    return y\r\n"


def test_missing_torch_import_is_added_for_zeros_like():
    out = fixed("""
        import torch.nn.functional as F
        def f(x):
            h = F.relu(x)
            h.zero_()
            return h
    """)
    assert "import torch\n" in out and "h = torch.zeros_like(h)" in out


def test_torch_alias_is_used_in_rewrites():
    out = fixed("""
        import torch as T
        def f(x):
            h = T.exp(x)
            h.zero_()
            return h
    """)
    assert "h = T.zeros_like(h)" in out and "import torch\n" not in out


def test_operator_precedence_is_kept():
    out = fixed("""
        import torch
        def f(x, a, b):
            h = torch.exp(x)
            h *= a + b
            h -= a if b else a
            return h
    """)
    assert "h = h * (a + b)" in out and "h = h - (a if b else a)" in out


# --- suppression, selection, errors ----------------------------------------------------


def test_noqa_forms():
    text = src("""
        import torch
        def f(x):
            h = torch.exp(x)
            h += 1  # noqa
            h += 2  # noqa: GF101
            h += 3  # noqa: GF102
            h += 4  # NOQA:GF102,GF101
            h += 5  # a comment mentioning noqa without the marker form # noqa:GF999
            return h
    """)
    assert [f.line for f in check_source(text)] == [6, 8]


def test_select_and_ignore_take_prefixes():
    text = "import torch\ndef f(x):\n    h = torch.exp(x)\n    h += 1\n    h.add_(1)\n"
    assert [f.code for f in check_source(text, select=["GF101"])] == ["GF101"]
    assert [f.code for f in check_source(text, ignore=["GF101"])] == ["GF102"]
    assert [f.code for f in check_source(text, select=["GF1"])] == ["GF101", "GF102"]
    assert check_source(text, select=["gf1"], ignore=["GF10"]) == []


def test_syntax_error_carries_position():
    with pytest.raises(SourceSyntaxError) as info:
        check_source("import torch\ndef f(:\n    pass\n")
    assert (info.value.line, info.value.col) == (2, 7)
    assert info.value.message == "invalid syntax"
    with pytest.raises(SourceSyntaxError):
        check_source("x = (\n")  # no torch: the cheap syntax check still runs


def test_fix_that_breaks_parsing_is_dropped_and_named(monkeypatch):
    import libcst as cst

    from gradfix.codemods.model import Fix, ReplaceNode, Report
    from gradfix.codemods.rule import Rule

    class Broken(Rule):
        code = "GF999"
        name = "broken"
        why = "test"
        node_types = (cst.Name,)
        prescreen = re.compile("target")

        def check(self, node, ctx):
            if node.value == "target":
                yield Report(node, "m", Fix("break", (ReplaceNode(node, cst.Name("lambda")),)))

    monkeypatch.setattr(engine, "select_rules", lambda select=(), ignore=(): [Broken()])
    text = "import torch\ntarget = 1\n"
    result = fix_source(text, "mod.py")
    assert result.source == text
    assert result.errors and "GF999" in result.errors[0] and "mod.py:2" in result.errors[0]


def test_file_without_torch_is_not_parsed_by_libcst_but_checked_for_syntax():
    assert check_source("x = 1\nx += 1\n") == []


def test_findings_are_in_line_order_with_end_positions():
    found = check_source(src("""
        import torch
        def f(x):
            h = torch.exp(x)
            h.mul_(2); h += 1
    """))
    assert [(f.line, f.col, f.end_line, f.end_col) for f in found] == [(4, 5, 4, 14), (4, 16, 4, 22)]


# --- hazard levels (issue 4's precision) ------------------------------------------------


@pytest.mark.parametrize(
    "body,expected",
    [
        ("h = torch.sigmoid(x)\n    h.mul_(2)", "error"),  # sigmoid's backward needs its output
        ("h = torch.zeros(3, requires_grad=True)\n    h.add_(1)", "error"),  # a leaf
        ("h = x + 1\n    y = h * w\n    h += 1", "error"),  # mul saved h as its input
        ("a, b = (x * 2).unbind(0)\n    a.mul_(2)", "error"),  # a multi-output view
        ("h = x + 1\n    h += 1", None),  # add saves nothing
        ("h = x + 1\n    y = h * 2\n    h += 1", None),  # mul by a number saves nothing of h
        ("h = torch.zeros(3)\n    for i in range(3):\n        h += x * i", None),  # an accumulator
        ("h = x.clone()\n    h.mul_(2)", None),
        ("x.mul_(2)", "warning"),  # a parameter: its producer is the caller's
        ("h = helper(x)\n    h.mul_(2)", "warning"),  # an unknown call
        ("h = x + 1\n    y = h[0] @ w\n    h += 1", "error"),  # matmul saved a view of h
        ("h = x + 1\n    y = h.t().matmul(w)\n    h += 1", "error"),
        ("h = x + 1\n    y = torch.mm(h.T, w)\n    h += 1", "error"),
        ("h = x + 1\n    y = h[0] + w\n    h += 1", None),  # add saves nothing
        # requires_grad switched off on the written tensor before the write (transformers' pruning)
        ("m = torch.nn.Linear(3, 2)\n    m.weight.requires_grad = False\n    m.weight.copy_(w)", None),
        ("x.requires_grad = False\n    x[:, 0::2] = w", None),
        ("x.requires_grad_(False)\n    x.mul_(2)", None),
        ("m = torch.nn.Linear(3, 2)\n    m.weight.copy_(w)", "error"),
        ("m = torch.nn.Linear(3, 2)\n    m.weight.requires_grad = False\n    m.weight.requires_grad = True\n    m.weight.copy_(w)", "error"),
        ("h = x + 1\n    h.requires_grad = True\n    h.mul_(2)", "error"),  # made a leaf
        ("h = x + 1\n    h.requires_grad = False\n    h.mul_(2)", None),  # not made a leaf
        # switched off before a loop whose body switches it on after the write: no claim
        ("m = torch.nn.Linear(3, 2)\n    m.weight.requires_grad = False\n    for v in [w]:\n        m.weight.copy_(v)\n        m.weight.requires_grad = True", "error"),
    ],
)
def test_hazard_levels(body, expected):
    text = f"import torch\ndef f(x: torch.Tensor, w: torch.Tensor, helper):\n    {body}\n    return x\n"
    found = check_source(text)
    assert [f.level.value for f in found] == ([expected] if expected else [])


def test_level_option_filters_warnings_and_fix_applies_errors_by_default():
    text = "import torch\ndef f(x, w):\n    h = torch.exp(x)\n    h.mul_(2)\n    g = w.foo()\n    g.mul_(2)\n    return h, g\n"
    assert [f.level.value for f in check_source(text)] == ["error", "warning"]
    assert [f.level.value for f in check_source(text, level=Level.ERROR)] == ["error"]
    fixed = fix_source(text, unsafe_fixes=True).source
    assert "h = h.mul(2)" in fixed and "g.mul_(2)" in fixed
    assert "g = g.mul(2)" in fix_source(text, unsafe_fixes=True, level=Level.WARNING).source


def test_module_outputs_follow_the_layer_kind():
    text = src("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.bn = nn.BatchNorm1d(3)
                self.act = nn.Sigmoid()
                self.fc = nn.Linear(3, 3)
            def forward(self, x: torch.Tensor):
                a = self.bn(x)
                a += 1
                b = self.act(x)
                b += 1
                c = x * 2
                d = self.fc(c)
                c += 1
                return a, b, d
    """)
    found = check_source(text)
    assert [(f.line, f.level.value) for f in found] == [(13, "error"), (16, "error")]
    assert "Sigmoid" not in found[0].message and "Linear" in found[1].message


def test_loop_that_rebinds_before_the_write_carries_nothing_over():
    rebinding = src("""
        import torch
        def f(xs, w):
            for x in xs:
                h = x + 1
                h.add_(1)
                y = h * w
            return y
    """)
    assert check_source(rebinding) == []
    carried = src("""
        import torch
        def f(xs, w):
            h = torch.zeros(3)
            for x in xs:
                h.add_(x)
                y = h * w
            return y
    """)
    assert [f.level.value for f in check_source(carried)] == ["error"]


@pytest.mark.parametrize(
    "module,expected",
    [
        ("nn.ELU(inplace=True)", "error"),  # measured: in place, elu's backward needs its output
        ("nn.ELU()", None),  # out of place it needs its input only
        ("nn.LeakyReLU(0.1, True)", "error"),  # inplace given by position
        ("nn.Softplus()", None),  # measured: needs its input, not its output
        ("nn.Sigmoid()", "error"),
        ("nn.Identity()", "warning"),  # returns its input itself: the input's producer decides
        ("nn.Dropout(0.1)", "warning"),  # in eval mode, the input itself
    ],
)
def test_module_outputs_follow_the_measured_module_table(module, expected):
    text = src(f"""
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = {module}
            def forward(self, x):
                h = self.layer(x + 1)
                h += 1
                return h
    """)
    found = check_source(text)
    assert [f.level.value for f in found] == ([expected] if expected else [])


# --- fix_lines / check_lines: what `fix --from-trace` runs ----------------------------------------

TRACED = src("""
    import torch
    ACTS = {"sigmoid": torch.sigmoid}
    def gate(x, kind):
        y = ACTS[kind](x)
        y.mul_(2)
        return y
    def other(x, kind):
        z = ACTS[kind](x)
        z.add_(1)
        return z
    def plain(x):
        w = x * 2
        w += 1
        return w
""")


def test_fix_lines_fixes_exactly_the_traced_lines_whatever_their_level():
    static = {f.line: f.level.value for f in check_source(TRACED)}
    assert static == {5: "warning", 9: "warning"}  # the producer is looked up by name
    result = engine.fix_lines(TRACED, [5], unsafe_fixes=True)
    assert result.applied == {"GF102": 1}
    changed = [n for n, (a, b) in enumerate(zip(TRACED.splitlines(), result.source.splitlines()), 1) if a != b]
    assert changed == [5] and "y = y.mul(2)" in result.source
    assert "z.add_(1)" in result.source  # the same construct, not traced, stays


def test_a_traced_line_the_analysis_does_not_flag_is_fixed_as_proven():
    assert all(f.line != 13 for f in check_source(TRACED))  # `w += 1` after `x * 2`: nothing saved it
    (finding,) = engine.check_lines(TRACED, [13])
    assert finding.level is Level.ERROR and "traced run" in finding.message
    result = engine.fix_lines(TRACED, [13], unsafe_fixes=True)  # unsafe: gradfix cannot tell `w` is a tensor
    assert "w = w + 1" in result.source and result.remaining == []


def test_fix_lines_keeps_unsafe_fixes_for_the_flag_and_reports_them():
    result = engine.fix_lines(TRACED, [5])
    assert result.source == TRACED
    assert [(f.line, f.code, f.fix_safety) for f in result.remaining] == [(5, "GF102", FixSafety.UNSAFE)]


def test_fix_lines_on_lines_without_a_construct_changes_nothing():
    assert engine.fix_lines(TRACED, [1, 2]).source == TRACED
    assert engine.check_lines(TRACED, []) == []
    with pytest.raises(SourceSyntaxError):
        engine.fix_lines("import torch\ndef f(:\n", [2])


RELEASE_SOURCE = """
import torch

def f(a, w):
    h = torch.sigmoid(a)
    h += w
    for i in range(3):
        h = h * i
    return h

class Net(torch.nn.Module):
    def forward(self, x):
        y = x.exp()
        y[0] = 0
        return y
"""


def _garbage_after_analysis(release: bool) -> int:
    """How many objects only the cycle collector frees after a full analysis, released or not."""
    import gc

    import libcst as cst

    from gradfix.codemods.engine import _analyze, select_rules

    gc.collect()
    gc.disable()
    try:
        module = cst.parse_module(RELEASE_SOURCE)
        ctx, raw = _analyze(module, select_rules(), RELEASE_SOURCE)
        assert raw and all(ctx.scope(item.report.node) is not None for item in raw)
        if release:
            ctx.release()
        del ctx, raw, module
        return gc.collect()
    finally:
        gc.enable()


def test_released_analysis_frees_the_module_without_the_garbage_collector():
    """Scopes and their assignments point at each other: without release() the whole tree waits
    for the cycle collector; with it, reference counting frees it when the last user lets go."""
    whole_tree = _garbage_after_analysis(release=False)
    assert whole_tree > 200
    assert _garbage_after_analysis(release=True) < whole_tree / 10


def test_check_and_fix_release_every_analysis_they_make(monkeypatch):
    from gradfix.codemods import context

    made, released = [], []
    original_init, original_release = context.RuleContext.__init__, context.RuleContext.release
    monkeypatch.setattr(context.RuleContext, "__init__",
                        lambda self, module, **kw: made.append(self) or original_init(self, module, **kw))
    monkeypatch.setattr(context.RuleContext, "release", lambda self: released.append(self) or original_release(self))
    assert check_source(RELEASE_SOURCE)
    assert len(made) == 1 and released == made
    made.clear(), released.clear()
    # one finding has no fix: the second pass analyses the fixed text and leaves it
    result = fix_source(RELEASE_SOURCE.replace("y[0] = 0", "y[0] = 0\n        torch.exp(x)[0] = 1"), unsafe_fixes=True,
                        level=Level.WARNING)
    assert result.applied and result.remaining
    assert len(made) >= 2 and sorted(map(id, released)) == sorted(map(id, made))


SWITCHES_SOURCE = """
import torch

def prune(w, new, other):
    w.requires_grad = False
    w.copy_(new)
    w.mul_(2)
    w.requires_grad = True
    other.add_(1)
    return w
"""


def test_requires_grad_switches_are_read_once_per_function():
    import libcst as cst

    from gradfix.codemods.engine import _analyze, select_rules

    module = cst.parse_module(SWITCHES_SOURCE)
    ctx, raw = _analyze(module, select_rules(), SWITCHES_SOURCE)
    # the writes into w happen with grad switched off: nothing to report there; other.add_ stays
    assert [(ctx.line(item.report.node), item.rule.code) for item in raw] == [(9, "GF102")]
    (switches,) = ctx.requires_grad_switches.values()  # one table, for prune, however many writes
    assert [(start[0], value, switched) for start, value, switched in switches] == [(5, False, "w"), (8, True, "w")]
    # without `requires_grad` in the text there is nothing to look for
    quiet = SWITCHES_SOURCE.replace("w.requires_grad = False\n    ", "").replace("w.requires_grad = True\n    ", "")
    ctx, raw = _analyze(cst.parse_module(quiet), select_rules(), quiet)
    assert {item.rule.code for item in raw} == {"GF102"} and len(raw) == 3
    assert ctx.requires_grad_switches and all(table == [] for table in ctx.requires_grad_switches.values())
