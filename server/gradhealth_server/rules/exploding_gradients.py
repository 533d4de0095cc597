"""exploding_gradients: gradient norms grow layer after layer towards the input.

Anchors: AutoTrainer flags a gradient-norm ratio between layers above 70; a
gradient larger than the weights it updates (‖g‖ ≫ ‖w‖) is the other signal.
Explosion caused by a huge learning rate is reported there as the root cause
(see rules.EXPLAINS); this rule names the layers where the growth happens.

‖g‖ ≫ ‖w‖ alone is not an explosion when the optimizer's measured step is small:
a loss on a large scale (regression on raw targets: MSE in the thousands) has large
gradients everywhere, which Adam-type optimizers normalize away, and depthwise
convolutions before BatchNorm have large gradient-to-weight ratios by construction
(the loss is scale-invariant in those weights). So that signal counts only when the
step the optimizer would take really is large, when no step was measured, or when
it is extreme in most layers (the median layer's gradient a thousand times its
weights: the forward pass itself has blown up, as in a deep stack drawn too large).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt, gradient_profile
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class ExplodingGradientsRule(Rule):
    cause = Cause.EXPLODING_GRADIENTS
    no_trial = (
        "no trial: judged on the gradient-to-weight ratios measured layer by layer and "
        "the size of the optimizer's own step"
    )

    @dataclass(frozen=True)
    class Thresholds:
        layer_norm_ratio: float = 70.0  # AutoTrainer: max ‖g_i‖ / ‖g_last‖
        grad_to_weight: float = 10.0  # ‖g‖/‖w‖ of one layer: a step would dwarf the weights
        min_weight_layers: int = 2
        # ‖Δw‖/‖w‖ of the optimizer's real next step above which large gradients do
        # move the weights too far (healthy is about 1e-3).
        update_ratio: float = 0.01
        # ... or the median layer's ‖g‖/‖w‖ above this: blown up whatever the step.
        extreme_grad_to_weight: float = 1000.0

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        layers = m.layers
        if len(layers) < t.min_weight_layers or m.nonfinite.weights or ctx.converged:
            return []
        norms = [layer.grad_norm for layer in layers]
        if not all(math.isfinite(n) for n in norms):
            return []
        last = norms[-1]
        ratio = max(norms) / last if last > 0 else None
        big_ratio = ratio is not None and ratio > t.layer_norm_ratio
        heavy = [
            layer
            for layer in layers
            if layer.grad_to_weight is not None and layer.grad_to_weight > t.grad_to_weight
        ]
        step = m.optimizer.update_ratio if m.optimizer else None
        ratios = sorted(layer.grad_to_weight or 0.0 for layer in layers)
        extreme = ratios[len(ratios) // 2] > t.extreme_grad_to_weight
        if heavy and step is not None and step <= t.update_ratio and not (big_ratio or extreme):
            heavy = []  # large gradients, ordinary steps: the loss's scale, not an explosion
        if not (big_ratio or heavy):
            return []
        growing = [
            layer.name
            for layer in layers
            if last > 0 and layer.grad_norm / last > t.layer_norm_ratio
        ]
        concerned = growing or [layer.name for layer in heavy]
        worst_gw = max((layer.grad_to_weight or 0.0) for layer in layers)
        init_hint = (
            'use kernel_initializer="glorot_uniform" (or "he_normal" for ReLU)'
            " instead of a large-scale init"
        )
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.WARNING if ctx.learning else Severity.CRITICAL,
                summary=(
                    f"gradient norms grow {fmt(ratio)}x from the last layer towards the input"
                    f"; the largest gradient is {fmt(worst_gw)}x its layer's weight norm"
                ),
                remedy=(
                    f"clip gradients: {ctx.optimizer or 'optimizer'}(..., clipnorm=1.0); "
                    f"{init_hint}; add keras.layers.BatchNormalization() between layers"
                ),
                layers=concerned,
                evidence={
                    "max_to_last_ratio": ratio,
                    "max_grad_to_weight": worst_gw,
                    "update_ratio": step,
                    "grad_norm_profile": gradient_profile(m),
                },
                confidence=0.7 if big_ratio else 0.55,
            )
        ]
