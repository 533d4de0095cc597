"""Measurements: the probe's raw numbers with names and meaning.

Plain dataclasses of floats, ints and lists: the rules read these, the store
keeps their summary, the wire carries them as JSON. No TensorFlow type appears
here, so the rules can be tested with hand-written numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the rules (and the server process) import this module: no TensorFlow
    from gradhealth_server.engine.probe import ProbeResult
    from gradhealth_server.engine.structure import ModelStructure

# A ReLU-family unit is dead on the batch when it never outputs more than this.
DEAD_UNIT_MAX = 0.0


@dataclass
class LayerMeasurement:
    """Gradient, weight and optimizer-step numbers of one weight layer."""

    name: str
    class_name: str
    activation: str | None
    parameters: int
    grad_norm: float
    weight_norm: float | None  # None in norms-only mode
    grad_to_weight: float | None
    mean_abs_grad: float
    zero_grad_fraction: float
    grad_nonfinite: int
    weight_nonfinite: int
    update_norm: float | None = None
    update_ratio: float | None = None  # ‖Δw‖/‖w‖ of the optimizer's own step


@dataclass
class ActivationMeasurement:
    """What one layer's output looked like on the batch."""

    layer: str
    activation: str
    units: int
    mean: float
    std: float
    nonfinite: int
    dead_fraction: float | None = None  # ReLU family: units that never fired
    saturated_fraction: float | None = None  # sigmoid/tanh: values in the flat region
    saturated_units_fraction: float | None = None  # units flat on every example
    is_output: bool = False


@dataclass
class TensorStats:
    """Scale of a tensor: the raw input, or what the first weight layer sees."""

    name: str
    mean: float
    std: float
    min: float
    max: float
    range_class: str
    dtype: str | None = None
    shape: list[int] | None = None
    integer_valued: bool | None = None
    feature_std_min: float | None = None
    feature_std_max: float | None = None
    feature_mean_abs_max: float | None = None
    nonfinite: int = 0


@dataclass
class LabelStats:
    format: str  # class_ids | one_hot | binary | continuous
    classes: int | None
    histogram: list[int] | None
    min: float
    max: float


@dataclass
class OutputStats:
    predicted_histogram: list[int] | None
    majority_fraction: float | None  # share of examples given the most common class
    mean_entropy: float | None  # nats per example
    row_sum_mean: float | None
    row_sum_min: float | None
    row_sum_max: float | None
    nonfinite: int


@dataclass
class OptimizerStep:
    """The checkpoint optimizer's own next step and the learning-rate probe."""

    name: str | None
    learning_rate: float | None
    update_ratio: float | None  # global ‖Δw‖/‖w‖
    update_norm: float | None
    base_loss: float | None  # loss on the probe rows before the step
    lr_scales: list[float] = field(default_factory=list)
    lr_losses: list[float] = field(default_factory=list)  # loss at w + s·Δw
    iterations: int | None = None  # steps the run has taken (the optimizer's counter)


@dataclass
class StepTrial:
    """A remedy tested in the engine: one optimizer step with and without it."""

    change: str  # the code change tried, e.g. "x = x / 255.0"
    loss_before: float  # remedied batch, before the step
    loss_after: float  # remedied batch, after one step
    baseline_before: float  # batch as sent
    baseline_after: float

    @property
    def relative_drop(self) -> float:
        return (self.loss_before - self.loss_after) / max(abs(self.loss_before), 1e-12)

    @property
    def baseline_relative_drop(self) -> float:
        return (self.baseline_before - self.baseline_after) / max(abs(self.baseline_before), 1e-12)


@dataclass
class NonFinite:
    loss: bool
    gradients: int
    weights: int
    activations: int
    outputs: int
    inputs: int
    first_layer: str | None  # first layer (input to output) where values stop being finite


