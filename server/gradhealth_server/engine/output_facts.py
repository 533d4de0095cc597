"""What a model's outputs are and which loss reads each: read once per architecture.

For every output, in the model's order: its name (the batch's `y_<name>`), the
activations from it back to the last weight layer, its units, and the loss that
compile() gave it. The loss_mismatch rule judges each output on these and on its
own labels (engine/quantities/labels.py).
"""

from __future__ import annotations

import keras

from gradhealth_server.engine.facts import (
    ACTIVATION_LAYERS,
    LOSS_ALIASES,
    OutputFacts,
    problem_of,
    snake_case,
)

# Layers that pass the output through unchanged in kind (walked over backwards).
_TRANSPARENT = frozenset(
    {
        "Dropout",
        "Flatten",
        "Reshape",
        "Identity",
        "GaussianNoise",
        "ActivityRegularization",
        "SpatialDropout1D",
        "SpatialDropout2D",
    }
)


def is_functional(model: keras.Model) -> bool:
    try:
        return bool(getattr(model, "inputs", None)) and bool(getattr(model, "outputs", None))
    except (AttributeError, ValueError):
        return False


def activation_of(layer: keras.layers.Layer) -> str | None:
    name = type(layer).__name__
    if name in ACTIVATION_LAYERS:
        return ACTIVATION_LAYERS[name]
    fn = getattr(layer, "activation", None)
    if fn is None or not callable(fn):
        return None
    act = getattr(fn, "__name__", None) or type(fn).__name__
    return act.lower()


def output_names(model: keras.Model) -> list[str]:
    """Names of the model's outputs in its output order (the batch's `y_<name>`);
    none known for a subclassed model (one `y`)."""
    if not is_functional(model):
        return []
    names = getattr(model, "output_names", None)
    if names and len(names) == len(model.outputs):
        return [str(n) for n in names]
    return [kt._keras_history[0].name for kt in model.outputs]


def output_facts(model: keras.Model, names: list[str], index: int = 0) -> OutputFacts:
    """The facts of output `index` (0 for a subclassed model, whose output is unknown)."""
    loss, from_logits, smoothing, reduction = _loss_facts(model, names, index)
    chain, units = _output_chain(model, index)
    return OutputFacts(
        name=names[index] if index < len(names) else "",
        activation=next((a for a in chain if a != "linear"), chain[0] if chain else None),
        activations=tuple(chain),
        units=units,
        loss=loss,
        from_logits=from_logits,
        label_smoothing=smoothing,
        problem=problem_of(loss),
        reduction=reduction,
    )


def _loss_facts(
    model: keras.Model, outputs: list[str], index: int
) -> tuple[str | None, bool, float, str | None]:
    """Output `index`'s loss (a dict of losses is keyed by output name, a list is in
    output order, and one loss serves every output)."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, (list, tuple)) and loss:
        loss = loss[index] if index < len(loss) else None
    if isinstance(loss, dict) and loss:
        name = outputs[index] if index < len(outputs) else None
        loss = loss.get(name) if name in loss else (None if index else next(iter(loss.values())))
    if loss is None:
        return None, False, 0.0, None
    if isinstance(loss, str):
        name = loss
        return LOSS_ALIASES.get(name, name), False, 0.0, "sum_over_batch_size"
    if isinstance(loss, keras.losses.Loss):
        cfg = loss.get_config()
        fn = getattr(loss, "fn", None)
        name = getattr(fn, "__name__", None) or snake_case(type(loss).__name__)
        return (
            LOSS_ALIASES.get(name, name),
            bool(cfg.get("from_logits", False)),
            float(cfg.get("label_smoothing", 0.0) or 0.0),
            cfg.get("reduction", "sum_over_batch_size"),
        )
    name = getattr(loss, "__name__", type(loss).__name__)
    return LOSS_ALIASES.get(name, name), False, 0.0, "sum_over_batch_size"


def _output_chain(model: keras.Model, index: int) -> tuple[list[str], int | None]:
    """Activations from output `index` back to the last weight layer, and its units.

    `Dense(10, activation="softmax")` then `Activation("softmax")` gives
    ["softmax", "softmax"]: a double softmax.
    """
    if not is_functional(model):
        return [], None
    out = model.outputs[index]
    units = out.shape[-1] if out.shape else None
    chain: list[str] = []
    tensor = out
    for _ in range(16):
        layer, node_index, _ = tensor._keras_history
        act = activation_of(layer)
        if act is not None:
            chain.append(act)
        if layer.trainable_variables or isinstance(layer, keras.layers.InputLayer):
            break
        if act is None and type(layer).__name__ not in _TRANSPARENT:
            break
        inputs = layer._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            break
        tensor = inputs[0]
    return chain, int(units) if units is not None else None
