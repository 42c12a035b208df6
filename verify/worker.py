"""The verifier's worker: imports torch once, then runs programs in forked children.

This file is run as a script by whichever interpreter the user chose
(``--python``), so it imports nothing but the standard library and torch.

Protocol: one JSON object per line on stdin (a job), one JSON object per line
on stdout (its result). The first line written is ``{"ready": ...}``.

Jobs:
- ``run``: run a program in a forked child, in ``normal`` mode (autograd on,
  as the user would run it) or ``reference`` mode (grad mode really off, a
  virtual grad flag for the program, ``backward()`` recorded and skipped,
  in-place overlaps computed from a snapshot). Both modes record, in order of
  first real read, the leaves that require grad, and the first ``backward()``'s
  loss; normal mode also saves the leaves' gradients after that backward.
  Reference mode can perturb leaves at their first read along seeded random
  directions, and replays stop-gradient values (``detach``, ``item``, work done
  under the program's own ``no_grad``) recorded by an unperturbed run.
- ``dot``: for saved gradients and seeded directions, the inner products.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import select
import signal
import sys
import time
import traceback
import types

# Standard library only (this script's folder is sys.path[0]): it must work before torch loads.
from source_overrides import already_imported, install

# A child re-executed because its overrides name modules the worker had already imported
# (torch's own files): the finder goes in before ``import torch``, so torch loads the served text.
_FRESH_CHILD = __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--fresh-child"
if _FRESH_CHILD:
    with open(sys.argv[2]) as _job_handle:
        install(json.load(_job_handle).get("overrides") or {})

import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

try:  # numpy is optional; seeded when present so programs using it repeat
    import numpy
except ImportError:  # pragma: no cover
    numpy = None

# --- what counts as a read -------------------------------------------------------------

# Calls that look at metadata only.
METADATA = frozenset(
    {"size", "dim", "ndimension", "numel", "nelement", "stride", "is_contiguous", "data_ptr",
     "storage_offset", "untyped_storage", "element_size", "is_floating_point", "is_complex",
     "requires_grad_", "retain_grad", "register_hook", "get_device", "__len__", "__repr__",
     "__format__", "__hash__", "is_set_to", "type", "backward"}
)
METADATA_ATTRIBUTES = frozenset(
    {"shape", "dtype", "device", "requires_grad", "is_leaf", "grad", "grad_fn", "ndim", "layout",
     "names", "is_cuda", "is_sparse", "is_quantized", "is_meta", "itemsize", "nbytes", "_version",
     "_base", "output_nr", "_backward_hooks", "__class__", "__dict__", "_grad_fn", "_grad"}
)
# Calls whose result shares memory with their input: not reads by themselves.
VIEWS = frozenset(
    {"view", "view_as", "reshape", "reshape_as", "expand", "expand_as", "t", "transpose",
     "permute", "squeeze", "unsqueeze", "narrow", "select", "unfold", "flatten", "unflatten",
     "detach", "split", "chunk", "unbind", "as_strided", "diagonal", "movedim", "moveaxis",
     "swapaxes", "swapdims", "__getitem__", "real", "imag", "T", "mT", "H", "mH", "data",
     "contiguous", "view_as_real", "view_as_complex", "alias"}
)
# In-place calls that overwrite every element of their first argument without reading it.
OVERWRITES = frozenset(
    {"copy_", "fill_", "zero_", "normal_", "uniform_", "random_", "cauchy_", "exponential_",
     "geometric_", "log_normal_", "bernoulli_", "set_", "resize_", "__set__", "ones_", "zeros_",
     "constant_", "eye_", "dirac_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
     "kaiming_normal_", "trunc_normal_", "orthogonal_", "sparse_", "uniform", "normal"}
)
# Where a value leaves autograd: replayed from the unperturbed run in perturbed runs.
STOP_GRADIENT = frozenset({"item", "tolist", "__float__", "__int__", "numpy", "__index__", "__complex__"})
# Aliases that leave autograd (`y = x.detach()`, `norm.data`): they keep sharing memory, so
# writes through them still reach their base, but reads of them see the unperturbed values.
FROZEN_ALIASES = frozenset({"detach", "data"})
LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


class StopProgram(BaseException):
    """Raised at the first backward() in reference mode: nothing after it is needed."""


def _name(func) -> str:
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    if name in ("__get__", "__set__") and owner is not None and hasattr(owner, "__name__"):
        return owner.__name__ if name == "__get__" else "__set__"
    return name


def _tensors(value, out):
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _tensors(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _tensors(item, out)
    return out


def _storage_key(tensor):
    try:
        pointer = tensor.untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 - sparse and other storage-less tensors
        return None
    return pointer or None  # empty tensors all have pointer 0


def _user_frame(program_files):
    """The innermost frame of the user's own code, as 'file:line'."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename in program_files:
            return f"{os.path.basename(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _direction(key, shape, dtype, device, seed):
    """The seeded random direction for leaf ``key``: the same in every run and process."""
    generator = torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + key * 7_919) % (2**63))
    numel = 1
    for size in shape:
        numel *= size
    values = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
    return (values / max(1.0, float(numel)) ** 0.5).to(dtype=dtype, device=device)


