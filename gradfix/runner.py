"""Running the engine over files: read, check or fix, encode, write or diff.

One :class:`FileOutcome` per file; the CLI turns them into output and an exit
code. A problem with one file (unreadable, undecodable, a syntax error, even a
crash inside a rule or of a whole worker process) is recorded on that file and
never stops the others.

Files are analysed in a pool of worker processes (``jobs``; one per core by
default) when there are enough of them to pay for one, else in this process.
Workers only compute: every write happens here, atomically, so an interrupted
run never leaves a temp file behind and a parallel ``fix`` writes exactly what
a serial one would. Outcomes are returned sorted by display path, whatever the
scheduling. With a :class:`~gradfix.cache.Cache`, a file whose bytes, gradfix
build and settings match a stored entry is not analysed again.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from . import files, patches
from .cache import Cache, settings_key
from .codemods.model import Finding

if TYPE_CHECKING:
    from .codemods.engine import SourceSyntaxError


# The engine (and libcst) loads on the first file that is parsed, not at start-up: a run
# answered from the cache never needs it.
def check_source(*args, **kwargs):
    from .codemods.engine import check_source as engine_check

    return engine_check(*args, **kwargs)


def fix_source(*args, **kwargs):
    from .codemods.engine import fix_source as engine_fix

    return engine_fix(*args, **kwargs)
from .config import Settings, engine_selection

#: Show a progress bar (on a terminal only) from this many files on.
PROGRESS_THRESHOLD = 30
#: A worker process is started only for at least this many files to analyse (forking,
#: and sending results back, costs more than a handful of small files take).
FILES_PER_WORKER = 4
#: Chunks waiting in the pool per worker: enough to keep workers busy, few enough that
#: results (and memory) do not pile up.
CHUNKS_IN_FLIGHT_PER_WORKER = 3
MAX_CHUNK_FILES = 16
#: About this many chunks per worker over a run: fine enough that workers finish together.
CHUNKS_PER_WORKER = 64

# PLAN computes fixes without writing them (``fix --verify`` writes what verifies).
CHECK, FIX, DIFF, PLAN = "check", "fix", "diff", "plan"


@dataclass
class FileOutcome:
    path: str
    display: str
    findings: list[Finding] = field(default_factory=list)  # check: all; fix/diff: what remains
    applied: dict[str, int] = field(default_factory=dict)  # fixes written (fix) or that would be (diff)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # skipped files and similar, not errors
    diff: bytes = b""
    written: bool = False
    original_text: str = ""  # PLAN: the text before and after fixing, and the bytes to write
    new_text: str = ""
    new_data: bytes = b""
    cached: bool = False  # taken from the cache, not analysed in this run


@dataclass(frozen=True)
class _Job:
    """What every file of one run is processed with (sent to each worker once)."""

    settings: Settings
    mode: str  # CHECK, DIFF or PLAN: FIX is planned in the workers and written here
    cwd: str
    cache: Optional[Cache]


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cache_command(mode: str) -> str:
    """check and the fix family (fix, --diff, --verify) store different outcomes."""
    return "check" if mode == CHECK else "fix"


def run(
    paths: Sequence[str],
    settings: Settings,
    mode: str,
    cwd: Optional[str] = None,
    *,
    jobs: Optional[int] = None,
    cache: Optional[Cache] = None,
) -> list[FileOutcome]:
    """Outcomes for ``paths``, sorted by display path. ``jobs``: worker processes (None: one per core)."""
    if cache is not None and cache.settings_key != settings_key(settings, cache_command(mode)):
        raise ValueError("the cache was opened for other settings or another command")
    cwd = cwd or os.getcwd()
    jobs = default_jobs() if jobs is None else max(1, jobs)
    job = _Job(settings, PLAN if mode == FIX else mode, cwd, cache)
    description = {CHECK: "Checking", FIX: "Fixing", DIFF: "Diffing", PLAN: "Fixing"}[mode]

    outcomes: list[FileOutcome] = []
    pending: list[tuple[str, str, int]] = []  # (path, display, size) still to analyse
    for path in paths:
        display = files.display_path(path, cwd)
        hit = _from_cache(path, display, cache) if cache is not None else None
        if hit is not None:
            outcomes.append(hit)
        else:
            pending.append((path, display, _size(path)))

    def finish(outcome: FileOutcome) -> None:
        if mode == FIX and outcome.new_data:
            write_planned(outcome, settings)
            outcome.original_text = outcome.new_text = ""
            outcome.new_data = b""
        outcomes.append(outcome)

    workers = min(jobs, len(pending) // FILES_PER_WORKER)
    with _Progress(len(paths), description) as progress:
        progress.advance(len(outcomes), sum(len(o.findings) for o in outcomes))
        if workers >= 2:
            _run_pool(pending, job, workers, finish, progress)
        else:
            for path, display, _ in pending:
                outcome = _process(path, display, job)
                finish(outcome)
                progress.advance(1, len(outcome.findings))
    outcomes.sort(key=lambda o: o.display)
    return outcomes


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _from_cache(path: str, display: str, cache: Cache) -> Optional[FileOutcome]:
    try:
        hit = cache.lookup(display, lambda: files.read_bytes(path, display, files.MAX_FILE_BYTES))
    except files.FileError:
        return None  # analysed normally, which reports the problem
    if hit is None:
        return None
    return FileOutcome(path, display, findings=hit.findings, errors=hit.errors, cached=True)


# --- the pool ------------------------------------------------------------------------------

_worker_job: Optional[_Job] = None
WORKER_GC_THRESHOLDS = (400_000, 10, 10)  # the defaults: (700, 10, 10)


def _worker_init(job: _Job) -> None:
    global _worker_job
    _worker_job = job
    # Ctrl-C goes to the whole process group: only the parent handles it (and stops us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A file's trees are millions of young objects, and the engine breaks the cycles in its
    # analyses (RuleContext.release), so reference counting frees them: the collector need not
    # look at what every worker imported, nor run as often as the defaults make it. Over all of
    # torch's sources, in one process, the collector's time is 7.8 s with the defaults, 0.9 s
    # with 100,000 and 0.2 s with 400,000, at the same peak memory.
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLDS)


def _worker_chunk(chunk: list[tuple[str, str]]) -> list[FileOutcome]:
    assert _worker_job is not None
    return [_process(path, display, _worker_job) for path, display in chunk]


def _pool_context():
    # fork: workers start in milliseconds with everything already imported.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _chunks(pending: list[tuple[str, str, int]], workers: int) -> deque[list[tuple[str, str]]]:
    """Largest files first (the slowest finish early, not last), grouped up to a share of the total bytes.

    A large file travels alone; small files go in groups of up to MAX_CHUNK_FILES, so
    that sending work and results back costs little next to the work itself.
    """
    ordered = sorted(pending, key=lambda item: (-item[2], item[1]))
    budget = max(1, sum(size for _, _, size in ordered) // (workers * CHUNKS_PER_WORKER))
    chunks: deque[list[tuple[str, str]]] = deque()
    chunk: list[tuple[str, str]] = []
    filled = 0
    for path, display, size in ordered:
        if chunk and (filled + size > budget or len(chunk) >= MAX_CHUNK_FILES):
            chunks.append(chunk)
            chunk, filled = [], 0
        chunk.append((path, display))
        filled += size
    if chunk:
        chunks.append(chunk)
    return chunks


def _run_pool(pending, job: _Job, workers: int, finish: Callable[[FileOutcome], None], progress: "_Progress") -> None:
    """Analyse ``pending`` in worker processes.

    A worker that dies (a segfault in a parser, the OOM killer) breaks the pool:
    the files it may have been working on are retried one at a time in a new pool,
    and a file that breaks that one too gets an error of its own.
    """
    queue = _chunks(pending, workers)
    suspects: deque[list[tuple[str, str]]] = deque()
    executor: Optional[ProcessPoolExecutor] = None
    in_flight: dict[Future, tuple[list[tuple[str, str]], bool]] = {}
    try:
        while queue or suspects or in_flight:
            if executor is None:
                executor = ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_worker_init,
                                               initargs=(job,))
            if suspects:  # alone in the pool, so a crash names its file
                if not in_flight:
                    chunk = suspects.popleft()
                    in_flight[executor.submit(_worker_chunk, chunk)] = (chunk, True)
            else:
                while queue and len(in_flight) < workers * CHUNKS_IN_FLIGHT_PER_WORKER:
                    chunk = queue.popleft()
                    in_flight[executor.submit(_worker_chunk, chunk)] = (chunk, False)
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                chunk, alone = in_flight.pop(future)
                try:
                    results = future.result()
                except BrokenProcessPool:
                    broken = True
                    if alone:
                        path, display = chunk[0]
                        results = [FileOutcome(path, display, errors=[
                            f"{display}: the worker process analysing this file died; file left unchanged"])]
                    else:
                        suspects.extend([item] for item in chunk)
                        continue
                except Exception as error:  # a result that could not be sent back, and the like
                    results = [FileOutcome(path, display, errors=[_internal_error(display, error)])
                               for path, display in chunk]
                for outcome in results:
                    finish(outcome)
                    progress.advance(1, len(outcome.findings))
            if broken:
                # Every other chunk in this pool is lost with it.
                for chunk, _alone in in_flight.values():
                    suspects.extend([item] for item in chunk)
                in_flight.clear()
                executor.shutdown(wait=False, cancel_futures=True)
                executor = None
    except BaseException:
        if executor is not None:
            _stop(executor)
            executor = None
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Stop now (Ctrl-C): cancel what is queued, end the workers mid-file (they write nothing)."""
    processes = list(getattr(executor, "_processes", {}).values())  # no public handle on them
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        try:
            process.terminate()
        except Exception:
            pass
    for process in processes:
        process.join(timeout=5)


