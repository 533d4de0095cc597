"""Pick the accelerator: the GPU when TensorFlow sees one, the CPU otherwise."""

from __future__ import annotations

import contextlib
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


_configured: str | None = None


class CompileCacheError(ValueError):
    """The compile cache directory is not one this process may trust."""


def use_compile_cache(directory: str | os.PathLike[str]) -> str:
    """Keep XLA's compiled executables in `directory`, shared by every worker, replica
    and restart that mounts it: an architecture compiled once is loaded, not compiled
    again (TensorFlow's `--tf_xla_persistent_cache_directory`).

    It caches what XLA compiles, so it pays where XLA is used (on a GPU by default,
    or GRADHEALTH_XLA=on); the plain graph a CPU runs by default is not cached by
    TensorFlow. The files are executables that TensorFlow loads and runs: the
    directory must be this user's alone (created 0700; refused if another user owns
    it or may write to it). Call before TensorFlow compiles anything.
    """
    path = os.path.abspath(os.fspath(directory))
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise CompileCacheError(f"compile cache {path} belongs to another user (uid {info.st_uid})")
    if info.st_mode & 0o022:
        raise CompileCacheError(
            f"compile cache {path} is writable by others (mode {info.st_mode & 0o777:o}); "
            f"chmod 700 it: its files are executables TensorFlow runs"
        )
    flag = f"--tf_xla_persistent_cache_directory={path}"
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if flag not in flags.split():
        os.environ["TF_XLA_FLAGS"] = f"{flags} {flag}".strip()
    return path


def xla_by_default() -> bool:
    """Whether a probe left to choose (jit_compile=None) tries XLA: on a GPU, yes.

    On the CPUs measured here XLA made the bare train step slower for every model
    (README, "Performance") and its first compile takes several times longer (a
    ResNet50 at 64 px: 793 s to the first verdict with XLA, 236 s without), so on a
    CPU the plain graph is the default. GRADHEALTH_XLA=on|off overrides either way.
    """
    choice = _switch("GRADHEALTH_XLA")
    if choice is not None:
        return choice
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def graph_rewrites_by_default(gpu: bool) -> bool:
    """Whether the probe's plain graph goes through Grappler's rewrites: on a GPU, yes.

    They fuse and reorder ops for the device; on the CPUs measured here they took
    half of a cold probe's first call (MobileNetV2 at 64 px: 9.0 s against 4.5 s
    without; ResNet50 17.5 s against 10.1 s) and left the warm probe within noise
    of the rewritten one, so a worker without a GPU skips them. On a GPU they stay
    on (the layout optimizer matters there; XLA, its default, does not use them).
    GRADHEALTH_GRAPPLER=on|off overrides either way.
    """
    choice = _switch("GRADHEALTH_GRAPPLER")
    return gpu if choice is None else choice


def _switch(name: str) -> bool | None:
    """An on/off environment variable: True, False, or None when unset or unclear."""
    choice = os.environ.get(name, "").strip().lower()
    if choice in ("1", "on", "true", "yes"):
        return True
    if choice in ("0", "off", "false", "no"):
        return False
    return None


def configure_device(gpu_memory_mb: int | None = None) -> str:
    """Set up the GPU and return the device the probe runs on (once per process;
    later calls return the first answer).

    With `gpu_memory_mb`, TensorFlow may use that much of GPU 0 and no more: an
    out-of-memory is then this worker's RESOURCE_EXHAUSTED, not a neighbour's
    crash. Without it, memory growth lets the worker share the GPU with nothing
    reserved up front. Either must be set before TensorFlow initialises the
    device, so call this first.
    """
    global _configured
    if _configured is not None:
        return _configured
    quiet_tensorflow()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for i, gpu in enumerate(gpus):
        try:
            if gpu_memory_mb and i == 0:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=gpu_memory_mb)]
                )
                log.info("%s capped at %d MiB", gpu.name, gpu_memory_mb)
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError) as exc:  # already initialised: it is then fixed
            log.warning("could not configure memory on %s: %s", gpu.name, exc)
    if not graph_rewrites_by_default(gpu=bool(gpus)):
        # Grappler's rewrites were half of a cold probe's first call on a CPU and
        # changed its warm time by a few per cent either way (README, "The cold path").
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    _configured = "/GPU:0" if gpus else "/CPU:0"
    log.info("gradhealth probe device: %s", _configured)
    return _configured
