"""FLOPs of HLO instructions and modules, counted from the optimized HLO.

XLA's ``cost_analysis()`` is missing where we need it (None for compile-only
GPU executables in jax 0.10.2) and says nothing per instruction, so FLOPs
are counted here: 2 x output x contraction for dots, convolutions and
cuBLAS/cuDNN custom calls, one per output element for other arithmetic,
nothing for data movement.  A while loop's body is counted once (its trip
count is not always known); fusions and calls count their callees.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

_FREE = frozenset({"parameter", "constant", "bitcast", "get-tuple-element", "tuple", "broadcast",
                   "reshape", "transpose", "copy", "slice", "iota", "dynamic-slice",
                   "dynamic-update-slice", "concatenate", "pad", "copy-start", "copy-done",
                   "after-all", "partition-id", "replica-id", "optimization-barrier"})


def elements(shape) -> int:
    """Elements of an array shape (tuples: the sum over their leaves)."""
    if shape.tuple_shapes:
        return sum(elements(s) for s in shape.tuple_shapes)
    return int(np.prod(list(shape.dimensions), dtype=np.int64)) if shape.dimensions else 1


def _first_array(shape):
    return shape.tuple_shapes[0] if shape.tuple_shapes else shape


def _backend_config(instr, payloads: Sequence[bytes] = ()) -> bytes:
    """``instr``'s backend config text: its own field, or (jaxlib 0.10) the
    module's payload its ``backend_config_payload`` names by id."""
    if instr.backend_config:
        return instr.backend_config
    try:
        if not instr.HasField("backend_config_payload"):
            return b""
    except ValueError:      # a schema without payloads
        return b""
    ref = instr.backend_config_payload
    if ref.value:
        return ref.value
    return payloads[ref.id] if 0 <= ref.id < len(payloads) else b""


def _contraction(instr, by_id, payloads: Sequence[bytes] = ()) -> int:
    lhs = by_id[instr.operand_ids[0]].shape
    dims = list(instr.dot_dimension_numbers.lhs_contracting_dimensions)
    text = _backend_config(instr, payloads) if not dims else b""
    if not dims and text:
        try:
            config = json.loads(text)
            numbers = config.get("gemm_backend_config", {}).get("dot_dimension_numbers", {})
            dims = [int(d) for d in numbers.get("lhs_contracting_dimensions", [])]
        except (ValueError, AttributeError):
            dims = []
    k = 1
    for d in dims:
        k *= lhs.dimensions[d]
    return k


def _convolution(instr, by_id) -> int:
    rhs = by_id[instr.operand_ids[1]].shape
    numbers = instr.convolution_dimension_numbers
    window = 1
    for d in numbers.kernel_spatial_dimensions:
        window *= rhs.dimensions[d]
    in_features = rhs.dimensions[numbers.kernel_input_feature_dimension]  # per group already
    return 2 * elements(_first_array(instr.shape)) * window * in_features


def instruction_flops(instr, by_id: dict[int, Any], comps: dict[int, Any],
                      payloads: Sequence[bytes] = ()) -> int:
    """FLOPs of one instruction of an HloModuleProto (callees included);
    ``payloads``: the module's, where a cuBLAS call's config may sit."""
    op = instr.opcode
    if op in ("fusion", "call", "while", "conditional", "async-start"):
        return sum(instruction_flops(i, by_id, comps, payloads)
                   for c in instr.called_computation_ids if c in comps
                   for i in comps[c].instructions)
    if op == "dot":
        return 2 * elements(instr.shape) * _contraction(instr, by_id)
    if op == "convolution":
        return _convolution(instr, by_id)
    if op == "custom-call":
        target = instr.custom_call_target.lower()
        if "gemm" in target or "matmul" in target:
            return 2 * elements(_first_array(instr.shape)) * _contraction(instr, by_id, payloads)
        if "conv" in target and len(instr.operand_ids) > 1:
            return _convolution(instr, by_id)
        return 0
    if op in _FREE:
        return 0
    if op in ("reduce", "reduce-window", "select-and-scatter", "scatter"):
        return sum(elements(by_id[o].shape) for o in instr.operand_ids)
    return elements(instr.shape)


def module_flops(module) -> int:
    """FLOPs of an ``xla.HloModuleProto``'s entry computation, callees included."""
    by_id = {i.id: i for c in module.computations for i in c.instructions}
    comps = {c.id: c for c in module.computations}
    entry = comps[module.entry_computation_id]
    payloads = tuple(getattr(module, "payloads", ()))
    return sum(instruction_flops(i, by_id, comps, payloads) for i in entry.instructions)


def compiled_flops(compiled) -> int:
    """FLOPs of a ``jax.stages.Compiled`` step (its first HLO module)."""
    from olla_jax import protos
    module = protos.message_class("xla.HloModuleProto")()
    module.ParseFromString(compiled.runtime_executable().hlo_modules()[0]
                           .as_serialized_hlo_module_proto())
    return module_flops(module)
