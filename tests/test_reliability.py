"""Overload, crashes and outages against the real server: it stays up, refuses
what it cannot take with a clear status, and never loses a stored verdict.

Every load here is bounded in count and time and goes to loopback only."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from gradhealth.client import GradientHealthClient, Retry
from tests.postgres import ThrowawayPostgres
from tests.service import TOKEN, MemoryWatch, ServerProcess, free_port, kill, rss_bytes

ONE_TRY = Retry(attempts=1)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def stored_verdicts(url: str, run_prefix: str) -> list[tuple[str, str | None]]:
    """(verdict_id, request_id) of every stored verdict of these runs, read directly."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            rows = db.execute(
                sa.text("SELECT verdict_id, request_id FROM verdicts WHERE run_id LIKE :p"),
                {"p": f"{run_prefix}%"},
            ).all()
    finally:
        engine.dispose()
    return [tuple(row) for row in rows]


# --- overload ---------------------------------------------------------------------

CLIENTS, CALLS_EACH, QUEUE = 24, 3, 4


def test_overload_refuses_the_excess_and_stores_every_accepted_verdict(
    tmp_path, checkpoints, batch
):
    db = f"sqlite:///{tmp_path / 'verdicts.db'}"
    server = ServerProcess(tmp_path, "--queue-size", str(QUEUE), db=db).start()
    checkpoint = checkpoints.path("cnn")
    outcomes: list[str] = []
    details: list[str] = []  # what each refusal said
    barrier = threading.Barrier(CLIENTS)

    def client_loop(i: int) -> None:
        with GradientHealthClient(server.target, retry=ONE_TRY, timeout=120) as client:
            barrier.wait()
            for call in range(CALLS_EACH):
                try:
                    client.diagnose(checkpoint, batch=batch, run_id=f"load-{i}", step=call)
                    outcomes.append("verdict")
                except grpc.RpcError as error:
                    outcomes.append(error.code().name)
                    details.append(error.details() or "")

    try:
        with GradientHealthClient(server.target) as warm:  # compile once: the load is warm
            warm.diagnose(checkpoint, batch=batch, run_id="warm-up")
        baseline = rss_bytes(server.process.pid)
        started = time.monotonic()
        with MemoryWatch(server) as memory:
            threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(180)
        elapsed = time.monotonic() - started
        accepted = outcomes.count("verdict")
        refused = outcomes.count("RESOURCE_EXHAUSTED")
        # Every call was answered: a verdict, or a clear "come back later".
        assert len(outcomes) == CLIENTS * CALLS_EACH and accepted + refused == len(outcomes)
        assert refused > 0 and accepted > QUEUE  # it was overloaded, and it kept working
        # Each refusal counted under its reason, and said in one line: the queue was
        # full, or (24 clients against 16 upload places) the upload places were.
        queue_full = server.metric("gradhealth_rejected_total", reason="queue_full")
        uploads_full = server.metric("gradhealth_rejected_total", reason="uploads_full")
        said = {"queue": "the diagnosis queue is full", "uploads": "uploads are in progress"}
        assert queue_full == sum(said["queue"] in d for d in details) > 0, set(details)
        assert uploads_full == sum(said["uploads"] in d for d in details), set(details)
        assert queue_full + uploads_full == refused, set(details)
        # Every accepted call's verdict is stored, once.
        stored = stored_verdicts(db, "load-")
        assert len(stored) == accepted and len({r for _, r in stored}) == accepted
        # Still up and serving; memory bounded (uploads are spooled to disk).
        assert server.health() == 1  # SERVING
        with GradientHealthClient(server.target, retry=ONE_TRY) as client:
            assert client.diagnose(checkpoint, batch=batch, run_id="after-load").status
        assert memory.peak_server - baseline < 300 * 2**20, memory.peak_server
        assert memory.peak_workers < 3 * 2**30, memory.peak_workers
        print(
            f"\noverload: {len(outcomes)} calls from {CLIENTS} clients in {elapsed:.1f} s, "
            f"{accepted} verdicts (all stored), {refused} RESOURCE_EXHAUSTED ({queue_full:.0f} "
            f"queue full, {uploads_full:.0f} upload places full); server RSS "
            f"{baseline / 2**20:.0f} -> peak {memory.peak_server / 2**20:.0f} MiB, workers "
            f"peak {memory.peak_workers / 2**20:.0f} MiB"
        )
    finally:
        assert server.stop() == 0, server.log()


