"""The corpus as data: healthy base runs (family x dataset x optimizer), the faults applied
to them at several severities, and the healthy traps. `all_specs()` is a pure function.

A faulty run names its `twin`: the healthy base it was derived from with one thing
changed; its label is checked against that twin (bench.corpus.verify).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bench.corpus.models import Knobs

HEALTHY = "healthy"

# optimizer -> a good learning rate for these small models
OPTIMIZERS = {
    "sgd": 0.02,  # momentum 0.9
    "nesterov": 0.02,
    "adam": 2e-3,
    "adamw": 2e-3,
    "rmsprop": 1e-3,
    "adagrad": 0.05,
    "nadam": 2e-3,
    "lion": 3e-4,
    "adamax": 4e-3,
}

# dataset -> (epochs, batch size)
SCHEDULE = {
    "digits": (8, 64),
    "digits_img": (6, 64),
    "digits_seq": (8, 64),
    "digits_tokens": (6, 64),
    "digits_binary": (6, 64),
    "digits_multilabel": (8, 64),
    "digits_dict": (6, 64),
    "wine": (30, 32),
    "iris": (40, 16),
    "breast_cancer": (15, 64),
    "breast_cancer_dict": (15, 64),
    "diabetes": (40, 32),
    "linnerud": (30, 32),
    "counts2": (8, 64),
    "counts4": (8, 64),
}

CLASSIFICATION_HEAD = {"multiclass": "softmax", "binary": "sigmoid", "multilabel": "sigmoid"}


@dataclass(frozen=True)
class Spec:
    name: str  # "<family>-<dataset>-<optimizer>[-<change>]": the split hashes it
    label: str  # the intended cause, or "healthy"
    family: str
    dataset: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    knobs: Knobs = field(default_factory=Knobs)
    data_kw: tuple[tuple[str, object], ...] = ()  # loader kwargs (scale=..., raw=...)
    fault: str = ""  # what was changed (see train.py)
    trap: str = ""  # which healthy trap this is
    twin: str | None = None
    steps: int = 0  # > 0: stop after this many steps (early checkpoints)


def base(family: str, dataset: str, optimizer: str, **changes) -> Spec:
    epochs, batch_size = SCHEDULE[dataset]
    spec = Spec(
        name=f"{family}-{dataset}-{optimizer}",
        label=HEALTHY,
        family=family,
        dataset=dataset,
        optimizer=optimizer,
        lr=OPTIMIZERS[optimizer],
        epochs=epochs,
        batch_size=batch_size,
    )
    return replace(spec, **changes)


def derive(b: Spec, suffix: str, label: str, **changes) -> Spec:
    twin = b.name if label != HEALTHY or changes.get("trap") == "early" else None
    return replace(b, name=f"{b.name}-{suffix}", label=label, twin=twin, **changes)


BASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("mlp", "digits", tuple(OPTIMIZERS)),
    ("mlp", "wine", ("sgd", "adam", "rmsprop", "nadam", "adagrad")),
    ("mlp", "iris", ("adam", "nesterov", "adamax")),
    ("mlp", "breast_cancer", ("sgd", "adamw", "lion", "rmsprop")),
    ("mlp", "digits_binary", ("adam", "nesterov")),
    ("mlp", "digits_multilabel", ("adam", "rmsprop", "sgd")),
    ("mlp", "diabetes", ("adam", "rmsprop", "sgd", "nadam")),
    ("mlp", "linnerud", ("adam",)),
    ("mlp", "counts4", ("adam", "sgd")),
    ("mlp", "counts2", ("nadam", "rmsprop")),
    ("residual", "digits", ("adam", "sgd", "nadam")),
    ("cnn", "digits_img", ("adam", "sgd", "rmsprop", "adamw", "lion")),
    ("cnn_bn", "digits_img", ("adam", "nesterov", "adagrad")),
    ("depthwise", "digits_img", ("adam", "rmsprop")),
    ("lstm", "digits_seq", ("adam", "rmsprop", "nadam")),
    ("gru", "digits_seq", ("adam", "adamw", "sgd")),
    ("simplernn", "digits_seq", ("adam", "rmsprop")),
    ("conv1d", "digits_seq", ("adam", "sgd", "adamax")),
    ("attention", "digits_seq", ("adam", "adamw")),  # 8 epochs: ~0.99 already at 4
    ("embedding", "digits_tokens", ("adam", "rmsprop", "adagrad")),
    ("multi_input", "digits_dict", ("adam", "sgd")),
    ("multi_input", "breast_cancer_dict", ("adam", "nadam")),
    # Grown after tuning began: appended, so every earlier base keeps its index and
    # the faults derived from it (and its cached runs) stay as they were.
    ("residual", "digits", ("rmsprop", "adamw")),
    ("cnn_bn", "digits_img", ("sgd",)),
    ("depthwise", "digits_img", ("sgd", "nadam")),
    ("lstm", "digits_seq", ("adamw",)),
    ("gru", "digits_seq", ("rmsprop",)),
    ("simplernn", "digits_seq", ("nadam",)),
    ("attention", "digits_seq", ("rmsprop",)),
    ("conv1d", "digits_seq", ("rmsprop",)),
    ("embedding", "digits_tokens", ("nadam",)),
    ("mlp", "wine", ("adamax",)),
    ("mlp", "breast_cancer", ("nadam",)),
    ("mlp", "diabetes", ("adamw",)),
]

SCALABLE = {"digits", "digits_img", "digits_seq", "digits_dict"}  # take scale=255/16
RAWABLE = {"wine", "breast_cancer", "iris", "breast_cancer_dict"}  # take raw=True
RELU_FAMILIES = {"mlp", "residual", "cnn", "conv1d", "embedding", "multi_input"}
SATURABLE = {"mlp", "residual", "cnn", "conv1d", "multi_input"}
RNNS = {"lstm", "gru", "simplernn"}
MULTICLASS = {"digits", "digits_img", "digits_seq", "digits_tokens", "digits_dict", "wine"}
SEVERITIES = (10, 30, 100)


def bases() -> list[Spec]:
    return [base(f, d, o) for f, d, opts in BASES for o in opts]


def _cycle(seq, i: int):
    return seq[i % len(seq)]


def faults_of(b: Spec, i: int) -> list[Spec]:
    """The faults one base gets; severities and kinds rotate with the base's index."""
    out = []
    hi, lo = _cycle(SEVERITIES, i), _cycle(SEVERITIES, i + 1)
    out.append(derive(b, f"lr_x{hi}", "learning_rate_too_high", lr=b.lr * hi, fault=f"lr*{hi}"))
    if i % 2 == 0:
        lr = b.lr / lo
        out.append(derive(b, f"lr_div{lo}", "learning_rate_too_low", lr=lr, fault=f"lr/{lo}"))
    f = b.family
    if b.dataset in SCALABLE and (f in RNNS or b.optimizer in ("sgd", "nesterov") or i % 3 == 0):
        out.append(
            derive(b, "x0_255", "unnormalized_input", data_kw=(("scale", 255 / 16),), fault="0-255")
        )
    if b.dataset in RAWABLE and i % 2 == 0:
        out.append(derive(b, "raw", "unnormalized_input", data_kw=(("raw", True),), fault="raw"))
    if b.dataset == "diabetes" and b.optimizer in ("sgd", "rmsprop"):
        kw = (("raw_x", True), ("raw_target", True))
        out.append(derive(b, "raw_xy", "unnormalized_input", data_kw=kw, fault="raw x and y"))
    if b.dataset == "diabetes" and b.optimizer in ("adam", "nadam"):
        kw = (("raw_target", True),)
        out.append(derive(b, "raw_y", "unnormalized_input", data_kw=kw, fault="raw y, SGD lr"))
    tabular_regression = b.dataset in ("diabetes", "linnerud")
    if f in RELU_FAMILIES and not tabular_regression and i % 2 == 0:
        bias = _cycle((-1.5, -3.0, -5.0), i)
        knobs = replace(b.knobs, bias=bias)
        out.append(derive(b, f"bias{bias:g}", "dead_relu", knobs=knobs, fault=f"relu bias {bias}"))
    if f in SATURABLE and not tabular_regression and i % 2 == 1:
        kind = _cycle(("sigmoid+10", "sigmoid-10", "tanh_std8"), i)
        knobs = replace(b.knobs, saturate=kind)
        out.append(derive(b, f"sat_{kind}", "saturated_activation", knobs=knobs, fault=kind))
    if b.dataset in MULTICLASS and i % 2 == 0:
        kind = _cycle(("noise0.8", "noise0.95", "class_weight_int", "l2_1"), i // 2)
        knobs = replace(b.knobs, l2=1.0) if kind == "l2_1" else b.knobs
        out.append(derive(b, kind, "prediction_collapse", knobs=knobs, fault=kind))
    return out


def all_specs() -> list[Spec]:
    bs = bases()
    by_name = {s.name: s for s in bs}
    specs = list(bs)
    for i, s in enumerate(bs):
        specs += faults_of(s, i)
    from bench.corpus.faults import extra_faults
    from bench.corpus.traps import traps

    specs += extra_faults(by_name) + traps(by_name)
    names = [s.name for s in specs]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    return specs
