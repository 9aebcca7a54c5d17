"""The command line: help, usage errors, CSV placement, planning an XLA dump."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

REPO = Path(__file__).resolve().parents[1]


def olla(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "olla_jax", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_help_documents_every_subcommand_and_flag(quick):
    result = quick["help"]
    assert result.returncode == 0, result.stderr
    for word in ("demo", "plan", "hlo", "place", "show", "--example", "--module", "--backend",
                 "--time_limit_s", "--engine", "--save", "--plot", "no_feed_back", "--dump_dir",
                 "--csv", "--out", "--capacity", "--plan"):
        assert word in result.stdout, word


TINY = ("--example=mlp", "--size=tiny")
BATCH = ("batch", "--example=remat", "--size=tiny", "--capacity=16MiB")


USAGE_ERRORS = [
    (("frobnicate",), "unknown subcommand"), ((), "give a subcommand"), (("plan",), "needs"),
    (("plan", "--bogus_flag=1"), "bogus_flag"),
    # flag values the library refuses are usage errors too (they exited 1, as a failed run)
    (("plan", *TINY, "--time_limit_s=0"), "--time_limit_s=0"),
    (("plan", *TINY, "--time_limit_s=nan"), "--time_limit_s=nan"),
    (("plan", *TINY, "--engine=fast"), "--engine='fast'"),
    (("plan", *TINY, "--memory_budget=0"), "--memory_budget='0'"),
    (("plan", *TINY, "--memory_budget=lots"), "positive size in bytes"),
    (("plan", *TINY, "--offload", "--memory_budget=1MiB"), "jax drops memory kinds"),
    (("plan", *TINY, "--backend=gpu:h100", "--offload"), "--memory_budget"),
    (("plan", *TINY, "--scan_remat"), "give --memory_budget"),
    (("plan", *TINY, "--program_remat", "--memory_budget=1MiB"), "compile-only GPU targets such "
     "as --backend='gpu:h100', not 'cpu'"),
    (("plan", *TINY, "--backend=gpu:h100", "--program_remat"), "--program_remat: it is a side "
     "of a memory budget: pass --memory_budget"),
    ((*BATCH, "--modes=xla,bogus"), "--modes="),
    ((*BATCH, "--min_batch=4", "--max_batch=2"), "--max_batch=2"),
    ((*BATCH, "--reserve_bytes=1"), "not both"),
    (("batch", "--example=mlp", "--size=tiny", "--backend=gpu:h100", "--reserve_bytes=lots"),
     "--reserve_bytes='lots'"),
    (("show", "--plan=/no/such/plan.json"), "no such file"),
    # an output folder that does not exist: refused before the plan is paid for
    (("plan", *TINY, "--save=/no/such/folder/plan.json"), "the folder /no/such/folder does not"),
    (("plan", *TINY, "--plot=/no/such/folder/step"), "--plot /no/such/folder/step-memory.png"),
    (("plan", *TINY, "--executable_out=/no/such/x.bin"), "the folder /no/such does not exist"),
    (("place", "--csv=/no/such/in.csv", "--out=/tmp/x.csv"), "no such file")]


# Command lines run in one child process, each a fresh `olla_jax.cli.run` (flags
# unparsed): one jax import for all of them, not one each (~3 s a process).
# Only lines whose output is Python's own (help, usage errors, placement, plan
# files); a plan of a step, whose logs come from XLA too, runs in its own process.
_DRIVER = r"""
import contextlib, io, json, sys, traceback
from olla_jax import cli
found = []
for args in json.loads(sys.stdin.read()):
    out, err, code = io.StringIO(), io.StringIO(), 0
    cli.FLAGS.unparse_flags()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            cli.run(["olla_jax", *args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (exit_.code is not None)
        except BaseException:
            code, _ = -1, err.write(traceback.format_exc())
    found.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(found))
"""


def in_one_child(lines: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _DRIVER], cwd=REPO, env=env, text=True,
                          input=json.dumps([list(args) for args in lines]),
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [subprocess.CompletedProcess(args, f["code"], f["stdout"], f["stderr"])
            for args, f in zip(lines, json.loads(done.stdout))]


@pytest.fixture(scope="module")
def usage_errors(quick):
    return {args: {"code": quick[args].returncode, "stderr": quick[args].stderr}
            for args, _ in USAGE_ERRORS}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Named results of the short command lines below and of USAGE_ERRORS (by
    their arguments), all run in one child."""
    folder = tmp_path_factory.mktemp("cli_quick")
    (folder / "in.csv").write_text("id,lower,upper,size\na,0,3,64\nb,1,4,128\nc,3,6,64\n")
    (folder / "broken.json").write_text("{not json")
    (folder / "empty").mkdir()
    jax.jit(lambda x: jnp.sin(x) * 2).lower(jnp.ones(8)).compile(compiler_options={
        "xla_dump_to": str(folder / "proto"), "xla_dump_hlo_as_proto": True})
    csv, out = f"--csv={folder / 'in.csv'}", f"--out={folder / 'out.csv'}"
    lines = {
        "help": ("--help",),
        "plan help": ("plan", "--help"), "help first": ("--help", "plan"),
        "help plan": ("help", "plan"),
        "place help": ("place", "--help"), "help unknown": ("help", "frobnicate"),
        "hlo help": ("hlo", "--help"),
        "broken plan file": ("show", f"--plan={folder / 'broken.json'}"),
        "hlo without dumps": ("hlo", f"--dump_dir={folder / 'empty'}"),
        "hlo of a proto-only dump": ("hlo", f"--dump_dir={folder / 'proto'}"),
        "place": ("place", csv, out, "--time_limit_s=2"),
        "place tight": ("place", csv, f"--out={folder / 'no.csv'}", "--capacity=100"),
        "place fits": ("place", csv, f"--out={folder / 'fits.csv'}", "--capacity=0.25KiB",
                       "--time_limit_s=2"),
        "place lots": ("place", csv, out, "--capacity=lots"),
    }
    lines.update({tuple(args): tuple(args) for args, _ in USAGE_ERRORS})
    found = dict(zip(lines, in_one_child(list(lines.values()))))
    found["folder"] = folder
    return found


@pytest.mark.parametrize("args, says", USAGE_ERRORS)
def test_usage_errors_exit_2(args, says, usage_errors):
    result = usage_errors[tuple(args)]
    assert result["code"] == 2, result["stderr"]
    assert "error:" in result["stderr"] and says in result["stderr"], result["stderr"]
    assert "Traceback" not in result["stderr"]


def test_a_usage_error_from_its_own_process_exits_2():
    result = olla("plan", "--bogus_flag=1")
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "bogus_flag" in result.stderr
    assert "Traceback" not in result.stderr


def test_library_error_is_one_line(quick):
    result = quick["broken plan file"]
    assert result.returncode == 1
    assert "broken.json" in result.stderr and "Traceback" not in result.stderr


def test_place_csv(quick):
    result = quick["place"]
    assert result.returncode == 0, result.stderr
    assert "arena of 192 bytes" in result.stdout
    lines = (quick["folder"] / "out.csv").read_text().splitlines()
    assert lines[0] == "id,lower,upper,size,offset" and len(lines) == 4
    tight = quick["place tight"]
    assert tight.returncode == 1 and "capacity" in tight.stderr
    assert not (quick["folder"] / "no.csv").exists()
    # sizes as --memory_budget takes them
    fits = quick["place fits"]
    assert fits.returncode == 0 and "arena of 192 bytes" in fits.stdout, fits.stderr
    assert (quick["folder"] / "fits.csv").read_text().splitlines()[0].endswith(",offset")
    bad = quick["place lots"]
    assert bad.returncode == 2 and "--capacity='lots'" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


def _dump(directory: Path) -> None:
    def step(w, x):
        def loss(w):
            return jnp.sum(jnp.tanh(x @ w) ** 2)
        return w - 0.1 * jax.grad(loss)(w)
    options = {"xla_dump_to": str(directory), "xla_dump_hlo_as_proto": True,
               "xla_dump_hlo_as_text": True}
    jax.jit(step).lower(jnp.ones((64, 32)), jnp.ones((128, 64))).compile(compiler_options=options)


def test_hlo_plans_a_dump(tmp_path):
    _dump(tmp_path / "dump")
    prefix = tmp_path / "plot"
    result = olla("hlo", f"--dump_dir={tmp_path / 'dump'}", "--time_limit_s=2", f"--plot={prefix}")
    assert result.returncode == 0, result.stderr
    assert "XLA temp" in result.stdout and "olla_jax temp, planned" in result.stdout
    for suffix in ("-memory.png", "-layout.png"):
        assert Path(f"{prefix}{suffix}").stat().st_size > 0


def test_hlo_of_a_proto_only_dump_names_the_text_dump_flag(quick):
    """XLA writes the buffer assignment and live ranges only as text dumps:
    --xla_dump_to with --xla_dump_hlo_as_proto (what the help said) is not enough."""
    result = quick["hlo of a proto-only dump"]
    assert result.returncode == 2 and "--xla_dump_hlo_as_text" in result.stderr, result.stderr
    assert "--xla_dump_hlo_as_text" in quick["hlo help"].stdout


def test_hlo_without_dumps_is_a_usage_error(quick):
    result = quick["hlo without dumps"]
    assert result.returncode == 2 and "after_optimizations.hlo.pb" in result.stderr


@pytest.mark.parametrize("line", ["plan help", "help first", "help plan"])
def test_subcommand_help_lists_its_own_flags(line, quick):
    result = quick[line]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage:") and " plan [--flags]" in out.splitlines()[0]
    for flag in ("--example", "--module", "--size={tiny,small,full}", "--time_limit_s=FLOAT",
                 "--no_feed_back", "--executable_out", "--verbosity", "--scan_remat",
                 "--program_remat"):
        assert flag in out, flag
    for other in ("--csv", "--dump_dir", "--min_batch", "--plan="):
        assert other not in out, other


def test_place_help_is_not_plans(quick):
    out = quick["place help"].stdout
    assert "--csv" in out and "--capacity" in out and "--example" not in out
    assert "arena capacity in bytes" in out          # place's part of --capacity's help
    assert "the bytes one step may use" not in out   # batch's part
    bad = quick["help unknown"]
    assert bad.returncode == 2 and "unknown subcommand" in bad.stderr


def _absl_info_lines(stderr: str) -> list[str]:
    """absl's Python INFO lines (I1205 12:00:00.000 123 file.py:10] ...)."""
    return [line for line in stderr.splitlines() if re.match(r"I\d{4} .*\.py:\d+\]", line)]


def test_info_logs_only_with_verbosity(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,lower,upper,size\na,0,3,64\nb,1,4,128\n")
    quiet = olla("place", f"--csv={src}", f"--out={tmp_path / 'o.csv'}", "--time_limit_s=1")
    assert quiet.returncode == 0 and _absl_info_lines(quiet.stderr) == [], quiet.stderr
    loud = olla("place", f"--csv={src}", f"--out={tmp_path / 'o.csv'}", "--time_limit_s=1",
                "--verbosity=0")
    assert loud.returncode == 0 and any("placing" in ln for ln in _absl_info_lines(loud.stderr))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _snapshot(**changes):
    from olla_jax.progress import Progress
    fields = dict(stage="order search", elapsed_s=1.0, time_limit_s=10.0, total_s=4.0,
                  best_bytes=3 << 20, xla_bytes=4 << 20, bound_bytes=2 << 20, planning=True)
    fields.update(changes)
    return Progress(**fields)


def test_status_line_redraws_in_place_on_a_terminal():
    from absl import logging
    from olla_jax import cli
    logging.set_verbosity(logging.WARNING)
    stream = _Terminal()
    with cli._StatusLine(stream, interval_s=0.05) as status:
        assert status.callback is not None
        status.callback(_snapshot())
        time.sleep(0.3)
    draws = [d for d in stream.getvalue().split("\r") if d.strip("\x1b[K")]
    assert len(draws) >= 3 and stream.getvalue().endswith("\r\x1b[K")   # cleared at the end
    clocks = [float(re.search(r"(\d+\.\d) of 10 s", d).group(1)) for d in draws]
    assert clocks == sorted(clocks) and clocks[-1] > clocks[0]             # the clock ticks
    assert "best 3.00 MiB (XLA 4.00 MiB)" in draws[-1] and "bound 2.00 MiB" in draws[-1]
    assert "\n" not in stream.getvalue()
    piped = cli._StatusLine(io.StringIO())
    assert piped.callback is None                                           # not a terminal


def test_progress_line_reads_the_figures():
    line = _snapshot().line()
    assert line.startswith("olla_jax: order search") and "1.0 of 10 s" in line
    assert "in all" in _snapshot(planning=False, stage="compiling").line(since_s=2.0)
    assert "6.0 s in all" in _snapshot(planning=False).line(since_s=2.0)
    assert "best - (XLA 4.00 MiB)" in _snapshot(best_bytes=None).line()
    assert "bound" not in _snapshot(bound_bytes=None).line()


def test_plan_reports_progress_to_a_callback():
    import examples
    import olla_jax
    step = examples.get("cnn_adam", "tiny")
    events = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", olla_jax.PlanWarning)
        plan = olla_jax.plan(step.fn, *step.args, static_argnums=step.static_argnums,
                             donate_argnums=step.donate_argnums, time_limit_s=2, feed_back=False,
                             progress=events.append)
    assert events[0].stage == "compiling" and not events[0].planning
    for key in ("elapsed_s", "total_s"):
        clock = [getattr(e, key) for e in events]
        assert clock == sorted(clock) and clock[-1] > clock[0], key
    assert {"order search", "lower bound", "placement"} <= {e.stage for e in events}
    assert all(e.time_limit_s == 2 for e in events)
    bests = [e.best_bytes for e in events if e.best_bytes is not None]
    assert bests and bests == sorted(bests, reverse=True)
    assert events[-1].xla_bytes == plan.xla_best_temp_bytes
    if plan.source == "olla_jax":
        assert bests[-1] == plan.planned_temp_bytes
        assert min(events[-1].bound_bytes, plan.planned_temp_bytes) == plan.lower_bound_bytes
    with pytest.raises(TypeError, match="progress"):
        olla_jax.plan(step.fn, *step.args, progress="loud")


def test_a_slow_progress_callback_is_said_to_eat_the_time_limit():
    """The callback runs in the planner's thread: a slow one takes the
    planner's time (the plan found less, or nothing): a warning and a note say so."""
    import olla_jax
    from small_steps import mlp_args, mlp_step

    def slow(progress):
        if progress.planning:
            time.sleep(0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=0.5, feed_back=False,
                             progress=slow)
    said = [str(w.message) for w in caught if "progress callback took" in str(w.message)]
    assert len(said) == 1 and said[0] in plan.notes, [str(w.message) for w in caught]
    quick = olla_jax.plan(mlp_step, *mlp_args(0), time_limit_s=0.5, feed_back=False,
                          progress=lambda p: None)
    assert not [n for n in quick.notes if "progress callback" in n]


def test_examples_listing_prints_no_cuda_noise():
    # a CPU install with jax's CUDA plugin: importing examples imports jax through olla_jax
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("JAX_PLATFORMS", None)
    result = subprocess.run([sys.executable, "-m", "examples", "--list"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "mlp" in result.stdout
    assert "cudart_stub" not in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("text, expected", [("123456", 123456), ("200MiB", 200 << 20),
                                            ("1.5 GiB", 3 << 29), ("2kb", 2000), ("7B", 7)])
def test_memory_budget_sizes(text, expected):
    from olla_jax import cli
    assert cli.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-5MiB", "12 parsecs", "MiB", "0.1"])
def test_memory_budget_refuses_what_is_not_a_size(text):
    from olla_jax import cli
    with pytest.raises(cli.UsageError, match="positive size in bytes"):
        cli.parse_bytes(text)


def test_plan_with_a_budget_it_cannot_meet_saves_the_least_and_exits_1(tmp_path):
    saved = tmp_path / "least.json"
    result = olla("plan", "--example=mlp", "--size=tiny", "--time_limit_s=3", "--no_feed_back",
                  "--memory_budget=1KiB", f"--save={saved}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "budget" in result.stderr.lower()
    assert saved.exists() and "olla_jax" in result.stdout    # the least plan's summary
    # what holds the peak comes with the error, not behind --verbosity=1 (a traceback)
    assert "temp peak at step" in result.stderr and "--verbosity=1" not in result.stderr


MODULE_STEPS = '''
import dataclasses
import jax, jax.numpy as jnp

def step(p, x, *, act=None, scale=1.0):
    f = getattr(jnp, act)            # act=None (the default) fails: the kwargs must arrive
    g = jax.grad(lambda p: jnp.sum(f(x @ p) ** 2))(p)
    return p - scale * g, f(x @ p).sum()

@dataclasses.dataclass
class Step:
    fn: object
    args: tuple
    kwargs: dict
    static_argnames: tuple
    donate_argnames: tuple

def make_step():
    return Step(step, (jnp.ones((32, 32)), jnp.ones((8, 32))), {"act": "sin", "scale": 0.5},
                ("act",), ("p",))

def make_broken():
    raise RuntimeError("the data loader is broken")

def kw_step(x, *, state, act=None, lr=0.5):
    f = getattr(jnp, act)            # act is static, passed by keyword
    return state * lr + f(state) * x.sum(), f(x).sum()

def make_kw_step():
    return Step(kw_step, (jnp.ones((8, 64)),), {"state": jnp.ones((64, 64)), "act": "sin",
                "lr": 0.5}, ("act",), ())
'''


def test_module_step_keeps_its_kwargs_and_argnames_and_its_errors_are_one_line(tmp_path):
    (tmp_path / "user_steps.py").write_text(MODULE_STEPS)
    result = olla("plan", "--module=user_steps:make_step", "--time_limit_s=1", "--no_feed_back",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    aliased = re.search(r"aliased .* / (\S+) (\S+)\n", result.stdout)
    assert aliased and float(aliased.group(1)) > 0, result.stdout   # p donated: its output aliases it
    broken = olla("plan", "--module=user_steps:make_broken", cwd=tmp_path)
    assert broken.returncode == 1
    assert "RuntimeError: the data loader is broken" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_donate_module_step_with_keyword_and_static_argnames(tmp_path):
    """donate --module takes a step's kwargs and argnames as plan does; a keyword
    argument worth donating is suggested by name."""
    (tmp_path / "user_steps.py").write_text(MODULE_STEPS)
    result = olla("donate", "--module=user_steps:make_kw_step", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "keyword argument 'state'" in result.stdout and "-> donate" in result.stdout
    assert "pass donate_argnames=('state',)" in result.stdout, result.stdout
    own = olla("donate", "--module=user_steps:make_step", cwd=tmp_path)   # p donated by name
    assert own.returncode == 0, own.stderr
    assert "nothing to add: keep donate_argnums=(0,)" in own.stdout, own.stdout


def test_module_given_as_a_file_path(tmp_path):
    """--module=path/to/file.py:make_step, from another folder, as a new user writes it."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "user_steps.py").write_text(MODULE_STEPS)
    path = tmp_path / "sub" / "user_steps.py"
    result = olla("plan", f"--module={path}:make_step", "--time_limit_s=1", "--no_feed_back",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "olla_jax" in result.stdout
    missing = olla("plan", f"--module={tmp_path / 'nope.py'}:make_step", cwd=tmp_path)
    assert missing.returncode == 2 and "no file" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr


SPY_BATCH = '''
import inspect, json
import jax.numpy as jnp
import olla_jax

def _spy(make, **kwargs):
    defaults = {k: p.default for k, p in inspect.signature(_real).parameters.items()
                if p.default is not inspect.Parameter.empty}
    used = {k: kwargs.get(k, defaults.get(k)) for k in ("time_limit_s", "low", "high", "modes",
                                                           "capacity_bytes", "reserve_bytes")}
    print("USED " + json.dumps({k: list(v) if isinstance(v, tuple) else v
                                for k, v in used.items()}))
    raise SystemExit(0)

_real, olla_jax.largest_batch = olla_jax.largest_batch, _spy

def make(batch):
    return (lambda x: x * 2, (jnp.ones((batch, 4)),))
'''


def test_batch_command_answers_as_largest_batch_does_by_default(tmp_path):
    """The CLI's defaults are largest_batch's: its --time_limit_s default is plan's
    20 s, but batch without the flag must use largest_batch's 10 s (the olla answer
    depends on the planner's limit: the command and the function answered 142 and
    141 on one step); --capacity=16MiB is the exact byte count."""
    import inspect
    import olla_jax
    (tmp_path / "spy_steps.py").write_text(SPY_BATCH)
    defaults = inspect.signature(olla_jax.largest_batch).parameters
    result = olla("batch", "--module=spy_steps:make", "--capacity=16MiB", cwd=tmp_path)
    used = json.loads(result.stdout.split("USED ", 1)[1].splitlines()[0])
    assert used["time_limit_s"] == defaults["time_limit_s"].default
    assert used["low"] == defaults["low"].default and used["high"] == defaults["high"].default
    assert tuple(used["modes"]) == defaults["modes"].default
    assert used["capacity_bytes"] == 16 * 2**20
    given = olla("batch", "--module=spy_steps:make", "--capacity=1.5MiB", "--time_limit_s=3",
                 cwd=tmp_path)
    used = json.loads(given.stdout.split("USED ", 1)[1].splitlines()[0])
    assert used["time_limit_s"] == 3 and used["capacity_bytes"] == 1572864



DROPOUT_STEP = '''
import jax, jax.numpy as jnp

def step(w, x, key):
    keep = jax.random.bernoulli(key, 0.9, (x.shape[0], w.shape[1]))
    return jax.grad(lambda w: jnp.mean(jnp.where(keep, jnp.tanh(x @ w), 0.0) ** 2))(w)

def make_step():
    return step, (jnp.ones((64, 64)) * 0.01, jnp.ones((256, 64)), jax.random.key(1))
'''


@pytest.mark.slow   # ~6-12 s; cut from the default run for its 15-minute aim (make test-slow)
def test_plan_rng_lowering_flag(tmp_path):
    """A dropout step is planned with threefry2x32 unrolled by default (the
    report shows jax.jit's program first); --rng_lowering=jax plans jax.jit's."""
    (tmp_path / "drop_steps.py").write_text(DROPOUT_STEP)
    args = ("plan", "--module=drop_steps:make_step", "--time_limit_s=1", "--no_feed_back")
    unrolled = olla(*args, cwd=tmp_path)
    assert unrolled.returncode == 0, unrolled.stderr
    assert "XLA temp, jax.jit's program" in unrolled.stdout, unrolled.stdout
    rolled = olla(*args, "--rng_lowering=jax", cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stderr
    assert "jax.jit's program" not in rolled.stdout and "olla_jax" in rolled.stdout
    bad = olla(*args, "--rng_lowering=rolled", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr


def test_a_module_tuple_with_a_leaf_that_is_no_array_says_how_to_mark_it_static():
    # (fn, args) cannot carry static_argnums: the planner's own hint ("mark it
    # static (static_argnums)") named an option the tuple has no room for
    import jax.numpy as jnp

    from olla_jax import cli

    def f(x, act, *, scale):
        return getattr(jnp, act)(x) * scale

    with pytest.raises(cli.UsageError, match=r"argument leaf \[1\] is a str.*examples.Step"):
        cli._step_parts((f, (jnp.ones(3), "tanh")), "m:make")
    with pytest.raises(cli.UsageError, match=r"keyword argument leaf \['scale'\] is a object"):
        cli._step_parts((f, (jnp.ones(3),), {"scale": object()}), "m:make")
    parts = cli._step_parts((f, (jnp.ones(3), 2.0), {"scale": 3}), "m:make")   # numbers pass
    assert parts.args[1] == 2.0 and parts.kwargs == {"scale": 3}


def test_program_remat_flag_reaches_plan(monkeypatch):
    """--program_remat with a budget on a compile-only target passes the checks
    and is given to olla_jax.plan (stopped there: no compile)."""
    import olla_jax
    from olla_jax import cli

    asked = {}

    def plan(fn, *args, **kw):
        asked.update(kw)
        raise KeyboardInterrupt   # not an error the command line turns into an exit code

    monkeypatch.setattr(olla_jax, "plan", plan)
    cli.FLAGS.unparse_flags()
    try:
        cli.FLAGS(["olla_jax", "--backend=gpu:h100", "--memory_budget=1GiB", "--program_remat"])
        cli._check_flag_values()
        with pytest.raises(KeyboardInterrupt):
            cli._run_plan(jnp.tanh, (jnp.ones(3),))
    finally:
        cli.FLAGS.unparse_flags()
    assert asked["program_remat"] is True and asked["memory_budget"] == 2 ** 30
    assert asked["backend"] == "gpu:h100"