# --- the server killed mid-write ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'verdicts.db'}"
    return request.getfixturevalue("postgres").database(f"kill_{uuid.uuid4().hex[:10]}")


def test_sigkill_mid_write_then_restart_loses_and_duplicates_nothing(
    tmp_path, database, checkpoints, batch
):
    """Clients keep retrying (one request id per call) while the server is killed
    with SIGKILL in the middle of the calls and started again on the same store."""
    port = free_port()
    server = ServerProcess(tmp_path / "first", port=port, db=database).start()
    calls, results, errors = 8, {}, []  # all fit the default queue (8): none refused
    prefix = f"killed-{uuid.uuid4().hex[:6]}-"

    def call(i: int) -> None:
        try:
            with GradientHealthClient(server.target, timeout=180) as client:
                verdict = client.diagnose(
                    checkpoints.path("cnn"), batch=batch, run_id=f"{prefix}{i}", step=i
                )
                results[i] = verdict.verdict_id
        except Exception as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    # Two verdicts in (two workers can finish together: the counter may step over 2).
    server.wait_metric(
        "gradhealth_diagnoses_total", 2, timeout=120, at_least=True, status="healthy"
    )
    old_workers = server.worker_pids()
    kill(server.process.pid)  # mid-stream: some calls uploading, queued, or being stored
    server.process.wait(30)
    restarted = ServerProcess(tmp_path / "second", port=port, db=database).start()
    try:
        for thread in threads:
            thread.join(240)
        assert not errors, errors
        assert len(results) == calls  # every call got its verdict, across the crash
        stored = stored_verdicts(database, prefix)
        assert len(stored) == calls  # none lost, none twice (request ids deduplicate)
        assert {verdict_id for verdict_id, _ in stored} == set(results.values())
        with GradientHealthClient(restarted.target) as client:
            for verdict_id in results.values():  # every reply is readable in full
                assert client.get_verdict(verdict_id).verdict_id == verdict_id
        if database.startswith("sqlite"):
            path = database.removeprefix("sqlite:///")
            with sqlite3.connect(path) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # The killed server's workers noticed their parent was gone and exited.
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in old_workers):
            assert time.monotonic() < deadline, f"orphaned workers {old_workers}"
            time.sleep(0.2)
    finally:
        assert restarted.stop() == 0, restarted.log()


# --- the database goes away and comes back --------------------------------------------

SECRET_PASSWORD = "pw-" + uuid.uuid4().hex


@pytest.mark.postgresql
def test_a_database_outage_gives_unavailable_then_recovers_by_itself(tmp_path, checkpoints, batch):
    database = ThrowawayPostgres().start()
    try:
        url = database.database("outage").replace(
            "gradhealth@",
            f"gradhealth:{SECRET_PASSWORD}@",  # trust auth ignores it
        )
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        server = ServerProcess(tmp_path, "--token-file", str(token_file), db=url).start()
        cnn = checkpoints.path("cnn")
        try:
            with GradientHealthClient(server.target, token=TOKEN, retry=ONE_TRY) as client:
                before = client.diagnose(cnn, batch=batch, run_id="outage", step=1)
                database.pause()
                with pytest.raises(grpc.RpcError) as caught:
                    client.diagnose(cnn, batch=batch, run_id="outage", step=2)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "verdict store is unavailable" in caught.value.details()
                with pytest.raises(grpc.RpcError) as query:
                    client.list_runs()
                assert query.value.code() == grpc.StatusCode.UNAVAILABLE
                assert server.metric("gradhealth_store_up") == 0
                assert server.health() == 1  # still SERVING: the outage is the database's

            # A job that retries (the default client) rides out the outage.
            waiting: dict[str, object] = {}

            def retrying_call() -> None:
                with GradientHealthClient(server.target, token=TOKEN, timeout=120) as client:
                    waiting["verdict"] = client.diagnose(cnn, batch=batch, run_id="outage", step=3)

            thread = threading.Thread(target=retrying_call)
            thread.start()
            time.sleep(3)  # it is being refused and retried meanwhile
            database.resume()
            thread.join(150)
            assert waiting["verdict"].step == 3
            with GradientHealthClient(server.target, token=TOKEN) as client:
                steps = sorted(v.step for v in client.list_verdicts("outage"))
                assert steps == [1, 3]  # nothing lost; the refused call stored nothing
                assert client.get_verdict(before.verdict_id).step == 1
            assert server.metric("gradhealth_store_up") == 1
            wrong = GradientHealthClient(server.target, token="wrong-" + SECRET_PASSWORD)
            with wrong, pytest.raises(grpc.RpcError):  # for the log check below
                wrong.list_runs()
        finally:
            assert server.stop() == 0, server.log()
        log = server.log()
        assert "verdict store failed" in log or "storing verdict" in log  # the outage is logged
        for secret in (SECRET_PASSWORD, TOKEN):
            assert secret not in log, "a secret reached the server log"
        assert "[SQL:" not in log and "INSERT INTO" not in log  # no statements or verdict blobs
    finally:
        database.stop()


