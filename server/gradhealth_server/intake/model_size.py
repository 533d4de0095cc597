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


@dataclass(frozen=True)
class DeclaredSize:
    parameters: int  # weights of the model, trainable or not (no optimizer slots)
    largest_variable: str  # "dense_1/kernel of shape (200000, 200000)", for messages
    largest_activation: int  # values in the largest layer output for one example
    largest_output: str  # "repeat_vector output (None, 1000000000, 8)"


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
    biggest = max(weights, key=lambda variable: math.prod(variable.shape), default=None)
    named = f"{biggest.path} of shape {tuple(biggest.shape)}" if biggest is not None else "none"
    return DeclaredSize(parameters, named, *_largest_activation(model))


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
