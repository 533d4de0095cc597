"""What GradientHealthCallback adds to `model.fit` wall time, at its default cadence.

The digits CNN is trained for the same epochs with and without the callback,
interleaved, against the real server on loopback; each repetition is a fresh
callback (so its one-time shadow-model build is included). The server has seen
the architecture before the timing starts: on loopback its cold compile would
otherwise run on the same two cores as the training being timed, which a
training job on its own machine never pays. Target: <= 1.02x.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 1.02


def run(quick: bool = False) -> dict[str, Any]:
    import keras

    from gradhealth.callback import GradientHealthCallback
    from gradhealth.client import GradientHealthClient
    from gradhealth_server.examples import digits, digits_cnn
    from tests.service import ServerProcess

    x, y = digits()
    epochs, reps = (20, 3) if quick else (60, 7)
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # compile the train step
    with tempfile.TemporaryDirectory(prefix="gradhealth-bench-") as tmp:
        server = ServerProcess(Path(tmp)).start()
        try:
            with GradientHealthClient(server.target) as client:  # warm the server's cache
                client.diagnose(model, x[:256], y[:256], run_id="bench-warm-up")
            bare, with_callback, sent = [], [], []
            for _ in range(reps):
                start = time.perf_counter()
                model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
                bare.append(time.perf_counter() - start)
                callback = GradientHealthCallback(
                    server.target, run_id="bench-callback", sample=(x[:256], y[:256])
                )
                start = time.perf_counter()
                model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[callback])
                with_callback.append(time.perf_counter() - start)
                callback.wait(120)
                sent.append(callback.sent)
        finally:
            server.stop()
    ratios = [c / b for c, b in zip(with_callback, bare, strict=True)]
    ratio = statistics.median(ratios)
    return {
        "model": "digits CNN, 79k params, batch 32",
        "epochs": epochs,
        "fit_seconds": round(statistics.median(bare), 3),
        "checkpoints_sent_per_fit": statistics.median(sent),
        "ratio": round(ratio, 4),
        "low": round(min(ratios), 4),
        "high": round(max(ratios), 4),
        "target": TARGET,
        "meets_target": ratio <= TARGET,
    }
