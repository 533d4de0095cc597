"""The labels of the sample batch: their format (class ids, one-hot, binary,
continuous) and class histogram (host side, numpy)."""

from __future__ import annotations

import numpy as np

from gradhealth_server.engine.measurements import LabelStats


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
