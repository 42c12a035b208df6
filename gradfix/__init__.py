"""gradfix: find and fix PyTorch in-place operations that break autograd."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gradfix")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
