"""The GPU executable: Riegeli container, split-proto codec, rewrite and its refusals.

The container and hash tests need nothing; the executable tests compile for the
shipped H100 description without a GPU (jax's CUDA plugin, ``pip install
'.[gpu]'``) and are skipped without the plugin.  Running a rewritten GPU
executable needs a GPU: ``benchmarks/gpu_feedback.py`` does that on a device.
"""

from __future__ import annotations

import dataclasses
import os
import random
import struct
import warnings

import pytest

from olla_jax.apply import gpu_executable, gpu_rewrite, riegeli, snappy
from olla_jax.apply.edits import ExecutableEdit, RewriteError
from olla_jax.apply.highwayhash import hash64
from tests.marks import needs_plugin  # noqa: E402


def test_highwayhash_matches_riegeli_signature_constants():
    # The file signature every Riegeli file starts with: its block header hash
    # covers (previous_chunk=0, next_chunk=64); an empty chunk's data hash.
    assert hash64(struct.pack("<QQ", 0, 64)) == 0x3F4A880DD170AF83
    assert hash64(b"") == 0x72C3B1E9C0139FE1
    assert hash64(b"a") != hash64(b"b")


def test_riegeli_roundtrip_across_blocks_and_detects_corruption():
    rng = random.Random(0)
    records = [os.urandom(rng.choice([0, 1, 100, 70_000, 200_000])) for _ in range(9)]
    blob = riegeli.write_records(records)
    assert len(blob) > 3 * riegeli.BLOCK  # several block headers crossed
    assert riegeli.read_records(blob) == records
    assert blob[:64] == riegeli.write_records([])[:64]  # the signature
    broken = bytearray(blob)
    broken[len(blob) // 2] ^= 1
    with pytest.raises(riegeli.RiegeliError):
        riegeli.read_records(bytes(broken))
    with pytest.raises(riegeli.RiegeliError):
        riegeli.read_records(blob[:-10])
    with pytest.raises(riegeli.RiegeliError):
        riegeli.read_records(b"not riegeli" * 10)


def test_snappy_literals_and_overlapping_copies():
    # literal "ab", then copy-1 (offset 2, length 4 + 3 = 7): "ababababa"
    stream = bytes([9, 1 << 2]) + b"ab" + bytes([(3 << 2) | 1, 2])
    assert snappy.decompress(stream) == b"ababababa"
    with pytest.raises(snappy.SnappyError):
        snappy.decompress(bytes([5, 0]) + b"a")  # says 5 bytes, holds 1
    with pytest.raises(snappy.SnappyError):
        snappy.decompress(bytes([4, (3 << 2) | 1, 9]))  # copies from before the start


@pytest.fixture(scope="module")
def planned():
    """A real plan of a small CNN-with-Adam step for the H100, rewritten."""
    import examples
    import olla_jax

    step = examples.get("cnn_adam", "tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = olla_jax.plan(step.fn, *step.args, backend="gpu:h100", time_limit_s=5,
                             donate_argnums=step.donate_argnums)
    return plan


@needs_plugin
def test_decode_encode_is_exact_and_identity_rewrite_changes_nothing(planned):
    raw = planned.capture.executable
    decoded = gpu_executable.decode(raw)
    assert gpu_executable.encode(decoded) == raw
    assert decoded.thunks and decoded.entry_computation().instructions
    identity = ExecutableEdit(order=gpu_rewrite.entry_order(decoded),
                              relocate=lambda name, a, o, s: (a, o),
                              relocate_logical=lambda b, a, o: (a, o))
    assert gpu_rewrite.rewrite(raw, identity) == raw
    # An edited proto is written afresh (uncompressed) and reads back the same.
    decoded.result.module_name += "_edited"
    again = gpu_executable.decode(gpu_executable.encode(decoded))
    assert again.result.module_name == decoded.result.module_name
    assert [t.SerializeToString() for t in again.thunks] == \
        [t.SerializeToString() for t in decoded.thunks]


@needs_plugin
def test_plan_builds_a_rewritten_executable_that_carries_the_plan(planned):
    assert planned.source == "olla_jax", planned.notes
    assert planned.executable_bytes is not None
    assert any("not run" in n for n in planned.notes)
    assert planned.achieved_temp_bytes is None and not planned.verified
    decoded = gpu_executable.decode(planned.executable_bytes)
    assert gpu_rewrite.entry_order(decoded) == planned.layout.order_names
    temp = planned.graph.temp_allocation
    assert decoded.allocations[temp].size == planned.planned_temp_bytes
    assert decoded.buffer_assignment.buffer_allocations[temp].size == planned.planned_temp_bytes
    # Thunks follow the order; every slice lies inside its allocation.
    position = {n: k for k, n in enumerate(planned.layout.order_names)}
    names = [t.thunk_info.profile_annotation for t in decoded.thunks]
    assert [position[n] for n in names] == sorted(position[n] for n in names)
    sizes = {a.index: a.size for a in decoded.allocations}
    for thunk in decoded.thunks:
        for _, s in gpu_rewrite._slices(thunk):
            assert 0 <= s.offset and s.offset + s.size <= sizes[s.buffer_allocation_index]
    # What moved moved by multiples of 256 bytes.
    before = gpu_executable.decode(planned.capture.executable)
    moved = 0
    for old, new in zip(sorted(before.thunks, key=lambda t: t.thunk_info.thunk_id),
                        sorted(decoded.thunks, key=lambda t: t.thunk_info.thunk_id)):
        for (_, a), (_, b) in zip(gpu_rewrite._slices(old), gpu_rewrite._slices(new)):
            assert (b.offset - a.offset) % gpu_rewrite.ALIGNMENT == 0
            moved += (a.buffer_allocation_index, a.offset) != (b.buffer_allocation_index, b.offset)
    assert moved


def _edit(planned, **changes) -> ExecutableEdit:
    from olla_jax.apply.feed_back import edit_of
    return dataclasses.replace(edit_of(planned.layout), **changes)


@needs_plugin
def test_rewrite_refuses_what_would_break_the_executable(planned):
    raw = planned.capture.executable
    layout = planned.layout
    temp = planned.graph.temp_allocation

    def shifted(delta):
        def relocate(name, a, o, s):
            a, o = layout.relocate(name, a, o, s)
            return (a, o + delta) if a == temp else (a, o)
        return relocate

    big = {temp: planned.planned_temp_bytes + 1024}
    with pytest.raises(RewriteError, match="alignment"):
        gpu_rewrite.rewrite(raw, _edit(planned, relocate=shifted(64), allocation_sizes=big))
    with pytest.raises(RewriteError, match="lies in no logical buffer"):
        gpu_rewrite.rewrite(raw, _edit(planned, relocate=shifted(256), allocation_sizes=big))
    with pytest.raises(RewriteError, match="before its operand"):
        gpu_rewrite.rewrite(raw, _edit(planned, order=tuple(reversed(layout.order_names))))
    with pytest.raises(RewriteError, match="not a permutation"):
        gpu_rewrite.rewrite(raw, _edit(planned, order=layout.order_names[1:]))
    with pytest.raises(RewriteError, match="outside allocation"):
        gpu_rewrite.rewrite(raw, _edit(planned, allocation_sizes={temp: 256}))

    # Two distinct slices of one kernel pushed onto the same bytes.
    decoded = gpu_executable.decode(raw)
    thunk = next(t for t in decoded.thunks
                 if len({(s.buffer_allocation_index, s.offset) for _, s in gpu_rewrite._slices(t)
                         if s.buffer_allocation_index == temp}) >= 2)
    name = thunk.thunk_info.profile_annotation
    first = next(s for _, s in gpu_rewrite._slices(thunk) if s.buffer_allocation_index == temp)
    target = layout.relocate(name, first.buffer_allocation_index, first.offset, first.size)

    def collide(n, a, o, s):
        new = layout.relocate(n, a, o, s)
        return target if n == name and new[0] == temp else new
    with pytest.raises(RewriteError, match="now overlap"):
        gpu_rewrite.rewrite(raw, _edit(planned, relocate=collide))


@needs_plugin
def test_decode_refuses_other_bytes(planned):
    raw = planned.capture.executable
    for bad in (b"", raw[:100], raw[:-7], b"\x05hello" + raw[6:]):
        with pytest.raises(gpu_executable.GpuLayoutError):
            gpu_executable.decode(bad)
