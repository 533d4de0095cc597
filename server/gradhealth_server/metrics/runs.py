"""Per-run gauges: each active run's latest verdict, read from the store at scrape time.

The runs come from the store, not from this process's calls, so every replica
exports every run (dashboards and alerts aggregate with `max by (run_id)`) and
a restarted server exports what it had before. The number of series is
bounded: at most `max_runs` runs, those diagnosed within the last
`active_seconds`; a run that goes quiet longer drops out of the exposition.
Ad-hoc runs are never exported. A closed run (finished or stopped) keeps its
gauges for the dashboards and adds its end time, which the alert rules read to
leave it alone (docs/runbook.md, "Runs have an end").
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from gradhealth.contract import STATUS_ORDER, enum_name
from gradhealth.v1 import service_pb2, verdict_pb2
from gradhealth_server.store.rows import store_error
from gradhealth_server.store.verdict_store import ActiveRun, VerdictStore

log = logging.getLogger(__name__)

CLOSED = {service_pb2.RUN_STATE_FINISHED: "finished", service_pb2.RUN_STATE_STOPPED: "stopped"}


@dataclass(frozen=True)
class RunMetricsConfig:
    # Longer than any "run gone silent" alert window, so that alert can fire.
    active_seconds: float = 24 * 3600.0
    max_runs: int = 500


class RunMetrics(Collector):
    def __init__(
        self,
        store: VerdictStore,
        config: RunMetricsConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config or RunMetricsConfig()
        self.clock = clock

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The names, without reading the store (called at registration)."""
        return iter(_families().values())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        since = dt.datetime.fromtimestamp(self.clock() - self.config.active_seconds, dt.UTC)
        families = _families()
        try:
            active = self.store.active_runs(since, self.config.max_runs)
        except SQLAlchemyError as exc:
            log.warning("run metrics: the verdict store is unavailable: %s", store_error(exc))
            families["store_up"].add_metric([], 0)
            yield families["store_up"]
            return
        families["store_up"].add_metric([], 1)
        families["active_runs"].add_metric([], len(active))
        for run in active:
            _add_run(families, run)
        yield from families.values()


def _families() -> dict[str, GaugeMetricFamily]:
    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"gradhealth_{name}", doc, labels=list(labels))

    run, cause = ("run_id",), ("run_id", "primary_cause")
    return {
        "store_up": gauge("store_up", "1 when the verdict store answered this scrape."),
        "active_runs": gauge("active_runs", "Runs diagnosed recently, as exported below."),
        "status": gauge(
            "run_status", "Latest verdict of the run: 0 healthy, 1 warning, 2 critical.", cause
        ),
        "stalled": gauge("run_stalled", "1 when the run's latest verdict finds it stalled.", cause),
        "step": gauge("run_step", "Training step of the run's latest checkpoint.", run),
        "accuracy": gauge(
            "run_accuracy",
            "Accuracy at the latest checkpoint: reported by the training job, or measured "
            "on the sample batch.",
            ("run_id", "source"),
        ),
        "loss": gauge(
            "run_loss",
            "Loss at the latest checkpoint: reported by the training job, or measured on "
            "the sample batch.",
            ("run_id", "source"),
        ),
        "gradient_norm": gauge(
            "run_gradient_norm", "Global gradient norm at the latest checkpoint.", run
        ),
        "last": gauge(
            "run_last_diagnosis_timestamp_seconds",
            "Unix time of the run's latest diagnosis.",
            run,
        ),
        "end": gauge(
            "run_end_timestamp_seconds",
            "Unix time the run was closed; only closed runs have it. state: finished "
            "(training ended) or stopped (by a verdict or by hand).",
            ("run_id", "state"),
        ),
    }


def _add_run(families: dict[str, GaugeMetricFamily], run: ActiveRun) -> None:
    status = enum_name(verdict_pb2.Status, run.status, "STATUS_") or "healthy"
    cause = enum_name(verdict_pb2.Cause, run.primary_cause, "CAUSE_") or "none"
    families["status"].add_metric([run.run_id, cause], STATUS_ORDER.get(status, 0))
    families["stalled"].add_metric([run.run_id, cause], int(run.stalled))
    families["step"].add_metric([run.run_id], run.step)
    families["last"].add_metric([run.run_id], run.last_time.timestamp())
    for family, source, value in (
        ("accuracy", "reported", run.reported_accuracy),
        ("accuracy", "batch", run.batch_accuracy),
        ("loss", "reported", run.reported_loss),
        ("loss", "batch", run.batch_loss),
    ):
        if value is not None:
            families[family].add_metric([run.run_id, source], value)
    if run.grad_norm is not None:
        families["gradient_norm"].add_metric([run.run_id], run.grad_norm)
    if run.state in CLOSED and run.end_time is not None:
        families["end"].add_metric([run.run_id, CLOSED[run.state]], run.end_time.timestamp())
