"""olla_jax: the least temp memory a JAX step can run in.

usage: {prog} SUBCOMMAND [--flags]

subcommands:
  demo    plan the example cnn_adam (size small) on CPU and print the result
  plan    plan one step: --example=NAME [--size=small] or --module=pkg.mod:make_step
  hlo     plan a module XLA dumped (--dump_dir=DIR, written with --xla_dump_to,
          --xla_dump_hlo_as_proto and --xla_dump_hlo_as_text); a report only, nothing is
          executed
  place   place buffers given as MiniMalloc CSV (id,lower,upper,size):
          --csv=in.csv --out=out.csv [--capacity=BYTES]
  show    print a saved plan: --plan=plan.json
  donate  which arguments to donate, measured by XLA: --example=NAME [--size=small]
          or --module=pkg.mod:make_step
  batch   the largest batch size that fits, per planner: --example=NAME [--size=small]
          or --module=pkg.mod:make_step_for_batch, --capacity=BYTES (or a GPU
          --backend), [--modes=xla,olla] [--min_batch=1] [--max_batch=N]
  help    print this help (help SUBCOMMAND, or SUBCOMMAND --help: that subcommand's)

examples:
  {prog} demo
  {prog} plan --example=gpt2 --size=tiny --time_limit_s=60 --save=gpt2.json --plot=gpt2
  {prog} plan --module=my_project.train:make_step --backend=gpu:h100 --no_feed_back
  {prog} hlo --dump_dir=/tmp/dump --plot=dump
  {prog} show --plan=gpt2.json
  {prog} donate --example=gpt2 --size=tiny
  {prog} batch --example=remat --size=tiny --capacity=16777216 --modes=xla,olla

--module names a callable (pkg.mod:make_step, or path/to/file.py:make_step)
taking no arguments that returns a Step-like object
(fn, args and, where it has them, kwargs, static_argnums, donate_argnums,
static_argnames, donate_argnames) or a tuple (fn, args) or (fn, args, kwargs);
for batch it takes the batch size instead.
Only warnings are logged unless --verbosity=0 (info) or --verbosity=1 (debug logs
and full tracebacks) is given; --helpfull lists absl's flags too.
Exit status: 0 done, 2 a usage error (a flag or its value), 1 the run failed
(e.g. a --memory_budget or --capacity not met).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import importlib.util
import json
import logging as pylogging
import os
import re
import shutil
import sys
import textwrap
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, NoReturn, Sequence

from absl import app, flags, logging

from olla_jax.capture.base import Backend
from olla_jax.errors import OllaJaxError
from olla_jax.sizes import parse_size, size_text

if TYPE_CHECKING:   # types only: the CLI imports the pipeline when a command runs
    from olla_jax.graph.layout import Layout
    from olla_jax.graph.model import ScheduleGraph
    from olla_jax.result import Plan

SUBCOMMANDS = ("demo", "plan", "hlo", "place", "show", "donate", "batch", "help")
ORDER_ENGINES = "auto, list, cpsat, ilp-cbc, ilp-highs, lns, joint (order and placement in one CP-SAT model)"

_EXAMPLE = flags.DEFINE_string("example", None, "plan/donate/batch: the example step "
                               "(python -m examples lists them), e.g. gpt2.")
_SIZE = flags.DEFINE_enum("size", "small", ["tiny", "small", "full"], "plan/donate/batch: the "
                          "example's size (batch: everything but the batch size).")
_MODULE = flags.DEFINE_string("module", None, "plan/donate: 'pkg.mod:make_step' (or "
                              "'path/to/file.py:make_step'), a callable "
                              "returning a Step-like object or a tuple (fn, args); batch: the "
                              "same callable taking the batch size; imported from the current "
                              "directory too.")
_BACKEND = flags.DEFINE_enum("backend", "cpu", ["cpu", "gpu", "gpu:h100", "gpu:a100"],
                             "plan/donate/batch: where the step runs; 'gpu' is this machine's "
                             "GPU, gpu:h100/gpu:a100 are compiled without a GPU (needs pip "
                             "install 'olla_jax[gpu]').")
_TIME_LIMIT = flags.DEFINE_float("time_limit_s", 20.0, "demo/plan/hlo/place/batch: solver time "
                                 "limit in seconds (batch: per probed batch size, default 10 as "
                                 "olla_jax.largest_batch's).", lower_bound=0.0)
_ENGINE = flags.DEFINE_string("engine", "auto", f"plan/hlo: order engine, one of {ORDER_ENGINES}.")
_SEED = flags.DEFINE_integer("seed", 0, "plan/hlo: random seed of the order search.")
_SAVE = flags.DEFINE_string("save", None, "demo/plan: write the plan as JSON to this path "
                            "(read it back with olla_jax.load_plan or the show subcommand).")
_PLOT = flags.DEFINE_string("plot", None, "demo/plan/hlo: write PREFIX-memory.png and "
                            "PREFIX-layout.png (needs pip install 'olla_jax[plots]').")
_EXECUTABLE_OUT = flags.DEFINE_string(
    "executable_out", None, "plan: write our serialized executable to this path when one was "
    "built (for a compile-only GPU target: rewritten and decoded here, to load on a GPU with "
    "client.deserialize_executable).")
_NO_FEED_BACK = flags.DEFINE_boolean("no_feed_back", False, "plan: report the plan only; do not "
                                     "rewrite, verify and load the executable.")
_MEMORY_BUDGET = flags.DEFINE_string(
    "memory_budget", None, "plan: the bytes the whole step may use (arguments, outputs and temp), "
    "e.g. 200MiB, 1.5GiB or 123456789; order and placement first, then recomputation. A budget "
    "not met exits 1 with the least reached (and --save writes that plan).")
_RECOMPUTE_COST = flags.DEFINE_enum("recompute_cost", None, ["time", "flops"], "plan: what "
                                    "recomputation minimises with --memory_budget: estimated "
                                    "time (roofline; CPU's default) or extra FLOPs (GPU's).")
_OFFLOAD = flags.DEFINE_boolean("offload", False, "plan: with --memory_budget on a compile-only "
                                "GPU target, also try parking the longest-idle values in host "
                                "memory (olla_jax.offload), then our order and placement; kept "
                                "only with fewer extra FLOPs than the other sides or where none "
                                "meets the budget (built, not run: the copies' time is unknown).")
_PROGRAM_REMAT = flags.DEFINE_boolean("program_remat", False, "plan: with --memory_budget on a "
                                      "compile-only GPU target, also try the step with long-idle "
                                      "values computed again in its jaxpr (olla_jax.program_remat; "
                                      "bits compared on CPU), then our order and placement; "
                                      "opt-in: minutes of XLA compiles.")
_SCAN_REMAT = flags.DEFINE_boolean("scan_remat", False, "plan: with --memory_budget, where "
                                   "the budget is missed, also try the step with its scans' "
                                   "residual stacks recomputed in the backward scan "
                                   "(olla_jax.scan_remat; outputs compared with jax.jit's bit "
                                   "for bit on CPU), then planned with the same budget.")
_RNG_LOWERING = flags.DEFINE_enum("rng_lowering", "unrolled", ["unrolled", "jax"], "plan: on "
                                  "CPU, plan a step that uses jax.random's threefry2x32 with it "
                                  "unrolled, as jax lowers it on GPU and TPU (its bits become "
                                  "fusions; the report still compares with jax.jit's program, "
                                  "and the plan is verified against it), or 'jax': the rolled "
                                  "loop jax.jit compiles on CPU.")
_DUMP_DIR = flags.DEFINE_string("dump_dir", None, "hlo: folder XLA dumped the module into "
                                "(*after_optimizations.hlo.pb, *-buffer-assignment-values.txt, "
                                "*-live-range.txt: XLA_FLAGS='--xla_dump_to=DIR "
                                "--xla_dump_hlo_as_proto --xla_dump_hlo_as_text').")
_HLO_MODULE = flags.DEFINE_string("hlo_module", None, "hlo: pick the dumped module whose file name "
                                  "contains this text (default: the largest module).")
_CSV = flags.DEFINE_string("csv", None, "place: the buffers to place, as MiniMalloc CSV (columns "
                           "id,lower,upper,size; live on [lower, upper)).")
_OUT = flags.DEFINE_string("out", None, "place: where to write the buffers with an offset column.")
_CAPACITY = flags.DEFINE_string("capacity", None, "place: arena capacity in bytes "
                                "(default: none, minimise the arena); batch: the bytes one step "
                                "may use (default for a GPU --backend: its memory less "
                                "--reserve_bytes); e.g. 16777216, 16MiB or 1.5GiB.")
_PLAN = flags.DEFINE_string("plan", None, "show: the saved plan (JSON) to print.")
_MODES = flags.DEFINE_list("modes", ["xla", "olla"], "batch: planners to compare, from xla "
                           "(XLA's best plan), olla (olla_jax's order and placement), recompute "
                           "(olla_jax with recomputation, a memory budget).")
_MIN_BATCH = flags.DEFINE_integer("min_batch", 1, "batch: the smallest batch size tried (the "
                                  "search doubles from it).", lower_bound=1)
_MAX_BATCH = flags.DEFINE_integer("max_batch", None, "batch: the largest batch size tried "
                                  "(default: no limit).", lower_bound=1)
_RESERVE = flags.DEFINE_string("reserve_bytes", None, "batch: bytes of a GPU's memory held back "
                               "from the step, e.g. 0, 1073741824 or 1GiB (default: the 25% jax's "
                               "GPU client leaves outside its allocator, or 1 - "
                               "XLA_CLIENT_MEM_FRACTION).")

FLAGS = flags.FLAGS
MIB = 2 ** 20


class UsageError(OllaJaxError):
    """The command line is wrong: exit 2 with the message and a pointer to --help."""


class MakeStepError(OllaJaxError):
    """The --module callable raised: exit 1 with its error on one line (the
    traceback with --verbosity=1)."""


# ---- helpers -----------------------------------------------------------------

def _prog() -> str:
    argv0 = sys.argv[0] if sys.argv else ""
    return "python -m olla_jax" if argv0.endswith("__main__.py") or not argv0 else os.path.basename(argv0)


def _usage() -> str:
    return __doc__.format(prog=_prog())


def _print_help(full: bool = False, subcommand: str | None = None) -> None:
    if subcommand is not None and not full:
        text = _subcommand_help(subcommand)
    else:
        text = _usage() + "\nflags:\n" + (FLAGS.get_help() if full else FLAGS.module_help(__name__))
    try:
        print(text)
    except BrokenPipeError:   # `olla-jax --help | head`
        pass


# absl puts an enum's values first: "<tiny|small|full>: plan/donate: ..."
_SEGMENT = re.compile(r"(?:^(?:<[^>]*>:\s+)?|;\s+)((?:{0})(?:/(?:{0}))*):\s+".format(
    "|".join(SUBCOMMANDS)))


def _flag_text(help_text: str, subcommand: str) -> str | None:
    """What a flag's help says for ``subcommand`` (its help is written as
    'plan/hlo: ...; batch: ...'); None when the flag is not one of its flags."""
    found = list(_SEGMENT.finditer(help_text))
    for k, m in enumerate(found):
        if subcommand in m.group(1).split("/"):
            end = found[k + 1].start() if k + 1 < len(found) else len(help_text)
            text = help_text[m.end():end].strip()
            return text if text.endswith(".") else text + "."
    return None


def _flag_usage(flag: Any) -> str:
    if flag.flag_type() == "bool":
        return f"--{flag.name}"
    values = getattr(flag.parser, "enum_values", None)
    kind = "{" + ",".join(values) + "}" if values else flag.flag_type().split()[-1].upper()
    return f"--{flag.name}={kind}"


def _subcommand_help(name: str) -> str:
    """Usage, description, examples and flags of one subcommand (from this
    module's docstring and the flags' help)."""
    doc, prog = _usage(), _prog()
    described, current = [], None
    for line in doc.split("subcommands:\n", 1)[1].split("\n\n", 1)[0].splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            current = line.split()[0]
            line = line.strip()[len(current):]
        if current == name:
            described.append(line.strip())
    examples = [line.strip() for line in doc.split("examples:\n", 1)[1].split("\n\n", 1)[0]
                .splitlines() if (line.strip() + " ").startswith(f"{prog} {name} ")]
    rows = []
    for flag in FLAGS.get_flags_for_module(__name__):
        text = _flag_text(flag.help, name)
        if text is None:
            continue
        if flag.default not in (None, False, []):
            default = ",".join(flag.default) if isinstance(flag.default, list) else flag.default
            text += f" (default: {default})"
        rows.append(f"  {_flag_usage(flag)}\n" + textwrap.fill(
            text, width=92, initial_indent="      ", subsequent_indent="      "))
    rows.append("  -v, --verbosity=INT\n      Logs: 0 info, 1 debug (and full tracebacks); by default "
                "warnings only.")
    out = [f"usage: {prog} {name} [--flags]", "",
           textwrap.fill(f"{name}: " + " ".join(described), width=92, subsequent_indent="  ")]
    if examples:
        out += ["", "examples:"] + [f"  {e}" for e in examples]
    return "\n".join(out + ["", "flags:"] + rows)


def _mib(n: int | None) -> str:
    return "-" if n is None else size_text(n)


def _change(old: int, new: int) -> str:
    return f"{100 * (new - old) / old:+.1f}%" if old else "n/a"


def _require(flag: flags.FlagHolder, subcommand: str) -> Any:
    if flag.value is None:
        raise UsageError(f"{subcommand} needs --{flag.name}")
    return flag.value


def _require_file(flag: flags.FlagHolder, subcommand: str) -> str:
    """A flag naming an input file: missing, a usage error (exit 2) as a bad
    --module path is; a file that is there but wrong fails the run (exit 1)."""
    path = _require(flag, subcommand)
    if not os.path.isfile(path):
        raise UsageError(f"--{flag.name}={path!r}: no such file")
    return path


def _log_warnings() -> None:
    """Warnings (e.g. PlanWarning: XLA's plan kept) as one log line each."""
    def show(message, category, filename, lineno, file=None, line=None):
        if _StatusLine.active is not None:
            _StatusLine.active.clear()
        logging.warning("%s: %s", category.__name__, message)
    warnings.showwarning = show


class _StatusLine:
    """The planner's progress as one line on a terminal, redrawn in place
    (elapsed time ticks between the planner's reports).  A no-op unless the
    stream is a terminal and info logs are off."""
    active: "_StatusLine | None" = None

    def __init__(self, stream: Any = None, interval_s: float = 0.25):
        self.stream = sys.stderr if stream is None else stream
        self.interval_s = interval_s
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)()) and \
            logging.get_verbosity() < logging.INFO
        self._latest: tuple[Any, float] | None = None   # (Progress, its run's start)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def callback(self) -> Callable[[Any], None] | None:
        return self.update if self.enabled else None

    def update(self, progress: Any) -> None:
        self._latest = (progress, time.monotonic())
        self.draw()

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 100
        except (AttributeError, OSError, ValueError):
            return shutil.get_terminal_size((100, 20)).columns

    def draw(self) -> None:
        if self._latest is None:
            return
        progress, when = self._latest
        line = progress.line(time.monotonic() - when)[:max(20, self._width() - 1)]
        with self._lock:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()

    def clear(self) -> None:
        with self._lock:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.draw()

    def __enter__(self) -> "_StatusLine":
        if self.enabled:
            _StatusLine.active = self
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.clear()
        _StatusLine.active = None


