"""Real GPU against compile-only planning: memory, peak, autotune results, our plan.

    python -m benchmarks.gpu_device --out $OUT/gpu_device          (on a machine with a GPU)
    python -m benchmarks.gpu_device --dry_run --out /tmp/gpu_dry   (no GPU: compile-only h100)

Per example step (``name`` or ``name:size``, size "small" unless given):

measure (one child process per model, on the local GPU, one after another)
    (a) ``jax.jit(step.fn, ...).lower(*args).compile(compiler_options=
        {"xla_gpu_dump_autotune_results_to": file})`` and its ``memory_analysis()``;
    (b) the device's real peak while the step runs: the allocator's
        ``peak_bytes_in_use`` cannot be reset, so the in-use bytes are first padded
        up to the process's peak so far (compile-time autotuning and the example's
        own initialisation included); then ``peak after the call - in use before``
        is what the step itself added on top of its live arguments (XLA's temp
        arena, outputs not aliased to donated inputs).  The median step time comes
        from a few further calls.
aot (child processes, JAX_PLATFORMS=cpu, running beside the next measurements)
    (c) the same step compiled compile-only: for the ``h100`` description with no
        autotune results, with the recorded file loaded as it is (its entries are
        keyed by the H200's description, so an h100 compile finds none of them),
        for an ``h200`` description derived from the file's device key plus the
        h100 one (the same chip generation), and for ``h100`` with the file's keys
        rewritten to the h100 description's key.  XLA loads an autotune file once
        per process, hence one process per file.
plan (child process, local GPU, loads the recorded autotune file)
    (d) ``olla_jax.plan(..., backend="gpu", time_limit_s=20, feed_back=False)``:
        XLA's temp, our planned temp, the lower bound.

Writes ``<out>.json``, ``<out>.md``, ``<dir of out>/autotune.tar.gz`` (the
autotune text protos and the derived h200 description) and
``<dir of out>/logs.tar.gz`` (every child's log).  A global time guard stops
starting measurements after ``--budget_s`` and ends everything at ``--deadline_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = "cnn_adam,lm_adamw,resnet18,vit,gpt2,gpt2:full"
AUTOTUNE_SUFFIX = ".textproto"   # XLA writes text for .txt/.textproto/.prototxt/.pbtxt, else binary
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated name[:size]")
    p.add_argument("--out", default="gpu_device", help="output path without extension")
    p.add_argument("--time_limit_s", type=float, default=20.0, help="plan() time limit")
    p.add_argument("--budget_s", type=float, default=300.0, help="start no measurement after this")
    p.add_argument("--deadline_s", type=float, default=380.0, help="kill what still runs at this")
    p.add_argument("--parallel", type=int, default=4, help="background (aot/plan) jobs at once")
    p.add_argument("--timing_s", type=float, default=2.0, help="about this long timing each step")
    p.add_argument("--dry_run", action="store_true",
                   help="no GPU: 'measure' and 'plan' compile for compile-only h100")
    p.add_argument("--skip", default="", help="comma-separated phases to skip: aot,rekey,plan")
    p.add_argument("--render", default=None, help="rewrite the markdown of a finished <out>.json")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)        # measure|aot|rekey|plan
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)      # name:size
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--job_out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def split_model(spec: str) -> tuple[str, str]:
    name, _, size = spec.partition(":")
    return name, size or "small"


def tag(spec: str) -> str:
    name, size = split_model(spec)
    return f"{name}_{size}"


def autotune_path(work: str, spec: str) -> str:
    return os.path.join(work, f"{tag(spec)}_h200{AUTOTUNE_SUFFIX}")


# ---------------------------------------------------------------------------
# autotune files and device keys (pure text; tested without a GPU)

KEY_RE = re.compile(r"CUDA: (?P<major>\d+)\.(?P<minor>\d+), Cores: (?P<cores>\d+), "
                    r"GPU clock: (?P<clock>[\d.]+) GHz, Memory bandwidth: (?P<bw>[\d.]+) GB/s, "
                    r"L2 cache: (?P<l2>[\d.]+) MB, DNN version: (?P<dnn>[\w.]*)")


def device_keys(text: str) -> list[str]:
    """The distinct ``device:`` keys of an AutotuneResults text proto."""
    return sorted(set(re.findall(r'^\s*device:\s*"([^"]*)"', text, flags=re.M)))


def autotune_summary(text: str) -> dict:
    version = re.search(r"^version:\s*(\d+)", text, flags=re.M)
    return {"version": int(version.group(1)) if version else None,
            "entries": len(re.findall(r"^(?:results|entries)\s*{", text, flags=re.M)),
            # jax <= 0.10 (AutotuneResults v3): readable keys such as "CUDA: 9.0, Cores: 132, ...";
            # jax 0.11: `entries { key { target { device: "<hash>" ...` with an opaque device hash.
            "format": "v3 results" if re.search(r"^results\s*{", text, flags=re.M) else
                      ("entries (hashed device keys)" if re.search(r"^entries\s*{", text, flags=re.M) else "?"),
            "device_keys": device_keys(text), "bytes": len(text.encode())}


def _fmt(x: float) -> str:
    """absl::StrCat's rendering of a double (six significant digits)."""
    return f"{x:g}"


