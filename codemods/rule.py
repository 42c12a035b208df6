"""The base class every rule derives from.

A rule knows which nodes it looks at, what it reports and how it rewrites;
it knows nothing about files, the CLI or editors.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Iterator

import libcst as cst

from .model import Example, Report

if TYPE_CHECKING:  # pragma: no cover
    from .context import RuleContext


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    #: One line: what goes wrong under autograd.
    why: ClassVar[str]
    #: Longer prose for the rule's documentation page.
    explanation: ClassVar[str] = ""
    #: When the construct is deliberately left alone.
    not_flagged: ClassVar[str] = ""
    #: When the fix is safe, unsafe or display-only.
    fix_safety: ClassVar[str] = ""
    node_types: ClassVar[tuple[type[cst.CSTNode], ...]]
    #: Text that any finding of this rule must contain. Files without it are not parsed by libcst.
    prescreen: ClassVar["re.Pattern[str]"]
    examples: ClassVar[tuple[Example, ...]] = ()

    def check(self, node: cst.CSTNode, ctx: "RuleContext") -> Iterator[Report]:
        raise NotImplementedError

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<{self.code} {self.name}>"
