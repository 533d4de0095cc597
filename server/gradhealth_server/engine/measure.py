"""Assemble Measurements from one probe run: each quantity family decodes its own
numbers (engine/quantities/), the host adds the batch's input and label scales."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gradhealth_server.engine.measurements import Measurements, NonFinite
from gradhealth_server.engine.probe import ProbeResult
from gradhealth_server.engine.quantities import (
    activations,
    first_inputs,
    inputs,
    labels,
    noise,
    optimizer,
    outputs,
    time_steps,
    variables,
)
from gradhealth_server.engine.structure import ModelStructure

# What a batch whose rows are all the same cannot show.
NOT_ON_ONE_ROW = ("dead_units", "saturation", "prediction_collapse")

# What norms-only mode does not measure.
NOT_IN_NORMS_MODE = (
    "weights",
    "activations",
    "first_layer_input",
    "optimizer_step",
    "lr_probe",
    "output",
    "accuracy",
    "noise_scale",
)


def build_measurements(
    result: ProbeResult,
    structure: ModelStructure,
    x: dict[str, np.ndarray],
    y: np.ndarray,
    mode: str,
    y_sent: np.ndarray | None = None,
    other_ys: Sequence[np.ndarray] = (),
    other_sent: Sequence[np.ndarray | None] = (),
) -> Measurements:
    """The probe's numbers with the batch's: `y`/`y_sent` are the first output's labels
    (as the loss reads them / as sent), `other_ys`/`other_sent` every later output's."""
    raw, facts = result.raw, structure.facts
    full = mode == "full"
    var = raw[variables.KEY]
    step_sq = optimizer.step_squares(raw.get(optimizer.KEY))
    layers = variables.decode(var, structure, step_sq)
    acts = activations.decode(raw[activations.KEY], structure) if full else []
    batch_inputs = [inputs.tensor_stats(name, arr) for name, arr in x.items()]
    output = outputs.decode(raw[outputs.KEY], facts.problem) if full else None
    unavailable = list(facts.unavailable)
    noise_scale = None
    if full:
        noise_scale = noise.decode(raw.get(noise.KEY), var["grad_sq"], result.micro_batch_rows)
        if noise_scale is None:
            unavailable.append("noise_scale")
    else:
        unavailable += NOT_IN_NORMS_MODE
    one_row = inputs.one_distinct_row(x)
    if one_row:
        unavailable += NOT_ON_ONE_ROW
    label_stats = labels.label_stats(y, facts.problem, y_sent)
    if label_stats and label_stats.histogram and sum(c > 0 for c in label_stats.histogram) == 1:
        unavailable.append("prediction_collapse")  # one class in the batch: nothing to compare
    loss = float(raw["loss"])
    return Measurements(
        loss=loss,
        accuracy=outputs.accuracy(raw[outputs.KEY], y, facts.problem) if full else None,
        rows=int(y.shape[0]),
        mode=mode,
        xla=result.xla,
        probe_seconds=result.seconds,
        grad_norm=variables.total_norm(var["grad_sq"]),
        weight_norm=variables.total_norm(var["weight_sq"]) if full else None,
        micro_batch_rows=list(result.micro_batch_rows),
        noise_scale=noise_scale,
        nonfinite=NonFinite(
            loss=not math.isfinite(loss),
            gradients=variables.gradient_nonfinite(var),
            weights=int(var["weight_nonfinite"].sum()) if full else 0,
            activations=sum(a.nonfinite for a in acts),
            outputs=output.nonfinite if output else 0,
            inputs=sum(i.nonfinite for i in batch_inputs),
            first_layer=variables.first_nonfinite_layer(
                layers, {a.layer: a.nonfinite for a in acts}
            ),
        ),
        layers=layers,
        activations=acts,
        inputs=batch_inputs,
        first_layer_inputs=first_inputs.decode(raw[first_inputs.KEY], structure) if full else [],
        labels=label_stats,
        other_output_labels=labels.other_outputs(
            facts.other_outputs, list(other_ys), list(other_sent)
        ),
        output=output,
        optimizer=optimizer.decode(
            raw.get(optimizer.KEY), facts, var["weight_sq"], result.lr_scales
        )
        if full
        else None,
        static=facts,
        time_gradient=time_steps.decode(raw.get(time_steps.KEY)) if full else None,
        unavailable=sorted(set(unavailable)),
        one_distinct_row=one_row,
    )
