"""GradientHealthCallback in a real model.fit against the real server."""

from __future__ import annotations

import time

import keras
import numpy as np

from gradhealth.callback import GradientHealthCallback
from gradhealth.client import GradientHealthClient
from gradhealth.v1 import service_pb2, verdict_pb2
from gradhealth_server.commands.examples import digits, digits_cnn
from tests.service import TOKEN, free_port


def _model(learning_rate: float = 1e-3, optimizer: str = "adam") -> keras.Model:
    keras.utils.set_random_seed(0)
    model = digits_cnn(f"cb_{optimizer}_{learning_rate:g}")
    opt = keras.optimizers.get(
        {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
    )
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_fit_with_the_callback_gets_verdicts_from_the_server(server):
    x, y = digits()
    seen = []
    callback = GradientHealthCallback(
        server.target, run_id="callback-run", sample=(x[:128], y[:128]), token=TOKEN,
        min_interval_s=0, on_verdict=seen.append,
    )  # fmt: skip
    history = _model().fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.wait(120)
    assert len(history.epoch) == 3
    assert callback.sent >= 1 and callback.failed == 0, callback.last_error
    assert callback.sent + callback.skipped == 3
    assert [v.verdict_id for v in seen] == [v.verdict_id for v in callback.verdicts]
    verdict = callback.verdicts[-1]
    assert verdict.run_id == "callback-run"
    assert verdict.proto.training_metrics.HasField("loss")
    assert verdict.proto.training_metrics.HasField("accuracy")
    with GradientHealthClient(server.target, token=TOKEN) as client:
        stored = list(client.list_verdicts("callback-run"))
        run = _run(client, "callback-run")
    assert {v.verdict_id for v in stored} == {v.verdict_id for v in callback.verdicts}
    # The end of fit closed the run: its alerts resolve.
    assert callback.closed_as == "finished"
    assert run.state == service_pb2.RUN_STATE_FINISHED and run.HasField("end_time")
    assert run.end_reason == "fit ended after step 87"
    assert run.end_time.ToDatetime() >= run.last_diagnosis_time.ToDatetime()


def _run(client: GradientHealthClient, run_id: str):
    return next(r for r in client.list_runs() if r.run_id == run_id)


def test_training_finishes_when_the_server_is_down():
    x, y = digits()
    callback = GradientHealthCallback(
        f"127.0.0.1:{free_port()}", run_id="nobody-listens", sample=(x[:64], y[:64]),
        min_interval_s=0, timeout_s=2,
    )  # fmt: skip
    history = _model().fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.wait(60)
    assert len(history.epoch) == 3
    assert callback.failed >= 1 and callback.sent == 0
    assert "UNAVAILABLE" in callback.last_error
    assert f"{callback.failed} failed (last: " in callback.summary()
    assert "UNAVAILABLE: no gradhealth server answers" in callback.summary()


def test_snapshots_are_skipped_while_an_upload_is_in_flight(server, caplog):
    x, y = digits()
    callback = GradientHealthCallback(
        server.target, run_id="busy-callback", sample=(x[:128], y[:128]), token=TOKEN,
        every_n_steps=1, min_interval_s=0,
    )  # fmt: skip
    model = _model()
    start = time.perf_counter()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[callback])
    assert callback.wait(120)
    steps = 2 * int(np.ceil(len(x) / 32))
    assert callback.sent + callback.skipped + callback.failed == steps - 1
    assert callback.skipped > 0 and callback.sent >= 1, (callback.sent, callback.last_error)
    assert time.perf_counter() - start < 120
    # The skips are said, once, at the end of the fit (not silently counted).
    said = [r.getMessage() for r in caplog.records if "skipped while" in r.getMessage()]
    assert len(said) == 1 and f"{callback.skipped} skipped" in callback.summary()