def target_key(config_text: str) -> str:
    """The autotune cache key XLA derives from a GpuTargetConfigProto text
    (xla/service/gpu/autotuning/autotune_cache_key.cc)."""
    def num(field, cast=float):
        m = re.search(rf"\b{field}:\s*([\d.eE+-]+)", config_text)
        if not m:
            raise ValueError(f"no {field} in the target description")
        return cast(float(m.group(1)))
    major = num("major", int)
    minor = re.search(r"cuda_compute_capability\s*{[^}]*?minor:\s*(\d+)", config_text, flags=re.S)
    dnn = re.search(r'dnn_version:\s*"([^"]*)"', config_text)
    if dnn is None:
        info = re.search(r"dnn_version_info\s*{\s*major:\s*(\d+)\s*minor:\s*(\d+)\s*patch:\s*(\d+)",
                         config_text)
        dnn_s = ".".join(info.groups()) if info else ""
    else:
        dnn_s = dnn.group(1)
    return (f"CUDA: {major}.{int(minor.group(1)) if minor else 0}, Cores: {num('core_count', int)}, "
            f"GPU clock: {_fmt(num('clock_rate_ghz'))} GHz, "
            f"Memory bandwidth: {_fmt(round(num('memory_bandwidth') / 1e9))} GB/s, "
            f"L2 cache: {_fmt(num('l2_cache_size') / 2**20)} MB, DNN version: {dnn_s}")


def readable_key(key: str) -> bool:
    """Whether a device key is the readable v3 kind (jax <= 0.10), not a hash (jax 0.11)."""
    return KEY_RE.fullmatch(key.strip()) is not None


def derive_target(base_text: str, key: str, name: str = "NVIDIA H200",
                  memory_bytes: int | None = None) -> str:
    """A GpuTargetConfigProto text: ``base_text`` (a description of the same chip
    generation) with the figures of an autotune device key put in, so that a
    compile-only compile looks its autotune results up under that key."""
    m = KEY_RE.fullmatch(key.strip())
    if m is None:
        raise ValueError(f"not an autotune device key: {key!r}")
    g = m.groupdict()
    dnn = g["dnn"]
    subs = {
        "core_count": g["cores"], "clock_rate_ghz": g["clock"],
        "memory_bandwidth": str(int(round(float(g["bw"]) * 1e9))),
        "l2_cache_size": str(int(round(float(g["l2"]) * 2**20))),
    }
    if memory_bytes:
        subs["device_memory_size"] = str(int(memory_bytes))
    text = base_text
    for field, value in subs.items():
        text, n = re.subn(rf"(\b{field}:\s*)[\d.eE+-]+", rf"\g<1>{value}", text, count=1)
        if n != 1:
            raise ValueError(f"the base description has no {field}")
    text = re.sub(r'(\bname:\s*)"[^"]*"', rf'\g<1>"{name}"', text, count=1)
    text = re.sub(r'(\bdevice_description_str:\s*)"[^"]*"', rf'\g<1>"{name}"', text, count=1)
    text = re.sub(r'(\bdnn_version:\s*)"[^"]*"', rf'\g<1>"{dnn}"', text, count=1)
    parts = (dnn.split(".") + ["0", "0", "0"])[:3]
    if all(p.isdigit() for p in parts):
        text = re.sub(r"dnn_version_info\s*{[^}]*}",
                      f"dnn_version_info {{ major: {parts[0]} minor: {parts[1]} patch: {parts[2]} }}",
                      text, count=1)
    cc = re.search(r"cuda_compute_capability\s*{[^}]*}", text, flags=re.S)
    if cc:
        block = re.sub(r"(major:\s*)\d+", rf"\g<1>{g['major']}", cc.group(0), count=1)
        block = re.sub(r"(minor:\s*)\d+", rf"\g<1>{g['minor']}", block, count=1)
        text = text[:cc.start()] + block + text[cc.end():]
    header = f"# Derived by benchmarks/gpu_device.py from the autotune device key\n#   {key}\n"
    body = [re.sub(r"\s*#.*$", "", ln) for ln in text.splitlines()]   # the base's comments no longer hold
    return header + "\n".join(ln for ln in body if ln.strip()) + "\n"


