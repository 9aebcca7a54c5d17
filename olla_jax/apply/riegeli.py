"""Read and write Riegeli record files, the container of XLA:GPU executables.

The format (google/riegeli, ``doc/riegeli_records_file_format.md``): the file
is cut into 64 KiB blocks, each starting with a 24-byte block header (hash,
distance back to the chunk it falls in, distance on to that chunk's end);
chunks follow one another, each a 40-byte header (hash, data size, data hash,
type and record count, decoded size) and its data, padded so that a chunk
never ends inside the first bytes of a block.  The first chunk is the file
signature (type 's').  Every hash is HighwayHash-64 with Riegeli's key, and the
reader XLA links checks each one.

What XLA writes, and all this reads: a signature and simple chunks (type 'r',
records stored as a varint size list plus the concatenated values, each
either uncompressed or Snappy-compressed).  What this writes: one uncompressed
simple chunk, which Riegeli readers accept (compression type 0).
"""

from __future__ import annotations

import dataclasses
import struct

from olla_jax import protos
from olla_jax.apply import snappy
from olla_jax.apply.highwayhash import hash64
from olla_jax.errors import OllaJaxError

BLOCK = 1 << 16
_BLOCK_HEADER = 24
_USABLE = BLOCK - _BLOCK_HEADER
_CHUNK_HEADER = 40
SIGNATURE, METADATA, PADDING, SIMPLE = ord("s"), ord("m"), ord("p"), ord("r")
_NONE, _SNAPPY = 0, ord("s")


class RiegeliError(OllaJaxError, ValueError):
    """Bytes that are not a Riegeli file this module can read."""


@dataclasses.dataclass(frozen=True)
class Chunk:
    begin: int
    chunk_type: int
    num_records: int
    decoded_size: int
    data: bytes  # without the block headers that cut through it


def _varint(data: bytes, i: int) -> tuple[int, int]:
    try:
        return protos.read_varint(data, i)
    except ValueError:
        raise RiegeliError("truncated varint") from None


def _overhead_blocks(pos: int, size: int) -> int:
    return (size + (pos + _USABLE - 1) % BLOCK) // _USABLE


def _chunk_end(begin: int, data_size: int, num_records: int) -> int:
    """Where the chunk that starts at ``begin`` ends, padding included."""
    size = _CHUNK_HEADER + data_size
    end = begin + size + _overhead_blocks(begin, size) * _BLOCK_HEADER
    boundary = begin + num_records
    remaining = BLOCK - 1 - (boundary + BLOCK - 1) % BLOCK
    return max(end, boundary + max(remaining - (_USABLE - 1), 0))


def _read(buf: bytes, pos: int, n: int, chunk_begin: int) -> tuple[bytes, int]:
    """``n`` bytes of chunk content from ``pos``, checking the block headers crossed."""
    out = bytearray()
    while n:
        if pos % BLOCK == 0:
            header = buf[pos:pos + _BLOCK_HEADER]
            if len(header) < _BLOCK_HEADER:
                raise RiegeliError(f"truncated block header at {pos}")
            digest, previous, _ = struct.unpack("<QQQ", header)
            if digest != hash64(header[8:]):
                raise RiegeliError(f"block header hash mismatch at {pos}")
            if previous != pos - chunk_begin:
                raise RiegeliError(f"block header at {pos} points to another chunk")
            pos += _BLOCK_HEADER
        take = min(n, BLOCK - pos % BLOCK)
        piece = buf[pos:pos + take]
        if len(piece) < take:
            raise RiegeliError("the file is truncated")
        out += piece
        pos += take
        n -= take
    return bytes(out), pos


