"""decode/encode of serialized CPU executables."""

from __future__ import annotations

import pytest

from olla_jax import protos
from olla_jax.apply import executable
from olla_jax.apply.executable import LayoutError


@pytest.mark.parametrize("name", ["mlp", "scan", "dus", "donate", "zoo"])
def test_decode_encode_identity(programs, name):
    raw = programs[name].raw
    decoded = executable.decode(raw)
    assert executable.encode(decoded) == raw
    assert decoded.thunk_sequence.thunks, "a CPU executable has thunks"
    assert decoded.entry_computation().id == decoded.hlo_module.entry_computation_id
    assert decoded.metadata_proto.runtime_name == "pjrt_ifrt"


def test_edit_is_encoded(programs):
    raw = programs["mlp"].raw
    decoded = executable.decode(raw)
    temp = max(decoded.buffer_assignment.buffer_allocations, key=lambda a: a.size)
    temp.size += 64
    out = executable.encode(decoded)
    assert out != raw
    again = executable.decode(out)
    assert again.buffer_assignment.buffer_allocations[temp.index].size == temp.size
    assert executable.encode(again) == out


def _split(raw: bytes):
    n, start = protos.read_varint(raw, 0)
    return raw[:start + n], protos.parse(executable.ENVELOPE, raw[start + n:])


def _expect_layout_error(data: bytes, needle: str):
    with pytest.raises(LayoutError) as info:
        executable.decode(data)
    message = str(info.value)
    assert executable.jaxlib_version() in message
    assert needle in message, message


def test_layout_errors(programs):
    raw = programs["mlp"].raw
    head, envelope = _split(raw)
    _expect_layout_error(b"", "empty")
    _expect_layout_error(raw[:len(raw) // 2], "")
    _expect_layout_error(bytes(range(256)) * 4, "")
    # Trailing bytes that still parse (a repeated field 3) or do not.
    _expect_layout_error(raw + b"\x1a\x00", "same content")
    _expect_layout_error(raw + b"\xff\xff\xff", "")
    # Another platform.
    envelope.pjrt_client_name = "cuda"
    _expect_layout_error(head + envelope.SerializeToString(), "'cuda'")


def test_missing_field_is_refused(programs):
    raw = programs["mlp"].raw
    head, envelope = _split(raw)
    result = protos.parse(executable.RESULT, envelope.serialized_executable)
    result.ClearField("thunk_sequence")
    envelope.serialized_executable = result.SerializeToString()
    _expect_layout_error(head + envelope.SerializeToString(), "thunk_sequence")
    envelope.serialized_executable = b""
    _expect_layout_error(head + envelope.SerializeToString(), "serialized_executable")


def test_metadata_length_past_end():
    _expect_layout_error(b"\xff\x7f" + b"\x00" * 10, "runs past the end")