def rekey(text: str, new_key: str) -> str:
    return re.sub(r'^(\s*device:\s*)"[^"]*"', lambda m: f'{m.group(1)}"{new_key}"', text, flags=re.M)


def h100_text() -> str:
    with open(os.path.join(REPO, "olla_jax", "capture", "targets", "h100.txtpb")) as f:
        return f.read()


# ---------------------------------------------------------------------------
# jobs (child processes)

def _memory(compiled) -> dict:
    ma = compiled.memory_analysis()
    if ma is None:
        return {}
    out = {}
    for k in dir(ma):
        if k.startswith("_"):
            continue
        v = getattr(ma, k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k.replace("_size_in_bytes", "")] = int(v)
    return out


def _stats(dev) -> dict:
    try:
        s = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001 - not every backend reports
        s = {}
    return {k: int(v) for k, v in s.items() if isinstance(v, (int, float))}


def _gpu_total_memory() -> int | None:
    try:
        import pynvml
        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total)
    except Exception:  # noqa: BLE001 - informative only
        return None


def job_measure(spec: str, work: str, args) -> dict:
    import jax
    import jax.numpy as jnp
    import examples

    name, size = split_model(spec)
    row: dict = {"jax": jax.__version__}
    path = autotune_path(work, spec)
    t0 = time.perf_counter()
    step = examples.get(name, size)
    row["description"] = step.description
    row["init_s"] = time.perf_counter() - t0
    options = {"xla_gpu_dump_autotune_results_to": path}
    t0 = time.perf_counter()
    if args.dry_run:
        from olla_jax.capture import gpu
        compiled = gpu.compile_for_target(step.fn, step.args, target="h100",
                                          static_argnums=step.static_argnums,
                                          donate_argnums=step.donate_argnums,
                                          compiler_options=options)
        row["device"] = "compile-only h100 (dry run)"
    else:
        jitted = jax.jit(step.fn, static_argnums=step.static_argnums, donate_argnums=step.donate_argnums)
        lowered = jitted.lower(*step.args)
        try:
            compiled = lowered.compile(compiler_options=options)
        except Exception as err:  # noqa: BLE001 - keep the measurement without the dump
            row["dump_error"] = f"{type(err).__name__}: {str(err)[:500]}"
            log(f"{spec}: compile with the autotune dump failed ({row['dump_error'][:200]}); again without")
            t0 = time.perf_counter()
            compiled = lowered.compile()
        dev = jax.devices()[0]
        row["device"] = dev.device_kind
        row["platform"] = dev.platform
    row["compile_s"] = time.perf_counter() - t0
    row["memory"] = _memory(compiled)
    log(f"{spec}: compiled in {row['compile_s']:.1f} s, memory {row['memory']}")
    if args.dry_run and not os.path.exists(path):
        # Deviceless compiles write no autotune file: a stand-in that exercises loading.
        with open(path, "w") as f:
            f.write('version: 3\nresults {\n  device: "CUDA: 9.0, Cores: 132, GPU clock: 1.98 GHz, '
                    'Memory bandwidth: 4800 GB/s, L2 cache: 60 MB, DNN version: 9.8.0"\n'
                    '  hlo: "dry run"\n  result {\n  }\n}\n')
        row["autotune_stand_in"] = True
    if os.path.exists(path):
        with open(path) as f:
            row["autotune"] = autotune_summary(f.read())
    else:
        row["autotune"] = None
    if args.dry_run:
        return row

    row["gpu_total_memory"] = _gpu_total_memory()
    dev = jax.devices()[0]
    dyn = list(step.dynamic_args())
    dynamic_positions = [i for i in range(len(step.args)) if i not in step.static_argnums]
    donated = [k for k, i in enumerate(dynamic_positions) if i in set(step.donate_argnums)]

    def fresh():
        if not donated:
            return dyn
        a = list(dyn)
        for k in donated:
            a[k] = jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, a[k])
        jax.block_until_ready(a)
        return a

    row["stats_after_compile"] = _stats(dev)
    t0 = time.perf_counter()
    out = compiled(*fresh())
    jax.block_until_ready(out)
    row["first_call_s"] = time.perf_counter() - t0
    del out
    peaks = []
    pads = []
    for _ in range(2):
        a = fresh()
        s = _stats(dev)
        pad_bytes = max(0, s.get("peak_bytes_in_use", 0) - s.get("bytes_in_use", 0))
        pad = jnp.zeros((pad_bytes,), jnp.uint8) if pad_bytes else None
        if pad is not None:
            pad.block_until_ready()
        before = _stats(dev)
        out = compiled(*a)
        jax.block_until_ready(out)
        after = _stats(dev)
        del out, a, pad
        peaks.append({"in_use_before": before.get("bytes_in_use"),
                      "peak_before": before.get("peak_bytes_in_use"),
                      "peak_after": after.get("peak_bytes_in_use"),
                      "in_use_after": after.get("bytes_in_use"),
                      "step_added": after.get("peak_bytes_in_use", 0) - before.get("bytes_in_use", 0),
                      "observable": after.get("peak_bytes_in_use", 0) > before.get("peak_bytes_in_use", 0)})
        pads.append(pad_bytes)
    row["peak"] = peaks
    row["pad_bytes"] = pads
    row["live_before_step"] = _stats(dev).get("bytes_in_use")
    repeats = max(5, min(50, int(args.timing_s / max(row["first_call_s"], 1e-4))))
    times = []
    for _ in range(repeats):
        a = fresh()
        t0 = time.perf_counter()
        out = compiled(*a)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        del out, a
    row["step_s_median"] = statistics.median(times)
    row["step_s_min"] = min(times)
    row["timing_repeats"] = repeats
    row["stats_end"] = _stats(dev)
    m = row["memory"]
    expected = m.get("temp", 0) + m.get("output", 0) - m.get("alias", 0)
    row["expected_step_added"] = expected
    log(f"{spec}: step {1e3 * row['step_s_median']:.2f} ms, added {peaks[-1]['step_added']:,} B "
        f"(temp+out-alias {expected:,} B)")
    return row


