"""Screen `model.weights.h5` before Keras opens it.

HDF5 can point outside itself (external and soft links, datasets stored in
other files, virtual datasets mapping other files) and can declare datasets far
larger than the bytes it holds (chunked storage that is mostly fill value), so
reading a weight could open `/etc/passwd` or allocate terabytes. `model.save()`
never writes any of that: every weight is a hard-linked, contiguous,
unfiltered dataset of a plain numeric type, stored in full inside the file.
This module checks exactly that from the file's metadata alone; it never reads
a dataset's contents and never follows a link.
"""

from __future__ import annotations

import io
import itertools
import math
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import h5py
import numpy as np

from gradhealth_server.errors import InvalidCheckpoint

WEIGHTS_MEMBER = "model.weights.h5"
# Keras writes one group per layer and a few datasets each; even a very deep
# model has tens of thousands. Walking millions of tiny objects is a CPU bomb.
MAX_OBJECTS = 200_000
# Keras stores bfloat16 (and float8) as HDF5 opaque types of this many bytes.
OPAQUE_ITEMSIZES = (1, 2)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
# Attributes: Keras writes a scalar string "dtype" on bfloat16 datasets and a few
# small metadata values on groups. h5py materializes a variable-length string
# attribute in full when it is read, and an attribute's elements may all point at
# one large heap object, so their shape and the file's bytes outside datasets
# (where heap objects live) are bounded from metadata.
MAX_ATTRIBUTES_PER_OBJECT = 16
MAX_ATTRIBUTE_ELEMENTS = 64
MAX_ATTRIBUTE_BYTES = 64 * 1024
# Metadata a Keras weights file needs besides its datasets: object headers, the
# B-trees and heaps of group names. Measured: about 1.5 KiB per object.
METADATA_BYTES_PER_OBJECT = 8 * 1024
METADATA_BYTES_BASE = 1024 * 1024


@dataclass(frozen=True)
class WeightsSummary:
    """What the weights file holds, from its metadata."""

    datasets: int
    elements: int  # values over every dataset: weights, optimizer slots, counters
    bytes: int


def screen_weights(path: str | Path) -> WeightsSummary:
    """Check the archive's `model.weights.h5` is a plain Keras weights file."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive, _member(path, archive) as (handle, size):
            return _screen(handle, size)
    except InvalidCheckpoint:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        # h5py raises OSError/ValueError/KeyError/RuntimeError for malformed files.
        raise InvalidCheckpoint(f"{WEIGHTS_MEMBER} is not a readable HDF5 file: {exc}") from exc


@contextmanager
def _member(path: Path, archive: zipfile.ZipFile) -> Iterator[tuple[BinaryIO, int]]:
    """The member's bytes as a seekable file, exactly as Keras will read them.

    Keras writes members uncompressed, and zipfile seeks backwards in a member by
    re-reading it from the start: HDF5's scattered metadata reads would make that
    quadratic. A stored member is read in place; a compressed one (re-zipped by
    hand) is inflated once into an unnamed temporary file next to the checkpoint.
    """
    info = archive.getinfo(WEIGHTS_MEMBER)
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as raw:
            yield _Window(raw, _data_offset(raw, info), info.file_size), info.file_size
        return
    with (
        tempfile.TemporaryFile(dir=path.parent) as copy,
        archive.open(info) as member,
    ):
        shutil.copyfileobj(member, copy, 1 << 20)
        yield copy, info.file_size


def _data_offset(raw: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header, which must
    name the same member as the central directory (as zipfile itself checks)."""
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise InvalidCheckpoint(f"the zip entry of {WEIGHTS_MEMBER} is truncated")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if signature != b"PK\x03\x04" or raw.read(name_length) != info.orig_filename.encode():
        raise InvalidCheckpoint(f"the zip entry of {WEIGHTS_MEMBER} is corrupt")
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


class _Window(io.RawIOBase):
    """A read-only, seekable view of `size` bytes of `raw` starting at `start`."""

    def __init__(self, raw: BinaryIO, start: int, size: int) -> None:
        super().__init__()
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._pos))
        self._raw.seek(self._start + self._pos)
        got = self._raw.readinto(view[:count]) or 0
        self._pos += got
        return got


