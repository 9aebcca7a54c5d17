"""Protobuf message classes read from the installed jaxlib.

jaxlib's shared library embeds the serialized ``FileDescriptorProto`` of every
``.proto`` file it was built with.  Building message classes from those keeps
the decoder in step with whatever jaxlib the user has, with no schema copied
into this repository that could drift.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from olla_jax.errors import OllaJaxError

# name tag (field 1, length-delimited), a one-byte length, a *.proto path, then
# the package tag (field 2).  Every embedded FileDescriptorProto starts so.
_FILE_START = re.compile(rb"\x0a([\x01-\x7f])([A-Za-z0-9_/.\-]+\.proto)\x12")
# FileDescriptorProto field number -> wire type.
_FILE_FIELDS = {1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2, 10: 0,
                11: 0, 12: 2, 13: 2, 14: 0, 15: 2}


class SchemaError(OllaJaxError, RuntimeError):
    """The installed jaxlib does not carry a schema this module needs."""


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def write_varint(value: int) -> bytes:
    """The base-128 varint of a non-negative int (protobuf's, Riegeli's, Snappy's)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _extent(data: bytes, start: int) -> int:
    """End of the longest run of valid FileDescriptorProto fields from start."""
    i = end = start
    try:
        while i < len(data):
            tag, j = read_varint(data, i)
            wire = _FILE_FIELDS.get(tag >> 3)
            if wire is None or wire != tag & 7:
                break
            length, j = read_varint(data, j)
            if wire == 2:
                j += length
            if j > len(data):
                break
            i = end = j
    except ValueError:
        pass
    return end


def jaxlib_library() -> Path:
    import jaxlib

    root = Path(jaxlib.__file__).parent
    candidates = sorted(root.glob("libjax_common*.so*")) or sorted(
        root.glob("*.so"), key=lambda p: p.stat().st_size, reverse=True)
    if not candidates:
        raise SchemaError(f"no shared library found in {root}")
    return candidates[0]


def scan_file_descriptors(data: bytes) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """All FileDescriptorProtos serialized inside a binary, by file name."""
    found: dict[str, tuple[int, descriptor_pb2.FileDescriptorProto]] = {}
    for match in _FILE_START.finditer(data):
        if match.group(1)[0] != len(match.group(2)):
            continue
        blob = data[match.start():_extent(data, match.start())]
        proto = descriptor_pb2.FileDescriptorProto()
        try:
            proto.ParseFromString(blob)
        except Exception:  # noqa: BLE001 - a false match, skip it
            continue
        if not proto.name or (proto.name in found and found[proto.name][0] >= len(blob)):
            continue
        found[proto.name] = (len(blob), proto)
    return {name: proto for name, (_, proto) in found.items()}


def gpu_plugin_library() -> Path:
    """The installed CUDA PJRT plugin's shared library (it embeds XLA:GPU's
    schemas, e.g. ``xla.gpu.GpuExecutableProto``, which jaxlib lacks)."""
    import importlib.util

    for module in ("jax_plugins.xla_cuda13", "jax_plugins.xla_cuda12"):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(folder).glob("*.so")):
                if "plugin" in path.name:
                    return path
    raise SchemaError("no CUDA PJRT plugin is installed (pip install 'olla_jax[gpu]')")


@functools.lru_cache(maxsize=None)
def _pool(library: Path | None = None) -> descriptor_pool.DescriptorPool:
    files = scan_file_descriptors((library or jaxlib_library()).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str, stack: tuple[str, ...] = ()) -> bool:
        if name in added:
            return True
        proto = files.get(name)
        if proto is None:
            # Well-known types (any.proto, duration.proto...) come with protobuf.
            try:
                proto = descriptor_pb2.FileDescriptorProto()
                descriptor_pool.Default().FindFileByName(name).CopyToProto(proto)
            except KeyError:
                _import_well_known(name)
                try:
                    descriptor_pool.Default().FindFileByName(name).CopyToProto(proto)
                except KeyError:
                    return False
        if name in stack:
            return False
        if not all(add(dep, stack + (name,)) for dep in proto.dependency):
            return False
        try:
            pool.Add(proto)
        except Exception:  # noqa: BLE001 - a clash leaves the file unusable
            return False
        added.add(name)
        return True

    for name in sorted(files):
        add(name)
    return pool


def _import_well_known(name: str) -> None:
    module = "google.protobuf." + Path(name).stem + "_pb2"
    try:
        __import__(module)
    except ImportError:
        pass


@functools.lru_cache(maxsize=None)
def message_class(full_name: str, library: Path | None = None):
    """The Python class of a message, e.g. ``xla.BufferAssignmentProto``, from
    jaxlib's schemas or, given ``library``, from that binary's (messages of
    two libraries never mix: each has its own pool)."""
    try:
        descriptor = _pool(library).FindMessageTypeByName(full_name)
    except KeyError as err:
        raise SchemaError(
            f"{library or jaxlib_library()} carries no schema for {full_name}; "
            "this jaxlib version is not supported by olla_jax") from err
    return message_factory.GetMessageClass(descriptor)


class DecodeError(OllaJaxError, ValueError):
    """Bytes that do not parse as the message they should be."""


def parse(full_name: str, data: bytes, library: Path | None = None):
    msg = message_class(full_name, library)()
    try:
        msg.ParseFromString(data)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise DecodeError(f"not a valid {full_name}: {err}") from err
    return msg
