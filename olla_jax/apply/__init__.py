"""Turn a plan into a real XLA:CPU executable, safely.

- :mod:`.executable`: decode/encode the serialized executable of the installed jaxlib.
- :mod:`.cpu_rewrite`: apply an order and a placement (``ExecutableEdit``) to it.
- :mod:`.verify` (+ :mod:`.child`): run it against XLA's in a child process, bit for bit.
- :mod:`.load`: load verified bytes as a ``jax.stages.Compiled``.
- :mod:`.controls`: planner-free edits (mirror, shift, swap, overlap) for tests and benchmarks.
- :mod:`.timing`: run time of a rewritten executable against XLA's.

Submodules are not imported here: importing this package pulls in neither jax nor protobuf.
"""
