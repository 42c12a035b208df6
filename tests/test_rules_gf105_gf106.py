"""GF105 (inplace=True) and GF106 (out=): the data table is torch's, regenerated and compared;
the measured facts hold; the rules' levels follow the order in which modules run."""

from __future__ import annotations

import textwrap

import pytest

from gradfix.codemods import Level, check_source, fix_source
from gradfix.codemods import inplace_signatures as sig
from gradfix.codemods.rules.gf105_inplace_argument import InplaceArgument
from gradfix.codemods.rules.gf106_out_argument import OutArgument


def findings(source: str, code: str):
    return [(f.line, f.level.value, f.fix_safety.value) for f in check_source(textwrap.dedent(source), select=[code])]


# --- the table ------------------------------------------------------------------------------------


def test_data_file_matches_the_installed_torch():
    pytest.importorskip("torch")
    assert sig.DATA_FILE.read_text(encoding="utf-8") == sig.render(sig.generate()), (
        "stale table: run python -m gradfix.codemods.inplace_signatures --write"
    )


def test_inplace_positions_follow_the_signatures():
    torch = pytest.importorskip("torch")
    import inspect

    assert sig.INPLACE_MODULES["ReLU"]["inplace_index"] == 0
    assert sig.INPLACE_MODULES["Dropout"]["inplace_index"] == 1
    assert sig.INPLACE_MODULES["Hardtanh"]["inplace_index"] == 2
    assert sig.FUNCTIONAL["dropout"]["inplace_index"] == 3
    assert sig.FUNCTIONAL["relu"]["inplace_index"] == 1
    for name, entry in sig.FUNCTIONAL.items():
        parameters = [p for p in inspect.signature(getattr(torch.nn.functional, name)).parameters]
        assert parameters[entry["inplace_index"]] == "inplace"
    for name, entry in sig.INPLACE_MODULES.items():
        parameters = [p for p in inspect.signature(getattr(torch.nn, name).__init__).parameters if p != "self"]
        assert parameters[entry["inplace_index"]] == "inplace"


def _pair_raises(first, second) -> bool:
    import torch

    x = torch.randn(4, 3, requires_grad=True)
    try:
        torch.nn.Sequential(first, second)(x * 1).sum().backward()
    except RuntimeError as error:
        assert "modified by an inplace operation" in str(error)
        return True
    return False


def test_measured_pairs_really_raise_as_the_table_says():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    assert sig.INPLACE_MODULES["ReLU"]["inplace_saves_output"] is True
    assert _pair_raises(nn.ReLU(inplace=True), nn.Dropout(inplace=True))
    assert sig.INPLACE_MODULES["SiLU"]["inplace_saves_output"] is False
    assert not _pair_raises(nn.SiLU(inplace=True), nn.Dropout(inplace=True))
    # LeakyReLU saves its input out of place, its output in place.
    assert sig.INPLACE_MODULES["LeakyReLU"]["saves_output"] is False
    assert sig.INPLACE_MODULES["LeakyReLU"]["inplace_saves_output"] is True
    assert not _pair_raises(nn.LeakyReLU(), nn.Dropout(inplace=True))
    assert _pair_raises(nn.LeakyReLU(inplace=True), nn.Dropout(inplace=True))
    assert sig.MODULES["Sigmoid"]["saves_output"] is True
    assert _pair_raises(nn.Sigmoid(), nn.ReLU(inplace=True))
    assert sig.MODULES["BatchNorm1d"]["saves_output"] is False
    assert not _pair_raises(nn.BatchNorm1d(3), nn.ReLU(inplace=True))
    assert sig.MODULES["Dropout"]["aliases_input"] == "eval"


