"""HighwayHash-64 in plain Python (the portable algorithm of google/highwayhash).

Riegeli, the container XLA:GPU serializes its executables into, checks every
block header, chunk header and chunk payload against this hash; writing a
container we must compute it.  About 1.3 MB/s (the packet loop unrolled over
the four lanes and the zipper merges); a chunk hashed once is remembered by its bytes (the rewrite
decodes the same executable per plan, writes a chunk and reads it back).
"""

from __future__ import annotations

import struct
from collections import OrderedDict

_M64 = (1 << 64) - 1
_M32 = 0xFFFFFFFF
_INIT0 = (0xDBE6D5D5FE4CCE2F, 0xA4093822299F31D0, 0x13198A2E03707344, 0x243F6A8885A308D3)
_INIT1 = (0x3BD39E10CB0EF593, 0xC0ACF169B5F18A8C, 0xBE5466CF34E90C6C, 0x452821E638D01377)
# Riegeli's key: "Riegeli/", "records\n" as little-endian words, twice (chunk_encoding/hash.cc).
RIEGELI_KEY = (0x2F696C6567656952, 0x0A7364726F636572, 0x2F696C6567656952, 0x0A7364726F636572)


def _zipper(v1: int, v0: int) -> tuple[int, int]:
    add0 = ((((v0 & 0xFF000000) | (v1 & 0xFF00000000)) >> 24)
            | (((v0 & 0xFF0000000000) | (v1 & 0xFF000000000000)) >> 16)
            | (v0 & 0xFF0000) | ((v0 & 0xFF00) << 32)
            | ((v1 & 0xFF00000000000000) >> 8) | ((v0 << 56) & _M64))
    add1 = ((((v1 & 0xFF000000) | (v0 & 0xFF00000000)) >> 24)
            | (v1 & 0xFF0000) | ((v1 & 0xFF0000000000) >> 16)
            | ((v1 & 0xFF00) << 24) | ((v0 & 0xFF000000000000) >> 8)
            | ((v1 & 0xFF) << 48) | (v0 & 0xFF00000000000000))
    return add1 & _M64, add0 & _M64


def _swap32(x: int) -> int:
    return ((x >> 32) | (x << 32)) & _M64


class _State:
    def __init__(self, key: tuple[int, int, int, int]):
        self.mul0 = list(_INIT0)
        self.mul1 = list(_INIT1)
        self.v0 = [self.mul0[i] ^ key[i] for i in range(4)]
        self.v1 = [self.mul1[i] ^ _swap32(key[i]) for i in range(4)]

    def update(self, lanes) -> None:
        v0, v1, mul0, mul1 = self.v0, self.v1, self.mul0, self.mul1
        for i in range(4):
            v1[i] = (v1[i] + mul0[i] + lanes[i]) & _M64
            mul0[i] ^= ((v1[i] & _M32) * (v0[i] >> 32)) & _M64
            v0[i] = (v0[i] + mul1[i]) & _M64
            mul1[i] ^= ((v0[i] & _M32) * (v1[i] >> 32)) & _M64
        for a, b, src, dst in ((1, 0, v1, v0), (3, 2, v1, v0), (1, 0, v0, v1), (3, 2, v0, v1)):
            add1, add0 = _zipper(src[a], src[b])
            dst[a] = (dst[a] + add1) & _M64
            dst[b] = (dst[b] + add0) & _M64

    def packet(self, data) -> None:
        self.update([int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(4)])

    def remainder(self, data: bytes) -> None:
        n = len(data)
        n4 = n & 3
        whole = n & ~3
        for i in range(4):
            self.v0[i] = (self.v0[i] + ((n << 32) + n)) & _M64
        for i in range(4):  # rotate each 32-bit half of v1 left by n
            lo, hi = self.v1[i] & _M32, self.v1[i] >> 32
            lo = ((lo << n) | (lo >> (32 - n))) & _M32
            hi = ((hi << n) | (hi >> (32 - n))) & _M32
            self.v1[i] = lo | (hi << 32)
        packet = bytearray(32)
        packet[:whole] = data[:whole]
        if n & 16:
            for i in range(4):
                packet[28 + i] = data[whole + i + n4 - 4]
        elif n4:
            packet[16] = data[whole]
            packet[17] = data[whole + (n4 >> 1)]
            packet[18] = data[whole + n4 - 1]
        self.packet(bytes(packet))

    def finalize64(self) -> int:
        for _ in range(4):
            v = self.v0
            self.update([_swap32(v[2]), _swap32(v[3]), _swap32(v[0]), _swap32(v[1])])
        return (self.v0[0] + self.v1[0] + self.mul0[0] + self.mul1[0]) & _M64


def hash64(data: bytes, key: tuple[int, int, int, int] = RIEGELI_KEY) -> int:
    """HighwayHash-64 of ``data`` under ``key`` (four 64-bit words)."""
    data = bytes(data)
    found = _remembered.get((data, key))
    if found is not None:
        _remembered.move_to_end((data, key))
        return found
    state = _State(key)
    whole = len(data) - (len(data) & 31)
    _packets(state, memoryview(data)[:whole])
    if len(data) & 31:
        state.remainder(data[whole:])
    value = state.finalize64()
    _remember((data, key), value)
    return value


# Hashes of recent inputs by their bytes, up to this many bytes in all.
_REMEMBERED_BYTES = 256 << 20
_remembered: OrderedDict[tuple[bytes, tuple[int, ...]], int] = OrderedDict()
_remembered_size = [0]


