"""python -m examples --list | python -m examples NAME [NAME...] [--size small] [--memory-scheduler]

Compiles each step on CPU and prints: instructions in the optimized HLO entry computation,
memory_analysis() temp/argument/output bytes, and compile time (lower + compile)."""

import argparse
import importlib
import os
import platform
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from olla_jax import jax_compat  # noqa: E402

from . import SIZES, get, names  # noqa: E402

jax_compat.discover_plugins()   # quietly: a CPU install's CUDA plugin prints tracebacks

MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
HEADER = ("| model | instructions | temp MB | args MB | output MB | compile s | temp MB, memory scheduler |"
          "\n|---|---:|---:|---:|---:|---:|---:|")


def entry_instructions(hlo_text: str) -> int:
    """Number of instructions in the ENTRY computation of an HLO module's text."""
    count, inside = 0, False
    for line in hlo_text.splitlines():
        if line.startswith("ENTRY "):
            inside = True
        elif inside and line.startswith("}"):
            return count
        elif inside and " = " in line:
            count += 1
    return count


def measure(step, memory_scheduler: bool = False) -> dict:
    start = time.perf_counter()
    compiled = step.lower().compile(compiler_options=MEMORY_SCHEDULER if memory_scheduler else None)
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    return dict(seconds=seconds,
                instructions=entry_instructions(compiled.as_text()),
                temp=mem.temp_size_in_bytes, args=mem.argument_size_in_bytes,
                output=mem.output_size_in_bytes, alias=mem.alias_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="examples to compile ('all' for every one)")
    parser.add_argument("--list", action="store_true", help="list the examples and exit")
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--memory-scheduler", action="store_true",
                        help="compile with XLA's memory-optimized CPU scheduler")
    parser.add_argument("--table", action="store_true",
                        help="one markdown row per example (compiles twice: default and memory scheduler)")
    args = parser.parse_args()
    if args.list or not args.names:
        for name in names():
            doc = importlib.import_module(f"examples.{name}").__doc__ or ""
            print(f"{name:12s} {doc.strip().splitlines()[0]}")
        return
    selected = names() if args.names == ["all"] else args.names
    if args.table:
        print(f"<!-- jax {jax.__version__}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, size {args.size} -->\n{HEADER}")
    for name in selected:
        step = get(name, args.size)
        r = measure(step, args.memory_scheduler)
        mb = {k: r[k] / 2 ** 20 for k in ("temp", "args", "output", "alias")}
        if args.table:
            other = measure(step, not args.memory_scheduler)["temp"] / 2 ** 20
            print(f"| {name} | {r['instructions']} | {mb['temp']:.1f} | {mb['args']:.1f} | "
                  f"{mb['output']:.1f} | {r['seconds']:.1f} | {other:.1f} |", flush=True)
        else:
            print(f"{name} ({args.size}): {step.description}\n"
                  f"  entry instructions: {r['instructions']}\n"
                  f"  temp {r['temp']:,} B ({mb['temp']:.1f} MB), arguments {r['args']:,} B "
                  f"({mb['args']:.1f} MB), output {r['output']:,} B ({mb['output']:.1f} MB), "
                  f"alias {r['alias']:,} B\n"
                  f"  compile {r['seconds']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
