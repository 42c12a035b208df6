"""Decides whether a rewrite P' of a program P is correct, with evidence.

The four checks, in order (the first that fails decides):

1. runs: P' runs to completion, forward and backward, as the user would run it.
2. forward matches: the loss P' passes to its first ``backward()`` equals what P
   computes in reference mode (grad mode really off, so P's in-place writes are
   legal and give the forward computation its author intended).
3. gradients present: every leaf that P' reads in its forward pass gets a gradient.
4. gradients correct: P''s gradients agree with central finite differences of P's
   reference forward along random directions, in float64.

Everything runs in the worker (``worker.py``); this module only sends jobs and
compares numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .session import WorkerSession

PASSED, FAILED, INCONCLUSIVE, SKIPPED = "passed", "failed", "inconclusive", "skipped"
CHECKS = ("runs", "forward matches", "gradients present", "gradients correct")

EPSILON = 1e-6
DIRECTION_SEEDS = (1, 2, 3)
SHIFT = {"seed": 97, "delta": 1e-3}
LEAVES_ATTRIBUTED = 8


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Verdict:
    status: str  # verified | failed | inconclusive
    reason: str = ""
    device: str = "cpu"
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verified(self) -> bool:
        return self.status == "verified"

    def headline(self) -> str:
        if self.status == "verified":
            return "verified"
        return f"{self.status}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Program:
    """A program to run: a script (with its text, when it is a rewrite held in memory),
    and in-memory sources served to it for library files (``verify --run``)."""

    path: Path
    source: Optional[str] = None
    overrides: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()

    def job(self, **extra: Any) -> dict[str, Any]:
        return {
            "kind": "run",
            "path": str(self.path.resolve()),
            "source": self.source,
            "overrides": {str(Path(k).resolve()): v for k, v in self.overrides.items()},
            "argv": list(self.argv),
            **extra,
        }


class _Failure(Exception):
    def __init__(self, status: str, check: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.check = check
        self.detail = detail


def _describe_error(result: dict[str, Any]) -> str:
    status = result.get("status")
    if status == "timeout":
        return result.get("message", "timed out")
    where = f" at {result['where']}" if result.get("where") else ""
    return f"{result.get('exception') or status}: {result.get('message') or ''}{where}".strip()


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, scale) + 1e-7 * max(abs(a), abs(b))


def _gradients_agree(fd: float, ad: float, loss_scale: float) -> bool:
    return abs(fd - ad) <= 1e-6 * max(1.0, loss_scale) + 1e-5 * max(abs(fd), abs(ad))


def _format_number(value: float) -> str:
    return f"{value:.6g}"


def pair_leaves(original: list[dict], rewrite: list[dict]) -> dict[int, int]:
    """Rewrite leaf index -> original leaf index: by value at first read, then shape and order."""
    pairs: dict[int, int] = {}
    free = list(range(len(rewrite)))

    def same_value(a: dict, b: dict) -> bool:
        return a["shape"] == b["shape"] and all(
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(a["digest"], b["digest"])
        )

    unmatched = []
    for leaf in original:
        match = next((k for k in free if same_value(leaf, rewrite[k])), None)
        if match is None:
            unmatched.append(leaf)
            continue
        free.remove(match)
        pairs[match] = leaf["index"]
    for leaf in unmatched:
        match = next((k for k in free if rewrite[k]["shape"] == leaf["shape"]), None)
        if match is not None:
            free.remove(match)
            pairs[match] = leaf["index"]
    return pairs


class Verifier:
    """One verification: P (original) against P' (rewrite) on one device."""

    def __init__(self, session: WorkerSession, original: Program, rewrite: Program, *,
                 device: str = "cpu", timeout: float = 120.0, memory_mb: Optional[int] = 8192) -> None:
        self.session = session
        self.original = original
        self.rewrite = rewrite
        self.device = device
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.verdict = Verdict(status="verified", device=device)

    # -- running -----------------------------------------------------------------------

    def _job(self, program: Program, **options: Any) -> dict[str, Any]:
        return program.job(out_dir=self.session.new_dir(), device=self.device, timeout=self.timeout,
                           memory_mb=self.memory_mb, **options)

    def _run_many(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run jobs side by side in the worker (one child each); results in order."""
        answer = self.session.request({"kind": "runs", "jobs": jobs})
        if answer.get("status") != "ok":
            raise _Failure("inconclusive", "runs", f"the verifier's worker failed: {answer.get('message')}")
        results = answer["results"]
        for job, result in zip(jobs, results):
            result["out_dir"] = job["out_dir"]
        return results

    def _run(self, program: Program, **options: Any) -> dict[str, Any]:
        return self._run_many([self._job(program, **options)])[0]

    def _reference_job(self, **options: Any) -> dict[str, Any]:
        return self._job(self.original, mode="reference", float64=True, **options)

    def _reference(self, **options: Any) -> dict[str, Any]:
        return self._run_many([self._reference_job(**options)])[0]

    def _check(self, name: str, started: float, status: str = PASSED, detail: str = "") -> None:
        self.verdict.checks.append(Check(name, status, detail, round(time.perf_counter() - started, 3)))

    # -- the checks ----------------------------------------------------------------------

    def run(self) -> Verdict:
        started = time.perf_counter()
        try:
            self._verify()
        except _Failure as failure:
            self.verdict.status = failure.status
            self.verdict.reason = f"{failure.check}: {failure.detail}"
            done = {c.name for c in self.verdict.checks}
            if failure.check not in done:
                status = FAILED if failure.status == "failed" else INCONCLUSIVE
                self.verdict.checks.append(Check(failure.check, status, failure.detail))
            for name in CHECKS:
                if name not in {c.name for c in self.verdict.checks}:
                    self.verdict.checks.append(Check(name, SKIPPED))
        self.verdict.seconds = round(time.perf_counter() - started, 3)
        return self.verdict

    def _verify(self) -> None:
        self.session.start()  # worker start-up (import torch) is not a check's time
        # The independent runs go to the worker together, so they use every core.
        t = time.perf_counter()
        record_file = str(Path(self.session.new_dir()) / "stop_gradient.pt")
        native, rewrite, reference, again = self._run_many([
            self._job(self.rewrite, mode="normal", float64=False),
            self._job(self.rewrite, mode="normal", float64=True, stop_after_backward=True),
            self._reference_job(record_file=record_file),
            self._reference_job(),
        ])
        # 1. runs: the rewrite as the user runs it, to the end.
        if native["status"] != "ok":
            raise _Failure("failed", "runs", _describe_error(native))
        if native["backward_calls"] == 0:
            raise _Failure("inconclusive", "runs", "the program never calls backward(), so there is no gradient to check")
        if native.get("autograd_grad"):
            self.verdict.notes.append("torch.autograd.grad() calls are run but not compared")
        self._check("runs", t, detail=f"ran to the end; backward() called {native['backward_calls']}x")
        if native["backward_calls"] > 1:
            self.verdict.notes.append(
                f"only the first of {native['backward_calls']} backward() calls is compared; the later ones are checked by 'runs' only"
            )

        # 2. forward matches: the rewrite's first loss against the original's reference forward.
        t = time.perf_counter()
        if rewrite["status"] != "ok" or rewrite.get("loss") is None:
            raise _Failure("inconclusive", "forward matches", "the rewrite fails when run in float64: " + _describe_error(rewrite))
        if reference["status"] != "ok" or reference.get("loss") is None:
            if reference["status"] == "ok":
                raise _Failure("inconclusive", "forward matches", "the original calls no backward() in reference mode")
            raise _Failure("inconclusive", "forward matches", "the original fails even with autograd off: " + _describe_error(reference))
        if again.get("loss") is None or not _close(again["loss"], reference["loss"], abs(reference["loss"])):
            raise _Failure("inconclusive", "forward matches", "the original's forward is not deterministic "
                           f"({_format_number(reference['loss'])} then {_format_number(again.get('loss') or float('nan'))})")
        loss, intended = rewrite["loss"], reference["loss"]
        if not _close(loss, intended, abs(intended)):
            raise _Failure("failed", "forward matches",
                           f"the rewrite's loss is {_format_number(loss)}, the original computes {_format_number(intended)}")
        self._check("forward matches", t, detail=f"loss {_format_number(loss)} (float64)")

        # 3. gradients present: a leaf the rewrite reads has a gradient, unless the loss truly does
        #    not depend on it (a comparison, a detach): finite differences of the original decide.
        t = time.perf_counter()
        pairs = pair_leaves(reference["leaves"], rewrite["leaves"])
        read = [leaf for leaf in rewrite["leaves"] if leaf.get("forward_read")]
        missing = [leaf for leaf in read if not leaf.get("has_grad")]
        probed = [leaf for leaf in missing[:LEAVES_ATTRIBUTED] if leaf["index"] in pairs]
        losses = self._perturbed_many([(DIRECTION_SEEDS[0], sign, [pairs[leaf["index"]]])
                                       for leaf in probed for sign in (+1, -1)], record_file, {})
        for position, leaf in enumerate(probed):
            plus, minus = losses[2 * position], losses[2 * position + 1]
            finite = (plus - minus) / (2 * EPSILON)
            if not _gradients_agree(finite, 0.0, abs(intended)):
                raise _Failure("failed", "gradients present",
                               f"leaf #{leaf['index']} (shape {leaf['shape']}, first read at {leaf['where']}) has no gradient, "
                               f"but the loss depends on it (finite difference {_format_number(finite)} along a random direction)")
        if missing:
            self.verdict.notes.append(
                f"{len(missing)} leaf(s) read without a gradient; finite differences confirm the loss does not depend on them"
            )
        self._check("gradients present", t, detail=f"{len(read) - len(missing)} of {len(read)} leaves read in the forward pass have gradients"
                    + ("; the others do not influence the loss" if missing else ""))

        # 4. gradients correct.
        t = time.perf_counter()
        unpaired_original = len(reference["leaves"]) - len(pairs)
        if unpaired_original:
            self.verdict.notes.append(
                f"{unpaired_original} leaf(s) of the original are not read by the rewrite: their gradient is taken as zero"
            )
        outcome = self._directional(rewrite, reference, pairs, record_file, shifted=False)
        if outcome == "kink":
            shifted_record = str(Path(self.session.new_dir()) / "stop_gradient.pt")
            shifted_rewrite, shifted_reference = self._run_many([
                self._job(self.rewrite, mode="normal", float64=True, stop_after_backward=True, shift=SHIFT, leaf_keys=pairs),
                self._reference_job(shift=SHIFT, record_file=shifted_record),
            ])
            if shifted_rewrite["status"] != "ok" or shifted_reference["status"] != "ok":
                raise _Failure("inconclusive", "gradients correct", "a kink at the starting point, and the nearby point does not run")
            outcome = self._directional(shifted_rewrite, shifted_reference, pairs, shifted_record, shifted=True)
            if outcome == "kink":
                raise _Failure("inconclusive", "gradients correct",
                               "the loss has a kink (e.g. ReLU at exactly zero) at the starting point and at a nearby one")
            self.verdict.notes.append("a kink at the starting point: gradients were compared at a nearby point")
        self._check("gradients correct", t, detail=outcome)

    def _directional(self, rewrite: dict, reference: dict, pairs: dict[int, int], record_file: str, *, shifted: bool) -> str:
        grads_file = str(Path(rewrite["out_dir"]) / "grads.pt")
        dots = self.session.request({"kind": "dot", "grads_file": grads_file, "seeds": list(DIRECTION_SEEDS),
                                     "pairs": {str(k): v for k, v in pairs.items()}})
        if dots.get("status") != "ok":
            raise _Failure("inconclusive", "gradients correct", dots.get("message", "worker failed"))
        base = reference["loss"]
        shift = {"shift": SHIFT} if shifted else {}
        worst = 0.0
        losses = self._perturbed_many([(seed, sign, None) for seed in DIRECTION_SEEDS for sign in (+1, -1)],
                                      record_file, shift)
        for position, (seed, autograd) in enumerate(zip(DIRECTION_SEEDS, dots["dots"])):
            plus, minus = losses[2 * position], losses[2 * position + 1]
            finite = (plus - minus) / (2 * EPSILON)
            if _gradients_agree(finite, autograd, abs(base)):
                worst = max(worst, abs(finite - autograd))
                continue
            one_sided = ((plus - base) / EPSILON, (base - minus) / EPSILON)
            if not _gradients_agree(one_sided[0], one_sided[1], abs(base)) and not shifted:
                return "kink"
            if not _gradients_agree(one_sided[0], one_sided[1], abs(base)):
                return "kink"
            raise _Failure("failed", "gradients correct", self._attribute(rewrite, reference, pairs, record_file, seed, shift,
                                                                          finite, autograd))
        return f"{len(DIRECTION_SEEDS)} random directions agree with finite differences (largest difference {worst:.2g})"

    def _perturbed_many(self, runs: list[tuple[int, int, Optional[list[int]]]], record_file: str, shift: dict) -> list[float]:
        """The original's reference loss with leaves moved along (seed, sign, only) each."""
        jobs = [self._reference_job(perturb={"seed": seed, "eps": EPSILON, "sign": sign, "only": only},
                                    replay_file=record_file, **shift) for seed, sign, only in runs]
        losses = []
        for result in self._run_many(jobs) if jobs else []:
            if result["status"] != "ok" or result.get("loss") is None:
                raise _Failure("inconclusive", "gradients correct", "the perturbed original fails: " + _describe_error(result))
            if result.get("diverged"):
                raise _Failure("inconclusive", "gradients correct", result["diverged"])
            losses.append(float(result["loss"]))
        return losses

    def _attribute(self, rewrite: dict, reference: dict, pairs: dict[int, int], record_file: str, seed: int,
                   shift: dict, finite: float, autograd: float) -> str:
        """Which leaf disagrees: finite differences along one leaf at a time."""
        by_original = {v: k for k, v in pairs.items()}
        grads_file = str(Path(rewrite["out_dir"]) / "grads.pt")
        leaves = reference["leaves"][:LEAVES_ATTRIBUTED]
        losses = self._perturbed_many([(seed, sign, [leaf["index"]]) for leaf in leaves for sign in (+1, -1)],
                                      record_file, shift)
        for position, leaf in enumerate(leaves):
            key = leaf["index"]
            plus, minus = losses[2 * position], losses[2 * position + 1]
            leaf_finite = (plus - minus) / (2 * EPSILON)
            pair = {str(by_original[key]): key} if key in by_original else {}
            dots = self.session.request({"kind": "dot", "grads_file": grads_file, "seeds": [seed], "pairs": pair})
            leaf_autograd = dots["dots"][0] if dots.get("status") == "ok" else float("nan")
            if not _gradients_agree(leaf_finite, leaf_autograd, abs(reference["loss"])):
                where = f", first read at {leaf['where']}" if leaf.get("where") else ""
                return (f"leaf #{key} (shape {leaf['shape']}{where}): finite difference "
                        f"{_format_number(leaf_finite)} vs autograd {_format_number(leaf_autograd)} along a random direction")
        return (f"finite difference {_format_number(finite)} vs autograd {_format_number(autograd)} along a random "
                "direction (no single leaf accounts for it)")


def verify(original: Program, rewrite: Program, *, device: str = "cpu", timeout: float = 120.0,
           memory_mb: Optional[int] = 8192, session: Optional[WorkerSession] = None,
           python: Optional[str] = None) -> Verdict:
    own = session is None
    session = session or WorkerSession(python)
    try:
        return Verifier(session, original, rewrite, device=device, timeout=timeout, memory_mb=memory_mb).run()
    finally:
        if own:
            session.close()
