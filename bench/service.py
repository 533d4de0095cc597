"""The service end to end, on loopback: upload throughput and cold/warm latency.

Upload: a 100 MB checkpoint sent to the real server, against the same bytes
sent over a bare gRPC stream (bench.raw_stream) on the same machine, all
interleaved. Each is timed by its server, from the call's start to its last
chunk; gradhealth's time includes spooling to disk and the sha256 check. A
second baseline, the bare stream plus sha256, is the floor for any server that
verifies its uploads: on loopback the client, the receiving loop and the hash
share the same two cores. The client's own sha256 pass over the file (before
the header can be sent) is reported on top.

Latency: the first checkpoint of an architecture (cold: load, trace, compile)
against later checkpoints of it (warm: weights only, cached probe), by phase.

Throughput: 1, 4 and 16 clients at once sending warm checkpoints to one server
(one worker, as on a one-GPU box); calls per second and p50/p99 latency, as
ratios to the single client measured in the same run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench import raw_stream
from gradhealth import payload
from gradhealth.client import GradientHealthClient
from tests.service import ServerProcess, free_port

MB = 1e6
# Upload throughput as a fraction of the bare gRPC stream's (issue 10).
TARGET_THROUGHPUT = 0.5
PHASES = ("upload", "queue", "load", "batch", "compile_and_probe", "probe", "trials", "rules")


def run(quick: bool = False) -> dict[str, Any]:
    from gradhealth_server.engine.device import configure_device

    configure_device()
    with tempfile.TemporaryDirectory(prefix="gradhealth-bench-") as tmp:
        work = Path(tmp)
        big, big_batch = _wide_mlp(work)
        cnn_a, cnn_b, cnn_batch = _cnn_pair(work)
        (work / "server").mkdir()
        # Room for every concurrent client of the throughput bench: none is refused.
        server = ServerProcess(work / "server", "--queue-size", "32").start()
        raw_port = free_port()
        raw = subprocess.Popen([sys.executable, "-m", "bench.raw_stream", str(raw_port)])
        try:
            with GradientHealthClient(server.target, timeout=900) as client:
                latency = _latency(client, cnn_a, cnn_b, cnn_batch, warm_calls=3 if quick else 9)
                upload = _upload(client, raw_port, big, big_batch, reps=3 if quick else 7)
            throughput = _throughput(server.target, cnn_b, cnn_batch, calls=16 if quick else 48)
        finally:
            raw.kill()
            server.stop()
    return {"upload": upload, "latency": latency, "throughput": throughput}


def _upload(client: GradientHealthClient, raw_port: int, checkpoint: Path, batch: Path, reps: int):
    size = checkpoint.stat().st_size
    cold = client.diagnose(checkpoint, batch=batch, run_id="bench-upload", mode="norms")
    with grpc.insecure_channel(
        f"127.0.0.1:{raw_port}", [("grpc.max_send_message_length", 2 * 1024 * 1024)]
    ) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        raw_seconds, floor, framed, stored, ours, hashing = [], [], [], [], [], []
        for _ in range(reps):
            seconds, received = _raw_upload(channel, checkpoint, raw_stream.METHOD)
            assert received == size
            raw_seconds.append(seconds)
            floor.append(_raw_upload(channel, checkpoint, raw_stream.HASHED_METHOD)[0])
            framed.append(_raw_upload(channel, checkpoint, raw_stream.FRAMED_METHOD)[0])
            stored.append(_raw_upload(channel, checkpoint, raw_stream.STORED_METHOD)[0])
            start = time.perf_counter()
            payload.Part.of_file(checkpoint)
            hashing.append(time.perf_counter() - start)
            verdict = client.diagnose(checkpoint, batch=batch, run_id="bench-upload", mode="norms")
            ours.append(verdict.phases["upload"])
    throughput = [r / o for o, r in zip(ours, raw_seconds, strict=True)]
    over_floor = [o / f for o, f in zip(ours, floor, strict=True)]
    with_hash = [r / (o + h) for o, h, r in zip(ours, hashing, raw_seconds, strict=True)]
    return {
        "checkpoint_mb": round(size / MB, 1),
        "raw_mb_per_s": round(size / MB / statistics.median(raw_seconds), 1),
        "raw_sha256_mb_per_s": round(size / MB / statistics.median(floor), 1),
        # What bounds it: the same bytes in DiagnoseRequest messages, then also
        # hashed and written to disk, by a bare server (bench/raw_stream.py).
        "framed_mb_per_s": round(size / MB / statistics.median(framed), 1),
        "framed_hashed_written_mb_per_s": round(size / MB / statistics.median(stored), 1),
        "bound_ratio": round(statistics.median(r / t for r, t in zip(raw_seconds, stored)), 3),
        "gradhealth_mb_per_s": round(size / MB / statistics.median(ours), 1),
        "throughput_ratio": round(statistics.median(throughput), 3),
        "throughput_low": round(min(throughput), 3),
        "throughput_high": round(max(throughput), 3),
        "throughput_ratio_with_client_sha256": round(statistics.median(with_hash), 3),
        "time_over_raw_sha256": round(statistics.median(over_floor), 3),
        "cold_phases": _rounded(cold.phases),
        "target": TARGET_THROUGHPUT,
        "meets_target": statistics.median(throughput) >= TARGET_THROUGHPUT,
    }


def _raw_upload(channel: grpc.Channel, checkpoint: Path, method: str) -> tuple[float, int]:
    return raw_stream.upload(channel, payload.file_chunks(checkpoint), method)


def _latency(client: GradientHealthClient, first: Path, later: Path, batch: Path, warm_calls: int):
    wall = time.perf_counter()
    cold = client.diagnose(first, batch=batch, run_id="bench-latency", step=1)
    cold_total = time.perf_counter() - wall
    warm_phases: list[dict[str, float]] = []
    warm_totals = []
    reused = True
    for step in range(warm_calls):
        wall = time.perf_counter()
        warm = client.diagnose(later, batch=batch, run_id="bench-latency", step=2 + step)
        warm_totals.append(time.perf_counter() - wall)
        # No rebuild (the loaded model is reused) and no retrace (the compiled probe is).
        reused = reused and warm.proto.model_cache_hit and warm.proto.probe_cached
        warm_phases.append(warm.phases)
    median_warm = {
        phase: statistics.median(p[phase] for p in warm_phases)
        for phase in PHASES
        if all(phase in p for p in warm_phases)
    }
    warm_total = statistics.median(warm_totals)
    return {
        "model": "digits CNN, 79k params, 128 rows, full probe",
        "cold": _with_rest(_rounded(cold.phases), cold_total),
        "warm": _with_rest(_rounded(median_warm), warm_total),
        "cold_over_warm": round(cold_total / warm_total, 1),
        "warm_reused_everything": reused,
    }


def _with_rest(phases: dict[str, float], total: float) -> dict[str, float]:
    """The server's phases, then what the client waited for beyond them: storing
    the verdict, the reply and the client's own work (hashing, framing)."""
    rest = max(total - sum(phases.values()), 0.0)
    return {**phases, "store_reply_client": round(rest, 4), "total": round(total, 4)}