def read_chunks(buf: bytes) -> list[Chunk]:
    """Every chunk of a Riegeli file, all hashes checked."""
    chunks: list[Chunk] = []
    pos = 0
    while pos < len(buf):
        begin = pos
        header, pos = _read(buf, pos, _CHUNK_HEADER, begin)
        digest, data_size, data_hash, type_and_count, decoded = struct.unpack("<QQQQQ", header)
        if digest != hash64(header[8:]):
            raise RiegeliError(f"chunk header hash mismatch at {begin}")
        data, pos = _read(buf, pos, data_size, begin)
        if data_hash != hash64(data):
            raise RiegeliError(f"chunk data hash mismatch at {begin}")
        chunk = Chunk(begin, type_and_count & 0xFF, type_and_count >> 8, decoded, data)
        if not chunks and (begin != 0 or chunk.chunk_type != SIGNATURE):
            raise RiegeliError("no Riegeli file signature at the start")
        chunks.append(chunk)
        pos = _chunk_end(begin, data_size, chunk.num_records)
        if pos > len(buf):
            raise RiegeliError("the last chunk is truncated")
    if not chunks:
        raise RiegeliError("empty file")
    return chunks


def _decompress(kind: int, blob: bytes) -> bytes:
    if kind == _NONE:
        return blob
    if kind != _SNAPPY:
        raise RiegeliError(f"compression {chr(kind)!r} is not supported (only none and snappy)")
    size, i = _varint(blob, 0)
    try:
        out = snappy.decompress(blob[i:])
    except snappy.SnappyError as err:
        raise RiegeliError(f"bad snappy data: {err}") from err
    if len(out) != size:
        raise RiegeliError("decompressed size does not match")
    return out


def _simple_records(chunk: Chunk) -> list[bytes]:
    data = chunk.data
    if not data:
        raise RiegeliError(f"empty simple chunk at {chunk.begin}")
    kind = data[0]
    n, i = _varint(data, 1)
    sizes_blob = _decompress(kind, data[i:i + n])
    values = _decompress(kind, data[i + n:])
    sizes, j = [], 0
    for _ in range(chunk.num_records):
        size, j = _varint(sizes_blob, j)
        sizes.append(size)
    if j != len(sizes_blob) or sum(sizes) != len(values) or len(values) != chunk.decoded_size:
        raise RiegeliError(f"record sizes of the chunk at {chunk.begin} are inconsistent")
    out, k = [], 0
    for size in sizes:
        out.append(values[k:k + size])
        k += size
    return out


def read_records(buf: bytes) -> list[bytes]:
    """All records of a Riegeli file, in order."""
    records: list[bytes] = []
    for chunk in read_chunks(bytes(buf)):
        if chunk.chunk_type in (SIGNATURE, METADATA, PADDING):
            continue
        if chunk.chunk_type != SIMPLE:
            raise RiegeliError(f"chunk type {chr(chunk.chunk_type)!r} at {chunk.begin} is not "
                               "supported (only simple chunks)")
        records += _simple_records(chunk)
    return records


def _emit_chunk(out: bytearray, chunk_type: int, num_records: int, decoded: int,
                data: bytes) -> None:
    begin = len(out)
    rest = struct.pack("<QQQQ", len(data), hash64(data), chunk_type | (num_records << 8), decoded)
    content = struct.pack("<Q", hash64(rest)) + rest + data
    end = _chunk_end(begin, len(data), num_records)
    i = 0
    while i < len(content) or len(out) < end:
        pos = len(out)
        if pos % BLOCK == 0:
            header = struct.pack("<QQ", pos - begin, end - pos)
            out += struct.pack("<Q", hash64(header)) + header
            continue
        room = BLOCK - pos % BLOCK
        if i < len(content):
            take = min(room, len(content) - i)
            out += content[i:i + take]
            i += take
        else:
            out += bytes(min(room, end - pos))


def write_records(records: list[bytes]) -> bytes:
    """A Riegeli file holding ``records`` in one uncompressed simple chunk."""
    sizes = b"".join(protos.write_varint(len(r)) for r in records)
    data = bytes([_NONE]) + protos.write_varint(len(sizes)) + sizes + b"".join(records)
    out = bytearray()
    _emit_chunk(out, SIGNATURE, 0, 0, b"")
    _emit_chunk(out, SIMPLE, len(records), sum(len(r) for r in records), data)
    return bytes(out)
