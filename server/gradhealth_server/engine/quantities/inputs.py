"""The raw batch as sent: the scale of each input (host side, numpy), and the
names of scales the rules and the input trial reason about."""

from __future__ import annotations

import math

import numpy as np

from gradhealth_server.engine.measurements import TensorStats
from gradhealth_server.engine.quantities.base import varying_min

# Beyond this standard deviation or mean magnitude a tensor is off unit scale.
OFF_SCALE_STD = 3.0
OFF_SCALE_MEAN = 3.0
BYTE_MIN_MAX = 100.0


def range_class(lo: float, hi: float, mean: float, std: float) -> str:
    """Name the scale of an input: what `x / 255.0` or standardization would fix."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "non_finite"
    if lo >= 0 and hi <= 1.0 + 1e-6:
        return "unit"
    if lo >= -1.0 - 1e-6 and hi <= 1.0 + 1e-6:
        return "symmetric_unit"
    # 8-bit pixels: a batch of images reaches well past 100 (counts and small
    # integer features in [0, 30] are not pixels: standardize those)
    if lo >= 0 and BYTE_MIN_MAX < hi <= 255.0 + 1e-3:
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
        stats.feature_std_min = varying_min(fstd)
        stats.feature_std_max = float(fstd.max())
        stats.feature_mean_abs_max = float(np.abs(flat.mean(axis=0)).max())
    return stats


def one_distinct_row(x: dict[str, np.ndarray]) -> bool:
    """Is every row of the batch (all inputs together) the same? Such a batch cannot
    show dead or saturated units, or a collapse: every row gives the same answer."""
    arrays = [np.asarray(a) for a in x.values()]
    if not arrays or arrays[0].shape[0] < 2:
        return False
    return all(bool((a == a[:1]).all()) for a in arrays)