def _throughput(target: str, checkpoint: Path, batch: Path, calls: int) -> list[dict[str, Any]]:
    """The same number of warm calls spread over 1, 4 and 16 concurrent clients."""
    levels = []
    for clients in (1, 4, 16):
        latencies, wall = _concurrent_calls(target, checkpoint, batch, clients, calls // clients)
        quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
        levels.append(
            {
                "clients": clients,
                "calls": len(latencies),
                "calls_per_s": round(len(latencies) / wall, 2),
                "p50_s": round(statistics.median(latencies), 4),
                "p99_s": round(quantiles[98], 4),
            }
        )
    single = levels[0]
    for level in levels:
        level["throughput_ratio"] = round(level["calls_per_s"] / single["calls_per_s"], 3)
        level["p50_ratio"] = round(level["p50_s"] / single["p50_s"], 2)
    return levels


def _concurrent_calls(
    target: str, checkpoint: Path, batch: Path, clients: int, calls_each: int
) -> tuple[list[float], float]:
    """Per-call latencies of `clients` threads started together, and the wall time."""
    import threading

    latencies: list[float] = []
    barrier = threading.Barrier(clients + 1)

    def work(i: int) -> None:
        with GradientHealthClient(target, timeout=300) as client:
            client.diagnose(checkpoint, batch=batch, run_id=f"bench-tp-{i}")  # connect
            barrier.wait()
            for step in range(calls_each):
                start = time.perf_counter()
                client.diagnose(checkpoint, batch=batch, run_id=f"bench-tp-{i}", step=step)
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start


def _rounded(phases: dict[str, float]) -> dict[str, float]:
    return {k: round(phases[k], 4) for k in PHASES if k in phases}


def _wide_mlp(work: Path) -> tuple[Path, Path]:
    """About 100 MB of float32 weights: 26M parameters, SGD (no slots)."""
    import keras

    from gradhealth_server.commands.examples import digits

    x, y = digits()
    x = x.reshape(len(x), -1)[:128]
    y = y[:128]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(5120, activation="relu"),
            keras.layers.Dense(5000, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    path = work / "wide.keras"
    model.save(path)
    batch = work / "wide.npz"
    np.savez(batch, x=x, y=y)
    return path, batch


def _cnn_pair(work: Path) -> tuple[Path, Path, Path]:
    """Two checkpoints of one CNN run, an epoch apart."""
    import keras

    from gradhealth_server.commands.examples import digits, digits_cnn

    x, y = digits()
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    paths = []
    for epoch in range(2):
        model.fit(x, y, epochs=1, batch_size=64, verbose=0)
        paths.append(work / f"cnn_{epoch}.keras")
        model.save(paths[-1])
    batch = work / "cnn.npz"
    np.savez(batch, x=x[:128], y=y[:128])
    return paths[0], paths[1], batch
