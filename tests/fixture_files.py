"""Reading the fixtures under ``fixtures/<CODE>/``.

A fixture ``name.py`` starts with a header of comments:

    # gradfix fixture: what it shows
    # original: raises RuntimeError: <start of the message>   (or: runs)
    # fix: --unsafe-fixes --level warning                      (optional flags of gradfix fix)
    # expect: LINE:COL CODE SAFETY [LEVEL]                     (one per finding; LEVEL: error (default) or warning)

``name.fixed.py``, when present, is exactly what ``gradfix fix`` (with the
header's flags) makes of it. Without it the file must come out unchanged.
Files named ``neg_*.py`` are negatives: no finding, never changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
_EXPECT = re.compile(r"^# expect: (\d+):(\d+) (GF\d+) (safe|unsafe|display-only)(?: (error|warning))?\s*$")
_RAISES = re.compile(r"^# original: raises (\w+): (.+?)\s*$")


@dataclass
class Fixture:
    path: Path
    description: str
    original_raises: Optional[tuple[str, str]]  # (exception type, message start); None: runs
    unsafe_fixes: bool
    fix_warnings: bool  # `--level warning`: warnings are fixed too
    expected: list[tuple[int, int, str, str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"

    @property
    def fixed_path(self) -> Optional[Path]:
        candidate = self.path.with_name(self.path.stem + ".fixed.py")
        return candidate if candidate.exists() else None

    @property
    def fix_options(self) -> dict:
        """Keyword arguments of fix_source that match the header's flags."""
        from gradfix.codemods import Level

        return {"unsafe_fixes": self.unsafe_fixes, "level": Level.WARNING if self.fix_warnings else Level.ERROR}

    @property
    def is_negative(self) -> bool:
        return self.path.name.startswith("neg_")


def parse(path: Path) -> Fixture:
    description = ""
    raises = None
    runs = False
    unsafe = False
    warnings = False
    expected = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# gradfix fixture:"):
            description = line.split(":", 1)[1].strip()
        elif line.strip() == "# original: runs":
            runs = True
        elif match := _RAISES.match(line):
            raises = (match.group(1), match.group(2))
        elif line.startswith("# fix:"):
            flags = line.split(":", 1)[1].split()
            unsafe = "--unsafe-fixes" in flags
            warnings = "--level" in flags and flags[flags.index("--level") + 1] == "warning"
        elif match := _EXPECT.match(line):
            expected.append((int(match.group(1)), int(match.group(2)), match.group(3), match.group(4),
                             match.group(5) or "error"))
    if not description or not (runs or raises):
        raise ValueError(f"{path}: fixture header needs '# gradfix fixture:' and '# original:' lines")
    return Fixture(path, description, raises, unsafe, warnings, expected)


def all_fixtures() -> list[Fixture]:
    return [
        parse(path)
        for path in sorted(FIXTURES.glob("GF*/*.py"))
        if not path.name.endswith(".fixed.py")
    ]
