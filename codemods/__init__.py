"""gradfix's engine and rules. Front-ends import from here."""

from .engine import SourceSyntaxError, check_source, fix_source, select_rules
from .model import Finding, FixResult, FixSafety, GradContext, Level
from .rules import ALL_RULES, RULES_BY_CODE

__all__ = [
    "ALL_RULES", "RULES_BY_CODE", "Finding", "FixResult", "FixSafety", "GradContext", "Level",
    "SourceSyntaxError", "check_source", "fix_source", "select_rules",
]
