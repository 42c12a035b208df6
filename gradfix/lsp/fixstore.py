"""Fixes computed on one definition at a time, kept by what the engine saw.

A quick fix or a definition's share of fix-all, computed on a
:class:`~gradfix.lsp.analysis.Focus`, depends only on the focus's text, its
findings and the settings (:meth:`Focus.key`). The store keeps those results,
and the jobs computing them, under that key: after an edit only the edited
definition's fixes are computed again, and the server computes them ahead, in
a worker process, right after each lint. Edits are kept as edits of the focus's
text; the server maps them to the buffer as it is when they are asked for.

No pygls here, and nothing runs the engine: the server submits the jobs.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from .analysis import FocusedFix, FocusFixes
from .text import Edit

#: Quick fixes kept (each a few small edits); fix-all shares and verdicts are kept as many.
CAPACITY = 8192

MISSING = "missing"  # not computed (nor being computed)
WHOLE = "whole"  # the engine reads the focus differently: the whole buffer is needed
DONE = "done"


@dataclass(eq=False)
class Job:
    """One :func:`~gradfix.lsp.analysis.focus_fixes` call on its way."""

    key: tuple
    targets: frozenset  # fix identities of the quick fixes it computes
    fix_all: bool
    urgent: bool  # someone waits for it (not only computed ahead): never cancelled as stale
    background: bool  # in the low-priority lane, maybe queued behind many others
    future: "asyncio.Future[Any]"

    def covers(self, target: Optional[tuple], fix_all: bool) -> bool:
        if fix_all and not self.fix_all:
            return False
        return target is None or target in self.targets


class FixStore:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._quick: "OrderedDict[tuple, Optional[FocusedFix]]" = OrderedDict()
        self._fix_all: "OrderedDict[tuple, Optional[tuple[Edit, ...]]]" = OrderedDict()
        self._verified: "OrderedDict[tuple, bool]" = OrderedDict()
        self._jobs: dict[tuple, list[Job]] = {}
        self._waiters: dict[tuple, list["asyncio.Future[None]"]] = {}

    # -- results ----------------------------------------------------------------------------

    @staticmethod
    def _get(table: "OrderedDict[Any, Any]", key: Any) -> tuple[bool, Any]:
        if key not in table:
            return False, None
        table.move_to_end(key)
        return True, table[key]

    def _put(self, table: "OrderedDict[Any, Any]", key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.capacity:
            table.popitem(last=False)

    def verified(self, key: tuple) -> Optional[bool]:
        """True: the engine reads the focus as the buffer does; False: it does not; None: not known."""
        known, value = self._get(self._verified, key)
        return value if known else None

    def quick(self, key: tuple, target: tuple) -> tuple[str, Optional[FocusedFix]]:
        """(DONE, the fix or None when there is none), (WHOLE, None) or (MISSING, None)."""
        if self.verified(key) is False:
            return WHOLE, None
        known, value = self._get(self._quick, (key, target))
        return (DONE, value) if known else (MISSING, None)

    def fix_all(self, key: tuple) -> tuple[str, Optional[tuple[Edit, ...]]]:
        """(DONE, edits), (WHOLE, None) or (MISSING, None)."""
        if self.verified(key) is False:
            return WHOLE, None
        known, value = self._get(self._fix_all, key)
        if not known:
            return MISSING, None
        return (WHOLE, None) if value is None else (DONE, value)

    def record(self, key: tuple, result: FocusFixes) -> None:
        self._put(self._verified, key, result.verified)
        if not result.verified:
            return
        for target, fix in result.quick.items():
            self._put(self._quick, (key, target), fix)
        if result.fix_all_done:
            self._put(self._fix_all, key, result.fix_all)

    def known(self, key: tuple, target: Optional[tuple] = None, fix_all: bool = False) -> bool:
        """Is ``target``'s quick fix (and the fix-all share) known, or known not to be computable here?"""
        if target is not None and self.quick(key, target)[0] == MISSING:
            return False
        return not fix_all or self.fix_all(key)[0] != MISSING

    # -- jobs -------------------------------------------------------------------------------

    def add(self, job: Job) -> None:
        self._jobs.setdefault(job.key, []).append(job)
        job.future.add_done_callback(lambda _: self._finish(job))

    def _finish(self, job: Job) -> None:
        jobs = self._jobs.get(job.key, [])
        if job in jobs:
            jobs.remove(job)
        future = job.future
        if not future.cancelled() and future.exception() is None:
            self.record(job.key, future.result())
            for other in list(jobs):  # another lane got there first: what it would compute is known
                if all(self.known(job.key, t) for t in other.targets) and self.known(job.key, None, other.fix_all):
                    other.future.cancel()  # not started: skipped; running: its result is not needed
        if not self._jobs.get(job.key):
            self._jobs.pop(job.key, None)
        for waiter in self._waiters.pop(job.key, []):
            if not waiter.done():
                waiter.set_result(None)

    def job(self, key: tuple, target: Optional[tuple] = None, fix_all: bool = False, background: Optional[bool] = None) -> Optional[Job]:
        """A job on its way that computes ``target``'s quick fix (and the fix-all share)."""
        for job in self._jobs.get(key, ()):
            if job.covers(target, fix_all) and not job.future.done() and background in (None, job.background):
                return job
        return None

    async def settled(self, key: tuple, target: Optional[tuple] = None, fix_all: bool = False) -> None:
        """Wait until the result is known, or no job computes it any more (whichever lane finishes first)."""
        while not self.known(key, target, fix_all) and self.job(key, target, fix_all) is not None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, []).append(waiter)
            await waiter

    def cancel_ahead(self, path: str, keep: set[tuple]) -> None:
        """Cancel the jobs computed ahead for ``path`` whose focus is gone (a job already running finishes)."""
        for key, jobs in list(self._jobs.items()):
            if key[0] != path or key in keep:
                continue
            for job in list(jobs):
                if not job.urgent:
                    job.future.cancel()

    def cancel_all(self) -> None:
        for jobs in list(self._jobs.values()):
            for job in list(jobs):
                job.future.cancel()
