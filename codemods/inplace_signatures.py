"""``inplace=`` and ``out=`` parameters, and what modules and functions save for backward, read from torch.

GF105 needs every ``torch.nn.functional`` function and every ``torch.nn`` module
that takes an ``inplace`` parameter, with its position (``nn.ReLU(True)``,
``F.dropout(x, 0.5, True, True)``), and which producers' backward needs their
own output: an in-place activation right after one of those breaks autograd
(``nn.ReLU(inplace=True)`` then ``nn.Dropout(inplace=True)``), right after a
convolution or a batch norm it is correct. GF106 needs the torch functions
that accept ``out=``. All of it is derived from the installed torch (signatures,
the operator registry, and measurements: each module and function is run, its
output written in place, and ``backward()`` tells whether autograd needed it).

The table lives in ``data/inplace_signatures.json`` so that linting never
imports torch. Regenerate it from the installed torch with::

    python -m gradfix.codemods.inplace_signatures --write

``tests/test_rules_gf105_gf106.py`` regenerates it and compares, so it cannot drift.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

DATA_FILE = Path(__file__).with_name("data") / "inplace_signatures.json"

# Modules that hold other modules or parameters: not producers of their own.
CONTAINERS = frozenset({"Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict", "Container"})
# Input shapes tried, in order, until a module accepts one.
INPUT_SHAPES = ((2, 3), (2, 3, 4), (2, 3, 4, 4), (2, 3, 2, 2, 2))
# Positional constructor arguments tried, in order, until a module builds.
CONSTRUCTOR_ARGS: tuple[tuple, ...] = ((), (3,), (3, 3), (3, 3, 1))


def _raises_inplace_error(build: Callable[[], None]) -> Optional[bool]:
    """Run ``build`` (which writes in place into a result); True if autograd complains, None if it cannot run."""
    try:
        build()
    except RuntimeError as error:
        if "modified by an inplace operation" in str(error):
            return True
        return None
    except Exception:  # noqa: BLE001 - wrong shape, wrong arguments: no verdict
        return None
    return False


def _leaf(shape=(2, 3)):
    import torch

    torch.manual_seed(0)
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def _shares_memory(y, x) -> bool:
    """Is ``y`` ``x`` itself or a view of it?"""
    import torch

    if not isinstance(y, torch.Tensor):
        return False
    if y is x:
        return True
    base_x = x._base if x._base is not None else x
    base_y = y._base if y._base is not None else y
    return base_x is base_y or (y.numel() > 0 and y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr())


# --- inplace= parameters ---------------------------------------------------------------------------


def _inplace_index(function) -> Optional[int]:
    """Position of the ``inplace`` parameter (``self`` not counted), or None."""
    import inspect

    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return None
    names = [p.name for p in parameters if p.name != "self"]
    if "inplace" not in names:
        return None
    parameter = next(p for p in parameters if p.name == "inplace")
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
        return -1
    return names.index("inplace")


def _call_arguments(function, inplace: bool) -> dict[str, Any]:
    """Keyword arguments that make ``function`` run: required numbers, training mode, inplace."""
    import inspect

    kwargs: dict[str, Any] = {}
    for parameter in list(inspect.signature(function).parameters.values())[1:]:
        if parameter.name == "self":
            continue
        if parameter.name == "training":
            kwargs["training"] = True  # dropouts and rrelu do nothing in eval mode
        elif parameter.name == "inplace":
            kwargs["inplace"] = inplace
        elif parameter.default is inspect.Parameter.empty and parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            kwargs[parameter.name] = 0.1  # threshold(input, threshold, value)
    return kwargs


def measure_functional() -> dict[str, dict[str, Any]]:
    """``torch.nn.functional`` functions with ``inplace``: its index and, measured, what they save."""
    import torch.nn.functional as F

    table: dict[str, dict[str, Any]] = {}
    for name in sorted(dir(F)):
        function = getattr(F, name)
        if name.startswith("_") or not callable(function):
            continue
        index = _inplace_index(function)
        if index is None:
            continue

        def run(inplace: bool, function=function) -> None:
            x = _leaf().clone()
            y = function(x, **_call_arguments(function, inplace))
            y.add_(1)
            y.sum().backward()

        def returns_input(function=function) -> bool:
            x = _leaf().clone()
            return function(x, **_call_arguments(function, True)) is x

        table[name] = {
            "inplace_index": index,
            "saves_output": _raises_inplace_error(lambda: run(False)),
            "inplace_saves_output": _raises_inplace_error(lambda: run(True)),
            "inplace_returns_input": returns_input(),
        }
    return table


def _build_module(cls, **kwargs):
    """An instance of ``cls`` and an input it accepts, or (None, None)."""
    import torch

    for args in CONSTRUCTOR_ARGS:
        try:
            module = cls(*args, **kwargs).to(torch.float64)
        except Exception:  # noqa: BLE001 - needs other arguments
            continue
        for shape in INPUT_SHAPES:
            try:
                out = module(_leaf(shape).clone())
            except Exception:  # noqa: BLE001 - another shape, or not a one-tensor module
                continue
            if isinstance(out, torch.Tensor) and out.is_floating_point() and out.requires_grad:
                return (lambda args=args: cls(*args, **kwargs).to(torch.float64)), shape
    return None, None


def _module_classes() -> list[tuple[str, type]]:
    import torch.nn as nn

    found = []
    for name in sorted(dir(nn)):
        cls = getattr(nn, name)
        if isinstance(cls, type) and issubclass(cls, nn.Module) and not name.startswith("_") and name not in CONTAINERS:
            found.append((name, cls))
    return found


def measure_modules() -> dict[str, dict[str, Any]]:
    """Every ``torch.nn`` module gradfix can build and run on one tensor: what it saves, whether it
    returns its input (or a view of it), whether it has parameters; with ``inplace``, the same in place."""
    table: dict[str, dict[str, Any]] = {}
    for name, cls in _module_classes():
        index = _inplace_index(cls.__init__)
        make, shape = _build_module(cls)
        if make is None:
            if index is not None:
                table[name] = {"inplace_index": index}
            continue

        def output_written(inplace: Optional[bool], make=make, shape=shape, cls=cls) -> Optional[bool]:
            def run() -> None:
                module = make() if inplace is None else _build_module(cls, inplace=inplace)[0]()
                y = module(_leaf(shape).clone())
                y.add_(1)
                y.sum().backward()

            return _raises_inplace_error(run)

        def aliases(train: bool, make=make, shape=shape) -> bool:
            module = make().train(train)
            x = _leaf(shape).clone()
            return _shares_memory(module(x), x)

        entry: dict[str, Any] = {
            "saves_output": output_written(None),
            "aliases_input": "always" if aliases(True) else "eval" if aliases(False) else "never",
            "has_parameters": any(p.requires_grad for p in make().parameters()),
        }
        if index is not None:
            entry["inplace_index"] = index
            entry["inplace_saves_output"] = output_written(True)
        table[name] = entry
    return table


def _function_recipes() -> dict[str, Callable[[Any], Any]]:
    """Common producers outside the measured registry ops: convolutions, pooling, arithmetic."""
    import torch
    import torch.nn.functional as F

    def weight(*shape):
        return _leaf(shape)

    return {
        "add": lambda x: x + weight(*x.shape),
        "sub": lambda x: x - weight(*x.shape),
        "mul": lambda x: x * weight(*x.shape),
        "div": lambda x: x / (weight(*x.shape).abs() + 1),
        "matmul": lambda x: x @ weight(x.shape[-1], 3),
        "mm": lambda x: torch.mm(x, weight(x.shape[-1], 3)),
        "cat": lambda x: torch.cat([x, weight(*x.shape)]),
        "stack": lambda x: torch.stack([x, weight(*x.shape)]),
        "clone": lambda x: x.clone(),
        "linear": lambda x: F.linear(x, weight(3, x.shape[-1]), weight(3)),
        "bilinear": lambda x: F.bilinear(x, x, weight(3, 3, 3)),
        "conv1d": lambda x: F.conv1d(x.reshape(2, 3, 1), weight(3, 3, 1)),
        "conv2d": lambda x: F.conv2d(x.reshape(2, 3, 1, 1), weight(3, 3, 1, 1)),
        "conv3d": lambda x: F.conv3d(x.reshape(2, 3, 1, 1, 1), weight(3, 3, 1, 1, 1)),
        "conv_transpose2d": lambda x: F.conv_transpose2d(x.reshape(2, 3, 1, 1), weight(3, 3, 1, 1)),
        "batch_norm": lambda x: F.batch_norm(x, None, None, weight(3), weight(3), training=True),
        "instance_norm": lambda x: F.instance_norm(x.reshape(2, 3, 1).expand(2, 3, 2) * 1, weight=weight(3), bias=weight(3)),
        "layer_norm": lambda x: F.layer_norm(x, (3,), weight(3), weight(3)),
        "group_norm": lambda x: F.group_norm(x, 3, weight(3), weight(3)),
        "max_pool2d": lambda x: F.max_pool2d(x.reshape(1, 2, 3), 1),
        "avg_pool2d": lambda x: F.avg_pool2d(x.reshape(1, 2, 3), 1),
        "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x.reshape(1, 2, 3), 1),
        "interpolate": lambda x: F.interpolate(x.reshape(1, 2, 3), scale_factor=2.0),
        "pad": lambda x: F.pad(x, (1, 1)),
        "embedding": lambda x: F.embedding(torch.tensor([0, 1]), x),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "exp": torch.exp,
        "softmax": lambda x: torch.softmax(x, -1),
        "log_softmax": lambda x: torch.log_softmax(x, -1),
        "gelu": F.gelu,
        "softplus": F.softplus,
    }


def measure_functions() -> dict[str, bool]:
    """Whether each common producer's backward needs its output, measured."""
    results = {}
    for name, recipe in sorted(_function_recipes().items()):
        def run(recipe=recipe) -> None:
            y = recipe(_leaf().clone())
            y.add_(1)
            y.sum().backward()

        verdict = _raises_inplace_error(run)
        if verdict is not None:
            results[name] = verdict
    return results


