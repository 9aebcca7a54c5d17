"""The envelope of a serialized XLA executable, shared by capture and apply.

jax serializes an executable as a length-prefixed metadata block followed by an
``xla.ExecutableAndOptionsProto`` (the envelope: the compiled executable and the
options it was compiled with).  Capture strips XLA's dump options from it when
it keeps the bytes; apply reads and rewrites it.  Both import this module, so
capture needs nothing of apply.
"""

from __future__ import annotations

from olla_jax import protos

ENVELOPE = "xla.ExecutableAndOptionsProto"


def without_dump_options(raw: bytes) -> bytes:
    """``raw`` without XLA's dump options (``xla_dump_*``) in its compile options.

    XLA dumps a module again each time an executable carrying them is loaded,
    into the folder they name: a capture's folder, long removed, came back
    once per verification and per load.  Anything that does not read as a
    serialized executable comes back unchanged (its loader will say why).
    """
    raw = bytes(raw)
    try:
        n, start = protos.read_varint(raw, 0)
        envelope = protos.parse(ENVELOPE, raw[start + n:])
    except Exception:  # noqa: BLE001 - not an executable: nothing to strip
        return raw
    options = envelope.compile_options
    overrides = options.env_option_overrides
    dumps = [key for key in overrides if key.startswith("xla_dump")]
    debug = options.executable_build_options.debug_options
    set_in_debug = [f.name for f, _ in debug.ListFields() if f.name.startswith("xla_dump")]
    if not dumps and not set_in_debug:
        return raw
    for key in dumps:
        del overrides[key]
    for name in set_in_debug:
        debug.ClearField(name)
    return raw[:start + n] + envelope.SerializeToString(deterministic=True)
