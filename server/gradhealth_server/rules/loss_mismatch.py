"""loss_mismatch: the output activation, the loss and the labels disagree.

Anchors: AutoTrainer's and UMLAUT's static checks. Facts measured on Keras 3.15
(docs/architecture.md): softmax/sigmoid outputs with `from_logits=True` are silently
repaired (Keras uses the cached logits) and train identically, so that pairing
is an info note only; `Dense(1, activation="softmax")` and a double softmax are
real failures (the loss can fall while accuracy never moves).
"""

from __future__ import annotations

from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity

CROSSENTROPY = {
    "sparse_categorical_crossentropy": "sparse_categorical",
    "categorical_crossentropy": "categorical",
    "binary_crossentropy": "binary",
    "categorical_focal_crossentropy": "categorical",
    "binary_focal_crossentropy": "binary",
}
REGRESSION_LOSSES = frozenset(
    {
        "mean_squared_error",
        "mean_absolute_error",
        "huber",
        "log_cosh",
        "mean_squared_logarithmic_error",
        "mean_absolute_percentage_error",
    }
)
PROBABILITY_OUTPUTS = frozenset({"softmax", "sigmoid"})


@dataclass
class _Mismatch:
    severity: Severity
    summary: str
    remedy: str


class LossMismatchRule(Rule):
    cause = Cause.LOSS_MISMATCH

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        s = m.static
        if not s.functional or s.output_activation is None:
            return []
        mismatch = self._mismatch(
            loss=s.loss or "",
            from_logits=bool(s.from_logits),
            activation=s.output_activation,
            chain=list(s.output_activations or []),
            units=s.output_units,
            labels=m.labels.format if m.labels else None,
        )
        if mismatch is None:
            return []
        return [
            RuleFinding(
                cause=self.cause,
                severity=mismatch.severity,
                summary=mismatch.summary,
                remedy=mismatch.remedy,
                layers=[m.layers[-1].name] if m.layers else [],
                evidence={
                    "loss": s.loss,
                    "from_logits": s.from_logits,
                    "output_activations": list(s.output_activations),
                    "output_units": s.output_units,
                    "label_format": m.labels.format if m.labels else None,
                },
                confidence=0.95 if mismatch.severity is not Severity.INFO else 0.3,
            )
        ]

    @staticmethod
    def _mismatch(
        loss: str,
        from_logits: bool,
        activation: str,
        chain: list[str],
        units: int | None,
        labels: str | None,
    ) -> _Mismatch | None:
        kind = CROSSENTROPY.get(loss)
        sparse = "sparse_categorical_crossentropy"
        if activation == "softmax" and units == 1:
            return _Mismatch(
                Severity.CRITICAL,
                "softmax over a single unit always outputs 1.0: the loss can move while "
                "accuracy never does",
                'Dense(1, activation="sigmoid") with loss="binary_crossentropy"',
            )
        if chain.count("softmax") >= 2:
            return _Mismatch(
                Severity.CRITICAL,
                "softmax is applied twice: probabilities squashed towards uniform, gradients tiny",
                'keep one: Dense(n, activation="softmax") and drop the extra Activation("softmax")',
            )
        if kind is not None and not from_logits and activation not in PROBABILITY_OUTPUTS:
            fixed = "binary_crossentropy" if kind == "binary" else loss
            cls = "".join(part.title() for part in fixed.split("_"))
            return _Mismatch(
                Severity.CRITICAL,
                f"{loss} expects probabilities but the output layer is {activation} "
                "(logits): the loss is computed on the wrong quantity",
                f"loss=keras.losses.{cls}(from_logits=True)",
            )
        if kind is not None and from_logits and activation in PROBABILITY_OUTPUTS:
            return _Mismatch(
                Severity.INFO,
                f"{activation} output with from_logits=True: Keras 3 uses the cached logits, so "
                "training is correct, but the pairing is fragile",
                f"Dense(n) (no activation) with from_logits=True, or keep {activation} and set "
                "from_logits=False",
            )
        if (
            kind in ("categorical", "sparse_categorical")
            and activation == "sigmoid"
            and (units or 0) > 1
        ):
            return _Mismatch(
                Severity.WARNING,
                f"sigmoid outputs with {loss}: the classes do not compete",
                f'Dense({units}, activation="softmax") with loss="{loss}"',
            )
        if (
            kind == "binary"
            and activation == "softmax"
            and (units or 0) > 1
            and labels in ("class_ids", "one_hot")
        ):
            return _Mismatch(
                Severity.WARNING,
                "binary_crossentropy on a softmax over several classes",
                f'loss="{sparse if labels == "class_ids" else "categorical_crossentropy"}"',
            )
        if (
            loss in REGRESSION_LOSSES
            and activation in PROBABILITY_OUTPUTS
            and labels in ("class_ids", "one_hot")
        ):
            target = sparse if labels == "class_ids" else "categorical_crossentropy"
            return _Mismatch(
                Severity.WARNING,
                f"{loss} (a regression loss) on a {activation} classifier",
                f'loss="{target}"',
            )
        return None
