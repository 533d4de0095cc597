"""non_finite: NaN or Inf in the loss, gradients, weights or activations.

Anchors: SageMaker Debugger's ExplodingTensor rule, DeepLocalize (first layer
where values stop being finite). Gradient explosion is a cliff: the checkpoint
often already holds NaN weights, so the finding names the first such layer.
"""

from __future__ import annotations

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.verdict import Cause, Finding, Severity


class NonFiniteRule(Rule):
    cause = Cause.NON_FINITE

    def check(self, m: Measurements) -> list[Finding]:
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
        if nf.inputs:
            summary = f"the batch itself holds {nf.inputs} NaN/Inf input values"
            remedy = "clean the input pipeline: x = np.nan_to_num(x) or drop rows with NaN"
        elif nf.weights:
            summary = (
                f"the checkpoint already holds {nf.weights} NaN/Inf weights{where}: "
                "training diverged before this checkpoint"
            )
            remedy = (
                "restart from the last finite checkpoint with a smaller learning rate "
                "and gradient clipping: optimizer=...(learning_rate=lr / 10, clipnorm=1.0)"
            )
        else:
            summary = f"the loss or gradients are not finite{where} on this batch"
            remedy = (
                "add gradient clipping and lower the learning rate: "
                "optimizer=...(clipnorm=1.0); check the loss for log(0) or division by 0"
            )
        return [
            Finding(
                cause=self.cause,
                severity=Severity.CRITICAL,
                summary=summary,
                remedy=remedy,
                layers=[nf.first_layer] if nf.first_layer else [],
                evidence={**counts, "first_nonfinite_layer": nf.first_layer},
                confidence=1.0,
            )
        ]
