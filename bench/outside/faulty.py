"""The faulty runs: each changes one thing of its healthy twin (`twin=`)."""

from __future__ import annotations

import numpy as np

from bench.outside.data import cancer, load_keras, wine
from bench.outside.models import (
    cancer_adam_bce,
    deep_mlp,
    diabetes_reg,
    digits_cnn,
    digits_lstm,
    digits_mlp,
    images_cnn,
    imbalanced,
    normal_init,
    opt,
    seq_model,
    tabular_clf,
)
from bench.outside.registry import run


# --- learning rate too high
@run("learning_rate_too_high", twin="h_digits_mlp_adam")
def f_digits_mlp_adam_lr_x100():
    return digits_mlp(opt("adam", 0.1))


@run("learning_rate_too_high", twin="h_digits_cnn_sgd_momentum")
def f_digits_cnn_sgdm_lr_x30():
    return digits_cnn(opt("sgd", 0.3, momentum=0.9))


@run("learning_rate_too_high", twin="h_seq_lstm_adam")
def f_seq_lstm_adam_lr_x100():
    return seq_model("lstm", opt("adam", 0.1), epochs=10)


@run("learning_rate_too_high", twin="h_wine_scaled_sgd", accept=["exploding_gradients"])
def f_wine_scaled_sgd_lr_x100():
    return tabular_clf(wine, opt("sgd", 1.0))


@run("learning_rate_too_high", twin="h_diabetes_scaled_y_sgd", accept=["exploding_gradients"])
def f_diabetes_sgd_lr_x30():
    return diabetes_reg(opt("sgd", 0.3), scale_y=True)


# --- learning rate too low
@run("learning_rate_too_low", twin="h_digits_mlp_sgd")
def f_digits_mlp_sgd_lr_div100():
    return digits_mlp(opt("sgd", 5e-4), epochs=30)


@run("learning_rate_too_low", twin="h_digits_cnn_adam")
def f_digits_cnn_adam_lr_div100():
    return digits_cnn(opt("adam", 1e-5))


@run("learning_rate_too_low", twin="h_seq_gru_rmsprop")
def f_seq_gru_rmsprop_lr_div100():
    return seq_model("gru", opt("rmsprop", 1e-5), epochs=10)


@run("learning_rate_too_low", twin="h_cancer_scaled_sgd_bce")
def f_cancer_sgd_lr_div30():
    return tabular_clf(cancer, opt("sgd", 3e-4), binary=True, epochs=30)


# --- unnormalized input
@run("unnormalized_input", twin="h_digits_mlp_sgd")
def f_digits_mlp_sgd_pixels_0_255():
    return digits_mlp(opt("sgd", 0.05), scale=1.0, epochs=30)


@run("unnormalized_input", twin="h_digits_cnn_adam")
def f_digits_cnn_adam_pixels_0_255():
    return digits_cnn(opt("adam", 1e-3), scale=1.0)


@run("unnormalized_input", twin="h_digits_lstm_adam", accept=["saturated_activation"])
def f_digits_lstm_pixels_0_255():
    return digits_lstm(opt("adam", 1e-3), scale=1.0)


@run("unnormalized_input", twin="h_images_cnn_rescaling_sgdm")
def f_images_cnn_sgdm_no_rescaling():
    return images_cnn(opt("sgd", 0.01, momentum=0.9), rescaling=False)


@run("unnormalized_input", twin="h_wine_scaled_sgd")
def f_wine_raw_features_sgd():
    return tabular_clf(wine, opt("sgd", 0.01), scaled=False)


@run("unnormalized_input", twin="h_cancer_scaled_sgd_bce")
def f_cancer_raw_features_sgd():
    return tabular_clf(cancer, opt("sgd", 0.01), scaled=False, binary=True, epochs=30)


@run(
    "unnormalized_input",
    twin="h_diabetes_scaled_y_sgd",
    accept=["exploding_gradients", "learning_rate_too_high", "non_finite"],
    note=(
        "raw regression TARGETS 25..346 (inputs standardized); "
        "the taxonomy has no target-scale cause"
    ),
)
def f_diabetes_raw_targets_sgd():
    return diabetes_reg(opt("sgd", 0.01), scale_y=False)


# --- loss mismatch
@run("loss_mismatch", twin="h_digits_mlp_onehot_cce")
def f_softmax_with_bce_onehot():
    return digits_mlp(opt("adam", 1e-3), loss="binary_crossentropy", onehot=True)


