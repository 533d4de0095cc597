"""Remedy trials in the graph: a few real optimizer steps from a copy of the state.

A rule proposes a remedy; a trial measures it on the batch before the verdict says
so (docs/architecture.md, "Trials over thresholds"). Each trial is compiled once per
probe, on demand, so a healthy run that no rule questions pays nothing for it.
Every weight, statistic and optimizer slot is written back before a trial returns.

- `step`: one optimizer step on a batch, the loss before and after (the input trial
  runs it on the batch as sent and on a rescaled copy).
- `learning_rate`: `steps` steps on the first half of the batch with the optimizer's
  step scaled by s (for SGD, momentum, Adam, RMSprop, Adagrad and Lion the step is
  linear in the learning rate, so this is the run at learning rate s·lr), then the
  loss on the second half; then the same with the halves swapped, and the mean.
  Held-out rows keep a large step that only memorizes the rows from looking like
  progress; the second fold keeps one unlucky split from deciding the verdict.
- `clipped`: the learning-rate trial's held-out steps at the run's own rate, as the
  run is and with each weight's gradient clipped to a norm (Keras's `clipnorm`), for
  the exploding-gradients remedy.
- `paired`: the held-out steps at the run's own rate, as the run is and training
  with the loss (or labels) a loss_mismatch remedy names, both arms scored by the
  remedied loss on the held-out rows (one output only).
- `from_scratch`: the same held-out steps, but from a fresh initialization of the
  model (its own initializers, seeded) and a fresh optimizer, once per arm: the batch
  as sent and the batch with a data remedy (the diagnosis uses it for standardized
  regression targets). Both arms
  start from the same weights, so the comparison asks the question the remedy is
  about, "would this run learn faster with its data fixed", without the bias of
  weights that have already adapted to the data as sent. An arm may instead start
  from Keras's standard initializers (the exploding-gradients remedy: "would this
  run learn faster from a standard init").
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from gradhealth_server.engine.gradients import gradients, loss_scale
from gradhealth_server.engine.measurements import ClipTrial, LearningRateTrial, PairingTrial
from gradhealth_server.engine.probe import Inputs, Probe, moved, read
from gradhealth_server.engine.probe_errors import probe_error
from gradhealth_server.engine.trials import LossRemedy
from gradhealth_server.intake.batch import Targets, swapped_halves, take_rows, target_rows

log = logging.getLogger(__name__)

# Fewer rows than this on either half and the learning-rate trial is not run.
MIN_TRIAL_ROWS = 8
# Optimizer steps of each arm of the from-scratch trial.
SCRATCH_STEPS = 10


class Trials:
    """The trials of one compiled probe (same model object, same batch signature)."""

    def __init__(self, probe: Probe, lr_steps: int = 5, scratch_steps: int = SCRATCH_STEPS) -> None:
        self.probe = probe
        self.lr_steps = lr_steps
        self.scratch_steps = scratch_steps
        self._step_fn = None
        self._lr_fn = None
        self._paired_fns: dict[LossRemedy, tf.types.experimental.PolymorphicFunction] = {}

    def step(self, x: Inputs, y: Targets) -> tuple[float, float]:
        """Loss on this batch before and after one optimizer step taken on it."""
        if self._step_fn is None:
            self._step_fn = self._compile(self._step)
        before, after = self._call(self._step_fn, x, y)
        return float(before), float(after)

    def learning_rate(
        self, x: Inputs, y: Targets, scales: tuple[float, ...]
    ) -> LearningRateTrial | None:
        """Held-out loss after `lr_steps` steps at each learning-rate scale, each half
        of the batch held out in turn (two folds, the same compiled trial), averaged.

        One fold alone is at its noise floor on a small batch: the steps taken on 64
        rows can raise the other 64 rows' loss in proportion to the rate, and the
        verdict then depended on which rows were sent (a Transformer at Adam 1e-6
        judged healthy on one batch, too low on three others)."""
        rows = target_rows(y)
        half = rows // 2
        if half < MIN_TRIAL_ROWS or self.probe.model.optimizer is None:
            return None
        folds = [(x, y), swapped_halves(x, y, half)]
        befores, losses = [], []
        for scale in scales:
            runs = [self._held_out(fx, fy, scale, self.lr_steps) for fx, fy in folds]
            befores = [b for b, _after, _cut in runs]
            losses.append(float(np.mean([after for _b, after, _cut in runs])))
        return LearningRateTrial(
            steps=self.lr_steps,
            train_rows=half,
            held_out_rows=rows - half,
            loss_before=float(np.mean(befores)) if befores else float("nan"),
            scales=[float(s) for s in scales],
            losses=losses,
            folds=len(folds),
        )

    def clipped(self, x: Inputs, y: Targets, clipnorm: float) -> ClipTrial | None:
        """Held-out loss after `lr_steps` steps as the run is and with clipped gradients."""
        if target_rows(y) // 2 < MIN_TRIAL_ROWS or self.probe.model.optimizer is None:
            return None
        before, as_is, _ = self._held_out(x, y, 1.0, self.lr_steps)
        _, clipped, cut = self._held_out(x, y, 1.0, self.lr_steps, clipnorm)
        return ClipTrial(clipnorm, self.lr_steps, before, as_is, clipped, cut)

    def paired(self, x: Inputs, y: np.ndarray, fixed: np.ndarray, remedy: LossRemedy):
        """Held-out loss after `lr_steps` steps as the run is and with the remedied loss
        on the remedied labels `fixed`, both scored by the remedied loss on `fixed`.

        None with several outputs (the remedy names the first output's loss), no
        optimizer, or too few rows to hold half out."""
        import keras

        p = self.probe
        if isinstance(y, (list, tuple)) or p.model.optimizer is None:
            return None
        if target_rows(y) // 2 < MIN_TRIAL_ROWS:
            return None
        trial = self._paired_fns.get(remedy)
        if trial is None:  # compiled once per remedy (two traces: as is, remedied)
            # The Loss object, as compile() would build it: it casts the labels and
            # matches their rank to the output's ((n,) labels against (n, 1) outputs).
            cls = getattr(keras.losses, "".join(w.title() for w in remedy.loss.split("_")), None)
            if cls is None:  # no Loss class of that name: nothing to try
                return None
            crossentropy = "crossentropy" in remedy.loss
            scored_by = cls(from_logits=remedy.from_logits) if crossentropy else cls()
            trial = self._paired_fns[remedy] = _graph(
                lambda xs, y, fixed, remedied: self._paired(xs, y, fixed, remedied, scored_by)
            )
        xs = [x[name] for name in self.probe.input_order]
        try:
            before, as_is = (float(v) for v in trial(xs, y, fixed, False))
            _, remedied = (float(v) for v in trial(xs, y, fixed, True))
        except tf.errors.OpError as exc:
            raise probe_error(exc) from exc
        except (ValueError, TypeError) as exc:  # the remedied loss does not trace here
            log.warning("loss pairing trial %r not run: %s", remedy.change, str(exc)[:300])
            return None
        return PairingTrial(remedy.change, remedy.loss, self.lr_steps, before, as_is, remedied)

    def from_scratch(
        self, arms: list[tuple[Inputs, Targets]], standard_init: tuple[bool, ...] = ()
    ) -> list[tuple[float, float]] | None:
        """Held-out loss (before, after) `scratch_steps` steps from a fresh start, per arm.

        None when the model cannot be re-initialized (a subclassed model has no
        config to clone), has no optimizer, or the batch is too small to hold rows out.
        """
        p = self.probe
        if target_rows(arms[0][1]) // 2 < MIN_TRIAL_ROWS or p.model.optimizer is None:
            return None
        variables = p._trainable + p._non_trainable
        standard = tuple(standard_init) + (False,) * (len(arms) - len(standard_init))
        draws = {flag: _fresh_weights(p.model, variables, flag) for flag in set(standard)}
        if any(fresh is None for fresh in draws.values()):
            return None
        saved = [v.numpy() for v in p._trainable + p._non_trainable + p._optimizer_vars]
        try:
            results = []
            for (x, y), flag in zip(arms, standard):
                _fresh_start(p, draws[flag])
                before, after, _ = self._held_out(x, y, 1.0, self.scratch_steps)
                results.append((before, after))
            return results
        finally:
            for var, value in zip(p._trainable + p._non_trainable + p._optimizer_vars, saved):
                var.assign(value)

    def _held_out(
        self, x: Inputs, y: Targets, scale: float, steps: int, clipnorm: float = 0.0
    ) -> tuple[float, float, int]:
        """(held-out loss before, after, weights whose first gradient the clip cut);
        clipnorm 0 clips nothing."""
        if self._lr_fn is None:
            # scale, steps, clipnorm
            specs = [tf.TensorSpec((), tf.float32), tf.TensorSpec((), tf.int32)]
            specs.append(tf.TensorSpec((), tf.float32))
            self._lr_fn = _graph(self._lr_trial, [*self.probe._signature, *specs])
        before, after, cut = self._call(
            self._lr_fn, x, y, np.float32(scale), np.int32(steps), np.float32(clipnorm)
        )
        return float(before), float(after), int(cut)

    # -- compiled bodies ------------------------------------------------------
    def _compile(self, body):
        return _graph(body, self.probe._signature)

    def _call(self, fn, x: Inputs, y: Targets, *extra):
        try:
            return fn([x[name] for name in self.probe.input_order], y, *extra)
        except tf.errors.OpError as exc:
            raise probe_error(exc) from exc

    def _step(self, xs, y):
        p = self.probe
        w0, nt0, _ = p.snapshot()
        metrics0 = [read(v) for v in p._metric_vars]
        with tf.GradientTape() as tape:
            tape.watch(w0)
            before, *_ = p.stateless_loss(w0, nt0, metrics0, xs, y)
        deltas = p._step_and_restore(gradients(tape, before, w0, loss_scale(p.model)), w0)
        after, *_ = p.stateless_loss(moved(w0, deltas, 1.0), nt0, metrics0, xs, y)
        return tf.cast(before, tf.float32), tf.cast(after, tf.float32)

    def _lr_trial(self, xs, y, scale, steps, clipnorm):
        p = self.probe
        half = p.rows // 2
        x_train, y_train = [t[:half] for t in xs], take_rows(y, None, half)
        x_held, y_held = [t[half:] for t in xs], take_rows(y, half, None)
        w0, nt0, slots0 = p.snapshot()
        metrics0 = [read(v) for v in p._metric_vars]
        before, *_ = p.stateless_loss(w0, nt0, metrics0, x_held, y_held, training=False)

        def step(i, cut):
            w, nt, _slots = p.snapshot()
            with tf.GradientTape() as tape:
                tape.watch(w)
                loss, _taps, _firsts, _pred, nt_next = p.stateless_loss(
                    w, nt, metrics0, x_train, y_train
                )
            grads, clipped = _clip(gradients(tape, loss, w, loss_scale(p.model)), clipnorm)
            deltas = p.apply_step(grads, w)
            # The optimizer moved the variables by Δw; the trial's run moves them s·Δw.
            p.restore(moved(w, deltas, scale), nt_next, None)
            return i + 1, tf.where(cut < 0, clipped, cut)

        _, cut = tf.while_loop(lambda i, _: i < steps, step, (tf.constant(0), tf.constant(-1)))
        w, nt, _slots = p.snapshot()
        after, *_ = p.stateless_loss(w, nt, metrics0, x_held, y_held, training=False)
        p.restore(w0, nt0, slots0)
        return tf.cast(before, tf.float32), tf.cast(after, tf.float32), tf.maximum(cut, 0)

    def _paired(self, xs, y, fixed, remedied: bool, scored_by):
        p = self.probe
        half = p.rows // 2
        x_train, x_held = [t[:half] for t in xs], [t[half:] for t in xs]
        y_train, y_held = (fixed if remedied else y)[:half], fixed[half:]
        train_loss = scored_by if remedied else None  # None: the model's compiled loss
        w0, nt0, slots0 = p.snapshot()
        metrics0 = [read(v) for v in p._metric_vars]
        held = (metrics0, x_held, y_held)
        before, *_ = p.stateless_loss(w0, nt0, *held, training=False, loss_fn=scored_by)

        def step(i):
            w, nt, _slots = p.snapshot()
            with tf.GradientTape() as tape:
                tape.watch(w)
                loss, _taps, _firsts, _pred, nt_next = p.stateless_loss(
                    w, nt, metrics0, x_train, y_train, loss_fn=train_loss
                )
            deltas = p.apply_step(gradients(tape, loss, w, loss_scale(p.model)), w)
            p.restore(moved(w, deltas, 1.0), nt_next, None)
            return (i + 1,)

        tf.while_loop(lambda i: i < self.lr_steps, step, (tf.constant(0),))
        w, nt, _slots = p.snapshot()
        after, *_ = p.stateless_loss(w, nt, *held, training=False, loss_fn=scored_by)
        p.restore(w0, nt0, slots0)
        return tf.cast(before, tf.float32), tf.cast(after, tf.float32)


def _graph(body, input_signature: list | None = None):
    """A trial's compiled function: the plain graph (jit_compile=False), traced
    without AutoGraph like the probe."""
    return tf.function(body, input_signature=input_signature, jit_compile=False, autograph=False)


def _clip(grads: list[tf.Tensor], clipnorm: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Each gradient scaled down to norm `clipnorm` if above it, as Keras's `clipnorm`
    does (clipnorm 0: unchanged); and how many were cut."""
    norms = [tf.norm(g) for g in grads]
    factors = [
        tf.where((clipnorm > 0) & (n > clipnorm), clipnorm / tf.maximum(n, 1e-30), 1.0)
        for n in norms
    ]
    cut = tf.add_n([tf.cast(f < 1.0, tf.int32) for f in factors]) if grads else tf.constant(0)
    return [g * f for g, f in zip(grads, factors)], cut


def _fresh_weights(model, variables: list, standard: bool = False) -> list[np.ndarray] | None:
    """Values of `variables` as the model's own initializers draw them afresh, with
    fixed seeds: the same checkpoint gets the same trial, so the same verdict.

    standard: Keras's default initializers for the weight matrices instead (Glorot
    uniform kernels, orthogonal recurrent kernels), everything else as the model's:
    the exploding-gradients remedy "use the standard initializer", drawn."""
    import keras

    counter = iter(range(1, 1 << 30))

    def seeded(layer):
        config = layer.get_config()
        if standard:
            config = _standard_initializers(config)
        config = _seed_initializers(config, counter)
        try:
            return layer.__class__.from_config(config)
        except (ValueError, TypeError):
            return layer.__class__.from_config(layer.get_config())

    try:
        clone = keras.models.clone_model(model, clone_function=seeded)
    except (ValueError, TypeError, NotImplementedError):
        return None
    values = [v.numpy() for v in clone.trainable_variables + clone.non_trainable_variables]
    del clone
    if [tuple(v.shape) for v in values] != [tuple(v.shape) for v in variables]:
        return None
    # Dropout's random state stays the checkpoint's: only weights are drawn afresh.
    return [
        var.numpy() if "seed_generator" in str(getattr(var, "path", "")) else value
        for var, value in zip(variables, values)
    ]


# Initializer key -> Keras's default for it (the layers' own defaults).
STANDARD_INITIALIZERS = {
    "kernel_initializer": "GlorotUniform",
    "depthwise_initializer": "GlorotUniform",
    "pointwise_initializer": "GlorotUniform",
    "recurrent_initializer": "Orthogonal",
}


def _standard_initializers(config):
    """The layer config with Keras's default initializer for every weight matrix,
    nested configs (an RNN cell, a wrapped layer) included."""
    if isinstance(config, list):
        return [_standard_initializers(item) for item in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key in STANDARD_INITIALIZERS and value is not None:
            value = {
                "module": "keras.initializers",
                "class_name": STANDARD_INITIALIZERS[key],
                "config": {"seed": None},
                "registered_name": None,
            }
        out[key] = _standard_initializers(value)
    return out


def _seed_initializers(config, counter):
    """The layer config with a seed on every random initializer (they serialize
    `seed: None`), nested configs (a wrapped layer, an RNN cell) included."""
    if isinstance(config, list):
        return [_seed_initializers(item, counter) for item in config]
    if not isinstance(config, dict):
        return config
    out = {key: _seed_initializers(value, counter) for key, value in config.items()}
    inner = out.get("config")
    if (
        str(out.get("module", "")).startswith("keras.initializers")
        and isinstance(inner, dict)
        and "seed" in inner
        and inner["seed"] is None
    ):
        out["config"] = {**inner, "seed": next(counter)}
    return out


def _fresh_start(probe: Probe, fresh: list[np.ndarray]) -> None:
    """Fresh weights, and the optimizer as before its first step: slots zero and the
    step count 0; scalars such as the learning rate or a loss scale keep their value."""
    for var, value in zip(probe._trainable + probe._non_trainable, fresh):
        var.assign(value)
    for var in probe._optimizer_vars:
        name = var.name.rpartition("/")[2]
        if len(var.shape) > 0 or name.startswith("iteration"):
            var.assign(np.zeros(var.shape, var.dtype))