class Recorder(TorchFunctionMode):
    """Sees every torch call of the program: leaves, reads, dtype promotion, replay."""

    def __init__(self, job, program_files):
        super().__init__()
        self.job = job
        self.mode = job["mode"]
        self.float64 = job.get("float64", False)
        self.program_files = program_files
        self.leaves = []  # records in order of first real read
        self._leaf_by_storage = {}
        self._known = {}  # id(tensor) -> leaf record, for leaves seen but not yet read
        self.perturb = job.get("perturb")  # {"seed", "eps", "sign", "only": [keys] | None}
        self.shift = job.get("shift")  # {"seed", "delta"}: moves the base point
        self.leaf_keys = {int(k): v for k, v in (job.get("leaf_keys") or {}).items()}
        self.replay = job.get("_replay")  # list of recorded stop-gradient values
        self.recorded = []
        self.event = 0
        self.virtual_grad = [True]
        self.diverged = None
        self.frozen = {}  # id(alias) -> (alias, unperturbed value)

    # -- leaves ----------------------------------------------------------------------

    def _register(self, tensor):
        try:
            # A view is never the variable: with grad off (reference mode) a view of a leaf
            # looks like a leaf itself; its base is the one that gets the gradient.
            if not (tensor.requires_grad and tensor.is_leaf) or tensor._is_view():
                return
        except RuntimeError:
            # A view made with grad off whose base was then written: torch refuses to build its
            # grad_fn (so is_leaf raises) in reference mode, where grad is off. Not a leaf.
            return
        key = id(tensor)
        frozen = self.frozen.pop(key, None)
        if frozen is not None:
            # A detached copy made a leaf again (`y = x.clone().detach().requires_grad_()`) is a
            # new variable: it starts from the unperturbed value, then is perturbed as its own leaf.
            with torch.no_grad():
                tensor.copy_(frozen[1])
        if key in self._known:
            return
        record = {"tensor": tensor, "read": False}
        self._known[key] = record
        storage = _storage_key(tensor)
        if storage is not None:
            self._leaf_by_storage.setdefault(storage, record)

    def _read(self, tensor, grad_enabled):
        record = self._known.get(id(tensor))
        if record is None:
            storage = _storage_key(tensor)
            record = self._leaf_by_storage.get(storage) if storage is not None else None
        if record is None:
            return
        if record["read"]:
            if grad_enabled and not record["forward_read"]:
                record["forward_read"] = True
            return
        record["read"] = True
        record["forward_read"] = grad_enabled
        leaf = record["tensor"]
        index = len(self.leaves)
        record["index"] = index
        record["where"] = _user_frame(self.program_files)
        with torch.no_grad():
            self._move(leaf, index)
            value = leaf.detach().to(torch.float64)
            record["digest"] = [float(value.sum()), float((value * value).sum()),
                                float(value.flatten()[0]) if value.numel() else 0.0]
        record["shape"] = list(leaf.shape)
        record["dtype"] = str(leaf.dtype)
        self.leaves.append(record)

    def _move(self, leaf, index):
        """Shift and perturb a leaf at its first read (never at creation: initializers overwrite)."""
        key = self.leaf_keys.get(index, index)
        if self.shift is not None:
            leaf.add_(_direction(key, leaf.shape, leaf.dtype, leaf.device, self.shift["seed"]) * self.shift["delta"])
        if self.perturb is not None:
            only = self.perturb.get("only")
            if only is None or key in only:
                step = self.perturb["eps"] * self.perturb["sign"]
                leaf.add_(_direction(key, leaf.shape, leaf.dtype, leaf.device, self.perturb["seed"]) * step)

    # -- the hook --------------------------------------------------------------------

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        if self.float64:
            func, args, kwargs = self._promote(func, name, args, kwargs)
        tensors = _tensors(list(args), []) + _tensors(list(kwargs.values()), [])
        for tensor in tensors:
            self._register(tensor)
        grad_enabled = self.virtual_grad[-1] if self.mode == "reference" else torch.is_grad_enabled()
        if name not in METADATA and name not in METADATA_ATTRIBUTES and name not in VIEWS:
            skip_first = name in OVERWRITES or name.startswith("__set")
            for position, tensor in enumerate(tensors):
                if position == 0 and skip_first:
                    continue
                self._read(tensor, grad_enabled and name not in STOP_GRADIENT)
        writes_first = name not in METADATA and ((name.endswith("_") and not name.startswith("__")) or name in (
            "__iadd__", "__isub__", "__imul__", "__itruediv__", "__setitem__", "__set__"))
        if self.mode == "reference" and writes_first and args:
            args = self._snapshot_overlaps(args)
        frozen_view_of = None
        if self.frozen and args:
            if name in VIEWS and isinstance(args[0], torch.Tensor) and id(args[0]) in self.frozen:
                frozen_view_of = self.frozen[id(args[0])][1]
            elif name not in METADATA and name not in METADATA_ATTRIBUTES and name not in VIEWS:
                args = self._thaw_reads(args, writes_first)
        result = func(*args, **kwargs)
        if frozen_view_of is not None and isinstance(result, torch.Tensor):
            # A view of a frozen alias is frozen too, with the same view of the unperturbed value.
            self.frozen[id(result)] = (result, func(frozen_view_of, *args[1:], **kwargs))
        if self.mode == "reference" and name in FROZEN_ALIASES and isinstance(result, torch.Tensor):
            self._freeze(result)
            return result
        for tensor in _tensors(result, []) if isinstance(result, (torch.Tensor, list, tuple)) else ():
            self._register(tensor)
        if self.mode == "reference" and (name in STOP_GRADIENT or not self.virtual_grad[-1]):
            # Views pass through (writes through them must reach their base); metadata is not a value.
            if name not in METADATA and name not in METADATA_ATTRIBUTES and name not in VIEWS:
                result = self._record_or_replay(result, args, name)
        return result

    def _promote(self, func, name, args, kwargs):
        """float64 everywhere: explicit float32/16 requests too, or finite differences drown."""
        if kwargs.get("dtype") in LOW_PRECISION:
            kwargs = dict(kwargs, dtype=torch.float64)
        if name in ("float", "half", "bfloat16") and args and isinstance(args[0], torch.Tensor):
            return torch.Tensor.double, args[:1], {}
        if name == "to":
            args = tuple(torch.float64 if a in LOW_PRECISION else a for a in args)
        if name == "type" and len(args) > 1 and args[1] in (torch.float32, "torch.FloatTensor", torch.FloatTensor):
            args = (args[0], torch.float64)
        return func, args, kwargs

    def _freeze(self, alias):
        index = self.event
        self.event += 1
        if self.replay is None:
            self.recorded.append(alias.detach().clone())
        elif index < len(self.replay) and isinstance(self.replay[index], torch.Tensor) \
                and self.replay[index].shape == alias.shape:
            self.frozen[id(alias)] = (alias, self.replay[index])
        else:
            self.diverged = "a detached value changed shape under perturbation"

    def _thaw_reads(self, args, writes_first):
        """Reads of a frozen alias see its unperturbed value; a write through it reaches its base."""
        fixed = []
        for position, arg in enumerate(args):
            if isinstance(arg, torch.Tensor) and id(arg) in self.frozen:
                if position == 0 and writes_first:
                    self.frozen.pop(id(arg))
                else:
                    arg = self.frozen[id(arg)][1].clone()
            elif isinstance(arg, (list, tuple)) and any(id(a) in self.frozen for a in arg if isinstance(a, torch.Tensor)):
                arg = type(arg)(self.frozen[id(a)][1].clone() if isinstance(a, torch.Tensor) and id(a) in self.frozen else a
                                for a in arg)
            fixed.append(arg)
        return tuple(fixed)

    def _snapshot_overlaps(self, args):
        target = args[0]
        if not isinstance(target, torch.Tensor):
            return args
        storage = _storage_key(target)
        fixed = [target]
        for arg in args[1:]:
            if isinstance(arg, torch.Tensor) and storage is not None and _storage_key(arg) == storage:
                arg = arg.clone()  # x += x.T reads memory it writes: use the values before the write
            fixed.append(arg)
        return tuple(fixed)

    def _record_or_replay(self, result, args, name):
        if name == "__setitem__" and args and isinstance(args[0], torch.Tensor):
            result = args[0]  # what a no-grad `x[i] = v` leaves behind is x itself
        index = self.event
        self.event += 1
        if self.replay is None:
            self.recorded.append(_detach_copy(result))
            return None if name == "__setitem__" else result
        if index >= len(self.replay):
            self.diverged = "the perturbed run did more stop-gradient steps than the unperturbed one"
            return result
        saved = self.replay[index]
        if isinstance(result, torch.Tensor) and isinstance(saved, torch.Tensor):
            if result.shape != saved.shape:
                self.diverged = "a stop-gradient value changed shape under perturbation"
                return result
            if args and result is args[0]:  # an in-place op under no_grad: restore its effect
                with torch.no_grad():
                    result.copy_(saved)
                return None if name == "__setitem__" else result
            return saved.clone().to(result.device)
        if type(result) is type(saved) and not isinstance(result, torch.Tensor):
            return saved
        return result


