"""The real server on loopback, driven by the real client: verdicts, queries, auth,
health, reflection, and the large-checkpoint path."""

from __future__ import annotations

import hashlib
import json
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gradhealth.client import GradientHealthClient, Retry
from gradhealth.v1 import service_pb2, verdict_pb2
from tests.scenarios import SCENARIOS, save_run, train_cached
from tests.service import TOKEN, cli, token_metadata

# One faulty run per cause, and healthy runs of several kinds.
SAME_AS_EMBEDDED = [
    next(s.name for s in SCENARIOS if s.cause == cause)
    for cause in dict.fromkeys(s.cause for s in SCENARIOS if s.cause)
] + [s.name for s in SCENARIOS if not s.cause][:4]


@pytest.fixture(scope="module")
def client(server):
    with GradientHealthClient(server.target, token=TOKEN, timeout=300) as c:
        yield c


def test_health_is_serving_and_reflection_lists_the_service(server):
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
    assert (
        server.health(service="gradhealth.v1.GradientHealthService")
        == health_pb2.HealthCheckResponse.SERVING
    )
    with server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = stub.ServerReflectionInfo(iter([request]), metadata=token_metadata())
    names = {s.name for s in answer.list_services_response.service}
    assert {"gradhealth.v1.GradientHealthService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("name", SAME_AS_EMBEDDED, ids=str)
def test_server_verdict_equals_embedded_verdict(server, client, diagnoser, tmp_path, name):
    checkpoint, batch = save_run(train_cached(name), tmp_path, name)
    embedded = diagnoser.diagnose(checkpoint, batch)
    verdict = client.diagnose(checkpoint, batch=batch, run_id=f"same-{name}", step=3)
    assert verdict.status == embedded.verdict.status
    assert verdict.primary_cause == (
        str(embedded.verdict.primary_cause) if embedded.verdict.primary_cause else None
    )
    assert [(f.cause, f.severity) for f in verdict.findings] == [
        (str(f.cause), str(f.severity)) for f in embedded.verdict.findings
    ]
    want = embedded.to_dict()["measurements"]  # NaN and inf are strings in JSON
    got = verdict.measurements
    for key in ("loss", "grad_norm"):
        if isinstance(want[key], str):
            assert got[key] == want[key]
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-3), key
    assert verdict.run_id == f"same-{name}" and verdict.step == 3
    assert verdict.proto.checkpoint_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert {"upload", "queue", "load", "batch", "rules"} <= set(verdict.phases)


