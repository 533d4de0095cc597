"""What a failed probe run means for the caller: out of memory (LimitExceeded,
naming the memory cap), or a batch the model cannot take (InvalidBatch)."""

from __future__ import annotations

import tensorflow as tf

from gradhealth_server.errors import InvalidBatch, LimitExceeded

# How TensorFlow words an allocation that failed: the BFC allocator's OOM, the
# CPU allocator under RLIMIT_AS, XLA's buffer assignment.
OUT_OF_MEMORY_SIGNS = (
    "oom",
    "out of memory",
    "failed to allocate",
    "bad_alloc",
    "resource exhausted",
)


def probe_error(exc: tf.errors.OpError) -> Exception:
    """What a failed probe run means: out of memory (LimitExceeded, naming the
    memory cap), or a batch the model cannot take (InvalidBatch)."""
    text = (exc.message or str(exc)).lower()
    if isinstance(exc, tf.errors.ResourceExhaustedError) or any(
        sign in text for sign in OUT_OF_MEMORY_SIGNS
    ):
        lines = (exc.message or str(exc)).strip().splitlines() or [""]
        said = [line for line in lines if any(sign in line.lower() for sign in OUT_OF_MEMORY_SIGNS)]
        first = " ".join((said or lines)[0].split())[:200]
        return LimitExceeded(
            "the probe ran out of memory in this worker (--worker-memory-mb, or the "
            f"device's): send fewer rows, or a smaller model ({first})"
        )
    return InvalidBatch(op_error(exc))


def op_error(exc: tf.errors.OpError) -> str:
    first = (exc.message or str(exc)).strip().splitlines()[0][:300]
    return f"the batch does not run through the model: {first}"
