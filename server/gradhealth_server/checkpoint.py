"""Load checkpoints safely, fingerprint their architecture, cache the models.

A training job sends checkpoint after checkpoint of one architecture. The first
is loaded with `keras.saving.load_model(safe_mode=True)`; later ones with the
same fingerprint only have their weights (and optimizer state) loaded into the
cached model, so the compiled probe is reused with no retrace and no rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradhealth_server.archive import ArchiveInfo, inspect_archive
from gradhealth_server.errors import InvalidCheckpoint, LimitExceeded
from gradhealth_server.limits import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

# Layers that run arbitrary code or foreign runtimes: never loaded.
FORBIDDEN_CLASSES = frozenset(
    {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer", "__lambda__"}
)
# Keras's own serialization markers for plain values.
VALUE_MARKERS = frozenset(
    {
        "__tuple__",
        "__numpy__",
        "__tensor__",
        "__bytes__",
        "__ellipsis__",
        "__slice__",
        "__typespec__",
    }
)
# Keys that change how Keras deserializes; a checkpoint has no business setting them.
FORBIDDEN_KEYS = frozenset({"safe_mode", "custom_objects", "__passive_serialization__"})
# Config keys that differ between checkpoints of one architecture.
VOLATILE_KEYS = frozenset({"shared_object_id"})


@dataclass
class LoadedModel:
    """A model in the cache, with what the engine derived from it."""

    fingerprint: str
    model: Any  # keras.Model
    structure: Any = None  # engine.structure.ModelStructure, filled by the engine
    probes: dict[Any, Any] = field(default_factory=dict)  # (batch signature, options) -> Probe
    reloads: int = 0  # checkpoints after the first whose weights were loaded in place


def screen_config(config: Any, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse any object outside Keras's own, before deserialization runs."""
    for node, where in _walk(config, "config"):
        for key in FORBIDDEN_KEYS & node.keys():
            raise InvalidCheckpoint(f"config sets {key!r} at {where}; refusing the checkpoint")
        class_name = node.get("class_name")
        if not isinstance(class_name, str):
            continue
        name = _object_name(node)
        if class_name in FORBIDDEN_CLASSES:
            raise InvalidCheckpoint(
                f"layer {name!r} is a {class_name}, which runs code from the checkpoint; "
                "gradhealth does not load Lambda, TFSMLayer, TorchModuleWrapper or JAX layers"
            )
        if class_name in VALUE_MARKERS:
            continue
        module = node.get("module")
        registered = node.get("registered_name")
        qualified = f"{module}.{class_name}" if module else class_name
        allowed = qualified in limits.allowed_classes or (
            isinstance(registered, str) and registered in limits.allowed_classes
        )
        if module is not None and not _is_keras_module(module) and not allowed:
            raise InvalidCheckpoint(
                f"{name!r} uses class {qualified!r}, which is not part of Keras; "
                "an operator can allow-list it (--allow-class)"
            )


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
        self.hits = 0
        self.misses = 0

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
        entry = self._models.get(key)
        if entry is not None:
            self._reload_weights(entry, info.path)
            self._models.move_to_end(key)
            self.hits += 1
            return entry, info, True
        model = _load_model(info.path, self.limits)
        entry = LoadedModel(fingerprint=key, model=model)
        self._models[key] = entry
        self.misses += 1
        while len(self._models) > self.capacity:
            evicted, _ = self._models.popitem(last=False)
            log.info("model cache full: evicted architecture %s", evicted[:12])
        return entry, info, False

    def _reload_weights(self, entry: LoadedModel, path: Path) -> None:
        try:
            with _unbuilt_optimizer_quiet():
                entry.model.load_weights(str(path))
        except Exception as exc:  # Keras raises many types for bad weight files
            # The cached model may now hold a mix of old and new weights.
            self._models.pop(entry.fingerprint, None)
            raise InvalidCheckpoint(
                f"could not load the checkpoint's weights: {_short(exc)}"
            ) from exc
        entry.reloads += 1


def _load_model(path: Path, limits: Limits):
    import keras

    try:
        with _unbuilt_optimizer_quiet():
            model = keras.saving.load_model(str(path), compile=True, safe_mode=True)
    except InvalidCheckpoint:
        raise
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
    params = int(model.count_params())
    if params > limits.max_parameters:
        raise LimitExceeded(
            f"model has {params} parameters, over the limit of {limits.max_parameters}"
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
    return model


@contextlib.contextmanager
def _unbuilt_optimizer_quiet() -> Iterator[None]:
    """A checkpoint saved before the first step holds no optimizer slots; Keras
    warns on every load. We build the optimizer instead (below): not news."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Skipping variable loading for optimizer", category=UserWarning
        )
        yield


def _walk(node: Any, where: str) -> Iterator[tuple[dict[str, Any], str]]:
    if isinstance(node, dict):
        yield node, where
        for key, value in node.items():
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}[{i}]")


def _object_name(node: dict[str, Any]) -> str:
    cfg = node.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
        return cfg["name"]
    if isinstance(cfg, str):
        return cfg
    return str(node.get("class_name"))


def _is_keras_module(module: Any) -> bool:
    return isinstance(module, str) and (module == "keras" or module.startswith("keras."))


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in VOLATILE_KEYS}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