# --- out= ------------------------------------------------------------------------------------------


def out_functions() -> list[str]:
    """Qualified names of the public torch functions with an ``out=`` overload in the operator registry."""
    import inspect

    import torch

    namespaces = (
        (torch, "torch", ""), (torch.linalg, "torch.linalg", "linalg_"), (torch.special, "torch.special", "special_"),
        (torch.fft, "torch.fft", "fft_"), (torch.nn.functional, "torch.nn.functional", ""),
    )
    ops = set()
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        for argument in schema.arguments:
            alias = argument.alias_info
            if argument.name == "out" and argument.kwarg_only and alias is not None and alias.is_write:
                ops.add(schema.name[len("aten::"):])
    names = set()
    for op in ops:
        if op.startswith("_"):
            continue
        for module, prefix, strip in namespaces:
            if not op.startswith(strip) or not hasattr(module, op[len(strip):]):
                continue
            function = getattr(module, op[len(strip):])
            try:
                parameters = inspect.signature(function).parameters
            except (TypeError, ValueError):
                if _binding_takes_out(function):
                    names.add(f"{prefix}.{op[len(strip):]}")
                continue
            if "out" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                names.add(f"{prefix}.{op[len(strip):]}")
    return sorted(names)


def _binding_takes_out(function) -> bool:
    """Does a builtin binding accept ``out=``? Its argument parser says so when called with one.

    The registry has ``relu.out``, but ``torch.relu(x, out=y)`` is a TypeError: the Python
    binding decides, so ask it (with a small tensor; any other complaint means out= parsed).
    """
    import re

    import torch

    try:
        function(torch.ones(2, 2), out=torch.empty(0))
    except TypeError as error:
        message = str(error)
        if "unexpected keyword argument 'out'" in message:
            return False
        if "expected one of" in message and not re.search(r"\bout\b", message.split("expected one of", 1)[1]):
            return False
    except Exception:  # noqa: BLE001 - out= was accepted, the values were not
        pass
    return True


