"""The data sets of the corpus: scikit-learn's bundled sets and seeded synthetic ones.

Nothing is downloaded. Every loader returns features in a fixed shuffled order (so the
first rows are a fair sample batch), the labels as a task needs them, and the clean
class ids (for the one-class check) when the task is a classification.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from sklearn import datasets

SEED = 0


@dataclass(frozen=True)
class Data:
    x: np.ndarray | dict[str, np.ndarray]
    y: np.ndarray  # labels as the loss takes them
    task: str  # multiclass | binary | multilabel | regression
    classes: np.ndarray | None  # clean class ids (multiclass/binary), else None


@functools.cache
def shuffled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A scikit-learn set's features (float32) and labels in a fixed shuffled order,
    so the first rows are a fair sample. The scenario suite loads its data here too."""
    loader = {
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
        "diabetes": datasets.load_diabetes,
    }[name]
    x, y = loader(return_X_y=True)
    order = np.random.default_rng(SEED).permutation(len(x))
    return x[order].astype("float32"), y[order]


def standardize(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean(0)) / np.maximum(x.std(0), 1e-6)).astype("float32")


def digits(view: str = "flat", scale: float = 1 / 16) -> Data:
    """Digits pixels (0-16) times `scale`; views: flat (64), image (8x8x1), seq (8 steps x 8),
    long_seq (64 steps x 1), tokens (64 ids in 0..16)."""
    x, y = shuffled("digits")
    y = y.astype("int32")
    if view == "tokens":
        return Data(x.astype("int32"), y, "multiclass", y)
    x = (x * scale).astype("float32")
    shaped = {
        "flat": lambda a: a,
        "image": lambda a: a.reshape(-1, 8, 8, 1),
        "seq": lambda a: a.reshape(-1, 8, 8),
        "long_seq": lambda a: a.reshape(-1, 64, 1),
    }[view](x)
    return Data(shaped, y, "multiclass", y)


def digits_padded_seq(pad: int) -> Data:
    """The 8 pixel rows as 8 time steps, then `pad` blank steps: the label sits far back."""
    d = digits("seq")
    x = np.concatenate([d.x, np.zeros((len(d.x), pad, 8), "float32")], axis=1)
    return Data(x, d.y, "multiclass", d.classes)


def digits_binary() -> Data:
    """Digits, binary: is the digit even."""
    x, y = shuffled("digits")
    yb = (y % 2 == 0).astype("int32")
    return Data((x / 16).astype("float32"), yb.astype("float32"), "binary", yb)


def digits_multilabel() -> Data:
    """Digits with four multi-hot attributes: even, >= 5, prime, has a closed loop."""
    x, y = shuffled("digits")
    y = y.astype(int)
    attrs = np.stack(
        [y % 2 == 0, y >= 5, np.isin(y, [2, 3, 5, 7]), np.isin(y, [0, 6, 8, 9])], axis=1
    )
    return Data((x / 16).astype("float32"), attrs.astype("float32"), "multilabel", None)


def digits_dict(scale: float = 1 / 16) -> Data:
    """Two named inputs: the 8x8 image and 16 row/column sums."""
    x, y = shuffled("digits")
    x = (x * scale).astype("float32")
    img = x.reshape(-1, 8, 8, 1)
    stats = np.concatenate([img.sum(2)[..., 0], img.sum(1)[..., 0]], axis=1) / 8
    y = y.astype("int32")
    return Data({"pixels": img, "stats": stats.astype("float32")}, y, "multiclass", y)


def tabular(name: str, raw: bool = False) -> Data:
    """wine / iris (multi-class), breast_cancer (binary); standardized unless raw."""
    x, y = shuffled(name)
    x = x if raw else standardize(x)
    y = y.astype("int32")
    if name == "breast_cancer":
        return Data(x, y.astype("float32"), "binary", y)
    return Data(x, y, "multiclass", y)


def tabular_dict(raw: bool = False) -> Data:
    """breast_cancer as two named inputs: the 10 mean features and the 20 others."""
    d = tabular("breast_cancer", raw)
    return Data({"means": d.x[:, :10], "extremes": d.x[:, 10:]}, d.y, "binary", d.classes)


def diabetes(raw_target: bool = False, raw_x: bool = False) -> Data:
    """Diabetes regression; the target is in [25, 346] when raw, standardized otherwise."""
    x, y = shuffled("diabetes")
    x = x if raw_x else standardize(x)
    y = y.astype("float32")
    y = y if raw_target else standardize(y[:, None])[:, 0]
    return Data(x, y, "regression", None)


def linnerud(raw_target: bool = False) -> Data:
    """Linnerud exercise -> physiology (20 rows, three targets), repeated with jitter to 400."""
    x, y = datasets.load_linnerud(return_X_y=True)
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, len(x), 400)
    x = standardize(x[idx] + rng.normal(0, 0.5, (400, 3)))
    y = y[idx].astype("float32")
    return Data(x, y if raw_target else standardize(y), "regression", None)


@functools.cache
def counts(n_classes: int = 2) -> Data:
    """Count features in [0, 30] (Poisson), classes set by which counts are high: these need
    no standardizing."""
    rng = np.random.default_rng(SEED + 1)
    n, f = 1200, 12
    cls = rng.integers(0, n_classes, n)
    rates = rng.uniform(3, 12, (n_classes, f))
    x = np.minimum(rng.poisson(rates[cls]), 30).astype("float32")
    if n_classes == 2:
        return Data(x, cls.astype("float32"), "binary", cls.astype("int32"))
    return Data(x, cls.astype("int32"), "multiclass", cls.astype("int32"))


def one_hot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype="float32")[y]


def n_classes(data: Data) -> int:
    return int(data.classes.max()) + 1 if data.classes is not None else 0


LOADERS = {
    "digits": lambda **kw: digits("flat", **kw),
    "digits_img": lambda **kw: digits("image", **kw),
    "digits_seq": lambda **kw: digits("seq", **kw),
    "digits_tokens": lambda **kw: digits("tokens"),
    "digits_binary": lambda **kw: digits_binary(),
    "digits_multilabel": lambda **kw: digits_multilabel(),
    "digits_dict": lambda **kw: digits_dict(**kw),
    "wine": lambda **kw: tabular("wine", **kw),
    "iris": lambda **kw: tabular("iris", **kw),
    "breast_cancer": lambda **kw: tabular("breast_cancer", **kw),
    "breast_cancer_dict": lambda **kw: tabular_dict(**kw),
    "diabetes": lambda **kw: diabetes(**kw),
    "linnerud": lambda **kw: linnerud(**kw),
    "counts2": lambda **kw: counts(2),
    "counts4": lambda **kw: counts(4),
}
