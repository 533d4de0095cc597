"""One structured log line per call on the server (server/gradhealth_server/service/call_log.py):
run, step, sizes, status, primary cause, phases; or the refusal's code and
message. Never the token, never payload bytes. Text and JSON lines."""

from __future__ import annotations

import json
import logging

import grpc
import numpy as np
import pytest

from gradhealth.client import GradientHealthClient, Retry
from gradhealth_server.service.call_log import JsonLines
from tests.fake_service import FakeService, fake_service, verdict

TOKEN = "s3cret-token-for-the-log-test"
MARKER = b"PAYLOAD-BYTES-MUST-NOT-BE-LOGGED"


@pytest.fixture
def calls(caplog):
    caplog.set_level(logging.INFO, logger="gradhealth_server.calls")

    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "gradhealth_server.calls"]

    return records


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(MARKER * 100)
    return path


def test_a_verdict_is_one_line_with_run_step_sizes_status_cause_and_phases(calls, checkpoint):
    with (
        fake_service(token=TOKEN) as server,
        GradientHealthClient(server.target, token=TOKEN) as client,
    ):
        client.diagnose(checkpoint, np.zeros((4, 3)), np.zeros(4), run_id="r-1", step=57)
    (record,) = [r for r in calls() if r.call["method"] == "Diagnose"]
    call = record.call
    assert call["code"] == "OK" and call["run"] == "r-1" and call["step"] == 57
    assert call["checkpoint_bytes"] == checkpoint.stat().st_size
    assert call["batch_bytes"] > 0
    assert call["status"] == "critical" and call["primary_cause"] == "dead_relu"
    assert call["findings"] == ["dead_relu"] and call["phases"] == {"probe": 0.05}
    assert call["peer"].startswith("ipv4:127.0.0.1:") and call["seconds"] >= 0
    text = record.getMessage()
    assert text.startswith("Diagnose OK run='r-1' step=57 checkpoint_bytes=")
    assert "status=critical primary_cause=dead_relu findings=dead_relu" in text
    assert "\n" not in text


def test_a_refusal_is_logged_with_its_code_and_message(calls, checkpoint):
    with (
        fake_service(token=TOKEN) as server,
        GradientHealthClient(server.target, token=TOKEN, retry=Retry(attempts=1)) as client,
        pytest.raises(grpc.RpcError),
    ):
        client.diagnose(checkpoint, np.zeros((4, 3)), np.zeros(4), run_id="refuse", step=3)
    (record,) = [r for r in calls() if r.call["method"] == "Diagnose"]
    assert record.levelno == logging.WARNING
    assert record.call["code"] == "INVALID_ARGUMENT"
    assert record.call["message"] == "layer 'sneaky' is a Lambda: refused"
    assert record.call["run"] == "refuse" and record.call["step"] == 3
    assert "status" not in record.call


def test_an_unauthenticated_call_is_logged_without_the_token(calls, checkpoint, caplog):
    with (
        fake_service(token=TOKEN) as server,
        GradientHealthClient(
            server.target, token="wrong-" + TOKEN, retry=Retry(attempts=1)
        ) as client,
    ):
        with pytest.raises(grpc.RpcError):
            client.list_runs()
        with pytest.raises(grpc.RpcError):
            client.diagnose(checkpoint, np.zeros((4, 3)), np.zeros(4), run_id="x")
    codes = {r.call["method"]: r.call["code"] for r in calls()}
    assert codes == {"ListRuns": "UNAUTHENTICATED", "Diagnose": "UNAUTHENTICATED"}
    everything = caplog.text + "".join(JsonLines().format(r) for r in caplog.records)
    assert TOKEN not in everything
    assert MARKER.decode() not in everything


def test_queries_and_watches_are_logged(calls):
    service = FakeService([verdict("q", 1)], watch_backlog=[verdict("q", 2), verdict("q", 3)])
    with fake_service(service) as server, GradientHealthClient(server.target) as client:
        assert len(list(client.list_verdicts("q"))) == 1
        stream = client.watch_verdicts("q")
        next(stream), next(stream)
        stream.close()
    by_method = {r.call["method"]: r.call for r in calls()}
    assert by_method["ListVerdicts"]["run"] == "q" and by_method["ListVerdicts"]["code"] == "OK"
    import time

    deadline = time.monotonic() + 5
    while "WatchVerdicts" not in {r.call["method"] for r in calls()}:
        assert time.monotonic() < deadline, "the watch's end was never logged"
        time.sleep(0.05)
    watch = next(r.call for r in calls() if r.call["method"] == "WatchVerdicts")
    assert watch["code"] == "CANCELLED" and watch["verdicts_sent"] == 2


class EndingCall:
    """A servicer context whose call ends while its handler is suspended: gRPC may
    free a cancelled call before the handler's generator is closed, and reading
    its peer then crashed the server (SIGSEGV in grpc.aio, stop 29's CI)."""

    def __init__(self) -> None:
        self.ended = False
        self.peer_reads_after_end = 0

    def peer(self) -> str:
        self.peer_reads_after_end += self.ended
        return "ipv4:127.0.0.1:5000"

    def code(self) -> None:
        return None

    def details(self) -> str:
        return ""


def test_a_watch_closed_after_its_call_ended_never_touches_the_call(calls):
    import asyncio

    from gradhealth_server.service.call_log import _unary_stream

    async def watch(request, context):
        while True:
            yield "a verdict"

    async def scenario(context: EndingCall) -> None:
        logged = _unary_stream("WatchVerdicts", watch)(object(), context)
        assert await anext(logged) == "a verdict"
        context.ended = True  # the client cancelled; gRPC dropped the call
        await logged.aclose()  # what asyncio's finalizer does with the generator

    context = EndingCall()
    asyncio.run(scenario(context))
    assert context.peer_reads_after_end == 0
    (call,) = [r.call for r in calls() if r.call["method"] == "WatchVerdicts"]
    assert call["peer"] == "ipv4:127.0.0.1:5000" and call["verdicts_sent"] == 1


def test_json_lines_are_one_object_per_line_and_newlines_in_run_ids_cannot_forge_lines(
    calls, checkpoint
):
    with fake_service() as server, GradientHealthClient(server.target) as client:
        client.diagnose(checkpoint, np.zeros((4, 3)), np.zeros(4), run_id="a\nFAKE b", step=1)
    (record,) = [r for r in calls() if r.call["method"] == "Diagnose"]
    line = JsonLines().format(record)
    assert "\n" not in line and "\n" not in record.getMessage()
    body = json.loads(line)
    assert body["event"] == "call" and body["level"] == "info"
    assert body["run"] == "a\nFAKE b" and body["status"] == "critical"
    assert body["time"].endswith("+00:00")
    plain = logging.LogRecord(
        "gradhealth_server.service.serve", logging.INFO, "", 0, "up %d", (1,), None
    )
    assert json.loads(JsonLines().format(plain))["message"] == "up 1"