def _detach_copy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach_copy(v) for v in value) if not hasattr(value, "_fields") else value
    return value


# --- grad mode, virtualised for reference mode ----------------------------------------------


def _virtual_grad_mode(recorder):
    """Replacements for torch.no_grad & co. that move only a virtual flag."""

    class _Mode:
        def __init__(self, enabled):
            self.enabled = enabled

        def __enter__(self):
            recorder.virtual_grad.append(self.enabled)
            return self

        def __exit__(self, *exc):
            recorder.virtual_grad.pop()
            return False

        def __call__(self, function):
            if isinstance(function, type):
                return function

            def wrapper(*args, **kwargs):
                with _Mode(self.enabled):
                    return function(*args, **kwargs)

            wrapper.__wrapped__ = function
            wrapper.__name__ = getattr(function, "__name__", "wrapper")
            return wrapper

        def clone(self):
            return _Mode(self.enabled)

    class no_grad(_Mode):
        def __init__(self):
            super().__init__(False)

        def __new__(cls, orig_func=None):
            instance = super().__new__(cls)
            if callable(orig_func):  # bare @torch.no_grad
                instance.__init__()
                return instance(orig_func)
            return instance

    class enable_grad(_Mode):
        def __init__(self, orig_func=None):
            super().__init__(True)

    class inference_mode(_Mode):
        def __init__(self, mode=True):
            super().__init__(not mode)

        def __new__(cls, mode=True):
            instance = super().__new__(cls)
            if callable(mode) and not isinstance(mode, bool):
                instance.__init__(True)
                return instance(mode)
            return instance

    class set_grad_enabled(_Mode):
        def __init__(self, mode):
            super().__init__(bool(mode))
            self.previous = recorder.virtual_grad[-1]
            recorder.virtual_grad[-1] = bool(mode)  # takes effect as a plain call, too

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            recorder.virtual_grad[-1] = self.previous
            return False

    def is_grad_enabled():
        return recorder.virtual_grad[-1]

    return {"no_grad": no_grad, "enable_grad": enable_grad, "inference_mode": inference_mode,
            "set_grad_enabled": set_grad_enabled, "is_grad_enabled": is_grad_enabled}


