"""Healthy runs that look suspicious (issue 17's traps): each must still verify as healthy.

Rescaling / Normalization layers in front of 0-255 or raw inputs, BatchNorm-scaled
convolutions drawn large, converged runs, early checkpoints, regression on raw targets,
identical-row sample batches, and regularized / smoothed / weighted runs.
"""

from __future__ import annotations

from bench.corpus.models import Knobs
from bench.corpus.specs import HEALTHY, Spec, derive


def traps(by_name: dict[str, Spec]) -> list[Spec]:
    """Healthy runs that look suspicious: each must still verify as learning."""
    b = by_name.__getitem__
    h, out = HEALTHY, []
    for name in (
        "mlp-digits-sgd",
        "mlp-digits-adam",
        "cnn-digits_img-sgd",
        "cnn-digits_img-adam",
        "lstm-digits_seq-adam",
        "lstm-digits_seq-rmsprop",
        "gru-digits_seq-adam",
        "conv1d-digits_seq-adam",
        "attention-digits_seq-adam",
        "multi_input-digits_dict-adam",
    ):
        out.append(
            derive(
                b(name),
                "rescaling_0_255",
                h,
                knobs=Knobs(preprocess="rescaling"),
                data_kw=(("scale", 255 / 16),),
                trap="rescaling",
            )
        )
    for name in (
        "mlp-wine-sgd",
        "mlp-wine-adam",
        "mlp-breast_cancer-sgd",
        "mlp-iris-nesterov",
        "multi_input-breast_cancer_dict-adam",
    ):
        out.append(
            derive(
                b(name),
                "normalization_raw",
                h,
                knobs=Knobs(preprocess="normalization"),
                data_kw=(("raw", True),),
                trap="normalization",
            )
        )
    out.append(
        derive(
            b("mlp-diabetes-adam"),
            "normalization_raw_x",
            h,
            knobs=Knobs(preprocess="normalization"),
            data_kw=(("raw_x", True),),
            trap="normalization",
        )
    )
    for name in ("cnn_bn-digits_img-adam", "cnn_bn-digits_img-nesterov"):
        out.append(derive(b(name), "kernel_std5", h, knobs=Knobs(kernel_std=5.0), trap="bn_scaled"))
    for name, epochs in (
        ("mlp-digits-adam", 40),
        ("cnn-digits_img-adam", 25),
        ("mlp-breast_cancer-adamw", 200),
        ("mlp-wine-adam", 120),
    ):
        out.append(derive(b(name), "converged", h, epochs=epochs, lr=3e-3, trap="converged"))
    for name, steps in (
        ("mlp-digits-adam", 5),
        ("cnn-digits_img-adam", 5),
        ("lstm-digits_seq-adam", 8),
        ("gru-digits_seq-sgd", 10),
        ("attention-digits_seq-adam", 6),
        ("mlp-wine-sgd", 3),
        ("residual-digits-sgd", 4),
    ):
        out.append(derive(b(name), f"early{steps}", h, steps=steps, trap="early"))
    for name, opt, lr in (
        ("mlp-diabetes-adam", "adam", 0.05),
        ("mlp-diabetes-nadam", "nadam", 0.05),
        ("mlp-linnerud-adam", "adam", 0.05),
    ):
        out.append(
            derive(
                b(name),
                "raw_target",
                h,
                data_kw=(("raw_target", True),),
                lr=lr,
                epochs=100,
                optimizer=opt,
                trap="raw_target",
            )
        )
    for name in (
        "mlp-digits-adam",
        "cnn-digits_img-adam",
        "lstm-digits_seq-adam",
        "mlp-wine-sgd",
        "mlp-counts4-adam",
        "embedding-digits_tokens-adam",
    ):
        out.append(derive(b(name), "identical_rows", h, trap="identical_rows"))
    # One-off traps, in the corpus's order: (base run, suffix, trap, what else it changes).
    for name, suffix, trap, changes in (
        ("mlp-digits-adam", "tanh4_glorot", "deep_tanh", {"knobs": Knobs(act="tanh", depth=4)}),
        (
            "mlp-digits-rmsprop",
            "dropout_l2",
            "regularized",
            {"knobs": Knobs(l2=1e-4), "fault": "dropout"},
        ),
        ("mlp-digits-adam", "label_smoothing", "label_smoothing", {"fault": "label_smoothing"}),
        (
            "mlp-breast_cancer-adamw",
            "class_weight_balanced",
            "class_weight",
            {"fault": "class_weight_balanced"},
        ),
        ("mlp-digits-adam", "from_logits_softmax", "from_logits", {"fault": "from_logits_softmax"}),
        (
            "residual-digits-adam",
            "sigmoid_blocks6",
            "residual_sigmoid",
            {"knobs": Knobs(act="sigmoid", depth=6)},
        ),
    ):
        out.append(derive(b(name), suffix, h, trap=trap, **changes))
    return out
