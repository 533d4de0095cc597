"""The probe: ONE compiled TensorFlow function that measures a training step.

Per (architecture, batch signature) one `tf.function` is traced, with XLA where
it compiles. In one call it

1. runs forward and backward over k equal micro-batches (k = 1 when the model
   has batch-coupled layers such as BatchNormalization) through a *tap model*
   that also returns the hidden activations; with a mean-reduced loss the
   full-batch gradient is the size-weighted mean of the micro-batch gradients,
   and their spread gives the gradient noise scale almost for free;
2. reduces gradients, weights and activations to per-variable / per-tap numbers;
3. applies the checkpoint's own optimizer to the real variables (Keras 3 has no
   stateless apply on TensorFlow), measures the step, evaluates the loss at
   w + s·Δw for a few scales s on the first micro-batch (forward passes only),
   and finally restores every model, optimizer and metric variable.

It returns each quantity family's numbers under the family's key (the families
live in engine/quantities/, which own their statistics); `measure.py` gives them
names and meaning.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from gradhealth_server.engine.device import xla_by_default
from gradhealth_server.engine.gradients import gradients, loss_scale
from gradhealth_server.engine.micro_batches import micro_batches
from gradhealth_server.engine.probe_errors import probe_error
from gradhealth_server.engine.quantities import (
    activations,
    first_inputs,
    noise,
    optimizer,
    outputs,
    time_steps,
    variables,
)
from gradhealth_server.engine.structure import ModelStructure
from gradhealth_server.intake.batch import Targets, as_model_inputs, take_rows, target_rows

log = logging.getLogger(__name__)

# The batch's inputs by name, as the model takes them.
Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class ProbeOptions:
    """How much to measure. `norms` is the cheap gradient-norms-only mode."""

    mode: Literal["full", "norms"] = "full"
    # The batch runs as micro-batches: the first (probe_rows rows) is also where
    # the learning-rate probe evaluates, the rest is split evenly. Two or more
    # give the gradient noise scale; fewer, larger ones run faster on a CPU.
    micro_batches: int = 2
    probe_rows: int = 64
    min_micro_batch_rows: int = 8
    # Step scales for the learning-rate probe, relative to the optimizer's own step.
    lr_scales: tuple[float, ...] = (0.1, 1.0, 10.0)
    # None: XLA on a GPU (falling back when the model does not compile), the plain
    # graph on a CPU (engine/device.xla_by_default); True/False force it.
    jit_compile: bool | None = None


@dataclass
class ProbeResult:
    raw: dict[str, Any]  # "loss", then each quantity family's numbers under its KEY
    xla: bool
    seconds: float
    micro_batch_rows: tuple[int, ...]
    lr_scales: tuple[float, ...] = ()


def batch_signature(x: Inputs, y: Targets) -> tuple:
    """Hashable shapes and dtypes: one compiled probe per signature."""
    ys = y if isinstance(y, (list, tuple)) else [y]
    return (
        tuple((k, v.shape, str(v.dtype)) for k, v in sorted(x.items())),
        tuple((t.shape, str(t.dtype)) for t in ys),
    )


class Probe:
    """A compiled probe bound to one model object and one batch signature."""

    def __init__(
        self,
        model: keras.Model,
        structure: ModelStructure,
        x: Inputs,
        y: Targets,
        options: ProbeOptions | None = None,
    ) -> None:
        options = options or ProbeOptions()
        self.model = model
        self.structure = structure
        self.options = options
        self.trace_count = 0
        self.input_order = list(structure.facts.input_names)
        rows = target_rows(y)
        self.rows = rows
        self.splits = micro_batches(rows, structure, options)
        self._taps = structure.taps if options.mode == "full" else ()
        self._first_inputs = structure.first_layer_inputs if options.mode == "full" else ()
        self._sequence_input = (
            time_steps.sequence_input(
                [type(layer).__name__ for layer in model._flatten_layers(include_self=False)],
                [(n, tuple(x[n].shape), str(x[n].dtype)) for n in self.input_order],
            )
            if options.mode == "full"
            else None
        )
        self._forward = self._build_forward(model)
        self._trainable = list(model.trainable_variables)
        self._non_trainable = list(model.non_trainable_variables)
        self._metric_vars = list(model.metrics_variables)
        self._optimizer_vars = (
            list(model.optimizer.variables) if model.optimizer is not None else []
        )
        specs_x = [tf.TensorSpec(x[name].shape, x[name].dtype) for name in self.input_order]
        spec_y = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), y)
        self._signature = [specs_x, spec_y]
        # None: XLA where it pays (a GPU), with a fallback to the plain graph.
        self.xla = options.jit_compile if options.jit_compile is not None else xla_by_default()
        self._fn = self._compile(self.xla)
        self.trials = None  # engine.trial_steps.Trials, compiled when a rule proposes one

    # -- public -----------------------------------------------------------
    def run(self, x: Inputs, y: Targets) -> ProbeResult:
        xs = [x[name] for name in self.input_order]
        start = time.perf_counter()
        out = self._call(xs, y)
        raw = tf.nest.map_structure(lambda t: t.numpy(), out)
        return ProbeResult(
            raw, self.xla, time.perf_counter() - start, tuple(self.splits), self.options.lr_scales
        )

    def _call(self, xs: list[np.ndarray], y: Targets) -> dict[str, Any]:
        try:
            return self._fn(xs, y)
        except tf.errors.OpError as exc:
            if not self.xla or self.options.jit_compile is True:
                raise probe_error(exc) from exc
            # Either XLA cannot compile this model or the batch is bad (e.g. an
            # out-of-range token id). The plain graph tells which; a failed XLA
            # launch ran nothing, so no variable has moved.
            plain = self._compile(False)
            try:
                out = plain(xs, y)
            except tf.errors.OpError as again:
                raise probe_error(again) from again
            log.info(
                "XLA did not compile the probe (%s); without XLA", str(exc).splitlines()[0][:200]
            )
            self.xla, self._fn = False, plain
            return out

    # -- construction -----------------------------------------------------
    def _compile(self, xla: bool):
        # Without AutoGraph, as Keras 3's own fit() traces its train step (a layer
        # that needs it cannot train): the probe's control flow is Python over Python
        # values, and converting every function it calls was 80 % of a small
        # model's first call (issue 19).
        return tf.function(
            self._probe,
            input_signature=self._signature,
            jit_compile=xla,
            reduce_retracing=False,
            autograph=False,
        )

    def _build_forward(self, model: keras.Model):
        """A callable returning (tap tensors, first-layer inputs, y_pred)."""
        n_taps, n_first = len(self._taps), len(self._first_inputs)
        if n_taps + n_first == 0:
            return lambda xs, training: (
                [],
                [],
                model(as_model_inputs(model, xs), training=training),
            )
        outputs = [t.tensor for t in self._taps] + [t.tensor for t in self._first_inputs]
        outputs += list(model.outputs)
        tap_model = keras.Model(inputs=model.inputs, outputs=outputs, name="gradhealth_taps")
        structure = getattr(model, "_outputs_struct", None)

        def forward(xs, training):
            out = tap_model(list(xs), training=training)  # built on the flat list of inputs
            taps, firsts = out[:n_taps], out[n_taps : n_taps + n_first]
            preds = out[n_taps + n_first :]
            if structure is not None and keras.tree.is_nested(structure):
                y_pred = keras.tree.pack_sequence_as(structure, preds)
            else:
                y_pred = preds[0] if len(preds) == 1 else preds
            return taps, firsts, y_pred

        return forward

    # -- the compiled body --------------------------------------------------
    def _probe(self, xs: list[tf.Tensor], y: Targets) -> dict[str, Any]:
        self.trace_count += 1  # runs at trace time only: counts retraces
        full = self.options.mode == "full"
        # Snapshots: tensors read now, immune to the assignments that follow.
        w0 = [read(v) for v in self._trainable]
        nt0 = [read(v) for v in self._non_trainable]
        metrics0 = [read(v) for v in self._metric_vars]
        weights = [n / self.rows for n in self.splits]

        micro_grads: list[list[tf.Tensor]] = []
        losses: list[tf.Tensor] = []
        taps: list[dict[str, tf.Tensor]] = []
        firsts: list[dict[str, tf.Tensor]] = []
        per_step: dict[str, tf.Tensor] = {}
        seq = self._sequence_input
        output: dict[str, tf.Tensor] = {}
        predicted: list[tf.Tensor] = []
        nt = nt0
        start = 0
        scale = loss_scale(self.model)  # mixed_float16: as fit() differentiates
        for i, rows in enumerate(self.splits):
            xi = [t[start : start + rows] for t in xs]
            yi = take_rows(y, start, start + rows)
            start += rows
            with tf.GradientTape() as tape:
                tape.watch(w0)
                if seq is not None:
                    tape.watch(xi[seq])
                loss, tap_values, first_values, y_pred, nt = self.stateless_loss(
                    w0, nt, metrics0, xi, yi
                )
            sources = w0 + ([xi[seq]] if seq is not None else [])
            g = gradients(tape, loss, sources, scale)
            if seq is not None:
                # d(mean loss of the micro-batch)/dx, scaled to the whole batch's mean
                steps = time_steps.graph(g.pop() * weights[i])
                per_step = steps if i == 0 else time_steps.MERGE(per_step, steps)
            micro_grads.append(g)
            losses.append(tf.cast(loss, tf.float32))
            if not full:
                continue
            stats = [activations.graph(t, tap.activation) for t, tap in zip(tap_values, self._taps)]
            taps = stats if i == 0 else list(map(activations.MERGE, taps, stats))
            fstats = [first_inputs.graph(t) for t in first_values]
            firsts = fstats if i == 0 else list(map(first_inputs.MERGE, firsts, fstats))
            ostats, pred = outputs.graph(y_pred, self.structure.facts)
            output = ostats if i == 0 else outputs.MERGE(output, ostats)
            predicted.append(pred)

        # Mean-reduced loss, micro-batches of n_i rows: G = sum_i (n_i / n) g_i.
        grads = [
            tf.add_n([w * g[j] for w, g in zip(weights, micro_grads)])
            if len(weights) > 1
            else micro_grads[0][j]
            for j in range(len(w0))
        ]
        result: dict[str, Any] = {"loss": tf.add_n([w * loss for w, loss in zip(weights, losses)])}
        if not full:
            result[variables.KEY] = variables.graph_norms(grads)
            return result
        result[variables.KEY] = variables.graph(grads, w0)
        result[noise.KEY] = noise.graph(losses, micro_grads)
        result[activations.KEY] = taps
        result[first_inputs.KEY] = firsts
        if per_step:
            result[time_steps.KEY] = per_step
        result[outputs.KEY] = {**output, outputs.PREDICTED: tf.concat(predicted, axis=0)}
        step = self._optimizer_step(grads, w0, nt0, metrics0, xs, y, losses[0])
        if step:
            result[optimizer.KEY] = step
        return result

    def stateless_loss(
        self, trainable, non_trainable, metric_values, xs, y, training=True, loss_fn=None
    ):
        """Forward pass and loss exactly as `fit` computes them, mutating nothing.

        BatchNorm statistics, dropout seeds and loss trackers update inside the
        scope only; the model's variables keep their values. loss_fn(y, y_pred), when
        given, replaces the compiled loss (a single-output model's loss remedy, tried),
        the model's regularization losses still added while training.
        """
        mapping = list(zip(self._trainable, trainable))
        mapping += zip(self._non_trainable, non_trainable)
        mapping += zip(self._metric_vars, metric_values)
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            taps, firsts, y_pred = self._forward(xs, training)
            x = as_model_inputs(self.model, xs)
            if loss_fn is None:
                loss = self.model.compute_loss(x=x, y=y, y_pred=y_pred, training=training)
            else:
                loss = tf.reduce_mean(loss_fn(y, tf.cast(y_pred, tf.float32)))
                if training and self.model.losses:
                    loss += tf.add_n([tf.cast(r, tf.float32) for r in self.model.losses])
        updated = [scope.get_current_value(v) for v in self._non_trainable]
        updated = [u if u is not None else old for u, old in zip(updated, non_trainable)]
        return loss, taps, firsts, y_pred, updated

    def _optimizer_step(self, grads, w0, nt0, metrics0, xs, y, base_loss):
        """The checkpoint optimizer's real next step, then the learning-rate probe."""
        if self.model.optimizer is None:
            return {}
        deltas = self._step_and_restore(grads, w0)
        out = optimizer.graph_step(deltas, read(self.model.optimizer.iterations))
        # Loss on the first rows at w0 + s·Δw: the same rows and the same dropout
        # masks (same starting state) as the forward that gave base_loss. With one
        # micro-batch (batch-coupled models) that would be the whole batch, three
        # more forward passes over it: evaluate on probe_rows rows instead, with a
        # base loss of their own (four small forwards cost about one full one).
        rows = min(self.splits[0], max(self.options.probe_rows, self.options.min_micro_batch_rows))
        x0, y0 = [t[:rows] for t in xs], take_rows(y, None, rows)
        if rows < self.splits[0] and self.options.lr_scales:
            base_loss, *_ = self.stateless_loss(w0, nt0, metrics0, x0, y0)
            base_loss = tf.cast(base_loss, tf.float32)
        if self.options.lr_scales:
            losses = self._losses_along(deltas, w0, nt0, metrics0, x0, y0)
            out.update(optimizer.graph_lr_probe(base_loss, losses))
        return out

    def _losses_along(self, deltas, w0, nt0, metrics0, x0, y0) -> tf.Tensor:
        """The loss at w0 + s·Δw for each learning-rate scale s, in a loop whose body
        (one forward pass) is traced once, not once per scale."""
        scales = tf.constant(self.options.lr_scales, tf.float32)
        n = len(self.options.lr_scales)

        def body(i, losses):
            loss, *_ = self.stateless_loss(moved(w0, deltas, scales[i]), nt0, metrics0, x0, y0)
            return i + 1, losses.write(i, tf.cast(loss, tf.float32))

        _, losses = tf.while_loop(
            lambda i, _: i < n, body, (tf.constant(0), tf.TensorArray(tf.float32, size=n))
        )
        return losses.stack()

    def _step_and_restore(self, grads, w0) -> list[tf.Tensor]:
        """Apply the optimizer to the real variables, return Δw, write everything back.

        Keras 3 has no stateless optimizer apply on TensorFlow, so the step is
        applied for real and every weight and optimizer variable (iterations
        included) is restored before the function returns.
        """
        slots0 = [read(v) for v in self._optimizer_vars]
        deltas = self.apply_step(grads, w0)
        self.restore(w0, None, slots0)
        return deltas

    def apply_step(self, grads, w0) -> list[tf.Tensor]:
        """The optimizer's real step from w0 (the variables' current values): Δw.

        The variables and the optimizer's slots are left moved (the caller restores).
        """
        model_optimizer = self.model.optimizer
        # apply() unscales gradients by the loss scale (LossScaleOptimizer, or
        # loss_scale_factor): hand it gradients of the loss as fit() scales it.
        scale = tf.cast(model_optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        model_optimizer.apply(
            [tf.cast(g * scale, v.dtype) for g, v in zip(grads, self._trainable)],
            self._trainable,
        )
        return [
            tf.cast(read(v), tf.float32) - tf.cast(w, tf.float32)
            for v, w in zip(self._trainable, w0)
        ]

    def snapshot(self) -> tuple[list[tf.Tensor], list[tf.Tensor], list[tf.Tensor]]:
        """(trainable, non-trainable, optimizer) values as tensors, for restore()."""
        return (
            [read(v) for v in self._trainable],
            [read(v) for v in self._non_trainable],
            [read(v) for v in self._optimizer_vars],
        )

    def restore(self, trainable, non_trainable, slots) -> None:
        """Write a snapshot back (None: leave that group as it is)."""
        groups = (
            (self._trainable, trainable),
            (self._non_trainable, non_trainable),
            (self._optimizer_vars, slots),
        )
        for variables_, values in groups:
            for var, value in zip(variables_, values or ()):
                var.assign(value)


# -- helpers (trace-time) ------------------------------------------------------


def moved(w0: list[tf.Tensor], deltas: list[tf.Tensor], scale: float) -> list[tf.Tensor]:
    return [tf.cast(tf.cast(w, tf.float32) + scale * d, w.dtype) for w, d in zip(w0, deltas)]


def read(variable: Any) -> tf.Tensor:
    """The variable's current value as a tensor (Keras's `.value` is the variable)."""
    return tf.identity(variable.value)
