"""A checkpoint as large as users send (issue 18): 100M parameters with Adam state.

`model.save()` of a 100M-parameter MLP after one Adam step writes about 1.2 GB
(weights and two moments). It goes to the real server on loopback, with its
default limits and the default memory cap of one worker on this machine: upload,
load, probe and rules, timed by phase, with the worker's peak RSS sampled from
/proc every 50 ms while the call runs. A second server whose workers are capped below what
that model needs must refuse it before loading, in one line naming the size and
the flag to raise.

    python -m bench.large_checkpoint [--json PATH]

Not in `python -m bench --quick` (CI): writing and sending 1.2 GB takes minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from gradhealth.client import GradientHealthClient
from tests.service import MemoryWatch, ServerProcess

MiB = 1024 * 1024
# Dense 1000 -> 10000 -> 9000 -> 10: 100.1M parameters.
WIDTHS = (1000, 10_000, 9_000, 10)
ROWS = 64
# A worker cap below what the model needs: refused before it is loaded.
SMALL_CAP_MB = 3000


def build(directory: Path) -> tuple[Path, Path, int]:
    """The checkpoint (one Adam step taken: its moments are real) and a batch."""
    import keras

    keras.utils.set_random_seed(0)
    layers = [keras.Input((WIDTHS[0],))]
    layers += [keras.layers.Dense(w, activation="relu") for w in WIDTHS[1:-1]]
    layers.append(keras.layers.Dense(WIDTHS[-1], activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, WIDTHS[0])).astype("float32")
    y = rng.integers(0, WIDTHS[-1], ROWS)
    model.fit(x, y, epochs=1, batch_size=ROWS, verbose=0)
    checkpoint, batch = directory / "large.keras", directory / "batch.npz"
    model.save(checkpoint)
    np.savez(batch, x=x, y=y)
    return checkpoint, batch, int(model.count_params())


def _worker_cap_mb(server: ServerProcess) -> int | None:
    """The cap the server logged at start ("address space capped at N MiB")."""
    for line in server.log().splitlines():
        if "capped at" in line:
            return int(line.split("capped at")[1].split()[0])
    return None


def run(work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    checkpoint, batch, parameters = build(work)
    out: dict[str, Any] = {
        "parameters": parameters,
        "checkpoint_mb": round(checkpoint.stat().st_size / MiB, 1),
        "build_s": round(time.perf_counter() - start, 1),
    }
    (work / "default").mkdir()
    server = ServerProcess(work / "default", "--workers", "1").start()
    try:
        out["worker_cap_mb"] = _worker_cap_mb(server)
        with GradientHealthClient(server.target, timeout=1800) as client, MemoryWatch(server) as m:
            began = time.perf_counter()
            verdict = client.diagnose(checkpoint, batch=batch)
            out["wall_s"] = round(time.perf_counter() - began, 1)
        out["worker_peak_rss_mb"] = round(m.peak_workers / MiB)
        out["status"] = verdict.status
        out["primary_cause"] = verdict.primary_cause
        out["phases"] = {k: round(v, 2) for k, v in verdict.phases.items()}
    finally:
        server.stop()
    (work / "small").mkdir()
    small = ServerProcess(
        work / "small", "--workers", "1", "--worker-memory-mb", str(SMALL_CAP_MB)
    ).start()
    try:
        with GradientHealthClient(small.target, timeout=1800) as client:
            began = time.perf_counter()
            try:
                client.diagnose(checkpoint, batch=batch)
                out["small_cap"] = {"refused": False}
            except grpc.RpcError as exc:
                out["small_cap"] = {
                    "refused": True,
                    "code": exc.code().name,
                    "message": exc.details(),
                    "seconds": round(time.perf_counter() - began, 1),
                }
    finally:
        small.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.large_checkpoint")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gradhealth-large-") as tmp:
        result = run(Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
