"""olla_jax.xla_seed: XLA's rematerialization clones read from an optimized
module's text and mapped onto the step's jaxpr equations (fake text, no compile)."""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from olla_jax import xla_seed  # noqa: E402

_TEXT = """HloModule jit_step

%fused_multiply (p0: f32[8,4]) -> f32[8,4] {
  %p0 = f32[8,4]{1,0} parameter(0)
  ROOT %m.remat = f32[8,4]{1,0} multiply(%p0, %p0)
}

ENTRY %main (a: f32[8,4]) -> f32[8,4] {
  %a = f32[8,4]{1,0} parameter(0)
  %loop_multiply_fusion.2 = f32[8,4]{1,0} fusion(%a), kind=kLoop, calls=%fused_multiply, metadata={op_name="jit(step)/olla_e0/mul"}
  %loop_multiply_fusion.2.remat = f32[8,4]{1,0} fusion(%a), kind=kLoop, calls=%fused_multiply, metadata={op_name="jit(step)/olla_e0/mul"}
  %loop_multiply_fusion.2.remat2.1 = f32[8,4]{1,0} fusion(%a), kind=kLoop, calls=%fused_multiply, metadata={op_name="jit(step)/olla_e0/mul"}
  %bitcast.remat = f32[32]{0} bitcast(%loop_multiply_fusion.2.remat)
  %pool.remat3 = (f32[4,4]{1,0}, s32[4,4]{1,0}) fusion(%a), kind=kLoop, calls=%fused_multiply, metadata={op_name="jit(step)/olla_e1/slice"}
  %wrapped_transpose.remat = f32[4,8]{1,0} fusion(%a), kind=kInput, calls=%fused_multiply, metadata={op_name="params['w']"}
  ROOT %out = f32[8,4]{1,0} add(%loop_multiply_fusion.2.remat, %loop_multiply_fusion.2.remat2.1)
}
"""


def test_clones_read_from_the_entry():
    found = xla_seed.clones(_TEXT)
    # the fused computation's root and the bitcast are not clones that compute
    assert [c.name for c in found] == ["loop_multiply_fusion.2.remat",
                                       "loop_multiply_fusion.2.remat2.1", "pool.remat3",
                                       "wrapped_transpose.remat"]
    first, _, pool, transpose = found
    assert first.original == "loop_multiply_fusion.2" and first.kind == "kLoop"
    assert first.equation == 0 and first.nbytes == 8 * 4 * 4
    assert pool.arrays == (("f32", (4, 4)), ("s32", (4, 4))) and pool.nbytes == 128
    assert pool.counts == frozenset({16}) and pool.equation == 1
    assert transpose.equation is None          # a parameter's layout: no equation scope
    assert xla_seed.by_kind(found) == [("fusion kLoop", 3, 384), ("fusion kInput", 1, 128)]
    assert xla_seed.original_of("a.b.remat2.1") == "a.b" and xla_seed.original_of("a.1") == "a.1"


def test_seeded_values_map_clones_to_equations():
    def step(x):
        a = x * 2.0                          # e0: [8,4], cloned twice
        b = a[:4]                            # e1: [4,4], the pool clone's count
        c = x[:2]                            # e2: [2,4], not cloned
        return b.sum() + c.sum()
    closed = jax.make_jaxpr(step)(jnp.ones((8, 4)))
    prims = [e.primitive.name for e in closed.jaxpr.eqns]
    seeds = xla_seed.seeded_values(xla_seed.clones(_TEXT), closed)
    assert seeds == {f"e0.0: {prims[0]}": ["loop_multiply_fusion.2.remat",
                                           "loop_multiply_fusion.2.remat2.1"],
                     f"e1.0: {prims[1]}": ["pool.remat3"]}
    # a clone whose results match no output of its equation seeds nothing
    odd = xla_seed.clones(_TEXT.replace("f32[4,4]{1,0}, s32", "f32[3,4]{1,0}, s32")
                          .replace("s32[4,4]", "s32[3,4]"))
    assert f"e1.0: {prims[1]}" not in xla_seed.seeded_values(odd, closed)


def test_no_clones_no_seeds():
    assert xla_seed.clones("ENTRY %main () -> f32[] {\n  ROOT %c = f32[] constant(0)\n}") == []
    closed = jax.make_jaxpr(lambda x: x + 1)(1.0)
    assert xla_seed.seeded_values([], closed) == {}


def test_cloned_instructions_and_candidates_of_them():
    import importlib
    from types import SimpleNamespace
    cands_lib = importlib.import_module("olla_jax.budget.candidates")
    names = xla_seed.cloned_instructions(_TEXT)
    assert names == {"loop_multiply_fusion.2", "pool", "wrapped_transpose"}
    graph = SimpleNamespace(nodes=["loop_multiply_fusion.2", "conv", "pool"])
    cands = [SimpleNamespace(producer=i, value=i) for i in range(3)]
    assert [c.value for c in cands_lib.of_producers(graph, cands, names)] == [0, 2]
    assert cands_lib.of_producers(graph, cands, ()) == []
    with pytest.raises(ValueError, match="collection of instruction names"):
        cands_lib.of_producers(graph, cands, "pool")


def test_recompute_to_budget_refuses_a_string_of_producers():
    from olla_jax import budget
    with pytest.raises(ValueError, match="collection of instruction names"):
        budget.recompute_to_budget(None, 1, producers="loop_multiply_fusion")