def _screen(handle: BinaryIO, size: int) -> WeightsSummary:
    datasets = elements = total = 0
    regions: list[tuple[int, int, str]] = []  # (offset, bytes, name) of contiguous data
    with h5py.File(handle, "r") as h5:
        names = _hard_links(h5)
        _check_attributes("/", h5.id)
        for raw_name in names:
            name = raw_name.decode("utf-8", "replace")
            kind = h5.get(raw_name, getclass=True)  # the object's class, from its header
            if kind not in (h5py.Group, h5py.Dataset):
                raise InvalidCheckpoint(
                    f"{WEIGHTS_MEMBER}: {name!r} is a {getattr(kind, '__name__', kind)}; "
                    "a Keras weights file holds only groups and datasets"
                )
            obj = h5[raw_name]
            _check_attributes(name, obj.id)
            if h5py.h5o.get_info(obj.id).rc > 1:
                raise InvalidCheckpoint(
                    f"{WEIGHTS_MEMBER}: {name!r} is reachable under several names; "
                    "Keras links each group and dataset once"
                )
            if kind is h5py.Dataset:
                count, nbytes, offset = _check_dataset(name, obj.id, size)
                datasets, elements, total = datasets + 1, elements + count, total + nbytes
                if offset is not None and nbytes:
                    regions.append((offset, nbytes, name))
    _check_disjoint(regions)
    outside = size - total
    allowed = METADATA_BYTES_BASE + METADATA_BYTES_PER_OBJECT * (len(names) + 1)
    if outside > allowed:
        raise InvalidCheckpoint(
            f"{WEIGHTS_MEMBER} holds {outside:,} bytes outside its datasets, more than "
            f"the {allowed:,} the metadata of {len(names) + 1} objects needs"
        )
    return WeightsSummary(datasets, elements, total)


def _check_attributes(name: str, obj: Any) -> None:
    """Each attribute's type and size, from its header: numbers or strings, a
    scalar or a short list; a variable-length string only as a scalar."""
    count = h5py.h5o.get_info(obj).num_attrs
    if count > MAX_ATTRIBUTES_PER_OBJECT:
        raise InvalidCheckpoint(
            f"{WEIGHTS_MEMBER}: {name!r} has {count} attributes; Keras writes at most a few"
        )
    for index in range(count):
        attr = h5py.h5a.open(obj, index=index)
        where = (
            f"{WEIGHTS_MEMBER}: attribute {attr.name.decode('utf-8', 'replace')[:60]!r} of {name!r}"
        )
        kind = attr.get_type()
        shape = attr.get_space().shape or ()
        elements = math.prod(shape)
        variable = isinstance(kind, h5py.h5t.TypeStringID) and kind.is_variable_str()
        if kind.get_class() not in (h5py.h5t.STRING, h5py.h5t.INTEGER, h5py.h5t.FLOAT):
            raise InvalidCheckpoint(f"{where} is not a number or a string")
        if variable and shape:
            raise InvalidCheckpoint(
                f"{where} is a list of {elements:,} variable-length strings; Keras writes "
                "single strings"
            )
        if elements > MAX_ATTRIBUTE_ELEMENTS or attr.get_storage_size() > MAX_ATTRIBUTE_BYTES:
            raise InvalidCheckpoint(
                f"{where} has shape {shape} ({attr.get_storage_size():,} bytes); Keras writes "
                f"at most {MAX_ATTRIBUTE_ELEMENTS} small values"
            )


def _check_disjoint(regions: list[tuple[int, int, str]]) -> None:
    """Two datasets sharing bytes would let a small file hold more than its size."""
    regions.sort()
    for (start, length, name), (next_start, _, next_name) in itertools.pairwise(regions):
        if start + length > next_start:
            raise InvalidCheckpoint(
                f"{WEIGHTS_MEMBER}: datasets {name!r} and {next_name!r} share their bytes; "
                "Keras stores each weight in its own place"
            )