def _remember(entry: tuple[bytes, tuple[int, ...]], value: int) -> None:
    if len(entry[0]) < 4096:
        return          # (small ones are quick to hash again)
    _remembered[entry] = value
    _remembered_size[0] += len(entry[0])
    while _remembered_size[0] > _REMEMBERED_BYTES:
        old, _ = _remembered.popitem(last=False)
        _remembered_size[0] -= len(old[0])


def _packets(state: _State, data) -> None:
    """``state`` updated with every 32-byte packet of ``data`` (a multiple of
    32 bytes): ``_State.update`` with the lanes and the zipper merges unrolled."""
    a0, a1, a2, a3 = state.v0
    b0, b1, b2, b3 = state.v1
    m0, m1, m2, m3 = state.mul0
    n0, n1, n2, n3 = state.mul1
    M64, M32 = _M64, _M32
    for l0, l1, l2, l3 in struct.iter_unpack("<4Q", data):
        b0 = (b0 + m0 + l0) & M64
        m0 ^= ((b0 & M32) * (a0 >> 32)) & M64
        a0 = (a0 + n0) & M64
        n0 ^= ((a0 & M32) * (b0 >> 32)) & M64
        b1 = (b1 + m1 + l1) & M64
        m1 ^= ((b1 & M32) * (a1 >> 32)) & M64
        a1 = (a1 + n1) & M64
        n1 ^= ((a1 & M32) * (b1 >> 32)) & M64
        b2 = (b2 + m2 + l2) & M64
        m2 ^= ((b2 & M32) * (a2 >> 32)) & M64
        a2 = (a2 + n2) & M64
        n2 ^= ((a2 & M32) * (b2 >> 32)) & M64
        b3 = (b3 + m3 + l3) & M64
        m3 ^= ((b3 & M32) * (a3 >> 32)) & M64
        a3 = (a3 + n3) & M64
        n3 ^= ((a3 & M32) * (b3 >> 32)) & M64
        # the zipper merges (``_zipper``, inlined): v1 lanes (1, 0), (3, 2) into v0,
        # then v0's into v1
        a0 = (a0 + (((((b0 & 0xFF000000) | (b1 & 0xFF00000000)) >> 24)
                     | (((b0 & 0xFF0000000000) | (b1 & 0xFF000000000000)) >> 16)
                     | (b0 & 0xFF0000) | ((b0 & 0xFF00) << 32)
                     | ((b1 & 0xFF00000000000000) >> 8) | ((b0 << 56) & M64)))) & M64
        a1 = (a1 + (((((b1 & 0xFF000000) | (b0 & 0xFF00000000)) >> 24)
                     | (b1 & 0xFF0000) | ((b1 & 0xFF0000000000) >> 16)
                     | ((b1 & 0xFF00) << 24) | ((b0 & 0xFF000000000000) >> 8)
                     | ((b1 & 0xFF) << 48) | (b0 & 0xFF00000000000000)) & M64)) & M64
        a2 = (a2 + (((((b2 & 0xFF000000) | (b3 & 0xFF00000000)) >> 24)
                     | (((b2 & 0xFF0000000000) | (b3 & 0xFF000000000000)) >> 16)
                     | (b2 & 0xFF0000) | ((b2 & 0xFF00) << 32)
                     | ((b3 & 0xFF00000000000000) >> 8) | ((b2 << 56) & M64)))) & M64
        a3 = (a3 + (((((b3 & 0xFF000000) | (b2 & 0xFF00000000)) >> 24)
                     | (b3 & 0xFF0000) | ((b3 & 0xFF0000000000) >> 16)
                     | ((b3 & 0xFF00) << 24) | ((b2 & 0xFF000000000000) >> 8)
                     | ((b3 & 0xFF) << 48) | (b2 & 0xFF00000000000000)) & M64)) & M64
        b0 = (b0 + (((((a0 & 0xFF000000) | (a1 & 0xFF00000000)) >> 24)
                     | (((a0 & 0xFF0000000000) | (a1 & 0xFF000000000000)) >> 16)
                     | (a0 & 0xFF0000) | ((a0 & 0xFF00) << 32)
                     | ((a1 & 0xFF00000000000000) >> 8) | ((a0 << 56) & M64)))) & M64
        b1 = (b1 + (((((a1 & 0xFF000000) | (a0 & 0xFF00000000)) >> 24)
                     | (a1 & 0xFF0000) | ((a1 & 0xFF0000000000) >> 16)
                     | ((a1 & 0xFF00) << 24) | ((a0 & 0xFF000000000000) >> 8)
                     | ((a1 & 0xFF) << 48) | (a0 & 0xFF00000000000000)) & M64)) & M64
        b2 = (b2 + (((((a2 & 0xFF000000) | (a3 & 0xFF00000000)) >> 24)
                     | (((a2 & 0xFF0000000000) | (a3 & 0xFF000000000000)) >> 16)
                     | (a2 & 0xFF0000) | ((a2 & 0xFF00) << 32)
                     | ((a3 & 0xFF00000000000000) >> 8) | ((a2 << 56) & M64)))) & M64
        b3 = (b3 + (((((a3 & 0xFF000000) | (a2 & 0xFF00000000)) >> 24)
                     | (a3 & 0xFF0000) | ((a3 & 0xFF0000000000) >> 16)
                     | ((a3 & 0xFF00) << 24) | ((a2 & 0xFF000000000000) >> 8)
                     | ((a3 & 0xFF) << 48) | (a2 & 0xFF00000000000000)) & M64)) & M64
    state.v0[:] = [a0, a1, a2, a3]
    state.v1[:] = [b0, b1, b2, b3]
    state.mul0[:] = [m0, m1, m2, m3]
    state.mul1[:] = [n0, n1, n2, n3]
