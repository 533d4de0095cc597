"""Read a Keras model's structure once per architecture.

Everything here is static: which variables belong to which layer (in order from
input to output), which tensors the probe taps, and facts such as depth, skip
connections, normalization and the loss/activation pairing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from gradhealth_server.engine.facts import (
    BATCH_COUPLED_LAYERS,
    ID_INPUT_LAYERS,
    NORMALIZATION_LAYERS,
    PREPROCESSING_LAYERS,
    StaticFacts,
)
from gradhealth_server.engine.output_facts import (
    activation_of,
    is_functional,
    output_facts,
    output_names,
)


@dataclass(frozen=True)
class LayerInfo:
    """One layer that owns trainable variables, in input-to-output order."""

    name: str
    class_name: str
    activation: str | None
    variable_indices: tuple[int, ...]  # into model.trainable_variables


@dataclass(frozen=True)
class Tap:
    """A tensor the probe reads: a layer's output (activation statistics)."""

    layer: str
    class_name: str
    activation: str
    tensor: Any  # a KerasTensor of the functional graph
    is_output: bool = False  # the model's own output (a confident head saturates)


@dataclass(frozen=True)
class ModelStructure:
    variable_sizes: tuple[int, ...]  # element counts of model.trainable_variables
    layers: tuple[LayerInfo, ...]
    taps: tuple[Tap, ...]
    # Inputs of the first weight layers: what the weights actually see.
    first_layer_inputs: tuple[Tap, ...]
    facts: StaticFacts


def read_structure(model: keras.Model) -> ModelStructure:
    """Walk the model once; the result is cached with the model."""
    functional = is_functional(model)
    var_index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    layers = tuple(_weight_layers(model, var_index))
    unavailable: list[str] = []
    taps: list[Tap] = []
    first_inputs: list[Tap] = []
    depth = len(layers)
    skips = 0
    id_limits: dict[str, int] = {}
    if functional:
        graph = _graph(model)
        id_limits = _id_input_limits(graph)
        taps = _taps(graph, list(model.outputs))
        first_inputs = _first_layer_inputs(graph)
        depth = _depth(graph)
        skips = _skip_connections(graph)
    else:
        unavailable += ["activations", "first_layer_input", "skip_connections"]
    all_layers = [lyr for lyr in model._flatten_layers(include_self=False, recursive=True)]
    class_names = [type(lyr).__name__ for lyr in all_layers]
    activations = sorted({a for a in (activation_of(lyr) for lyr in all_layers) if a})
    outputs = output_names(model)
    first, *others = [output_facts(model, outputs, i) for i in range(max(len(outputs), 1))]
    optimizer = _inner_optimizer(getattr(model, "optimizer", None))
    facts = StaticFacts(
        model_class=type(model).__name__,
        functional=functional,
        depth=depth,
        weight_layers=len(layers),
        parameters=int(model.count_params()),
        skip_connections=skips,
        normalization_layers=tuple(c for c in class_names if c in NORMALIZATION_LAYERS),
        activations=tuple(activations),
        batch_coupled=any(c in BATCH_COUPLED_LAYERS for c in class_names),
        output_activation=first.activation,
        output_activations=first.activations,
        output_units=first.units,
        loss=first.loss,
        from_logits=first.from_logits,
        label_smoothing=first.label_smoothing,
        problem=first.problem,
        optimizer=type(optimizer).__name__ if optimizer is not None else None,
        learning_rate=_learning_rate(optimizer),
        momentum=_momentum(optimizer),
        clipnorm=getattr(optimizer, "clipnorm", None),
        global_clipnorm=getattr(optimizer, "global_clipnorm", None),
        clipvalue=getattr(optimizer, "clipvalue", None),
        loss_reduction=first.reduction,
        input_names=tuple(input_names(model)),
        output_names=tuple(outputs),
        other_outputs=tuple(others),
        id_input_limits=id_limits,
        preprocessing_layers=tuple(c for c in class_names if c in PREPROCESSING_LAYERS),
        unavailable=tuple(unavailable),
    )
    sizes = tuple(int(np.prod(v.shape)) for v in model.trainable_variables)
    return ModelStructure(sizes, tuple(layers), tuple(taps), tuple(first_inputs), facts)


def input_names(model: keras.Model) -> list[str]:
    """Names of the model's inputs as the batch file spells them (`x_<name>`)."""
    inputs = getattr(model, "inputs", None) if is_functional(model) else None
    if not inputs:
        return ["x"]
    return [kt._keras_history[0].name for kt in inputs]


def _weight_layers(layer: keras.layers.Layer, var_index: dict[int, int]):
    """Layers owning trainable variables; nested models are expanded in place."""
    if isinstance(layer, keras.Model):
        for sub in layer.layers:
            yield from _weight_layers(sub, var_index)
        return
    # A plain layer counts as one, with any helper sublayers it wraps.
    indices = tuple(var_index[id(v)] for v in layer.trainable_variables if id(v) in var_index)
    if indices:
        yield LayerInfo(layer.name, type(layer).__name__, activation_of(layer), indices)


@dataclass
class _Node:
    layer: keras.layers.Layer
    parents: list[int]  # ids of parent layers
    node: Any | None  # the layer's call in this model's graph (None if shared)


