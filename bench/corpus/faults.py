"""Faults tied to one family: deep sigmoid stacks, long plain RNNs, linear stacks drawn
large, NaN-makers, and the loss/label mismatches. Each derives from a healthy base run.
"""

from __future__ import annotations

from bench.corpus.models import Knobs
from bench.corpus.specs import Spec, derive


def extra_faults(by_name: dict[str, Spec]) -> list[Spec]:
    """Faults tied to one family: deep stacks, long RNNs, NaN, loss/label mismatches."""
    b = by_name.__getitem__
    out = []
    for name, depth in (("mlp-digits-sgd", 10), ("mlp-digits-adam", 16), ("mlp-wine-sgd", 12)):
        out.append(
            derive(
                b(name),
                f"sigmoid{depth}",
                "vanishing_gradients",
                knobs=Knobs(act="sigmoid", depth=depth, width=32),
                fault="deep sigmoid",
            )
        )
    for name in ("mlp-breast_cancer-sgd", "mlp-digits-nesterov"):
        out.append(
            derive(
                b(name),
                "sigmoid14",
                "vanishing_gradients",
                knobs=Knobs(act="sigmoid", depth=14, width=16),
                fault="deep sigmoid",
            )
        )
    for name in ("simplernn-digits_seq-adam", "simplernn-digits_seq-rmsprop"):
        for pad in (24, 56):
            out.append(
                derive(
                    b(name),
                    f"pad{pad}",
                    "vanishing_gradients",
                    data_kw=(("pad", pad),),
                    fault=f"{pad} blank steps after the rows",
                )
            )
    for name, std in (
        ("mlp-digits-adam", 1.0),
        ("mlp-digits-rmsprop", 1.5),
        ("mlp-breast_cancer-adamw", 1.5),
        ("mlp-digits_multilabel-adam", 1.0),
    ):
        out.append(
            derive(
                b(name),
                f"linear8_std{std:g}",
                "exploding_gradients",
                knobs=Knobs(act="linear", depth=8, kernel_std=std),
                fault="linear x8",
            )
        )
    for name in ("mlp-diabetes-rmsprop", "mlp-diabetes-adam", "residual-digits-adam"):
        out.append(
            derive(
                b(name),
                "relu6_std2",
                "exploding_gradients",
                knobs=Knobs(depth=6, kernel_std=2.0),
                fault="relu x6 std 2",
            )
        )
    for name in ("mlp-digits-adam", "cnn-digits_img-adam", "mlp-wine-adam"):
        out.append(derive(b(name), "eps0", "non_finite", fault="adam epsilon 0"))
    out.append(derive(b("mlp-diabetes-adam"), "poisson", "non_finite", fault="poisson"))
    out.append(
        derive(
            b("mlp-digits-sgd"),
            "leaky_0_255_lr0.1",
            "non_finite",
            data_kw=(("scale", 255 / 16),),
            lr=0.1,
            fault="diverge",
        )
    )
    mismatches = [
        ("mlp-digits-adam", "bce_on_ids"),
        ("cnn-digits_img-adam", "bce_on_ids"),
        ("lstm-digits_seq-adam", "bce_on_ids"),
        ("mlp-digits-adam", "sparse_ce_float"),
        ("mlp-wine-adam", "sparse_ce_float"),
        ("mlp-diabetes-adam", "bce_on_continuous"),
        ("mlp-digits-sgd", "softmax_bce"),
        ("cnn-digits_img-adam", "softmax_bce"),
        ("mlp-digits_multilabel-adam", "softmax_multilabel"),
        ("mlp-digits_multilabel-rmsprop", "softmax_multilabel"),
        ("mlp-digits_multilabel-sgd", "softmax_multilabel"),
        ("mlp-breast_cancer-sgd", "softmax_one_unit"),
        ("mlp-breast_cancer-adamw", "softmax_one_unit"),
        ("mlp-digits_binary-adam", "softmax_one_unit"),
        ("mlp-digits-sgd", "double_softmax"),
        ("cnn-digits_img-sgd", "double_softmax"),
        ("mlp-wine-sgd", "double_softmax"),
        ("mlp-digits-sgd", "logits_no_from_logits"),
        ("gru-digits_seq-adam", "logits_no_from_logits"),
        ("conv1d-digits_seq-sgd", "logits_no_from_logits"),
        ("mlp-digits-sgd", "mse_on_softmax"),
        ("mlp-iris-nesterov", "mse_on_softmax"),
        ("mlp-diabetes-adam", "sigmoid_regression"),
        ("mlp-diabetes-rmsprop", "sigmoid_regression"),
    ]
    for name, kind in mismatches:
        out.append(derive(b(name), kind, "loss_mismatch", fault=kind))
    return out