def _capture_temp(step, backend: str, options: dict | None) -> dict:
    from olla_jax.capture import capture
    t0 = time.perf_counter()
    try:
        cap = capture(step.fn, *step.args, backend=backend, static_argnums=step.static_argnums,
                      donate_argnums=step.donate_argnums, compiler_options=options)
    except Exception as err:  # noqa: BLE001 - a failed variant is a figure, not a crash
        return {"error": f"{type(err).__name__}: {str(err)[:800]}", "s": time.perf_counter() - t0}
    m = cap.memory
    return {"temp": m.temp, "argument": m.argument, "output": m.output, "alias": m.alias,
            "s": time.perf_counter() - t0}


def job_aot(spec: str, work: str, args) -> dict:
    import examples
    import jax
    from olla_jax.capture import gpu

    name, size = split_model(spec)
    step = examples.get(name, size)
    row: dict = {"jax": jax.__version__, "plugin": gpu.cuda_plugin()}
    path = autotune_path(work, spec)
    # No file loaded yet in this process: the plain h100 compile first.
    row["h100"] = _capture_temp(step, "gpu:h100", None)
    log(f"{spec}: aot h100 {row['h100']}")
    if not os.path.exists(path):
        row["note"] = "no autotune file was recorded"
        return row
    load = {"xla_gpu_load_autotune_results_from": path}
    row["h100+file"] = _capture_temp(step, "gpu:h100", load)
    log(f"{spec}: aot h100+file {row['h100+file']}")
    with open(path) as f:
        keys = device_keys(f.read())
    row["file_keys"] = keys
    if len(keys) == 1 and not readable_key(keys[0]):
        row["note"] = (f"the file's device key {keys[0]!r} is a hash (jax >= 0.11 autotune format): "
                       "no h200 description can be derived from it")
    elif len(keys) == 1:
        try:
            derived = derive_target(h100_text(), keys[0], memory_bytes=args_memory(work, spec))
            target = os.path.join(work, f"{tag(spec)}_h200_derived.txtpb")
            with open(target, "w") as f:
                f.write(derived)
            # The file is already loaded (XLA loads one per process); the option is repeated anyway.
            row["h200+file"] = _capture_temp(step, f"gpu:{target}", load)
            row["h200_target_key"] = target_key(derived)
        except Exception as err:  # noqa: BLE001
            row["h200+file"] = {"error": f"{type(err).__name__}: {err}"}
        log(f"{spec}: aot h200+file {row['h200+file']}")
    else:
        row["note"] = f"{len(keys)} device keys in the file; no h200 description derived"
    return row


