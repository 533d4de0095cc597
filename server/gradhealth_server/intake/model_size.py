"""Measure the model a config.json declares without allocating it.

Keras allocates every weight when it builds a layer, so a config declaring
`Dense(200_000)` after `Dense(200_000)` asks for 160 GB before anything could
check it. Deserialized inside a `StatelessScope` that leaves variables
uninitialized, the same config gives the real model, every variable with its
shape and no memory behind it: the exact parameter count in milliseconds. The
symbolic layer outputs give the size of each activation too.

Run only on a config that `config_screen.screen_config` accepted: this is a
real Keras deserialization, minus the allocations.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# An integer argument of a compiled metric or loss above this is refused before
# it is built: `AUC(num_thresholds=N)` makes a Python list of N thresholds in its
# constructor, before any variable could be counted.
MAX_COMPILE_ARGUMENT = 1 << 20


@dataclass(frozen=True)
class DeclaredSize:
    parameters: int  # weights of the model, trainable or not (no optimizer slots)
    largest_variable: str  # "dense_1/kernel of shape (200000, 200000)", for messages
    largest_activation: int  # values in the largest layer output for one example
    largest_output: str  # "repeat_vector output (None, 1000000000, 8)"
    # Values the compiled model holds besides its weights: metric state (a
    # MeanIoU(N) holds an N x N matrix), optimizer slots, loss-scale state.
    compile_state: int = 0
    largest_state: str = "none"


class CompileArgumentTooLarge(ValueError):
    """A metric or loss argument that would allocate before it could be counted."""


def count_layers(config: Any) -> int:
    """Layers a config declares, nested models included, counted in the JSON
    before Keras builds any: building 20,000 layers is itself minutes of CPU."""
    count = 0
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            layers = node.get("layers")
            if isinstance(layers, list):
                count += len(layers)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def declared_size(config: dict[str, Any]) -> DeclaredSize:
    """Build the config's model with no memory behind its variables and measure it.

    Raises whatever Keras raises for a config it cannot build.
    """
    from keras.src.backend.common.stateless_scope import StatelessScope
    from keras.src.saving.serialization_lib import ObjectSharingScope, deserialize_keras_object

    architecture = {key: value for key, value in config.items() if key != "compile_config"}
    with (
        _forget_uninitialized_variables(),
        StatelessScope(initialize_variables=False),
        ObjectSharingScope(),
    ):
        model = deserialize_keras_object(architecture, safe_mode=True)
    weights = _weights(model)
    parameters = sum(math.prod(variable.shape) for variable in weights)
    state, largest_state = _compile_state(model, config.get("compile_config"))
    return DeclaredSize(
        parameters,
        _largest(weights),
        *_largest_activation(model),
        compile_state=state,
        largest_state=largest_state,
    )


def _largest(variables: list[Any]) -> str:
    biggest = max(variables, key=lambda variable: math.prod(variable.shape), default=None)
    return f"{biggest.path} of shape {tuple(biggest.shape)}" if biggest is not None else "none"


def _compile_state(model: Any, compile_config: Any) -> tuple[int, str]:
    """Values held by what `compile_config` builds at load: the metrics, the
    optimizer and its slots for `model`'s trainable weights, counted from
    variables made with no memory behind them. Raises what Keras raises."""
    if not isinstance(compile_config, dict):
        return 0, "none"
    from keras.src.backend.common.stateless_scope import StatelessScope
    from keras.src.saving.serialization_lib import ObjectSharingScope, deserialize_keras_object

    _check_arguments(compile_config, "compile_config")
    variables: list[Any] = []
    with (
        _forget_uninitialized_variables(),
        StatelessScope(initialize_variables=False),
        ObjectSharingScope(),
    ):
        for key in ("metrics", "weighted_metrics", "loss"):
            for node in _objects(compile_config.get(key)):
                built = deserialize_keras_object(node, safe_mode=True)
                variables += list(getattr(built, "variables", []) or [])
    held = sum(math.prod(variable.shape) for variable in variables)
    largest = _largest(variables)
    optimizer_config = compile_config.get("optimizer")
    if isinstance(optimizer_config, dict):
        trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
        slots = _slots_per_weight(optimizer_config) * trainable
        held += slots
        if slots and not variables:
            largest = f"optimizer slots for {trainable:,} weights"
    return held, largest


def _slots_per_weight(optimizer_config: dict[str, Any]) -> int:
    """Values the optimizer keeps per trained weight (Adam: 2, SGD with momentum:
    1), measured by building it on one small real variable: its slots cannot be
    built on variables with no memory behind them."""
    import keras
    from keras.src.saving.serialization_lib import ObjectSharingScope, deserialize_keras_object

    with ObjectSharingScope():
        optimizer = deserialize_keras_object(optimizer_config, safe_mode=True)
    before = sum(math.prod(v.shape) for v in optimizer.variables)
    probe = keras.Variable(keras.ops.zeros((8,)), name="slot_probe")
    optimizer.build([probe])
    after = sum(math.prod(v.shape) for v in optimizer.variables)
    return math.ceil((after - before) / 8)


def _objects(node: Any) -> list[dict[str, Any]]:
    """The serialized objects (dicts with a class_name) in a metrics/loss entry;
    names such as "accuracy" build stateless or one-counter objects."""
    if isinstance(node, dict):
        if "class_name" in node:
            return [node]
        return [obj for value in node.values() for obj in _objects(value)]
    if isinstance(node, list):
        return [obj for value in node for obj in _objects(value)]
    return []


def _check_arguments(node: Any, where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _check_arguments(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_arguments(value, f"{where}[{i}]")
    elif isinstance(node, int) and not isinstance(node, bool) and node > MAX_COMPILE_ARGUMENT:
        raise CompileArgumentTooLarge(
            f"{where} is {node:,}, over the {MAX_COMPILE_ARGUMENT:,} a metric, loss or "
            "optimizer argument may be"
        )


@contextlib.contextmanager
def _forget_uninitialized_variables() -> Iterator[None]:
    """Keras queues variables made in a stateless scope for initialization on the
    next `initialize_all_variables()`: drop ours so nothing ever allocates them."""
    from keras.src.backend.common import global_state

    before = list(global_state.get_global_attribute("uninitialized_variables", []) or [])
    try:
        yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", before)


def _weights(model: Any) -> list[Any]:
    weights = getattr(model, "weights", None)
    if not isinstance(weights, list):
        raise ValueError("config.json does not describe a Keras model")
    return weights


def _largest_activation(model: Any) -> tuple[int, str]:
    """The largest symbolic output of any layer call, per example (unknown
    dimensions count as 1, so this never overstates), and where it is."""
    largest, where = 0, "none"
    flatten = getattr(model, "_flatten_layers", None)
    layers = flatten(include_self=False, recursive=True) if flatten else []
    for layer in layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in getattr(node, "outputs", []):
                shape = tuple(getattr(tensor, "shape", ()) or ())
                size = math.prod(d for d in shape[1:] if isinstance(d, int))
                if size > largest:
                    largest, where = size, f"{layer.name} output {shape}"
    return largest, where
