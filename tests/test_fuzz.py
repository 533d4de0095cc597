"""Property-based fuzzing of everything that parses bytes a client sent.

Each parser may refuse input only with the errors the service maps to a status:
the upload stream with `RpcFailure` (a gRPC status and a message), the batch
decoder with `InvalidBatch`/`LimitExceeded`, the checkpoint screens with
`InvalidCheckpoint`/`LimitExceeded`. Any other exception is a bug (the call
would end as INTERNAL, or worse, be taken as valid). Where a parser accepts,
what it accepted is checked too.

CI runs GRADHEALTH_FUZZ_EXAMPLES (default 200) examples per target in well under
a minute. A longer run, for after a change to a parser:

    GRADHEALTH_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py

(GRADHEALTH_FUZZ_DB=DIR keeps Hypothesis's example database, so failures replay.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.extra import numpy as hnp

from gradhealth.contract import MIN_CHUNK_BYTES
from gradhealth.v1 import service_pb2
from gradhealth_server.engine.facts import StaticFacts
from gradhealth_server.errors import InvalidBatch, InvalidCheckpoint, LimitExceeded
from gradhealth_server.intake.archive import inspect_archive
from gradhealth_server.intake.batch import Batch, make_batch, read_npz
from gradhealth_server.intake.config_screen import screen_config
from gradhealth_server.intake.limits import Limits
from gradhealth_server.intake.weights_file import screen_weights
from gradhealth_server.service.status import RpcFailure
from gradhealth_server.service.upload import (
    REQUEST_ID,
    RUN_ID,
    SHA256,
    Spool,
    UploadLimits,
    check_header,
    receive_parts,
)
from tests import hostile

EXAMPLES = int(os.environ.get("GRADHEALTH_FUZZ_EXAMPLES", "200"))
_DB = os.environ.get("GRADHEALTH_FUZZ_DB")
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=DirectoryBasedExampleDatabase(_DB) if _DB else None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MiB = 1024 * 1024
# Small caps, so that fuzzed sizes reach them often.
LIMITS = Limits(
    max_checkpoint_bytes=4 * MiB,
    max_unpacked_bytes=8 * MiB,
    max_config_bytes=256 * 1024,
    max_batch_bytes=MiB,
    max_batch_rows=64,
)
CHECKPOINT_ERRORS = (InvalidCheckpoint, LimitExceeded)
BATCH_ERRORS = (InvalidBatch, LimitExceeded)

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)  # proto strings are UTF-8
int64 = st.integers(-(2**63), 2**63 - 1)


# --- the upload stream (upload.py) ----------------------------------------------------


def upload_infos() -> st.SearchStrategy[service_pb2.UploadInfo]:
    return st.builds(
        service_pb2.UploadInfo,
        size_bytes=st.one_of(int64, st.integers(-2, 6 * MiB)),
        sha256=st.one_of(text, st.from_regex(SHA256, fullmatch=True)),
    )


headers = st.builds(
    service_pb2.DiagnoseHeader,
    run_id=st.one_of(text, st.from_regex(RUN_ID, fullmatch=True)),
    step=int64,
    request_id=st.one_of(text, st.from_regex(REQUEST_ID, fullmatch=True)),
    checkpoint=upload_infos(),
    batch=upload_infos(),
)


@FUZZ
@given(header=headers)
@example(header=service_pb2.DiagnoseHeader(run_id="r", step=-1))
@example(
    header=service_pb2.DiagnoseHeader(
        checkpoint=service_pb2.UploadInfo(size_bytes=1, sha256="0" * 64),
        batch=service_pb2.UploadInfo(size_bytes=1, sha256="0" * 64),
    )
)
def test_check_header_refuses_only_with_a_status(header):
    try:
        check_header(header, LIMITS)
    except RpcFailure as failure:
        assert isinstance(failure.code, grpc.StatusCode)
        assert failure.code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert failure.message and failure.reason
        return
    # Accepted: then every field is what the service relies on (an empty run id is
    # an ad-hoc diagnosis: the server names its run).
    assert (not header.run_id or RUN_ID.fullmatch(header.run_id)) and header.step >= 0
    assert not header.request_id or REQUEST_ID.fullmatch(header.request_id)
    for info, cap in (
        (header.checkpoint, LIMITS.max_checkpoint_bytes),
        (header.batch, LIMITS.max_batch_bytes),
    ):
        assert 0 < info.size_bytes <= cap and SHA256.fullmatch(info.sha256)


def _payload() -> st.SearchStrategy[bytes]:
    """Short random chunks, and long ones (above the minimum chunk size) made cheaply."""
    long = st.builds(
        lambda n, byte: bytes([byte]) * n,
        st.integers(MIN_CHUNK_BYTES - 2, MIN_CHUNK_BYTES * 3),
        st.integers(0, 255),
    )
    return st.one_of(st.binary(max_size=64), long)


requests = st.one_of(
    st.builds(lambda b: service_pb2.DiagnoseRequest(checkpoint_chunk=b), _payload()),
    st.builds(lambda b: service_pb2.DiagnoseRequest(batch_chunk=b), _payload()),
    st.builds(lambda h: service_pb2.DiagnoseRequest(header=h), headers),
    st.just(service_pb2.DiagnoseRequest()),
)


async def _aiter(messages: list[service_pb2.DiagnoseRequest]) -> AsyncIterator[Any]:
    for message in messages:
        yield message


def _honest(data: bytes) -> service_pb2.UploadInfo:
    return service_pb2.UploadInfo(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


@FUZZ
@given(messages=st.lists(requests, max_size=8), honest=st.booleans(), infos=st.data())
def test_receive_parts_refuses_only_with_a_status_and_keeps_only_what_was_declared(
    messages, honest, infos
):
    sent = {
        part: b"".join(
            m.checkpoint_chunk if part == "checkpoint" else m.batch_chunk for m in messages
        )
        for part in ("checkpoint", "batch")
    }
    header = service_pb2.DiagnoseHeader(
        run_id="fuzz",
        checkpoint=_honest(sent["checkpoint"]) if honest else infos.draw(upload_infos()),
        batch=_honest(sent["batch"]) if honest else infos.draw(upload_infos()),
    )
    with tempfile.TemporaryDirectory() as root, Spool(Path(root)) as spool:
        try:
            asyncio.run(receive_parts(_aiter(messages), header, spool, UploadLimits(5.0, 30.0)))
        except RpcFailure as failure:
            assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure.message
            assert failure.message and failure.reason
            return
        # Accepted: the spooled files are exactly what the header declared.
        for path, info in ((spool.checkpoint, header.checkpoint), (spool.batch, header.batch)):
            data = path.read_bytes()
            assert len(data) == info.size_bytes
            assert hashlib.sha256(data).hexdigest() == info.sha256


# --- the batch decoder (batch.py) -----------------------------------------------------


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


MUTATION_KINDS = ("flip", "set", "cut", "insert", "truncate", "duplicate")
# (kind, where, how much, a byte, bytes to insert); `where` wraps around the data.
mutations = st.lists(
    st.tuples(
        st.sampled_from(MUTATION_KINDS),
        st.integers(0, 1 << 20),
        st.integers(1, 256),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=32),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(data: bytes, edits: list[tuple[str, int, int, int, bytes]]) -> bytes:
    """Byte-level mutations that keep most of a valid file: flips, cuts, splices."""
    out = bytearray(data)
    for kind, where, amount, byte, chunk in edits:
        if not out:
            break
        at = where % len(out)
        if kind == "flip":
            out[at] ^= 1 << (byte % 8)
        elif kind == "set":
            out[at] = byte
        elif kind == "cut":
            del out[at : at + amount]
        elif kind == "insert":
            out[at:at] = chunk
        elif kind == "truncate":
            del out[at:]
        else:
            out[at:at] = out[at : at + amount]
    return bytes(out)


def _check_arrays(arrays: dict[str, np.ndarray]) -> None:
    for array in arrays.values():
        assert isinstance(array, np.ndarray) and not array.dtype.hasobject  # never unpickled


small_arrays = hnp.arrays(
    dtype=st.one_of(hnp.integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes()),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
)


@FUZZ
@given(data=st.binary(max_size=4096))
@example(data=b"PK\x05\x06" + bytes(18))  # an empty zip
def test_read_npz_refuses_arbitrary_bytes_with_batch_errors(data):
    with contextlib.suppress(*BATCH_ERRORS):
        _check_arrays(read_npz(data, LIMITS))


@FUZZ
@given(
    arrays=st.dictionaries(st.sampled_from(["x", "y", "x_a"]), small_arrays, max_size=3),
    edits=mutations,
)
def test_read_npz_refuses_mutated_npz_with_batch_errors(arrays, edits):
    with contextlib.suppress(*BATCH_ERRORS):
        _check_arrays(read_npz(_mutate(_npz(arrays), edits), LIMITS))


DESCRS = [
    "<f4",
    "<f8",
    "|u1",
    "<i8",
    "|b1",
    "|O",
    "<U1000000000",
    "|V4000000000",
    "|S0",
    "<c16",
    "<M8[s]",
]


@FUZZ
@given(
    descr=st.one_of(st.sampled_from(DESCRS), text),
    shape=st.lists(st.integers(0, 2**40), max_size=4).map(tuple),
    fortran=st.booleans(),
    body=st.binary(max_size=256),
)
# Found by the long run: numpy parses the header dict with ast, which raises
# SyntaxError (not ValueError) on a mangled one.
@example(descr=",", shape=(), fortran=False, body=b"")
def test_read_npz_refuses_hostile_array_headers_before_allocating(descr, shape, fortran, body):
    """numpy allocates from an .npy header before reading data: each member is a
    hand-written header with any dtype and shape, and a short body."""
    header = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(
            header, {"descr": descr, "fortran_order": fortran, "shape": shape}
        )
    except (ValueError, TypeError):
        header = io.BytesIO(b"\x93NUMPY\x01\x00" + descr.encode()[:64])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + body)
    try:
        arrays = read_npz(buffer.getvalue(), LIMITS)
    except BATCH_ERRORS:
        return
    _check_arrays(arrays)
    assert sum(a.nbytes for a in arrays.values()) <= len(body)


def test_a_pickle_payload_is_never_unpickled(tmp_path):
    """An object array in an .npz is a pickle; unpickling this one would create
    a file. It must be refused, and the file must not exist."""
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([Payload()], dtype=object), y=np.zeros(1))
    with pytest.raises(InvalidBatch, match="pickles"):
        read_npz(buffer.getvalue(), LIMITS)
    assert not marker.exists()


def _facts(problem: str, units: int | None, loss: str, ids: dict[str, int]) -> StaticFacts:
    fields = {f.name: None for f in dataclasses.fields(StaticFacts) if f.init}
    fields.update(
        model_class="Functional",
        functional=True,
        input_names=("x",),
        id_input_limits=ids,
        problem=problem,
        output_units=units,
        loss=loss,
    )
    return StaticFacts(**fields)


any_arrays = hnp.arrays(
    dtype=st.one_of(
        hnp.integer_dtypes(),
        hnp.unsigned_integer_dtypes(),
        hnp.floating_dtypes(),
        hnp.boolean_dtypes(),
        hnp.complex_number_dtypes(),
        hnp.datetime64_dtypes(),
        hnp.unicode_string_dtypes(max_len=3),
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy garbling a cast, silently
@FUZZ
@given(
    arrays=st.dictionaries(st.sampled_from(["x", "y", "x_x", "x_other"]), any_arrays, max_size=3),
    shape=st.sampled_from([None, (None, 3), (None, 2, 2), (None,)]),
    dtype=st.sampled_from(["float32", "int32", ""]),
    problem=st.sampled_from(
        ["sparse_categorical", "categorical", "binary", "regression", "unknown"]
    ),
    units=st.one_of(st.none(), st.integers(0, 12)),
    loss=st.sampled_from(["sparse_categorical_crossentropy", "binary_crossentropy", "mse", ""]),
    ids=st.dictionaries(st.just("x"), st.integers(0, 10), max_size=1),
)
# Found by the long run: float64 beyond float32's range became inf in the cast,
# past the check that refuses non-finite labels.
@example(
    arrays={"x": np.zeros((2, 3), "int8"), "y": np.array([3.4028236e38, 0.0])},
    shape=(None, 3),
    dtype="float32",
    problem="regression",
    units=None,
    loss="mse",
    ids={},
)
@example(
    arrays={"x": np.array([3.4028236e38, 3.4028236e38]), "y": np.zeros(2, "int8")},
    shape=None,
    dtype="float32",
    problem="sparse_categorical",
    units=None,
    loss="sparse_categorical_crossentropy",
    ids={},
)
# Found by the long run: labels of shape (2, 0), and y.min() of nothing.
@example(
    arrays={"x": np.zeros(2, "int8"), "y": np.zeros((2, 0), "int8")},
    shape=None,
    dtype="float32",
    problem="sparse_categorical",
    units=None,
    loss="sparse_categorical_crossentropy",
    ids={},
)
# Found by this test: ids beyond int32 with the output width unknown were cast to garbage.
@example(
    arrays={"x": np.zeros((2, 3)), "y": np.array([0.0, 1e10])},
    shape=(None, 3),
    dtype="float32",
    problem="sparse_categorical",
    units=None,
    loss="sparse_categorical_crossentropy",
    ids={},
)
def test_make_batch_refuses_only_with_batch_errors(arrays, shape, dtype, problem, units, loss, ids):
    facts = _facts(problem, units, loss, ids)
    try:
        batch = make_batch(arrays, [("x", shape, dtype)], facts, LIMITS)
    except BATCH_ERRORS:
        return
    assert isinstance(batch, Batch)
    assert 2 <= batch.y.shape[0] <= LIMITS.max_batch_rows
    assert all(array.shape[0] == batch.y.shape[0] for array in batch.x.values())
    assert all(array.dtype.kind in "biuf" for array in (*batch.x.values(), batch.y))
    if problem == "sparse_categorical":
        assert batch.y.dtype == np.int32 and (batch.y.size == 0 or batch.y.min() >= 0)
        # The ids sent, truncated as Keras truncates them, not a wrapped-around cast.
        assert np.array_equal(batch.y, np.trunc(arrays["y"].astype(np.float64)))


# --- the checkpoint screens (archive.py, config_screen.py, weights_file.py) -------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> hostile.Base:
    return hostile.Base.create(Path(tmp_path_factory.mktemp("fuzz")))


def _inspect(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".keras") as handle:
        handle.write(data)
        handle.flush()
        try:
            info = inspect_archive(handle.name, LIMITS)
        except CHECKPOINT_ERRORS:
            return
    assert isinstance(info.config, dict) and "class_name" in info.config
    assert {"config.json", "model.weights.h5"} <= set(info.members)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_inspect_archive_refuses_arbitrary_bytes_with_checkpoint_errors(data):
    _inspect(data)


@FUZZ
@given(edits=mutations)
# Found by this test: with the first byte cut, every offset in the central
# directory points one byte early and zipfile seeks to -1 (OSError, was INTERNAL).
@example(edits=[("cut", 0, 1, 0, b"x")])
def test_inspect_archive_refuses_mutated_checkpoints_with_checkpoint_errors(base, edits):
    _inspect(_mutate(base.path.read_bytes(), edits))


MEMBER_NAMES = [
    "config.json",
    "metadata.json",
    "model.weights.h5",
    "assets/",
    "assets/vocab.txt",
    "../config.json",
    "/etc/passwd",
    "assets/../../x",
    "a\\b",
    "C:x",
    "assets/\x00",
    "extra.py",
    "",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # duplicates on purpose
@FUZZ
@given(
    members=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(MEMBER_NAMES), text),
            st.one_of(st.binary(max_size=128), json_values.map(lambda v: json.dumps(v).encode())),
            st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2]),
            st.integers(0, 2**32 - 1),
        ),
        max_size=6,
    )
)
def test_inspect_archive_refuses_hostile_zips_with_checkpoint_errors(members):
    """Zips put together member by member: any names (traversal, duplicates),
    compressions, and Unix mode bits (symlinks, devices)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content, compression, attr in members:
            if not name:
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            info.external_attr = attr
            archive.writestr(info, content)
    _inspect(buffer.getvalue())


