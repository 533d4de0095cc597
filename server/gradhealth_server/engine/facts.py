"""What a model's architecture and compile config say, before any data flows.

Plain data (no Keras, no TensorFlow): the rules read `Measurements.static`, a
StaticFacts, by attribute; engine/structure.py fills it in from the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Units of these output exactly 0 below the threshold and pass back no gradient:
# they can die. (Leaky ReLU, ELU and PReLU keep a gradient for negative inputs.)
CAN_DIE = frozenset({"relu", "relu6"})
# Layers that carry a state across time steps: gradient flows back through every step.
RECURRENT_LAYERS = frozenset({"SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional", "ConvLSTM1D"})
# Layers that take token ids, not a scale: their input is not "unnormalized".
ID_INPUT_LAYERS = frozenset({"Embedding"})
SATURATING = frozenset({"sigmoid", "tanh", "hard_sigmoid"})
NORMALIZATION_LAYERS = frozenset(
    {
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "RMSNormalization",
        "SpectralNormalization",
    }
)
# Layers whose output for one example depends on the other examples in the batch.
BATCH_COUPLED_LAYERS = frozenset({"BatchNormalization"})
# Layers that rescale the raw input before the first weights see it.
PREPROCESSING_LAYERS = frozenset({"Rescaling", "Normalization"})
ACTIVATION_LAYERS = {
    "ReLU": "relu",
    "LeakyReLU": "leaky_relu",
    "ELU": "elu",
    "PReLU": "prelu",
    "Softmax": "softmax",
}

LOSS_PROBLEMS = {
    "sparse_categorical_crossentropy": "sparse_categorical",
    "categorical_crossentropy": "categorical",
    "categorical_focal_crossentropy": "categorical",
    "kl_divergence": "categorical",
    "binary_crossentropy": "binary",
    "binary_focal_crossentropy": "binary",
    "hinge": "binary",
    "squared_hinge": "binary",
    "categorical_hinge": "categorical",
}
LOSS_ALIASES = {
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
}


@dataclass(frozen=True)
class OutputFacts:
    """One output of the model and the loss compile() gave it (engine/output_facts.py)."""

    name: str = ""
    activation: str | None = None  # the last nonlinearity before the output
    activations: tuple[str, ...] = ()  # output backwards to the last weight layer
    units: int | None = None
    loss: str | None = None
    from_logits: bool = False
    label_smoothing: float = 0.0
    problem: str = "unknown"
    reduction: str | None = None


@dataclass(frozen=True)
class StaticFacts:
    """What the architecture and compile config say, before any data flows."""

    model_class: str = ""
    functional: bool = False
    depth: int = 0  # weight layers on the longest input-to-output path
    weight_layers: int = 0
    parameters: int = 0
    skip_connections: int = 0
    normalization_layers: tuple[str, ...] = ()
    activations: tuple[str, ...] = ()
    batch_coupled: bool = False
    output_activation: str | None = None  # the last nonlinearity before the output
    output_activations: tuple[str, ...] = ()  # output backwards to the last weight layer
    output_units: int | None = None
    loss: str | None = None
    from_logits: bool = False
    label_smoothing: float = 0.0
    problem: str = "unknown"  # sparse_categorical | categorical | binary | regression | unknown
    optimizer: str | None = None
    learning_rate: float | None = None
    momentum: float = 0.0  # SGD's: its steps add up to learning_rate / (1 - momentum)
    clipnorm: float | None = None
    global_clipnorm: float | None = None
    clipvalue: float | None = None
    loss_reduction: str | None = None
    input_names: tuple[str, ...] = ()
    # The model's outputs in order (the batch's y_<name>); with several, the output,
    # loss and label facts above are the first output's, and findings name it.
    output_names: tuple[str, ...] = ()
    # The outputs after the first, each with its own loss: judged on their own labels.
    other_outputs: tuple[OutputFacts, ...] = ()
    # Inputs read by an Embedding straight away: valid ids are 0 .. limit - 1.
    id_input_limits: dict[str, int] = field(default_factory=dict)
    preprocessing_layers: tuple[str, ...] = ()
    unavailable: tuple[str, ...] = ()


def as_first_output(facts: StaticFacts, output: OutputFacts) -> StaticFacts:
    """The facts as the rules read them, with `output` in the first output's place."""
    return replace(
        facts,
        output_activation=output.activation,
        output_activations=output.activations,
        output_units=output.units,
        loss=output.loss,
        from_logits=output.from_logits,
        label_smoothing=output.label_smoothing,
        problem=output.problem,
        loss_reduction=output.reduction,
        output_names=(output.name,),
        other_outputs=(),
    )


def snake_case(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def problem_of(loss: str | None) -> str:
    if loss is None:
        return "unknown"
    return LOSS_PROBLEMS.get(loss, "regression")