def args_memory(work: str, spec: str) -> int | None:
    try:
        with open(os.path.join(work, f"{tag(spec)}.measure.json")) as f:
            return json.load(f).get("gpu_total_memory")
    except (OSError, ValueError):
        return None


def job_rekey(spec: str, work: str, args) -> dict:
    import examples
    import jax

    name, size = split_model(spec)
    step = examples.get(name, size)
    path = autotune_path(work, spec)
    if not os.path.exists(path):
        return {"note": "no autotune file was recorded"}
    key = target_key(h100_text())
    with open(path) as f:
        text = f.read()
    if not all(readable_key(k) for k in device_keys(text)):
        return {"note": "the file's device keys are hashes (jax >= 0.11 autotune format): not rekeyed"}
    text = rekey(text, key)
    rekeyed = os.path.join(work, f"{tag(spec)}_h200_as_h100{AUTOTUNE_SUFFIX}")
    with open(rekeyed, "w") as f:
        f.write(text)
    row = {"jax": jax.__version__, "h100_key": key,
           "h100+rekeyed": _capture_temp(step, "gpu:h100", {"xla_gpu_load_autotune_results_from": rekeyed})}
    log(f"{spec}: aot h100+rekeyed {row['h100+rekeyed']}")
    return row


def job_plan(spec: str, work: str, args) -> dict:
    import warnings
    import examples
    from olla_jax.plan import plan

    name, size = split_model(spec)
    step = examples.get(name, size)
    backend = "gpu:h100" if args.dry_run else "gpu"
    path = autotune_path(work, spec)
    options = {"xla_gpu_load_autotune_results_from": path} if os.path.exists(path) else None
    row: dict = {"backend": backend, "loaded_autotune": options is not None}
    timer = common.Timer()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = plan(step.fn, *step.args, backend=backend, time_limit_s=args.time_limit_s,
                     static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                     compiler_options=options, feed_back=False)
        except Exception as err:  # noqa: BLE001 - retry without the file
            if options is None:
                raise
            row["load_error"] = f"{type(err).__name__}: {str(err)[:500]}"
            row["loaded_autotune"] = False
            p = plan(step.fn, *step.args, backend=backend, time_limit_s=args.time_limit_s,
                     static_argnums=step.static_argnums, donate_argnums=step.donate_argnums,
                     feed_back=False)
    row.update(xla_temp=p.xla_best_temp_bytes, planned=p.planned_temp_bytes, bound=p.lower_bound_bytes,
               gap=p.gap, engine=p.engine, source=p.source, notes=list(p.notes),
               argument=p.argument_bytes, output=p.output_bytes, alias=p.alias_bytes,
               instructions=len(p.graph.nodes) if p.graph else None,
               compile_s=timer.compile_s, plan_s=time.perf_counter() - t0)
    log(f"{spec}: plan xla {p.xla_best_temp_bytes:,} planned {p.planned_temp_bytes:,} "
        f"bound {p.lower_bound_bytes:,}")
    return row


JOBS = {"measure": job_measure, "aot": job_aot, "rekey": job_rekey, "plan": job_plan}


def run_job(args) -> None:
    t0 = time.perf_counter()
    try:
        row = JOBS[args.job](args.model, args.work, args)
    except Exception as err:  # noqa: BLE001 - a failing job is a row, not a crash
        traceback.print_exc()
        row = {"error": f"{type(err).__name__}: {str(err)[:1500]}"}
    row["wall_s"] = time.perf_counter() - t0
    with open(args.job_out, "w") as f:
        json.dump(row, f, indent=1)


# ---------------------------------------------------------------------------
# the orchestrator