def _plot(plan: Plan) -> None:
    if _PLOT.value:
        from olla_jax import report
        paths = report.plot_plan(plan, _PLOT.value)
        print("wrote " + ", ".join(paths))


def parse_bytes(text: str, flag: str = "memory_budget") -> int:
    """``text`` such as '123456', '200MiB' or '1.5 GB' as a positive number of bytes
    (``olla_jax.sizes.parse_size``, as the Python API reads it)."""
    try:
        return parse_size(text, f"--{flag}")
    except ValueError as err:
        raise UsageError(str(err)) from None


def _check_flag_values() -> None:
    """Flag values the library would refuse (a ValueError, exit 1 as a failed
    run), refused here as the usage errors they are: exit 2, as absl's own."""
    import math
    from olla_jax.batch import MODES
    from olla_jax.solve.order import ENGINES
    limit = _TIME_LIMIT.value
    if not (math.isfinite(limit) and limit > 0):
        raise UsageError(f"--time_limit_s={limit:g}: give a positive number of seconds")
    engines = (*ENGINES, "joint")
    if _ENGINE.value not in engines:
        raise UsageError(f"--engine={_ENGINE.value!r}: choose one of {', '.join(engines)}")
    modes = [m.strip() for m in _MODES.value if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise UsageError(f"--modes={','.join(_MODES.value)!r}: choose from {', '.join(MODES)}")
    if _MAX_BATCH.value is not None and _MAX_BATCH.value < _MIN_BATCH.value:
        raise UsageError(f"--max_batch={_MAX_BATCH.value} is below --min_batch={_MIN_BATCH.value}")
    if _RESERVE.value is not None and _CAPACITY.value is not None:
        raise UsageError("give --capacity or --reserve_bytes, not both: --reserve_bytes is held "
                         "back from a GPU's memory when --capacity is not given")
    if _MEMORY_BUDGET.value is not None:
        parse_bytes(_MEMORY_BUDGET.value)
    if _SCAN_REMAT.value and _MEMORY_BUDGET.value is None:
        raise UsageError("--scan_remat is a side of a memory budget (tried where it is missed): "
                         "give --memory_budget")
    if _OFFLOAD.value:
        from olla_jax.capture.base import Backend
        from olla_jax.plan import check_offload
        try:
            check_offload(Backend.parse(_BACKEND.value), _MEMORY_BUDGET.value, True, None)
        except ValueError as err:
            raise UsageError("--offload: " + _as_flags(str(err), "offload")) from None
    if _PROGRAM_REMAT.value:
        from olla_jax.capture.base import Backend
        from olla_jax.plan import check_program_remat
        try:
            check_program_remat(Backend.parse(_BACKEND.value), _MEMORY_BUDGET.value, True)
        except ValueError as err:
            raise UsageError("--program_remat: " + _as_flags(str(err), "program_remat")) from None
    _capacity()
    _reserve()
    _check_out_folders()


def _as_flags(message: str, option: str) -> str:
    """A library refusal of ``option=True`` worded with the command line's flags."""
    return (message.replace(f"{option}=True", "it").replace("memory_budget=...", "--memory_budget")
            .replace("backend=", "--backend="))


def _check_out_folders() -> None:
    """--save, --plot, --executable_out and --out into a folder that exists:
    refused before the run, not after the plan was paid for."""
    from olla_jax.saved import check_folder
    for flag, path in (("save", _SAVE.value), ("plot", _PLOT.value and f"{_PLOT.value}-memory.png"),
                       ("executable_out", _EXECUTABLE_OUT.value), ("out", _OUT.value)):
        if path:
            try:
                check_folder(path, f"--{flag}")
            except FileNotFoundError as err:
                raise UsageError(str(err)) from None


def _capacity() -> int | None:
    return None if _CAPACITY.value is None else parse_bytes(_CAPACITY.value, "capacity")


def _reserve() -> int | None:
    """--reserve_bytes as bytes (zero allowed), a usage error when unreadable."""
    from olla_jax.batch.capacity import reserve_size
    if _RESERVE.value is None:
        return None
    try:
        return reserve_size(_RESERVE.value)
    except ValueError as err:
        raise UsageError(str(err).replace("reserve_bytes=", "--reserve_bytes=", 1)) from None


def _run_plan(fn: Callable, args: Sequence[Any], static_argnums: Sequence[int] = (),
              donate_argnums: Sequence[int] = (), kwargs: dict[str, Any] | None = None,
              static_argnames: Sequence[str] = (), donate_argnames: Sequence[str] = ()) -> Any:
    import olla_jax
    budget = None if _MEMORY_BUDGET.value is None else parse_bytes(_MEMORY_BUDGET.value)
    logging.info("planning on %s, time limit %.0f s, engine %s", _BACKEND.value,
                 _TIME_LIMIT.value, _ENGINE.value)
    missed = None
    with _StatusLine() as status:
        try:
            plan = olla_jax.plan(fn, *args, backend=_BACKEND.value, time_limit_s=_TIME_LIMIT.value,
                                 static_argnums=tuple(static_argnums),
                                 donate_argnums=tuple(donate_argnums), kwargs=kwargs,
                                 static_argnames=tuple(static_argnames),
                                 donate_argnames=tuple(donate_argnames), engine=_ENGINE.value,
                                 feed_back=not _NO_FEED_BACK.value, seed=_SEED.value,
                                 progress=status.callback, memory_budget=budget,
                                 recompute_cost=_RECOMPUTE_COST.value, offload=_OFFLOAD.value,
                                 rng_lowering=_RNG_LOWERING.value,
                                 scan_remat=_SCAN_REMAT.value,
                                 program_remat=_PROGRAM_REMAT.value)
        except olla_jax.BudgetNotMet as err:
            if err.plan is None:
                raise
            missed, plan = err, err.plan
    print(plan.summary())
    if _SAVE.value:
        plan.save(_SAVE.value)
        print(f"saved {_SAVE.value}")
    if _EXECUTABLE_OUT.value:
        if plan.executable_bytes is None:
            print("no executable of ours was built (see the notes above); nothing written")
        else:
            with open(_EXECUTABLE_OUT.value, "wb") as f:
                f.write(plan.executable_bytes)
            print(f"wrote {_EXECUTABLE_OUT.value} ({len(plan.executable_bytes):,} bytes)")
    _plot(plan)
    if missed is not None:
        raise missed
    return plan


def _example(name: str, size: str) -> Any:
    try:
        import examples
    except ImportError as err:
        raise UsageError("the examples package is not importable: run from the olla_jax "
                         "repository or install it (pip install -e '.[examples]')") from err
    logging.info("building example %s (%s)", name, size)
    return examples.get(name, size)


def _load_callable(spec: str) -> Callable[[], Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--module={spec!r}: write it as pkg.mod:make_step")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = (_import_file(module_name) if module_name.endswith(".py") or os.sep in module_name
                  else importlib.import_module(module_name))
    except ImportError as err:
        raise UsageError(f"--module: cannot import {module_name}: {err}") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"--module: {module_name} has no callable {attr!r}")
    return fn


