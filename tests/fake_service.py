"""A stand-in gradhealth service on loopback, for client and CLI tests that need
a real gRPC server but no TensorFlow: it answers from a list of verdicts held
in memory, behind the server's own interceptors (CallLog, BearerTokenAuth).

Diagnose reads the stream the way the real one does (header first, then the
parts) and answers a fixed verdict, or INVALID_ARGUMENT for the run "refuse".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from gradhealth.v1 import service_pb2, service_pb2_grpc, verdict_pb2
from gradhealth_server.service.auth import BearerTokenAuth
from gradhealth_server.service.call_log import CallLog


def verdict(
    run_id: str,
    step: int,
    status: str = "healthy",
    findings: Sequence[tuple[str, str, Sequence[str]]] = (),
    layers: dict[str, tuple[float, float | None]] | None = None,
    loss: float = 2.3,
    accuracy: float | None = 0.1,
    reported: dict[str, float] | None = None,
    created: dt.datetime | None = None,
) -> verdict_pb2.Verdict:
    """A wire Verdict with the measurement fields the report reads: per layer
    (gradient norm, update ratio), loss and accuracy."""
    layers = layers if layers is not None else {"dense": (0.5, 1e-3), "out": (0.2, 1e-3)}
    measurements = {
        "loss": loss,
        "accuracy": accuracy,
        "grad_norm": sum(g for g, _ in layers.values()),
        "layers": [
            {"name": name, "grad_norm": g, "update_ratio": r, "weight_norm": 1.0}
            for name, (g, r) in layers.items()
        ],
    }
    proto = verdict_pb2.Verdict(
        verdict_id=str(uuid.uuid4()),
        run_id=run_id,
        step=step,
        status=verdict_pb2.Status.Value(f"STATUS_{status.upper()}"),
    )
    proto.create_time.FromDatetime(created or dt.datetime.now(dt.UTC))
    json_format.ParseDict(measurements, proto.measurements)
    for cause, severity, names in findings:
        proto.findings.add(
            cause=verdict_pb2.Cause.Value(f"CAUSE_{cause.upper()}"),
            severity=verdict_pb2.Severity.Value(f"SEVERITY_{severity.upper()}"),
            summary=f"{cause} seen",
            remedy=f"fix {cause}",
            layers=list(names),
        )
    if findings:
        proto.primary_cause = proto.findings[0].cause
    for key, value in (reported or {}).items():
        setattr(proto.training_metrics, key, value)
    proto.phase_seconds["probe"] = 0.05
    return proto


@dataclass
class FakeService(service_pb2_grpc.GradientHealthServiceServicer):
    verdicts: list[verdict_pb2.Verdict] = field(default_factory=list)
    watch_backlog: list[verdict_pb2.Verdict] = field(default_factory=list)

    async def Diagnose(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        header = None
        async for message in request_iterator:
            if header is None:
                header = message.header
        if header is None or header.run_id == "refuse":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "layer 'sneaky' is a Lambda: refused"
            )
        found = verdict(header.run_id, header.step, "critical", [("dead_relu", "critical", ["d"])])
        self.verdicts.append(found)
        return service_pb2.DiagnoseResponse(verdict=found)

    async def ListVerdicts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        found = [v for v in self.verdicts if not request.run_id or v.run_id == request.run_id]
        if request.status:
            found = [v for v in found if v.status == request.status]
        if request.HasField("start_time"):
            start = request.start_time.ToDatetime(dt.UTC)
            found = [v for v in found if v.create_time.ToDatetime(dt.UTC) >= start]
        found.sort(key=lambda v: (v.step, v.create_time.ToDatetime()), reverse=True)
        return service_pb2.ListVerdictsResponse(verdicts=found[: request.page_size or 50])

    async def ListRuns(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        runs = {}
        for v in sorted(self.verdicts, key=lambda v: v.step):
            runs[v.run_id] = service_pb2.Run(
                run_id=v.run_id,
                latest_status=v.status,
                latest_step=v.step,
                verdict_count=sum(1 for w in self.verdicts if w.run_id == v.run_id),
                state=service_pb2.RUN_STATE_FINISHED if v.run_id.endswith("-done") else 0,
            )
        return service_pb2.ListRunsResponse(runs=list(runs.values()))

    async def WatchVerdicts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        for item in self.watch_backlog:
            yield service_pb2.WatchVerdictsResponse(verdict=item)
        await asyncio.sleep(3600)


@dataclass
class Running:
    target: str
    service: FakeService
    stop: Any

    def __repr__(self) -> str:
        return f"FakeService({self.target})"


@contextmanager
def fake_service(
    service: FakeService | None = None, token: str | None = None, port: int = 0
) -> Iterator[Running]:
    """The fake on 127.0.0.1 (a free port unless given), in a thread of this process."""
    service = service or FakeService()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def run() -> None:
        interceptors: list[Any] = [CallLog()]
        if token:
            interceptors.append(BearerTokenAuth(token))
        server = grpc.aio.server(interceptors=interceptors)
        service_pb2_grpc.add_GradientHealthServiceServicer_to_server(service, server)
        box["port"] = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        box["server"] = server
        ready.set()
        box["stopped"] = asyncio.Event()
        await box["stopped"].wait()
        await server.stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the fake service did not start"

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(box["stopped"].set)
            thread.join(10)

    try:
        yield Running(f"127.0.0.1:{box['port']}", service, stop)
    finally:
        stop()