CLASS_NAMES = [
    "Dense",
    "Sequential",
    "Functional",
    "function",
    "Lambda",
    "TFSMLayer",
    "__lambda__",
    "__numpy__",
    "__tensor__",
    "__typespec__",
    "__keras_tensor__",
    "get_file",
    "system",
    "eval",
    "relu",
    "Adam",
    "DTypePolicy",
    "BackupAndRestore",
]
MODULES = [
    None,
    "keras",
    "keras.layers",
    "keras.utils",
    "keras.src.utils",
    "keras.src.saving.saving_lib",
    "keras.config",
    "keras.activations",
    "keras.optimizers",
    "builtins",
    "os",
    "tensorflow.python.framework.tensor",
]


def _objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"class_name": st.one_of(st.sampled_from(CLASS_NAMES), text, st.integers())},
        optional={
            "module": st.one_of(st.sampled_from(MODULES), st.integers()),
            "registered_name": st.one_of(st.none(), st.sampled_from(CLASS_NAMES), text),
            "config": st.one_of(children, st.sampled_from(CLASS_NAMES)),
            "spec_name": st.sampled_from(["TensorSpec", "system", ""]),
            "dtype": st.sampled_from(["float32", "U999999999", "object", ""]),
            "vocabulary": st.one_of(st.just("/etc/passwd"), st.lists(text, max_size=2)),
            "safe_mode": st.booleans(),
        },
    )


