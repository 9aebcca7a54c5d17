"""Decode and encode a serialized XLA:CPU executable for the installed jaxlib.

Where the bytes come from (jax/jaxlib 0.10.2)::

    loaded = compiled.runtime_executable()          # jaxlib LoadedExecutable
    raw = loaded.client.serialize_executable(loaded)

This is what ``jax.experimental.serialize_executable`` pickles, and what
``client.deserialize_executable`` loads back.  Its layout on CPU is::

    varint N | ifrt SerializedXlaExecutableMetadata (N bytes)
             | xla.ExecutableAndOptionsProto {
                 1: serialized_executable = xla.cpu.CompilationResultProto,
                 2: compile_options, 3: pjrt_client_name ("" on CPU) }

The schemas are read from the installed jaxlib (:mod:`olla_jax.protos`).
Anything that does not parse exactly as that layout, or that would not
re-encode to the very same bytes, raises :class:`ExecutableFormatError`: we never guess.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

from olla_jax import protos
from olla_jax.envelope import ENVELOPE, without_dump_options  # noqa: F401 - re-exported
from olla_jax.errors import OllaJaxError

METADATA = "xla.ifrt.SerializedXlaExecutableMetadata"
RESULT = "xla.cpu.CompilationResultProto"
_KERNELS = 2  # CompilationResultProto.ObjFileKind.KERNELS: thunks + object files


class ExecutableFormatError(OllaJaxError, ValueError):
    """The bytes are not a CPU executable in the layout this jaxlib writes."""


# Its old name, kept (``except executable.LayoutError`` still works); not to be
# confused with olla_jax.graph.layout.LayoutError, a layout that does not fit its graph.
LayoutError = ExecutableFormatError


@functools.lru_cache(maxsize=None)
def jaxlib_version() -> str:
    try:
        import jaxlib.version

        return jaxlib.version.__version__
    except Exception:  # noqa: BLE001 - only used in messages
        return "unknown"


def _fail(what: str) -> ExecutableFormatError:
    return ExecutableFormatError(
        f"not a serialized XLA:CPU executable of jaxlib {jaxlib_version()}: {what}")


def serialize_compiled(compiled: Any) -> bytes:
    """Raw executable bytes of a ``jax.stages.Compiled`` (see module doc)."""
    loaded = compiled.runtime_executable()
    return bytes(loaded.client.serialize_executable(loaded))


def strict_parse(name: str, data: bytes, where: str, *, fail=None, library=None,
                 exact: bool = False):
    """Parse ``data`` as message ``name`` (from jaxlib's schemas, or ``library``'s);
    unknown fields or junk are errors, raised as ``fail(message)``.  ``exact``:
    the message must also re-encode to as many bytes as it was read from."""
    from google.protobuf import unknown_fields

    fail = fail or _fail
    try:
        msg = protos.parse(name, data, library)
    except protos.SchemaError as err:
        raise fail(str(err)) from err
    except Exception as err:  # noqa: BLE001 - DecodeError and friends
        raise fail(f"{where} does not parse as {name} ({err})") from err
    if len(unknown_fields.UnknownFieldSet(msg)):
        raise fail(f"{where} has fields unknown to {name}")
    if exact and len(msg.SerializeToString()) != len(data):
        raise fail(f"{where} does not re-encode to its own size: the schema differs from the "
                   "writer's")
    return msg


def read_envelope(raw: bytes, *, fail=None, exact: bool = False) -> tuple[bytes, Any]:
    """The parts every serialized executable starts with, CPU or GPU: the ifrt
    metadata (bytes, checked) and the ExecutableAndOptionsProto."""
    fail = fail or _fail
    if not raw:
        raise fail("empty input")
    try:
        n, start = protos.read_varint(raw, 0)
    except ValueError:
        raise fail("truncated length prefix") from None
    if start + n > len(raw):
        raise fail(f"metadata length {n} runs past the end ({len(raw)} bytes)")
    metadata = raw[start:start + n]
    meta = strict_parse(METADATA, metadata, "the metadata block", fail=fail, exact=exact)
    if meta.runtime_name != "pjrt_ifrt":
        raise fail(f"runtime_name is {meta.runtime_name!r}, expected 'pjrt_ifrt'")
    envelope = strict_parse(ENVELOPE, raw[start + n:], "the executable block", fail=fail,
                            exact=exact)
    return metadata, envelope


def find_entry(module):
    """The entry computation of an HloModuleProto, or None."""
    return next((c for c in module.computations if c.id == module.entry_computation_id), None)


@dataclasses.dataclass(frozen=True)
class DecodedExecutable:
    """A serialized CPU executable split into its parts.

    ``envelope`` is the ExecutableAndOptionsProto with ``serialized_executable``
    cleared; ``result`` is that field parsed.  The protos are mutable: edit a
    fresh :func:`decode` result, never one that others hold.
    """

    metadata: bytes   # ifrt SerializedXlaExecutableMetadata, without its length prefix
    envelope: Any     # xla.ExecutableAndOptionsProto, serialized_executable cleared
    result: Any       # xla.cpu.CompilationResultProto
    # The bytes decoded and a digest of the protos as parsed: encode() gives
    # back exactly these bytes while the protos are untouched (protobuf map
    # order is not reproducible by Python's serializer, so we cannot rebuild them).
    original: bytes = dataclasses.field(default=b"", repr=False, compare=False)
    digest: bytes = dataclasses.field(default=b"", repr=False, compare=False)

    @property
    def metadata_proto(self):
        return protos.parse(METADATA, self.metadata)

    @property
    def hlo_module(self):
        return self.result.hlo_module.hlo_module

    @property
    def buffer_assignment(self):
        return self.result.buffer_assignment

    @property
    def thunk_sequence(self):
        return self.result.thunk_sequence

    def entry_computation(self):
        entry = find_entry(self.hlo_module)
        if entry is None:
            raise _fail(f"entry computation id {self.hlo_module.entry_computation_id} not in the module")
        return entry


def decode(raw: bytes) -> DecodedExecutable:
    """Split ``raw`` into metadata and protos; raise ExecutableFormatError if it is not
    exactly the CPU layout of the installed jaxlib."""
    raw = bytes(raw)
    metadata, envelope = read_envelope(raw)
    if envelope.pjrt_client_name not in ("", "cpu"):
        raise _fail(f"executable is for platform {envelope.pjrt_client_name!r}, not cpu")
    if not envelope.serialized_executable:
        raise _fail("ExecutableAndOptionsProto has no serialized_executable")
    result = strict_parse(RESULT, envelope.serialized_executable, "serialized_executable")
    missing = [f for f in ("hlo_module", "buffer_assignment", "thunk_sequence",
                           "target_machine_options") if not result.HasField(f)]
    if missing:
        raise _fail(f"CompilationResultProto lacks {', '.join(missing)} (not a CPU thunk executable?)")
    if result.obj_files_kind != _KERNELS:
        raise _fail(f"obj_files_kind is {result.obj_files_kind}, expected KERNELS ({_KERNELS})")
    if not result.hlo_module.hlo_module.HasField("schedule"):
        raise _fail("the HLO module carries no schedule")

    envelope.ClearField("serialized_executable")
    fresh = _serialize(metadata, envelope, result)
    # Map entries may come out in another order; nothing else may differ.
    if len(fresh) != len(raw):
        raise _fail("re-encoding the parsed protos does not give the same content back "
                    "(the schema differs from the one that wrote the bytes)")
    return DecodedExecutable(metadata=metadata, envelope=envelope, result=result,
                             original=raw, digest=hashlib.sha256(fresh).digest())


def encode(decoded: DecodedExecutable) -> bytes:
    """The inverse of :func:`decode`: the original bytes while nothing was
    edited, a fresh serialization otherwise."""
    fresh = _serialize(decoded.metadata, decoded.envelope, decoded.result)
    if decoded.original and hashlib.sha256(fresh).digest() == decoded.digest:
        return decoded.original
    return fresh


def _serialize(metadata: bytes, envelope, result) -> bytes:
    full = protos.message_class(ENVELOPE)()
    full.CopyFrom(envelope)
    full.serialized_executable = result.SerializeToString(deterministic=True)
    return protos.write_varint(len(metadata)) + metadata + full.SerializeToString(deterministic=True)