@dataclass
class Measurements:
    """Everything one probe run measured about a model on a batch."""

    loss: float
    accuracy: float | None
    rows: int
    mode: str
    xla: bool
    probe_seconds: float
    grad_norm: float
    weight_norm: float | None
    micro_batch_rows: list[int]
    noise_scale: float | None  # B_simple (McCandlish et al. 2018), in examples
    nonfinite: NonFinite
    layers: list[LayerMeasurement]
    activations: list[ActivationMeasurement]
    inputs: list[TensorStats]
    first_layer_inputs: list[TensorStats]
    labels: LabelStats | None
    output: OutputStats | None
    optimizer: OptimizerStep | None
    static: dict[str, Any]
    unavailable: list[str]
    trials: dict[str, StepTrial] = field(default_factory=dict)
    # Per weight layer, a digest of its trainable weights: the run history compares
    # consecutive checkpoints with it (unchanged_weights).
    weight_digests: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return finite_json(asdict(self))


def build_measurements(
    result: ProbeResult,
    structure: ModelStructure,
    x: dict[str, np.ndarray],
    y: np.ndarray,
    mode: str,
) -> Measurements:
    """Name the probe's raw arrays and add the host-side statistics."""
    raw = result.raw
    facts = structure.facts
    full = mode == "full"
    grad_sq = raw["grad_sq"].astype(np.float64)
    # Norms-only mode measures gradients and nothing else.
    weight_sq = raw["weight_sq"].astype(np.float64) if "weight_sq" in raw else None
    step_sq = raw.get("step_sq")
    unavailable = list(facts.unavailable)
    layers = _layers(structure, raw, full)
    activations = _activations(structure, raw) if full else []
    inputs = [tensor_stats(name, arr) for name, arr in x.items()]
    firsts = _first_layer_inputs(structure, raw) if full else []
    labels = label_stats(y, facts.problem)
    output = _output(raw, facts.problem) if full else None
    accuracy = _accuracy(raw, y, facts.problem) if full else None
    optimizer = _optimizer(raw, facts, weight_sq, step_sq) if full else None
    noise = _noise_scale(raw, result.micro_batch_rows) if full else None
    if full and noise is None:
        unavailable.append("noise_scale")
    if not full:
        unavailable += [
            "weights",
            "activations",
            "first_layer_input",
            "optimizer_step",
            "lr_probe",
            "output",
            "accuracy",
            "noise_scale",
        ]
    nonfinite = NonFinite(
        loss=not math.isfinite(float(raw["loss"])),
        gradients=int(raw.get("grad_nonfinite", np.zeros(1)).sum())
        if full
        else int((~np.isfinite(grad_sq)).sum()),
        weights=int(raw.get("weight_nonfinite", np.zeros(1)).sum()) if full else 0,
        activations=sum(a.nonfinite for a in activations),
        outputs=output.nonfinite if output else 0,
        inputs=sum(i.nonfinite for i in inputs),
        first_layer=_first_nonfinite_layer(layers, activations),
    )
    return Measurements(
        loss=float(raw["loss"]),
        accuracy=accuracy,
        rows=int(y.shape[0]),
        mode=mode,
        xla=result.xla,
        probe_seconds=result.seconds,
        grad_norm=float(np.sqrt(grad_sq.sum())),
        weight_norm=float(np.sqrt(weight_sq.sum())) if weight_sq is not None else None,
        micro_batch_rows=list(result.micro_batch_rows),
        noise_scale=noise,
        nonfinite=nonfinite,
        layers=layers,
        activations=activations,
        inputs=inputs,
        first_layer_inputs=firsts,
        labels=labels,
        output=output,
        optimizer=optimizer,
        static=facts.to_dict(),
        unavailable=sorted(set(unavailable)),
    )


# -- per layer -----------------------------------------------------------------