@run("loss_mismatch", twin="h_digits_mlp_onehot_cce")
def f_sigmoid_with_cce():
    return digits_mlp(
        opt("adam", 1e-3), loss="categorical_crossentropy", onehot=True, out_act="sigmoid"
    )


@run("loss_mismatch", twin="h_digits_mlp_onehot_cce")
def f_mse_on_softmax_classifier():
    return digits_mlp(opt("adam", 1e-3), loss="mse", onehot=True)


@run("loss_mismatch", twin="h_digits_mlp_adam", accept=["prediction_collapse"])
def f_sparse_cce_labels_divided_255():
    # x, y = x / 255.0, y / 255.0
    return digits_mlp("adam", relabel=lambda ytr: (ytr / 255.0).astype("float32"))


@run("loss_mismatch", twin="h_digits_mlp_adam")
def f_binary_head_on_class_ids():
    return digits_mlp(
        "adam",
        loss="binary_crossentropy",
        out_act="sigmoid",
        classes=1,
        relabel=lambda ytr: ytr.astype("float32"),
    )


@run("loss_mismatch", twin="h_cancer_scaled_adam_bce")
def f_linear_output_bce_not_logits():
    return cancer_adam_bce(out_act="linear")


@run("loss_mismatch", twin="h_cancer_scaled_adam_bce")
def f_sigmoid_output_bce_from_logits():
    keras = load_keras()
    return cancer_adam_bce(loss=keras.losses.BinaryCrossentropy(from_logits=True))


@run("loss_mismatch", twin="h_cancer_scaled_adam_bce", accept=["prediction_collapse"])
def f_softmax_one_unit_bce():
    return cancer_adam_bce(out_act="softmax")


# --- prediction collapse
@run("prediction_collapse", twin="h_imbalanced_class_weight")
def f_imbalanced_95_5_no_weights():
    return imbalanced(class_weight=False)


@run(
    "prediction_collapse",
    twin="h_digits_mlp_adam",
    note="x and y shuffled separately: labels carry no signal",
)
def f_labels_shuffled_separately():
    rng = np.random.default_rng(0)
    return digits_mlp("adam", relabel=lambda ytr: ytr[rng.permutation(len(ytr))])


# --- vanishing gradients
@run("vanishing_gradients", twin="h_deep_relu_he_sgd", accept=["saturated_activation"])
def f_deep_sigmoid_stack_sgd():
    return deep_mlp(opt("sgd", 0.01, momentum=0.9), depth=12, act="sigmoid")


@run("vanishing_gradients", twin="h_deep_relu_he_sgd")
def f_deep_tanh_small_init_sgd():
    return deep_mlp(opt("sgd", 0.01, momentum=0.9), depth=16, act="tanh", init=normal_init(0.05))


# --- dead relu
@run("dead_relu", twin="h_digits_mlp_adam")
def f_relu_negative_bias_init():
    return digits_mlp(opt("adam", 1e-3), hidden_bias=-5.0)


@run("dead_relu", twin="h_digits_cnn_adam")
def f_conv_relu_negative_bias_init():
    return digits_cnn(opt("adam", 1e-3), conv_bias=-3.0)


# --- saturated activation
@run("saturated_activation", twin="h_cancer_scaled_sigmoid_mlp")
def f_sigmoid_huge_init():
    return cancer_adam_bce(act="sigmoid", init=normal_init(10.0))


@run("saturated_activation", twin="h_wine_scaled_tanh_mlp")
def f_tanh_huge_init():
    return tabular_clf(wine, opt("adam", 1e-3), act="tanh", epochs=50, init=normal_init(10.0))


# --- exploding gradients
@run("exploding_gradients", twin="h_deep_relu_he_sgd", accept=["non_finite"])
def f_deep_relu_huge_init_sgd():
    sgdm = opt("sgd", 0.01, momentum=0.9)
    return deep_mlp(sgdm, depth=12, act="relu", init=normal_init(0.6), epochs=1)


@run("exploding_gradients", twin="h_seq_simplernn_relu", accept=["non_finite"])
def f_simplernn_relu_large_recurrent_init():
    sgdm = opt("sgd", 0.01, momentum=0.9)
    return seq_model("simplernn_relu", sgdm, epochs=10, recurrent_initializer=normal_init(0.5))


# --- non-finite
@run(
    "non_finite",
    twin="h_cancer_scaled_adam_bce",
    note="1% of training features are NaN (missing values never imputed)",
)
def f_nan_features_not_imputed():
    return cancer_adam_bce(nan_frac=0.01)