class _WaitForUploads(keras.callbacks.Callback):
    """Placed before the gradhealth callback: each epoch end waits for its upload in
    flight, so what the next snapshot meets on the server is deterministic."""

    def __init__(self, callback: GradientHealthCallback) -> None:
        super().__init__()
        self.callback = callback

    def on_epoch_end(self, epoch, logs=None):
        assert self.callback.wait(120)


def test_the_warm_up_compiles_the_architecture_before_the_first_checkpoint(server):
    x, y = digits()
    verdicts = {}
    for warm_up in (True, False):
        keras.utils.set_random_seed(0)
        model = digits_cnn(f"warm_up_{warm_up}")  # an architecture the server has not seen
        model.compile("adam", "sparse_categorical_crossentropy")
        callback = GradientHealthCallback(
            server.target, run_id=f"warm-up-{warm_up}", sample=(x[:128], y[:128]),
            token=TOKEN, min_interval_s=0, warm_up=warm_up,
        )  # fmt: skip
        model.fit(x, y, epochs=1, batch_size=64, verbose=0,
                  callbacks=[_WaitForUploads(callback), callback])  # fmt: skip
        assert callback.wait(120) and callback.failed == 0, callback.last_error
        assert callback.sent == 1 and len(callback.verdicts) == 1
        verdicts[warm_up] = (callback.verdicts[0], callback.warm_up_verdict)
    (first, warm), (cold_first, none) = verdicts[True], verdicts[False]
    assert none is None and not cold_first.proto.probe_cached
    assert "compile_and_probe" in cold_first.proto.phase_seconds
    # The warm-up compiled the probe at step 1; the first real checkpoint reused it.
    assert warm is not None and warm.proto.step == 1 and not warm.proto.probe_cached
    assert first.proto.probe_cached and "probe" in first.proto.phase_seconds
    # Stored ad hoc, apart from the run: the run holds only its real checkpoint.
    assert warm.run_id.startswith("adhoc-")
    with GradientHealthClient(server.target, token=TOKEN) as client:
        stored = list(client.list_verdicts("warm-up-True"))
    assert [v.verdict_id for v in stored] == [first.verdict_id]


def test_stop_on_critical_stops_a_hopeless_run(server):
    x, y = digits(scale=1.0)  # 0-16 pixels * 16: never normalized
    x = x * 16.0
    callback = GradientHealthCallback(
        server.target, run_id="hopeless", sample=(x[:128], y[:128]), token=TOKEN,
        min_interval_s=0, stop_on="critical",
    )  # fmt: skip
    model = _model(0.01, "sgd")
    history = model.fit(x, y, epochs=200, batch_size=64, verbose=0, callbacks=[callback])
    callback.wait(60)
    assert callback.verdicts and callback.verdicts[0].status == "critical"
    assert len(history.epoch) < 200
    # Closed as stopped, with the cause of the verdict that stopped it.
    assert callback.closed_as == "stopped"
    with GradientHealthClient(server.target, token=TOKEN) as client:
        run = _run(client, "hopeless")
    assert run.state == service_pb2.RUN_STATE_STOPPED
    cause = callback.verdicts[0].primary_cause
    assert run.stop_cause == verdict_pb2.Cause.Value(f"CAUSE_{cause.upper()}")
    assert run.end_reason.startswith("stop_on=critical: critical verdict at step")


def test_the_callback_leaves_every_batch_end_hook_at_its_default():
    """Keras 3 dispatches batch ends asynchronously (on backends where it can) only
    while no callback overrides a *_batch_end hook; we count steps at batch begin."""
    from keras.src import utils

    x, y = digits()
    callback = GradientHealthCallback(
        "127.0.0.1:1", run_id="r", sample=(x[:8], y[:8]), every_n_steps=10
    )
    for hook in ("on_batch_end", "on_train_batch_end", "on_test_batch_end", "on_predict_batch_end"):
        assert utils.is_default(getattr(callback, hook)), hook

    class BatchEnd(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    assert not utils.is_default(BatchEnd().on_train_batch_end)  # the check can fail
