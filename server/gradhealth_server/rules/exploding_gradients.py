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

Two remedies are tried (engine/trial_steps.py) before the finding is emitted:
- clipping: the held-out loss after a few steps from the checkpoint, as the run is
  and with `clipnorm` (the fix when the trained weights have blown up);
- a standard initializer: ten steps from a fresh draw of the model's own
  initializers against a fresh draw of Keras's defaults (the fix when the
  initialization is drawn too large, the usual cause at the start of a run).
The remedy leads with whichever helps and says by how much. When both ran and
neither helps, the large gradients cost this run nothing that either fix would
win back: the trial contradicts the finding and it is not emitted (a MobileNet's
depthwise convolutions before BatchNorm look like this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import (
    ClipTrial,
    LayerMeasurement,
    Measurements,
    ScratchTrial,
)
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, build_context, fmt, gradient_profile
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class ExplodingGradientsRule(Rule):
    cause = Cause.EXPLODING_GRADIENTS
    no_trial = (
        "no trial: the clipping trial needs the optimizer's state and 16 rows or more; "
        "judged on the gradient-to-weight ratios measured layer by layer and the size "
        "of the optimizer's own step"
    )
    # The clip the remedy names and the trial tries (Keras `clipnorm`).
    CLIPNORM = 1.0
    INIT_CHANGE = 'kernel_initializer="glorot_uniform"'

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
        # The clipped arm's held-out loss this much (relative) below the run's as it
        # is, or the run's not finite while the clipped one is: clipping helps.
        clip_gain: float = 0.05
        # The fresh run from the model's own init ends with a held-out loss this many
        # times the one from standard initializers (or not finite): the init is it.
        init_ratio: float = 2.0

    def proposes(self, m: Measurements) -> bool:
        """Would this rule fire? (Runs the clipping trial.)"""
        return self._signal(m, build_context(m)) is not None

    def _signal(
        self, m: Measurements, ctx: Context
    ) -> tuple[float | None, bool, list[LayerMeasurement]] | None:
        """(max-to-last gradient ratio, whether it is large, the heavy layers), or None
        when the gradients show no explosion."""
        t = self.t
        layers = m.layers
        if len(layers) < t.min_weight_layers or m.nonfinite.weights or ctx.converged:
            return None
        norms = [layer.grad_norm for layer in layers]
        if not all(math.isfinite(n) for n in norms):
            return None
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
            return None
        return ratio, big_ratio, heavy

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        signal = self._signal(m, ctx)
        if signal is None:
            return []
        ratio, big_ratio, heavy = signal
        t = self.t
        layers = m.layers
        last = layers[-1].grad_norm
        step = m.optimizer.update_ratio if m.optimizer else None
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
        clip = f"clip gradients: {ctx.optimizer_call(f'..., clipnorm={self.CLIPNORM:g}')}"
        norm_hint = "add keras.layers.BatchNormalization() between layers"
        evidence = {
            "max_to_last_ratio": ratio,
            "max_grad_to_weight": worst_gw,
            "update_ratio": step,
            "grad_norm_profile": gradient_profile(m),
        }
        trial, init = m.clip_trial, m.scratch_trials.get("standard_init")
        clip_helps = trial is not None and self._clipping_helps(trial)
        init_helps = init is not None and self._init_helps(init)
        if trial is not None and init is not None and not (clip_helps or init_helps):
            return []  # both remedies tried, neither helps: the trials contradict it
        if trial is not None:
            evidence.update(
                clip_trial_steps=trial.steps,
                clip_trial_loss_before=trial.loss_before,
                clip_trial_as_is=trial.as_is_after,
                clip_trial_clipped=trial.clipped_after,
                clip_trial_weights_cut=trial.clipped_layers,
            )
        if init is not None:
            evidence.update(
                init_trial_steps=init.steps,
                init_trial_own=init.as_sent_after,
                init_trial_standard=init.remedied_after,
            )
        if init_helps and not clip_helps:
            remedy = f"{init_hint}; {norm_hint}; or {clip}"
        else:
            remedy = f"{clip}; {init_hint}; {norm_hint}"
        helps = clip_helps or init_helps
        texts = [_init_text(init)] if init is not None else []
        texts += [_clip_text(trial)] if trial is not None else []
        confidence = 0.7 if big_ratio else 0.55
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.WARNING if ctx.learning else Severity.CRITICAL,
                summary=(
                    f"gradient norms grow {fmt(ratio)}x from the last layer towards the input"
                    f"; the largest gradient is {fmt(worst_gw)}x its layer's weight norm"
                ),
                remedy=remedy,
                layers=concerned,
                evidence=evidence,
                confidence=min(0.9, confidence + 0.15) if helps else confidence,
                trial="; ".join(texts),
            )
        ]

    def _clipping_helps(self, trial: ClipTrial) -> bool:
        as_is, clipped = trial.as_is_after, trial.clipped_after
        if not math.isfinite(clipped):
            return False
        if not math.isfinite(as_is):
            return True
        return trial.clipped_layers > 0 and clipped < as_is - self.t.clip_gain * abs(as_is)

    def _init_helps(self, trial: ScratchTrial) -> bool:
        own, standard = trial.as_sent_after, trial.remedied_after
        if not math.isfinite(standard):
            return False
        return not math.isfinite(own) or own > self.t.init_ratio * standard


def _init_text(trial: ScratchTrial) -> str:
    return (
        f"from a fresh draw of Keras's standard initializers, {trial.steps} steps bring "
        f"the held-out loss to {fmt(trial.remedied_after, 4)}, against "
        f"{fmt(trial.as_sent_after, 4)} from a fresh draw of the model's own"
    )


def _clip_text(trial: ClipTrial) -> str:
    return (
        f"with clipnorm={trial.clipnorm:g} ({trial.clipped_layers} weights' gradients cut) "
        f"the held-out loss after {trial.steps} steps is {fmt(trial.clipped_after, 4)}, "
        f"against {fmt(trial.as_is_after, 4)} as the run is "
        f"(from {fmt(trial.loss_before, 4)})"
    )