def _layers(structure: ModelStructure, raw: dict[str, np.ndarray], full: bool):
    grad_sq, weight_sq = raw["grad_sq"], raw.get("weight_sq")
    out = []
    for info in structure.layers:
        idx = list(info.variable_indices)
        g = float(np.sqrt(grad_sq[idx].astype(np.float64).sum()))
        w = float(np.sqrt(weight_sq[idx].astype(np.float64).sum())) if full else None
        params = int(sum(structure.variable_sizes[i] for i in idx))
        layer = LayerMeasurement(
            name=info.name,
            class_name=info.class_name,
            activation=info.activation,
            parameters=params,
            grad_norm=g,
            weight_norm=w,
            grad_to_weight=g / w if w else None,
            mean_abs_grad=float(raw["grad_abs_sum"][idx].sum()) / max(params, 1) if full else 0.0,
            zero_grad_fraction=float(raw["grad_zero"][idx].sum()) / max(params, 1) if full else 0.0,
            grad_nonfinite=int(raw["grad_nonfinite"][idx].sum()) if full else 0,
            weight_nonfinite=int(raw["weight_nonfinite"][idx].sum()) if full else 0,
        )
        if full and "step_sq" in raw:
            u = float(np.sqrt(raw["step_sq"][idx].astype(np.float64).sum()))
            layer.update_norm = u
            layer.update_ratio = u / w if w else None
        out.append(layer)
    return out


def _activations(structure: ModelStructure, raw: dict[str, np.ndarray]):
    from gradhealth_server.engine.structure import CAN_DIE, SATURATING

    out = []
    for j, tap in enumerate(structure.taps):
        key = f"tap{j}/"
        count = float(raw[key + "count"])
        mean, std = _mean_std(raw, key)
        unit_max = raw[key + "unit_max"]
        units = int(unit_max.size)
        m = ActivationMeasurement(
            layer=tap.layer,
            activation=tap.activation,
            units=units,
            mean=mean,
            std=std,
            nonfinite=int(raw[key + "nonfinite"]),
            is_output=tap.is_output,
        )
        if tap.activation in CAN_DIE:
            m.dead_fraction = float((unit_max <= DEAD_UNIT_MAX).sum()) / max(units, 1)
        if tap.activation in SATURATING:
            m.saturated_fraction = float(raw[key + "saturated"]) / max(count, 1.0)
            m.saturated_units_fraction = float(raw[key + "unit_all_saturated"].sum()) / max(
                units, 1
            )
        out.append(m)
    return out


def _first_layer_inputs(structure: ModelStructure, raw: dict[str, np.ndarray]):
    out = []
    for j, tap in enumerate(structure.first_layer_inputs):
        key = f"first{j}/"
        mean, std = _mean_std(raw, key)
        fcount = max(float(raw[key + "feature_count"]), 1.0)
        fmean = raw[key + "feature_sum"].astype(np.float64) / fcount
        fvar = np.maximum(raw[key + "feature_sum_sq"].astype(np.float64) / fcount - fmean**2, 0)
        fstd = np.sqrt(fvar)
        lo, hi = float(raw[key + "min"]), float(raw[key + "max"])
        out.append(
            TensorStats(
                name=tap.layer,
                mean=mean,
                std=std,
                min=lo,
                max=hi,
                range_class=range_class(lo, hi, mean, std),
                feature_std_min=_varying_min(fstd),
                feature_std_max=float(fstd.max()) if fstd.size else None,
                feature_mean_abs_max=float(np.abs(fmean).max()) if fmean.size else None,
                nonfinite=int(raw[key + "nonfinite"]),
            )
        )
    return out


def _mean_std(raw: dict[str, np.ndarray], key: str) -> tuple[float, float]:
    """Mean and standard deviation from the probe's running sums."""
    count = max(float(raw[key + "count"]), 1.0)
    mean = float(raw[key + "sum"]) / count
    return mean, math.sqrt(max(float(raw[key + "sum_sq"]) / count - mean * mean, 0.0))


def _varying_min(feature_std: np.ndarray) -> float | None:
    """Smallest spread among features that vary (constant ones, e.g. border pixels, skip)."""
    varying = feature_std[feature_std > 1e-12]
    return float(varying.min()) if varying.size else None


