"""Byte counts as text, one way for every message: MiB with two decimals, and
below a MiB the unit that keeps a small step's figures readable (a budget of a
few KiB is not '0.00 MiB'), and sizes read back from the user: one parser for the
Python API and the command line alike."""

import math
import numbers
import re

MIB = 2 ** 20
KIB = 2 ** 10


def size_text(n: int) -> str:
    """``n`` bytes as text: ``1,234.50 MiB``, ``12.0 KiB`` or ``512 B`` (zero: ``0.00 MiB``)."""
    if abs(n) >= MIB or n == 0:
        return f"{n / MIB:,.2f} MiB"
    if abs(n) >= KIB:
        return f"{n / KIB:,.1f} KiB"
    return f"{n:,} B"


_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*")
_SHARE = re.compile(r"0?\.[0-9]+")      # '0.75': meant as a share of XLA's memory


def parse_size(value: int | float | str, name: str = "memory_budget") -> int:
    """``value`` as a positive number of bytes: a whole number (``2 << 30``,
    ``2e9``) or a string such as ``'123456'``, ``'200MiB'`` or ``'1.5 GB'``
    (a fraction of a byte from a unit is dropped).  Anything else (a bool, NaN,
    infinity, zero, a negative or fractional number, an unknown unit) raises
    ``ValueError`` naming ``name`` and the forms it takes."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        unit = match and _BYTE_UNITS.get(match.group(2).lower())
        size = float(match.group(1)) * unit if unit else 0.0
        if math.isfinite(size) and size >= 1:
            return int(size)
    elif (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and value >= 1 and value == int(value)):
        return int(value)
    share = ""
    text = value.strip() if isinstance(value, str) else ""
    if (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < 1) \
            or text.endswith("%") or (text and _SHARE.fullmatch(text)):
        # 0.75 or "75%": a share of XLA's memory was meant, which no size option takes
        share = ("; a share such as 0.75 is not a size: plan once without one and pass e.g. "
                 "int(0.75 * plan.xla_total_bytes) (XLA's temp + arguments + outputs - aliased)")
    raise ValueError(f"{name}={value!r}: give a positive size in bytes, a whole number of bytes "
                     f"(e.g. 123456789, 2e9 or 2 << 30) or a string such as '200MiB' or "
                     f"'1.5GiB' (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB){share}")
