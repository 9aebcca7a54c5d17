"""Byte counts as text, one way for every message: MiB with two decimals, and
below a MiB the unit that keeps a small step's figures readable (a budget of a
few KiB is not '0.00 MiB')."""

MIB = 2 ** 20
KIB = 2 ** 10


def size_text(n: int) -> str:
    """``n`` bytes as text: ``1,234.50 MiB``, ``12.0 KiB`` or ``512 B`` (zero: ``0.00 MiB``)."""
    if abs(n) >= MIB or n == 0:
        return f"{n / MIB:,.2f} MiB"
    if abs(n) >= KIB:
        return f"{n / KIB:,.1f} KiB"
    return f"{n:,} B"
