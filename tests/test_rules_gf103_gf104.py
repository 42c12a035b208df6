"""GF103 (.data writes) and GF104 (subscript assignment): the decisions the fixtures do not pin down."""

from __future__ import annotations

import textwrap

import pytest

from gradfix.codemods import FixSafety, Level, check_source, fix_source


def code(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def findings(text: str, rule: str):
    return [(f.line, f.fix_safety, f.level) for f in check_source(code(text), select=[rule])]


def fixed(text: str, rule: str, *, unsafe: bool = True, warnings: bool = True) -> str:
    result = fix_source(code(text), select=[rule], unsafe_fixes=unsafe, level=Level.WARNING if warnings else Level.ERROR)
    assert result.errors == []
    again = fix_source(result.source, select=[rule], unsafe_fixes=unsafe, level=Level.WARNING if warnings else Level.ERROR)
    assert again.source == result.source, "not idempotent"
    return result.source


# --- GF103 ---------------------------------------------------------------------------------


def test_data_attributes_that_are_not_tensors_are_not_flagged():
    assert findings("""
        import torch
        class Samples:
            def load(self, values):
                self.data = values
        def subset(dataset, other):
            dataset.data = dataset.data[:100]
            dataset.data = dataset.data + other.data
            dataset.data = other.data
    """, "GF103") == []


def test_stop_gradient_reads_are_not_flagged_but_a_graph_cut_is_display_only():
    source = """
        import torch
        def f(x, scale):
            h = torch.tanh(x)
            y = h.data
            z = h * scale / y.norm().data
            h = h.data
            return z, h
    """
    assert findings(source, "GF103") == [(6, FixSafety.DISPLAY_ONLY, Level.WARNING)]
    assert fixed(source, "GF103") == code(source)


def test_parameter_writes_are_errors_in_forward_and_warnings_between_steps():
    source = """
        import torch
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                self.fc.weight.data.clamp_(-1, 1)
                return self.fc(x)
        def clip(model):
            for p in model.parameters():
                p.data.clamp_(-1, 1)
            for name, p in model.named_parameters():
                p.data = p.data * 0.5
    """
    assert findings(source, "GF103") == [
        (5, FixSafety.UNSAFE, Level.ERROR),
        (9, FixSafety.UNSAFE, Level.WARNING),
        (11, FixSafety.UNSAFE, Level.WARNING),
    ]
    assert fixed(source, "GF103") == code("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                with torch.no_grad():
                    self.fc.weight.clamp_(-1, 1)
                return self.fc(x)
        def clip(model):
            for p in model.parameters():
                with torch.no_grad():
                    p.clamp_(-1, 1)
            for name, p in model.named_parameters():
                with torch.no_grad():
                    p.copy_(p.data * 0.5)
    """)
    # Warnings are fixed only on request, unsafe fixes only with --unsafe-fixes.
    assert fixed(source, "GF103", warnings=False).count("no_grad") == 1
    assert fixed(source, "GF103", unsafe=False) == code(source)


def test_state_fetched_from_elsewhere_is_updated_under_no_grad_not_rebound():
    # Rebinding `mask` would silently drop the update the caller relies on.
    source = """
        import torch
        def update_mask(self, name):
            mask = self.masks[name]
            mask.data = torch.zeros_like(mask)
    """
    assert findings(source, "GF103") == [(4, FixSafety.UNSAFE, Level.WARNING)]
    assert "mask.copy_(torch.zeros_like(mask))" in fixed(source, "GF103")


def test_a_leaf_given_new_values_is_copied_into_but_a_leaf_computed_from_itself_is_rebound():
    source = """
        import torch
        w = torch.randn(3, requires_grad=True)
        w.data = torch.zeros(3)
        x = torch.randn(3, requires_grad=True)
        x.data = x * 2.0
    """
    assert fixed(source, "GF103") == code("""
        import torch
        w = torch.randn(3, requires_grad=True)
        with torch.no_grad():
            w.copy_(torch.zeros(3))
        x = torch.randn(3, requires_grad=True)
        x = x * 2.0
    """)


def test_no_grad_form_uses_the_module_alias_or_adds_the_import_and_keeps_comments():
    source = """
        import torch as T
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                # prune
                self.fc.weight.data *= self.mask  # keep zeros
                return self.fc(x)
    """
    assert fixed(source, "GF103") == code("""
        import torch as T
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                # prune
                with T.no_grad():
                    self.fc.weight *= self.mask  # keep zeros
                return self.fc(x)
    """)
    no_import = "from torch import nn\nmodel = nn.Linear(2, 2)\nmodel.weight.data = model.weight.data * 0\n"
    assert fixed(no_import, "GF103") == (
        "from torch import nn\nimport torch\n\nmodel = nn.Linear(2, 2)\nwith torch.no_grad():\n"
        "    model.weight.copy_(model.weight.data * 0)\n"
    )


def test_no_grad_form_is_display_only_where_a_with_block_cannot_go():
    source = """
        import torch
        from torch import nn
        model = nn.Linear(2, 2)
        if True: model.bias.data = model.bias.data * 0
        a = 1; model.weight.data = model.weight.data * 0
    """
    assert [s for _, s, _ in findings(source, "GF103")] == [FixSafety.DISPLAY_ONLY] * 2
    assert fixed(source, "GF103") == code(source)


def test_in_place_result_used_as_a_value_is_display_only():
    source = """
        import torch
        def f(a):
            z = torch.exp(a)
            z2 = z.data.add_(1)
            return z, z2
    """
    assert findings(source, "GF103") == [(4, FixSafety.DISPLAY_ONLY, Level.ERROR)]


def test_grad_buffers_and_no_grad_blocks_are_silenced():
    assert findings("""
        import torch
        def step(params, lr):
            for p in params:
                p.grad.data.zero_()
            with torch.no_grad():
                for p in params:
                    p.data.add_(p.grad, alpha=-lr)
    """, "GF103") == []


def test_indexed_data_write_clones_and_computes_a_value_that_reads_the_tensor_first():
    source = """
        import torch
        def f(a):
            y = torch.sigmoid(a)
            y.data[0] = y[1] * y[2]
            return y
    """
    assert fixed(source, "GF103") == code("""
        import torch
        def f(a):
            y = torch.sigmoid(a)
            y_value = y[1] * y[2]
            y = y.clone()
            y[0] = y_value
            return y
    """)


# --- GF104 ---------------------------------------------------------------------------------


def test_containers_strings_and_numpy_are_not_flagged():
    assert findings("""
        import numpy as np
        import torch
        def f(x, names, key):
            out = {}
            out["logits"] = torch.sigmoid(x)
            out[key] = torch.tanh(x)
            rows = [None] * len(names)
            for i in range(len(names)):
                rows[i] = torch.exp(x)
            a = np.zeros(5)
            a[a < 0] = 0
            a[:, 0] = x
            idx = np.array(names).reshape(2, -1)
            idx = idx + 1
            idx[idx > 3] = 3
            return out, rows, a, idx
    """, "GF104") == []


def test_fresh_buffer_is_not_flagged():
    assert findings("""
        import torch
        def f(xs, w):
            out = torch.zeros(len(xs), 3)
            for i, x in enumerate(xs):
                out[i] = x @ w
            return out
    """, "GF104") == []


@pytest.mark.parametrize("mask", ["y > 0.5", "~(y > 0.5)", "(y > 0.1) & (y < 0.9)", "torch.isnan(y)", "y.isnan() | (y < 0)"])
def test_masks_built_from_the_tensor_give_a_safe_masked_fill(mask):
    source = f"""
        import torch
        def f(a):
            y = torch.sigmoid(a)
            y[{mask}] = 0.0
            return y
    """
    assert findings(source, "GF104") == [(4, FixSafety.SAFE, Level.ERROR)]
    assert f"    y = y.masked_fill({mask}, 0.0)\n" in fixed(source, "GF104", unsafe=False)


@pytest.mark.parametrize("value", ["-math.inf", "np.nan", "torch.finfo(y.dtype).min", "float(\"-inf\")"])
def test_named_scalar_constants_are_scalars(value):
    source = f"""
        import math
        import numpy as np
        import torch
        def f(a):
            y = torch.sigmoid(a)
            y[y < 0.1] = {value}
            return y
    """
    assert f"    y = y.masked_fill(y < 0.1, {value})\n" in fixed(source, "GF104", unsafe=False)


def test_a_mask_of_unknown_shape_makes_masked_fill_unsafe():
    source = """
        import torch
        def f(a, b):
            y = torch.sigmoid(a)
            keep = b > 0
            y[keep] = float("-inf")
            return y
    """
    assert findings(source, "GF104") == [(5, FixSafety.UNSAFE, Level.ERROR)]
    assert '    y = y.masked_fill(keep, float("-inf"))\n' in fixed(source, "GF104")


def test_tensor_values_that_broadcast_use_where_and_others_clone():
    source = """
        import torch
        def f(a, b):
            y = torch.sigmoid(a)
            y[y > 0.9] = b.mean()
            z = torch.exp(a)
            z[z > 2] = torch.randn(3)
            return y, z
    """
    out = fixed(source, "GF104")
    assert "    y = torch.where(y > 0.9, b.mean(), y)\n" in out
    assert "    z = z.clone()\n    z[z > 2] = torch.randn(3)\n" in out


def test_the_fresh_name_for_a_value_avoids_names_in_use():
    source = """
        import torch
        def f(a):
            y_value = 1
            y = torch.sigmoid(a)
            y[1] = y[0] * y[2]
            return y, y_value
    """
    assert "    y_value_1 = y[0] * y[2]\n    y = y.clone()\n    y[1] = y_value_1\n" in fixed(source, "GF104")


def test_no_name_to_rebind_or_several_targets_is_display_only():
    source = """
        import torch
        def f(a):
            y = torch.sigmoid(a)
            y[0] = y[1] = 0.0
            return y
    """
    assert [s for _, s, _ in findings(source, "GF104")] == [FixSafety.DISPLAY_ONLY] * 2
    assert fixed(source, "GF104") == code(source)


def test_writing_into_an_existing_clone_is_not_flagged_again():
    assert findings("""
        import torch
        def f(a):
            y = torch.sigmoid(a)
            y = y.clone()
            y[:, 0] = 1.0
            return y
    """, "GF104") == []
