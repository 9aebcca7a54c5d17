"""The read-back of a library call's copy (``gpu_readback._compare_library``):
a slice with no bytes (an output the call does not make) is left where it is
by the rewrite, so the read-back expects it there, even where it sits at the
offset of an operand recomputed before the copy (a chain); unet:small's
cuDNN convolution copies were refused for that on H100."""

from __future__ import annotations

import types

from olla_jax.apply import gpu_readback


class Thunk:
    def __init__(self, slices):
        self.slices = slices

    def WhichOneof(self, _):
        return "convolution_thunk"


def _compare(monkeypatch, first, copy):
    monkeypatch.setattr(gpu_readback, "_all_slices", lambda t: t.slices)
    monkeypatch.setattr(gpu_readback, "_bare", lambda t: b"the same call")
    # the chain: what the first run read at allocation 7 is now read from a copy at +4096
    monkeypatch.setattr(gpu_readback, "_chained_read",
                        lambda layout, j, position, read: (read[0], read[1] + 4096, read[2])
                        if read[0] == 7 else None)
    value = types.SimpleNamespace(size=1024)
    layout = types.SimpleNamespace(early_place=lambda v: (1, 0),
                                   graph=types.SimpleNamespace(values={0: value}))
    r = types.SimpleNamespace(producer="cudnn-conv.1", value=0, size=1024, place=(1, 8192),
                              scratch=())
    return gpu_readback._compare_library(Thunk(first), Thunk(copy), layout, 0, {}, r)


def test_a_slice_with_no_bytes_stays_where_the_first_run_had_it(monkeypatch):
    first = [(1, 0, 1024), (7, 0, 256), (7, 0, 0)]
    copy = [(1, 8192, 1024), (7, 4096, 256), (7, 0, 0)]
    assert _compare(monkeypatch, first, copy) is None


def test_a_misplaced_slice_with_bytes_is_still_found(monkeypatch):
    first = [(1, 0, 1024), (7, 0, 256), (7, 0, 0)]
    copy = [(1, 8192, 1024), (7, 0, 256), (7, 0, 0)]        # the chained read not moved
    assert "has (7, 0, 256) where the plan puts (7, 4096, 256)" in _compare(monkeypatch, first, copy)
