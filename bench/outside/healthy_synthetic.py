"""The healthy runs on generated data (make_classification, blobs, moons, sequences, tokens,
shape images) and the deep ReLU net on digits: ordinary Keras code that learns."""

from __future__ import annotations

import numpy as np

from bench.outside.data import (
    acc,
    classify,
    fit,
    load_keras,
    result,
    shape_images,
    split,
    standardize,
    token_data,
)
from bench.outside.models import (
    deep_mlp,
    dense_net,
    images_cnn,
    imbalanced,
    opt,
    seq_model,
)
from bench.outside.registry import run


@run()
def h_count_features_adam():
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=3000, n_features=20, n_informative=8, random_state=0)
    x = np.clip(np.round((x + 3) * 5), 0, 30).astype("float32")  # integer counts in [0, 30]
    xtr, xte, ytr, yte = split(x, y.astype("int64"))
    model = dense_net(20, [64], 1, "sigmoid")
    return classify(model, "adam", "binary_crossentropy", (xtr, ytr), (xte, yte), 20)


@run()
def h_blobs_adagrad():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=2000, centers=5, n_features=6, cluster_std=2.0, random_state=0)
    xtr, xte, ytr, yte = split(x.astype("float32"), y.astype("int64"))
    xtr, xte = standardize(xtr, xte)
    model = dense_net(6, [32], 5, "softmax")
    cce = "sparse_categorical_crossentropy"
    return classify(model, opt("adagrad", 0.05), cce, (xtr, ytr), (xte, yte), 20)


@run()
def h_moons_sgd_momentum_converged():
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=1000, noise=0.15, random_state=0)
    xtr, xte, ytr, yte = split(x.astype("float32"), y.astype("int64"))
    model = dense_net(2, [32, 32], 1, "sigmoid")
    sgdm = opt("sgd", 0.05, momentum=0.9)
    return classify(model, sgdm, "binary_crossentropy", (xtr, ytr), (xte, yte), 200)


