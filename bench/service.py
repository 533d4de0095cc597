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

from gradhealth import payload
from gradhealth.client import GradientHealthClient
from tests.service import ServerProcess, free_port

MB = 1e6
# gradhealth against the bare stream + sha256: what spooling to disk, protobuf
# framing and the header may add.
TARGET_OVER_FLOOR = 1.25
PHASES = ("upload", "queue", "load", "batch", "compile_and_probe", "probe", "trials", "rules")


def run(quick: bool = False) -> dict[str, Any]:
    from gradhealth_server.device import configure_device

    configure_device()
    with tempfile.TemporaryDirectory(prefix="gradhealth-bench-") as tmp:
        work = Path(tmp)
        big, big_batch = _wide_mlp(work)
        cnn_a, cnn_b, cnn_batch = _cnn_pair(work)
        (work / "server").mkdir()
        server = ServerProcess(work / "server").start()
        raw_port = free_port()
        raw = subprocess.Popen([sys.executable, "-m", "bench.raw_stream", str(raw_port)])
        try:
            with GradientHealthClient(server.target, timeout=900) as client:
                latency = _latency(client, cnn_a, cnn_b, cnn_batch, warm_calls=3 if quick else 9)
                upload = _upload(client, raw_port, big, big_batch, reps=3 if quick else 7)
        finally:
            raw.kill()
            server.stop()
    return {"upload": upload, "latency": latency}


def _upload(client: GradientHealthClient, raw_port: int, checkpoint: Path, batch: Path, reps: int):
    size = checkpoint.stat().st_size
    cold = client.diagnose(checkpoint, batch=batch, run_id="bench-upload", mode="norms")
    with grpc.insecure_channel(
        f"127.0.0.1:{raw_port}", [("grpc.max_send_message_length", 2 * 1024 * 1024)]
    ) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        raw_seconds, floor, ours, hashing = [], [], [], []
        for _ in range(reps):
            seconds, received = _raw_upload(channel, checkpoint)
            assert received == size
            raw_seconds.append(seconds)
            floor.append(_raw_upload(channel, checkpoint, hashed=True)[0])
            start = time.perf_counter()
            payload.Part.of_file(checkpoint)
            hashing.append(time.perf_counter() - start)
            verdict = client.diagnose(checkpoint, batch=batch, run_id="bench-upload", mode="norms")
            ours.append(verdict.phases["upload"])
    ratio = [o / r for o, r in zip(ours, raw_seconds, strict=True)]
    over_floor = [o / f for o, f in zip(ours, floor, strict=True)]
    with_hash = [(o + h) / r for o, h, r in zip(ours, hashing, raw_seconds, strict=True)]
    return {
        "checkpoint_mb": round(size / MB, 1),
        "raw_mb_per_s": round(size / MB / statistics.median(raw_seconds), 1),
        "gradhealth_mb_per_s": round(size / MB / statistics.median(ours), 1),
        "ratio": round(statistics.median(ratio), 3),
        "low": round(min(ratio), 3),
        "high": round(max(ratio), 3),
        "ratio_with_client_sha256": round(statistics.median(with_hash), 3),
        "raw_sha256_mb_per_s": round(size / MB / statistics.median(floor), 1),
        "ratio_to_raw_sha256": round(statistics.median(over_floor), 3),
        "cold_phases": _rounded(cold.phases),
        "target": TARGET_OVER_FLOOR,
        "meets_target": statistics.median(over_floor) <= TARGET_OVER_FLOOR,
    }


def _raw_upload(channel: grpc.Channel, checkpoint: Path, hashed: bool = False):
    from bench.raw_stream import upload

    return upload(channel, payload.file_chunks(checkpoint), hashed)


def _latency(client: GradientHealthClient, first: Path, later: Path, batch: Path, warm_calls: int):
    wall = time.perf_counter()
    cold = client.diagnose(first, batch=batch, run_id="bench-latency", step=1)
    cold_total = time.perf_counter() - wall
    warm_phases: list[dict[str, float]] = []
    warm_totals = []
    for step in range(warm_calls):
        wall = time.perf_counter()
        warm = client.diagnose(later, batch=batch, run_id="bench-latency", step=2 + step)
        warm_totals.append(time.perf_counter() - wall)
        assert warm.proto.model_cache_hit and warm.proto.probe_cached
        warm_phases.append(warm.phases)
    median_warm = {
        phase: statistics.median(p[phase] for p in warm_phases)
        for phase in PHASES
        if all(phase in p for p in warm_phases)
    }
    return {
        "model": "digits CNN, 79k params, 128 rows, full probe",
        "cold": {**_rounded(cold.phases), "total": round(cold_total, 4)},
        "warm": {**_rounded(median_warm), "total": round(statistics.median(warm_totals), 4)},
        "cold_over_warm": round(cold_total / statistics.median(warm_totals), 1),
    }


def _rounded(phases: dict[str, float]) -> dict[str, float]:
    return {k: round(phases[k], 4) for k in PHASES if k in phases}


def _wide_mlp(work: Path) -> tuple[Path, Path]:
    """About 100 MB of float32 weights: 26M parameters, SGD (no slots)."""
    import keras

    from gradhealth_server.examples import digits

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

    from gradhealth_server.examples import digits, digits_cnn

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