class Job:
    def __init__(self, kind: str, spec: str, args, work: str):
        self.kind, self.spec = kind, spec
        self.out = os.path.join(work, f"{tag(spec)}.{kind}.json")
        self.log = os.path.join(work, f"{tag(spec)}.{kind}.log")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        env.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
        if kind in ("aot", "rekey") or args.dry_run:
            env["JAX_PLATFORMS"] = "cpu"       # compile-only: leave the GPU to the measurements
        elif kind == "plan":
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"   # beside a measuring process
        cmd = [sys.executable, "-m", "benchmarks.gpu_device", "--job", kind, "--model", spec,
               "--work", work, "--job_out", self.out, "--time_limit_s", str(args.time_limit_s),
               "--timing_s", str(args.timing_s)] + (["--dry_run"] if args.dry_run else [])
        self.started = time.monotonic()
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def poll(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()     # only our own child, by its handle
            self.proc.wait()

    def result(self, timed_out: bool = False) -> dict:
        self._log.close()
        timed_out = timed_out or getattr(self, "killed", False)
        row: dict
        try:
            with open(self.out) as f:
                row = json.load(f)
        except (OSError, ValueError):
            tail = ""
            try:
                with open(self.log, errors="replace") as f:
                    tail = f.read()[-1500:]
            except OSError:
                pass
            why = "killed at the deadline" if timed_out else f"exit status {self.proc.returncode}"
            row = {"error": f"no result ({why}); log tail: {tail}"}
        row["job_wall_s"] = round(time.monotonic() - self.started, 1)
        return row


def orchestrate(args) -> None:
    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="gpu_device_")
    import jax
    import jaxlib
    result = {"command": common.command_line(), "date": common.now(), "dry_run": args.dry_run,
              "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": sys.version.split()[0],
              "time_limit_s": args.time_limit_s, "models": {s: {} for s in specs}, "skipped": []}
    try:
        import importlib.metadata as md
        result["packages"] = {p: md.version(p) for p in ("jax-cuda13-plugin", "jax-cuda12-plugin",
                                                          "ortools", "protobuf")
                              if _has_dist(md, p)}
    except Exception:  # noqa: BLE001
        pass
    log(f"work dir {work}; models {specs}")

    def save():
        with open(args.out + ".json", "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
        with open(args.out + ".md", "w") as f:
            f.write(render(result))

    pending: list[tuple[str, str]] = []     # background jobs not yet started
    running: list[Job] = []

    def reap(force: bool = False) -> None:
        for job in list(running):
            done = job.poll()
            if not done and not force:
                continue
            if not done:
                job.kill()
            running.remove(job)
            row = result["models"][job.spec][job.kind] = job.result(timed_out=not done)
            log(f"{job.spec}: {job.kind} done in {row.get('job_wall_s')} s"
                + (f" (error: {row['error'][:200]})" if "error" in row else ""))
            save()

    def launch_background() -> None:
        while pending and len(running) < args.parallel + 1 and elapsed() < args.deadline_s - 30:
            kind, spec = pending.pop(0)
            running.append(Job(kind, spec, args, work))

    def elapsed() -> float:
        return time.monotonic() - T0

    for spec in specs:
        if elapsed() > args.budget_s:
            result["skipped"].append(spec)
            log(f"{spec}: skipped, {elapsed():.0f} s past the {args.budget_s:.0f} s budget")
            continue
        log(f"{spec}: measure")
        job = Job("measure", spec, args, work)
        running.append(job)
        while not job.poll() and elapsed() < args.deadline_s:
            reap()
            launch_background()
            time.sleep(0.5)
        if not job.poll():
            job.kill()
            job.killed = True
        reap()
        row = result["models"][spec].get("measure", {})
        if "error" in row:
            log(f"{spec}: measure failed: {row['error'][:300]}")
        for kind in ("plan", "aot", "rekey"):     # the plan takes longest: first
            if kind not in skip:
                pending.append((kind, spec))
        launch_background()
    while (pending or running) and elapsed() < args.deadline_s:
        reap()
        launch_background()
        time.sleep(0.5)
    reap(force=True)
    for kind, spec in pending:
        result["models"][spec][kind] = {"error": "not started: deadline"}
    result["wall_s"] = round(elapsed(), 1)
    save()
    pack(out_dir, work)
    log(f"done in {elapsed():.0f} s: {args.out}.json, {args.out}.md")


def _has_dist(md, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def pack(out_dir: str, work: str) -> None:
    names = sorted(os.listdir(work))
    with tarfile.open(os.path.join(out_dir, "autotune.tar.gz"), "w:gz") as tar:
        for n in names:
            if n.endswith(AUTOTUNE_SUFFIX) or n.endswith(".txtpb"):
                tar.add(os.path.join(work, n), arcname=n)
    with tarfile.open(os.path.join(out_dir, "logs.tar.gz"), "w:gz") as tar:
        for n in names:
            if n.endswith(".log") or n.endswith(".json"):
                tar.add(os.path.join(work, n), arcname=n)


# ---------------------------------------------------------------------------
# the report

def _mib(x) -> str:
    return "-" if x is None else f"{x / 2**20:,.2f}"


def _pct(a, b) -> str:
    if a is None or not b:
        return "-"
    return f"{100 * (a - b) / b:+.1f}%"


def _temp(row: dict | None):
    if not row or "error" in row:
        return None
    return row.get("temp")


def _hashed(r: dict) -> bool:
    """The model's autotune file has opaque device keys (jax >= 0.11 format)."""
    keys = (r.get("measure", {}).get("autotune") or {}).get("device_keys") or []
    return bool(keys) and not all(readable_key(k) for k in keys)


def render(result: dict) -> str:
    models = result["models"]
    device = next((r.get("measure", {}).get("device") for r in models.values()
                   if r.get("measure", {}).get("device")), "?")
    lines = [f"# Real GPU vs compile-only planning ({device})", "",
             f"- command: `{result['command']}`", f"- date: {result['date']}",
             f"- device: {device}" + (" (DRY RUN: no GPU, every compile is compile-only h100)"
                                      if result.get("dry_run") else ""),
             f"- python {result.get('python')}, jax {result['jax']}, jaxlib {result['jaxlib']}, "
             f"packages {result.get('packages', {})}",
             f"- plan time limit {result['time_limit_s']:.0f} s, wall {result.get('wall_s', '-')} s",
             ""]
    if result.get("skipped"):
        lines += [f"- skipped by the time guard: {', '.join(result['skipped'])}", ""]
    lines += ["## XLA temp on the real GPU vs compile-only (MiB)", "",
              "Real: `memory_analysis().temp` of the step compiled on the GPU (autotuned there). "
              "h100: compile-only for the shipped h100 description, no autotune results. "
              "h100+file: the same with the GPU's autotune file loaded (its keys name the real "
              "device, so an h100 compile finds none). h200+file: compile-only for an h200 "
              "description derived from the file's device key, file loaded. h100+rekeyed: h100 "
              "with the file's keys rewritten to the h100 key. Deviation = (compile-only - real) / real.",
              "", "| model | real temp | h100 | h100+file | h200+file | h100+rekeyed | h100 dev. | h200+file dev. | autotune entries |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for spec, r in models.items():
        me, aot, rk = r.get("measure", {}), r.get("aot", {}), r.get("rekey", {})
        real = me.get("memory", {}).get("temp") if "error" not in me else None
        at = me.get("autotune") or {}
        vals = [_temp(aot.get("h100")), _temp(aot.get("h100+file")), _temp(aot.get("h200+file")),
                _temp(rk.get("h100+rekeyed"))]
        cells = [_mib(v) for v in vals]
        if _hashed(r):
            cells[2] = cells[3] = "n/a"
        lines.append(f"| {spec} | {_mib(real)} | " + " | ".join(cells)
                     + f" | {_pct(vals[0], real)} | {'n/a' if _hashed(r) else _pct(vals[2], real)} | "
                     f"{at.get('entries', '-')} |")
    if any(_hashed(r) for r in models.values()):
        lines += ["", "n/a: this jax writes autotune keys with an opaque device hash "
                  "(`entries { key { target { device: \"<hash>\" hlo_fingerprint: ... } } }`), so no "
                  "description can be derived from a key and no key can be rewritten to the h100 one."]
    lines += ["", "## Real peak vs memory_analysis (MiB)", "",
              "`peak_bytes_in_use` is the BFC allocator's high-water mark over the whole process "
              "(every live jax array: parameters, optimizer state, batch, outputs, XLA's temp arena; "
              "autotuning scratch during compile; not the CUDA context, cuBLAS/cuDNN handles or "
              "the preallocated but unused pool). It cannot be reset, so before the measured call "
              "the in-use bytes are padded up to the peak so far; 'added' = peak after the call - "
              "in use just before it, i.e. what the step allocated on top of its live inputs; "
              "XLA's figure for that is temp + output - alias.", "",
              "'XLA peak_memory' is memory_analysis().peak_memory_in_bytes; 'process peak' is "
              "peak_bytes_in_use after the compile (autotuning included) and one warm-up call, before "
              "any padding.", "",
              "| model | args | temp | output | alias | temp+out-alias | added (real) | added/expected | XLA peak_memory | process peak | step ms (median) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for spec, r in models.items():
        me = r.get("measure", {})
        if "error" in me or not me:
            lines.append(f"| {spec} | error: {str(me.get('error', 'not run'))[:120]} ||||||||||")
            continue
        m = me.get("memory", {})
        peak = (me.get("peak") or [{}])[-1]
        added, expected = peak.get("step_added"), me.get("expected_step_added")
        ratio = f"{added / expected:.3f}" if added is not None and expected else "-"
        step_ms = f"{1e3 * me['step_s_median']:.2f}" if me.get("step_s_median") else "-"
        lines.append(f"| {spec} | {_mib(m.get('argument'))} | {_mib(m.get('temp'))} | "
                     f"{_mib(m.get('output'))} | {_mib(m.get('alias'))} | {_mib(expected)} | "
                     f"{_mib(added)} | {ratio} | {_mib(m.get('peak_memory_in_bytes'))} | "
                     f"{_mib((me.get('peak') or [{}])[0].get('peak_before'))} | {step_ms} |")
    lines += ["", "## olla_jax.plan on the real GPU (MiB)", "",
              "`plan(..., backend=\"gpu\", time_limit_s=T, feed_back=False)`, compiled with the "
              "recorded autotune file loaded (so XLA's executable is the measured one). The GPU "
              "executable is not rewritten yet: 'planned' is the plan's temp, not an achieved one.", "",
              "| model | instructions | XLA temp (plan) | = real temp? | planned | bound | planned/XLA | gap | plan s | notes |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for spec, r in models.items():
        pl, me = r.get("plan", {}), r.get("measure", {})
        if not pl or "error" in pl:
            lines.append(f"| {spec} | error: {str(pl.get('error', 'not run'))[:150]} |||||||||")
            continue
        real = me.get("memory", {}).get("temp")
        same = "-" if real is None else ("yes" if real == pl["xla_temp"] else f"no ({_mib(real)})")
        ratio = f"{pl['planned'] / pl['xla_temp']:.3f}" if pl.get("xla_temp") else "-"
        notes = "; ".join(pl.get("notes", []))[:160]
        if pl.get("load_error"):
            notes = f"autotune file not loaded: {pl['load_error'][:80]}; " + notes
        lines.append(f"| {spec} | {pl.get('instructions')} | {_mib(pl['xla_temp'])} | {same} | "
                     f"{_mib(pl['planned'])} | {_mib(pl['bound'])} | {ratio} | {100 * pl['gap']:.1f}% | "
                     f"{pl.get('plan_s', 0):.0f} | {notes} |")
    errors = [(spec, kind, row["error"]) for spec, r in models.items() for kind, row in r.items()
              if isinstance(row, dict) and "error" in row]
    errors += [(spec, f"aot {k}", v["error"]) for spec, r in models.items()
               for k, v in r.get("aot", {}).items() if isinstance(v, dict) and "error" in v
               and not (k == "h200+file" and _hashed(r))]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {s} {k}: `{e[:400]}`" for s, k, e in errors]
    keys = sorted({k for r in models.values() for k in (r.get("measure", {}).get("autotune") or {})
                   .get("device_keys", [])})
    if keys:
        def at(r):
            return r.get("measure", {}).get("autotune") or {}
        formats = sorted({at(r).get("format") or ("v3 results" if at(r).get("version") else
                                                   "entries (hashed device keys)")
                          for r in models.values() if at(r)})
        lines += ["", "## Autotune files", "",
                  f"- device keys: {', '.join(f'`{k}`' for k in keys)}",
                  f"- format: {', '.join(formats)}",
                  "- entries: " + ", ".join(f"{s} {at(r).get('entries')} ({at(r).get('bytes', 0) / 1e3:.0f} kB)"
                                            for s, r in models.items() if at(r))]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.render:
        with open(args.render) as f:
            result = json.load(f)
        with open(os.path.splitext(args.render)[0] + ".md", "w") as f:
            f.write(render(result))
        return
    if args.job:
        if args.job in ("aot", "rekey") or args.dry_run:
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        run_job(args)
        return
    orchestrate(args)


if __name__ == "__main__":
    main()
