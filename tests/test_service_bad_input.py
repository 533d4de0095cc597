"""Bad input over the wire: each gets the right status and a message naming the
problem, and the server keeps serving."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import grpc
import keras
import pytest
from grpc_health.v1 import health_pb2

from gradhealth.client import GradientHealthClient
from gradhealth.v1 import service_pb2
from tests.service import TOKEN, raw_diagnose

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _info(data: bytes, size: int | None = None, sha: str | None = None):
    return service_pb2.UploadInfo(
        size_bytes=len(data) if size is None else size,
        sha256=sha or hashlib.sha256(data).hexdigest(),
    )


def _stream(checkpoint: bytes, batch: bytes, run_id: str = "bad-input", **overrides):
    """A Diagnose stream, honest unless an override says otherwise."""
    header = service_pb2.DiagnoseHeader(
        run_id=run_id,
        step=1,
        checkpoint=overrides.pop("checkpoint_info", _info(checkpoint)),
        batch=overrides.pop("batch_info", _info(batch)),
    )
    messages = [service_pb2.DiagnoseRequest(header=header)]
    size = overrides.pop("chunk", 256 * 1024)
    for start in range(0, len(checkpoint), size):
        messages.append(
            service_pb2.DiagnoseRequest(checkpoint_chunk=checkpoint[start : start + size])
        )
    for start in range(0, len(batch), size):
        messages.append(service_pb2.DiagnoseRequest(batch_chunk=batch[start : start + size]))
    assert not overrides, overrides
    return messages


@pytest.fixture(scope="module")
def good(checkpoints, batch) -> tuple[bytes, bytes]:
    return checkpoints.path("cnn").read_bytes(), Path(batch).read_bytes()


@pytest.fixture(scope="module")
def lambda_checkpoint(tmp_path_factory) -> bytes:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Lambda(lambda t: t * 2.0, name="sneaky_lambda"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = Path(tmp_path_factory.mktemp("lambda")) / "lambda.keras"
    model.save(path)
    return path.read_bytes()


def _cases(good, lambda_checkpoint):
    ckpt, batch = good
    header_only = _stream(ckpt, batch)[:1]
    yield "empty stream", [], INVALID, "first message"
    yield "chunk before header", _stream(ckpt, batch)[1:], INVALID, "first message"
    yield "truncated stream", _stream(ckpt, batch)[:3], INVALID, "truncated"
    yield (
        "wrong sha256",
        _stream(ckpt, batch, checkpoint_info=_info(ckpt, sha="0" * 64)),
        INVALID,
        "sha256",
    )
    yield (
        "more bytes than declared",
        _stream(ckpt, batch, checkpoint_info=_info(ckpt, size=len(ckpt) - 10)),
        INVALID,
        "longer than",
    )
    yield (
        "oversize checkpoint",
        _stream(ckpt, batch, checkpoint_info=_info(ckpt, size=3 * 1024**3))[:1],
        EXHAUSTED,
        "at most",
    )
    yield (
        "oversize chunk",
        _stream(os.urandom(3 * 1024 * 1024), batch, chunk=3 * 1024 * 1024),
        EXHAUSTED,
        "larger than max",
    )
    garbage = os.urandom(200_000)
    yield "garbage checkpoint", _stream(garbage, batch), INVALID, "zip"
    yield "lambda layer", _stream(lambda_checkpoint, batch), INVALID, "'sneaky_lambda' is a Lambda"
    yield "garbage batch", _stream(ckpt, os.urandom(5000)), INVALID, "batch"
    yield "tiny chunks", _stream(ckpt, batch, chunk=1000), INVALID, "only the last"
    yield "bad run id", _stream(ckpt, batch, run_id="../etc"), INVALID, "run_id"
    yield "second header", _stream(ckpt, batch) + header_only, INVALID, "exactly one header"
    yield (
        "no sha256",
        _stream(ckpt, batch, batch_info=service_pb2.UploadInfo(size_bytes=len(batch))),
        INVALID,
        "sha256",
    )


CASES = [
    "empty stream",
    "chunk before header",
    "truncated stream",
    "wrong sha256",
    "more bytes than declared",
    "oversize checkpoint",
    "oversize chunk",
    "garbage checkpoint",
    "lambda layer",
    "garbage batch",
    "tiny chunks",
    "bad run id",
    "second header",
    "no sha256",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_stream_gets_a_clear_status(server, good, lambda_checkpoint, case):
    cases = {name: rest for name, *rest in _cases(good, lambda_checkpoint)}
    assert set(cases) == set(CASES)
    messages, code, message = cases[case]
    with pytest.raises(grpc.RpcError) as caught:
        raw_diagnose(server, messages)
    assert caught.value.code() == code, caught.value.details()
    assert message.lower() in caught.value.details().lower()
    assert server.health() == health_pb2.HealthCheckResponse.SERVING


def test_server_still_diagnoses_after_bad_input(server, checkpoints, batch):
    with GradientHealthClient(server.target, token=TOKEN) as client:
        verdict = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="after-bad")
    assert verdict.status in ("healthy", "warning", "critical")
    assert server.metric("gradhealth_rejected_total", reason="invalid_upload") >= 7
    assert server.metric("gradhealth_rejected_total", reason="invalid_checkpoint") >= 2
    assert server.spooled() == []


def _zip_with_directory(entries: int, declared: int) -> bytes:
    """A zip whose central directory lists `entries` members (all pointing at one
    local header) while its end record declares `declared` of them."""
    import struct
    import zlib

    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(b""), 0, 0, 1, 0)
    local += b"a"
    central = bytearray()
    for i in range(entries):
        name = b"m%07d" % i
        central += struct.pack(
            "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0
        )
        central += name
    count = min(declared, 0xFFFF)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, len(central), len(local), 0)
    return local + bytes(central) + end


@pytest.mark.parametrize("declared", [1_000_000, 3], ids=["honest-count", "lying-count"])
def test_a_zip_listing_a_million_members_is_refused_from_its_end_record(
    server, good, checkpoints, batch, declared
):
    """10^6 central-directory entries (46 MB): refused from the end record's count
    or directory size, in well under a second of server time, not parsed in full
    (it took 30-50 s and +460 MB)."""
    import time

    checkpoint = _zip_with_directory(1_000_000, declared)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        raw_diagnose(server, _stream(checkpoint, good[1], chunk=1024 * 1024), timeout=120)
    elapsed = time.monotonic() - start
    assert caught.value.code() == INVALID, caught.value.details()
    assert "the checkpoint archive" in caught.value.details()
    assert "64" in caught.value.details()  # the member cap it is held to
    assert elapsed < 10, f"{elapsed:.1f} s"  # mostly the 46 MB upload
    with GradientHealthClient(server.target, token=TOKEN) as client:
        assert client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="after-zip").status


def test_an_npz_of_duplicate_members_is_refused_before_it_is_parsed(server, good):
    """20,000 members all named x.npy (the issue's 10^5 took 131 s of CPU and was
    accepted): more members than the model's inputs need is refused at once."""
    import io
    import warnings
    import zipfile

    import numpy as np

    buffer = io.BytesIO()
    one = io.BytesIO()
    np.save(one, np.zeros((2, 8, 8, 1), dtype=np.float32))
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as npz:
        warnings.simplefilter("ignore")  # "Duplicate name"
        for _ in range(20_000):
            npz.writestr("x.npy", one.getvalue())
        labels = io.BytesIO()
        np.save(labels, np.zeros(2, dtype=np.int64))
        npz.writestr("y.npy", labels.getvalue())
    with pytest.raises(grpc.RpcError) as caught:
        raw_diagnose(server, _stream(good[0], buffer.getvalue(), chunk=1024 * 1024), timeout=60)
    assert caught.value.code() == INVALID, caught.value.details()
    assert "20,001 members, more than the 2 allowed" in caught.value.details()
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
