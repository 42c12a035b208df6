"""How sure is gradfix that an in-place write breaks autograd? (issue 4's hazard levels)

``hazard_level(ctx, target, site)`` answers for a write into ``target`` at
``site``: ``Level.ERROR`` (autograd will fail or give wrong gradients),
``Level.WARNING`` (possibly: the producer is unknown), or ``None`` (no finding:
nothing autograd needs is overwritten).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import libcst as cst

from .model import Level
from .tensors import TensorKind

if TYPE_CHECKING:  # pragma: no cover
    from .context import RuleContext


def hazard_level(ctx: "RuleContext", target: cst.BaseExpression, site: cst.CSTNode) -> Optional[Level]:
    kind = ctx.tensor_kind(target)
    if kind is TensorKind.NOT_TENSOR:
        return None
    return Level.ERROR if kind is TensorKind.TENSOR else Level.WARNING
