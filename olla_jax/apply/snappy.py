"""Decompression of raw Snappy blocks (the format XLA's Riegeli chunks use).

Only reading is needed: the chunks we write are stored uncompressed.
"""

from __future__ import annotations

from olla_jax import protos
from olla_jax.errors import OllaJaxError


class SnappyError(OllaJaxError, ValueError):
    """Bytes that are not a valid Snappy block."""


def decompress(data: bytes) -> bytes:
    """The bytes a raw Snappy block (length varint, then elements) stands for."""
    try:
        size, i = protos.read_varint(data, 0)
    except ValueError:
        raise SnappyError("truncated length") from None
    out = bytearray()
    while i < len(data):
        tag = data[i]
        i += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[i:i + extra], "little")
                i += extra
            length += 1
            if i + length > len(data):
                raise SnappyError("literal runs past the end")
            out += data[i:i + length]
            i += length
            continue
        if kind == 1:
            length, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[i]
            i += 1
        elif kind == 2:
            length, offset = (tag >> 2) + 1, int.from_bytes(data[i:i + 2], "little")
            i += 2
        else:
            length, offset = (tag >> 2) + 1, int.from_bytes(data[i:i + 4], "little")
            i += 4
        if offset == 0 or offset > len(out):
            raise SnappyError(f"copy offset {offset} outside the {len(out)} bytes so far")
        start = len(out) - offset
        if offset >= length:
            out += out[start:start + length]
        else:  # the copy overlaps what it writes: a repeating pattern
            for k in range(length):
                out.append(out[start + k])
    if len(out) != size:
        raise SnappyError(f"decoded {len(out)} bytes, the header says {size}")
    return bytes(out)
