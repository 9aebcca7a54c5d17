"""Helpers shared by the benchmark scripts: their common flags and main()'s opening,
worker processes, results files, machine header, byte formatting, markdown."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import shlex
import sys
from typing import Any, Callable


SIZES = ("tiny", "small", "full")

# The flags most benchmarks take; each script gives its own defaults.
_FLAGS: dict[str, dict] = {
    "models": dict(help="comma-separated example names, or all"),
    "backend": dict(help="cpu, or a compile-only GPU target (gpu:h100, gpu:a100)"),
    "size": dict(choices=SIZES),
    "time_limit_s": dict(type=float, help="plan()'s time limit in seconds"),
    "out": dict(help="output path without extension: <out>.md and <out>.json"),
    "old": dict(required=True, help="a checkout of the code to compare against"),
}


def parser(doc: str, *, worker: bool = False, **defaults: Any) -> argparse.ArgumentParser:
    """A benchmark's argument parser (described by the first paragraph of ``doc``)
    with the shared flags named in ``defaults`` (models, backend, size,
    time_limit_s, out) at those defaults, and with ``worker`` the hidden
    ``--worker`` / ``--worker_out`` of a script that runs each job in a child."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name, default in defaults.items():
        p.add_argument(f"--{name}", default=default, **_FLAGS[name])
    if worker:
        p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
        p.add_argument("--worker_out", default=None, help=argparse.SUPPRESS)
    return p


def model_names(models: str) -> list[str]:
    """``--models``: comma-separated example names, or ``all``."""
    if models == "all":
        import examples
        return examples.names()
    return [m.strip() for m in models.split(",") if m.strip()]


def forward(args: argparse.Namespace, *names: str) -> list[str]:
    """The flags ``names`` as this run was given them, for a worker: ``--name=value``;
    a switch only when on, a flag that is None not at all."""
    flags = []
    for name in names:
        value = getattr(args, name)
        if value is True:
            flags.append(f"--{name}")
        elif value is not None and value is not False:
            flags.append(f"--{name}={value}")
    return flags


def begin(args: argparse.Namespace, worker: Callable[[argparse.Namespace], Any],
          backend: str | None = None) -> bool:
    """The opening of a main() that runs its jobs in workers: jax kept off any GPU
    for a CPU backend (``backend``, else ``args.backend``); in a worker's process,
    its one job (True: main() is done); else the command, printed first."""
    gpu_environment(backend or getattr(args, "backend", "cpu"))
    if getattr(args, "worker", None):
        worker(args)
        return True
    print(f"$ {command_line()}", flush=True)
    return False


def run_meta() -> dict:
    """What a results file says of its run before the rows: the command, the
    machine, the date and the load at the start (``load_end`` is added later)."""
    return {"command": command_line(), "machine": machine(), "date": now(), "load_start": load()}


