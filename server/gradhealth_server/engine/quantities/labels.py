"""The labels of the sample batch: their format (class ids, one-hot, multi-hot,
binary, continuous) and class histogram (host side, numpy). `sent`: the labels as the job
sent them, when the loss reads them otherwise (fractional sparse ids, truncated)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gradhealth_server.engine.facts import OutputFacts
from gradhealth_server.engine.measurements import LabelStats

# Scales that turn fractional labels back into whole numbers: ids divided like pixels
# (255), percentages (100), tenths (10).
ID_SCALES = (255, 100, 10)


def other_outputs(
    outputs: tuple[OutputFacts, ...], ys: list[np.ndarray], sent: list[np.ndarray]
) -> dict[str, LabelStats]:
    """The labels of each output after the first, read as its own loss reads them."""
    out: dict[str, LabelStats] = {}
    for output, y, y_sent in zip(outputs, ys, sent, strict=False):
        stats = label_stats(y, output.problem, y_sent)
        if stats is not None:
            out[output.name] = stats
    return out


def label_stats(y: np.ndarray, problem: str, sent: np.ndarray | None = None) -> LabelStats | None:
    stats = _stats(np.asarray(y))
    if stats is None or sent is None:
        return stats
    s = np.asarray(sent).astype(np.float64, copy=False)
    if s.shape != np.shape(y) or s.size == 0 or np.array_equal(s, np.asarray(y)):
        return stats
    finite = s[np.isfinite(s)]
    fractional = bool(np.any(np.mod(finite, 1) != 0))
    scale = next(
        (
            k
            for k in ID_SCALES
            if fractional and np.allclose(finite * k, np.rint(finite * k), atol=1e-3)
        ),
        None,
    )
    return replace(
        stats,
        sent_min=float(finite.min()) if finite.size else None,
        sent_max=float(finite.max()) if finite.size else None,
        sent_fractional=fractional,
        sent_scale=scale,
    )


def _stats(y: np.ndarray) -> LabelStats | None:
    if y.size == 0:
        return None
    stats = _format(y)
    f = y.astype(np.float64, copy=False).reshape(len(y), -1)
    if not np.all(np.isfinite(f)):
        return stats
    return replace(stats, mean=float(f.mean()), variance=float(f.var(axis=0).mean()))


def _format(y: np.ndarray) -> LabelStats:
    f = y.astype(np.float64, copy=False)
    lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
    integer = bool(np.all(np.isfinite(f))) and bool(np.all(np.mod(f, 1) == 0))
    single = y.ndim == 1 or y.shape[-1] == 1
    distinct = int(np.unique(f).size) if single else None
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
    if y.ndim >= 2 and y.shape[-1] > 1 and integer and lo >= 0 and hi <= 1:
        # several 1s in a row: multi-label targets, one sigmoid per label
        positives = f.reshape(-1, y.shape[-1]).sum(axis=0).astype(np.int64)
        return LabelStats("multi_hot", int(y.shape[-1]), positives.tolist(), lo, hi)
    if integer and lo >= 0 and single:
        ids = f.reshape(-1).astype(np.int64)
        if hi > 100_000:
            return LabelStats("continuous", None, None, lo, hi, distinct)
        hist = np.bincount(ids)
        fmt = "binary" if hi <= 1 else "class_ids"
        return LabelStats(fmt, int(hist.size), hist.tolist(), lo, hi, distinct)
    return LabelStats("continuous", None, None, lo, hi, distinct)