configs = st.recursive(
    json_values,
    lambda inner: _objects(inner) | st.lists(inner, max_size=3),
    max_leaves=12,
)


@FUZZ
@given(config=configs)
@example(config={"class_name": "__numpy__", "config": ["not", "a", "dict"]})
@example(config={"class_name": "function", "module": "builtins", "config": {"a": 1}})
def test_screen_config_refuses_only_with_invalid_checkpoint(config):
    with contextlib.suppress(InvalidCheckpoint):
        screen_config(config)


@FUZZ
@given(head=st.integers(256, 1 << 16), edits=mutations)
# Found by the long run: h5py's visititems_links looks each link up inside HDF5's
# visit callback; on a corrupt heap that raised there and surfaced as SystemError.
@example(head=7895, edits=[("flip", 24, 1, 0, b"\x00"), ("flip", 38366, 1, 0, b"\x00")])
@example(head=7895, edits=[("flip", 24, 1, 0, b"\x00"), ("flip", 38364, 1, 0, b"\x00")])
def test_screen_weights_refuses_mutated_weight_files_with_invalid_checkpoint(base, head, edits):
    """HDF5 metadata mangled byte by byte, mostly near the start where the
    superblock and root group live: only ever refused as InvalidCheckpoint."""
    members = base.members()
    weights = members["model.weights.h5"]
    members["model.weights.h5"] = _mutate(weights[:head], edits) + weights[head:]
    with tempfile.TemporaryDirectory() as root:
        path = hostile.write_zip(Path(root) / "mutated.keras", members)
        try:
            summary = screen_weights(path)
        except InvalidCheckpoint:
            return
    assert summary.bytes <= len(members["model.weights.h5"]) * 2
    assert summary.elements >= 0


