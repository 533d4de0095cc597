"""`gradhealth runs`, `verdicts RUN` and `watch [RUN]` against the real server."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest

from gradhealth.client import GradientHealthClient
from tests.service import TOKEN, cli

ENV = {"GRADHEALTH_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}


def test_runs_and_verdicts_list_what_the_server_stored(server, checkpoints, batch):
    with GradientHealthClient(server.target, token=TOKEN) as client:
        made = [
            client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="cli-listed", step=s)
            for s in (1, 2, 3)
        ]
    done = cli("runs", "--server", server.target, "--json")
    assert done.returncode == 0, done.stderr
    runs = {r["run_id"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert runs["cli-listed"]["verdict_count"] == 3
    assert runs["cli-listed"]["latest_step"] == 3
    done = cli("verdicts", "cli-listed", "--server", server.target, "--json", "--limit", "2")
    assert done.returncode == 0, done.stderr
    listed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [v["verdict_id"] for v in listed] == [made[2].verdict_id, made[1].verdict_id]
    table = cli("runs", "--server", server.target)
    assert "cli-listed" in table.stdout


def test_watch_prints_new_verdicts_as_json_lines(server, checkpoints, batch):
    watcher = subprocess.Popen(
        [sys.executable, "-m", "gradhealth.cli", "watch", "cli-watched",
         "--server", server.target, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )  # fmt: skip
    try:
        server.wait_metric("gradhealth_watchers", 1)
        with GradientHealthClient(server.target, token=TOKEN) as client:
            made = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="cli-watched")
        line = watcher.stdout.readline()
        assert json.loads(line)["verdict_id"] == made.verdict_id
    finally:
        watcher.kill()
        watcher.wait()


def test_query_errors_are_one_line(server):
    done = cli("runs", "--server", server.target, token=None)
    assert done.returncode == 2
    assert done.stderr.startswith("gradhealth: error: UNAUTHENTICATED")
    done = cli("verdicts", "x", "--cause", "bogus", "--server", server.target)
    assert done.returncode == 2 and "no cause named 'bogus'" in done.stderr


def test_runs_close_marks_a_run_over_and_ad_hoc_diagnoses_get_runs_of_their_own(
    server, checkpoints, batch
):
    cnn = str(checkpoints.path("cnn"))
    # No --run: an ad-hoc diagnosis, named in the output, never sharing a run.
    first = cli("diagnose", cnn, "--batch", str(batch), "--server", server.target)
    assert first.returncode == 0, first.stderr
    ad_hoc = first.stdout.split("stored under the ad-hoc run ", 1)[1].split()[0]
    second = cli("diagnose", cnn, "--batch", str(batch), "--server", server.target, "--json")
    assert json.loads(second.stdout)["run_id"] not in (ad_hoc, "")
    with GradientHealthClient(server.target, token=TOKEN) as client:
        client.diagnose(cnn, batch=batch, run_id="cli-closed", step=40)
        client.diagnose(cnn, batch=batch, run_id="cli-stopped", step=40)

    done = cli("runs", "close", "cli-closed", "--server", server.target, "--json")
    assert done.returncode == 0, done.stderr
    closed = json.loads(done.stdout)
    assert (closed["state"], closed["end_reason"]) == ("finished", "")
    assert closed["end_time"] >= closed["last_diagnosis_time"]
    done = cli(
        "runs", "close", "cli-stopped", "--stopped", "--cause", "dead_relu",
        "--reason", "stopped by hand", "--server", server.target,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout  # the table

    runs = {
        r["run_id"]: r
        for r in map(
            json.loads, cli("runs", "--server", server.target, "--json").stdout.splitlines()
        )
    }
    assert runs[ad_hoc]["ad_hoc"] and runs[ad_hoc]["state"] == "active"
    assert runs["cli-closed"]["state"] == "finished"
    stopped = runs["cli-stopped"]
    assert (stopped["state"], stopped["stop_cause"], stopped["end_reason"]) == (
        "stopped",
        "dead_relu",
        "stopped by hand",
    )

    # Mistakes are one line each.
    done = cli("runs", "close", "no-such-run", "--server", server.target)
    assert done.returncode == 2 and done.stderr.startswith("gradhealth: error: NOT_FOUND")
    done = cli("runs", "close", "cli-closed", "--cause", "dead_relu", "--server", server.target)
    assert done.returncode == 2 and "--cause goes with --stopped" in done.stderr
    done = cli("runs", "close", "../x", "--server", server.target)
    assert done.returncode == 2 and "INVALID_ARGUMENT: run_id '../x' is not valid" in done.stderr


def test_close_run_refuses_what_is_not_a_close(server):
    from gradhealth.v1 import service_pb2, service_pb2_grpc
    from tests.service import token_metadata

    with server.channel() as channel:
        stub = service_pb2_grpc.GradientHealthServiceStub(channel)
        for request, message in (
            (service_pb2.CloseRunRequest(run_id="r", state=1), "RUN_STATE_FINISHED or"),
            (service_pb2.CloseRunRequest(run_id="r", state=2, stop_cause=3), "stopped runs only"),
            (service_pb2.CloseRunRequest(run_id="r", state=3, reason="x" * 501), "at most 500"),
            (service_pb2.CloseRunRequest(run_id="", state=2), "run_id '' is not valid"),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.CloseRun(request, metadata=token_metadata(), timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in caught.value.details()