def test_worker_processes_exit_with_their_server(tmp_path):
    """No orphan keeps a GPU after its server is gone, however the server died."""
    server = ServerProcess(tmp_path).start()
    workers = server.worker_pids()
    assert workers
    kill(server.process.pid)
    server.process.wait(30)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their server"
        time.sleep(0.2)


def test_a_worker_memory_cap_refuses_a_model_too_big_for_it_and_keeps_serving(
    tmp_path, flat_batch, monkeypatch
):
    """--worker-memory-mb: a 33M-parameter model under Adam does not fit in 3000 MB of
    address space next to TensorFlow (1.6 GB). Its call is refused before the model is
    loaded (the probe would hold about 1,260 MiB of weights and optimizer state, over
    the 952 MiB the cap leaves), naming the flag; the worker lives on. Before that
    estimate the load or the probe ran out of memory (with XLA, as here) or the
    worker died and was replaced (without it, on this CPU)."""
    from tests.service import mlp_checkpoint

    monkeypatch.setenv("GRADHEALTH_XLA", "on")  # the server inherits it

    big = mlp_checkpoint(tmp_path / "big.keras", width=4096, depth=3)
    small = mlp_checkpoint(tmp_path / "small.keras", width=32, depth=2)
    server = ServerProcess(tmp_path / "server", "--worker-memory-mb", "3000").start()
    try:
        workers = server.worker_pids()
        with GradientHealthClient(server.target, retry=ONE_TRY) as client:
            assert client.diagnose(small, batch=flat_batch, run_id="capped").status
            with pytest.raises(grpc.RpcError) as caught:
                client.diagnose(big, batch=flat_batch, run_id="capped")
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert re.search(
                r"probing this model needs about [\d,]+ MiB for its [\d,]+ weights and "
                r"[\d,]+ optimizer and metric values .* over the 952 MiB this worker's memory "
                r"allows \(--worker-memory-mb\)",
                caught.value.details(),
            ), caught.value.details()
            assert client.diagnose(small, batch=flat_batch, run_id="capped").status
        assert server.worker_pids() == workers  # refused, not crashed
    finally:
        assert server.stop() == 0, server.log()


def _self_attention_checkpoint(path: Path) -> Path:
    """Dot-product self-attention over a variable-length sequence: the batch sets
    T, and the scores are (rows, T, T)."""
    import keras
    import numpy as np

    seq = keras.Input((None, 8), name="seq")
    scores = keras.layers.Dot(axes=2, name="scores")([seq, seq])
    mixed = keras.layers.Dot(axes=(2, 1), name="mix")([scores, seq])
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(mixed)
    model = keras.Model(seq, keras.layers.Dense(2, activation="softmax", name="out")(pooled))
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 5, 8)).astype("float32"), rng.integers(0, 2, 8), verbose=0)
    model.save(path)
    return path


def _sequence_batch(path: Path, rows: int, length: int) -> Path:
    import numpy as np

    rng = np.random.default_rng(1)
    x = (rng.normal(size=(rows, length, 8)) * 0.01).astype("float32")
    np.savez(path, x=x, y=rng.integers(0, 2, rows))
    return path