def _hard_links(h5: h5py.File) -> list[bytes]:
    """The name of every link in the file, refusing any that is not a hard link.

    H5Lvisit reports each link's type without following it, so an external
    link's target file is never opened and a soft link is never resolved. An
    exception must not cross HDF5's visit callback (h5py turns it into a
    SystemError): the callback only records, and returning a value stops the walk.
    """
    links: list[bytes] = []
    kinds = {h5py.h5l.TYPE_SOFT: "SoftLink", h5py.h5l.TYPE_EXTERNAL: "ExternalLink"}

    def visit(raw_name: bytes, info: Any) -> str | None:
        name = raw_name.decode("utf-8", "replace")
        if info.type != h5py.h5l.TYPE_HARD:
            kind = kinds.get(info.type, f"user-defined link (type {info.type})")
            return (
                f"{WEIGHTS_MEMBER}: {name!r} is an HDF5 {kind}{_target(h5, raw_name, info)}; "
                "Keras writes no links, and a checkpoint may not point outside itself"
            )
        links.append(raw_name)
        if len(links) > MAX_OBJECTS:
            return (
                f"{WEIGHTS_MEMBER} holds more than {MAX_OBJECTS} objects; not a Keras weights file"
            )
        return None

    problem = h5.id.links.visit(visit, info=True)
    if problem is not None:
        raise InvalidCheckpoint(problem)
    return links


def _target(h5: h5py.File, name: bytes, info: Any) -> str:
    """Where a soft or external link points, read from the link itself (never followed)."""
    try:
        value = h5.id.links.get_val(name)
    except Exception:  # it only decorates the message, and must not raise inside visit
        return ""
    if info.type == h5py.h5l.TYPE_EXTERNAL and isinstance(value, tuple):
        return f" to {value[0].decode('utf-8', 'replace')!r}"
    if isinstance(value, bytes):
        return f" to {value.decode('utf-8', 'replace')!r}"
    return ""


def _check_dataset(
    name: str, dataset: h5py.h5d.DatasetID, file_size: int
) -> tuple[int, int, int | None]:
    """(elements, bytes, offset of contiguous data) of a dataset stored in full in this file."""
    plist = dataset.get_create_plist()
    layout = plist.get_layout()
    where = f"{WEIGHTS_MEMBER}: dataset {name!r}"
    if layout == h5py.h5d.VIRTUAL:
        raise InvalidCheckpoint(f"{where} is a virtual dataset mapping other files")
    if plist.get_external_count():
        raise InvalidCheckpoint(f"{where} keeps its data in external files")
    dtype = _plain_dtype(where, dataset)
    shape = dataset.shape or ()  # None: an HDF5 null dataspace, no values
    elements = math.prod(shape) if dataset.shape is not None else 0
    declared = elements * dtype.itemsize
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT) or plist.get_nfilters():
        storage = "chunked" if layout == h5py.h5d.CHUNKED else "filtered"
        raise InvalidCheckpoint(
            f"{where} declares shape {shape} ({declared} bytes) in {storage} storage; "
            "Keras writes every weight contiguous and uncompressed"
        )
    stored = dataset.get_storage_size()
    offset = dataset.get_offset() if layout == h5py.h5d.CONTIGUOUS else 0
    if declared and (stored != declared or offset is None or offset + stored > file_size):
        raise InvalidCheckpoint(
            f"{where} declares shape {shape} ({declared} bytes) but the file holds "
            f"{stored if offset is not None else 0} bytes of it; a real weight is stored in full"
        )
    return elements, declared, offset if layout == h5py.h5d.CONTIGUOUS else None


def _plain_dtype(where: str, dataset: h5py.h5d.DatasetID) -> np.dtype:
    """Numbers and booleans only: no strings, references, compounds or arrays."""
    try:
        dtype = dataset.dtype
    except (TypeError, ValueError) as exc:  # an HDF5 type numpy has no match for
        raise InvalidCheckpoint(f"{where} has an unsupported HDF5 type: {exc}") from exc
    plain = dtype.kind in "biuf" or (
        dtype.kind == "V" and dtype.itemsize in OPAQUE_ITEMSIZES  # bfloat16, float8
    )
    if not plain or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidCheckpoint(f"{where} has dtype {dtype}; weights are numbers")
    return dtype
