"""What a Diagnose call sends: the checkpoint and batch, their sha256, in chunks.

Needs numpy only; Keras is imported only when handed a live model to save.
A checkpoint on disk is streamed from the file, never read whole into memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradhealth.contract import MAX_CHUNK_BYTES
from gradhealth.v1 import service_pb2, verdict_pb2

CHUNK_BYTES = MAX_CHUNK_BYTES  # the contract allows 64 KiB to 1 MiB


@dataclass(frozen=True)
class Part:
    """A file or an in-memory buffer, with its size and sha256."""

    path: Path | None
    data: bytes | None
    size: int
    sha256: str

    @classmethod
    def of_file(cls, path: str | os.PathLike[str]) -> Part:
        path = Path(path)
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK_BYTES):
                digest.update(block)
                size += len(block)
        return cls(path, None, size, digest.hexdigest())

    @classmethod
    def of_bytes(cls, data: bytes) -> Part:
        return cls(None, data, len(data), hashlib.sha256(data).hexdigest())

    def info(self) -> service_pb2.UploadInfo:
        return service_pb2.UploadInfo(size_bytes=self.size, sha256=self.sha256)

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, len(view), size):
                yield bytes(view[start : start + size])
            return
        assert self.path is not None
        yield from file_chunks(self.path, size)


def file_chunks(path: str | os.PathLike[str], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A file in chunks, read as they are sent: never whole in memory."""
    with open(path, "rb") as handle:
        while block := handle.read(size):
            yield block


def checkpoint_part(model_or_path: Any) -> Part:
    """A `.keras` path, its bytes, or a live Keras model (saved to a temp file)."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return Part.of_file(model_or_path)
    if isinstance(model_or_path, (bytes, bytearray)):
        return Part.of_bytes(bytes(model_or_path))
    if hasattr(model_or_path, "save"):
        with tempfile.TemporaryDirectory(prefix="gradhealth-") as directory:
            path = Path(directory) / "model.keras"
            model_or_path.save(path)
            return Part.of_bytes(path.read_bytes())
    raise TypeError(f"expected a .keras path, its bytes or a Keras model: {model_or_path!r:.80}")


def batch_part(x: Any, y: Any) -> Part:
    """x (an array, or {input name: array}) and y (an array, or {output name: array}
    for a multi-output model) as the `.npz` the service reads: x or x_<input name>,
    y or y_<output name>."""
    arrays: dict[str, np.ndarray] = {}
    if isinstance(y, Mapping):
        arrays.update({f"y_{name}": np.asarray(value) for name, value in y.items()})
    else:
        arrays["y"] = np.asarray(y)
    if isinstance(x, Mapping):
        arrays.update({f"x_{name}": np.asarray(value) for name, value in x.items()})
    else:
        arrays["x"] = np.asarray(x)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return Part.of_bytes(buffer.getvalue())


def requests(
    header: service_pb2.DiagnoseHeader, checkpoint: Part, batch: Part
) -> Iterator[service_pb2.DiagnoseRequest]:
    """The Diagnose stream: header, checkpoint chunks, batch chunks."""
    yield service_pb2.DiagnoseRequest(header=header)
    for chunk in checkpoint.chunks():
        yield service_pb2.DiagnoseRequest(checkpoint_chunk=chunk)
    for chunk in batch.chunks():
        yield service_pb2.DiagnoseRequest(batch_chunk=chunk)


def training_metrics(values: Mapping[str, float] | None) -> verdict_pb2.TrainingMetrics:
    """Keras `logs` -> TrainingMetrics: loss and accuracy by name, the rest as extra."""
    out = verdict_pb2.TrainingMetrics()
    for name, value in (values or {}).items():
        if name == "loss":
            out.loss = float(value)
        elif name in ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy"):
            out.accuracy = float(value)
        else:
            out.extra[name] = float(value)
    return out