def test_out_functions_come_from_the_registry():
    torch = pytest.importorskip("torch")
    for name in ("torch.add", "torch.mul", "torch.cat", "torch.mm", "torch.linalg.norm"):
        assert name in sig.OUT_FUNCTIONS
    assert "torch.relu" not in sig.OUT_FUNCTIONS  # no out overload
    out = torch.empty(3)
    torch.add(torch.ones(3), 1, out=out)
    assert out.eq(2).all()
    with pytest.raises(RuntimeError, match="out=... arguments don't support automatic differentiation"):
        torch.add(torch.ones(3, requires_grad=True), 1, out=torch.empty(3))


def test_linting_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from gradfix.codemods import check_source; "
            "check_source('import torch\\nfrom torch import nn\\nm = nn.Sequential(nn.Tanh(), nn.ReLU(True))\\n'); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# --- GF105 ---------------------------------------------------------------------------------------


def test_positional_inplace_is_found_by_the_prescreen_and_the_rule():
    source = "import torch\nfrom torch import nn\nm = nn.Sequential(nn.Tanh(), nn.ReLU(True))\n"
    assert InplaceArgument.prescreen.search(source)
    assert findings(source, "GF105") == [(3, "error", "safe")]
    assert fix_source(source).source.endswith("nn.Sequential(nn.Tanh(), nn.ReLU())\n")


def test_positional_true_followed_by_positionals_becomes_false():
    source = "import torch\nimport torch.nn.functional as F\ndef f(x):\n    return F.hardtanh(torch.exp(x), -1.0, 1.0, True)\n"
    assert fix_source(source).source.endswith("F.hardtanh(torch.exp(x), -1.0, 1.0)\n")
    source = "import torch\nfrom torch import nn\nm = nn.Sequential(nn.Sigmoid(), nn.Hardtanh(-1.0, 1.0, True, None))\n"
    assert fix_source(source).source.endswith("nn.Hardtanh(-1.0, 1.0, False, None))\n")


def test_resnet_block_and_conv_bn_relu_are_quiet():
    source = """
        import torch
        from collections import OrderedDict
        from torch import nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 3, 3, padding=1)
                self.bn = nn.BatchNorm2d(3)
                self.relu = nn.ReLU(inplace=True)
                self.stem = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 3, 1)), ("relu", nn.ReLU(inplace=True))]))

            def forward(self, x):
                out = self.relu(self.bn(self.conv(x)))
                out = self.bn(self.conv(out))
                out += x
                return self.relu(out)
    """
    assert findings(source, "GF105") == []
    # Without the second conv and bn, `out += x` writes into ReLU's saved output, and so does the second ReLU.
    broken = source.replace("                out = self.bn(self.conv(out))\n", "")
    assert findings(broken, "GF105") == [(11, "error", "safe")]


def test_orderedict_chain_after_softmax_is_an_error():
    source = """
        import torch
        from collections import OrderedDict
        from torch import nn
        head = nn.Sequential(OrderedDict([("fc", nn.Linear(3, 3)), ("sm", nn.Softmax(-1)), ("drop", nn.Dropout(0.1, inplace=True))]))
    """
    assert findings(source, "GF105") == [(5, "error", "safe")]


def test_first_module_of_a_chain_is_a_warning_with_an_unsafe_fix():
    source = "import torch\nfrom torch import nn\nm = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(3, 3))\n"
    assert findings(source, "GF105") == [(3, "warning", "unsafe")]


def test_a_module_used_only_under_no_grad_is_quiet_and_one_used_in_forward_is_not_silenced_by_init():
    template = """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.act = nn.Tanh()
                self.drop = nn.Dropout(0.1, inplace=True)

            def forward(self, x):
                {body}
    """
    quiet = template.format(body="with torch.no_grad():\n                    return self.drop(self.act(x))")
    assert findings(quiet, "GF105") == []
    loud = template.format(body="return self.drop(self.act(x))")
    assert findings(loud, "GF105") == [(9, "error", "safe")]