# --- one file ------------------------------------------------------------------------------


def _process(path: str, display: str, job: _Job) -> FileOutcome:
    outcome = FileOutcome(path, display)
    source = _read(outcome)
    if source is None:
        return outcome
    if job.mode == CHECK:
        reusable = _check_file(outcome, source, job.settings)
    else:
        reusable = _fix_file(outcome, source, job.settings, job.mode, job.cwd)
    if reusable and job.cache is not None:
        job.cache.store(display, source.data, outcome.findings, outcome.errors)
    return outcome


def _read(outcome: FileOutcome) -> Optional[files.SourceFile]:
    try:
        return files.read_source(outcome.path, outcome.display)
    except files.FileSkipped as skipped:
        outcome.notes.append(str(skipped))
    except files.FileError as error:
        outcome.errors.append(str(error))
    return None


def _syntax_error(display: str, error: SourceSyntaxError) -> str:
    return f"{display}:{error.line}:{error.col}: syntax error: {error.message}"


def _internal_error(display: str, error: BaseException) -> str:
    return f"{display}: internal error in gradfix ({type(error).__name__}: {error}); file left unchanged"


def write_planned(outcome: FileOutcome, settings: Settings) -> None:
    """Write a PLAN outcome's fixed bytes; on failure, record the error and restore its findings."""
    try:
        files.write_atomic(outcome.path, outcome.new_data, outcome.display)
    except files.FileError as error:
        outcome.errors.append(str(error))
        _keep_original(outcome, settings)
        return
    outcome.written = True


