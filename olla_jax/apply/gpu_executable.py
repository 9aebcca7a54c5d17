"""Decode and encode a serialized XLA:GPU executable for the installed jax.

Where the bytes come from: ``compiled.runtime_executable()`` is, for a
compile-only GPU target, a ``jaxlib Executable`` whose ``serialize()`` gives
them; on a machine with a GPU, ``client.serialize_executable(loaded)``.
Layout (jaxlib 0.10.2, CUDA plugin)::

    varint N | ifrt SerializedXlaExecutableMetadata (N bytes)
             | xla.ExecutableAndOptionsProto {
                 1: serialized_executable = a Riegeli file (olla_jax.apply.riegeli)
                    holding a split proto: record 0 an xla.SplitProtoManifest,
                    then per manifest entry one record: a field override
                    (asm_text, binary) or a part merged into
                    xla.gpu.GpuExecutableProto,
                 2: compile_options }

The loader (``GpuCompiler::LoadAotCompilationResult``) sees the split form
and builds the executable from ``GpuExecutableProto.thunks`` (each kernel with
its own cubin) and ``buffer_allocations``; the HLO module is kept for
debugging but its schedule is verified.  Those schemas are not in jaxlib:
they are read from the CUDA plugin's library (:func:`olla_jax.protos.gpu_plugin_library`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from olla_jax import protos
from olla_jax.apply import executable, riegeli
from olla_jax.apply.executable import ENVELOPE, jaxlib_version
from olla_jax.errors import OllaJaxError

RESULT = "xla.gpu.GpuExecutableProto"
MANIFEST = "xla.SplitProtoManifest"


class GpuLayoutError(OllaJaxError, ValueError):
    """The bytes are not a GPU executable in the layout this jax writes."""


def _fail(what: str) -> GpuLayoutError:
    return GpuLayoutError(f"not a serialized XLA:GPU executable of jaxlib {jaxlib_version()}: {what}")


def _gpu_class(name: str):
    try:
        return protos.message_class(name, protos.gpu_plugin_library())
    except protos.SchemaError as err:
        raise _fail(str(err)) from err


def _strict(name: str, data: bytes, where: str):
    """A message of XLA:GPU's schemas, parsed strictly (see executable.strict_parse)."""
    try:
        library = protos.gpu_plugin_library()
    except protos.SchemaError as err:
        raise _fail(str(err)) from err
    return executable.strict_parse(name, data, where, fail=_fail, library=library, exact=True)


@dataclasses.dataclass(frozen=True)
class DecodedGpuExecutable:
    """A serialized GPU executable split into its parts.  The protos are
    mutable: edit a fresh :func:`decode` result, never one that others hold."""

    metadata: bytes   # ifrt SerializedXlaExecutableMetadata, without its length prefix
    envelope: Any     # xla.ExecutableAndOptionsProto, serialized_executable cleared
    manifest: Any     # xla.SplitProtoManifest as written by XLA
    overrides: tuple[bytes, ...]  # values of the manifest's field-override records
    result: Any       # xla.gpu.GpuExecutableProto, every part merged
    original: bytes = dataclasses.field(default=b"", repr=False, compare=False)
    digest: bytes = dataclasses.field(default=b"", repr=False, compare=False)

    @property
    def hlo_module(self):
        return self.result.hlo_module_with_config.hlo_module

    @property
    def buffer_assignment(self):
        return self.result.buffer_assignment

    @property
    def allocations(self):
        """The runtime's allocations (``buffer_allocations.values``)."""
        return self.result.buffer_allocations.values

    @property
    def thunks(self):
        return self.result.thunks

    def entry_computation(self):
        entry = executable.find_entry(self.hlo_module)
        if entry is None:
            raise _fail(f"entry computation id {self.hlo_module.entry_computation_id} not in the module")
        return entry


