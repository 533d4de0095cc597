"""The model builders the outside runs share: each trains one Keras model and returns its
result (model, a saved batch, the holdout metric, the last training loss)."""

from __future__ import annotations

import numpy as np

from bench.outside.data import (
    balanced_acc,
    cancer,
    classify,
    diabetes,
    digits,
    fit,
    load_keras,
    r2,
    result,
    seq_data,
    shape_images,
    split,
    standardize,
)


def dense_net(n_in, widths, units, out_act=None, act="relu", init=None, first_bias=None):
    """Sequential([Input, Dense(w) for w in widths, Dense(units)]), the layers made in that
    order (their seeds and names follow it); `first_bias`: a constant bias for the first."""
    keras = load_keras()
    layers = [keras.Input(shape=(n_in,))]
    for i, width in enumerate(widths):
        kw = {} if init is None else dict(kernel_initializer=init)
        if i == 0 and first_bias is not None:
            kw["bias_initializer"] = keras.initializers.Constant(first_bias)
        layers.append(keras.layers.Dense(width, activation=act, **kw))
    layers.append(keras.layers.Dense(units, activation=out_act))
    return keras.Sequential(layers)


def digits_mlp(
    opt,
    scale=255.0,
    epochs=20,
    loss="sparse_categorical_crossentropy",
    out_act="softmax",
    onehot=False,
    hidden_bias=None,
    classes=10,
    relabel=None,
):
    """`relabel`: what the run fits on instead of the class ids (the holdout keeps them)."""
    keras = load_keras()
    xtr, xte, ytr, yte = digits()
    xtr, xte = xtr.reshape(len(xtr), 64) / scale, xte.reshape(len(xte), 64) / scale
    model = dense_net(64, [64, 32], classes, out_act, first_bias=hidden_bias)
    yfit = keras.utils.to_categorical(ytr, 10) if onehot else ytr
    if relabel is not None:
        yfit = relabel(ytr)
    return classify(model, opt, loss, (xtr, yfit), (xte, yte), epochs)


def digits_cnn(opt, scale=255.0, epochs=15, rescaling=False, bn=False, conv_bias=None):
    keras = load_keras()
    L = keras.layers
    xtr, xte, ytr, yte = digits()
    xtr, xte = xtr[..., None] / scale, xte[..., None] / scale
    layers = [keras.Input(shape=(8, 8, 1))]
    if rescaling:
        layers.append(L.Rescaling(1.0 / 255))
    ck = {} if conv_bias is None else dict(bias_initializer=keras.initializers.Constant(conv_bias))
    if bn:
        layers += [
            L.Conv2D(32, 3, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.Activation("relu"),
        ]
    else:
        layers += [L.Conv2D(32, 3, padding="same", activation="relu", **ck)]
    layers += [
        L.MaxPooling2D(),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.Flatten(),
        L.Dense(64, activation="relu"),
        L.Dense(10, activation="softmax"),
    ]
    model = keras.Sequential(layers)
    return classify(model, opt, "sparse_categorical_crossentropy", (xtr, ytr), (xte, yte), epochs)


def digits_lstm(opt, scale=255.0, epochs=15):
    keras = load_keras()
    xtr, xte, ytr, yte = digits()  # rows of the image as 8 time steps of 8 pixels
    xtr, xte = xtr / scale, xte / scale
    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8)),
            keras.layers.LSTM(64),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    return classify(model, opt, "sparse_categorical_crossentropy", (xtr, ytr), (xte, yte), epochs)


def tabular_clf(
    data,
    opt,
    scaled=True,
    epochs=50,
    act="relu",
    init="glorot_uniform",
    binary=False,
    out_act=None,
    loss=None,
    nan_frac=0.0,
):
    keras = load_keras()
    xtr, xte, ytr, yte = data()
    if scaled:
        xtr, xte = standardize(xtr, xte)
    if nan_frac:
        rng = np.random.default_rng(1)
        xtr = xtr.copy()
        xtr[rng.random(xtr.shape) < nan_frac] = np.nan  # missing values never imputed
    ncls = int(ytr.max()) + 1
    if binary:
        out = keras.layers.Dense(1, activation=out_act or "sigmoid")
        loss = loss or "binary_crossentropy"
    else:
        out = keras.layers.Dense(ncls, activation=out_act or "softmax")
        loss = loss or "sparse_categorical_crossentropy"
    model = keras.Sequential(
        [
            keras.Input(shape=(xtr.shape[1],)),
            keras.layers.Dense(64, activation=act, kernel_initializer=init),
            keras.layers.Dense(32, activation=act, kernel_initializer=init),
            out,
        ]
    )
    return classify(model, opt, loss, (xtr, ytr), (xte, yte), epochs, batch_size=16)