# --- the data file -------------------------------------------------------------------------------------


def generate() -> dict[str, Any]:
    """Build the table from the installed torch (imports and runs torch)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "functional": measure_functional(),
            "functions_saving_output": measure_functions(),
            "generated_from": f"torch {torch.__version__.split('+')[0]}",
            "modules": measure_modules(),
            "out_functions": out_functions(),
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
        return {}


_TABLE = _load_or_empty()
#: ``torch.nn.functional`` functions taking ``inplace``: ``{"relu": {"inplace_index": 1, "saves_output": ...,
#: "inplace_saves_output": ..., "inplace_returns_input": ...}}``.
FUNCTIONAL: dict[str, dict[str, Any]] = dict(_TABLE.get("functional", {}))
#: ``torch.nn`` modules, measured: ``saves_output``, ``aliases_input`` (always / eval / never),
#: ``has_parameters``; modules taking ``inplace`` add ``inplace_index`` and ``inplace_saves_output``.
MODULES: dict[str, dict[str, Any]] = dict(_TABLE.get("modules", {}))
INPLACE_MODULES: dict[str, dict[str, Any]] = {k: v for k, v in MODULES.items() if "inplace_index" in v}
#: Common producers (``conv2d``, ``add``, ``sigmoid``, ...) and whether their backward needs their output.
FUNCTIONS_SAVING_OUTPUT: dict[str, bool] = dict(_TABLE.get("functions_saving_output", {}))
#: Qualified names of the torch functions that accept ``out=``.
OUT_FUNCTIONS: frozenset[str] = frozenset(_TABLE.get("out_functions", ()))


def main(argv: list[str] | None = None) -> int:
    from .optable import data_file_main

    return data_file_main(argv, __doc__.splitlines()[0], DATA_FILE, lambda: render(generate()),
                          "python -m gradfix.codemods.inplace_signatures --write")


if __name__ == "__main__":
    raise SystemExit(main())
