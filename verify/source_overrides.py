"""Serve in-memory sources for given files to ``import`` (standard library only).

``verify --run DRIVER PATH...`` runs a driver against gradfix's fixed versions of
library files without writing them. This finder answers imports of those files
with the fixed text. It imports nothing but the standard library, so it can be
installed *before* ``import torch`` when the files to serve are torch's own:
once a module is imported, a finder can no longer replace it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys


class OverrideFinder:
    """A meta-path finder: modules whose file is a key of ``overrides`` load that text."""

    def __init__(self, overrides: dict) -> None:
        self.overrides = overrides

    def find_spec(self, name, path=None, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.origin not in self.overrides:
            return None
        source = self.overrides[spec.origin]
        origin = spec.origin

        class ServedLoader(importlib.machinery.SourceFileLoader):
            def get_data(self, filename):
                if filename == origin:
                    return source.encode("utf-8")
                return super().get_data(filename)

            def path_stats(self, filename):
                # No cached bytecode may stand in for the served text.
                raise OSError("no bytecode for served sources")

        loader = ServedLoader(name, origin)
        return importlib.util.spec_from_file_location(
            name, origin, loader=loader, submodule_search_locations=spec.submodule_search_locations
        )


def install(overrides: dict) -> OverrideFinder:
    finder = OverrideFinder(overrides)
    sys.meta_path.insert(0, finder)
    return finder


def already_imported(overrides: dict) -> list[str]:
    """The override paths whose modules this process has imported already (served too late)."""
    loaded = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    return sorted(path for path in overrides if path in loaded)
