"""Readers for the files XLA writes with ``--xla_dump_to``.

Three of them describe memory: the ``HloProto`` after optimizations (module,
schedule and ``BufferAssignmentProto``), ``*-buffer-assignment-values.txt``
(every value with its positions and uses) and ``*-live-range.txt`` (XLA's
flattened schedule and each value's live range on it).  The text formats are
XLA's debug output; anything that does not parse is refused with the line.
"""

from __future__ import annotations

import dataclasses
import re

from olla_jax import protos
from olla_jax.errors import OllaJaxError


class DumpFormatError(OllaJaxError, ValueError):
    """An XLA dump file does not have the layout this reader knows."""


ShapeIndex = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Position:
    instruction: str
    index: ShapeIndex


@dataclasses.dataclass(frozen=True)
class Use:
    instruction: str
    operand: int
    index: ShapeIndex


@dataclasses.dataclass(frozen=True)
class ValueRecord:
    """One HloValue (a logical buffer) as XLA's dump lists it."""
    id: int
    key: str                       # "name{index}", the key used by the live-range dump
    defining_instruction: str
    is_phi: bool
    positions: tuple[Position, ...]
    uses: tuple[Use, ...]


@dataclasses.dataclass(frozen=True)
class LiveRanges:
    sequence: tuple[str, ...]               # XLA's flattened schedule, by instruction name
    ranges: dict[str, tuple[int, int]]      # value key -> inclusive [start, end] on that sequence


def _index(text: str | None) -> ShapeIndex:
    text = (text or "").strip().strip("{}").strip()
    return tuple(int(x) for x in text.split(",")) if text else ()


_VALUE_HEAD = re.compile(r"^<(\d+) (\S+?)(\{[\d,]*\})?( \(phi\))? @\d+>$")
_POSITION = re.compile(r"^  (\S+?)(?: (\{[\d,]*\}))?$")
_USE = re.compile(r"^  (\S+), operand (\d+)(?: (\{[\d,]*\}))?$")
_FROM = re.compile(r"^ from instruction: %(\S+) = ")


def parse_values(text: str) -> dict[int, ValueRecord]:
    """Parse ``*-buffer-assignment-values.txt``."""
    values: dict[int, ValueRecord] = {}
    lines = text.splitlines()
    try:
        start = lines.index("Used values:") + 1
    except ValueError:
        raise DumpFormatError("no 'Used values:' section in the buffer-assignment values dump") from None
    current: dict | None = None
    section = None

    def flush():
        if current is None:
            return
        if current.get("from") is None:
            raise DumpFormatError(f"value {current['id']} has no 'from instruction' line")
        values[current["id"]] = ValueRecord(
            id=current["id"], key=current["key"], defining_instruction=current["from"],
            is_phi=current["phi"], positions=tuple(current["positions"]), uses=tuple(current["uses"]))

    for lineno, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        head = _VALUE_HEAD.match(line)
        if head:
            flush()
            name, idx = head.group(2), head.group(3) or "{}"
            current = {"id": int(head.group(1)), "key": name + idx, "phi": bool(head.group(4)),
                       "positions": [], "uses": [], "from": None}
            section = None
            continue
        if current is None:
            raise DumpFormatError(f"values dump line {lineno}: {line!r} outside a value")
        if line == " positions:":
            section = "positions"
        elif line == " uses:":
            section = "uses"
        elif line.startswith(" from instruction:"):
            m = _FROM.match(line)
            if not m:
                raise DumpFormatError(f"values dump line {lineno}: cannot read {line[:80]!r}")
            current["from"] = m.group(1)
            section = None
        elif section == "positions":
            m = _POSITION.match(line)
            if not m:
                raise DumpFormatError(f"values dump line {lineno}: bad position {line!r}")
            current["positions"].append(Position(m.group(1), _index(m.group(2))))
        elif section == "uses":
            if line.strip() == "(none)":
                continue
            m = _USE.match(line)
            if not m:
                raise DumpFormatError(f"values dump line {lineno}: bad use {line!r}")
            current["uses"].append(Use(m.group(1), int(m.group(2)), _index(m.group(3))))
        else:
            raise DumpFormatError(f"values dump line {lineno}: unexpected {line!r}")
    flush()
    return values


_SEQ = re.compile(r"^\s+(\d+):(\S+)$")
_RANGE = re.compile(r"^\s+(\S+\{[\d,]*\}):(\d+)-(\d+)$")


def parse_live_ranges(text: str) -> LiveRanges:
    """Parse ``*-live-range.txt`` (``HloLiveRange::ToString``)."""
    sequence: list[str] = []
    ranges: dict[str, tuple[int, int]] = {}
    section = None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped == "InstructionSequence:":
            section = "seq"
        elif stripped == "BufferLiveRange:":
            section = "ranges"
        elif stripped.startswith("Live ranges at") or stripped.startswith("HloLiveRange"):
            section = None if stripped.startswith("Live") else section
        elif section == "seq":
            m = _SEQ.match(line)
            if not m:
                raise DumpFormatError(f"live-range dump line {lineno}: bad sequence entry {line!r}")
            if int(m.group(1)) != len(sequence):
                raise DumpFormatError(f"live-range dump line {lineno}: sequence out of order")
            sequence.append(m.group(2))
        elif section == "ranges" and stripped:
            m = _RANGE.match(line)
            if not m:
                raise DumpFormatError(f"live-range dump line {lineno}: bad range {line!r}")
            ranges[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    if not sequence:
        raise DumpFormatError("live-range dump has no InstructionSequence")
    return LiveRanges(tuple(sequence), ranges)


def parse_hlo_proto(data: bytes):
    """The ``xla.HloProto`` (module + buffer assignment) of a ``*.hlo.pb`` dump."""
    proto = protos.parse("xla.HloProto", data)
    if not proto.HasField("hlo_module") or not proto.HasField("buffer_assignment"):
        raise DumpFormatError("the HloProto dump lacks the module or its buffer assignment")
    return proto
