"""Load checkpoints safely, fingerprint their architecture, cache the models.

A training job sends checkpoint after checkpoint of one architecture. The first
is loaded with `keras.saving.load_model(safe_mode=True)`; later ones with the
same fingerprint only have their weights (and optimizer state) loaded into the
cached model, so the compiled probe is reused with no retrace and no rebuild.

A checkpoint trained under a mixed-precision policy is loaded (and probed, see
diagnosis.py) under that policy, scoped: Keras only wraps the optimizer in its
LossScaleOptimizer, whose variables the checkpoint holds, when the global policy
says mixed_float16 at compile time. Optimizer state Keras could not restore is
recorded, not hidden: a probe on fresh moments would judge a different run.

Before Keras touches a checkpoint, each part is screened by the module that
knows it: the zip (archive), the objects config.json names (config_screen), the
HDF5 weights file (weights_file), and the size of the model the config declares,
counted without allocating it (model_size) against what the weights file holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradhealth_server.errors import InvalidCheckpoint, LimitExceeded
from gradhealth_server.intake.archive import ArchiveInfo, inspect_archive
from gradhealth_server.intake.config_screen import screen_config
from gradhealth_server.intake.limits import (
    DEFAULT_LIMITS,
    PROBE_STATE_COPIES,
    PROBE_WEIGHT_COPIES,
    Limits,
    MiB,
)
from gradhealth_server.intake.model_size import CompileArgumentTooLarge, count_layers, declared_size
from gradhealth_server.intake.weights_file import WeightsSummary, screen_weights

log = logging.getLogger(__name__)

# Config keys that differ between checkpoints of one architecture.
VOLATILE_KEYS = frozenset({"shared_object_id"})
# The dtype policies a checkpoint may name for its model; anything else loads as float32.
MIXED_POLICIES = frozenset({"mixed_float16", "mixed_bfloat16"})
_SKIPPED_OPTIMIZER = re.compile(
    r"Skipping variable loading for optimizer '([^']*)', because it has (\d+) variables "
    r"whereas the saved optimizer has (\d+) variables"
)


@dataclass
class LoadedModel:
    """A model in the cache, with what the engine derived from it."""

    fingerprint: str
    model: Any  # keras.Model
    structure: Any = None  # engine.structure.ModelStructure, filled by the engine
    probes: dict[Any, Any] = field(default_factory=dict)  # (batch signature, options) -> Probe
    # The global dtype policy the model was loaded under, and is probed under.
    dtype_policy: str = "float32"
    # Why the checkpoint's optimizer state is not in the model (None: it is, or
    # there was none yet). Rules needing the optimizer's state then stay silent.
    optimizer_state_lost: str | None = None


def fingerprint(config: dict[str, Any]) -> str:
    """Architecture identity: canonical model config + inputs + loss/optimizer kind.

    The optimizer's learning rate is left out when it is a plain number: it lives
    in an optimizer variable that a weight reload restores, and schedules such as
    ReduceLROnPlateau change it between checkpoints of one architecture.
    """
    canonical = _strip(config)
    compile_config = canonical.get("compile_config")
    if isinstance(compile_config, dict):
        optimizer = compile_config.get("optimizer")
        if isinstance(optimizer, dict) and isinstance(optimizer.get("config"), dict):
            lr = optimizer["config"].get("learning_rate")
            if isinstance(lr, (int, float)):
                optimizer["config"].pop("learning_rate")
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class ModelCache:
    """Least-recently-used cache of loaded models keyed by architecture fingerprint."""

    def __init__(self, capacity: int = 8, limits: Limits = DEFAULT_LIMITS) -> None:
        self.capacity = capacity
        self.limits = limits
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()

    def __len__(self) -> int:
        return len(self._models)

    def get(self, key: str) -> LoadedModel | None:
        """The cached entry for an architecture fingerprint, if loaded."""
        return self._models.get(key)

    def load(self, path: str | Path) -> tuple[LoadedModel, ArchiveInfo, bool]:
        """Return (entry, archive info, cache hit) for the checkpoint at `path`."""
        info = inspect_archive(path, self.limits)
        try:
            screen_config(info.config, self.limits)
            key = fingerprint(info.config)
        except RecursionError as exc:
            raise InvalidCheckpoint("config.json nests too deeply to be a Keras model") from exc
        weights = screen_weights(info.path)
        entry = self._models.get(key)
        if entry is not None:
            self._reload_weights(entry, info.path)
            self._models.move_to_end(key)
            return entry, info, True
        check_declared_size(info.config, weights, self.limits)
        # The parameter cap was checked on the exact count, before anything was built.
        policy = checkpoint_policy(info.config)
        with dtype_policy_scope(policy):
            model, lost = _load_model(info.path)
        entry = LoadedModel(fingerprint=key, model=model, dtype_policy=policy)
        entry.optimizer_state_lost = lost
        self._models[key] = entry
        while len(self._models) > self.capacity:
            evicted, _ = self._models.popitem(last=False)
            log.info("model cache full: evicted architecture %s", evicted[:12])
        return entry, info, False

    def _reload_weights(self, entry: LoadedModel, path: Path) -> None:
        try:
            with (
                dtype_policy_scope(entry.dtype_policy),
                _optimizer_warnings() as skipped,
                _temporary_files_in(path.parent),
            ):
                entry.model.load_weights(str(path))
            entry.optimizer_state_lost = _state_lost(skipped)
        except Exception as exc:  # Keras raises many types for bad weight files
            # The cached model may now hold a mix of old and new weights.
            self._models.pop(entry.fingerprint, None)
            raise InvalidCheckpoint(
                f"could not load the checkpoint's weights: {_short(exc)}"
            ) from exc


def check_declared_size(
    config: dict[str, Any], weights: WeightsSummary, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Refuse a model too big to build, before Keras allocates any of it.

    The two statuses say whose problem it is. A config that needs more values
    than model.weights.h5 holds contradicts its own checkpoint: no `model.save()`
    writes that, whatever this server's limits, so it is InvalidCheckpoint
    (INVALID_ARGUMENT). That is what a hostile `Dense(2_000_000_000)` gets. A
    model whose weights are really there but exceed the operator's caps is
    LimitExceeded (RESOURCE_EXHAUSTED): a server with larger limits could take it.
    """
    layers = count_layers(config)
    if layers > limits.max_layers:
        raise LimitExceeded(
            f"config.json declares {layers:,} layers, over the limit of {limits.max_layers:,}: "
            "tracing that many would hold a worker for minutes"
        )
    try:
        size = declared_size(config)
    except CompileArgumentTooLarge as exc:
        raise LimitExceeded(str(exc)) from exc
    except RecursionError as exc:
        raise InvalidCheckpoint("config.json nests too deeply to be a Keras model") from exc
    except Exception as exc:  # Keras raises many types for configs it cannot build
        raise InvalidCheckpoint(
            f"Keras could not build the model config.json describes: {_short(exc)}"
        ) from exc
    if size.parameters > weights.elements:
        raise InvalidCheckpoint(
            f"config.json declares a model of {size.parameters:,} parameters "
            f"({size.largest_variable}) but model.weights.h5 holds only {weights.elements:,} "
            "values: the config and the weights do not belong together"
        )
    if size.parameters > limits.max_parameters:
        raise LimitExceeded(
            f"model has {size.parameters:,} parameters, over the limit of {limits.max_parameters:,}"
        )
    held = size.parameters + size.compile_state
    if held > limits.max_parameters:
        raise LimitExceeded(
            f"the compiled model holds {held:,} values ({size.parameters:,} weights and "
            f"{size.compile_state:,} of metric and optimizer state, the largest "
            f"{size.largest_state}), over the limit of {limits.max_parameters:,} "
            "(--max-parameters)"
        )
    needed = 4 * (PROBE_WEIGHT_COPIES * size.parameters + PROBE_STATE_COPIES * size.compile_state)
    if needed > limits.max_probe_state_bytes:
        raise LimitExceeded(
            f"probing this model needs about {needed / MiB:,.0f} MiB for its {size.parameters:,} "
            f"weights and {size.compile_state:,} optimizer and metric values (each held "
            f"several times while a step is measured and undone), over the "
            f"{limits.max_probe_state_bytes / MiB:,.0f} MiB this worker's memory allows "
            "(--worker-memory-mb)"
        )
    if size.largest_activation > limits.max_activation_elements:
        raise LimitExceeded(
            f"one example makes {size.largest_activation:,} values in a single activation "
            f"({size.largest_output}), over the limit of {limits.max_activation_elements:,}"
        )