def _import_file(path: str) -> Any:
    """A module given by its file (``--module=train.py:make_step``), imported as
    ``python train.py`` would find its neighbours: its folder first on the path."""
    if not os.path.isfile(path):
        raise ImportError(f"no file {path!r} (write a module as pkg.mod or a file as "
                          "path/to/file.py)")
    folder, name = os.path.split(os.path.abspath(path))
    name = name[:-len(".py")] if name.endswith(".py") else name
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module     # as an import would: dataclasses and pickling look it up
    spec.loader.exec_module(module)
    return module


class _StepParts(NamedTuple):
    fn: Callable
    args: tuple
    static_argnums: tuple[int, ...] = ()
    donate_argnums: tuple[int, ...] = ()
    kwargs: dict[str, Any] | None = None
    static_argnames: tuple[str, ...] = ()
    donate_argnames: tuple[str, ...] = ()


def _step_parts(obj: Any, spec: str) -> _StepParts:
    """The step of a Step-like object (fn, args and, where it has them, kwargs,
    static_argnums, donate_argnums, static_argnames, donate_argnames) or of a
    tuple (fn, args) or (fn, args, kwargs): every part is used, none dropped."""
    if hasattr(obj, "fn") and hasattr(obj, "args"):
        return _StepParts(obj.fn, tuple(obj.args), tuple(getattr(obj, "static_argnums", ()) or ()),
                          tuple(getattr(obj, "donate_argnums", ()) or ()),
                          dict(getattr(obj, "kwargs", None) or {}) or None,
                          _names(getattr(obj, "static_argnames", ())),
                          _names(getattr(obj, "donate_argnames", ())))
    if isinstance(obj, tuple) and len(obj) in (2, 3) and callable(obj[0]) \
            and isinstance(obj[1], (tuple, list)) and (len(obj) == 2 or isinstance(obj[2], dict)):
        _check_tuple_leaves(obj, spec)
        return _StepParts(obj[0], tuple(obj[1]), kwargs=(dict(obj[2]) or None) if len(obj) == 3
                          else None)
    raise UsageError(f"--module={spec} returned a {type(obj).__name__}; it must return an object "
                     "with fn and args (like examples.Step) or a tuple (fn, args) or "
                     "(fn, args, kwargs)")


