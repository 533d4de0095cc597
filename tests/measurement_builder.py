"""Hand-written Measurements for rule tests: a healthy run, changed one number at a time."""

from __future__ import annotations

import dataclasses
from typing import Any

from gradhealth_server.engine.facts import StaticFacts
from gradhealth_server.engine.measurements import (
    ActivationMeasurement,
    LabelStats,
    LayerMeasurement,
    Measurements,
    NonFinite,
    OptimizerStep,
    OutputStats,
    ScratchTrial,
    StepTrial,
    TensorStats,
)


def layer(
    name: str, grad: float, weight: float = 5.0, params: int = 1000, **kw
) -> LayerMeasurement:
    return LayerMeasurement(
        name=name,
        class_name=kw.pop("class_name", "Dense"),
        activation=kw.pop("activation", "relu"),
        parameters=params,
        grad_norm=grad,
        weight_norm=weight,
        grad_to_weight=grad / weight if weight else None,
        mean_abs_grad=kw.pop("mean_abs_grad", grad / params),
        zero_grad_fraction=kw.pop("zero_grad_fraction", 0.0),
        grad_nonfinite=kw.pop("grad_nonfinite", 0),
        weight_nonfinite=kw.pop("weight_nonfinite", 0),
        update_norm=kw.pop("update_norm", 5e-3),
        update_ratio=kw.pop("update_ratio", 1e-3),
    )


def activation(name: str, kind: str = "relu", units: int = 64, **kw) -> ActivationMeasurement:
    if kind == "relu":
        kw.setdefault("dead_fraction", 0.05)
    if kind in ("sigmoid", "tanh"):
        kw.setdefault("saturated_fraction", 0.05)
        kw.setdefault("saturated_units_fraction", 0.0)
    return ActivationMeasurement(
        layer=name,
        activation=kind,
        units=units,
        mean=kw.pop("mean", 0.5),
        std=kw.pop("std", 0.5),
        nonfinite=kw.pop("nonfinite", 0),
        **kw,
    )


def stats(
    name: str = "x",
    lo: float = 0.0,
    hi: float = 1.0,
    mean: float = 0.3,
    std: float = 0.3,
    range_class: str = "unit",
    **kw,
) -> TensorStats:
    return TensorStats(name=name, mean=mean, std=std, min=lo, max=hi, range_class=range_class, **kw)


BYTE = {"lo": 0.0, "hi": 255.0, "mean": 80.0, "std": 100.0, "range_class": "byte"}


def healthy(**changes: Any) -> Measurements:
    """A 3-layer digits classifier that learns well, then `changes` applied."""
    static = {
        "functional": True,
        "depth": 3,
        "skip_connections": 0,
        "normalization_layers": [],
        "activations": ["relu", "softmax"],
        "batch_coupled": False,
        "output_activation": "softmax",
        "output_activations": ["softmax"],
        "output_units": 10,
        "loss": "sparse_categorical_crossentropy",
        "from_logits": False,
        "problem": "sparse_categorical",
        "optimizer": "Adam",
        "learning_rate": 1e-3,
        "input_names": ["x"],
    }
    static.update(changes.pop("static", {}))
    facts = StaticFacts(**{k: tuple(v) if isinstance(v, list) else v for k, v in static.items()})
    m = Measurements(
        loss=0.3,
        accuracy=0.92,
        rows=256,
        mode="full",
        xla=True,
        probe_seconds=0.01,
        grad_norm=0.2,
        weight_norm=9.0,
        micro_batch_rows=[64, 64, 64, 64],
        noise_scale=300.0,
        nonfinite=NonFinite(False, 0, 0, 0, 0, 0, None),
        layers=[
            layer("dense", 0.1),
            layer("dense_1", 0.1),
            layer("dense_2", 0.1, activation="softmax"),
        ],
        activations=[
            activation("dense", mean=0.4),
            activation("dense_1", mean=0.4),
            activation("dense_2", "softmax", units=10, is_output=True),
        ],
        inputs=[stats()],
        first_layer_inputs=[stats("dense")],
        labels=LabelStats("class_ids", 10, [26] * 9 + [22], 0, 9),
        output=OutputStats([25] * 9 + [31], 31 / 256, 0.4, 1.0, 0.999, 1.001, 0),
        optimizer=OptimizerStep(
            "Adam", 1e-3, 1e-3, 9e-3, 0.3, [0.1, 1.0, 10.0], [0.299, 0.295, 0.31], iterations=500
        ),
        static=facts,
        unavailable=[],
    )
    trial = changes.pop("trial", None)
    if trial:
        m.trials["input_scale"] = StepTrial(*trial)
    for key in ("input_scale", "target_scale"):
        scratch = changes.pop(f"scratch_{key}", None)
        if scratch:
            m.scratch_trials[key] = ScratchTrial(*scratch)
    return dataclasses.replace(m, **changes)


def stuck(**changes: Any) -> Measurements:
    """Chance accuracy on balanced digits, loss at log(10): a run that does not learn."""
    changes.setdefault("accuracy", 0.1)
    changes.setdefault("loss", 2.30)
    return healthy(**changes)
