"""GradientHealthCallback: gradhealth for a `model.fit` job, by adding one callback.

Training must never wait for us. On the training thread the callback only
copies the weights and optimizer state (well under a millisecond for a small
model); a background thread writes them into a shadow copy of the model, saves
it as `.keras` and sends it with the fixed sample batch. The hand-off is a slot
of one: while an upload is in flight, later snapshots are skipped and counted.
A service that is down or slow is logged once and never stops training.

A new architecture's first diagnosis on a server compiles it (seconds to a minute
on a CPU). With `warm_up` (the default), as soon as the optimizer is built (the
first step) the callback sends that state once as an ad-hoc diagnosis: the server
compiles the architecture while the first epoch trains, so the first real
checkpoint gets a warm answer. The warm-up's verdict is stored ad hoc (its own
`adhoc-…` run, never alerting) and is not one of the run's verdicts.

A run has an end: when `fit` returns, the callback waits (a bounded time) for
the upload in flight and closes the run on the service, as finished, or as
stopped with the cause when `stop_on` ended it, so its alerts resolve instead of
paging "silent" for a day.

Steps are counted in `on_train_batch_begin`, which Keras 3 runs synchronously
between steps without giving up its asynchronous batch-end dispatch (that is
only turned off by callbacks overriding the `*_batch_end` hooks).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import keras

from gradhealth import payload
from gradhealth.client import GradientHealthClient, Retry, Tls
from gradhealth.contract import STATUS_ORDER
from gradhealth.verdicts import Verdict

log = logging.getLogger(__name__)


class GradientHealthCallback(keras.callbacks.Callback):
    def __init__(
        self,
        target: str,
        run_id: str,
        sample: tuple[Any, Any],
        every_n_steps: int | None = None,
        every_epoch: bool | None = None,
        min_interval_s: float = 30.0,
        token: str | None = None,
        tls: Tls | bool | None = None,
        on_verdict: Callable[[Verdict], None] | None = None,
        stop_on: str | None = None,
        timeout_s: float = 300.0,
        mode: str = "full",
        close_run: bool = True,
        end_wait_s: float = 60.0,
        warm_up: bool = True,
    ) -> None:
        """Send a checkpoint every `every_n_steps` steps or at every epoch end (the
        default), at most once per `min_interval_s` seconds. `sample` is (x, y): a
        fixed batch, as the input pipeline feeds the model (x or {input name: x},
        y or {output name: y} for a multi-output model). `stop_on="critical"` (or
        "warning") stops training when a verdict is that bad. With `close_run`, the
        end of `fit` closes the run after waiting at most `end_wait_s` for the
        upload in flight. With `warm_up`, the first step's state warms the server
        (module docstring)."""
        super().__init__()
        if stop_on not in (None, "warning", "critical"):
            raise ValueError('stop_on must be None, "warning" or "critical"')
        self.run_id = run_id
        self.every_n_steps = every_n_steps
        self.every_epoch = every_n_steps is None if every_epoch is None else every_epoch
        self.min_interval_s = min_interval_s
        self.on_verdict = on_verdict
        self.stop_on = stop_on
        self.mode = mode
        self.close_run = close_run
        self.end_wait_s = end_wait_s
        self.warm_up = warm_up
        self.warm_up_verdict: Verdict | None = None  # the ad-hoc warm-up's, once back
        self._warm_up_sent = False
        self._warming = False  # the warm-up holds the slot
        self._pending: tuple[int, dict, dict[str, float]] | None = None  # waits behind it
        self._lock = threading.Lock()
        self._batch = payload.batch_part(*sample)  # encoded once, sent every time
        self._client = GradientHealthClient(
            target, token=token, tls=tls, timeout=timeout_s, retry=Retry(attempts=2)
        )
        # What happened, for the training job to read (and tests to check).
        self.sent = 0
        self.skipped = 0
        self.failed = 0
        self.verdicts: list[Verdict] = []
        self.last_error: str | None = None
        self._step = 0
        self._last_sent_at = float("-inf")
        self._slot = threading.Semaphore(1)  # the one upload in flight
        self._thread: threading.Thread | None = None
        self._shadow: Any = None
        self._stop_requested = False
        self._stopped_by: Verdict | None = None  # the verdict that stopped training
        self.closed_as: str | None = None  # "finished" or "stopped", once closed

    # --- Keras hooks (training thread) ---------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._stop_requested = False
        self._stopped_by = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._stop_requested:
            self.model.stop_training = True
        if self.every_n_steps and self._step and self._step % self.every_n_steps == 0:
            self._snapshot(self._step, None)
        elif (
            self.warm_up
            and not self._warm_up_sent
            and getattr(self.model.optimizer, "built", False)
        ):
            # Keras builds the optimizer in the first step: its state exists from here.
            self._warm_up_sent = True
            self._snapshot(self._step, None, warm_up=True)
        self._step += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.every_epoch:
            self._snapshot(self._step, logs)
        if self._stop_requested:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        """Training is over: say in one line what was skipped or failed, and close the
        run once the upload in flight has landed (a later fit on the same run
        reopens it with its next checkpoint)."""
        summary = self.summary()
        if summary:
            log.warning("%s", summary)
        if not self.close_run:
            return
        if not self.wait(self.end_wait_s):
            log.warning(
                "gradhealth: the last upload is still in flight after %.0f s; closing run %s",
                self.end_wait_s,
                self.run_id,
            )
        stopped = self._stopped_by
        state = "stopped" if stopped is not None else "finished"
        reason = (
            f"stop_on={self.stop_on}: {stopped.status} verdict at step {stopped.step}"
            if stopped is not None
            else f"fit ended after step {self._step}"
        )
        try:
            self._client.close_run(
                self.run_id,
                state,
                stop_cause=stopped.primary_cause if stopped is not None else None,
                reason=reason,
                timeout=10.0,
            )
        except grpc.RpcError as error:
            self._failure(f"could not close the run: {error.code().name}: {error.details()}")
        except Exception as exc:  # never break the training script
            self._failure(f"could not close the run: {type(exc).__name__}: {exc}")
        else:
            self.closed_as = state

    def summary(self) -> str:
        """One line on the checkpoints that got no verdict; empty when every one did.

        A cold server compiling a new architecture can hold the first upload for
        longer than a short fit lasts: then every later checkpoint is skipped, and
        the user must hear it rather than see a silent callback."""
        if not (self.skipped or self.failed):
            return ""
        parts = [f"gradhealth: run {self.run_id}: {self.sent} checkpoints diagnosed"]
        if self.skipped:
            parts.append(
                f"{self.skipped} skipped while an earlier one was still being diagnosed "
                "(a new architecture's first verdict compiles it; raise min_interval_s "
                "or every_n_steps to send fewer)"
            )
        if self.failed:
            parts.append(f"{self.failed} failed (last: {self.last_error})")
        return "; ".join(parts)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the upload in flight (if any); True when none is left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # --- the snapshot ----------------------------------------------------------------

    def _snapshot(self, step: int, logs: dict | None, warm_up: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_sent_at < self.min_interval_s and not warm_up:
            return
        if not self._slot.acquire(blocking=False):
            if self._wait_behind_warm_up(step, logs):
                return
            self.skipped += 1  # the previous checkpoint is still on its way
            if self.skipped == 1:
                log.info(
                    "gradhealth: checkpoint at step %d skipped: the previous one is still "
                    "being diagnosed (further skips are counted and reported at the end)",
                    step,
                )
            return
        snapshot = self._take(step, logs)
        if snapshot is None:
            self._slot.release()
            return
        if warm_up:
            self._warming = True
        else:  # the warm-up does not delay the first real checkpoint
            self._last_sent_at = now
        self._thread = threading.Thread(
            target=self._send, args=(*snapshot, warm_up), name="gradhealth-upload", daemon=True
        )
        self._thread.start()

    def _wait_behind_warm_up(self, step: int, logs: dict | None) -> bool:
        """While the warm-up holds the slot, a real checkpoint waits behind it instead
        of being dropped (in a short fit it may be the only one); only the latest
        waits, an earlier waiting one counts as skipped. False: no warm-up in flight."""
        with self._lock:
            if not self._warming:
                return False
            snapshot = self._take(step, logs)
            if snapshot is not None:
                if self._pending is not None:
                    self.skipped += 1
                self._pending = snapshot
                self._last_sent_at = time.monotonic()
            return True

    def _take(self, step: int, logs: dict | None) -> tuple[int, dict, dict[str, float]] | None:
        """The model's weights and optimizer state now (training thread), or None."""
        try:
            state = {
                "weights": self.model.get_weights(),
                "optimizer": [v.numpy() for v in self.model.optimizer.variables],
            }
            metrics = _metrics(logs if logs is not None else self._running_metrics())
        except Exception as exc:  # never break training
            self._failure(f"could not snapshot the model: {exc}")
            return None
        return step, state, metrics

    def _running_metrics(self) -> dict:
        try:
            return {k: float(v) for k, v in self.model.get_metrics_result().items()}
        except Exception:
            return {}

    # --- background thread -------------------------------------------------------------

    def _send(self, step: int, state: dict, metrics: dict[str, float], warm_up: bool) -> None:
        if not warm_up:
            self._diagnose(step, state, metrics)
            return
        try:
            self._warm_up(step, state, metrics)
        finally:
            with self._lock:
                self._warming = False
                pending, self._pending = self._pending, None
            if pending is None:
                self._slot.release()
            else:  # on this thread, so that wait() waits for it too
                self._diagnose(*pending)

    def _warm_up(self, step: int, state: dict, metrics: dict[str, float]) -> None:
        """The ad-hoc diagnosis that makes the server compile this architecture."""
        # run_id "": ad hoc, a run of its own that never alerts
        verdict = self._upload(step, state, metrics, run_id="", failure_prefix="warm-up: ")
        if verdict is None:
            return
        self.warm_up_verdict = verdict
        log.info(
            "gradhealth: the server compiled this architecture at step %d (%.1f s)",
            step,
            sum(verdict.proto.phase_seconds.values()),
        )

    def _upload(
        self,
        step: int,
        state: dict,
        metrics: dict[str, float],
        run_id: str,
        failure_prefix: str = "",
    ) -> Verdict | None:
        """Save the snapshot and diagnose it under run_id; None (counted) on failure."""
        try:
            return self._client.diagnose(
                self._checkpoint(state),
                batch=self._batch,
                run_id=run_id,
                step=step,
                training_metrics=metrics,
                mode=self.mode,
            )
        except grpc.RpcError as error:
            self._failure(f"{failure_prefix}{error.code().name}: {error.details()}")
        except Exception as exc:
            self._failure(f"{failure_prefix}{type(exc).__name__}: {exc}")
        return None

    def _diagnose(self, step: int, state: dict, metrics: dict[str, float]) -> None:
        """One of the run's checkpoints: its verdict, stop_on and on_verdict; the slot
        is free again when this returns."""
        try:
            verdict = self._upload(step, state, metrics, run_id=self.run_id)
        finally:
            self._slot.release()
        if verdict is None:
            return
        self.sent += 1
        self.verdicts.append(verdict)
        bad_enough = self.stop_on and STATUS_ORDER[verdict.status] >= STATUS_ORDER[self.stop_on]
        if bad_enough and not self._stop_requested:
            log.warning(
                "gradhealth: %s verdict at step %d (%s): stopping training",
                verdict.status,
                step,
                verdict.primary_cause,
            )
            self._stop_requested = True
            self._stopped_by = verdict
        if self.on_verdict is not None:
            try:
                self.on_verdict(verdict)
            except Exception:
                log.exception("gradhealth: the on_verdict hook failed")

    def _checkpoint(self, state: dict) -> bytes:
        """The snapshot as `.keras` bytes, written from the shadow model."""
        if self._shadow is None:
            self._shadow = self._build_shadow()
        self._shadow.set_weights(state["weights"])
        for variable, value in zip(self._shadow.optimizer.variables, state["optimizer"]):
            variable.assign(value)
        with tempfile.TemporaryDirectory(prefix="gradhealth-") as directory:
            path = Path(directory) / "checkpoint.keras"
            self._shadow.save(path)
            return path.read_bytes()

    def _build_shadow(self) -> Any:
        shadow = keras.models.clone_model(self.model)
        shadow.compile_from_config(self.model.get_compile_config())
        shadow.optimizer.build(shadow.trainable_variables)
        if len(shadow.optimizer.variables) != len(self.model.optimizer.variables):
            raise RuntimeError("the model's optimizer state cannot be copied")
        return shadow

    def _failure(self, message: str) -> None:
        self.failed += 1
        self.last_error = message
        if self.failed == 1:
            log.warning(
                "gradhealth: %s (training continues; further failures are counted)", message
            )


def _metrics(logs: dict | None) -> dict[str, float]:
    out = {}
    for name, value in (logs or {}).items():
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out
