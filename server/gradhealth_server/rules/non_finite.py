"""non_finite: NaN or Inf in the loss, gradients, weights or activations.

Anchors: SageMaker Debugger's ExplodingTensor rule; DeepLocalize (the first
layer where values stop being finite). Gradient explosion is a cliff: a
checkpoint often already holds NaN weights, so the finding names the first such
layer and, since nothing downstream of NaN can be measured, it is then the
primary cause itself.
"""

from __future__ import annotations

import numpy as np

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class NonFiniteRule(Rule):
    cause = Cause.NON_FINITE
    no_trial = "no trial: NaN or Inf values are read directly from the loss, weights and gradients"

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        nf = m.nonfinite
        counts = {
            "loss_nonfinite": nf.loss,
            "nonfinite_weights": nf.weights,
            "nonfinite_gradients": nf.gradients,
            "nonfinite_activations": nf.activations,
            "nonfinite_outputs": nf.outputs,
            "nonfinite_inputs": nf.inputs,
        }
        if not any(counts.values()):
            return []
        where = f" from layer {nf.first_layer!r} on" if nf.first_layer else ""
        lr = ctx.learning_rate
        if nf.inputs:
            summary = f"the batch itself holds {nf.inputs} NaN/Inf input values"
            remedy = "clean the input pipeline: x = np.nan_to_num(x), or drop rows with NaN"
        elif nf.weights:
            summary = (
                f"the checkpoint already holds {nf.weights} NaN/Inf weights{where}: "
                "training diverged before this checkpoint"
            )
            smaller = f"learning_rate={fmt(lr / 10)}, " if lr else ""
            remedy = (
                "restart from the last finite checkpoint with a smaller step and clipping: "
                + ctx.optimizer_call(f"{smaller}clipnorm=1.0")
            )
        else:
            summary = f"the loss or gradients are not finite{where} on this batch"
            remedy = (
                f"clip gradients: {ctx.optimizer_call('..., clipnorm=1.0')}; "
                "check the loss for log(0) or division by zero"
            )
        hints = []
        if ctx.lr_above_usual:
            hints.append(f"learning rate {fmt(lr)} is above the usual range for {ctx.optimizer}")
        off_scale = [s.name for s in m.inputs if s.range_class in ("byte", "wide")]
        if off_scale:
            hints.append(f"input {', '.join(off_scale)} is not normalized")
        gain = m.init_gain
        if gain is not None:
            first, last = gain.layers[0], gain.layers[-1]
            hints.append(
                f"an exploding initialization: {len(gain.layers)} layers ({first} to {last}) "
                f"start from {gain.initializers[0]}, each scaling the signal by about "
                f"{fmt(float(np.median(gain.factors)))}x ({fmt(gain.total)}x over the stack)"
            )
            remedy += (
                "; initialize with kernel_initializer='he_normal' ahead of ReLUs "
                "('glorot_uniform' otherwise)"
            )
        if hints:
            summary += "; likely trigger: " + "; ".join(hints)
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.CRITICAL,
                summary=summary,
                remedy=remedy,
                layers=[nf.first_layer] if nf.first_layer else [],
                evidence={**counts, "first_nonfinite_layer": nf.first_layer},
                # NaN weights hide every other measurement: nothing outranks them.
                confidence=1.0 if nf.weights or nf.inputs else 0.6,
            )
        ]