def test_dropout_between_tanh_and_an_inplace_relu_is_a_warning():
    # Dropout returns its input in eval mode: then ReLU overwrites Tanh's output.
    source = "import torch\nfrom torch import nn\nm = nn.Sequential(nn.Tanh(), nn.Dropout(0.1), nn.ReLU(inplace=True))\n"
    assert findings(source, "GF105") == [(3, "warning", "safe")]


def test_a_result_discarded_module_call_makes_the_fix_unsafe():
    source = """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.relu = nn.ReLU(inplace=True)

            def forward(self, x):
                h = torch.sigmoid(x)
                self.relu(h)
                return h
    """
    assert findings(source, "GF105") == [(8, "error", "unsafe")]


def test_functional_input_read_later_is_rebound():
    source = textwrap.dedent("""
        import torch
        import torch.nn.functional as F

        def f(x):
            h = torch.exp(x)
            y = F.relu(h, inplace=True)
            return y + h
    """)
    assert findings(source, "GF105") == [(7, "error", "safe")]
    assert "    h = F.relu(h)\n    y = h\n    return y + h\n" in fix_source(source).source


def test_inplace_false_and_expressions_are_not_flagged():
    source = "import torch\nfrom torch import nn\ndef f(flag):\n    return nn.Sequential(nn.Tanh(), nn.ReLU(inplace=False), nn.Dropout(inplace=flag))\n"
    assert findings(source, "GF105") == []


# --- GF106 ---------------------------------------------------------------------------------------


def test_out_with_a_parameter_is_an_error_and_plain_tensors_are_quiet():
    source = """
        import torch
        from torch import nn
        w = nn.Parameter(torch.ones(3))
        a = torch.zeros(3)
        buf = torch.empty(3)
        torch.add(a, a, out=buf)
        torch.add(a, w, out=buf)
    """
    assert findings(source, "GF106") == [(8, "error", "safe")]


def test_out_with_unknown_inputs_is_a_warning_fixed_only_on_request():
    source = "import torch\ndef f(x):\n    buf = torch.empty(3)\n    torch.exp(x, out=buf)\n    return buf\n"
    assert findings(source, "GF106") == [(4, "warning", "safe")]
    assert fix_source(source).source == source
    assert "    buf = torch.exp(x)\n" in fix_source(source, level=Level.WARNING).source


def test_out_into_a_view_is_display_only():
    source = "import torch\nw = torch.ones(3, requires_grad=True)\nbuf = torch.empty(6)\ntorch.exp(w, out=buf[:3])\n"
    assert findings(source, "GF106") == [(4, "error", "display-only")]


def test_out_into_a_buffer_with_an_explicit_dtype_is_unsafe():
    source = "import torch\nw = torch.ones(3, requires_grad=True)\nbuf = torch.empty(3, dtype=torch.float64)\ntorch.exp(w, out=buf)\n"
    assert findings(source, "GF106") == [(4, "error", "unsafe")]


def test_prescreen_ignores_plain_assignments_to_out():
    assert not OutArgument.prescreen.search("out = self.conv(x)\nout == y\n")
    assert OutArgument.prescreen.search("torch.add(a, b,\n          out=c)")


def test_appended_layers_follow_the_previous_append():
    source = """
        import torch
        from torch import nn

        def head(n):
            layers = []
            for _ in range(n):
                layers.append(nn.Conv2d(3, 3, 1))
                layers.append(nn.ReLU(True))
                layers.append(nn.Softmax(dim=1))
                layers.append(nn.Dropout(0.1, True))
            return nn.Sequential(*layers)
    """
    assert findings(source, "GF105") == [(11, "error", "safe")]


def test_a_conditional_constructor_is_followed_to_its_uses():
    source = """
        import torch
        from torch import nn

        class Head(nn.Module):
            def __init__(self, normed):
                super().__init__()
                self.conv = nn.Conv2d(3, 3, 1)
                self.act = nn.ReLU(inplace=True) if normed else nn.Softplus()

            def forward(self, x):
                return self.act(self.conv(x))
    """
    assert findings(source, "GF105") == []