def withdraw_planned(outcome: FileOutcome, settings: Settings, reason: str) -> None:
    """A PLAN outcome that will not be written: its original findings remain."""
    _keep_original(outcome, settings)
    outcome.notes.append(f"{outcome.display}: not written: {reason}")


def _keep_original(outcome: FileOutcome, settings: Settings) -> None:
    select, ignore = engine_selection(settings.select, settings.ignore)
    outcome.findings = check_source(outcome.original_text, outcome.display, select=select, ignore=ignore,
                                    level=settings.report_level)
    outcome.applied = {}


def _check_file(outcome: FileOutcome, source: files.SourceFile, settings: Settings) -> bool:
    """Fill in the findings; True when the outcome may be reused for the same bytes."""
    from .codemods.engine import SourceSyntaxError  # loaded by the workers that parse
    display = outcome.display
    select, ignore = engine_selection(settings.select, settings.ignore)
    try:
        outcome.findings = check_source(source.text, display, select=select, ignore=ignore, level=settings.report_level)
    except SourceSyntaxError as error:
        outcome.errors.append(_syntax_error(display, error))
    except Exception as error:  # a bug in a rule must not stop the run
        outcome.errors.append(_internal_error(display, error))
        return False
    return True


def _fix_file(outcome: FileOutcome, source: files.SourceFile, settings: Settings, mode: str, cwd: str) -> bool:
    """Fix in memory (PLAN) or diff; True when nothing changes and the outcome may be reused."""
    from .codemods.engine import SourceSyntaxError  # loaded by the workers that parse
    display = outcome.display
    select, ignore = engine_selection(settings.select, settings.ignore)
    try:
        result = fix_source(source.text, display, select=select, ignore=ignore, unsafe_fixes=settings.unsafe_fixes,
                            level=settings.fix_level)
    except SourceSyntaxError as error:
        outcome.errors.append(_syntax_error(display, error))
        return True
    except Exception as error:
        outcome.errors.append(_internal_error(display, error))
        return False
    outcome.errors.extend(result.errors)
    outcome.findings = list(result.remaining)
    if result.source == source.text:
        return True
    try:
        new_data = source.encode(result.source)
    except files.FileError as error:
        outcome.errors.append(str(error))
        # Nothing is written, so everything found in the original remains.
        outcome.findings = check_source(source.text, display, select=select, ignore=ignore, level=settings.report_level)
        return False
    if new_data == source.data:  # pragma: no cover - text differs, so bytes do
        return True
    if mode == DIFF:
        try:
            outcome.diff = patches.unified_diff(files.patch_path(outcome.path, cwd), source.data, new_data)
        except Exception as error:  # the diff's self-check failed: print nothing rather than a wrong diff
            outcome.errors.append(_internal_error(display, error))
            return False
        outcome.applied = dict(result.applied)
        return False
    outcome.original_text, outcome.new_text, outcome.new_data = source.text, result.source, new_data
    outcome.applied = dict(result.applied)
    return False


