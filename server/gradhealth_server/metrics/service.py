"""The service's Prometheus metrics (prefix `gradhealth_`, base units).

Labels stay low-cardinality: a status, a cause, a phase, a reason; never a
layer. The per-run gauges (a bounded set of recent runs, read from the store)
are in run_metrics.py. Each server owns its registry, so tests can read exact
values.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# `*_created` series double the exposition and no dashboard reads them.
prometheus_client.disable_created_metrics()

# Seconds: a warm probe takes tens of milliseconds, a cold 1 GB checkpoint minutes.
PHASE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# Each metric's help text, by its exposed name: the names and texts are read by
# the alert rules, dashboards and tests, so they are written once, here.
HELP = {
    "gradhealth_diagnoses": "Diagnose calls answered, by verdict status (error: no verdict).",
    "gradhealth_findings": "Findings reported, by cause.",
    "gradhealth_diagnosis_duration_seconds": "Seconds spent per phase of a Diagnose call.",
    "gradhealth_queue_depth": "Calls uploaded in full and waiting for a worker.",
    "gradhealth_uploads_in_progress": (
        "Calls uploading their checkpoint and batch (--max-uploads at most)."
    ),
    "gradhealth_queue_capacity": (
        "Calls that may be admitted at once (--queue-size); more get RESOURCE_EXHAUSTED."
    ),
    "gradhealth_workers": "Worker processes configured.",
    "gradhealth_rejected": "Diagnose calls refused or failed, by reason.",
    "gradhealth_jobs_dropped": (
        "Jobs dropped because their call was cancelled or its deadline passed."
    ),
    "gradhealth_model_cache_hits": "Diagnoses that reused a loaded architecture.",
    "gradhealth_model_cache_misses": "Diagnoses that loaded and compiled an architecture.",
    "gradhealth_workers_busy": "Worker processes running a job.",
    "gradhealth_worker_restarts": "Worker processes that died and were restarted.",
    "gradhealth_duplicate_requests": (
        "Retried Diagnose calls answered with the verdict already stored."
    ),
    "gradhealth_watchers": "WatchVerdicts streams open.",
    "gradhealth_uploaded_bytes": "Checkpoint and batch bytes received.",
}


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def counter(name: str, *labels: str) -> Counter:
            """A counter in this server's registry, with its help text from HELP."""
            return Counter(name, HELP[name], labels, registry=r)

        def gauge(name: str) -> Gauge:
            """An unlabelled gauge in this server's registry, help text from HELP."""
            return Gauge(name, HELP[name], registry=r)

        self.diagnoses = counter("gradhealth_diagnoses", "status")
        self.findings = counter("gradhealth_findings", "cause")
        self.duration = Histogram(
            "gradhealth_diagnosis_duration_seconds",
            HELP["gradhealth_diagnosis_duration_seconds"],
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.queue_depth = gauge("gradhealth_queue_depth")
        self.uploads = gauge("gradhealth_uploads_in_progress")
        self.queue_capacity = gauge("gradhealth_queue_capacity")
        self.workers = gauge("gradhealth_workers")
        self.rejected = counter("gradhealth_rejected", "reason")
        self.dropped = counter("gradhealth_jobs_dropped", "reason")
        self.cache_hits = counter("gradhealth_model_cache_hits")
        self.cache_misses = counter("gradhealth_model_cache_misses")
        self.worker_busy = gauge("gradhealth_workers_busy")
        self.worker_restarts = counter("gradhealth_worker_restarts")
        self.duplicates = counter("gradhealth_duplicate_requests")
        self.watchers = gauge("gradhealth_watchers")
        self.uploaded_bytes = counter("gradhealth_uploaded_bytes")
