"""Settings: ``[tool.gradfix]`` in pyproject.toml, overridden by command-line flags.

The file is found by walking up from the first path given (or the cwd) to the
first ``pyproject.toml`` that has a ``[tool.gradfix]`` table, as Ruff does.
``--config FILE`` names a file directly: its ``[tool.gradfix]`` table, or for a
file that has none (a standalone ``gradfix.toml``) its top level.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from .codemods import Level
from .codemods.codes import RULE_CODES

KNOWN_KEYS = ("select", "ignore", "exclude", "unsafe-fixes")
ALL_SELECTOR = "ALL"


class ConfigError(Exception):
    """A configuration that cannot be used (exit 2)."""


@dataclass
class Config:
    path: Optional[Path] = None  # the TOML file the settings came from
    root: Path = field(default_factory=Path.cwd)  # exclude globs are relative to this folder
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    unsafe_fixes: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    """What one run uses after merging config and flags."""

    select: tuple[str, ...]
    ignore: tuple[str, ...]
    unsafe_fixes: bool
    # check reports findings from report_level up; fix rewrites them from fix_level up.
    report_level: Level = Level.WARNING
    fix_level: Level = Level.ERROR


def parse_selectors(values: Iterable[str], origin: str) -> tuple[str, ...]:
    """Split comma-separated codes/prefixes, upper-case them, and check each names at least one rule.

    ``ALL`` stands for every rule.
    """
    codes = list(RULE_CODES)
    result: list[str] = []
    for value in values:
        for part in value.split(","):
            selector = part.strip().upper()
            if not selector:
                continue
            if selector != ALL_SELECTOR and not any(code.startswith(selector) for code in codes):
                raise ConfigError(
                    f"{origin}: unknown rule selector {part.strip()!r}: no rule code starts with it "
                    f"(known: {', '.join(codes)}; `gradfix rules` lists them)"
                )
            if selector not in result:
                result.append(selector)
    return tuple(result)


def engine_selection(select: Sequence[str], ignore: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Translate ``ALL`` into what :func:`gradfix.codemods.select_rules` expects."""
    if ALL_SELECTOR in select:
        select = ()
    if ALL_SELECTOR in ignore:
        ignore = ("",)  # every code starts with the empty prefix
    return tuple(select), tuple(ignore)


def find_config_file(start: os.PathLike | str) -> Optional[Path]:
    """The nearest pyproject.toml at or above ``start`` with a ``[tool.gradfix]`` table."""
    current = Path(os.path.abspath(start))
    while not current.exists() and current.parent != current:
        current = current.parent
    if not current.is_dir():
        current = current.parent
    for folder in (current, *current.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            data = _load_toml(candidate)
            if isinstance(data.get("tool"), dict) and "gradfix" in data["tool"]:
                return candidate
    return None


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{_show(path)}: invalid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{_show(path)}: cannot read: {error.strerror or error}") from None


def _show(path: Path) -> str:
    from .files import display_path

    return display_path(path)


def _string_list(table: dict[str, Any], key: str, origin: str) -> tuple[str, ...]:
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{origin}: `{key}` must be a list of strings, got {_type_name(value)}: {value!r}")
    return tuple(value)


def _type_name(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a float", dict: "a table", list: "a list"}.get(
        type(value), type(value).__name__
    )


def load_config(explicit: Optional[os.PathLike | str], start: os.PathLike | str) -> Config:
    """Read the settings file (``explicit``, or the one found above ``start``)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{explicit}: configuration file not found")
        data = _load_toml(path)
        tool = data.get("tool")
        if isinstance(tool, dict) and "gradfix" in tool:
            table, where = tool["gradfix"], "[tool.gradfix]"
        elif path.name == "pyproject.toml":
            table, where = {}, "[tool.gradfix]"
        else:
            table, where = data, "top level"
    else:
        found = find_config_file(start)
        if found is None:
            return Config()
        path = found
        table, where = _load_toml(path)["tool"]["gradfix"], "[tool.gradfix]"

    origin = f"{_show(path)} {where}"
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: must be a table, got {_type_name(table)}")
    config = Config(path=path, root=path.parent.resolve())
    for key in table:
        if key not in KNOWN_KEYS:
            hint = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            config.warnings.append(
                f"{origin}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") + "; ignored"
            )
    if "select" in table:
        config.select = parse_selectors(_string_list(table, "select", origin), f"{origin} select")
    if "ignore" in table:
        config.ignore = parse_selectors(_string_list(table, "ignore", origin), f"{origin} ignore")
    if "exclude" in table:
        config.exclude = _string_list(table, "exclude", origin)
    if "unsafe-fixes" in table:
        value = table["unsafe-fixes"]
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: `unsafe-fixes` must be true or false, got {_type_name(value)}: {value!r}")
        config.unsafe_fixes = value
    return config


def merge(
    config: Config,
    select: Optional[Sequence[str]],
    ignore: Optional[Sequence[str]],
    unsafe_fixes: Optional[bool],
) -> Settings:
    """Command-line values (already parsed; None when not given) over the file's, layered as Ruff does.

    ``--select`` starts the selection afresh: the file's ``select`` *and* ``ignore``
    no longer apply (``--select GF101`` checks GF101 even if the file ignores it).
    ``--ignore`` alone narrows the file's selection further.
    """
    if select:
        chosen, dropped = tuple(select), tuple(ignore or ())
    else:
        chosen = config.select
        dropped = config.ignore + tuple(code for code in ignore or () if code not in config.ignore)
    return Settings(
        select=chosen,
        ignore=dropped,
        unsafe_fixes=config.unsafe_fixes if unsafe_fixes is None else unsafe_fixes,
    )