def test_intermediates_the_batch_sizes_are_bounded_before_the_probe(tmp_path):
    """The config-time activation cap counts a sequence length as 1. On the real
    batch, (64, 1500, 1500) scores took a worker capped at 3000 MB down (SIGSEGV
    inside TensorFlow's allocator); (64, 4000, 4000) would need 4 GB. Both are
    now refused from the shapes alone, naming the tensor; the worker stays under
    its cap and serves the next call."""
    checkpoint = _self_attention_checkpoint(tmp_path / "attention.keras")
    short = _sequence_batch(tmp_path / "short.npz", 16, 16)
    server = ServerProcess(tmp_path / "server", "--worker-memory-mb", "3000").start()
    try:
        with (
            GradientHealthClient(server.target, retry=ONE_TRY, timeout=300) as client,
            MemoryWatch(server) as memory,
        ):
            assert client.diagnose(checkpoint, batch=short, run_id="attention").status
            workers = server.worker_pids()
            refused = {
                (64, 4000): r"scores output \(64, 4000, 4000\), 3,906 MiB\), over the 1,500 MiB",
                (64, 1500): r"scores output \(64, 1500, 1500\), 549 MiB\), over the 1,500 MiB",
                (2, 20000): r"scores output \(2, 20000, 20000\) holds 400,000,000 values per row",
            }
            for (rows, length), message in refused.items():
                batch = _sequence_batch(tmp_path / f"b{rows}x{length}.npz", rows, length)
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    client.diagnose(checkpoint, batch=batch, run_id="attention")
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert re.search(message, caught.value.details()), caught.value.details()
                assert time.monotonic() - started < 30
            assert client.diagnose(checkpoint, batch=short, run_id="attention").status
        assert server.worker_pids() == workers  # refused, not crashed
        assert memory.peak_workers < 3000 * 2**20, memory.peak_workers
    finally:
        assert server.stop() == 0, server.log()


def _with_identity_layers(source: Path, path: Path, count: int) -> Path:
    """The same checkpoint with `count` Identity layers (no weights) inserted."""
    import json
    import zipfile

    members = {
        name: zipfile.ZipFile(source).read(name) for name in zipfile.ZipFile(source).namelist()
    }
    config = json.loads(members["config.json"])
    identity = {"module": "keras.layers", "class_name": "Identity", "registered_name": None}
    layers = config["config"]["layers"]
    layers[1:1] = [{**identity, "config": {"name": f"same_{i}"}} for i in range(count)]
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _unrolled_rnn_checkpoint(path: Path, steps: int) -> Path:
    import keras
    import numpy as np

    model = keras.Sequential(
        [
            keras.Input((steps, 1)),
            keras.layers.SimpleRNN(4, unroll=True, name="rnn"),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(path)  # never trained: tracing 3000 steps is what the attack costs
    np.savez(path.with_suffix(".npz"), x=np.zeros((4, steps, 1), "float32"), y=np.zeros(4, int))
    return path


def test_graphs_too_costly_to_trace_are_refused_naming_the_bound(tmp_path, flat_batch):
    """A 38-parameter SimpleRNN(unroll=True) over 3000 steps and a Sequential of
    20,000 Identity layers each held a worker until the job timeout; they are
    refused in seconds, naming the bound, and the worker serves the next call."""
    from tests.service import mlp_checkpoint

    small = mlp_checkpoint(tmp_path / "small.keras", width=16)
    deep = _with_identity_layers(small, tmp_path / "deep.keras", 20_000)
    rnn = _unrolled_rnn_checkpoint(tmp_path / "rnn.keras", 3000)
    server = ServerProcess(tmp_path / "server", "--job-timeout", "120").start()
    try:
        workers = server.worker_pids()
        with GradientHealthClient(server.target, retry=ONE_TRY, timeout=150) as client:
            for checkpoint, batch, message in [
                (deep, flat_batch, "declares 20,00[0-9] layers, over the limit of 3,000"),
                (rnn, rnn.with_suffix(".npz"), "rnn is unrolled over 3,000 time steps, over the"),
            ]:
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    client.diagnose(checkpoint, batch=batch, run_id="costly")
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert re.search(message, caught.value.details()), caught.value.details()
                assert time.monotonic() - started < 30
            assert client.diagnose(small, batch=flat_batch, run_id="costly").status
        assert server.worker_pids() == workers
    finally:
        assert server.stop() == 0, server.log()
