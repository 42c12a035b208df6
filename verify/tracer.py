"""``gradfix trace``'s instrumentation: runs a program and records the in-place writes that break autograd.

Run as a script by the chosen interpreter (``python tracer.py --out EVENTS.json
--root DIR ... -- PROGRAM.py ARGS...``), so it imports only the standard library
and torch, never gradfix. The front end (``gradfix/tracing.py``) reads the
events it writes and adds the rule engine's findings and fixes.

What is watched, and how:

- every mutating aten op (a dispatch mode reads the op schema's write alias
  info: in-place ``_`` ops, ``out=`` ops, ``copy_``/``index_put_`` behind
  subscript assignment, the writes of in-place modules and of optimizer steps),
  with the first frame in the user's files, the tensor's storage and its version
  counter after the write;
- ``.data`` reads and writes, leaf creation, multi-output views and ``backward()``
  calls (a function mode: a dispatch mode never sees ``.data``);
- every tensor autograd saves (saved-tensor hooks), with its version and the
  forward line that saved it. Saved-tensor hooks switch off torch's own version
  check, so the unpack hook checks the version itself and raises the error torch
  would have raised, now knowing which writes bumped it.

The output is a list of reports (JSON): the failure's kind, the culprit writes'
locations, and the context (what saved the tensor, which ``backward()``, which
optimizer ``step()``).
"""

from __future__ import annotations

import argparse
import collections
import json
import linecache
import os
import runpy
import sys
import sysconfig
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary  # tensors compare elementwise: keyed by identity

INPLACE_ERROR = "one of the variables needed for gradient computation has been modified by an inplace operation"
LEAF_ERROR = "a leaf Variable that requires grad is being used in an in-place operation"
LEAF_VIEW_ERROR = "a view of a leaf Variable that requires grad is being used in an in-place operation"
MULTI_VIEW_ERROR = "This view is the output of a function that returns multiple views"
OUT_ERROR = "arguments don't support automatic differentiation"
VIEW_ERRORS = ("is a view and is being modified inplace", "is a view and its base or another view of its base has been modified inplace")

