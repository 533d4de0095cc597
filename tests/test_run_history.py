"""Run history through the real server: stalls across real checkpoints, weights
that stop changing, restarts, replicas sharing PostgreSQL, many writers."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import grpc
import pytest

from gradhealth.client import GradientHealthClient
from tests.service import TOKEN, ServerProcess

# The session's shared server outlives this module: run ids unique per session.
RUN = {
    name: f"{name}-{uuid.uuid4().hex[:6]}" for name in ("stuck-run", "healthy-run", "frozen-run")
}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres):
    """Two servers sharing one PostgreSQL database."""
    url = postgres.database(f"replicas_{uuid.uuid4().hex[:8]}")
    servers = [
        ServerProcess(Path(tmp_path_factory.mktemp(f"replica{i}")), db=url).start(wait=False)
        for i in range(2)
    ]
    for server in servers:
        server.wait_serving()
    yield servers
    for server in servers:
        assert server.stop() == 0, server.log()


def causes(verdict) -> dict[str, str]:
    return {f.cause: f.severity for f in verdict.findings}


def test_a_run_that_does_not_learn_is_stalled_and_says_why(server, stuck_run, flat_batch):
    with GradientHealthClient(server.target, token=TOKEN) as client:
        verdicts = [
            client.diagnose(path, batch=flat_batch, run_id=RUN["stuck-run"], step=100 * (i + 1))
            for i, path in enumerate(stuck_run)
        ]
        runs = {r.run_id: r for r in client.list_runs()}
    accuracies = [v.measurements["accuracy"] for v in verdicts]
    assert max(accuracies) - min(accuracies) <= 0.02  # the symptom is real
    assert all("stalled" not in causes(v) for v in verdicts[:4])  # not before the window
    last = verdicts[-1]
    assert causes(last)["stalled"] == "critical"
    assert last.primary_cause == "learning_rate_too_low"
    stall = next(f for f in last.findings if f.cause == "stalled")
    assert stall.summary.startswith("stalled: learning_rate_too_low")
    assert runs[RUN["stuck-run"]].stalled and runs[RUN["stuck-run"]].verdict_count == 5


def test_a_healthy_run_is_not_stalled(server, healthy_run, flat_batch):
    with GradientHealthClient(server.target, token=TOKEN) as client:
        verdicts = [
            client.diagnose(path, batch=flat_batch, run_id=RUN["healthy-run"], step=100 * (i + 1))
            for i, path in enumerate(healthy_run)
        ]
    accuracies = [v.measurements["accuracy"] for v in verdicts]
    assert accuracies[-1] > accuracies[0] + 0.1  # it learns
    assert all("stalled" not in causes(v) for v in verdicts)
    assert all("unchanged_weights" not in causes(v) for v in verdicts)


def test_the_same_weights_twice_are_unchanged_weights(server, healthy_run, flat_batch):
    with GradientHealthClient(server.target, token=TOKEN) as client:
        client.diagnose(healthy_run[0], batch=flat_batch, run_id=RUN["frozen-run"], step=100)
        again = client.diagnose(
            healthy_run[0], batch=flat_batch, run_id=RUN["frozen-run"], step=200
        )
    assert causes(again)["unchanged_weights"] == "critical"
    assert again.primary_cause == "unchanged_weights"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_verdicts_survive_a_server_restart(request, tmp_path, checkpoints, batch, backend):
    db = None
    if backend == "postgresql":
        db = request.getfixturevalue("postgres").database(f"restart_{uuid.uuid4().hex[:8]}")
    server = ServerProcess(tmp_path, db=db).start()
    with GradientHealthClient(server.target) as client:
        made = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="restart", step=1)
    assert server.stop() == 0, server.log()
    server = ServerProcess(tmp_path, db=db).start()  # the same database
    try:
        with GradientHealthClient(server.target) as client:
            assert client.get_verdict(made.verdict_id).proto == made.proto
            assert [r.run_id for r in client.list_runs()] == ["restart"]
            # A watcher after the restart gets new verdicts only, not the stored ones.
            stream = client.watch_verdicts()
            first = []
            thread = threading.Thread(target=lambda: first.append(next(stream)), daemon=True)
            thread.start()
            server.wait_metric("gradhealth_watchers", 1)
            new = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="restart", step=2)
            thread.join(30)
            stream.close()
            assert [v.verdict_id for v in first] == [new.verdict_id]
    finally:
        assert server.stop() == 0, server.log()


def test_replicas_share_history_and_watchers_see_each_others_verdicts(
    replicas, stuck_run, flat_batch
):
    first, second = replicas
    seen = []
    with GradientHealthClient(second.target) as watcher_client:
        stream = watcher_client.watch_verdicts(run_id="shared-run")
        ready = threading.Event()

        def watch():
            ready.set()
            seen.extend(next(stream) for _ in range(2))

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        ready.wait()
        second.wait_metric("gradhealth_watchers", 1)
        # Round robin over both replicas: consecutive checkpoints land on both.
        target = f"ipv4:{first.target},{second.target}"
        options = [("grpc.lb_policy_name", "round_robin")]
        with GradientHealthClient(target, options=options) as client:
            verdicts = [
                client.diagnose(path, batch=flat_batch, run_id="shared-run", step=100 * (i + 1))
                for i, path in enumerate(stuck_run)
            ]
        thread.join(60)
        stream.close()
    assert [v.verdict_id for v in seen] == [v.verdict_id for v in verdicts[:2]]
    served = [
        s.metric("gradhealth_diagnoses_total", status=st)
        for s in replicas
        for st in ("healthy", "warning", "critical")
    ]
    assert sum(served[:3]) >= 2 and sum(served[3:]) >= 2  # both replicas diagnosed
    assert causes(verdicts[-1])["stalled"] == "critical"  # history crossed replicas


def test_many_clients_at_once_lose_no_verdict(replicas, checkpoints, batch):
    first, second = replicas
    clients, each = 8, 3
    errors = []

    def send(i: int) -> None:
        target = (first if i % 2 else second).target
        try:
            with GradientHealthClient(target) as client:
                for step in range(each):
                    client.diagnose(
                        checkpoints.path("cnn"), batch=batch, run_id=f"busy-{i}", step=step
                    )
        except grpc.RpcError as error:
            errors.append(error)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors
    with GradientHealthClient(first.target) as client:
        busy = [r for r in client.list_runs(page_size=2) if r.run_id.startswith("busy-")]
        stored = sum(len(list(client.list_verdicts(r.run_id, page_size=2))) for r in busy)
    assert len(busy) == clients
    assert stored == clients * each
