"""GF102: in-place tensor method (``x.add_(y)``)."""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ..context import RuleContext
from ..model import Report
from ..rule import Rule


class InplaceMethod(Rule):
    code = "GF102"
    name = "inplace-tensor-method"
    why = "placeholder"
    node_types = (cst.Call,)

    def check(self, node: cst.CSTNode, ctx: RuleContext) -> Iterator[Report]:
        return iter(())