def _check_tuple_leaves(made: tuple, spec: str) -> None:
    """A (fn, args[, kwargs]) tuple marks nothing static: a leaf that is no array
    (nor a Python number, traced as jax.jit does) is refused here, saying how to
    mark it, rather than by the planner's hint to pass static_argnums."""
    from olla_jax import calls
    found = calls.leaf_that_is_no_array(
        made[1], made[2] if len(made) == 3 else None, calls.traced_as_array)
    if found is not None:
        where, leaf = found
        raise UsageError(
            f"--module={spec} returned a tuple whose {where} is a {type(leaf).__name__}, not an "
            "array, and a tuple cannot mark it static: return an object with fn, args and "
            "static_argnums / static_argnames (like examples.Step), or bind it into fn "
            "(functools.partial)")


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _call_maker(maker: Callable, spec: str, *args: Any) -> Any:
    """``maker(*args)``, the user's --module callable; what it raises becomes one line."""
    try:
        return maker(*args)
    except Exception as err:  # noqa: BLE001 - the user's code raises anything
        raise MakeStepError(f"--module={spec} raised {type(err).__name__}: {err}") from err


# ---- subcommands ---------------------------------------------------------------

def cmd_demo() -> None:
    step = _example("cnn_adam", "small")
    plan = _run_plan(step.fn, step.args, step.static_argnums, step.donate_argnums)
    xla, ours = plan.xla_temp_bytes, plan.planned_temp_bytes
    line = f"XLA best temp {xla / MIB:,.2f} MiB -> olla_jax {ours / MIB:,.2f} MiB ({_change(xla, ours)})"
    if plan.source == "olla_jax" and plan.achieved_temp_bytes != ours:
        line += "  [planned; the executable was not rewritten, see the notes]"
    print(line)


