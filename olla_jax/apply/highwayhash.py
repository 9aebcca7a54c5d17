"""HighwayHash-64 in plain Python (the portable algorithm of google/highwayhash).

Riegeli, the container XLA:GPU serializes its executables into, checks every
block header, chunk header and chunk payload against this hash; writing a
container we must compute it.  About 5 MB/s: enough for executables.
"""

from __future__ import annotations

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
    state = _State(key)
    view = memoryview(data)
    whole = len(view) - (len(view) & 31)
    for i in range(0, whole, 32):
        state.packet(view[i:i + 32])
    if len(view) & 31:
        state.remainder(bytes(view[whole:]))
    return state.finalize64()
