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
from typing import Any

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
TENSOR_METHODS: frozenset[str] = frozenset(_TABLE["tensor_methods"]) | frozenset(INPLACE_METHODS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DATA_FILE.name}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the data file is stale")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.write:
        DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
        DATA_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {DATA_FILE}")
        return 0
    if args.check:
        current = DATA_FILE.read_text(encoding="utf-8") if DATA_FILE.exists() else ""
        if current != text:
            print(f"{DATA_FILE} is stale: run python scripts/generate_optable.py --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
