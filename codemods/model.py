"""The vocabulary shared by the engine, the rules and the front-ends."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # the front-ends read findings without loading libcst (a warm, cached run)
    import libcst as cst


class FixSafety(str, enum.Enum):
    """How far a rule's rewrite can be trusted (Ruff's three levels)."""

    SAFE = "safe"  # cannot change behaviour visible outside the rewritten lines
    UNSAFE = "unsafe"  # correct for autograd, but a caller or alias may see a difference
    DISPLAY_ONLY = "display-only"  # no automatic rewrite; the message says what to do

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class Level(str, enum.Enum):
    """How sure gradfix is that autograd breaks (issue 4's hazard levels)."""

    ERROR = "error"  # autograd will fail or give wrong gradients
    WARNING = "warning"  # possibly a hazard: the producer or the tensor-ness is unknown

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value

    @property
    def rank(self) -> int:
        return 2 if self is Level.ERROR else 1


class GradContext(str, enum.Enum):
    """Why an in-place construct needs no fix: autograd never records it."""

    NO_GRAD = "no_grad"
    INFERENCE_MODE = "inference_mode"
    GRAD_DISABLED = "set_grad_enabled(False)"
    AUTOGRAD_FUNCTION = "autograd.Function"
    OPTIMIZER_STEP = "optimizer step"
    INITIALIZER = "initializer"
    GRAD_BUFFER = ".grad"


@dataclass(frozen=True)
class Finding:
    """One reported construct. Lines are 1-based, columns 1-based (as Ruff prints them)."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int
    code: str
    name: str
    message: str
    fix_safety: FixSafety
    fix_title: Optional[str] = None
    level: Level = Level.ERROR
    # Set only when the engine was asked to keep findings that a context silences.
    context: Optional[GradContext] = None

    @property
    def fixable(self) -> bool:
        return self.fix_safety is not FixSafety.DISPLAY_ONLY

    def to_json(self) -> dict:
        data = asdict(self)
        data["fix_safety"] = self.fix_safety.value
        data["level"] = self.level.value
        data["context"] = self.context.value if self.context else None
        return data


# --- edits -----------------------------------------------------------------
# A fix is a small list of primitive edits on the parsed tree. Keeping them
# primitive lets fixes in the same statement compose (an inserted statement
# and a replaced sub-expression are applied by one transformer).


@dataclass(frozen=True)
class ReplaceNode:
    original: cst.CSTNode
    replacement: cst.CSTNode


@dataclass(frozen=True)
class InsertBefore:
    """Insert small statements before ``anchor`` (a small statement or a compound statement)."""

    anchor: cst.CSTNode
    statements: Sequence[cst.BaseSmallStatement]


@dataclass(frozen=True)
class RemoveStatement:
    anchor: cst.BaseSmallStatement


@dataclass(frozen=True)
class EnsureImport:
    """``import <module>`` at the top of the file unless it is already there."""

    module: str


Edit = ReplaceNode | InsertBefore | RemoveStatement | EnsureImport


@dataclass(frozen=True)
class Fix:
    title: str
    edits: tuple[Edit, ...]
    safety: FixSafety = FixSafety.SAFE


@dataclass(frozen=True)
class Report:
    """What a rule says about a node: the message and, when it can rewrite, the fix."""

    node: cst.CSTNode
    message: str
    fix: Optional[Fix] = None
    # The statement the fix belongs to: the engine applies at most one fix per
    # statement per pass, so overlapping rewrites never collide.
    statement: Optional[cst.CSTNode] = None
    # The tensor expression written to: the engine silences writes to ``.grad`` buffers.
    target: Optional[cst.BaseExpression] = None
    level: Level = Level.ERROR
    # The hazard is not where the node is: a module built in `__init__` with inplace=True
    # breaks autograd where forward uses it. The engine's no-grad/initializer contexts then
    # do not apply at the node; the rule has checked the contexts of the uses itself.
    ignore_context: bool = False

    @property
    def safety(self) -> FixSafety:
        return self.fix.safety if self.fix else FixSafety.DISPLAY_ONLY


@dataclass(frozen=True)
class Example:
    """A rule's own example: ``before`` must give ``findings`` reports and become ``after``."""

    before: str
    after: Optional[str] = None  # None: no change expected (a VALID example)
    unsafe_fixes: bool = False
    fix_warnings: bool = False  # `gradfix fix --level warning`
    findings: int = 1


@dataclass
class FixResult:
    source: str
    applied: dict[str, int] = field(default_factory=dict)  # rule code -> fixes applied
    remaining: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # fixes dropped because they broke the code

    @property
    def changed_count(self) -> int:
        return sum(self.applied.values())
