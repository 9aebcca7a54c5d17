"""dumps.parse_values: its fast line splitting reads what a plain regex reader
reads, on a real dump and on the unusual lines, and refuses the same bad lines."""

import re
import warnings

import pytest

from olla_jax import dumps

_HEAD = re.compile(r"^<(\d+) (\S+?)(\{[\d,]*\})?( \(phi\))? @\d+>$")
_POS = re.compile(r"^  (\S+?)(?: (\{[\d,]*\}))?$")
_USE = re.compile(r"^  (\S+), operand (\d+)(?: (\{[\d,]*\}))?$")
_FROM = re.compile(r"^ from instruction: %(\S+) = ")


def _idx(text):
    text = (text or "{}").strip("{}")
    return tuple(int(x) for x in text.split(",")) if text else ()


def reference(text):
    """Every line through a regex: (id, key, from, phi, positions, uses) per value."""
    out, cur, section = {}, None, None
    for line in text.splitlines()[text.splitlines().index("Used values:") + 1:]:
        if not line.strip():
            continue
        if m := _HEAD.match(line):
            cur = out[int(m[1])] = [int(m[1]), m[2] + (m[3] or "{}"), None, bool(m[4]), [], []]
        elif line in (" positions:", " uses:"):
            section = line.strip(" :")
        elif line.startswith(" from instruction:"):
            cur[2], section = _FROM.match(line)[1], None
        elif section == "positions":
            m = _POS.match(line)
            cur[4].append((m[1], _idx(m[2])))
        elif line.strip() != "(none)":
            m = _USE.match(line)
            cur[5].append((m[1], int(m[2]), _idx(m[3])))
    return {k: (v[0], v[1], v[2], v[3], tuple(v[4]), tuple(v[5])) for k, v in out.items()}


def plain(records):
    return {k: (r.id, r.key, r.defining_instruction, r.is_phi,
                tuple((p.instruction, p.index) for p in r.positions),
                tuple((u.instruction, u.operand, u.index) for u in r.uses))
            for k, r in records.items()}


UNUSUAL = """Used values:
<0 tuple.1{1,0} (phi) @3>
 positions:
  tuple.1 {1,0}
  gte.2
 uses:
  add.3, operand 1 {0}
  mul.4, operand 0
 from instruction: %tuple.1 = (f32[2], (f32[2], f32[2])) tuple(%a, %b)
<12 p.0 @0>
 positions:
  p.0
 uses:
  (none)
 from instruction: %p.0 = f32[] parameter(0)
"""


def test_unusual_lines_read_as_the_regex_reads_them():
    got = plain(dumps.parse_values(UNUSUAL))
    assert got == reference(UNUSUAL)
    assert got[0][1] == "tuple.1{1,0}" and got[0][3] is True
    assert got[0][4] == (("tuple.1", (1, 0)), ("gte.2", ()))
    assert got[0][5] == (("add.3", 1, (0,)), ("mul.4", 0, ()))


@pytest.mark.parametrize("bad, message", [
    ("  tuple.1 {x}", "bad position"),
    ("  add.3, operand one", None),           # read as a position-less line in uses: refused
    ("<7 broken>", "outside a value"),
    (" from instruction: tuple.1 = x", "cannot read"),
])
def test_bad_lines_are_refused(bad, message):
    lines = UNUSUAL.splitlines()
    if bad.startswith("  add.3"):
        lines[6] = bad
    elif bad.startswith("  tuple"):
        lines[3] = bad
    elif bad.startswith("<7"):
        lines = [lines[0], bad, *lines[1:]]
    else:
        lines[8] = bad
    with pytest.raises(dumps.DumpFormatError, match=message or "bad use"):
        dumps.parse_values("\n".join(lines))


def test_a_real_dump_reads_as_the_regex_reads_it():
    from olla_jax.capture.record import capture
    from tests.small_steps import mlp_args, mlp_step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(mlp_step, *mlp_args(0))
    assert plain(dumps.parse_values(cap.values_text)) == reference(cap.values_text)


def test_the_same_bytes_parse_once():
    from tests.small_steps import mlp_args, mlp_step
    from olla_jax.capture.record import capture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = capture(mlp_step, *mlp_args(0)).hlo_proto
    first = dumps.parse_hlo_proto(data)
    assert dumps.parse_hlo_proto(data) is first
    copy = bytes(bytearray(data))   # equal bytes, another object: parsed again
    again = dumps.parse_hlo_proto(copy)
    assert again is not first and again == first