def _first_nonfinite_layer(
    layers: list[LayerMeasurement], activations: list[ActivationMeasurement]
) -> str | None:
    act = {a.layer: a.nonfinite for a in activations}
    for layer in layers:
        if layer.weight_nonfinite or layer.grad_nonfinite or act.get(layer.name, 0):
            return layer.name
        norms = (layer.grad_norm, layer.weight_norm)
        if any(n is not None and not math.isfinite(n) for n in norms):
            return layer.name
    for a in activations:
        if a.nonfinite:
            return a.layer
    return None


# -- host-side statistics ----------------------------------------------------------


# Beyond this standard deviation or mean magnitude a tensor is off unit scale.
OFF_SCALE_STD = 3.0
OFF_SCALE_MEAN = 3.0


def range_class(lo: float, hi: float, mean: float, std: float) -> str:
    """Name the scale of an input: what `x / 255.0` or standardization would fix."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "non_finite"
    if lo >= 0 and hi <= 1.0 + 1e-6:
        return "unit"
    if lo >= -1.0 - 1e-6 and hi <= 1.0 + 1e-6:
        return "symmetric_unit"
    if lo >= 0 and 20.0 < hi <= 255.0 + 1e-3:
        return "byte"
    if std > OFF_SCALE_STD or abs(mean) > OFF_SCALE_MEAN:
        return "wide"
    return "standardized"


def tensor_stats(name: str, arr: np.ndarray) -> TensorStats:
    a = np.asarray(arr)
    f = a.astype(np.float64, copy=False)
    finite = np.isfinite(f)
    vals = f[finite] if not finite.all() else f
    if vals.size == 0:
        vals = np.zeros(1)
    integer_valued = bool(np.issubdtype(a.dtype, np.integer)) or bool(
        np.all(np.equal(np.mod(vals, 1), 0))
    )
    lo, hi, mean, std = float(vals.min()), float(vals.max()), float(vals.mean()), float(vals.std())
    stats = TensorStats(
        name=name,
        mean=mean,
        std=std,
        min=lo,
        max=hi,
        range_class=range_class(lo, hi, mean, std),
        dtype=str(a.dtype),
        shape=list(a.shape),
        integer_valued=integer_valued,
        nonfinite=int((~finite).sum()),
    )
    if a.ndim >= 2 and a.shape[0] > 1:
        flat = f.reshape(-1, a.shape[-1])
        fstd = flat.std(axis=0)
        stats.feature_std_min = _varying_min(fstd)
        stats.feature_std_max = float(fstd.max())
        stats.feature_mean_abs_max = float(np.abs(flat.mean(axis=0)).max())
    return stats


def label_stats(y: np.ndarray, problem: str) -> LabelStats | None:
    y = np.asarray(y)
    if y.size == 0:
        return None
    f = y.astype(np.float64, copy=False)
    lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
    integer = bool(np.all(np.isfinite(f))) and bool(np.all(np.mod(f, 1) == 0))
    if (
        y.ndim >= 2
        and y.shape[-1] > 1
        and lo >= 0
        and hi <= 1
        and np.allclose(f.sum(axis=-1), 1.0, atol=1e-3)
    ):
        ids = f.reshape(-1, y.shape[-1]).argmax(axis=-1)
        hist = np.bincount(ids, minlength=y.shape[-1])
        return LabelStats("one_hot", int(y.shape[-1]), hist.tolist(), lo, hi)
    if integer and lo >= 0 and (y.ndim == 1 or y.shape[-1] == 1):
        ids = f.reshape(-1).astype(np.int64)
        if hi > 100_000:
            return LabelStats("continuous", None, None, lo, hi)
        hist = np.bincount(ids)
        fmt = "binary" if hi <= 1 else "class_ids"
        return LabelStats(fmt, int(hist.size), hist.tolist(), lo, hi)
    return LabelStats("continuous", None, None, lo, hi)


def _output(raw: dict[str, np.ndarray], problem: str) -> OutputStats:
    nonfinite = int(raw.get("output/nonfinite", 0))
    if problem == "regression" or "output/predicted" not in raw:
        return OutputStats(None, None, None, None, None, None, nonfinite)
    pred = raw["output/predicted"].reshape(-1)
    hist = np.bincount(pred) if pred.size else np.zeros(0, dtype=int)
    rows = float(raw.get("output/rows", pred.size)) or 1.0
    entropy = raw.get("output/entropy_total")
    row_total = raw.get("output/row_sum_total")
    return OutputStats(
        predicted_histogram=hist.tolist(),
        majority_fraction=float(hist.max()) / max(pred.size, 1) if hist.size else None,
        mean_entropy=float(entropy) / rows if entropy is not None else None,
        row_sum_mean=float(row_total) / rows if row_total is not None else None,
        row_sum_min=float(raw["output/row_sum_min"]) if "output/row_sum_min" in raw else None,
        row_sum_max=float(raw["output/row_sum_max"]) if "output/row_sum_max" in raw else None,
        nonfinite=nonfinite,
    )


def _accuracy(raw: dict[str, np.ndarray], y: np.ndarray, problem: str) -> float | None:
    if problem in ("regression", "unknown") or "output/predicted" not in raw:
        return None
    pred = raw["output/predicted"].reshape(-1)
    y = np.asarray(y)
    if problem == "categorical" or (y.ndim >= 2 and y.shape[-1] > 1 and problem != "binary"):
        truth = y.reshape(-1, y.shape[-1]).argmax(axis=-1)
    elif problem == "binary":
        yf = y.astype(np.float64).reshape(-1)
        truth = (yf > (0.0 if yf.min() < 0 else 0.5)).astype(np.int64)
    else:
        truth = y.reshape(-1).astype(np.int64)
    if truth.size != pred.size:
        return None
    return float(np.mean(truth == pred))


def _optimizer(raw, facts, weight_sq: np.ndarray, step_sq: np.ndarray | None):
    if step_sq is None:
        return OptimizerStep(facts.optimizer, facts.learning_rate, None, None, None)
    u = float(np.sqrt(step_sq.astype(np.float64).sum()))
    w = float(np.sqrt(weight_sq.astype(np.float64).sum()))
    scales = list(raw.get("lr_scales", []))
    return OptimizerStep(
        name=facts.optimizer,
        learning_rate=facts.learning_rate,
        update_ratio=u / w if w > 0 else None,
        update_norm=u,
        base_loss=float(raw["lr_probe_base_loss"]) if "lr_probe_base_loss" in raw else None,
        lr_scales=[float(s) for s in scales],
        lr_losses=[float(v) for v in raw.get("lr_probe_losses", [])],
        iterations=int(raw["iterations"]) if "iterations" in raw else None,
    )


def _noise_scale(raw: dict[str, np.ndarray], rows: tuple[int, ...]) -> float | None:
    """B_simple = tr(Σ)/|G|² from micro-batch and full-batch gradient norms.

    McCandlish et al. (2018), appendix A: E|g_b|² = |G|² + tr(Σ)/b for a batch of
    b rows. Each micro-batch i against the whole batch B gives an unbiased
    tr(Σ) = (|g_i|² - |g_B|²) / (1/n_i - 1/B); their mean is used, and
    |G|² = |g_B|² - tr(Σ)/B.
    """
    if len(rows) < 2 or "micro_grad_sq" not in raw:
        return None
    big = float(sum(rows))
    big_sq = float(raw["grad_sq"].astype(np.float64).sum())
    traces = [
        (float(sq) - big_sq) / (1.0 / n - 1.0 / big)
        for sq, n in zip(raw["micro_grad_sq"], rows, strict=True)
    ]
    trace = float(np.mean(traces))
    g2 = big_sq - trace / big
    if not (math.isfinite(g2) and math.isfinite(trace)) or g2 <= 0 or trace < 0:
        return None
    return trace / g2


def finite_json(value: Any) -> Any:
    """NaN and infinities become strings so the JSON stays standard."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.generic):
        return finite_json(value.item())
    return value