def _patch(namespaces, replacements):
    for namespace in namespaces:
        for name, value in replacements.items():
            if hasattr(namespace, name):
                setattr(namespace, name, value)


# --- running one program ------------------------------------------------------------------


def _seed(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    if numpy is not None:
        numpy.random.seed(seed)


def _loss_scalar(tensors, grad_tensors):
    """The scalar whose gradient backward() computes: sum(loss * grad_output)."""
    if isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    if grad_tensors is None or isinstance(grad_tensors, torch.Tensor):
        grad_tensors = [grad_tensors] * len(tensors)
    total = 0.0
    for tensor, grad in zip(tensors, grad_tensors):
        value = tensor.detach().to(torch.float64)
        if grad is not None:
            value = value * grad.detach().to(torch.float64)
        total += float(value.sum())
    return total


def run_program(job, out_dir):
    """Runs in the forked child. Returns the result dict."""
    path = job["path"]
    source = job.get("source")
    if source is None:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    overrides = job.get("overrides") or {}
    program_files = {path, *overrides}
    if job.get("device") == "cuda":
        torch.set_default_device("cuda")
    if job.get("float64"):
        torch.set_default_dtype(torch.float64)
    replay_file = job.get("replay_file")
    if replay_file:
        job["_replay"] = torch.load(replay_file, weights_only=False)
    recorder = Recorder(job, program_files)
    result = {"status": "ok", "exception": None, "message": None, "backward_calls": 0, "loss": None}
    state = {"first_done": False}
    real_backward = torch.autograd.backward
    real_grad = torch.autograd.grad

    def snapshot_grads():
        return [
            (r["tensor"].grad.detach().to(torch.float64).cpu().clone() if r["tensor"].grad is not None else None)
            for r in recorder.leaves
        ]

    def backward(tensors, grad_tensors=None, *args, **kwargs):
        result["backward_calls"] += 1
        if state["first_done"]:
            if recorder.mode == "reference":
                raise StopProgram()
            return real_backward(tensors, grad_tensors, *args, **kwargs)
        state["first_done"] = True
        with torch.no_grad():
            result["loss"] = _loss_scalar(tensors, grad_tensors)
        if recorder.mode == "reference":
            raise StopProgram()
        before = snapshot_grads()
        outcome = real_backward(tensors, grad_tensors, *args, **kwargs)
        after = snapshot_grads()
        grads = [a - b if (a is not None and b is not None) else a for a, b in zip(after, before)]
        torch.save(grads, os.path.join(out_dir, "grads.pt"))
        result["leaves"] = _leaf_report(recorder, grads)
        if job.get("stop_after_backward"):
            raise StopProgram()
        return outcome

    def grad(*args, **kwargs):
        result["autograd_grad"] = True
        if recorder.mode == "reference":
            raise StopProgram()
        return real_grad(*args, **kwargs)

    torch.autograd.backward = backward
    torch.autograd.grad = grad
    if recorder.mode == "reference":
        torch.set_grad_enabled(False)
        replacements = _virtual_grad_mode(recorder)
        _patch([torch, torch.autograd, torch.autograd.grad_mode], replacements)
    if overrides and not _FRESH_CHILD:
        install(overrides)
    sys.argv = [path, *job.get("argv", [])]
    sys.path.insert(0, os.path.dirname(path))
    _seed(job.get("seed", 0))
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    started = time.perf_counter()
    try:
        code = compile(source, path, "exec")
        with recorder:
            exec(code, module.__dict__)
    except StopProgram:
        pass
    except SystemExit as error:
        if error.code not in (None, 0):
            result.update(status="raised", exception="SystemExit", message=str(error.code))
    except BaseException as error:  # noqa: BLE001 - every ending is reported
        result.update(status="raised", exception=type(error).__name__,
                      message=(str(error).strip().splitlines() or [""])[0][:500])
        result["traceback"] = "".join(traceback.format_exc(limit=-4))[-2000:]
        result["where"] = _error_location(error, program_files)
    result["seconds"] = time.perf_counter() - started
    if "leaves" not in result:
        result["leaves"] = _leaf_report(recorder, None)
    result["autograd_grad"] = result.get("autograd_grad", False)
    result["diverged"] = recorder.diverged
    if recorder.mode == "reference" and job.get("record_file"):
        torch.save(recorder.recorded, job["record_file"])
    return result


def _leaf_report(recorder, grads):
    report = []
    for record in recorder.leaves:
        entry = {key: record.get(key) for key in ("index", "where", "digest", "shape", "dtype", "forward_read")}
        if grads is not None:
            entry["has_grad"] = grads[record["index"]] is not None
        report.append(entry)
    return report


def _error_location(error, program_files):
    tb = error.__traceback__
    where = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in program_files:
            where = f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


# --- the zygote ----------------------------------------------------------------------------


def _spawn(job):
    """Fork a child that runs ``job``; returns (pid, pipe to read its result from)."""
    out_dir = job["out_dir"]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            capture = os.open(os.path.join(out_dir, "output.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(capture, 1)
            os.dup2(capture, 2)
            if already_imported(job.get("overrides") or {}):
                _exec_fresh_child(job, write_fd)
            _run_child(job, write_fd)
        except BaseException:  # noqa: BLE001 - the child must never return into the worker's loop
            code = 1
        os._exit(code)
    os.close(write_fd)
    return pid, os.fdopen(read_fd)


def _run_child(job, write_fd):
    """In a child (forked or fresh): run the job, write its result to ``write_fd``, exit."""
    code = 0
    try:
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
        sys.stderr = sys.stdout
        memory = job.get("memory_mb")
        if memory and job.get("device") != "cuda":
            with open("/proc/self/status") as status:
                vm = next(int(line.split()[1]) for line in status if line.startswith("VmSize"))
            limit = vm * 1024 + memory * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        result = run_program(job, job["out_dir"])
        if _FRESH_CHILD:
            result["fresh_interpreter"] = True
    except BaseException as error:  # noqa: BLE001
        result = {"status": "crashed", "exception": type(error).__name__, "message": str(error)[:500],
                  "traceback": traceback.format_exc()[-2000:]}
        code = 1
    with os.fdopen(write_fd, "w") as pipe:
        pipe.write(json.dumps(result))
    os._exit(code)


def _exec_fresh_child(job, write_fd):
    """Replace this child by a fresh interpreter that installs the overrides before torch.

    A forked child inherits the worker's imported torch, so fixed versions of torch's
    own files would never load there; serving them needs an interpreter that has not
    imported them yet. Costs one ``import torch`` for such jobs only.
    """
    job_file = os.path.join(job["out_dir"], "fresh-job.json")
    with open(job_file, "w") as handle:
        json.dump(job, handle)
    os.set_inheritable(write_fd, True)
    worker = os.path.abspath(__file__)
    os.execv(sys.executable, [sys.executable, worker, "--fresh-child", job_file, str(write_fd)])


def _finish(job, pid, pipe, text, timed_out):
    pipe.close()
    if timed_out:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return {"status": "timeout", "message": f"no result after {job.get('timeout', 120):g} s"}
    _, status = os.waitpid(pid, 0)
    if not text:
        signal_number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return {"status": "crashed", "message": f"the program's process died (signal {signal_number})"}
    result = json.loads(text)
    try:
        with open(os.path.join(job["out_dir"], "output.txt"), errors="replace") as captured:
            result["output_tail"] = captured.read()[-1500:]
    except OSError:
        pass
    return result


def _fork_many(jobs, parallel):
    """Run jobs in forked children, ``parallel`` at a time; results in the jobs' order."""
    results = [None] * len(jobs)
    waiting = list(range(len(jobs)))
    running = {}  # pipe -> (index, pid, deadline, chunks)
    while waiting or running:
        while waiting and len(running) < parallel:
            index = waiting.pop(0)
            pid, pipe = _spawn(jobs[index])
            running[pipe] = (index, pid, time.monotonic() + jobs[index].get("timeout", 120), [])
        now = time.monotonic()
        for pipe, (index, pid, deadline, chunks) in list(running.items()):
            if now >= deadline:
                results[index] = _finish(jobs[index], pid, pipe, "", True)
                del running[pipe]
        if not running:
            continue
        soonest = min(deadline for _, _, deadline, _ in running.values())
        ready, _, _ = select.select(list(running), [], [], max(0.0, min(soonest - time.monotonic(), 1.0)))
        for pipe in ready:
            index, pid, deadline, chunks = running.pop(pipe)
            # The child writes its whole result at once, just before it exits.
            results[index] = _finish(jobs[index], pid, pipe, pipe.read(), False)
    return results


def _dot(job):
    grads = torch.load(job["grads_file"], weights_only=False)
    results = []
    for seed in job["seeds"]:
        total = 0.0
        for index_text, key in job["pairs"].items():
            gradient = grads[int(index_text)]
            if gradient is None:
                continue
            direction = _direction(key, gradient.shape, torch.float64, "cpu", seed)
            total += float((gradient * direction).sum())
        results.append(total)
    return {"status": "ok", "dots": results}


def main():
    sys.stdout.write(json.dumps({"ready": True, "torch": torch.__version__,
                                 "cuda": torch.cuda.is_available()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            if job["kind"] == "run":
                answer = _fork_many([job], 1)[0]
            elif job["kind"] == "runs":
                answer = {"status": "ok", "results": _fork_many(job["jobs"], job.get("parallel") or os.cpu_count() or 1)}
            elif job["kind"] == "dot":
                answer = _dot(job)
            else:
                answer = {"status": "crashed", "message": f"unknown job {job['kind']}"}
        except Exception as error:  # noqa: BLE001 - the worker must answer every job
            answer = {"status": "crashed", "message": f"worker: {type(error).__name__}: {error}"}
        answer["id"] = job.get("id")
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if _FRESH_CHILD:
        with open(sys.argv[2]) as handle:
            _run_child(json.load(handle), int(sys.argv[3]))
    main()
