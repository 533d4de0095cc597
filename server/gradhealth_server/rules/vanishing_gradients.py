"""vanishing_gradients: the first layers get almost no gradient.

Anchors: AutoTrainer (Zhang et al., ICSE 2021) flags ‖g_first‖/‖g_last‖ < 1e-3
with ‖g_first‖ < 1e-4; SageMaker Debugger's VanishingGradient flags mean |g|
< 1e-7. A converged model also has tiny gradients, but evenly across layers,
so the ratio (not the size) is the primary signal and converged runs are skipped.

The same ratio across time: in a recurrent net the input gradient of the first
quarter of the steps against the last quarter's (engine/quantities/time_steps.py).
Below 1e-3 the early steps cannot be learned from, a plain RNN over a long
(padded) sequence being the usual case. A gated RNN (LSTM, GRU) that learns may
fade on purpose: its gates learned to forget steps the labels do not need (a
label read off the last 5 of 60 steps), so there the fade is a note (info),
not a fault; a gated RNN that does not learn still gets the warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.facts import RECURRENT_LAYERS
from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt, gradient_profile
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity

# Recurrent layers whose gates can learn to forget: a fade may be their choice.
GATED = frozenset({"LSTM", "GRU", "ConvLSTM1D"})


class VanishingGradientsRule(Rule):
    cause = Cause.VANISHING_GRADIENTS
    no_trial = "no trial: judged on the gradient norms measured layer by layer on the batch"

    @dataclass(frozen=True)
    class Thresholds:
        first_to_last_ratio: float = 1e-3  # AutoTrainer
        first_grad_norm: float = 1e-4  # AutoTrainer
        mean_abs_grad: float = 1e-7  # SageMaker VanishingGradient
        min_weight_layers: int = 3  # a 2-layer model has no depth to vanish through

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        layers = m.layers
        if ctx.converged or m.nonfinite.weights:
            return []
        over_time = self._over_time(m, ctx)
        if len(layers) < t.min_weight_layers:
            return over_time
        norms = [layer.grad_norm for layer in layers]
        if not all(math.isfinite(n) for n in norms):
            return []
        first, last = norms[0], norms[-1]
        ratio = first / last if last > 0 else None
        by_ratio = ratio is not None and ratio < t.first_to_last_ratio and first < t.first_grad_norm
        all_tiny = m.mode == "full" and all(
            layer.mean_abs_grad < t.mean_abs_grad for layer in layers
        )
        if not (by_ratio or all_tiny):
            return over_time
        reference = last if last > 0 else max(norms)
        starved = [
            layer.name
            for layer in layers[:-1]
            if reference == 0 or layer.grad_norm / reference < t.first_to_last_ratio
        ] or [layers[0].name]
        facts = m.static
        depth, skips = facts.depth, facts.skip_connections
        norms_used = list(facts.normalization_layers)
        saturating = [a for a in facts.activations if a in ("sigmoid", "tanh")]
        fixes = []
        if saturating:
            fixes.append(
                f'replace {"/".join(saturating)} hidden activations with activation="relu" '
                'and kernel_initializer="he_normal"'
            )
        if not norms_used:
            fixes.append("add keras.layers.BatchNormalization() after each hidden layer")
        if not skips and (depth or 0) >= 6:
            fixes.append("add residual connections (keras.layers.Add()([x, block(x)]))")
        if not fixes:
            fixes.append('use kernel_initializer="he_normal" and check for frozen layers')
        shrink = (
            f"gradients shrink {fmt(1 / ratio)}x from the last layer to the first"
            if ratio
            else "no gradient reaches the first layer"
        )
        summary = (
            f"{shrink} (first {fmt(first)}, last {fmt(last)})"
            f" through {depth} weight layers"
            + (" with no skip connections" if not skips else "")
            + (" and no normalization" if not norms_used else "")
        )
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.WARNING if ctx.learning else Severity.CRITICAL,
                summary=summary,
                remedy="; ".join(fixes),
                layers=starved,
                evidence={
                    "first_to_last_ratio": ratio,
                    "first_grad_norm": first,
                    "last_grad_norm": last,
                    "grad_norm_profile": gradient_profile(m),
                    "depth": depth,
                    "skip_connections": skips,
                },
                confidence=0.8 if by_ratio else 0.6,
            )
        ]

    def _over_time(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        """The early time steps of a sequence get almost none of the gradient."""
        tg = m.time_gradient
        if tg is None or tg.early_to_late is None or tg.early_to_late >= self.t.first_to_last_ratio:
            return []
        recurrent = [layer for layer in m.layers if layer.class_name in RECURRENT_LAYERS]
        gated = bool(recurrent) and all(layer.class_name in GATED for layer in recurrent)
        chosen = gated and ctx.learning  # the gates may forget what the labels do not need
        severity = (
            Severity.INFO if chosen else Severity.WARNING if ctx.learning else Severity.CRITICAL
        )
        return [
            RuleFinding(
                cause=self.cause,
                severity=severity,
                summary=(
                    f"the gradient fades across time: over {tg.steps} steps the first quarter "
                    f"gets {fmt(tg.early_to_late)}x the gradient of the last (input gradient "
                    f"{fmt(tg.early)} against {fmt(tg.late)}), so what the early steps hold "
                    "cannot be learned"
                    + (
                        "; the run learns and its gated layers may forget the early steps on "
                        "purpose: a fault only if the labels depend on them"
                        if chosen
                        else ""
                    )
                ),
                remedy=(
                    "use keras.layers.LSTM or GRU instead of SimpleRNN; pad at the front "
                    '(padding="pre") or trim the sequences so the signal sits near the end; '
                    "or keras.layers.Bidirectional"
                ),
                layers=[layer.name for layer in m.layers if layer.class_name in RECURRENT_LAYERS],
                evidence={
                    "steps": tg.steps,
                    "early_input_gradient": tg.early,
                    "late_input_gradient": tg.late,
                    "early_to_late": tg.early_to_late,
                },
                confidence=0.8,
            )
        ]
