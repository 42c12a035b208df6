"""gradfix's verifier: runs the original and the rewritten program under torch and
decides, with evidence, whether the rewrite is correct (see ``checks``)."""

from .checks import CHECKS, Check, Program, Verdict, verify
from .session import WorkerError, WorkerSession

__all__ = ["CHECKS", "Check", "Program", "Verdict", "WorkerError", "WorkerSession", "verify"]