def cmd_plan() -> None:
    if (_EXAMPLE.value is None) == (_MODULE.value is None):
        raise UsageError("plan needs exactly one of --example=NAME or --module=pkg.mod:make_step")
    if _EXAMPLE.value is not None:
        step = _example(_EXAMPLE.value, _SIZE.value)
        parts = _step_parts(step, _EXAMPLE.value)
    else:
        made = _call_maker(_load_callable(_MODULE.value), _MODULE.value)
        parts = _step_parts(made, _MODULE.value)
    _run_plan(**parts._asdict())


@dataclasses.dataclass(frozen=True)
class _Dump:
    name: str
    hlo_proto: bytes
    values_text: str
    live_range_text: str


# What XLA must dump for `hlo`: the optimized module as a proto, and the text
# dumps, which alone hold its buffer assignment and live ranges.
DUMP_FLAGS = "--xla_dump_to=DIR --xla_dump_hlo_as_proto --xla_dump_hlo_as_text"


def _read_dump(directory: str, pick: str | None) -> _Dump:
    if not os.path.isdir(directory):
        raise UsageError(f"--dump_dir={directory} is not a folder")
    suffix = "after_optimizations.hlo.pb"
    protos = sorted(glob.glob(os.path.join(directory, f"*{suffix}")))
    if pick:
        protos = [p for p in protos if pick in os.path.basename(p)]
    if not protos:
        raise UsageError(f"no *{suffix}{f' matching {pick!r}' if pick else ''} in {directory}: "
                         f"dump with XLA_FLAGS='{DUMP_FLAGS}'")
    path = max(protos, key=os.path.getsize)
    if len(protos) > 1:
        logging.info("%d modules in %s; planning the largest, %s (choose with --hlo_module)",
                     len(protos), directory, os.path.basename(path))
    prefix = path[:-len(suffix)] + "after_optimizations"

    def text(tail: str) -> str:
        try:
            with open(prefix + tail) as f:
                return f.read()
        except OSError as err:
            raise UsageError(f"{os.path.basename(path)} has no {tail} next to it ({err.strerror}): "
                             "XLA writes it with --xla_dump_hlo_as_text; dump with "
                             f"XLA_FLAGS='{DUMP_FLAGS}'") from err
    with open(path, "rb") as f:
        proto = f.read()
    return _Dump(os.path.basename(prefix), proto, text("-buffer-assignment-values.txt"),
                 text("-live-range.txt"))