@run()
def h_classification_adamw():
    keras = load_keras()
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=4000,
        n_features=30,
        n_informative=10,
        n_classes=4,
        n_clusters_per_class=1,
        random_state=1,
    )
    xtr, xte, ytr, yte = split(x.astype("float32"), y.astype("int64"))
    model = keras.Sequential(
        [
            keras.Input(shape=(30,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    adamw = opt("adamw", 1e-3, weight_decay=1e-4)
    cce = "sparse_categorical_crossentropy"
    return classify(model, adamw, cce, (xtr, ytr), (xte, yte), 20)


@run()
def h_multilabel_sigmoid_bce():
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(
        n_samples=3000, n_features=20, n_classes=5, n_labels=2, random_state=0
    )
    xtr, xte, ytr, yte = split(x.astype("float32"), y.astype("float32"))
    xtr, xte = standardize(xtr, xte)
    model = dense_net(20, [64], 5, "sigmoid")
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["binary_accuracy"])
    loss_v = fit(model, xtr, ytr, 30)
    p = model.predict(xte, verbose=0) > 0.5
    return result(
        model, xtr[:256], ytr[:256], "test_label_acc", float((p == (yte > 0.5)).mean()), loss_v
    )


@run()
def h_seq_lstm_adam():
    return seq_model("lstm", opt("adam", 1e-3), epochs=10)


@run()
def h_seq_gru_rmsprop():
    return seq_model("gru", opt("rmsprop", 1e-3), epochs=10)


@run()
def h_seq_conv1d_adam():
    return seq_model("conv1d", opt("adam", 1e-3), epochs=10)


@run()
def h_seq_simplernn_relu():
    return seq_model("simplernn_relu", opt("sgd", 0.01, momentum=0.9), epochs=10)


@run()
def h_tokens_embedding_gap():
    keras = load_keras()
    xtr, xte, ytr, yte = token_data()
    model = keras.Sequential(
        [
            keras.Input(shape=(40,), dtype="int64"),
            keras.layers.Embedding(300, 16),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    return classify(model, "adam", "binary_crossentropy", (xtr, ytr), (xte, yte), 15)


@run()
def h_tokens_transformer_encoder():
    keras = load_keras()
    L = keras.layers
    xtr, xte, ytr, yte = token_data()
    inp = keras.Input(shape=(40,), dtype="int64", name="tokens")
    h = L.Embedding(300, 32)(inp)
    a = L.MultiHeadAttention(num_heads=2, key_dim=16)(h, h)
    h = L.LayerNormalization()(h + a)
    f = L.Dense(64, activation="relu")(h)
    f = L.Dense(32)(f)
    h = L.LayerNormalization()(h + f)
    h = L.GlobalAveragePooling1D()(h)
    out = L.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inp, out)
    adam = opt("adam", 1e-3)
    return classify(model, adam, "binary_crossentropy", (xtr, ytr), (xte, yte), 8)


@run()
def h_dict_input_functional():
    keras = load_keras()
    L = keras.layers
    rng = np.random.default_rng(0)
    n = 3000
    num = rng.normal(size=(n, 6)).astype("float32")
    cat = rng.integers(0, 12, size=(n, 1))
    logit = (
        num[:, 0]
        - num[:, 1]
        + 0.5 * num[:, 2] * num[:, 3]
        + np.where(cat[:, 0] % 3 == 0, 1.5, -0.5)
    )
    y = (logit + rng.normal(scale=0.5, size=n) > 0).astype("int64")
    idx = np.arange(n)
    tr, te = idx[:2250], idx[2250:]
    i_num = keras.Input(shape=(6,), name="numeric")
    i_cat = keras.Input(shape=(1,), name="store_id", dtype="int64")
    e = L.Flatten()(L.Embedding(12, 4)(i_cat))
    h = L.Concatenate()([i_num, e])
    h = L.Dense(32, activation="relu")(h)
    out = L.Dense(1, activation="sigmoid")(h)
    model = keras.Model({"numeric": i_num, "store_id": i_cat}, out)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    xtr = {"numeric": num[tr], "store_id": cat[tr]}
    loss_v = fit(model, xtr, y[tr], 20)
    a, pred = acc(model, {"numeric": num[te], "store_id": cat[te]}, y[te])
    return result(
        model, {k: v[:256] for k, v in xtr.items()}, y[tr][:256], "test_acc", a, loss_v, pred
    )


@run()
def h_images_cnn_rescaling_sgdm():
    return images_cnn(opt("sgd", 0.01, momentum=0.9), rescaling=True)


@run(evaluated=False)  # trained (keeps seeds stable) but left out of the evaluation to save time
def h_images_cnn_scaled_adam():
    return images_cnn(opt("adam", 1e-3), rescaling=True)


@run()
def h_deep_relu_he_sgd():
    return deep_mlp(opt("sgd", 0.01, momentum=0.9), depth=12, act="relu", init="he_normal")


@run()
def h_imbalanced_class_weight():
    return imbalanced(class_weight=True)


@run(evaluated=False)  # trained (keeps seeds stable) but left out of the evaluation to save time
def h_mobilenetv2_tiny():
    keras = load_keras()
    xtr, xte, ytr, yte = shape_images(n=1200)
    xtr = np.repeat(np.pad(xtr, ((0, 0), (8, 8), (8, 8), (0, 0))), 3, axis=-1)  # 32x32x3
    xte = np.repeat(np.pad(xte, ((0, 0), (8, 8), (8, 8), (0, 0))), 3, axis=-1)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    inp = keras.Input(shape=(32, 32, 3))
    h = keras.layers.Rescaling(1.0 / 127.5, offset=-1)(inp)
    out = keras.layers.Dense(4, activation="softmax")(base(h))
    model = keras.Model(inp, out)
    cce = "sparse_categorical_crossentropy"
    return classify(model, opt("adam", 1e-3), cce, (xtr, ytr), (xte, yte), 6, keep=128)