@FUZZ
@given(
    shape=st.lists(st.integers(0, 2**40), max_size=3).map(tuple),
    chunked=st.booleans(),
    written=st.booleans(),
)
def test_screen_weights_refuses_declared_shapes_the_file_does_not_hold(
    base, shape, chunked, written
):
    """A weight replaced by a dataset of any shape, chunked or not, written or
    not: accepted only when the file stores every byte it declares."""
    members = base.members()
    buffer = io.BytesIO(members["model.weights.h5"])
    elements = int(np.prod(shape, dtype=np.float64))
    with h5py.File(buffer, "r+") as h5:
        del h5[f"{hostile.HIDDEN}/vars/1"]
        kwargs: dict[str, Any] = {"shape": shape, "dtype": "float32"}
        if chunked and shape and all(shape):
            kwargs["chunks"] = tuple(min(side, 64) for side in shape)
        if written and elements <= 4096 and max(shape, default=0) <= 4096:
            kwargs["data"] = np.ones(shape, "float32")
        try:
            h5.create_dataset(f"{hostile.HIDDEN}/vars/1", **kwargs)
        except (ValueError, OSError, TypeError):
            return  # h5py would not write it; nothing to screen
    members["model.weights.h5"] = buffer.getvalue()
    with tempfile.TemporaryDirectory() as root:
        path = hostile.write_zip(Path(root) / "shaped.keras", members)
        try:
            summary = screen_weights(path)
        except InvalidCheckpoint:
            assert "chunks" in kwargs or ("data" not in kwargs and elements > 0)
            return
    assert summary.bytes <= len(members["model.weights.h5"])
    assert "chunks" not in kwargs and (elements == 0 or "data" in kwargs)
