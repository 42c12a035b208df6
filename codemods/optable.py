"""In-place tensor methods and their out-of-place twins, read from torch's operator registry.

The table lives in ``data/inplace_methods.json`` so that linting never imports
torch. Regenerate it from the installed torch with::

    python scripts/generate_optable.py --write

``tests/test_optable.py`` regenerates it and compares, so it cannot drift.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

DATA_FILE = Path(__file__).with_name("data") / "inplace_methods.json"

# Mutate autograd metadata, not data: never a hazard.
NOT_DATA_MUTATIONS = frozenset({"requires_grad_", "detach_"})
# Change storage or size; no out-of-place form says the same thing.
NO_REWRITE = frozenset(
    {"set_", "resize_", "resize_as_", "resize_as_sparse_", "sparse_resize_",
     "sparse_resize_and_clear_", "_coalesced_", "as_strided_"}
)
# Overwrite every element whatever its old value: rewritten into a fresh buffer
# (``torch.empty_like(x).normal_()``). Other ops without a twin are rewritten on a clone.
OVERWRITES_ALL = frozenset(
    {"normal_", "uniform_", "cauchy_", "exponential_", "geometric_", "log_normal_", "random_",
     "_philox_normal_", "_philox_uniform_", "copy_", "fill_", "zero_"}
)
# In-place comparisons and logical ops keep the tensor's dtype; their twins return bool.
KEEPS_DTYPE = frozenset(
    {"eq_", "ne_", "lt_", "le_", "gt_", "ge_", "greater_", "greater_equal_", "less_",
     "less_equal_", "not_equal_", "logical_and_", "logical_or_", "logical_xor_", "logical_not_"}
)


# Augmented operators and the dunder Python tries first. Where torch.Tensor lacks
# the dunder (``__imatmul__`` in torch 2.13), Python falls back to ``x = x @ y``:
# nothing is written in place and GF101 stays silent.
AUGMENTED_DUNDERS = {
    "+=": "__iadd__", "-=": "__isub__", "*=": "__imul__", "/=": "__itruediv__",
    "//=": "__ifloordiv__", "%=": "__imod__", "**=": "__ipow__", "@=": "__imatmul__",
    "<<=": "__ilshift__", ">>=": "__irshift__", "&=": "__iand__", "|=": "__ior__", "^=": "__ixor__",
}


def _rewrite_kind(name: str, has_twin: bool) -> str:
    if name in NO_REWRITE:
        return "none"
    if has_twin:
        return "twin"
    return "overwrite" if name in OVERWRITES_ALL else "clone"


def _raises_inplace_error(build) -> Optional[bool]:
    """Run ``build`` (which modifies a saved tensor, or not); True if autograd complains."""
    try:
        build()
    except RuntimeError as error:
        return "modified by an inplace operation" in str(error)
    except Exception:  # noqa: BLE001 - the op does not take these arguments: no verdict
        return None
    return False


def measure_saved_tensors() -> dict[str, list[str]]:
    """Which ops' backward needs their output, or their input, measured on the installed torch.

    For each candidate: compute y = op(x), write in place into y (or into x), call
    backward, and record whether autograd raises the in-place error. Names are
    the op's last name component (``exp`` stands for torch.exp, Tensor.exp, F.exp).
    """
    import torch
    import torch.nn.functional as F

    def leaf():
        return torch.rand(2, 3, dtype=torch.float64, requires_grad=True) + 0.5

    candidates: dict[str, Any] = {}
    for schema in torch._C._jit_get_all_schemas():
        name = schema.name[len("aten::"):]
        if not schema.name.startswith("aten::") or name.startswith("_") or name.endswith("_"):
            continue
        if schema.overload_name not in ("", "Tensor") or not hasattr(torch, name):
            continue
        if len(schema.returns) != 1 or str(schema.returns[0].type) != "Tensor":
            continue
        tensors = [a.name for a in schema.arguments if str(a.type) == "Tensor"]
        if tensors == ["self"]:
            candidates[name] = (lambda f: (lambda x: f(x)))(getattr(torch, name))
        elif tensors == ["self", "other"]:
            candidates[name] = (lambda f: (lambda x: f(x, leaf())))(getattr(torch, name))
    for name in ("softmax", "log_softmax", "softmin"):
        candidates[name] = (lambda f: (lambda x: f(x, dim=-1)))(getattr(F, name))
    for name in ("relu", "relu6", "elu", "selu", "celu", "gelu", "silu", "mish", "leaky_relu", "hardtanh",
                 "hardsigmoid", "hardswish", "softplus", "softsign", "logsigmoid", "tanhshrink", "sigmoid", "tanh",
                 "normalize", "dropout"):
        candidates.setdefault(name, (lambda f: (lambda x: f(x)))(getattr(F, name)))
    candidates["linear"] = lambda x: F.linear(x, leaf().T.contiguous())
    candidates["layer_norm"] = lambda x: F.layer_norm(x, (3,), leaf()[0], leaf()[0])
    candidates["batch_norm"] = lambda x: F.batch_norm(x, None, None, leaf()[0], leaf()[0], training=True)
    candidates["pow"] = lambda x: torch.pow(x, 2)

    saves_output, saves_input = [], []
    for name, call in sorted(candidates.items()):
        def output_case(call=call):
            torch.manual_seed(0)
            y = call(leaf())
            y.add_(1)
            y.sum().backward()

        def input_case(call=call):
            torch.manual_seed(0)
            x = leaf() * 1
            y = call(x)
            x.add_(1)
            y.sum().backward()

        if _raises_inplace_error(output_case):
            saves_output.append(name)
        if _raises_inplace_error(input_case):
            saves_input.append(name)
    return {"saves_output": saves_output, "saves_input": saves_input}


def inplace_functions() -> dict[str, str]:
    """``torch.relu_`` -> ``torch.relu``, ``torch.nn.functional.elu_`` -> ``...elu``: module-level in-place functions."""
    import torch
    import torch.nn.functional as F

    table = {}
    for module, prefix in ((torch, "torch"), (F, "torch.nn.functional")):
        for name in dir(module):
            if name in NOT_DATA_MUTATIONS:
                continue
            if name.endswith("_") and not name.startswith("_") and callable(getattr(module, name)):
                twin = name[:-1]
                if hasattr(module, twin) and callable(getattr(module, twin)):
                    table[f"{prefix}.{name}"] = f"{prefix}.{twin}"
    return dict(sorted(table.items()))


def generate() -> dict[str, Any]:
    """Build the table from the installed torch (imports torch)."""
    import torch

    mutating: set[str] = set()
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::") or not schema.arguments:
            continue
        first = schema.arguments[0]
        alias = first.alias_info
        if first.name == "self" and alias is not None and alias.is_write:
            mutating.add(schema.name[len("aten::"):])
    methods: dict[str, dict[str, Any]] = {}
    for name in sorted(mutating):
        if not name.endswith("_") or name.startswith("__") or not hasattr(torch.Tensor, name):
            continue
        if name in NOT_DATA_MUTATIONS:
            continue
        twin = name[:-1]
        has_twin = hasattr(torch.Tensor, twin) and name not in NO_REWRITE
        methods[name] = {
            "out_of_place": twin if has_twin else None,
            "keeps_dtype": name in KEEPS_DTYPE,
            "rewrite": _rewrite_kind(name, has_twin),
        }
    tensor_methods = sorted(
        n for n in dir(torch.Tensor) if not n.startswith("_") and callable(getattr(torch.Tensor, n, None))
    )
    inplace_operators = sorted(op for op, dunder in AUGMENTED_DUNDERS.items() if hasattr(torch.Tensor, dunder))
    return {
        **measure_saved_tensors(),
        "inplace_functions": inplace_functions(),
        "inplace_operators": inplace_operators,
        "generated_from": f"torch {torch.__version__.split('+')[0]}",
        "inplace_methods": methods,
        "not_data_mutations": sorted(NOT_DATA_MUTATIONS),
        "tensor_methods": tensor_methods,
    }


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def _load_or_empty() -> dict[str, Any]:
    try:
        return load()
    except FileNotFoundError:  # only while bootstrapping the data file
        return {"inplace_methods": {}, "tensor_methods": [], "not_data_mutations": [], "inplace_operators": []}


_TABLE = _load_or_empty()
INPLACE_METHODS: dict[str, dict[str, Any]] = _TABLE["inplace_methods"]
INPLACE_OPERATORS: frozenset[str] = frozenset(_TABLE.get("inplace_operators", ()))
#: Ops whose backward needs their own output / their inputs (measured; see measure_saved_tensors).
SAVES_OUTPUT: frozenset[str] = frozenset(_TABLE.get("saves_output", ()))
SAVES_INPUT: frozenset[str] = frozenset(_TABLE.get("saves_input", ()))
#: Module-level in-place functions and their out-of-place twins (qualified names).
INPLACE_FUNCTIONS: dict[str, str] = dict(_TABLE.get("inplace_functions", {}))
TENSOR_METHODS: frozenset[str] = frozenset(_TABLE["tensor_methods"]) | frozenset(INPLACE_METHODS)


def data_file_main(argv, description: str, data_file: Path, generate_text, regenerate_hint: str) -> int:
    """The command line shared by gradfix's generated data files: print, --write, or --check."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", action="store_true", help=f"write {data_file.name}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the data file is stale")
    args = parser.parse_args(argv)
    text = generate_text()
    if args.write:
        data_file.parent.mkdir(parents=True, exist_ok=True)
        data_file.write_text(text, encoding="utf-8")
        print(f"wrote {data_file}")
        return 0
    if args.check:
        current = data_file.read_text(encoding="utf-8") if data_file.exists() else ""
        if current != text:
            print(f"{data_file} is stale: run {regenerate_hint}", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return data_file_main(argv, __doc__.splitlines()[0], DATA_FILE, lambda: render(generate()),
                          "python scripts/generate_optable.py --write")


if __name__ == "__main__":
    raise SystemExit(main())