def _graph(model: keras.Model) -> dict[int, _Node]:
    """Layers of a functional model in topological order with their parents.

    A loaded model's layers carry several inbound nodes (from deserialization);
    only the ones that belong to this model's graph count.
    """
    from keras.src.ops.function import make_node_key

    functional = getattr(model, "_functional", None) or model
    own_keys = getattr(functional, "_nodes", set())
    graph: dict[int, _Node] = {}
    for layer in model.layers:
        own = [
            node
            for i, node in enumerate(getattr(layer, "_inbound_nodes", []))
            if make_node_key(layer, i) in own_keys
        ]
        parents: list[int] = []
        for node in own:
            for kt in node.input_tensors:
                op = kt._keras_history[0]
                if id(op) in graph and id(op) not in parents:
                    parents.append(id(op))
        # A layer called more than once (shared) has no single output to tap.
        graph[id(layer)] = _Node(layer, parents, own[0] if len(own) == 1 else None)
    return graph


def _taps(graph: dict[int, _Node], model_outputs: list[Any]) -> list[Tap]:
    taps = []
    for node in graph.values():
        layer = node.layer
        act = activation_of(layer)
        if act is None or node.node is None or isinstance(layer, keras.Model):
            continue
        outputs = node.node.output_tensors
        if len(outputs) == 1:
            is_output = any(outputs[0] is t for t in model_outputs)
            taps.append(Tap(layer.name, type(layer).__name__, act, outputs[0], is_output))
    return taps


def _has_weights(layer: keras.layers.Layer) -> bool:
    return bool(layer.trainable_variables)


def _first_layer_inputs(graph: dict[int, _Node]) -> list[Tap]:
    """Inputs of the first layers that learn from the input's scale.

    Normalization layers (BatchNorm, LayerNorm, ...) rescale what follows them,
    so the layer after them is the one whose input counts; Embeddings take ids.
    """
    weighted_above: dict[int, bool] = {}
    firsts = []
    for key, node in graph.items():
        above = any(weighted_above[p] or _scale_sensitive(graph[p].layer) for p in node.parents)
        weighted_above[key] = above
        layer = node.layer
        name = type(layer).__name__
        if name in ID_INPUT_LAYERS:
            weighted_above[key] = True  # what follows sees embeddings, not the input
            continue
        if _scale_sensitive(layer) and not above and node.node is not None:
            inputs = node.node.input_tensors
            if len(inputs) == 1:
                firsts.append(Tap(layer.name, name, "input", inputs[0]))
    return firsts


def _id_input_limits(graph: dict[int, _Node]) -> dict[str, int]:
    """Model inputs that feed an Embedding directly, with its vocabulary size.

    Checked on the batch: XLA clamps an out-of-range gather index silently.
    """
    limits: dict[str, int] = {}
    for node in graph.values():
        layer = node.layer
        if type(layer).__name__ not in ID_INPUT_LAYERS or node.node is None:
            continue
        for kt in node.node.input_tensors:
            source = kt._keras_history[0]
            if isinstance(source, keras.layers.InputLayer):
                dim = int(getattr(layer, "input_dim", 0) or 0)
                if dim:
                    limits[source.name] = min(dim, limits.get(source.name, dim))
    return limits


def _scale_sensitive(layer: keras.layers.Layer) -> bool:
    """A layer with weights whose output depends on its input's scale."""
    return _has_weights(layer) and type(layer).__name__ not in NORMALIZATION_LAYERS


def _depth(graph: dict[int, _Node]) -> int:
    depth: dict[int, int] = {}
    for key, node in graph.items():
        own = _nested_depth(node.layer)
        depth[key] = max((depth[p] for p in node.parents), default=0) + own
    return max(depth.values(), default=0)


def _nested_depth(layer: keras.layers.Layer) -> int:
    if isinstance(layer, keras.Model) and is_functional(layer):
        return _depth(_graph(layer))
    return 1 if _has_weights(layer) else 0


def _skip_connections(graph: dict[int, _Node]) -> int:
    """Merge layers joining a tensor with one of its own descendants (a skip)."""
    ancestors: dict[int, set[int]] = {}
    skips = 0
    for key, node in graph.items():
        anc: set[int] = set()
        for p in node.parents:
            anc |= ancestors[p] | {p}
        ancestors[key] = anc
        if len(set(node.parents)) >= 2:
            ps = set(node.parents)
            if any(p in ancestors[q] for p in ps for q in ps if p != q):
                skips += 1
    return skips


def _inner_optimizer(optimizer: Any) -> Any:
    """The optimizer doing the work: a LossScaleOptimizer wraps another one."""
    return getattr(optimizer, "inner_optimizer", None) or optimizer


def current_learning_rate(model: keras.Model) -> float | None:
    """The learning rate now in the optimizer's variable (a weight reload changes it)."""
    return _learning_rate(_inner_optimizer(getattr(model, "optimizer", None)))


def _momentum(optimizer: Any) -> float:
    """SGD's momentum (0 for every other optimizer, whose steps are normalized)."""
    if type(optimizer).__name__ != "SGD":
        return 0.0
    value = getattr(optimizer, "momentum", 0.0)
    return float(value) if isinstance(value, (int, float)) and 0 <= value < 1 else 0.0


def _learning_rate(optimizer: Any) -> float | None:
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return None