def command_line() -> str:
    """The command that started this process, as it could be typed again."""
    prog = sys.argv[0]
    if prog.endswith(".py") and os.sep in prog and "benchmarks" in prog:
        mod = "benchmarks." + os.path.splitext(os.path.basename(prog))[0]
        prog = f"python -m {mod}"
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def gpu_environment(backend: str) -> None:
    """CPU runs keep jax off any GPU (compile-only GPU targets need nothing here)."""
    if not backend.startswith("gpu"):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
            mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    import jax
    import jaxlib
    return {"nproc": os.cpu_count(), "memory": mem, "cpu": cpu, "python": platform.python_version(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def now() -> str:
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def header(title: str, extra: dict | None = None, *, command: str | None = None,
           machine_info: dict | None = None, date: str | None = None) -> list[str]:
    m = machine_info or machine()
    lines = [f"# {title}", "",
             f"- command: `{command or command_line()}`",
             f"- date: {date or now()}",
             f"- machine: nproc {m['nproc']}, memory {m['memory']}, CPU {m['cpu']}",
             f"- python {m['python']}, jax {m['jax']}, jaxlib {m['jaxlib']}"]
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    return lines + [""]


def load() -> str:
    """1, 5 and 15 minute load averages: the machine may be shared."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def row_loads(rows: list[dict], key: str = "model") -> str:
    """Each row's load averages at its start and end (``load_start``, ``load_end``),
    for a header: ``name: start -> end; ...``."""
    return "; ".join(f"{r[key]}: {r.get('load_start', '?')} -> {r.get('load_end', '?')}"
                     for r in rows)


class Timer:
    """Times the phases of ``olla_jax.plan`` by wrapping its steps at run time (no library edit):
    XLA's compiles (``_baselines``), graph build, search (``_solve``: order, placement, bound),
    the independent check, and the CPU rewrite + verification."""

    def __init__(self):
        import importlib
        self.seconds: dict[str, float] = {}
        plan_mod = importlib.import_module("olla_jax.plan")  # the module, not olla_jax.plan()
        self._wrap(plan_mod, "_baselines", "compile")
        self._wrap(plan_mod, "_solve", "search")        # older plan.py
        self._wrap(plan_mod, "solve_graph", "search")   # order, placement, bound
        self._wrap(importlib.import_module("olla_jax.graph.model"), "build", "graph")
        self._wrap(importlib.import_module("olla_jax.check"), "check_plan", "check")
        self._wrap(importlib.import_module("olla_jax.apply.feed_back"), "apply_layout", "apply")
        # inside the search: order search, placement, lower bound
        self._wrap(importlib.import_module("olla_jax.solve.order"), "solve_order", "search: order")
        self._wrap(importlib.import_module("olla_jax.solve.place"), "place", "search: placement")
        self._wrap(importlib.import_module("olla_jax.solve.bounds"), "min_cut_bound", "search: bound")

    def solve_s(self) -> float:
        """Graph build + search (order, placement, bound): the planner's own time."""
        return self.seconds.get("graph", 0.0) + self.seconds.get("search", 0.0)

    def _wrap(self, module, attr: str, phase: str) -> None:
        original = getattr(module, attr, None)
        if original is None:  # the library moved on: that phase is simply not timed
            return
        seconds = self.seconds

        def timed(*a, **k):
            t0 = __import__("time").perf_counter()
            try:
                return original(*a, **k)
            finally:
                seconds[phase] = seconds.get(phase, 0.0) + __import__("time").perf_counter() - t0
        setattr(module, attr, timed)

    @property
    def compile_s(self) -> float:
        return self.seconds.get("compile", 0.0)


@contextlib.contextmanager
def worker_files():
    """(the path a worker writes its result to, the environment to run it in):
    its temporary files (that result, XLA's dump folders) go in a folder of its
    own, removed afterwards.  A worker killed at its timeout cannot clean up
    after itself; its parent does."""
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(prefix="olla_jax_worker_")
    try:
        yield os.path.join(folder, "result.json"), {**os.environ, "TMPDIR": folder}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def start_log(path: str, fresh: bool = True) -> str:
    """``path``, begun as the log of a run's workers (``run_worker(log=path)``) with
    the command that made it; ``fresh``: an earlier run's log there is replaced."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w" if fresh else "a") as f:
        f.write(f"$ {command_line()}\n")
    return path


def run_worker(module: str, name: str, flags: list[str], error: Any,
               timeout_s: float | None = None, log: str | None = None) -> Any:
    """Run ``python -m module --worker=name --worker_out=FILE *flags`` and read the
    JSON it wrote; ``error(message)`` stands in when the child wrote nothing
    (or ran past ``timeout_s``), and a row it wrote gets an ``error`` when it
    then exited with a failure.  With ``log``, the child's output is appended
    to that file under a line ``==== name``."""
    import json
    import subprocess
    with worker_files() as (out, env):
        try:
            proc = subprocess.run([sys.executable, "-m", module, f"--worker={name}",
                                   f"--worker_out={out}", *flags], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT if log else subprocess.PIPE,
                                  text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return error(f"worker killed after {timeout_s:.0f} s")
        if log:
            with open(log, "a") as f:
                f.write(f"==== {name}\n{proc.stdout}\n")
        try:
            with open(out) as f:
                result = json.load(f)
        except (OSError, json.JSONDecodeError):
            said = (proc.stdout if log else proc.stderr).strip().splitlines()[-1:]
            return error(f"worker exited {proc.returncode}: {said}")
    if proc.returncode and isinstance(result, dict) and "error" not in result:
        result["error"] = f"worker exited {proc.returncode}"
    return result


def write_worker_result(worker_out: str, run: Callable[[], Any],
                        error_result: Callable[[str], Any]) -> None:
    """The child side of ``run_worker``: ``run()``'s result, or
    ``error_result(message)`` when it raised (a failing example is a row of the
    table, not a crash), written as JSON to ``worker_out``."""
    import json
    import traceback
    try:
        result = run()
    except Exception as err:  # noqa: BLE001 - a failing example is a row, not a crash
        traceback.print_exc()
        result = error_result(f"{type(err).__name__}: {err}")
    with open(worker_out, "w") as f:
        json.dump(result, f)


def run_rows(module: str, specs: list[str], flags: list[str], error: Callable[[str, str], Any],
             render: Callable[[list, dict], str], out: str, timeout_s: float, *,
             settings: dict | None = None) -> list:
    """Run ``module``'s worker on each spec in turn (``run_worker``; a worker may
    write one row or a list of them), print each row as JSON, and rewrite
    ``<out>.json`` (``run_meta()``, ``load_end``, ``settings`` if given, the rows)
    and ``<out>.md`` (``render(rows, run)``, run: that JSON less its rows) after
    each spec, so an interrupted run keeps what finished; then print the table.
    ``error(spec, message)`` stands in for a worker that wrote nothing."""
    import json
    run = run_meta()
    if settings is not None:
        run["settings"] = settings
    rows: list = []
    for spec in specs:
        got = run_worker(module, spec, flags, lambda msg, s=spec: error(s, msg),
                         timeout_s=timeout_s)
        for row in got if isinstance(got, list) else [got]:
            print(json.dumps(row), flush=True)
            rows.append(row)
        run["load_end"] = load()
        write_results(out, {**run, "rows": rows}, render(rows, run))
    print(open(out + ".md").read())
    return rows


def write_results(out: str, payload: dict, text: str) -> None:
    """``<out>.json`` (the rows and how they were made) and ``<out>.md`` (the table)."""
    import json
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(payload, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(text)


def print_and_write(text: str, rows: list, out: str | None) -> None:
    """``text`` printed, then written with ``rows`` and the command (``write_results``)
    where ``out`` is given."""
    print(text)
    if out:
        write_results(out, {"command": command_line(), "rows": rows}, text)


def write_lines_and_rows(out, lines: list[str], rows: list) -> None:
    """``<out>.md`` (the printed lines) and ``<out>.json`` (the rows as a list)."""
    import json
    from pathlib import Path
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


def olla_jax_at(code: str):
    """``olla_jax`` imported from the checkout at ``code`` (a worker comparing
    two checkouts, in its own process), checked to be that one."""
    sys.path.insert(0, code)
    import olla_jax
    assert olla_jax.__file__.startswith(os.path.abspath(code)), olla_jax.__file__
    return olla_jax


def child_row(job: dict, argv: list[str], *, cwd: str, timeout: float, env: dict | None = None,
              keep_crash: bool = False) -> dict:
    """``job`` with the JSON object that ``argv`` (a benchmark's worker run
    for ``job`` in a fresh process) prints last; where the worker fails,
    ``job`` with ``crashed`` (the end of its stderr) if ``keep_crash``, else
    SystemExit naming the job."""
    import json
    import subprocess
    out = subprocess.run(argv + ["--worker=" + json.dumps(job)], capture_output=True, text=True,
                         cwd=cwd, timeout=timeout, env=env)
    if out.returncode:
        if keep_crash:
            return dict(job, crashed=out.stderr[-1500:])
        raise SystemExit(f"{job}: {out.stderr[-3000:]}")
    return dict(job, **json.loads(out.stdout.strip().splitlines()[-1]))


def mib(x) -> str:
    return "-" if x is None else f"{x / 2**20:,.3f}" if x < 2**20 else f"{x / 2**20:,.2f}"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def geomean(xs) -> float | None:
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def table(columns: list[str], rows: list[list], right: set[int] | None = None) -> list[str]:
    right = right if right is not None else set(range(1, len(columns)))
    out = ["| " + " | ".join(columns) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(columns))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |")
    return out


def round_up(x: int, a: int) -> int:
    return -(-x // a) * a


def solve_seconds(row: dict) -> float | None:
    """The planner's own seconds of a result row: graph build + search when its phases were
    timed, else what was recorded (Plan.solve_seconds less the compiles)."""
    ph = row.get("phases") or {}
    if "search" in ph:
        return ph.get("graph", 0.0) + ph["search"]
    return row.get("solve_s")


def plan_quietly(step, **options):
    """``olla_jax.plan`` of an example step (its own static and donated
    arguments), jax's and olla_jax's warnings silenced."""
    import warnings
    from olla_jax.plan import plan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plan(step.fn, *step.args, static_argnums=step.static_argnums,
                    donate_argnums=step.donate_argnums, **options)
