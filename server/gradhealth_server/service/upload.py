"""Receive one Diagnose stream: check the header, spool the parts to disk.

A checkpoint can be gigabytes, so nothing is held in memory: each chunk goes
straight to a per-call temporary directory while its sha256 is computed, and the
declared size and the operator's caps are enforced as bytes arrive, not after.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gradhealth.contract import MIN_CHUNK_BYTES
from gradhealth.v1 import service_pb2
from gradhealth_server.intake.limits import Limits
from gradhealth_server.service.status import (
    invalid,
    too_large,
    upload_late,
    uploads_full,
)

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,199}")
SHA256 = re.compile(r"[0-9a-f]{64}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def check_run_id(run_id: str) -> None:
    if not RUN_ID.fullmatch(run_id):
        raise invalid(
            f"run_id {run_id[:60]!r} is not valid: 1-200 characters of letters, "
            "digits and ._:/@+=- starting with a letter or digit"
        )


def check_header(header: service_pb2.DiagnoseHeader, limits: Limits) -> None:
    """Refuse a bad header before a single byte of the upload is accepted. An
    empty run id is an ad-hoc diagnosis (the server names its run)."""
    if header.run_id:
        check_run_id(header.run_id)
    if header.step < 0:
        raise invalid(f"step must be >= 0, got {header.step}")
    if header.request_id and not REQUEST_ID.fullmatch(header.request_id):
        raise invalid("request_id must be 1-100 characters of letters, digits and ._:-")
    parts = (
        ("checkpoint", header.checkpoint, limits.max_checkpoint_bytes),
        ("batch", header.batch, limits.max_batch_bytes),
    )
    for what, info, cap in parts:
        if info.size_bytes <= 0:
            raise invalid(f"header.{what}.size_bytes must be the {what}'s size in bytes (> 0)")
        if info.size_bytes > cap:
            raise too_large(
                f"the {what} is {info.size_bytes} bytes; this server accepts at most {cap}"
            )
        if not SHA256.fullmatch(info.sha256):
            raise invalid(f"header.{what}.sha256 must be 64 lower-case hex digits")


def check_close(request: service_pb2.CloseRunRequest) -> None:
    check_run_id(request.run_id)
    closed = (service_pb2.RUN_STATE_FINISHED, service_pb2.RUN_STATE_STOPPED)
    if request.state not in closed:
        raise invalid("state must be RUN_STATE_FINISHED or RUN_STATE_STOPPED")
    if request.stop_cause and request.state != service_pb2.RUN_STATE_STOPPED:
        raise invalid("stop_cause is for stopped runs only")
    if len(request.reason) > 500:
        raise invalid(f"reason is {len(request.reason)} characters; at most 500")


class Part:
    """One upload being written to disk, checked against what the header declared."""

    def __init__(self, path: Path, what: str, declared: service_pb2.UploadInfo) -> None:
        self.path = path
        self.what = what
        self.declared = declared
        self.size = 0
        self.digest = hashlib.sha256()
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by finish()/close()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.declared.size_bytes:
            raise invalid(
                f"the {self.what} stream is longer than the {self.declared.size_bytes} bytes "
                "its header declared"
            )
        if len(chunk) < MIN_CHUNK_BYTES and self.size != self.declared.size_bytes:
            raise invalid(
                f"a {self.what} chunk of {len(chunk)} bytes: chunks are 64 KiB to 1 MiB, "
                "only the last of a part may be smaller"
            )
        self.digest.update(chunk)
        self._file.write(chunk)

    def finish(self) -> None:
        self._file.close()
        if self.size < self.declared.size_bytes:
            raise invalid(
                f"the {self.what} stream ended after {self.size} of "
                f"{self.declared.size_bytes} declared bytes (truncated upload)"
            )
        if self.digest.hexdigest() != self.declared.sha256:
            raise invalid(
                f"the {self.what}'s sha256 is {self.digest.hexdigest()}, "
                f"not {self.declared.sha256} as declared: the upload was corrupted"
            )

    def close(self) -> None:
        self._file.close()


class Spool:
    """A call's temporary directory; removed when the call ends, however it ends."""

    def __init__(self, root: Path | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gradhealth-", dir=root))
        self.checkpoint = self.directory / "checkpoint.keras"
        self.batch = self.directory / "batch.npz"

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


async def receive_parts(
    requests: AsyncIterator[service_pb2.DiagnoseRequest],
    header: service_pb2.DiagnoseHeader,
    spool: Spool,
    limits: UploadLimits,
) -> None:
    """Write the checkpoint chunks, then the batch chunks, verifying both.

    A stalled or trickling upload would hold its queue slot forever: each chunk
    must arrive within `idle_seconds`, the whole upload within `total_seconds`,
    and chunks below MIN_CHUNK_BYTES may only end a part.
    """
    checkpoint = Part(spool.checkpoint, "checkpoint", header.checkpoint)
    batch = Part(spool.batch, "batch", header.batch)
    started = time.monotonic()
    try:
        async with asyncio.timeout(limits.total_seconds):
            while (request := await _next(requests, limits.idle_seconds)) is not None:
                _check_rate(checkpoint.size + batch.size, started, limits)
                kind = request.WhichOneof("part")
                if kind == "checkpoint_chunk":
                    if batch.size:
                        raise invalid("checkpoint chunks must all come before the batch chunks")
                    checkpoint.write(request.checkpoint_chunk)
                elif kind == "batch_chunk":
                    batch.write(request.batch_chunk)
                elif kind == "header":
                    raise invalid("a Diagnose stream has exactly one header, as its first message")
                else:
                    raise invalid(
                        "a DiagnoseRequest must set header, checkpoint_chunk or batch_chunk"
                    )
        checkpoint.finish()
        batch.finish()
    except TimeoutError as exc:
        raise upload_late(
            "upload_timeout",
            f"the upload took longer than this server allows ({limits.total_seconds:.0f} s)",
        ) from exc
    finally:
        checkpoint.close()
        batch.close()


@dataclass(frozen=True)
class UploadLimits:
    idle_seconds: float = 30.0
    total_seconds: float = 900.0
    # After the first RATE_GRACE_S, an upload averaging less than this is cut off:
    # nine clients trickling 64 KiB every 25 s would otherwise hold every slot.
    min_bytes_per_second: float = 64 * 1024
    max_uploads: int = 16  # calls uploading at once; more get RESOURCE_EXHAUSTED


RATE_GRACE_S = 10.0


class UploadStage:
    """The calls uploading now, bounded apart from the diagnosis queue: a call
    joins the queue only once its upload is complete, so slow uploaders hold
    upload places, never the queue's."""

    def __init__(self, capacity: int, gauge: Any) -> None:
        self.capacity = capacity
        self.active = 0
        self._gauge = gauge

    @contextlib.contextmanager
    def place(self) -> Iterator[None]:
        if self.active >= self.capacity:
            raise uploads_full(
                f"{self.capacity} uploads are in progress, the most this server takes; retry later",
            )
        self.active += 1
        self._gauge.set(self.active)
        try:
            yield
        finally:
            self.active -= 1
            self._gauge.set(self.active)


def _check_rate(received: int, started: float, limits: UploadLimits) -> None:
    elapsed = time.monotonic() - started
    if elapsed > RATE_GRACE_S and received / elapsed < limits.min_bytes_per_second:
        raise upload_late(
            "upload_too_slow",
            f"the upload is too slow: {received / elapsed / 1024:.1f} KiB/s on average, this "
            f"server needs at least {limits.min_bytes_per_second / 1024:.0f} KiB/s",
        )


async def _next(
    requests: AsyncIterator[service_pb2.DiagnoseRequest], idle_seconds: float
) -> service_pb2.DiagnoseRequest | None:
    try:
        return await asyncio.wait_for(anext(requests, None), idle_seconds)
    except TimeoutError:
        raise upload_late(
            "upload_timeout",
            f"the upload stalled: no chunk for {idle_seconds:.0f} s",
        ) from None
