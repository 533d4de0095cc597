"""What both sides agree on besides the protos: enum value names, probe modes,
the sizes of the wire, the order of statuses and severities.

The client package and the server package both import this module and the
generated `gradhealth.v1` code, and nothing else of each other's internals
(tests/test_architecture.py checks it). It needs nothing but the protos.
"""

from __future__ import annotations

from typing import Any

from gradhealth.v1 import service_pb2

KiB = 1024
MiB = 1024 * KiB

# Upload chunks: 64 KiB to 1 MiB each; only the last chunk of a part may be smaller.
MIN_CHUNK_BYTES = 64 * KiB
MAX_CHUNK_BYTES = 1 * MiB
# One request message: a chunk and its framing.
MAX_REQUEST_BYTES = MAX_CHUNK_BYTES + 64 * KiB
# One reply: a verdict with every per-layer measurement of a deep model.
MAX_REPLY_BYTES = 64 * MiB

# Probe modes by name, and back.
PROBE_MODES = {"full": service_pb2.PROBE_MODE_FULL, "norms": service_pb2.PROBE_MODE_NORMS}
PROBE_MODE_NAMES = {
    service_pb2.PROBE_MODE_UNSPECIFIED: "full",
    service_pb2.PROBE_MODE_FULL: "full",
    service_pb2.PROBE_MODE_NORMS: "norms",
}

# Ordered, so "at least warning" is a comparison (stop_on, alerts, sorting).
STATUS_ORDER = {"healthy": 0, "warning": 1, "critical": 2}
SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


def enum_name(enum: Any, value: int, prefix: str) -> str | None:
    """CAUSE_DEAD_RELU -> "dead_relu"; None for UNSPECIFIED or a value this code
    does not know (written by a newer peer)."""
    if value == 0:
        return None
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return None