def _solve_graph(graph: ScheduleGraph, xla: Layout,
                 time_limit_s: float) -> tuple[Layout, int | None, str]:
    """(best layout, lower bound, engine) for a graph; ``xla`` if nothing beats it."""
    from olla_jax.plan import solve_graph
    from olla_jax.progress import Reporter
    with _StatusLine() as status:
        report = Reporter(status.callback, time_limit_s)
        report.start_planning()
        report("order search", xla=xla.temp_bytes)
        solution = solve_graph(graph, time_limit_s=time_limit_s, engine=_ENGINE.value,
                               seed=_SEED.value, progress=report)
    if solution.layout.temp_bytes >= xla.temp_bytes:
        return xla, min(solution.lower_bound_bytes, xla.temp_bytes), solution.engine
    return solution.layout, solution.lower_bound_bytes, solution.engine


def cmd_hlo() -> None:
    from olla_jax import check
    from olla_jax.graph import layout as layout_lib
    from olla_jax.graph import model
    dump = _read_dump(_require(_DUMP_DIR, "hlo"), _HLO_MODULE.value)
    logging.info("building the scheduling graph of %s", dump.name)
    graph = model.build(dump.hlo_proto, dump.values_text, dump.live_range_text)
    xla = layout_lib.xla_layout(graph)
    t0 = time.monotonic()
    ours, bound, engine = _solve_graph(graph, xla, _TIME_LIMIT.value)
    seconds = time.monotonic() - t0
    checked = "-"
    if ours is not xla:
        check.check_plan(dump.hlo_proto, dump.values_text, dump.live_range_text,
                         check.CandidatePlan(ours.order_names, ours.places, ours.allocation_sizes),
                         alignment=graph.alignment)
        checked = "yes"
    rows = [("XLA temp", _mib(xla.temp_bytes)),
            ("olla_jax temp, planned", f"{_mib(ours.temp_bytes)} " + (
                f"({_change(xla.temp_bytes, ours.temp_bytes)})" if ours is not xla
                else "(XLA's plan kept: nothing better found)")),
            ("lower bound (proven)", _mib(None if bound is None else min(bound, ours.temp_bytes))),
            ("accepted by the checker", checked),
            ("nodes / flat steps / units", f"{len(graph.nodes):,} / {len(graph.flat):,} / {len(graph.units):,}"),
            ("engine, solve time", f"{engine}, {seconds:.1f} s")]
    width = max(len(k) for k, _ in rows)
    print(f"olla_jax plan of {dump.name} (report only: no executable)")
    print("\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows))
    if _PLOT.value:
        from olla_jax import report
        paths = [report.plot_memory(graph, xla, ours, f"{_PLOT.value}-memory.png",
                                    title=f"temp memory over time: {dump.name}",
                                    lower_bound=bound and min(bound, ours.temp_bytes)),
                 report.plot_layout(graph, ours, f"{_PLOT.value}-layout.png",
                                    title=f"buffer layout: {dump.name}", xla=xla,
                                    sources=report.op_sources(dump.hlo_proto),
                                    name="olla_jax" if ours is not xla else "XLA")]
        print("wrote " + ", ".join(paths))


def cmd_place() -> None:
    in_path, out_path = _require_file(_CSV, "place"), _require(_OUT, "place")
    try:
        from olla_jax.solve.csv_io import solve_csv
    except ImportError as err:
        raise ImportError(f"the CSV placement entry point is not available in this olla_jax ({err})") from err
    logging.info("placing %s, time limit %.0f s", in_path, _TIME_LIMIT.value)
    placement = solve_csv(in_path, out_path, capacity=_capacity(), time_limit_s=_TIME_LIMIT.value)
    print(f"placed {len(placement.offset):,} buffers in an arena of {placement.arena_size:,} bytes; "
          f"wrote {out_path}")


def cmd_show() -> None:
    path = _require_file(_PLAN, "show")
    import olla_jax
    load = getattr(olla_jax, "load_plan", None)
    if load is not None:
        print(load(path).summary())
        return
    with open(path) as f:
        print(json.dumps(json.load(f), indent=2))


def _step_source(subcommand: str) -> None:
    if (_EXAMPLE.value is None) == (_MODULE.value is None):
        raise UsageError(f"{subcommand} needs exactly one of --example=NAME or "
                         "--module=pkg.mod:make_step")


def cmd_donate() -> None:
    _step_source("donate")
    if _EXAMPLE.value is not None:
        parts = _step_parts(_example(_EXAMPLE.value, _SIZE.value), _EXAMPLE.value)
    else:
        parts = _step_parts(_call_maker(_load_callable(_MODULE.value), _MODULE.value),
                            _MODULE.value)
    fn, args, static, donate = parts[:4]
    import olla_jax
    logging.info("measuring donation candidates on %s", _BACKEND.value)
    advice = olla_jax.advise_donation(fn, *args, static_argnums=static, donate_argnums=donate,
                                      backend=_BACKEND.value, kwargs=parts.kwargs,
                                      static_argnames=parts.static_argnames,
                                      donate_argnames=parts.donate_argnames)
    print(advice.summary())


def _batch_maker() -> Callable[[int], Any]:
    _step_source("batch")
    if _MODULE.value is not None:
        maker, spec = _load_callable(_MODULE.value), _MODULE.value
        return lambda batch: _call_maker(maker, spec, batch)
    name, size = _EXAMPLE.value, _SIZE.value
    try:
        import examples
    except ImportError as err:
        raise UsageError("the examples package is not importable: run from the olla_jax "
                         "repository or install it (pip install -e '.[examples]')") from err
    if name not in examples.EXAMPLES:
        raise UsageError(f"unknown example {name!r}; known: {', '.join(examples.names())}")

    def make(batch: int) -> Any:
        logging.info("building example %s (%s) at batch %d", name, size, batch)
        return examples.make(name, size, batch)
    return make


def cmd_batch() -> None:
    make = _batch_maker()
    capacity = _capacity()
    if capacity is None and Backend.parse(_BACKEND.value).kind != "gpu":
        raise UsageError("batch needs --capacity=BYTES on CPU (or a GPU --backend, whose memory "
                         "is the default)")
    import olla_jax
    modes = tuple(m.strip() for m in _MODES.value if m.strip())
    # --time_limit_s's default is plan's (20 s); batch without it takes
    # largest_batch's own default, so that the command and the function answer
    # alike (the olla answer depends on the planner's limit where it runs to it).
    limit = {"time_limit_s": _TIME_LIMIT.value} if FLAGS["time_limit_s"].present else {}
    report = olla_jax.largest_batch(make, capacity_bytes=capacity, backend=_BACKEND.value,
                                    modes=modes, low=_MIN_BATCH.value, high=_MAX_BATCH.value,
                                    reserve_bytes=_reserve(), **limit)
    print(report.summary())
    print("\nprobes (in search order):")
    print(report.probes_table())


COMMANDS: dict[str, Callable[[], None]] = {
    "demo": cmd_demo, "plan": cmd_plan, "hlo": cmd_hlo, "place": cmd_place, "show": cmd_show,
    "donate": cmd_donate, "batch": cmd_batch}


# ---- entry points ----------------------------------------------------------------

def _fail(message: str, code: int) -> NoReturn:
    print(f"{_prog()}: error: {message}", file=sys.stderr)
    if code == 2:
        print(f"usage: {_prog()} {{{','.join(SUBCOMMANDS)}}} [--flags]; see --help",
              file=sys.stderr)
    sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as err:
        _fail(str(err), 2)


def main(argv: list[str]) -> None:
    """Dispatch ``argv[1]`` (flags already parsed by absl)."""
    _log_warnings()
    if not FLAGS["verbosity"].present:   # absl would log INFO; only warnings unless asked
        logging.set_verbosity(logging.WARNING)
    if logging.get_verbosity() < 1:   # jax's own INFO lines (e.g. no TPU found) are noise here
        pylogging.getLogger("jax").setLevel(pylogging.WARNING)
    positional = argv[1:]
    if not positional:
        _fail("give a subcommand", 2)
    name, extra = positional[0], positional[1:]
    if name == "help":
        if extra and extra[0] not in COMMANDS:
            _fail(f"help: unknown subcommand {extra[0]!r}; choose one of {', '.join(COMMANDS)}", 2)
        _print_help(subcommand=extra[0] if extra else None)
        return
    if name not in COMMANDS:
        _fail(f"unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)}", 2)
    if extra:
        _fail(f"unexpected arguments {' '.join(extra)!r} (flags are written --name=value)", 2)
    from olla_jax import BudgetNotMet, CaptureError, jax_compat
    jax_compat.discover_plugins()   # now, before any step touches jax: quietly
    try:
        _check_flag_values()
        COMMANDS[name]()
    except UsageError as err:
        _fail(str(err), 2)
    except (CaptureError, MakeStepError, ValueError, KeyError, ImportError, OSError) as err:
        if logging.get_verbosity() >= 1:
            raise
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        lines = message.strip().splitlines() or [type(err).__name__]
        if isinstance(err, BudgetNotMet):   # its further lines are the diagnosis
            _fail("\n".join(lines), 1)     # (what holds the peak, and why), no traceback
        _fail(lines[0] + (" [more with --verbosity=1]" if len(lines) > 1 else ""), 1)


def run(argv: list[str] | None = None) -> None:
    """Console entry point (``olla-jax``, ``python -m olla_jax``)."""
    argv = list(sys.argv if argv is None else argv)
    flag_args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(a in ("-h", "-?", "-help", "--help", "--helpshort", "--helpfull") for a in flag_args):
        named = [a for a in flag_args if a in COMMANDS]
        _print_help(full="--helpfull" in flag_args, subcommand=named[0] if named else None)
        sys.exit(0)
    app.run(main, argv=argv, flags_parser=_parse_flags)
