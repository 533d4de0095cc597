"""What a remedy trial costs, as a ratio to a bare compiled step on the same model
and batch (side by side, interleaved).

Trials run only when a rule proposes a remedy (a healthy run pays nothing), and
then their cost is the steps they take: the learning-rate trial runs 5 optimizer
steps on half the batch at each of 4 scales, once per fold (each half held out in
turn: 40 half-batch steps, about 20 full ones, plus 8 held-out losses); the input
trial takes one step on the batch as sent and one on the rescaled copy; the
from-scratch trial (a data remedy from one fresh initialization) 10 half-batch
steps per arm, two arms (about 10 full steps),
plus drawing the fresh weights (`clone_model`) and saving and restoring every
variable on the host. The exploding-gradients trials: clipping runs the
learning-rate trial's 5 held-out steps twice (as is, clipped: about 5 full steps);
the standard-init trial is the from-scratch trial with a second draw of fresh
weights (Keras's default initializers). The loss-pairing trial (loss_mismatch) runs
the same 5 held-out steps twice, as is and with the remedied loss, like clipping.
Targets: that step count plus 20 % (the
snapshot and restore of weights and optimizer slots), and for the from-scratch
trials plus 50 % (the fresh weights and the host round trip).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.probe_overhead import _models, bare_step, trained
from bench.timing import side_by_side
from gradhealth_server.commands.examples import digits
from gradhealth_server.engine.device import configure_device
from gradhealth_server.engine.trials import LossRemedy

TARGETS = {
    "learning_rate": 24.0,
    "input_scale": 2.4,
    "from_scratch": 15.0,
    "clipped": 6.0,
    "standard_init": 15.0,
    "pairing": 6.0,
}


def _pairing(loss: Any) -> LossRemedy:
    """The pairing row's remedy: the model's own crossentropy (a loss object here is
    the from-logits one, a name the softmax one), as a remedied loss would be."""
    logits = not isinstance(loss, str)
    return LossRemedy("loss", "sparse_categorical_crossentropy", from_logits=logits)


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The trials on the small CNN and the 1M-parameter MLP at 256 rows, no XLA
    (trials are compiled without it)."""
    configure_device()

    from gradhealth_server.engine.probe import Probe, ProbeOptions
    from gradhealth_server.engine.trial_steps import Trials
    from gradhealth_server.rules.learning_rate_too_low import LearningRateTooLowRule

    x_all, y_all = digits()
    results = []
    for name, (build, loss, _sizes, calls) in _models().items():
        if name == "resnet_10m":  # minutes per repetition on 2 cores; the two others show it
            continue
        model, structure = trained(build, loss, x_all, y_all)
        input_name = structure.facts.input_names[0]
        idx = np.arange(256) % len(y_all)
        x, y = x_all[idx], y_all[idx]
        batch = {input_name: x}
        scaled = {input_name: (x * np.float32(255.0)).astype(x.dtype)}
        probe = Probe(model, structure, batch, y, ProbeOptions(jit_compile=False))
        trials = Trials(probe)
        step = bare_step(model, xla=False)
        pairing = _pairing(loss)
        ratios = side_by_side(
            lambda step=step, x=x, y=y: step(x, y)[0].numpy(),
            {
                "learning_rate": lambda t=trials, b=batch, y=y: t.learning_rate(
                    b, y, LearningRateTooLowRule.TRIAL_SCALES
                ),
                "input_scale": lambda t=trials, b=batch, s=scaled, y=y: (
                    t.step(b, y),
                    t.step(s, y),
                ),
                "from_scratch": lambda t=trials, b=batch, s=scaled, y=y: t.from_scratch(
                    [(b, y), (s, y)]
                ),
                "clipped": lambda t=trials, b=batch, y=y: t.clipped(b, y, 1.0),
                "standard_init": lambda t=trials, b=batch, y=y: t.from_scratch(
                    [(b, y), (b, y)], (False, True)
                ),
                "pairing": lambda t=trials, b=batch, y=y, r=pairing: t.paired(b, y, y, r),
            },
            repetitions=2 if quick else 5,
            calls=max(1, calls // 10) if quick else max(1, calls // 4),
        )
        for r in ratios:
            results.append(
                {
                    "bench": "trial_cost",
                    "model": name,
                    "parameters": int(model.count_params()),
                    "rows": 256,
                    "trial": r.name,
                    "ratio": round(r.median, 3),
                    "low": round(r.low, 3),
                    "high": round(r.high, 3),
                    "trial_ms": round(r.seconds * 1e3, 2),
                    "bare_ms": round(r.seconds / r.median * 1e3, 2),
                    "target": TARGETS[r.name],
                    "meets_target": r.median <= TARGETS[r.name],
                }
            )
    return results
