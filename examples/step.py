"""`Step`: one training step (function + concrete arguments) as the planner consumes it."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    fn: Callable  # the plain (un-jitted) train step
    args: tuple  # concrete arguments: params, optimizer state, batch, ...
    static_argnums: tuple[int, ...] = ()
    donate_argnums: tuple[int, ...] = ()
    description: str = ""

    def abstract_args(self) -> tuple:
        """`args` with every array leaf replaced by a `jax.ShapeDtypeStruct` (static args kept)."""
        def abstract(x: Any) -> Any:
            return jax.ShapeDtypeStruct(x.shape, x.dtype)

        return tuple(a if i in self.static_argnums else jax.tree.map(abstract, a)
                     for i, a in enumerate(self.args))

    def dynamic_args(self) -> tuple:
        """The arguments a compiled executable takes: `args` without the static ones."""
        return tuple(a for i, a in enumerate(self.args) if i not in self.static_argnums)

    def jit(self, **jit_kwargs):
        return jax.jit(self.fn, static_argnums=self.static_argnums,
                       donate_argnums=self.donate_argnums, **jit_kwargs)

    def lower(self, **jit_kwargs):
        """Lower on abstract arguments (nothing is computed, nothing is donated)."""
        return self.jit(**jit_kwargs).lower(*self.abstract_args())
