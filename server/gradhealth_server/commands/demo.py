"""`gradhealth demo`: the whole product in one command.

Starts the service on this machine (a thread of this process with a temporary
SQLite store, diagnoses in a worker process as in production), trains the
digits CNN with a classic bug while `GradientHealthCallback` sends a checkpoint
every epoch, shows the verdicts as they arrive, applies the fix the verdict
prescribes, and trains again until the run is healthy. Nothing is downloaded:
the data is scikit-learn's digits.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gradhealth.client import GradientHealthClient
from gradhealth.render import STATUS_STYLE, render_runs
from gradhealth.verdicts import Finding, Verdict, run_to_dict

SAMPLE_ROWS = 256
START_TIMEOUT_S = 180.0
CONNECT_TIMEOUT_S = 15.0  # --server: an existing service answers at once or not at all


@dataclass(frozen=True)
class Setup:
    """How the demo trains; a bug is a bad setup, a fix changes one field."""

    optimizer: str  # "sgd" or "adam"
    learning_rate: float
    pixel_divisor: float  # the 0-255 pixels are divided by this before training

    def describe(self) -> str:
        pixels = "0-255 pixels" if self.pixel_divisor == 1 else f"pixels / {self.pixel_divisor:g}"
        return f"{pixels}, {self.keras_optimizer} at learning rate {self.learning_rate:g}"

    @property
    def keras_optimizer(self) -> str:
        """The class name as Keras spells it: SGD, Adam."""
        return {"sgd": "SGD", "adam": "Adam"}.get(self.optimizer, self.optimizer)


@dataclass(frozen=True)
class Bug:
    cause: str  # what gradhealth should name
    story: str
    setup: Setup


BUGS = {
    "pixels": Bug(
        "unnormalized_input",
        "the input pipeline forgot `x / 255.0`",
        Setup("sgd", 0.01, pixel_divisor=1.0),
    ),
    "learning-rate": Bug(
        "learning_rate_too_high",
        "someone typed learning_rate=1.0 for Adam",
        Setup("adam", 1.0, pixel_divisor=255.0),
    ),
}


@dataclass
class RunResult:
    run_id: str
    accuracy: float
    verdicts: list[Verdict]
    skipped: int
    failed: int

    @property
    def latest(self) -> Verdict | None:
        return max(self.verdicts, key=lambda v: v.step) if self.verdicts else None


def run_demo(
    bug_name: str = "pixels",
    epochs: int = 12,
    server: str | None = None,
    console: Console | None = None,
) -> int:
    """0 when gradhealth named the bug and the fixed run came out healthy."""
    console = console or Console()
    bug = BUGS[bug_name]
    console.rule("[bold]gradhealth demo")
    console.print(
        f"A digits CNN (scikit-learn's 8x8 digits, 1797 images) with a classic bug: {bug.story}."
    )
    with _service(server, console) as target, GradientHealthClient(target) as client:
        stamp = time.strftime("%H%M%S")
        broken = _train(
            console, client, target, f"demo-{bug_name}-{stamp}", bug.setup, epochs, "1. as written"
        )
        finding = _named(broken, bug.cause)
        if finding is None:
            console.print(f"[bold red]gradhealth did not name {bug.cause}; the demo stops here.")
            return 1
        fixed_setup, applied = _apply(finding, bug.setup)
        console.print(
            Panel(
                f"[bold]{finding.cause}[/] ({finding.severity}): {finding.summary}\n\n"
                f"[bold]prescribed fix:[/] {finding.remedy}\n[bold]applying:[/] {applied}",
                title="the verdict",
                expand=False,
            ),
            highlight=False,
        )
        fixed = _train(
            console, client, target, f"demo-fixed-{stamp}", fixed_setup, epochs, "2. with the fix"
        )
        runs = [run_to_dict(r) for r in client.list_runs()]
        render_runs([r for r in runs if r["run_id"] in (broken.run_id, fixed.run_id)], console)
    healthy = fixed.latest is not None and fixed.latest.healthy
    console.print(
        f"accuracy {broken.accuracy:.1%} as written -> {fixed.accuracy:.1%} with the fix; "
        f"the fixed run is [{STATUS_STYLE['healthy' if healthy else 'critical']}]"
        f"{fixed.latest.status if fixed.latest else 'not diagnosed'}[/]."
    )
    return 0 if healthy else 1


@contextlib.contextmanager
def _service(server: str | None, console: Console) -> Iterator[str]:
    """The given server, or one started here on loopback with a throwaway store."""
    if server:
        with console.status(f"checking the service at {server}"):
            _wait_serving(server, lambda: True, timeout=CONNECT_TIMEOUT_S)
        yield server
        return
    from gradhealth_server.service.serve import ServeConfig, serving_in_background

    with tempfile.TemporaryDirectory(prefix="gradhealth-demo-") as directory:
        port = _free_port()
        config = ServeConfig(
            host="127.0.0.1",
            port=port,
            db_url=f"sqlite:///{Path(directory) / 'verdicts.db'}",
            spool_dir=Path(directory) / "spool",
            grace_seconds=10.0,
        )
        target = f"127.0.0.1:{port}"
        with serving_in_background(config) as thread:
            with console.status("starting the service (its worker loads TensorFlow)"):
                _wait_serving(target, thread.is_alive)
            console.print(f"service up on {target}, verdicts stored in a temporary SQLite file")
            yield target


def _train(
    console: Console,
    client: GradientHealthClient,
    target: str,
    run_id: str,
    setup: Setup,
    epochs: int,
    title: str,
) -> RunResult:
    import keras

    from gradhealth.callback import GradientHealthCallback
    from gradhealth_server.commands.examples import digits, digits_cnn

    console.rule(f"{title}: {setup.describe()}  [dim](run {run_id})")
    pixels, y = digits(scale=255.0 / 16.0)
    x = pixels / np.float32(setup.pixel_divisor)
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    optimizer = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[setup.optimizer]
    model.compile(
        optimizer=optimizer(learning_rate=setup.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    sample = (x[:SAMPLE_ROWS], y[:SAMPLE_ROWS])
    verdicts: list[Verdict] = []

    def show(verdict: Verdict) -> None:
        verdicts.append(verdict)
        console.print(_verdict_line(verdict), highlight=False, no_wrap=True, overflow="ellipsis")

    with console.status("step 0: compiling the probe for this architecture (once per model)"):
        show(client.diagnose(model, *sample, run_id=run_id, step=0))

    callback = GradientHealthCallback(target, run_id, sample, min_interval_s=0, on_verdict=show)
    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  accuracy {task.fields[accuracy]}"),
        TimeElapsedColumn(),
    )
    accuracy = 0.0
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("fit", total=epochs, accuracy="-")

        def epoch_done(epoch: int, logs: dict) -> None:
            nonlocal accuracy
            accuracy = float(logs.get("accuracy", 0.0))
            progress.update(task, advance=1, accuracy=f"{accuracy:.1%}")

        model.fit(
            x,
            y,
            epochs=epochs,
            batch_size=32,
            verbose=0,
            callbacks=[callback, keras.callbacks.LambdaCallback(on_epoch_end=epoch_done)],
        )
        callback.wait(timeout=120)
    console.print(
        f"[dim]checkpoints sent {callback.sent}, skipped while one was in flight "
        f"{callback.skipped}, failed {callback.failed}[/]"
    )
    return RunResult(run_id, accuracy, verdicts, callback.skipped, callback.failed)


def _verdict_line(verdict: Verdict) -> str:
    style = STATUS_STYLE.get(verdict.status, "bold")
    alarms = [f"{f.cause} ({f.severity})" for f in verdict.findings if f.severity != "info"]
    return (
        f"  step {verdict.step:>4}  [{style}]{verdict.status:<8}[/]  "
        f"{', '.join(alarms) or 'no problem found'}"
    )


def _named(result: RunResult, cause: str) -> Finding | None:
    """The bug's finding in the first verdict that named it: the evidence of the
    fresh model, before training damaged the weights."""
    for verdict in sorted(result.verdicts, key=lambda v: v.step):
        for finding in verdict.findings:
            if finding.cause == cause and finding.severity != "info":
                return finding
    return None


def _apply(finding: Finding, setup: Setup) -> tuple[Setup, str]:
    """The verdict's prescription, as a change of the setup."""
    appliers: dict[str, Callable[[], tuple[Setup, str]]] = {
        "unnormalized_input": lambda: (
            replace(setup, pixel_divisor=setup.pixel_divisor * 255.0),
            "x = x / 255.0",
        ),
        "learning_rate_too_high": lambda: _new_learning_rate(finding, setup),
    }
    return appliers[finding.cause]()


def _new_learning_rate(finding: Finding, setup: Setup) -> tuple[Setup, str]:
    suggested = float(finding.evidence["suggested_learning_rate"])
    return (
        replace(setup, learning_rate=suggested),
        f"{setup.keras_optimizer}(learning_rate={suggested:.3g}), from the probe",
    )


def _wait_serving(target: str, alive: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("the service stopped while starting")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise TimeoutError(f"no gradhealth service serving at {target} after {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
