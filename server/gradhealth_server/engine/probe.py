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

It returns plain numpy arrays; `measurements` gives them names and meaning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from gradhealth_server.engine.structure import SATURATING, ModelStructure
from gradhealth_server.errors import InvalidBatch, LimitExceeded

log = logging.getLogger(__name__)

# A sigmoid/tanh output this close to its bounds passes back < ~2 % of the gradient.
SIGMOID_SATURATION = 0.01
TANH_SATURATION = 0.99

Batch = dict[str, np.ndarray]


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
    # None: try XLA and fall back when the model does not compile.
    jit_compile: bool | None = None


@dataclass
class ProbeResult:
    raw: dict[str, np.ndarray]
    xla: bool
    seconds: float
    micro_batch_rows: tuple[int, ...]


def batch_signature(x: Batch, y: np.ndarray) -> tuple:
    """Hashable shapes and dtypes: one compiled probe per signature."""
    return (
        tuple((k, v.shape, str(v.dtype)) for k, v in sorted(x.items())),
        (y.shape, str(y.dtype)),
    )


class Probe:
    """A compiled probe bound to one model object and one batch signature."""

    def __init__(
        self,
        model: keras.Model,
        structure: ModelStructure,
        x: Batch,
        y: np.ndarray,
        options: ProbeOptions | None = None,
    ) -> None:
        options = options or ProbeOptions()
        self.model = model
        self.structure = structure
        self.options = options
        self.trace_count = 0
        self.input_order = list(structure.facts.input_names)
        rows = int(y.shape[0])
        self.rows = rows
        self.splits = _micro_batches(rows, structure, options)
        self._taps = structure.taps if options.mode == "full" else ()
        self._first_inputs = structure.first_layer_inputs if options.mode == "full" else ()
        self._forward = self._build_forward(model)
        self._trainable = list(model.trainable_variables)
        self._non_trainable = list(model.non_trainable_variables)
        self._metric_vars = list(model.metrics_variables)
        self._optimizer_vars = (
            list(model.optimizer.variables) if model.optimizer is not None else []
        )
        specs_x = [tf.TensorSpec(x[name].shape, x[name].dtype) for name in self.input_order]
        spec_y = tf.TensorSpec(y.shape, y.dtype)
        self._signature = [specs_x, spec_y]
        self.xla = options.jit_compile is not False
        self._fn = self._compile(self.xla)
        self._trial_fn = None

    # -- public -----------------------------------------------------------
    def run(self, x: Batch, y: np.ndarray) -> ProbeResult:
        xs = [x[name] for name in self.input_order]
        start = time.perf_counter()
        try:
            out = self._fn(xs, y)
        except tf.errors.OpError as exc:
            if not self.xla or self.options.jit_compile is True:
                raise _batch_error(exc) from exc
            # Either XLA cannot compile this model or the batch is bad (e.g. an
            # out-of-range token id). The plain graph tells which; a failed XLA
            # launch ran nothing, so no variable has moved.
            plain = self._compile(False)
            try:
                out = plain(xs, y)
            except tf.errors.OpError as again:
                raise _batch_error(again) from again
            log.info(
                "XLA did not compile the probe (%s); running without XLA",
                str(exc).splitlines()[0][:200],
            )
            self.xla, self._fn = False, plain
        raw = {k: v.numpy() for k, v in out.items()}
        if "lr_probe_losses" in raw:
            raw["lr_scales"] = np.asarray(self.options.lr_scales, dtype=np.float64)
        return ProbeResult(raw, self.xla, time.perf_counter() - start, tuple(self.splits))

    # -- construction -----------------------------------------------------
    def _compile(self, xla: bool):
        return tf.function(
            self._probe, input_signature=self._signature, jit_compile=xla, reduce_retracing=False
        )

    def _build_forward(self, model: keras.Model):
        """A callable returning (tap tensors, first-layer inputs, y_pred)."""
        n_taps, n_first = len(self._taps), len(self._first_inputs)
        if n_taps + n_first == 0:
            return lambda xs, training: ([], [], model(_pack(xs), training=training))
        outputs = [t.tensor for t in self._taps] + [t.tensor for t in self._first_inputs]
        outputs += list(model.outputs)
        tap_model = keras.Model(inputs=model.inputs, outputs=outputs, name="gradhealth_taps")
        structure = getattr(model, "_outputs_struct", None)

        def forward(xs, training):
            out = tap_model(_pack(xs), training=training)
            taps, firsts = out[:n_taps], out[n_taps : n_taps + n_first]
            preds = out[n_taps + n_first :]
            if structure is not None and keras.tree.is_nested(structure):
                y_pred = keras.tree.pack_sequence_as(structure, preds)
            else:
                y_pred = preds[0] if len(preds) == 1 else preds
            return taps, firsts, y_pred

        return forward

    # -- the compiled body --------------------------------------------------
    def _probe(self, xs: list[tf.Tensor], y: tf.Tensor) -> dict[str, tf.Tensor]:
        self.trace_count += 1  # runs at trace time only: counts retraces
        full = self.options.mode == "full"
        # Snapshots: tensors read now, immune to the assignments that follow.
        w0 = [_read(v) for v in self._trainable]
        nt0 = [_read(v) for v in self._non_trainable]
        metrics0 = [_read(v) for v in self._metric_vars]
        weights = [n / self.rows for n in self.splits]

        micro_grads: list[list[tf.Tensor]] = []
        micro_sq: list[tf.Tensor] = []
        losses: list[tf.Tensor] = []
        taps_acc: list[dict[str, tf.Tensor]] = []
        first_acc: list[dict[str, tf.Tensor]] = []
        out_acc: dict[str, tf.Tensor] = {}
        preds: list[tf.Tensor] = []
        nt = nt0
        start = 0
        for i, rows in enumerate(self.splits):
            xi = [t[start : start + rows] for t in xs]
            yi = y[start : start + rows]
            start += rows
            with tf.GradientTape() as tape:
                tape.watch(w0)
                loss, taps, firsts, y_pred, nt = self._stateless_loss(w0, nt, metrics0, xi, yi)
            g = tape.gradient(loss, w0, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # Embedding gradients come as IndexedSlices: densify to add and reduce them.
            g = [tf.cast(tf.convert_to_tensor(gi), tf.float32) for gi in g]
            micro_grads.append(g)
            losses.append(tf.cast(loss, tf.float32))
            if not full:
                continue
            micro_sq.append(tf.add_n([tf.reduce_sum(tf.square(gi)) for gi in g]))
            stats = [_activation_stats(t, tap.activation) for t, tap in zip(taps, self._taps)]
            taps_acc = stats if i == 0 else [_merge(a, b) for a, b in zip(taps_acc, stats)]
            fstats = [_input_stats(t) for t in firsts]
            first_acc = fstats if i == 0 else [_merge(a, b) for a, b in zip(first_acc, fstats)]
            ostats, pred = _output_stats(y_pred, self.structure.facts)
            out_acc = ostats if i == 0 else _merge(out_acc, ostats)
            preds.append(pred)

        # Mean-reduced loss, micro-batches of n_i rows: G = sum_i (n_i / n) g_i.
        grads = [
            tf.add_n([w * g[j] for w, g in zip(weights, micro_grads)])
            if len(weights) > 1
            else micro_grads[0][j]
            for j in range(len(w0))
        ]
        result: dict[str, tf.Tensor] = {
            "loss": tf.add_n([w * loss for w, loss in zip(weights, losses)]),
            "grad_sq": tf.stack([tf.reduce_sum(tf.square(g)) for g in grads]),
        }
        if not full:
            return result
        result["micro_losses"] = tf.stack(losses)
        result["micro_grad_sq"] = tf.stack(micro_sq)
        result.update(_variable_stats(grads, w0))
        for j, st in enumerate(taps_acc):
            result.update({f"tap{j}/{k}": v for k, v in st.items()})
        for j, st in enumerate(first_acc):
            result.update({f"first{j}/{k}": v for k, v in st.items()})
        result.update({f"output/{k}": v for k, v in out_acc.items()})
        result["output/predicted"] = tf.concat(preds, axis=0)
        result.update(self._optimizer_step(grads, w0, nt0, metrics0, xs, y, losses[0]))
        return result

    def _stateless_loss(self, trainable, non_trainable, metric_values, xs, y):
        """Forward pass and loss exactly as `fit` computes them, mutating nothing.

        BatchNorm statistics, dropout seeds and loss trackers update inside the
        scope only; the model's variables keep their values.
        """
        mapping = list(zip(self._trainable, trainable))
        mapping += zip(self._non_trainable, non_trainable)
        mapping += zip(self._metric_vars, metric_values)
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            taps, firsts, y_pred = self._forward(xs, True)
            loss = self.model.compute_loss(x=_pack(xs), y=y, y_pred=y_pred, training=True)
        updated = [scope.get_current_value(v) for v in self._non_trainable]
        updated = [u if u is not None else old for u, old in zip(updated, non_trainable)]
        return loss, taps, firsts, y_pred, updated

    def _optimizer_step(self, grads, w0, nt0, metrics0, xs, y, base_loss):
        """The checkpoint optimizer's real next step, then the learning-rate probe."""
        if self.model.optimizer is None:
            return {}
        deltas = self._step_and_restore(grads, w0)
        step_sq = [tf.reduce_sum(tf.square(d)) for d in deltas]
        out = {
            "step_sq": tf.stack(step_sq),
            "step_nonfinite": tf.stack([_nonfinite_if(s, d) for s, d in zip(step_sq, deltas)]),
            "iterations": tf.cast(_read(self.model.optimizer.iterations), tf.int64),
        }
        # Loss on the first rows at w0 + s·Δw: the same rows and the same dropout
        # masks (same starting state) as the forward that gave base_loss. With one
        # micro-batch (batch-coupled models) that would be the whole batch, three
        # more forward passes over it: evaluate on probe_rows rows instead, with a
        # base loss of their own (four small forwards cost about one full one).
        rows = min(self.splits[0], max(self.options.probe_rows, self.options.min_micro_batch_rows))
        x0, y0 = [t[:rows] for t in xs], y[:rows]
        if rows < self.splits[0] and self.options.lr_scales:
            base_loss, *_ = self._stateless_loss(w0, nt0, metrics0, x0, y0)
            base_loss = tf.cast(base_loss, tf.float32)
        probe_losses = []
        for scale in self.options.lr_scales:
            loss, *_ = self._stateless_loss(_moved(w0, deltas, scale), nt0, metrics0, x0, y0)
            probe_losses.append(tf.cast(loss, tf.float32))
        if probe_losses:
            out["lr_probe_losses"] = tf.stack(probe_losses)
            out["lr_probe_base_loss"] = base_loss
        return out

    def _step_and_restore(self, grads, w0) -> list[tf.Tensor]:
        """Apply the optimizer to the real variables, return Δw, write everything back.

        Keras 3 has no stateless optimizer apply on TensorFlow, so the step is
        applied for real and every weight and optimizer variable (iterations
        included) is restored before the function returns.
        """
        optimizer = self.model.optimizer
        slots0 = [_read(v) for v in self._optimizer_vars]
        # apply() unscales gradients by the loss scale (LossScaleOptimizer, or
        # loss_scale_factor): hand it gradients of the loss as fit() scales it.
        scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        optimizer.apply(
            [tf.cast(g * scale, v.dtype) for g, v in zip(grads, self._trainable)],
            self._trainable,
        )
        deltas = [
            tf.cast(_read(v), tf.float32) - tf.cast(w, tf.float32)
            for v, w in zip(self._trainable, w0)
        ]
        for var, value in zip(self._trainable, w0):
            var.assign(value)
        for var, value in zip(self._optimizer_vars, slots0):
            var.assign(value)
        return deltas

    # -- remedy trials ------------------------------------------------------
    def step_trial(self, x: Batch, y: np.ndarray) -> tuple[float, float]:
        """Loss on this batch before and after one optimizer step taken on it.

        Run on the batch as sent and on a remedied copy (e.g. standardized), it
        measures whether the remedy helps. Compiled once per probe, on demand.
        """
        if self._trial_fn is None:
            self._trial_fn = tf.function(
                self._trial, input_signature=self._signature, jit_compile=False
            )
        try:
            out = self._trial_fn([x[name] for name in self.input_order], y)
        except tf.errors.OpError as exc:
            raise _batch_error(exc) from exc
        return float(out[0]), float(out[1])

    def _trial(self, xs, y):
        w0 = [_read(v) for v in self._trainable]
        nt0 = [_read(v) for v in self._non_trainable]
        metrics0 = [_read(v) for v in self._metric_vars]
        with tf.GradientTape() as tape:
            tape.watch(w0)
            before, *_ = self._stateless_loss(w0, nt0, metrics0, xs, y)
        grads = tape.gradient(before, w0, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [tf.cast(tf.convert_to_tensor(g), tf.float32) for g in grads]
        deltas = self._step_and_restore(grads, w0)
        after, *_ = self._stateless_loss(_moved(w0, deltas, 1.0), nt0, metrics0, xs, y)
        return tf.cast(before, tf.float32), tf.cast(after, tf.float32)


# -- helpers (trace-time) ------------------------------------------------------


def _micro_batches(rows: int, structure: ModelStructure, options: ProbeOptions) -> list[int]:
    """Row counts of the micro-batches: [probe rows, then the rest split evenly]."""
    k = options.micro_batches if options.mode == "full" else 1
    # Batch statistics couple the examples: micro-batches would change the gradient.
    # Only a mean-reduced loss averages exactly over micro-batches (a summed one
    # would count the regularization losses k times).
    if structure.facts.batch_coupled or structure.facts.loss_reduction not in (
        "sum_over_batch_size",
        None,
    ):
        k = 1
    k = max(1, min(k, rows // max(options.min_micro_batch_rows, 1)))
    if k == 1:
        return [rows]
    first = max(options.min_micro_batch_rows, min(options.probe_rows, rows // k))
    base, extra = divmod(rows - first, k - 1)
    return [first] + [base + (1 if i < extra else 0) for i in range(k - 1)]


# How TensorFlow words an allocation that failed: the BFC allocator's OOM, the
# CPU allocator under RLIMIT_AS, XLA's buffer assignment.
OUT_OF_MEMORY_SIGNS = (
    "oom",
    "out of memory",
    "failed to allocate",
    "bad_alloc",
    "resource exhausted",
)


def _batch_error(exc: tf.errors.OpError) -> Exception:
    """What a failed probe run means: out of memory (LimitExceeded, naming the
    memory cap), or a batch the model cannot take (InvalidBatch)."""
    text = (exc.message or str(exc)).lower()
    if isinstance(exc, tf.errors.ResourceExhaustedError) or any(
        sign in text for sign in OUT_OF_MEMORY_SIGNS
    ):
        lines = (exc.message or str(exc)).strip().splitlines() or [""]
        said = [line for line in lines if any(sign in line.lower() for sign in OUT_OF_MEMORY_SIGNS)]
        first = " ".join((said or lines)[0].split())[:200]
        return LimitExceeded(
            "the probe ran out of memory in this worker (--worker-memory-mb, or the "
            f"device's): send fewer rows, or a smaller model ({first})"
        )
    return InvalidBatch(_op_error(exc))


def _op_error(exc: tf.errors.OpError) -> str:
    first = (exc.message or str(exc)).strip().splitlines()[0][:300]
    return f"the batch does not run through the model: {first}"


def _moved(w0: list[tf.Tensor], deltas: list[tf.Tensor], scale: float) -> list[tf.Tensor]:
    return [tf.cast(tf.cast(w, tf.float32) + scale * d, w.dtype) for w, d in zip(w0, deltas)]


def _read(variable: Any) -> tf.Tensor:
    """The variable's current value as a tensor (Keras's `.value` is the variable)."""
    return tf.identity(variable.value)


def _pack(xs: list[Any]) -> Any:
    return xs[0] if len(xs) == 1 else list(xs)


def _nonfinite(t: tf.Tensor) -> tf.Tensor:
    if not t.dtype.is_floating:
        return tf.constant(0.0)
    return tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(t)), tf.float32))


def _nonfinite_if(total: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """Count NaN/Inf in t only when its (finite-if-clean) sum says there are any.

    Saves a pass over every parameter on healthy models.
    """
    return tf.cond(tf.math.is_finite(total), lambda: tf.constant(0.0), lambda: _nonfinite(t))


def _variable_stats(grads: list[tf.Tensor], weights: list[tf.Tensor]) -> dict[str, tf.Tensor]:
    grad_sq = [tf.reduce_sum(tf.square(g)) for g in grads]
    weight_sq = [tf.reduce_sum(tf.square(tf.cast(w, tf.float32))) for w in weights]
    return {
        "weight_sq": tf.stack(weight_sq),
        "grad_abs_sum": tf.stack([tf.reduce_sum(tf.abs(g)) for g in grads]),
        "grad_zero": tf.stack(
            [tf.reduce_sum(tf.cast(tf.equal(g, 0.0), tf.float32)) for g in grads]
        ),
        "grad_nonfinite": tf.stack([_nonfinite_if(s, g) for s, g in zip(grad_sq, grads)]),
        "weight_nonfinite": tf.stack(
            [_nonfinite_if(s, tf.cast(w, tf.float32)) for s, w in zip(weight_sq, weights)]
        ),
    }


def _activation_stats(t: tf.Tensor, activation: str) -> dict[str, tf.Tensor]:
    t = tf.cast(t, tf.float32)
    axes = list(range(t.shape.rank - 1)) if t.shape.rank and t.shape.rank > 1 else None
    stats = {
        "sum": tf.reduce_sum(t),
        "sum_sq": tf.reduce_sum(tf.square(t)),
        "count": tf.cast(tf.size(t), tf.float32),
        "nonfinite": _nonfinite(t),
        # Per unit (last axis): did it ever fire / leave the flat region?
        "unit_max": tf.reduce_max(t, axis=axes),
    }
    if activation in SATURATING:
        if activation == "tanh":
            sat = tf.abs(t) > TANH_SATURATION
        else:
            sat = tf.logical_or(t < SIGMOID_SATURATION, t > 1.0 - SIGMOID_SATURATION)
        satf = tf.cast(sat, tf.float32)
        stats["saturated"] = tf.reduce_sum(satf)
        stats["unit_all_saturated"] = tf.reduce_min(satf, axis=axes)
    return stats


def _input_stats(t: tf.Tensor) -> dict[str, tf.Tensor]:
    t = tf.cast(t, tf.float32)
    axes = list(range(t.shape.rank - 1)) if t.shape.rank and t.shape.rank > 1 else None
    return {
        "sum": tf.reduce_sum(t),
        "sum_sq": tf.reduce_sum(tf.square(t)),
        "count": tf.cast(tf.size(t), tf.float32),
        "min": tf.reduce_min(t),
        "max": tf.reduce_max(t),
        "nonfinite": _nonfinite(t),
        "feature_sum": tf.reduce_sum(t, axis=axes),
        "feature_sum_sq": tf.reduce_sum(tf.square(t), axis=axes),
        "feature_count": tf.cast(tf.size(t) // tf.maximum(tf.shape(t)[-1], 1), tf.float32),
    }


_MERGE_MAX = {"unit_max", "max"}
_MERGE_MIN = {"unit_all_saturated", "min", "row_sum_min"}


def _merge(a: dict[str, tf.Tensor], b: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Combine per-micro-batch statistics into whole-batch statistics."""
    out = {}
    for k in a:
        if k in _MERGE_MAX or k == "row_sum_max":
            out[k] = tf.maximum(a[k], b[k])
        elif k in _MERGE_MIN:
            out[k] = tf.minimum(a[k], b[k])
        else:
            out[k] = a[k] + b[k]
    return out


def _output_stats(y_pred: Any, facts) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """Predicted classes, entropy and row sums of the first output."""
    if isinstance(y_pred, Mapping):
        y_pred = next(iter(y_pred.values()))
    elif isinstance(y_pred, (list, tuple)):
        y_pred = y_pred[0]
    p = tf.cast(y_pred, tf.float32)
    units = p.shape[-1] if p.shape.rank else 1
    stats: dict[str, tf.Tensor] = {"nonfinite": _nonfinite(p)}
    if p.shape.rank and p.shape.rank > 1 and units and units > 1:
        flat = tf.reshape(p, [-1, units])
        rows = tf.reduce_sum(flat, axis=-1)
        stats["row_sum_total"] = tf.reduce_sum(rows)
        stats["row_sum_min"] = tf.reduce_min(rows)
        stats["row_sum_max"] = tf.reduce_max(rows)
        stats["rows"] = tf.cast(tf.shape(flat)[0], tf.float32)
        probs = tf.nn.softmax(flat) if facts.from_logits else tf.clip_by_value(flat, 1e-12, 1.0)
        if not facts.from_logits:
            probs = probs / tf.reduce_sum(probs, axis=-1, keepdims=True)
        stats["entropy_total"] = -tf.reduce_sum(probs * tf.math.log(probs))
        pred = tf.cast(tf.argmax(flat, axis=-1), tf.int32)
    else:
        flat = tf.reshape(p, [-1])
        threshold = 0.0 if facts.from_logits else 0.5
        stats["rows"] = tf.cast(tf.shape(flat)[0], tf.float32)
        pred = tf.cast(flat > threshold, tf.int32)
    return stats, pred