def checkpoint_policy(config: dict[str, Any]) -> str:
    """The global dtype policy the checkpoint's model was built under.

    The model's own `dtype` says it (a Sequential records it); a functional model
    does not, so any layer naming a mixed policy does (Keras writes one per layer).
    """
    inner = config.get("config") if isinstance(config, dict) else None
    own = inner.get("dtype") if isinstance(inner, dict) else None
    name = _policy_name(own)
    if name is not None:
        return name if name in MIXED_POLICIES else "float32"
    layers = inner.get("layers") if isinstance(inner, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        cfg = layer.get("config") if isinstance(layer, dict) else None
        name = _policy_name(cfg.get("dtype") if isinstance(cfg, dict) else None)
        if name in MIXED_POLICIES:
            return name
    return "float32"


def _policy_name(node: Any) -> str | None:
    if isinstance(node, dict) and node.get("class_name") == "DTypePolicy":
        cfg = node.get("config")
        name = cfg.get("name") if isinstance(cfg, dict) else None
        return name if isinstance(name, str) else None
    return node if isinstance(node, str) else None


@contextlib.contextmanager
def dtype_policy_scope(name: str) -> Iterator[None]:
    """Keras's global dtype policy set to `name` for the block, then put back: the
    worker serves many jobs, and the next checkpoint must not inherit this one's."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _load_model(path: Path) -> tuple[Any, str | None]:
    """The model, and why its optimizer state is missing (None: it is restored)."""
    import keras
    from tensorflow.errors import ResourceExhaustedError as ResourceExhausted

    try:
        with _optimizer_warnings() as skipped, _temporary_files_in(path.parent):
            model = keras.saving.load_model(str(path), compile=True, safe_mode=True)
    except InvalidCheckpoint:
        raise
    except (MemoryError, ResourceExhausted) as exc:  # an honest model, too big for us
        raise LimitExceeded(
            "the model does not fit in this worker's memory (--worker-memory-mb, or the "
            f"device's): {_short(exc, 200)}"
        ) from exc
    except Exception as exc:
        raise InvalidCheckpoint(f"Keras could not load the checkpoint: {_short(exc)}") from exc
    if not isinstance(model, keras.Model):
        raise InvalidCheckpoint("checkpoint does not hold a keras.Model")
    if not model.built:
        raise InvalidCheckpoint("the model in the checkpoint was never built (no weights)")
    if not model.trainable_variables:
        raise InvalidCheckpoint(
            "the model has no trainable weights (every layer frozen): nothing can learn; "
            "set layer.trainable = True on the layers to train"
        )
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise InvalidCheckpoint(
            "checkpoint was saved from an uncompiled model: call model.compile(optimizer, loss)"
            " before model.save() so the loss and optimizer state are inside"
        )
    if not model.optimizer.built:
        # Saved before the first training step: no optimizer state yet.
        try:
            model.optimizer.build(model.trainable_variables)
        except (ValueError, TypeError) as exc:
            raise InvalidCheckpoint(f"the checkpoint's optimizer cannot be built: {exc}") from exc
    return model, _state_lost(skipped)


@contextlib.contextmanager
def _temporary_files_in(directory: Path) -> Iterator[None]:
    """Keras unpacks an archive with assets into `tempfile.mkdtemp()`, every member
    weights included: keep that next to the checkpoint (the call's spool, removed
    with it), not in the machine's temp directory. The worker is single-threaded."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(directory)
    try:
        yield
    finally:
        tempfile.tempdir = previous


@contextlib.contextmanager
def _optimizer_warnings() -> Iterator[list[str]]:
    """The optimizers whose saved variables Keras skipped, kept out of the log.

    A checkpoint saved before the first step holds fewer variables than the built
    optimizer (no slots yet): not news, the optimizer is built instead. One holding
    more (a LossScaleOptimizer's, loaded as its inner optimizer) lost its state.
    """
    skipped: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield skipped
    for warning in caught:
        text = str(warning.message)
        if _SKIPPED_OPTIMIZER.search(text):
            skipped.append(text)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def _state_lost(skipped: list[str]) -> str | None:
    """Why the saved optimizer state was not restored, or None."""
    for text in skipped:
        match = _SKIPPED_OPTIMIZER.search(text)
        if match and int(match.group(3)) > int(match.group(2)):
            return (
                f"the checkpoint holds {match.group(3)} variables for optimizer "
                f"{match.group(1)!r} but the loaded one has {match.group(2)}: its state "
                "(step count, moments, loss scale) could not be restored"
            )
    return None


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in VOLATILE_KEYS}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
