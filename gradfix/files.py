"""Files on disk: discovery, reading and decoding, atomic writing.

The engine only sees ``str``. Everything about bytes lives here: a file is
read as bytes, its encoding found the way Python finds it (PEP 263 cookie,
UTF-8 BOM, else UTF-8), decoded strictly *without* newline translation (so
CRLF survives), and the engine's result is encoded back with the same codec
(``utf-8-sig`` restores the BOM) and written atomically.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

#: Files larger than this are skipped with a message (never read into memory).
MAX_FILE_BYTES = 10 * 1024 * 1024

#: Directory names never entered when walking a directory (as Ruff's defaults).
DEFAULT_EXCLUDED_DIRS = frozenset({
    ".bzr", ".direnv", ".eggs", ".git", ".gradfix_cache", ".hg", ".ipynb_checkpoints",
    ".mypy_cache", ".nox", ".pytest_cache", ".ruff_cache", ".svn", ".tox", ".venv",
    "__pycache__", "__pypackages__", "build", "dist", "node_modules", "site-packages", "venv",
})
DEFAULT_EXCLUDED_DIR_SUFFIXES = (".egg-info",)

UTF8_BOM = b"\xef\xbb\xbf"


class FileError(Exception):
    """A file that cannot be processed. ``str()`` is the one-line message, path first."""

    def __init__(self, display: str, message: str) -> None:
        super().__init__(f"{display}: {message}")
        self.display = display
        self.message = message


class FileSkipped(FileError):
    """A file deliberately not processed (too large); not an error."""


# --- paths -----------------------------------------------------------------------------


def display_path(path: os.PathLike | str, cwd: Optional[str] = None) -> str:
    """``path`` relative to the cwd when it is under it, else absolute."""
    cwd = cwd or os.getcwd()
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute, cwd)
    except ValueError:  # pragma: no cover - other drive on Windows
        return absolute
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return absolute
    return relative


def patch_path(path: os.PathLike | str, cwd: Optional[str] = None) -> str:
    """The path a diff header names: relative to the cwd, ``/``-separated (may start with ``..``)."""
    cwd = cwd or os.getcwd()
    return os.path.relpath(os.path.abspath(path), cwd).replace(os.sep, "/")


def is_outside(relative: str) -> bool:
    return relative == ".." or relative.startswith("../")


# --- exclusion ------------------------------------------------------------------------


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A glob as gitignore reads it: ``*`` and ``?`` stay within one path segment, ``**`` crosses them."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class _Pattern:
    source: str
    regex: re.Pattern[str]
    anchored: bool  # contains a "/": matched against the path relative to the project root
    dir_only: bool


class Excluder:
    """Decides which paths are skipped: built-in directory names, plus ``[tool.gradfix] exclude`` globs.

    A pattern without ``/`` matches a file or directory name anywhere (``fixtures``,
    ``*_pb2.py``); a pattern with ``/`` matches the path relative to ``root``, the
    folder of the pyproject.toml that declared it (``src/legacy/*.py``). An
    excluded directory excludes everything under it.
    """

    def __init__(self, patterns: Sequence[str] = (), root: Optional[Path] = None) -> None:
        self.root = os.path.abspath(root) if root is not None else os.getcwd()
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            text = raw.strip()
            while text.startswith("./"):
                text = text[2:]
            dir_only = text.endswith("/")
            text = text.rstrip("/")
            if not text:
                continue
            anchored = "/" in text
            self.patterns.append(_Pattern(raw, glob_to_regex(text.lstrip("/")), anchored, dir_only))

    def _relative(self, absolute: str) -> Optional[str]:
        try:
            relative = os.path.relpath(absolute, self.root)
        except ValueError:  # pragma: no cover - Windows drives
            return None
        if relative == "." or is_outside(relative.replace(os.sep, "/")):
            return None
        return relative.replace(os.sep, "/")

    def excluded(self, path: os.PathLike | str, is_dir: bool) -> bool:
        """Is this one path (not its ancestors) excluded?"""
        absolute = os.path.abspath(path)
        name = os.path.basename(absolute)
        if is_dir:
            if name in DEFAULT_EXCLUDED_DIRS or name.endswith(DEFAULT_EXCLUDED_DIR_SUFFIXES):
                return True
            if os.path.isfile(os.path.join(absolute, "pyvenv.cfg")):
                return True
        relative = None
        for pattern in self.patterns:
            if pattern.dir_only and not is_dir:
                continue
            if pattern.anchored:
                if relative is None:
                    relative = self._relative(absolute)
                    if relative is None:
                        continue
                if pattern.regex.match(relative):
                    return True
            elif pattern.regex.match(name):
                return True
        return False

    def excluded_with_ancestors(self, path: os.PathLike | str) -> bool:
        """``--force-exclude``: the path or one of its ancestors inside the project is excluded."""
        absolute = os.path.abspath(path)
        if self.excluded(absolute, os.path.isdir(absolute)):
            return True
        parent = os.path.dirname(absolute)
        while parent != absolute and self._relative(parent) is not None:
            if self.excluded(parent, True):
                return True
            absolute, parent = parent, os.path.dirname(parent)
        return False


# --- discovery -----------------------------------------------------------------------------


@dataclass
class Discovery:
    files: list[str] = field(default_factory=list)  # paths as given or found (not resolved)
    errors: list[str] = field(default_factory=list)


def discover(paths: Iterable[str], excluder: Excluder, force_exclude: bool = False) -> Discovery:
    """The files to process, in a deterministic order.

    A directory is walked for ``*.py`` files (sorted, excluded directories not
    entered). A file named on the command line is always processed, whatever its
    name, unless ``force_exclude`` is set and it is excluded (Ruff's behaviour).
    A path that does not exist is an error.
    """
    result = Discovery()
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            result.files.append(path)

    for given in paths:
        if not os.path.lexists(given):
            result.errors.append(f"{given}: No such file or directory")
            continue
        if force_exclude and excluder.excluded_with_ancestors(given):
            continue
        if not os.path.isdir(given):
            add(given)  # broken symlinks and special files are reported when read
            continue

        def on_error(error: OSError) -> None:
            result.errors.append(f"{display_path(error.filename or given)}: cannot read directory: {error.strerror}")

        for folder, dirnames, filenames in os.walk(given, onerror=on_error):
            dirnames[:] = sorted(d for d in dirnames if not excluder.excluded(os.path.join(folder, d), True))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    if not excluder.excluded(path, False):
                        add(os.path.normpath(path))
    return result


# --- reading -------------------------------------------------------------------------------


@dataclass
class SourceFile:
    path: str
    display: str
    data: bytes  # the file's bytes, exactly
    encoding: str  # codec name; "utf-8-sig" when the file starts with a BOM
    text: str  # decoded, line endings untouched, BOM removed

    def encode(self, text: str) -> bytes:
        """``text`` in this file's encoding; FileError when a character cannot be represented."""
        try:
            return text.encode(self.encoding)
        except UnicodeEncodeError as error:
            line = text.count("\n", 0, error.start) + 1
            char = text[error.start : error.start + 1]
            raise FileError(
                self.display,
                f"cannot encode the fixed text as {self.encoding}: character {char!r} on line {line} "
                "is not representable; file not written",
            ) from None


def _describe_os_error(error: OSError) -> str:
    return error.strerror or str(error)


def read_bytes(path: str, display: str, max_bytes: Optional[int] = None) -> bytes:
    """The bytes of a regular file; one-line FileError otherwise."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileError(display, f"broken symbolic link (points to {os.readlink(path)})") from None
        raise FileError(display, "No such file or directory") from None
    except OSError as error:
        raise FileError(display, f"cannot read: {_describe_os_error(error)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileError(display, "is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise FileError(display, "not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise FileSkipped(display, f"skipped: file is larger than {_size_text(max_bytes)}")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise FileError(display, f"cannot read: {_describe_os_error(error)}") from None


def _size_text(size: int) -> str:
    megabytes = 1024 * 1024
    return f"{size // megabytes} MB" if size % megabytes == 0 else f"{size} bytes"


def detect_encoding(data: bytes) -> str:
    """The codec Python would use for this source; raises FileError-ready ValueError."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as error:
        message = str(error.msg if hasattr(error, "msg") else error)
        if "invalid or missing encoding declaration" in message:
            # The first lines are not UTF-8 and declare nothing: decoding as UTF-8
            # below gives the precise position.
            return "utf-8"
        raise ValueError(message) from None
    return encoding


def decode(data: bytes, display: str) -> tuple[str, str]:
    """(text, encoding). Strict; newlines untouched."""
    try:
        encoding = detect_encoding(data)
    except ValueError as error:
        raise FileError(display, f"cannot decode: {error}") from None
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise FileError(
            display, f"cannot decode as {encoding}: {error.reason} (byte 0x{data[error.start]:02x} on line {line})"
        ) from None
    except LookupError as error:  # pragma: no cover - detect_encoding already looked the codec up
        raise FileError(display, f"cannot decode: {error}") from None


def read_source(path: str, display: Optional[str] = None, max_bytes: Optional[int] = None) -> SourceFile:
    display = display or display_path(path)
    data = read_bytes(path, display, MAX_FILE_BYTES if max_bytes is None else max_bytes)
    text, encoding = decode(data, display)
    return SourceFile(path=path, display=display, data=data, encoding=encoding, text=text)


# --- writing -------------------------------------------------------------------------------


def write_atomic(path: str, data: bytes, display: Optional[str] = None) -> None:
    """Replace the file's content: a temp file in the same folder, same permission bits, fsync, rename.

    A symlink is followed (the link stays a link). A read-only file is refused.
    """
    display = display or display_path(path)
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError as error:
        raise FileError(display, f"cannot write: {_describe_os_error(error)}") from None
    if not os.access(real, os.W_OK) or not (info.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)):
        raise FileError(display, "cannot write: the file is read-only")
    folder = os.path.dirname(real)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", suffix=".gradfix-tmp", dir=folder)
    except OSError as error:
        raise FileError(display, f"cannot write: {_describe_os_error(error)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, stat.S_IMODE(info.st_mode))
        if hasattr(os, "chown") and (info.st_uid, info.st_gid) != (os.stat(temp).st_uid, os.stat(temp).st_gid):
            try:
                os.chown(temp, info.st_uid, info.st_gid)
            except OSError:
                pass  # not permitted unless root; the file then belongs to us
        os.replace(temp, real)
    except BaseException as error:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise FileError(display, f"cannot write: {_describe_os_error(error)}") from None
        raise
    try:  # make the rename durable; not all filesystems allow opening a folder
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
