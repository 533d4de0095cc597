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


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.diagnoses = Counter(
            "gradhealth_diagnoses",
            "Diagnose calls answered, by verdict status (error: no verdict).",
            ["status"],
            registry=r,
        )
        self.findings = Counter(
            "gradhealth_findings", "Findings reported, by cause.", ["cause"], registry=r
        )
        self.duration = Histogram(
            "gradhealth_diagnosis_duration_seconds",
            "Seconds spent per phase of a Diagnose call.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "gradhealth_queue_depth",
            "Calls uploaded in full and waiting for a worker.",
            registry=r,
        )
        self.uploads = Gauge(
            "gradhealth_uploads_in_progress",
            "Calls uploading their checkpoint and batch (--max-uploads at most).",
            registry=r,
        )
        self.queue_capacity = Gauge(
            "gradhealth_queue_capacity",
            "Calls that may be admitted at once (--queue-size); more get RESOURCE_EXHAUSTED.",
            registry=r,
        )
        self.workers = Gauge("gradhealth_workers", "Worker processes configured.", registry=r)
        self.rejected = Counter(
            "gradhealth_rejected",
            "Diagnose calls refused or failed, by reason.",
            ["reason"],
            registry=r,
        )
        self.dropped = Counter(
            "gradhealth_jobs_dropped",
            "Jobs dropped because their call was cancelled or its deadline passed.",
            ["reason"],
            registry=r,
        )
        self.cache_hits = Counter(
            "gradhealth_model_cache_hits",
            "Diagnoses that reused a loaded architecture.",
            registry=r,
        )
        self.cache_misses = Counter(
            "gradhealth_model_cache_misses",
            "Diagnoses that loaded and compiled an architecture.",
            registry=r,
        )
        self.worker_busy = Gauge(
            "gradhealth_workers_busy", "Worker processes running a job.", registry=r
        )
        self.worker_restarts = Counter(
            "gradhealth_worker_restarts",
            "Worker processes that died and were restarted.",
            registry=r,
        )
        self.duplicates = Counter(
            "gradhealth_duplicate_requests",
            "Retried Diagnose calls answered with the verdict already stored.",
            registry=r,
        )
        self.watchers = Gauge("gradhealth_watchers", "WatchVerdicts streams open.", registry=r)
        self.uploaded_bytes = Counter(
            "gradhealth_uploaded_bytes", "Checkpoint and batch bytes received.", registry=r
        )