def decode(raw: bytes) -> DecodedGpuExecutable:
    """Split ``raw`` into its protos; GpuLayoutError if it is not exactly the
    layout described in the module doc."""
    raw = bytes(raw)
    metadata, envelope = executable.read_envelope(raw, fail=_fail, exact=True)
    try:
        records = riegeli.read_records(envelope.serialized_executable)
    except riegeli.RiegeliError as err:
        raise _fail(f"serialized_executable is not a Riegeli file ({err}); a plain "
                    "(legacy) GpuExecutableProto is not supported") from err
    if not records:
        raise _fail("the Riegeli file holds no records")
    manifest = _strict(MANIFEST, records[0], "the split-proto manifest")
    if manifest.result_proto_type != RESULT:
        raise _fail(f"the split proto holds {manifest.result_proto_type!r}, not {RESULT}")
    if len(records) != len(manifest.records) + 1:
        raise _fail(f"{len(records) - 1} records for a manifest of {len(manifest.records)}")
    result = _gpu_class(RESULT)()
    overrides = []
    for k, (entry, data) in enumerate(zip(manifest.records, records[1:])):
        kind = entry.WhichOneof("record_type")
        if kind == "proto_merge_record":
            result.MergeFrom(_strict(RESULT, data, f"split record {k + 1}"))
        elif kind == "field_override_record":
            path = entry.field_override_record.field_path
            field = result.DESCRIPTOR.fields_by_number.get(path[0].field_number) if len(path) == 1 else None
            if field is None or field.type not in (field.TYPE_BYTES, field.TYPE_STRING):
                raise _fail(f"split record {k + 1} overrides a field this decoder does not know")
            setattr(result, field.name, data if field.type == field.TYPE_BYTES else data.decode())
            overrides.append(data)
        else:
            raise _fail(f"split record {k + 1} is of unknown kind {kind!r}")
    missing = [f for f in ("hlo_module_with_config", "buffer_assignment", "buffer_allocations")
               if not result.HasField(f)]
    if missing or not len(result.thunks):
        raise _fail(f"GpuExecutableProto lacks {', '.join(missing) or 'thunks'} (not a thunk executable?)")
    if not result.hlo_module_with_config.hlo_module.HasField("schedule"):
        raise _fail("the HLO module carries no schedule")
    envelope.ClearField("serialized_executable")
    decoded = DecodedGpuExecutable(metadata, envelope, manifest, tuple(overrides), result, raw)
    return dataclasses.replace(decoded, digest=hashlib.sha256(_records_digest(decoded)).digest())


def _records(decoded: DecodedGpuExecutable) -> list[bytes]:
    """Split records for ``decoded``: XLA's override records, then one merge
    record with everything else (valid for ReadSplitProto, which merges records
    in turn; the split only exists to keep single records small)."""
    manifest = _gpu_class(MANIFEST)()
    manifest.result_proto_type = RESULT
    rest = _gpu_class(RESULT)()
    rest.CopyFrom(decoded.result)
    values = []
    for entry in decoded.manifest.records:
        if entry.WhichOneof("record_type") != "field_override_record":
            continue
        manifest.records.add().CopyFrom(entry)
        field = rest.DESCRIPTOR.fields_by_number[entry.field_override_record.field_path[0].field_number]
        value = getattr(rest, field.name)
        values.append(value.encode() if isinstance(value, str) else bytes(value))
        rest.ClearField(field.name)
    manifest.records.add().proto_merge_record.SetInParent()
    return [manifest.SerializeToString(deterministic=True), *values,
            rest.SerializeToString(deterministic=True)]


def _records_digest(decoded: DecodedGpuExecutable) -> bytes:
    return b"".join(len(r).to_bytes(8, "little") + r for r in _records(decoded))


def encode(decoded: DecodedGpuExecutable) -> bytes:
    """The original bytes while nothing was edited, else a fresh serialization
    (the records in one uncompressed Riegeli chunk)."""
    flat = _records_digest(decoded)
    if decoded.original and hashlib.sha256(flat).digest() == decoded.digest:
        return decoded.original
    envelope = protos.message_class(ENVELOPE)()
    envelope.CopyFrom(decoded.envelope)
    envelope.serialized_executable = riegeli.write_records(_records(decoded))
    return (protos.write_varint(len(decoded.metadata)) + decoded.metadata
            + envelope.SerializeToString(deterministic=True))