def test_a_150_mb_checkpoint_uploads_and_is_diagnosed(server, client, tmp_path, batch):
    import keras

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(6400, activation="relu"),
            keras.layers.Dense(6400, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="wide_mlp",
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    x = np.load(batch)["x"].reshape(-1, 64)
    y = np.load(batch)["y"]
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    path = tmp_path / "wide.keras"
    model.save(path)
    assert path.stat().st_size >= 150e6
    before = server.metric("gradhealth_uploaded_bytes_total")
    verdict = client.diagnose(path, x, y, run_id="wide", step=1, mode="norms")
    assert verdict.proto.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert verdict.measurements["rows"] == len(x)
    assert len(verdict.measurements["layers"]) == 3
    assert server.metric("gradhealth_uploaded_bytes_total") - before >= path.stat().st_size
    assert server.spooled() == []  # the upload's temp files are gone


def test_wrong_or_missing_token_is_unauthenticated(server, checkpoints, batch):
    for token in ("not-the-token", None):
        with GradientHealthClient(server.target, token=token, retry=Retry(attempts=1)) as bad:
            with pytest.raises(grpc.RpcError) as caught:
                bad.diagnose(checkpoints.path("cnn"), batch=batch, run_id="intruder")
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer token" in caught.value.details()
            with pytest.raises(grpc.RpcError) as caught:
                bad.list_runs()
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.metric("gradhealth_rejected_total", reason="unauthenticated") >= 4


def test_queries_answer_from_the_stored_verdicts(server, client, checkpoints, batch):
    made = [
        client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="query-run", step=step)
        for step in (10, 20, 30)
    ]
    again = client.get_verdict(made[1].verdict_id)
    assert again.proto == made[1].proto
    listed = list(client.list_verdicts("query-run", page_size=2))
    assert [v.step for v in listed] == [30, 20, 10]  # newest first, across pages
    critical = list(client.list_verdicts("query-run", status=verdict_pb2.STATUS_HEALTHY))
    assert all(v.status == "healthy" for v in critical)
    runs = {r.run_id: r for r in client.list_runs(page_size=1)}
    assert runs["query-run"].verdict_count == 3
    assert runs["query-run"].latest_step == 30
    with pytest.raises(grpc.RpcError) as caught:
        client.get_verdict("no-such-verdict")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_verdicts_streams_new_verdicts(server, client, checkpoints, batch):
    seen: list = []
    ready = threading.Event()

    def watch():
        stream = client.watch_verdicts(run_id="watched")
        ready.set()
        seen.append(next(stream))
        stream.close()

    thread = threading.Thread(target=watch)
    thread.start()
    ready.wait()
    server.wait_metric("gradhealth_watchers", 1)  # the watch reached the server
    client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="unwatched")
    made = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="watched", step=5)
    thread.join(60)
    assert [v.verdict_id for v in seen] == [made.verdict_id]


def test_cli_server_mode_prints_the_embedded_json_shape(server, checkpoints, batch, diagnoser):
    embedded = diagnoser.diagnose(checkpoints.path("cnn"), batch).to_dict()
    done = cli(
        "diagnose", str(checkpoints.path("cnn")), "--batch", str(batch),
        "--server", server.target, "--run", "cli-run", "--step", "7", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert set(embedded) <= set(printed)
    assert printed["status"] == embedded["status"]
    assert printed["primary_cause"] == embedded["primary_cause"]
    assert printed["run_id"] == "cli-run" and printed["step"] == 7
    assert printed["measurements"]["loss"] == pytest.approx(embedded["measurements"]["loss"])


def test_cli_server_mode_reports_errors_in_one_line(server, checkpoints, batch):
    done = cli(
        "diagnose", str(checkpoints.path("cnn")), "--batch", str(batch),
        "--server", server.target, token="wrong",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("gradhealth: error: UNAUTHENTICATED")
    assert len(done.stderr.strip().splitlines()) == 1


def test_query_with_a_bad_page_token_is_invalid_argument(server):
    with server.channel() as channel:
        from gradhealth.v1 import service_pb2_grpc

        stub = service_pb2_grpc.GradientHealthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListVerdicts(
                service_pb2.ListVerdictsRequest(page_token="%%%"), metadata=token_metadata()
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_dict_input_model_is_diagnosed_through_the_client(client):
    """keras.Model(inputs={"means": ..., "extremes": ...}) with keys not in sorted order:
    the client sends x_<name> arrays, the worker feeds the model a dict by key."""
    import keras

    rng = np.random.default_rng(0)
    x = {
        "means": rng.normal(size=(96, 6)).astype("float32"),
        "extremes": rng.normal(size=(96, 3)).astype("float32"),
    }
    y = (x["means"][:, 0] + x["extremes"][:, 1] > 0).astype("float32")
    means, extremes = keras.Input((6,), name="means"), keras.Input((3,), name="extremes")
    h = keras.layers.Concatenate()([keras.layers.Dense(8)(means), keras.layers.Dense(4)(extremes)])
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs={"means": means, "extremes": extremes}, outputs=out)
    model.compile("adam", "binary_crossentropy")
    verdict = client.diagnose(model, x, y, run_id="dict-inputs", step=1)
    assert verdict.run_id == "dict-inputs"
    assert np.isfinite(verdict.measurements["loss"])
