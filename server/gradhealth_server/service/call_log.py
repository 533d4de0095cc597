"""One log line per call: what the client sent and how the call ended.

A grpc.aio interceptor, outermost, so it also sees calls the token check
refuses. Diagnose: run, step, checkpoint and batch sizes, request id, then the
verdict's status, primary cause and phase times, or the refusal's code and
message. Queries: the method, the run asked about, the code, and how many
verdicts a watch delivered. Health checks and reflection are not logged (probes
call them every few seconds).

Never logged: metadata (the bearer token), chunk bytes, the batch, evidence.
Run ids and messages are client-influenced text: the text format quotes them
(repr), the JSON format escapes them, so a newline cannot forge a log line.

`configure_logging("json")` turns every server log line into one JSON object
(time, level, logger, message, and the call's fields under their own keys).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from gradhealth.contract import enum_name
from gradhealth.v1 import service_pb2, verdict_pb2
from gradhealth_server.service.interceptor import WrappingInterceptor, same_kind

log = logging.getLogger("gradhealth_server.calls")

QUIET_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Fields of a line, in the order the text format prints them.
ORDER = (
    "method",
    "code",
    "run",
    "step",
    "checkpoint_bytes",
    "batch_bytes",
    "status",
    "primary_cause",
    "findings",
    "verdict_id",
    "verdicts_sent",
    "message",
    "phases",
    "seconds",
    "request_id",
    "peer",
)


class CallLog(WrappingInterceptor):
    passes = QUIET_SERVICES

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = details.method.rsplit("/", 1)[-1]
        if handler.request_streaming and handler.response_streaming:
            return handler  # no bidirectional RPC in gradhealth.v1
        if handler.request_streaming:
            return same_kind(handler, _stream_unary(method, handler.stream_unary))
        if handler.response_streaming:
            return same_kind(handler, _unary_stream(method, handler.unary_stream))
        return same_kind(handler, _unary_unary(method, handler.unary_unary))


@contextlib.contextmanager
def _recorded(
    fields: dict[str, Any],
    context: grpc.aio.ServicerContext,
    finish: Callable[[], None] = lambda: None,
) -> Iterator[None]:
    """Logs the call once it ends: its code and message, or OK; `finish` adds
    what is only known then (the upload's header)."""
    started = time.perf_counter()
    # The peer now, while the call is alive: a call cancelled by its client may be
    # freed by gRPC before a streaming handler ends, and reading its peer then
    # crashes the process (SIGSEGV in grpc.aio, seen on a cancelled WatchVerdicts).
    with contextlib.suppress(Exception):
        fields["peer"] = context.peer()
    try:
        yield
    except BaseException as exc:
        _ended(fields, context, exc)
        finish()
        _emit(fields, started)
        raise
    finish()
    fields.setdefault("code", "OK")
    _emit(fields, started)


def _stream_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def logged(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        seen: dict[str, Any] = {}

        async def peek() -> AsyncIterator[Any]:
            async for message in requests:
                if not seen and isinstance(message, service_pb2.DiagnoseRequest):
                    if message.WhichOneof("part") == "header":
                        seen["header"] = message.header
                    seen["first"] = True
                yield message

        fields: dict[str, Any] = {"method": method}
        response = None

        def finish() -> None:
            _header_fields(fields, seen.get("header"))
            if isinstance(response, service_pb2.DiagnoseResponse):
                fields.update(verdict_fields(response.verdict))

        with _recorded(fields, context, finish):
            response = await behavior(peek(), context)
        return response

    return logged


def _unary_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def logged(request: Any, context: grpc.aio.ServicerContext) -> Any:
        fields: dict[str, Any] = {"method": method}
        if getattr(request, "run_id", ""):
            fields["run"] = request.run_id
        with _recorded(fields, context):
            return await behavior(request, context)

    return logged


def _unary_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def logged(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        fields: dict[str, Any] = {"method": method, "verdicts_sent": 0}
        if getattr(request, "run_id", ""):
            fields["run"] = request.run_id
        with _recorded(fields, context):
            async for response in behavior(request, context):
                fields["verdicts_sent"] += 1
                yield response

    return logged


def _ended(fields: dict[str, Any], context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """The code and message a failed call ended with (context.abort sets both)."""
    code = _context_code(context)
    if code is None:
        import asyncio

        code = (
            grpc.StatusCode.CANCELLED
            if isinstance(exc, asyncio.CancelledError)
            else grpc.StatusCode.UNKNOWN
        )
        message = (
            "the call was cancelled" if code == grpc.StatusCode.CANCELLED else type(exc).__name__
        )
    else:
        message = _context_details(context)
    fields["code"] = code.name
    if message:
        fields["message"] = " ".join(message.split())[:300]


def _context_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:
        return None
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    # grpc.aio hands back the core's integer status
    return next((c for c in grpc.StatusCode if c.value[0] == code), None)


def _context_details(context: grpc.aio.ServicerContext) -> str:
    try:
        details = context.details()
    except Exception:
        return ""
    if isinstance(details, bytes):
        details = details.decode("utf-8", "replace")
    return details or ""


def _header_fields(fields: dict[str, Any], header: service_pb2.DiagnoseHeader | None) -> None:
    if header is None:
        return
    fields.setdefault("run", header.run_id or "(ad hoc)")
    fields["step"] = header.step
    fields["checkpoint_bytes"] = header.checkpoint.size_bytes
    fields["batch_bytes"] = header.batch.size_bytes
    if header.request_id:
        fields["request_id"] = header.request_id[:64]


def verdict_fields(verdict: verdict_pb2.Verdict) -> dict[str, Any]:
    return {
        "run": verdict.run_id,
        "step": verdict.step,
        "status": enum_name(verdict_pb2.Status, verdict.status, "STATUS_"),
        "primary_cause": enum_name(verdict_pb2.Cause, verdict.primary_cause, "CAUSE_"),
        "findings": [
            enum_name(verdict_pb2.Cause, f.cause, "CAUSE_") or "?" for f in verdict.findings
        ],
        "verdict_id": verdict.verdict_id,
        "phases": {name: round(s, 4) for name, s in sorted(verdict.phase_seconds.items())},
    }


def _emit(fields: dict[str, Any], started: float) -> None:
    fields["seconds"] = round(time.perf_counter() - started, 4)
    failed = fields.get("code") not in ("OK", "CANCELLED")
    level = logging.WARNING if failed else logging.INFO
    log.log(level, "%s", _text(fields), extra={"call": fields})


def _text(fields: dict[str, Any]) -> str:
    """`Diagnose OK run='r' step=57 checkpoint_bytes=… status=critical …`"""
    parts = [f"{fields['method']} {fields.get('code', '?')}"]
    for key in ORDER[2:]:
        if key not in fields or fields[key] in (None, [], {}):
            continue
        value = fields[key]
        if key == "phases":
            value = ",".join(f"{k}:{v:.3g}" for k, v in value.items())
        elif key == "findings":
            value = ",".join(value)
        elif isinstance(value, str) and key in ("run", "message", "request_id"):
            value = repr(value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


class JsonLines(logging.Formatter):
    """One JSON object per log record; a call's fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        call = getattr(record, "call", None)
        if isinstance(call, dict):
            line["event"] = "call"
            line.update(call)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """The server's log: text lines (time, logger, message) or JSON lines."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
