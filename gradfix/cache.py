"""The per-file result cache: a second run analyses only the files that changed.

Layout, as Ruff's ``.ruff_cache``::

    .gradfix_cache/
        .gitignore            "*": never committed
        CACHEDIR.TAG          backup tools skip the folder
        0.1.0-<fingerprint>/  one folder per gradfix build
            ab/ab12...        one entry per (file path, command, settings)

The folder name carries gradfix's version and a hash of its own engine sources
(so an edited rule in an editable install starts a fresh cache), of libcst's
version and of Python's. An entry is found by the file's display path and the
settings, and holds a SHA-256 of the file's bytes: a hit needs the very same
content, so an edit is never masked, whatever the file's mtime says.

Entries are written atomically (temp file, rename). A corrupt, truncated or
unreadable entry counts as a miss. A cache folder that cannot be written is
reported once and the run goes on without storing anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from . import __version__
from .codemods import Finding, FixSafety, GradContext, Level
from .config import Settings

CACHE_DIR_NAME = ".gradfix_cache"
#: Where `gradfix trace` writes its findings unless told otherwise, and where the editor reads them.
DEFAULT_TRACE_FILE = os.path.join(CACHE_DIR_NAME, "trace.json")
#: Overrides the cache folder (as RUFF_CACHE_DIR does), e.g. for CI caches.
CACHE_DIR_ENV = "GRADFIX_CACHE_DIR"
FORMAT = 1  # bump when the entry layout changes

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by gradfix.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
GITIGNORE = "# Automatically created by gradfix.\n*\n"

# Sources whose change can change a file's findings: the whole engine, and the front-end
# code between a file's bytes and its outcome.
_FRONT_END_SOURCES = ("runner.py", "files.py", "config.py", "cache.py")


def default_cache_dir(cwd: Optional[str] = None) -> Path:
    """``$GRADFIX_CACHE_DIR``, else ``.gradfix_cache`` in the project root.

    The project root is the nearest folder at or above ``cwd`` with a
    ``pyproject.toml``, else ``cwd`` itself.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    start = Path(os.path.abspath(cwd or os.getcwd()))
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / CACHE_DIR_NAME
    return start / CACHE_DIR_NAME


_fingerprint: Optional[str] = None


def engine_fingerprint() -> str:
    """A short hash of everything that decides a file's findings besides its bytes and the settings."""
    global _fingerprint
    if _fingerprint is None:
        from . import codemods

        digest = hashlib.sha256()
        digest.update(f"{FORMAT}\0{__version__}\0{sys.version_info[:3]}\0{_libcst_version()}\0".encode())
        engine_root = Path(codemods.__file__).resolve().parent
        sources = sorted(p for p in engine_root.rglob("*") if p.suffix in (".py", ".json") and p.is_file())
        front_end_root = Path(__file__).resolve().parent
        sources += [front_end_root / name for name in _FRONT_END_SOURCES]
        for source in sources:
            digest.update(source.name.encode() + b"\0")
            try:
                digest.update(source.read_bytes())
            except OSError:
                digest.update(b"<unreadable>")
        _fingerprint = digest.hexdigest()[:16]
    return _fingerprint


def _libcst_version() -> str:
    try:
        from importlib.metadata import version

        return version("libcst")
    except Exception:  # pragma: no cover - libcst is a dependency
        return "?"


def settings_key(settings: Settings, command: str) -> str:
    """Everything in the settings that the engine sees, plus the command (check or fix)."""
    fields = {name: (value.value if hasattr(value, "value") else value)
              for name, value in dataclasses.asdict(settings).items()}
    return json.dumps({"command": command, **fields}, sort_keys=True, default=str)


@dataclasses.dataclass
class CachedOutcome:
    findings: list[Finding]
    errors: list[str]


class Cache:
    """Lookups and stores for one run (one command, one set of settings).

    Picklable (plain paths and strings), so pool workers store their own results.
    """

    def __init__(self, root: Path, settings: Settings, command: str) -> None:
        self.root = Path(root)
        self.folder = self.root / f"{__version__}-{engine_fingerprint()}"
        self.settings_key = settings_key(settings, command)
        self.writable = True

    # --- setting up ---------------------------------------------------------------------

    def prepare(self) -> Optional[str]:
        """Create the folders; a warning (once per run) when the cache cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for name, text in (("CACHEDIR.TAG", CACHEDIR_TAG), (".gitignore", GITIGNORE)):
                marker = self.root / name
                if not marker.exists():
                    _write_atomic(marker, text.encode())
            self.folder.mkdir(exist_ok=True)
            probe = self.folder / ".write-probe"
            _write_atomic(probe, b"")
            probe.unlink()
        except OSError as error:
            self.writable = False
            reason = error.strerror or str(error)
            return f"cannot write the cache in {self.root} ({reason}); running without storing results"
        return None

    # --- entries ---------------------------------------------------------------------------

    def _slot(self, display: str) -> Path:
        name = hashlib.sha256(f"{display}\0{self.settings_key}".encode("utf-8", "surrogateescape")).hexdigest()[:40]
        return self.folder / name[:2] / name

    def _content_hash(self, data: bytes) -> str:
        digest = hashlib.sha256(self.settings_key.encode())
        digest.update(b"\0")
        digest.update(data)
        return digest.hexdigest()

    def lookup(self, display: str, read: Callable[[], bytes]) -> Optional[CachedOutcome]:
        """The stored outcome for exactly the bytes ``read()`` gives, or None (missing, stale or unreadable entry).

        ``read`` is called only when there is an entry (a cold run reads no file twice).
        """
        try:
            with open(self._slot(display), "rb") as handle:
                entry = json.loads(handle.read())
            if entry["path"] != display or entry["content"] != self._content_hash(read()):
                return None
            findings = [_finding_from_json(item) for item in entry["findings"]]
            errors = [str(message) for message in entry["errors"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return CachedOutcome(findings, errors)

    def store(self, display: str, data: bytes, findings: list[Finding], errors: list[str]) -> None:
        """Record an outcome; failures are silent (the run already warned, or the next run retries)."""
        if not self.writable:
            return
        entry = {
            "path": display,
            "content": self._content_hash(data),
            "findings": [finding.to_json() for finding in findings],
            "errors": list(errors),
        }
        slot = self._slot(display)
        try:
            slot.parent.mkdir(exist_ok=True)
            _write_atomic(slot, json.dumps(entry, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        except OSError:
            pass


_ENUM_FIELDS = {"fix_safety": FixSafety, "level": Level}


def _finding_from_json(item: dict[str, Any]) -> Finding:
    values = dict(item)
    for name, kind in _ENUM_FIELDS.items():
        values[name] = kind(values[name])
    context = values.get("context")
    values["context"] = GradContext(context) if context is not None else None
    return Finding(**values)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's is 0o600


def _write_atomic(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, _FILE_MODE)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
