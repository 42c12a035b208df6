"""The in-place method table is torch's registry, regenerated and compared: it cannot drift."""

from __future__ import annotations

import pytest

from gradfix.codemods import optable

torch = pytest.importorskip("torch")


def test_data_file_matches_the_installed_torch():
    assert optable.DATA_FILE.read_text(encoding="utf-8") == optable.render(optable.generate()), (
        "stale table: run python scripts/generate_optable.py --write"
    )


def test_every_listed_method_mutates_its_tensor_and_twins_exist():
    for name, entry in optable.INPLACE_METHODS.items():
        assert name.endswith("_") and hasattr(torch.Tensor, name)
        if entry["rewrite"] == "twin":
            assert hasattr(torch.Tensor, entry["out_of_place"])


def test_metadata_methods_are_not_listed():
    for name in ("requires_grad_", "detach_", "retain_grad", "share_memory_"):
        assert name not in optable.INPLACE_METHODS


def test_a_listed_method_really_bumps_the_version_counter():
    # A measured check, not a trusted list: add_ and its twin behave as the table says.
    x = torch.ones(3)
    before = x._version
    x.add_(1)
    assert x._version == before + 1
    y = x.add(1)
    assert y is not x and x._version == before + 1
    assert optable.INPLACE_METHODS["add_"]["out_of_place"] == "add"
    assert optable.INPLACE_METHODS["zero_"]["rewrite"] == "overwrite"


def test_inplace_operators_follow_torch():
    x = torch.ones(2, 2)
    for op, dunder in optable.AUGMENTED_DUNDERS.items():
        assert (op in optable.INPLACE_OPERATORS) == hasattr(torch.Tensor, dunder)
    # `@=` rebinds in torch 2.13 (no __imatmul__): the table must not call it in-place.
    identity = id(x)
    x @= torch.eye(2)
    assert (id(x) == identity) == ("@=" in optable.INPLACE_OPERATORS)
