"""gradfix's engine and rules. Front-ends import from here.

The findings' vocabulary loads at once; the engine and the rules (and libcst, a second of
start-up) only when first used, so that a run answered from the cache never loads them.
"""

from .model import Finding, FixResult, FixSafety, GradContext, Level

_LAZY = {
    "ALL_RULES": "rules", "RULES_BY_CODE": "rules",
    "SourceSyntaxError": "engine", "check_source": "engine", "fix_source": "engine", "select_rules": "engine",
}

__all__ = [
    "ALL_RULES", "RULES_BY_CODE", "Finding", "FixResult", "FixSafety", "GradContext", "Level",
    "SourceSyntaxError", "check_source", "fix_source", "select_rules",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
