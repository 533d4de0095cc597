"""The healthy runs on scikit-learn's datasets (digits, wine, breast cancer, iris, diabetes,
Friedman #1): ordinary Keras code that learns."""

from __future__ import annotations

from bench.outside.data import (
    cancer,
    classify,
    digits,
    fit,
    load_keras,
    r2,
    result,
    split,
    standardize,
    wine,
)
from bench.outside.models import (
    cancer_adam_bce,
    dense_net,
    diabetes_reg,
    digits_cnn,
    digits_lstm,
    digits_mlp,
    opt,
    tabular_clf,
)
from bench.outside.registry import run


@run()
def h_digits_mlp_adam():
    return digits_mlp(opt("adam", 1e-3))


@run()
def h_digits_mlp_sgd():
    return digits_mlp(opt("sgd", 0.05), epochs=30)


@run()
def h_digits_mlp_onehot_cce():
    return digits_mlp(opt("adam", 1e-3), loss="categorical_crossentropy", onehot=True)


@run()
def h_digits_mlp_adam_1epoch():
    return digits_mlp(opt("adam", 1e-3), epochs=1)


@run()
def h_digits_mlp_adam_converged():
    return digits_mlp(opt("adam", 1e-3), epochs=150)


@run()
def h_digits_cnn_sgd_momentum():
    return digits_cnn(opt("sgd", 0.01, momentum=0.9))


@run()
def h_digits_cnn_adam():
    return digits_cnn(opt("adam", 1e-3))


@run()
def h_digits_cnn_rescaling_layer():
    # pixels fed 0-255 on purpose: the model divides by 255 itself
    return digits_cnn(opt("adam", 1e-3), scale=1.0, rescaling=True)


@run()
def h_digits_cnn_batchnorm():
    return digits_cnn(opt("adam", 1e-3), bn=True, epochs=10)


@run()
def h_digits_separable_cnn():
    keras = load_keras()
    L = keras.layers
    xtr, xte, ytr, yte = digits()
    xtr, xte = xtr[..., None] / 255.0, xte[..., None] / 255.0
    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.DepthwiseConv2D(3, padding="same", activation="relu"),
            L.SeparableConv2D(32, 3, padding="same", activation="relu"),
            L.GlobalAveragePooling2D(),
            L.Dense(10, activation="softmax"),
        ]
    )
    cce = "sparse_categorical_crossentropy"
    return classify(model, opt("adam", 3e-3), cce, (xtr, ytr), (xte, yte), 30)


@run()
def h_digits_lstm_adam():
    return digits_lstm(opt("adam", 1e-3))


@run()
def h_digits_mlp_lion():
    return digits_mlp(opt("lion", 1e-4))


@run()
def h_wine_scaled_sgd():
    return tabular_clf(wine, opt("sgd", 0.01))


@run()
def h_wine_normalization_layer_nadam():
    keras = load_keras()
    xtr, xte, ytr, yte = wine()  # raw features, the Normalization layer standardizes them
    norm = keras.layers.Normalization()
    norm.adapt(xtr)
    model = keras.Sequential(
        [
            keras.Input(shape=(13,)),
            norm,
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    cce = "sparse_categorical_crossentropy"
    return classify(model, opt("nadam", 1e-3), cce, (xtr, ytr), (xte, yte), 60, batch_size=16)


@run()
def h_cancer_scaled_adam_bce():
    return cancer_adam_bce()


@run()
def h_cancer_scaled_sgd_bce():
    return tabular_clf(cancer, opt("sgd", 0.01), binary=True, epochs=30)


@run()
def h_cancer_scaled_sigmoid_mlp():
    return cancer_adam_bce(act="sigmoid")


@run()
def h_wine_scaled_tanh_mlp():
    return tabular_clf(wine, opt("adam", 1e-3), act="tanh", epochs=50)


@run()
def h_iris_onehot_rmsprop():
    keras = load_keras()
    from sklearn.datasets import load_iris

    d = load_iris()
    xtr, xte, ytr, yte = split(d.data.astype("float32"), d.target.astype("int64"))
    xtr, xte = standardize(xtr, xte)
    model = dense_net(4, [16], 3, "softmax")
    yoh = keras.utils.to_categorical(ytr, 3)
    train = (xtr, yoh)  # 112 rows: the saved batch is all of them
    rms = opt("rmsprop", 1e-2)
    return classify(model, rms, "categorical_crossentropy", train, (xte, yte), 60, batch_size=8)


@run()
def h_diabetes_scaled_y_sgd():
    return diabetes_reg(opt("sgd", 0.01), scale_y=True)


@run(evaluated=False)  # trained (keeps seeds stable) but left out of the evaluation to save time
def h_diabetes_raw_y_adam():
    # raw targets (25..346); Adam at a larger step copes with that range
    return diabetes_reg(opt("adam", 1e-2), scale_y=False, epochs=300)


@run()
def h_friedman_raw_y_adam():
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=2000, noise=0.5, random_state=0)  # x in [0,1], y roughly 0..30
    xtr, xte, ytr, yte = split(x.astype("float32"), y.astype("float32"))
    model = dense_net(10, [64, 64], 1)
    model.compile(optimizer="adam", loss="mse")
    loss_v = fit(model, xtr, ytr, 60)
    return result(model, xtr[:256], ytr[:256], "test_r2", r2(model, xte, yte), loss_v)
