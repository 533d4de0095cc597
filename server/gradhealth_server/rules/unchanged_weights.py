"""unchanged_weights: weights that are not being trained.

Two forms:
- trainable weights identical to the run's previous checkpoint. Between two
  checkpoints at different steps every trained layer changes. A layer whose
  weights are bit-identical is not being trained: a learning rate of zero,
  gradients that never reach it, or a job saving the same weights over and over.
- layers left `trainable=False` at their random initialization (no history
  needed): a backbone frozen for transfer learning but built with `weights=None`,
  or the wrong layers frozen. The layers after them learn on random features.
  A pretrained layer frozen on purpose is not flagged (engine/weights.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class UnchangedWeightsRule(Rule):
    cause = Cause.UNCHANGED_WEIGHTS
    no_trial = (
        "no trial: judged on the weights themselves (digests across the run's checkpoints; "
        "frozen layers against a fresh draw of their initializers)"
    )

    @dataclass(frozen=True)
    class Thresholds:
        pass

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        return self._since_previous(m, ctx) or self._frozen_at_init(m, ctx)

    def _frozen_at_init(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        frozen = m.frozen_at_init
        if not frozen or ctx.converged:
            return []  # random features that already fit the batch are not holding it back
        names = ", ".join(frozen[:8]) + (f" and {len(frozen) - 8} more" if len(frozen) > 8 else "")
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.WARNING,
                summary=(
                    f"{len(frozen)} layer{'s' if len(frozen) > 1 else ''} ({names}) "
                    f"{'are' if len(frozen) > 1 else 'is'} frozen (trainable=False) at "
                    "random initialization: the weights match a fresh draw of their own "
                    "initializer and the biases still hold their initial value, so they "
                    "were never trained and the layers after them learn on random features"
                ),
                remedy=(
                    "set trainable=True on them, or load the pretrained weights the freeze "
                    "was meant for (a keras.applications model built with weights=None is "
                    "randomly initialized)"
                ),
                layers=list(frozen),
                evidence={"frozen_at_init": list(frozen)},
                confidence=0.8,
            )
        ]

    def _since_previous(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        previous = ctx.history.previous
        now = m.weight_digests
        if previous is None or not now or not previous.weight_digests:
            return []
        if set(previous.weight_digests) != set(now) or ctx.converged:
            return []  # another architecture under the same run id, or nothing to move
        current = ctx.history.current_step
        if current is None or previous.step >= current:
            return []  # the same checkpoint again, or no order to compare by
        same = [name for name, digest in now.items() if previous.weight_digests[name] == digest]
        if not same:
            return []
        everything = len(same) == len(now)
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.CRITICAL if everything else Severity.WARNING,
                summary=(
                    f"{'every' if everything else len(same)} trainable layer"
                    f"{'' if everything else 's'} ({', '.join(same[:8])}) "
                    f"{'is' if everything else 'are'} bit-identical to the checkpoint of "
                    f"step {previous.step}: {'the model' if everything else 'they'} did not train"
                ),
                remedy=(
                    "check that the learning rate is not 0 and the job saves the weights it "
                    "trains; for single layers, that they are connected to the loss and not "
                    "meant to be frozen (trainable=False)"
                ),
                layers=same,
                evidence={"previous_step": previous.step, "unchanged_layers": len(same)},
                confidence=0.9 if everything else 0.5,
            )
        ]