MULTI_OUTPUT_VIEWS = frozenset({"unbind", "split", "chunk", "tensor_split", "split_with_sizes", "hsplit", "vsplit", "dsplit", "unsafe_split"})
WRITES_KEPT_PER_STORAGE = 256  # older writes on one storage are forgotten (memory stays flat in long loops)
MAX_REPORTS = 50

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_THIS_FILE = os.path.abspath(__file__)
_STDLIB = {os.path.abspath(p) for p in (sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")) if p}


class Location:
    __slots__ = ("file", "line", "function")

    def __init__(self, file: str, line: int, function: str) -> None:
        self.file, self.line, self.function = file, line, function

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "function": self.function,
                "source": linecache.getline(self.file, self.line).strip()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.file, self.line) == (other.file, other.line)

    def __hash__(self) -> int:
        return hash((self.file, self.line))


class Write:
    __slots__ = ("seq", "op", "storage", "version", "location", "via_data", "module", "step", "grad_enabled")

    def __init__(self, seq, op, storage, version, location, via_data, module, step, grad_enabled) -> None:
        self.seq, self.op, self.storage, self.version = seq, op, storage, version
        self.location, self.via_data, self.module, self.step = location, via_data, module, step
        self.grad_enabled = grad_enabled


class Saved:
    """One tensor autograd saved for backward."""

    __slots__ = ("seq", "version", "storage", "shape", "dtype", "producer", "op", "as_input", "location")

    def __init__(self, seq, version, storage, shape, dtype, producer, op, as_input, location) -> None:
        self.seq, self.version, self.storage, self.shape, self.dtype = seq, version, storage, shape, dtype
        self.producer, self.op, self.as_input, self.location = producer, op, as_input, location


def _storage_key(tensor: torch.Tensor):
    try:
        return tensor.untyped_storage().data_ptr()
    except Exception:  # sparse, meta, functional wrappers: no storage to compare
        return None


def _describe(tensor: torch.Tensor) -> str:
    try:
        type_name = tensor.type()
    except Exception:
        type_name = str(tensor.dtype)
    return f"[{type_name} {list(tensor.shape)}]"


class Tracer:
    def __init__(self, roots: list[str]) -> None:
        self.roots = [os.path.abspath(r) for r in roots]
        self.seq = 0
        self.writes: dict = collections.defaultdict(lambda: collections.deque(maxlen=WRITES_KEPT_PER_STORAGE))
        self.leaves: "WeakIdKeyDictionary" = WeakIdKeyDictionary()
        self.views: "WeakIdKeyDictionary" = WeakIdKeyDictionary()
        self.data_aliases: "WeakIdKeyDictionary" = WeakIdKeyDictionary()
        self.modules: "WeakIdKeyDictionary" = WeakIdKeyDictionary()
        self.module_stack: list = []
        self.step_stack: list = []
        self.backward_stack: list = []
        self.current_op: str = ""
        self.current_inputs: frozenset = frozenset()
        self.reports: list[dict] = []
        self._reported: set = set()
        self.stats = collections.Counter()
        self.data_sets: dict = {}  # id(tensor) -> its recent `.data = ...` assignments

    # -- where in the user's code ---------------------------------------------------------

    def _is_user_file(self, filename: str) -> bool:
        if not filename or filename.startswith("<"):
            return False
        path = os.path.abspath(filename)
        if path == _THIS_FILE or path.startswith(_TORCH_DIR + os.sep):
            return False
        if "site-packages" in path or "dist-packages" in path:
            return any(path == r or path.startswith(r + os.sep) for r in self.roots)
        if any(path.startswith(s + os.sep) for s in _STDLIB):
            return False
        return any(path == r or path.startswith(r + os.sep) for r in self.roots)

    def user_location(self, frame=None):
        frame = frame or sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if self._is_user_file(code.co_filename):
                return Location(os.path.abspath(code.co_filename), frame.f_lineno, code.co_name)
            frame = frame.f_back
        return None

    def traceback_location(self, tb):
        """The innermost user frame of a traceback: where the failing call is in the user's code."""
        found = None
        while tb is not None:
            code = tb.tb_frame.f_code
            if self._is_user_file(code.co_filename):
                found = Location(os.path.abspath(code.co_filename), tb.tb_lineno, code.co_name)
            tb = tb.tb_next
        return found

    # -- recording -------------------------------------------------------------------------

    def record_write(self, op: str, tensor: torch.Tensor) -> None:
        self.seq += 1
        self.stats["writes"] += 1
        storage = _storage_key(tensor)
        via_data = self.data_aliases.get(tensor)
        module = self.module_stack[-1] if self.module_stack else None
        step = self.step_stack[-1] if self.step_stack else None
        # The version counter moves after the dispatch mode returns: the write makes it one more.
        write = Write(self.seq, op, storage, tensor._version + 1, self.user_location(), via_data,
                      module, step, torch.is_grad_enabled())
        self.writes[storage].append(write)

    def record_saved(self, tensor: torch.Tensor) -> Saved:
        self.seq += 1
        self.stats["saved"] += 1
        producer = None
        if tensor.grad_fn is not None:
            producer = f"output {tensor.output_nr} of {tensor.grad_fn.name()}"
        return Saved(self.seq, tensor._version, _storage_key(tensor), list(tensor.shape), _describe(tensor), producer,
                     self.current_op, id(tensor) in self.current_inputs, self.user_location())

    # -- reports ---------------------------------------------------------------------------

    def add_report(self, report: dict) -> None:
        key = (report["kind"], tuple((c.get("file"), c.get("line")) for c in report.get("culprits", [])))
        if key in self._reported or len(self.reports) >= MAX_REPORTS:
            return
        self._reported.add(key)
        self.reports.append(report)

    def module_info(self, module) -> dict | None:
        if module is None:
            return None
        location = self.modules.get(module)
        return {"class": type(module).__name__, "inplace": bool(getattr(module, "inplace", False)),
                "created": location.to_json() if location else None}

    def _culprit(self, write: Write) -> dict:
        culprit = write.location.to_json() if write.location else {"file": None, "line": None, "function": None, "source": ""}
        culprit.update({"op": write.op, "version": write.version, "via_data": write.via_data is not None})
        module = self.module_info(write.module) if write.module is not None else None
        if module is not None:
            culprit["module"] = module
            if module["inplace"] and module["created"]:
                # The construct to fix is the module's `inplace=True`, where it was built.
                culprit["fix_at"] = module["created"]
        if write.step is not None:
            culprit["step"] = {"optimizer": write.step[0], "call": write.step[1].to_json() if write.step[1] else None}
        return culprit

    def version_mismatch(self, tensor: torch.Tensor, saved: Saved) -> dict:
        """The report for a saved tensor found at another version at backward."""
        now = tensor._version
        writes = [w for w in self.writes.get(saved.storage, ()) if w.seq > saved.seq and saved.version < w.version <= now]
        steps = [w for w in writes if w.step is not None]
        if steps and len(steps) == len(writes):
            kind = "optimizer-step"
        elif any(w.module is not None and getattr(w.module, "inplace", False) for w in writes):
            kind = "inplace-module"
        else:
            kind = "saved-input" if saved.as_input else "saved-output"
        backward = self.backward_stack[-1] if self.backward_stack else None
        message = (f"{INPLACE_ERROR}: {saved.dtype}, which is {saved.producer}, is at version {now}; expected version "
                   f"{saved.version} instead." if saved.producer else
                   f"{INPLACE_ERROR}: {saved.dtype} is at version {now}; expected version {saved.version} instead.")
        return {
            "kind": kind,
            "error": message,
            "tensor": {"type": saved.dtype, "producer": saved.producer, "saved_version": saved.version, "version": now},
            "saved_by": {"op": saved.op, "as_input": saved.as_input,
                         "location": saved.location.to_json() if saved.location else None},
            "backward": backward.to_json() if backward else None,
            "culprits": [self._culprit(w) for w in writes],
        }

    def silent_writes(self, tensor: torch.Tensor, saved: Saved) -> None:
        """Writes that changed a saved tensor without moving its version: `.data` (no error, wrong gradients)."""
        storage = _storage_key(tensor)
        backward = self.backward_stack[-1] if self.backward_stack else None
        if storage != saved.storage:
            # `x.data = ...` swapped the saved tensor's storage: backward uses the new values.
            writes = [w for w in self.data_sets.get(id(tensor), ()) if w.seq > saved.seq]
        else:
            writes = [w for w in self.writes.get(storage, ()) if w.seq > saved.seq
                      and w.via_data is not None]
        if not writes:
            return
        self.add_report({
            "kind": "data-write",
            "error": None,
            "message": "a `.data` write changed a tensor autograd had saved; backward() ran without an error and "
                       "computed gradients from the changed values",
            "tensor": {"type": saved.dtype, "producer": saved.producer, "saved_version": saved.version, "version": tensor._version},
            "saved_by": {"op": saved.op, "as_input": saved.as_input, "location": saved.location.to_json() if saved.location else None},
            "backward": backward.to_json() if backward else None,
            "culprits": [self._culprit(w) for w in writes],
        })

    def error_at_call(self, error: BaseException, func, args) -> None:
        """An autograd error raised where the write (or `out=` call) is: its line is in the traceback."""
        if getattr(error, "_gradfix_traced", False):
            return
        text = str(error)
        if LEAF_VIEW_ERROR in text:
            kind = "leaf-view"
        elif LEAF_ERROR in text:
            kind = "leaf"
        elif MULTI_VIEW_ERROR in text:
            kind = "multi-output-view"
        elif OUT_ERROR in text and "out=" in text:
            kind = "out"
        elif any(v in text for v in VIEW_ERRORS):
            kind = "view"
        else:
            return
        try:
            error._gradfix_traced = True  # type: ignore[attr-defined]
        except Exception:
            pass
        location = self.traceback_location(error.__traceback__) or self.user_location()
        target = next((a for a in _tensors(args)), None)
        culprit = location.to_json() if location else {"file": None, "line": None, "function": None, "source": ""}
        culprit["op"] = getattr(func, "__name__", str(func))
        module = self.module_stack[-1] if self.module_stack else None
        if module is not None and getattr(module, "inplace", False):
            info = self.module_info(module)
            culprit["module"] = info
            if info and info["created"]:
                culprit["fix_at"] = info["created"]
        report = {"kind": kind, "error": text.split("\n")[0], "culprits": [culprit]}
        if target is not None:
            leaf = target if target.is_leaf else target._base if kind == "leaf-view" else None
            while leaf is not None and leaf._base is not None:
                leaf = leaf._base
            created = self.leaves.get(leaf) if leaf is not None else None
            if created is not None:
                report["leaf_created"] = created.to_json()
            view = self.views.get(target)
            if view is not None:
                report["view_created"] = {"op": view[0], "location": view[1].to_json() if view[1] else None}
        self.add_report(report)

    # -- `.data` assignments -----------------------------------------------------------------

    def data_assigned(self, target: torch.Tensor, value) -> None:
        self.seq += 1
        location = self.user_location()
        write = Write(self.seq, "data=", _storage_key(target), target._version, location, location, None,
                      self.step_stack[-1] if self.step_stack else None, torch.is_grad_enabled())
        self.data_sets.setdefault(id(target), collections.deque(maxlen=16)).append(write)
        if isinstance(value, torch.Tensor) and value.requires_grad and torch.is_grad_enabled():
            # The value's graph is dropped: nothing before it gets a gradient through this tensor.
            self.add_report({
                "kind": "data-write",
                "error": None,
                "message": f"`.data = ...` stores a value that requires grad ({value.grad_fn.name() if value.grad_fn else 'a leaf'}) "
                           "without its graph: no gradient flows back through it, and torch raises nothing",
                "culprits": [self._culprit(write)],
            })


def _tensors(args):
    for arg in args:
        if isinstance(arg, torch.Tensor):
            yield arg
        elif isinstance(arg, (list, tuple)):
            yield from (a for a in arg if isinstance(a, torch.Tensor))


class _WriteRecorder(TorchDispatchMode):
    """Sees every aten op under autograd; records the ones whose schema writes an argument."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer
        self._written: dict = {}

    def _written_arguments(self, func):
        found = self._written.get(func)
        if found is None:
            schema = func._schema
            found = tuple(
                (index, argument.name, argument.kwarg_only)
                for index, argument in enumerate(schema.arguments)
                if argument.alias_info is not None and argument.alias_info.is_write
            ) if schema.is_mutable else ()
            self._written[func] = found
        return found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        written = self._written_arguments(func)
        if written:
            name = func.overloadpacket.__name__
            for index, argument_name, kwarg_only in written:
                value = kwargs.get(argument_name) if (kwarg_only or index >= len(args)) else args[index]
                if isinstance(value, torch.Tensor):
                    self.tracer.record_write(name, value)
                elif isinstance(value, (list, tuple)):
                    for item in value:
                        if isinstance(item, torch.Tensor):
                            self.tracer.record_write(name, item)
        return func(*args, **kwargs)


class _CallWatcher(TorchFunctionMode):
    """Sees the Python-level torch calls: `.data`, leaves, multi-output views, backward(), and call errors."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tracer = self.tracer
        name = getattr(func, "__name__", "")
        if name == "__set__" and args and isinstance(args[0], torch.Tensor):
            tracer.data_assigned(args[0], args[1] if len(args) > 1 else None)
            return func(*args, **kwargs)
        if name in ("backward", "grad") and func in (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad):
            tracer.backward_stack.append(tracer.user_location())
            try:
                return self._call(func, args, kwargs)
            finally:
                tracer.backward_stack.pop()
        outer = tracer.current_op, tracer.current_inputs
        tracer.current_op = name
        tracer.current_inputs = frozenset(id(t) for t in (*_tensors(args), *_tensors(kwargs.values())))
        try:
            result = self._call(func, args, kwargs)
        finally:
            tracer.current_op, tracer.current_inputs = outer
        if name == "__get__" and isinstance(result, torch.Tensor):
            tracer.data_aliases[result] = tracer.user_location()
        elif isinstance(result, torch.Tensor):
            if result.requires_grad and result.is_leaf and result not in tracer.leaves:
                tracer.leaves[result] = tracer.user_location()
        elif name in MULTI_OUTPUT_VIEWS and isinstance(result, (tuple, list)):
            location = tracer.user_location()
            for piece in result:
                if isinstance(piece, torch.Tensor):
                    tracer.views[piece] = (name, location)
        return result

    def _call(self, func, args, kwargs):
        try:
            return func(*args, **kwargs)
        except RuntimeError as error:
            self.tracer.error_at_call(error, func, args)
            raise


class _SavedTensorChecks:
    """Saved-tensor hooks: remember each saved tensor's version; check it when backward unpacks it."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def pack(self, tensor):
        return tensor, self.tracer.record_saved(tensor)

    def unpack(self, packed):
        tensor, saved = packed
        if tensor._version != saved.version:
            report = self.tracer.version_mismatch(tensor, saved)
            self.tracer.add_report(report)
            error = RuntimeError(report["error"] + " [the writes are named by gradfix trace]")
            error._gradfix_traced = True  # type: ignore[attr-defined]
            raise error
        self.tracer.silent_writes(tensor, saved)
        return tensor


def _install_hooks(tracer: Tracer) -> list:
    """Module and optimizer hooks: which module or optimizer step a write happens in, and where modules are built."""
    handles = []
    from torch.nn.modules import module as module_mod

    def pre(module, _args):
        tracer.module_stack.append(module)

    def post(module, _args, _output):
        if tracer.module_stack and tracer.module_stack[-1] is module:
            tracer.module_stack.pop()

    handles.append(module_mod.register_module_forward_pre_hook(pre))
    handles.append(module_mod.register_module_forward_hook(post, always_call=True))

    original_init = torch.nn.Module.__init__

    def traced_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        location = tracer.user_location(sys._getframe(1))
        if location is not None:
            try:
                tracer.modules[self] = location
            except TypeError:
                pass

    torch.nn.Module.__init__ = traced_init
    handles.append(_Restore(torch.nn.Module, "__init__", original_init))

    from torch.optim import optimizer as optim_mod

    def step_pre(optimizer, _args, _kwargs):
        tracer.step_stack.append((type(optimizer).__name__, tracer.user_location()))

    def step_post(optimizer, _args, _kwargs):
        if tracer.step_stack:
            tracer.step_stack.pop()

    handles.append(optim_mod.register_optimizer_step_pre_hook(step_pre))
    handles.append(optim_mod.register_optimizer_step_post_hook(step_post))

    original_parameter_new = torch.nn.Parameter.__new__

    def traced_parameter_new(cls, data=None, requires_grad=True):
        parameter = original_parameter_new(cls, data, requires_grad)
        if requires_grad:
            location = tracer.user_location(sys._getframe(1))
            if location is not None:
                tracer.leaves[parameter] = location
        return parameter

    torch.nn.Parameter.__new__ = traced_parameter_new  # type: ignore[method-assign]
    handles.append(_Restore(torch.nn.Parameter, "__new__", original_parameter_new))
    return handles


def _print_program_traceback(error: BaseException) -> None:
    """The traceback Python would print for the program: without the tracer's and runpy's frames."""
    frames = [
        frame for frame in traceback.extract_tb(error.__traceback__)
        if os.path.abspath(frame.filename) != _THIS_FILE and not frame.filename.startswith("<frozen")
        and not frame.filename.endswith(("torch/overrides.py", "torch/utils/_python_dispatch.py"))
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(error), error)
    sys.stderr.write("".join(lines))


class _Restore:
    def __init__(self, owner, name, value) -> None:
        self.owner, self.name, self.value = owner, name, value

    def remove(self) -> None:
        setattr(self.owner, self.name, self.value)


def run(program: list[str], roots: list[str], module: bool = False) -> tuple[Tracer, int, str | None]:
    """Run ``program`` (argv) traced: (the tracer, the exit status, the uncaught error's text)."""
    tracer = Tracer(roots)
    checks = _SavedTensorChecks(tracer)
    handles = _install_hooks(tracer)
    status, failure = 0, None
    sys.argv = list(program)
    script = program[0]
    if not module:
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        with torch.autograd.graph.saved_tensors_hooks(checks.pack, checks.unpack), _CallWatcher(tracer), _WriteRecorder(tracer):
            if module:
                runpy.run_module(script, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
    except BaseException as error:  # the program's own failure: shown as Python would, then analysed
        _print_program_traceback(error)
        status = 1
        failure = "".join(traceback.format_exception_only(type(error), error)).strip()
        if isinstance(error, RuntimeError):
            tracer.error_at_call(error, None, ())
    finally:
        for handle in handles:
            handle.remove()
    return tracer, status, failure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracer.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where the events (JSON) go")
    parser.add_argument("--root", action="append", default=[], help="a user file or folder (repeatable)")
    parser.add_argument("-m", dest="module", action="store_true", help="the program is a module name")
    parser.add_argument("program", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    program = options.program[1:] if options.program[:1] == ["--"] else options.program
    if not program:
        parser.error("no program to run")
    roots = options.root or [os.path.dirname(os.path.abspath(program[0]))]
    tracer, status, failure = run(program, roots, options.module)
    sys.stdout.flush()
    sys.stderr.flush()
    events = {"status": status, "failure": failure, "reports": tracer.reports, "stats": dict(tracer.stats)}
    tmp = options.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(events, handle)
    os.replace(tmp, options.out)
    return status


if __name__ == "__main__":
    sys.exit(main())
