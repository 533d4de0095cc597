"""Each output's own loss, for a model with several: one number per output name.

A multi-output model trains on the sum of its weighted output losses; which output
carries the loss is the first question about it. Computed with the model's own
compiled loss functions (Keras's CompileLoss, one per output, unweighted), on the
whole batch in inference mode: the `<output>_loss` that `model.evaluate` reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradhealth_server.intake.batch import as_model_inputs


def output_losses(
    model: Any, xs: list[np.ndarray], ys: list[np.ndarray], names: tuple[str, ...]
) -> dict[str, float]:
    """{output name: its unweighted loss}; empty for one output or when Keras's
    compiled loss is not laid out per output (a single loss over all outputs)."""
    import keras

    if len(names) < 2 or len(ys) != len(names):
        return {}
    compile_loss = getattr(model, "_compile_loss", None)
    flat_losses = getattr(compile_loss, "_flat_losses", None)
    if not flat_losses:  # built by the first compute_loss (the batch check runs one)
        return {}
    out = model(as_model_inputs(model, xs), training=False)
    preds = [out[n] for n in names] if isinstance(out, dict) else keras.tree.flatten(out)
    built = getattr(compile_loss, "_y_pred_build_structure", None)
    if isinstance(built, dict):  # a dict of losses: Keras resolves outputs by name
        y_true: Any = dict(zip(names, ys))
        y_pred: Any = dict(zip(names, preds))
    else:
        y_true, y_pred = list(ys), list(preds)
    losses = {}
    for i, (path, loss_fn, _weight, name) in enumerate(flat_losses):
        y_t, y_p = y_true, y_pred
        for step in path:
            y_t, y_p = y_t[step], y_p[step]
        value = keras.ops.convert_to_numpy(loss_fn(y_t, y_p, None))
        losses[str(name) if name else names[min(i, len(names) - 1)]] = float(value)
    return losses