# --- progress --------------------------------------------------------------------------------


class _Progress:
    """A progress bar on stderr (a terminal only, from PROGRESS_THRESHOLD files): files/s, findings so far.

    Refreshed by hand, never from a thread of its own, so forking the pool's workers is safe.
    """

    REFRESH_SECONDS = 0.1

    def __init__(self, total: int, description: str, console=None) -> None:
        self.total = total
        self.description = description
        self.console = console
        self.findings = 0
        self._bar = None
        self._task = None
        self._last_refresh = 0.0

    def _wanted(self) -> bool:
        if self.console is not None:
            return True
        return self.total > PROGRESS_THRESHOLD and sys.stderr.isatty()

    def __enter__(self) -> "_Progress":
        if not self._wanted():
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} files/s" if speed else "- files/s")

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                   TextColumn("{task.fields[findings]} findings"), TimeRemainingColumn())
        self._bar = Progress(*columns, console=self.console or Console(file=sys.stderr), transient=True,
                             auto_refresh=False)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total, findings=0)
        return self

    def advance(self, count: int, findings: int) -> None:
        self.findings += findings
        if self._bar is None or not count:
            return
        self._bar.update(self._task, advance=count, findings=self.findings)
        now = time.monotonic()
        if now - self._last_refresh >= self.REFRESH_SECONDS:
            self._last_refresh = now
            self._bar.refresh()

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.refresh()
            self._bar.stop()
