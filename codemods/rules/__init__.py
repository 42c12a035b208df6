"""The rule registry: one module per rule, listed here in code order."""

from __future__ import annotations

from ..rule import Rule
from .gf101_augmented_assignment import AugmentedAssignment
from .gf102_inplace_method import InplaceMethod
from .gf103_data_write import DataWrite
from .gf104_subscript_assignment import SubscriptAssignment
from .gf105_inplace_argument import InplaceArgument
from .gf106_out_argument import OutArgument
from .gf107_inplace_function import InplaceFunction

ALL_RULES: tuple[type[Rule], ...] = (AugmentedAssignment, InplaceMethod, DataWrite, SubscriptAssignment, InplaceArgument, OutArgument, InplaceFunction)
RULES_BY_CODE: dict[str, type[Rule]] = {rule.code: rule for rule in ALL_RULES}

__all__ = ["ALL_RULES", "RULES_BY_CODE"]
