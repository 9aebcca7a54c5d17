"""Turn rewritten executable bytes into a ``jax.stages.Compiled``.

We go through the pickling path of ``jax.experimental.serialize_executable``:
``serialize(original)`` pickles the unloaded executable (with the in/out
pytrees, donation and shardings of the original call) and stores the
executable itself as a persistent id ``('exec', bytes)``.  Unpickling with
those bytes swapped for ours gives a Compiled that is called exactly like the
original.  Only load bytes that :func:`olla_jax.apply.verify.verify_executable`
accepted: a bad executable can abort the process.
"""

from __future__ import annotations

import io
from typing import Any

import jax
from jax.experimental import serialize_executable as _se

from olla_jax.apply import executable, gpu_executable


class _SwapExecutable(_se._JaxPjrtUnpickler):
    """Unpickler that loads ``raw`` in place of the pickled executable."""

    def __init__(self, file, backend, raw: bytes, devices):
        super().__init__(file, backend, devices)
        self._raw = raw
        self.swapped = 0

    def persistent_load(self, pid):
        if pid[0] == "exec":
            self.swapped += 1
            pid = ("exec", self._raw)
        return super().persistent_load(pid)


def load_compiled(original: jax.stages.Compiled, raw: bytes, *,
                  platform: str = "cpu") -> jax.stages.Compiled:
    """A Compiled running ``raw`` (a rewrite of ``original``'s executable)."""
    # Refuse anything that is not an executable we understand.
    (gpu_executable.decode if platform == "gpu" else executable.decode)(raw)
    raw = executable.without_dump_options(raw)  # else XLA dumps the module again on load
    runtime = original.runtime_executable()
    payload, in_tree, out_tree = _se.serialize(original)
    # On the original's devices: jax's unpickler loads over every device of the
    # client by default, and with 4 local devices a one-device step's executable
    # then refused its arguments ("expected ... to have 4 shards").
    unpickler = _SwapExecutable(io.BytesIO(payload), runtime.client, bytes(raw),
                                runtime.local_devices())
    unloaded, args_info_flat, no_kwargs = unpickler.load()
    if unpickler.swapped != 1:
        raise RuntimeError(f"expected one executable in the pickled Compiled, found "
                           f"{unpickler.swapped}: jax's serialization changed")
    # As in jax.experimental.serialize_executable.deserialize_and_load.
    args_info = in_tree.unflatten(args_info_flat)
    return jax.stages.Compiled(unloaded.load(), [], args_info, out_tree, no_kwargs=no_kwargs)


def memory_sizes(compiled: Any) -> dict[str, int]:
    """The byte counts of ``compiled.memory_analysis()`` as a dict."""
    stats = compiled.memory_analysis()
    return {k: int(getattr(stats, k)) for k in
            ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
             "temp_size_in_bytes", "generated_code_size_in_bytes")}
