"""What the server lints a document with: its project's ``[tool.gradfix]``, then the client's settings.

The client's settings (``initializationOptions``, ``workspace/didChangeConfiguration``
or the ``gradfix`` section of ``workspace/configuration``) layer over the file the way
command-line flags do: ``select`` starts afresh, ``ignore`` adds to the file's.
``traceFile`` names the ``gradfix trace`` output whose findings are shown too
(relative to the project's folder; by default where ``gradfix trace`` writes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError, engine_selection, load_config, merge, parse_selectors
from ..cache import DEFAULT_TRACE_FILE

LEVELS = ("error", "warning")
DEFAULT_LEVEL = "warning"  # diagnostics: every finding, as `gradfix check`
DEFAULT_FIX_LEVEL = "error"  # fix-all: error-level findings, as `gradfix fix`


@dataclass(frozen=True)
class ClientOptions:
    """Settings from the editor; None: not given (the project's value applies)."""

    select: Optional[tuple[str, ...]] = None
    ignore: Optional[tuple[str, ...]] = None
    unsafe_fixes: Optional[bool] = None
    level: Optional[str] = None
    fix_level: Optional[str] = None
    docs_base_url: Optional[str] = None
    trace_file: Optional[str] = None


def _section(raw: Any) -> dict:
    """Accept ``{"gradfix": {...}}`` as well as the section itself."""
    if isinstance(raw, dict) and isinstance(raw.get("gradfix"), dict):
        return raw["gradfix"]
    return raw if isinstance(raw, dict) else {}


def _selectors(value: Any, key: str, errors: list[str]) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        errors.append(f"gradfix settings: `{key}` must be a list of rule codes or prefixes, got {value!r}")
        return None
    try:
        return parse_selectors(value, f"gradfix settings `{key}`")
    except ConfigError as error:
        errors.append(str(error))
        return None


def parse_client_options(raw: Any) -> tuple[ClientOptions, list[str]]:
    """Read the editor's settings; bad values are reported and left out."""
    section = _section(raw)
    errors: list[str] = []
    select = _selectors(section.get("select"), "select", errors)
    ignore = _selectors(section.get("ignore"), "ignore", errors)
    unsafe = section.get("unsafeFixes", section.get("unsafe-fixes"))
    if unsafe is not None and not isinstance(unsafe, bool):
        errors.append(f"gradfix settings: `unsafeFixes` must be true or false, got {unsafe!r}")
        unsafe = None
    level = _level(section, "level", errors)
    fix_level = _level(section, "fixLevel", errors)
    docs = section.get("docsBaseUrl")
    if docs is not None and not (isinstance(docs, str) and docs):
        errors.append(f"gradfix settings: `docsBaseUrl` must be a URL, got {docs!r}")
        docs = None
    trace = section.get("traceFile")
    if trace is not None and not (isinstance(trace, str) and trace):
        errors.append(f"gradfix settings: `traceFile` must be a path, got {trace!r}")
        trace = None
    return ClientOptions(select, ignore, unsafe, level, fix_level, docs, trace), errors


KNOWN_KEYS = ("select", "ignore", "unsafeFixes", "unsafe-fixes", "level", "fixLevel", "docsBaseUrl", "traceFile")


def unknown_keys(raw: Any) -> list[str]:
    """Keys the server does not read (editors send their own, such as the command to run)."""
    return [key for key in _section(raw) if key not in KNOWN_KEYS]


def _level(section: dict, key: str, errors: list[str]) -> Optional[str]:
    value = section.get(key)
    if value is not None and value not in LEVELS:
        errors.append(f"gradfix settings: `{key}` must be one of {', '.join(LEVELS)}, got {value!r}")
        return None
    return value


@dataclass(frozen=True)
class LintSettings:
    """Engine-ready settings for one document."""

    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    unsafe_fixes: bool = False
    level: str = DEFAULT_LEVEL  # the lowest level shown
    fix_level: str = DEFAULT_FIX_LEVEL  # the lowest level fix-all fixes


@dataclass(frozen=True)
class DocumentSettings:
    lint: LintSettings = field(default_factory=LintSettings)
    excluded: bool = False
    config_path: Optional[str] = None
    messages: tuple[str, ...] = ()  # configuration problems to show the user
    trace_file: Optional[str] = None  # absolute path of the `gradfix trace` output shown with the findings


def resolve(path: Optional[str], fallback_root: Optional[str], client: ClientOptions) -> DocumentSettings:
    """Settings for the document at ``path`` (None for an unsaved buffer)."""
    start = path or fallback_root or os.getcwd()
    messages: list[str] = []
    try:
        config = load_config(None, start)
    except ConfigError as error:
        messages.append(f"{error}; using the default settings")
        from ..config import Config

        config = Config()
    messages.extend(f"warning: {w}" for w in config.warnings)
    settings = merge(config, client.select, client.ignore, client.unsafe_fixes)
    select, ignore = engine_selection(settings.select, settings.ignore)
    # The CLI's --level defaults (check: warnings up, fix: errors), or the project's if it sets them.
    level = client.level or str(getattr(settings, "report_level", DEFAULT_LEVEL))
    fix_level = client.fix_level or str(getattr(settings, "fix_level", DEFAULT_FIX_LEVEL))
    # The project's folder: exclude globs and a relative trace file are relative to it.
    root = config.root if config.path is not None else Path(fallback_root or (os.path.dirname(path) if path else start))
    excluded = False
    if path is not None:
        from ..files import Excluder

        excluded = Excluder(config.exclude, root).excluded_with_ancestors(path)
    trace_file = os.path.abspath(os.path.join(root, os.path.expanduser(client.trace_file or DEFAULT_TRACE_FILE)))
    return DocumentSettings(
        lint=LintSettings(select, ignore, settings.unsafe_fixes, level, fix_level),
        excluded=excluded,
        config_path=str(config.path) if config.path is not None else None,
        messages=tuple(messages),
        trace_file=trace_file,
    )
