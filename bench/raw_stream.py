"""The baseline for upload throughput: a bare gRPC client stream of bytes.

`python -m bench.raw_stream PORT` serves two methods that read 1 MiB chunks
and answer with the seconds spent receiving them, measured as the gradhealth
server measures its upload phase: `Upload` does nothing else (no protobuf, no
disk), `UploadHashed` also computes their sha256, the floor for any server that
verifies what it receives. `UploadFramed` receives the chunks inside
gradhealth.v1.DiagnoseRequest messages (protobuf framing on both sides), and
`UploadFramedStored` also hashes them and writes them to a file: all the work
gradhealth's upload does, without gradhealth's code around it.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator

import grpc

from gradhealth.v1 import service_pb2

METHOD = "/bench.RawStream/Upload"
HASHED_METHOD = "/bench.RawStream/UploadHashed"
FRAMED_METHOD = "/bench.RawStream/UploadFramed"
STORED_METHOD = "/bench.RawStream/UploadFramedStored"
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


async def _upload_framed(requests: AsyncIterator, _context: grpc.aio.ServicerContext) -> bytes:
    start = time.perf_counter()
    received = 0
    async for request in requests:
        received += len(request.checkpoint_chunk)
    return struct.pack("!dq", time.perf_counter() - start, received)


async def _upload_framed_stored(
    requests: AsyncIterator, _context: grpc.aio.ServicerContext
) -> bytes:
    start = time.perf_counter()
    received = 0
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as file:
        async for request in requests:
            chunk = request.checkpoint_chunk
            received += len(chunk)
            digest.update(chunk)
            file.write(chunk)
    digest.hexdigest()
    return struct.pack("!dq", time.perf_counter() - start, received)


async def _serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
    handler = grpc.method_handlers_generic_handler(
        "bench.RawStream",
        {
            "Upload": grpc.stream_unary_rpc_method_handler(_upload),
            "UploadHashed": grpc.stream_unary_rpc_method_handler(_upload_hashed),
            "UploadFramed": grpc.stream_unary_rpc_method_handler(
                _upload_framed, request_deserializer=service_pb2.DiagnoseRequest.FromString
            ),
            "UploadFramedStored": grpc.stream_unary_rpc_method_handler(
                _upload_framed_stored, request_deserializer=service_pb2.DiagnoseRequest.FromString
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def upload(channel: grpc.Channel, chunks: object, method: str = METHOD) -> tuple[float, int]:
    """Send the chunks (bytes, or DiagnoseRequest messages for the framed methods);
    the server's receive seconds and byte count."""
    framed = method in (FRAMED_METHOD, STORED_METHOD)
    call = channel.stream_unary(
        method,
        request_serializer=service_pb2.DiagnoseRequest.SerializeToString if framed else None,
    )
    if framed:
        chunks = (service_pb2.DiagnoseRequest(checkpoint_chunk=chunk) for chunk in chunks)
    seconds, received = struct.unpack("!dq", call(chunks, timeout=600))
    return seconds, received


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