def cancer_adam_bce(**change):
    """h_cancer_scaled_adam_bce: breast cancer, standardized, Adam, binary head, 30 epochs;
    its faulty twins name the one thing they change."""
    return tabular_clf(cancer, opt("adam", 1e-3), binary=True, epochs=30, **change)


def diabetes_reg(opt, scale_y=True, epochs=100):
    xtr, xte, ytr, yte = diabetes()
    xtr, xte = standardize(xtr, xte)
    m, s = (float(ytr.mean()), float(ytr.std())) if scale_y else (0.0, 1.0)
    yfit = ((ytr - m) / s).astype("float32")
    model = dense_net(10, [32, 16], 1)
    model.compile(optimizer=opt, loss="mse", metrics=["mae"])
    loss_v = fit(model, xtr, yfit, epochs)
    return result(model, xtr[:256], yfit[:256], "test_r2", r2(model, xte, yte, m, s), loss_v)


def deep_mlp(opt, depth, act, init="glorot_uniform", epochs=20, width=32):
    xtr, xte, ytr, yte = digits()
    xtr, xte = xtr.reshape(len(xtr), 64) / 255.0, xte.reshape(len(xte), 64) / 255.0
    model = dense_net(64, [width] * depth, 10, "softmax", act=act, init=init)
    return classify(model, opt, "sparse_categorical_crossentropy", (xtr, ytr), (xte, yte), epochs)


def seq_model(kind, opt, epochs=10, **kw):
    keras = load_keras()
    L = keras.layers
    xtr, xte, ytr, yte = seq_data()
    if kind == "lstm":
        body = [L.LSTM(32)]
    elif kind == "gru":
        body = [L.GRU(32)]
    elif kind == "conv1d":
        body = [
            L.Conv1D(32, 5, activation="relu"),
            L.Conv1D(32, 5, activation="relu"),
            L.GlobalMaxPooling1D(),
        ]
    elif kind == "simplernn_relu":
        body = [L.SimpleRNN(32, activation="relu", **kw)]
    model = keras.Sequential([keras.Input(shape=(30, 2)), *body, L.Dense(1, activation="sigmoid")])
    return classify(model, opt, "binary_crossentropy", (xtr, ytr), (xte, yte), epochs)


def images_cnn(opt, rescaling=True, epochs=8):
    keras = load_keras()
    L = keras.layers
    xtr, xte, ytr, yte = shape_images()
    layers = [keras.Input(shape=(16, 16, 1))]
    if rescaling:
        layers.append(L.Rescaling(1.0 / 255))
    layers += [
        L.Conv2D(16, 3, activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(32, 3, activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(32, activation="relu"),
        L.Dense(4, activation="softmax"),
    ]
    model = keras.Sequential(layers)
    return classify(model, opt, "sparse_categorical_crossentropy", (xtr, ytr), (xte, yte), epochs)


def opt(name, lr=None, **kw):
    keras = load_keras()
    cls = dict(
        adam=keras.optimizers.Adam,
        sgd=keras.optimizers.SGD,
        rmsprop=keras.optimizers.RMSprop,
        adagrad=keras.optimizers.Adagrad,
        nadam=keras.optimizers.Nadam,
        adamw=keras.optimizers.AdamW,
        lion=keras.optimizers.Lion,
    )[name]
    return cls(learning_rate=lr, **kw) if lr is not None else cls(**kw)


def normal_init(stddev):
    """keras.initializers.RandomNormal(stddev=stddev): the too-large or too-small inits."""
    return load_keras().initializers.RandomNormal(stddev=stddev)


def imbalanced(class_weight=False):
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=4000,
        n_features=10,
        n_informative=3,
        weights=[0.95, 0.05],
        class_sep=0.6,
        flip_y=0.02,
        random_state=3,
    )
    xtr, xte, ytr, yte = split(x.astype("float32"), y.astype("int64"))
    xtr, xte = standardize(xtr, xte)
    model = dense_net(10, [16], 1, "sigmoid")
    model.compile(optimizer=opt("sgd", 0.01), loss="binary_crossentropy", metrics=["accuracy"])
    cw = None
    if class_weight:
        cw = {0: 0.5 / 0.95, 1: 0.5 / 0.05}
    loss_v = fit(model, xtr, ytr, 5, class_weight=cw)
    b, pred = balanced_acc(model, xte, yte)
    return result(model, xtr[:256], ytr[:256], "test_balanced_acc", b, loss_v, pred)
