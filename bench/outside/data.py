"""The data of the outside runs (scikit-learn and synthetic) and their holdout metrics."""

from __future__ import annotations

import numpy as np


def load_keras():
    import keras

    return keras


def split(x, y, seed=0, test=0.25):
    from sklearn.model_selection import train_test_split

    return train_test_split(
        x,
        y,
        test_size=test,
        random_state=seed,
        stratify=y if y.ndim == 1 and y.dtype.kind in "iu" else None,
    )


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255.0 / 16.0)).astype("float32")  # 8x8 pixels on a 0-255 scale
    return split(x, d.target.astype("int64"))


def wine():
    from sklearn.datasets import load_wine

    d = load_wine()
    return split(d.data.astype("float32"), d.target.astype("int64"))


def cancer():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return split(d.data.astype("float32"), d.target.astype("int64"))


def diabetes():
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    return split(d.data.astype("float32"), d.target.astype("float32"))


def standardize(xtr, xte):
    from sklearn.preprocessing import StandardScaler

    s = StandardScaler().fit(xtr)
    return s.transform(xtr).astype("float32"), s.transform(xte).astype("float32")


def seq_data(n=3000, t=30, seed=0):
    """Label: is the mean of channel 0 over the last 10 steps above that of the first 10."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, 2)).astype("float32")
    x[:, :, 1] += np.linspace(-1, 1, t)[None, :]
    y = (x[:, -10:, 0].mean(1) > x[:, :10, 0].mean(1)).astype("int64")
    return split(x, y, seed)


def token_data(n=4000, t=40, vocab=300, seed=0):
    """Class 1 when 'positive' tokens (1..30) outnumber 'negative' ones (31..60)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(61, vocab, size=(n, t))
    k = rng.integers(0, 8, size=n)
    for i in range(n):
        pos = rng.choice(t, size=k[i] + 2, replace=False)
        npos = rng.integers(0, k[i] + 3)
        x[i, pos[:npos]] = rng.integers(1, 31, size=npos) if npos else x[i, pos[:0]]
        x[i, pos[npos:]] = rng.integers(31, 61, size=len(pos) - npos)
    y = (((x >= 1) & (x <= 30)).sum(1) > ((x >= 31) & (x <= 60)).sum(1)).astype("int64")
    return split(x.astype("int64"), y, seed)


def shape_images(n=2000, size=16, seed=0):
    """uint8-range grey images: 0 horizontal bar, 1 vertical bar, 2 square outline, 3 diagonal."""
    rng = np.random.default_rng(seed)
    x = rng.normal(30, 15, size=(n, size, size)).clip(0, 255)
    y = rng.integers(0, 4, size=n)
    for i in range(n):
        a, b = rng.integers(2, size - 6, size=2)
        v = rng.uniform(150, 255)
        if y[i] == 0:
            x[i, a : a + 2, 1:-1] = v
        elif y[i] == 1:
            x[i, 1:-1, b : b + 2] = v
        elif y[i] == 2:
            x[i, a, b : b + 6] = v
            x[i, a + 5, b : b + 6] = v
            x[i, a : a + 6, b] = v
            x[i, a : a + 6, b + 5] = v
        else:
            for j in range(size):
                x[i, j, (j + a) % size] = v
    x = x.round().astype("float32")[..., None]
    return split(x, y.astype("int64"), seed)


# -------------------------------------------------------------- metrics ---
def acc(model, x, y):
    p = np.asarray(model.predict(x, verbose=0))
    multiclass = p.ndim == 2 and p.shape[1] > 1
    pred = p.argmax(1) if multiclass else (p.reshape(-1) > 0.5).astype("int64")
    return float((pred == y).mean()), pred


def balanced_acc(model, x, y):
    from sklearn.metrics import balanced_accuracy_score

    _, pred = acc(model, x, y)
    return float(balanced_accuracy_score(y, pred)), pred


def r2(model, x, y, y_mean=0.0, y_std=1.0):
    from sklearn.metrics import r2_score

    p = np.asarray(model.predict(x, verbose=0)).reshape(-1) * y_std + y_mean
    if not np.all(np.isfinite(p)):
        return float("nan")
    return float(r2_score(y, p))


def fit(model, x, y, epochs, batch_size=32, **kw):
    h = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, **kw)
    return float(h.history["loss"][-1])


def result(model, xb, yb, metric, value, loss, pred=None, extra=None):
    r = dict(model=model, xb=xb, yb=yb, metric=metric, value=value, train_loss=loss)
    if pred is not None:
        r["pred_classes"] = len(np.unique(pred))
    if extra:
        r.update(extra)
    return r


def classify(model, optimizer, loss, train, test, epochs, batch_size=32, keep=256):
    """compile, fit, score on the holdout: how the classifier runs end, as user code does.
    `train` is (x, the labels fitted on), `test` (x, class ids); the saved batch is the first
    `keep` training rows."""
    (xtr, yfit), (xte, yte) = train, test
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    loss_v = fit(model, xtr, yfit, epochs, batch_size=batch_size)
    a, pred = acc(model, xte, yte)
    return result(model, xtr[:keep], yfit[:keep], "test_acc", a, loss_v, pred)
