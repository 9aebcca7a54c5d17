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


_INDEX_CHARS = frozenset("0123456789,")


def _is_index(text: str) -> bool:
    """``{i,j,...}`` (a shape index as the values dump writes it)."""
    return text[:1] == "{" and text[-1:] == "}" and _INDEX_CHARS.issuperset(text[1:-1])


def _value_head(line: str) -> tuple[int, str, bool] | None:
    """(id, key, is_phi) of a value's first line ``<id name{index} (phi) @n>``, or None."""
    parts = line[1:-1].split(" ") if line[-1:] == ">" else ()
    if len(parts) in (3, 4) and parts[0].isdigit() and parts[-1][:1] == "@" \
            and parts[-1][1:].isdigit() and (len(parts) == 3 or parts[2] == "(phi)"):
        name, brace, index = parts[1].partition("{")
        if name and (not brace or _is_index(brace + index)):
            return int(parts[0]), parts[1] if brace else name + "{}", len(parts) == 4
    head = _VALUE_HEAD.match(line)   # the regex decides the unusual ones
    if head is None:
        return None
    return int(head.group(1)), head.group(2) + (head.group(3) or "{}"), bool(head.group(4))


def parse_values(text: str) -> dict[int, ValueRecord]:
    """Parse ``*-buffer-assignment-values.txt``.

    Lines are told apart by their first characters and the common position and
    use lines are split without a regex (a 20k-instruction step has ~200k
    lines); anything unusual goes through the regexes, which say what is wrong."""
    values: dict[int, ValueRecord] = {}
    lines = text.splitlines()
    try:
        start = lines.index("Used values:") + 1
    except ValueError:
        raise DumpFormatError("no 'Used values:' section in the buffer-assignment values dump") from None
    vid = key = phi = frm = None
    positions: list[Position] = []
    uses: list[Use] = []
    section = None
    empty: ShapeIndex = ()

    def flush():
        if vid is None:
            return
        if frm is None:
            raise DumpFormatError(f"value {vid} has no 'from instruction' line")
        values[vid] = ValueRecord(id=vid, key=key, defining_instruction=frm, is_phi=phi,
                                  positions=tuple(positions), uses=tuple(uses))

    for lineno, line in enumerate(lines[start:], start + 1):
        if line[:2] == "  " and vid is not None:   # a position or a use (most lines)
            rest = line[2:]
            if section == "positions":
                name, sep, index = rest.partition(" ")
                if name and (not sep or _is_index(index)):
                    positions.append(Position(name, _index(index) if sep else empty))
                    continue
                m = _POSITION.match(line)
                if not m:
                    raise DumpFormatError(f"values dump line {lineno}: bad position {line!r}")
                positions.append(Position(m.group(1), _index(m.group(2))))
                continue
            if section == "uses":
                name, sep, tail = rest.partition(", operand ")
                if sep and tail.isdigit() and " " not in name and name:
                    uses.append(Use(name, int(tail), empty))
                    continue
                if rest.strip() == "(none)":
                    continue
                m = _USE.match(line)
                if not m:
                    raise DumpFormatError(f"values dump line {lineno}: bad use {line!r}")
                uses.append(Use(m.group(1), int(m.group(2)), _index(m.group(3))))
                continue
        if not line.strip():
            continue
        head = _value_head(line) if line[:1] == "<" else None
        if head:
            flush()
            vid, key, phi = head
            positions, uses, frm, section = [], [], None, None
            continue
        if vid is None:
            raise DumpFormatError(f"values dump line {lineno}: {line!r} outside a value")
        if line == " positions:":
            section = "positions"
        elif line == " uses:":
            section = "uses"
        elif line.startswith(" from instruction:"):
            name, sep, _ = line[len(" from instruction: %"):].partition(" = ")
            if line.startswith(" from instruction: %") and sep and name and " " not in name:
                frm = name
            else:
                m = _FROM.match(line)
                if not m:
                    raise DumpFormatError(f"values dump line {lineno}: cannot read {line[:80]!r}")
                frm = m.group(1)
            section = None
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


_last_parsed: list = []   # [(data, proto)]: the last dump parsed, by identity


def parse_hlo_proto(data: bytes):
    """The ``xla.HloProto`` (module + buffer assignment) of a ``*.hlo.pb`` dump.

    The same bytes object parsed again (the graph build, then plan()'s collective
    analysis and the checker) returns the same message: parsing is about a second
    per 20k instructions.  Callers only read it."""
    if _last_parsed and _last_parsed[0][0] is data:
        return _last_parsed[0][1]
    proto = protos.parse("xla.HloProto", data)
    if not proto.HasField("hlo_module") or not proto.HasField("buffer_assignment"):
        raise DumpFormatError("the HloProto dump lacks the module or its buffer assignment")
    _last_parsed[:] = [(data, proto)]
    return proto
