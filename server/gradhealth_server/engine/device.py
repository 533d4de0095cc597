"""Pick the accelerator: the GPU when TensorFlow sees one, the CPU otherwise."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of service logs and CLI output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what TensorFlow's C++ side prints to fd 2 while it starts.

    TF 2.19+ logs through absl before its log level applies, so
    TF_CPP_MIN_LOG_LEVEL does not hide the start-up lines (tensorflow#100442).
    Python-level errors are unaffected: they are raised, not printed.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@functools.cache
def configure_device() -> str:
    """Turn on memory growth on every GPU and return the device the probe runs on.

    Memory growth lets the worker share a GPU with nothing else reserved up front;
    it must be set before TensorFlow initialises the device, so call this first.
    """
    quiet_tensorflow()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # already initialised: growth is then fixed
            log.warning("could not enable memory growth on %s: %s", gpu.name, exc)
    device = "/GPU:0" if gpus else "/CPU:0"
    log.info("gradhealth probe device: %s", device)
    return device
