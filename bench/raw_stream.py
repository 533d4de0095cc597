"""The baseline for upload throughput: a bare gRPC client stream of bytes.

`python -m bench.raw_stream PORT` serves two methods that read 1 MiB chunks
and answer with the seconds spent receiving them, measured as the gradhealth
server measures its upload phase: `Upload` does nothing else (no protobuf, no
disk), `UploadHashed` also computes their sha256, the floor for any server that
verifies what it receives.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import sys
import time
from collections.abc import AsyncIterator

import grpc

METHOD = "/bench.RawStream/Upload"
HASHED_METHOD = "/bench.RawStream/UploadHashed"
MAX_MESSAGE = 2 * 1024 * 1024


async def _upload(chunks: AsyncIterator[bytes], _context: grpc.aio.ServicerContext) -> bytes:
    start = time.perf_counter()
    received = 0
    async for chunk in chunks:
        received += len(chunk)
    return struct.pack("!dq", time.perf_counter() - start, received)


async def _upload_hashed(chunks: AsyncIterator[bytes], _context: grpc.aio.ServicerContext) -> bytes:
    start = time.perf_counter()
    received = 0
    digest = hashlib.sha256()
    async for chunk in chunks:
        received += len(chunk)
        digest.update(chunk)
    digest.hexdigest()
    return struct.pack("!dq", time.perf_counter() - start, received)


async def _serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
    handler = grpc.method_handlers_generic_handler(
        "bench.RawStream",
        {
            "Upload": grpc.stream_unary_rpc_method_handler(_upload),
            "UploadHashed": grpc.stream_unary_rpc_method_handler(_upload_hashed),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def upload(channel: grpc.Channel, chunks: object, hashed: bool = False) -> tuple[float, int]:
    """Send the chunks; the server's receive seconds and byte count."""
    call = channel.stream_unary(HASHED_METHOD if hashed else METHOD)
    seconds, received = struct.unpack("!dq", call(chunks, timeout=600))
    return seconds, received


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
