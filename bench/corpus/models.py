"""Model families of the corpus: one trunk builder each, a head per task, and the knobs a
fault turns (hidden activation, depth, bias / kernel init, one saturated layer, L2).

Every model is functional (dict inputs for the multi-input family); `build` returns it
uncompiled.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

L = keras.layers


# Keras's default 0.99 leaves the moving statistics far from the batch statistics after a
# few hundred steps, so the trained model predicts at chance in inference mode.
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Knobs:
    act: str = "relu"  # hidden activation
    depth: int = 2  # hidden Dense layers (mlp) / residual blocks
    bias: float | None = None  # constant bias of the hidden ReLU layers (dead_relu)
    kernel_std: float | None = None  # RandomNormal stddev of the hidden kernels
    saturate: str = ""  # one hidden layer pinned: "sigmoid+10" | "sigmoid-10" | "tanh_std8"
    l2: float = 0.0  # L2 factor on the hidden kernels
    preprocess: str = ""  # "rescaling" | "normalization" (the trap layers)
    width: int = 64


def _dense_kw(k: Knobs) -> dict:
    kw: dict = {}
    if k.bias is not None:
        kw["bias_initializer"] = keras.initializers.Constant(k.bias)
    if k.kernel_std is not None:
        kw["kernel_initializer"] = keras.initializers.RandomNormal(stddev=k.kernel_std)
    if k.l2:
        kw["kernel_regularizer"] = keras.regularizers.L2(k.l2)
    return kw


def _saturated(k: Knobs, layer_type, *args, **extra):
    """The one pinned layer: a sigmoid with a +-10 bias, or a tanh drawn at stddev 8."""
    if k.saturate.startswith("sigmoid"):
        b = 10.0 if k.saturate.endswith("+10") else -10.0
        return layer_type(
            *args, activation="sigmoid", bias_initializer=keras.initializers.Constant(b), **extra
        )
    init = keras.initializers.RandomNormal(stddev=8.0)
    return layer_type(*args, activation="tanh", kernel_initializer=init, **extra)


def _preprocess(h, k: Knobs, adapt_x):
    if k.preprocess == "rescaling":
        return L.Rescaling(1 / 255)(h)
    if k.preprocess == "normalization":
        norm = L.Normalization()
        norm.adapt(np.asarray(adapt_x))
        return norm(h)
    return h


def _dense_stack(h, k: Knobs, width: int):
    kw = _dense_kw(k)
    for i in range(k.depth):
        if k.saturate and i == k.depth // 2:
            h = _saturated(k, L.Dense, width)(h)
        else:
            h = L.Dense(width, activation=k.act, **kw)(h)
    return h


def _two_convs(h, k: Knobs, kw: dict, conv, first_filters: int):
    """Two same-padded 3-wide convolutions, the second of 32 filters and the pinned one
    when the fault saturates a layer (the cnn and conv1d trunks). The layers are made in
    the order the cached runs were built with: `kw` is the caller's one _dense_kw."""
    h = conv(first_filters, 3, padding="same", activation=k.act, **kw)(h)
    if k.saturate:
        return _saturated(k, conv, 32, 3, padding="same")(h)
    return conv(32, 3, padding="same", activation=k.act, **kw)(h)


def mlp(x, k: Knobs):
    inp = keras.Input(x.shape[1:], name="features")
    h = _preprocess(inp, k, x)
    width = k.width if x.shape[1] >= 30 else 32
    return inp, _dense_stack(h, k, width)


def residual(x, k: Knobs):
    inp = keras.Input(x.shape[1:], name="features")
    h = L.Dense(64, activation="relu")(_preprocess(inp, k, x))
    kw = _dense_kw(k)
    for i in range(max(k.depth, 3)):
        if k.saturate and i == 1:
            branch = _saturated(k, L.Dense, 64)(h)
        else:
            branch = L.Dense(64, activation=k.act, **kw)(h)
        branch = L.Dense(64, **kw)(branch)
        h = L.Activation("relu")(L.Add()([h, branch]))
    return inp, h


def cnn(x, k: Knobs):
    inp = keras.Input(x.shape[1:], name="image")
    h = _preprocess(inp, k, x)
    kw = _dense_kw(k)
    h = _two_convs(h, k, kw, L.Conv2D, 16)
    h = L.MaxPooling2D()(h)
    return inp, L.Dense(64, activation=k.act, **kw)(L.Flatten()(h))


def cnn_bn(x, k: Knobs):
    """Bias-free convolutions scaled by BatchNorm; kernel_std makes the BN-rescaled trap."""
    inp = keras.Input(x.shape[1:], name="image")
    h = _preprocess(inp, k, x)
    kw = {}
    if k.kernel_std is not None:
        kw["kernel_initializer"] = keras.initializers.RandomNormal(stddev=k.kernel_std)
    for filters in (16, 32):
        h = L.Conv2D(filters, 3, padding="same", use_bias=False, **kw)(h)
        h = L.Activation("relu")(L.BatchNormalization(momentum=BN_MOMENTUM)(h))
    h = L.MaxPooling2D()(h)
    return inp, L.Flatten()(h)


def depthwise(x, k: Knobs):
    """A MobileNet-style block: depthwise 3x3 then BN, pointwise 1x1 then BN."""
    inp = keras.Input(x.shape[1:], name="image")
    h = _preprocess(inp, k, x)
    h = L.Activation("relu")(
        L.BatchNormalization(momentum=BN_MOMENTUM)(L.Conv2D(16, 3, padding="same")(h))
    )
    for filters in (32, 64):
        h = L.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
        h = L.ReLU(6.0)(L.BatchNormalization(momentum=BN_MOMENTUM)(h))
        h = L.Conv2D(filters, 1, use_bias=False)(h)
        h = L.ReLU(6.0)(L.BatchNormalization(momentum=BN_MOMENTUM)(h))
    return inp, L.GlobalAveragePooling2D()(h)


def _rnn(cell):
    def build(x, k: Knobs):
        inp = keras.Input(x.shape[1:], name="sequence")
        h = _preprocess(inp, k, x)
        return inp, cell(32)(h)

    return build


def conv1d(x, k: Knobs):
    inp = keras.Input(x.shape[1:], name="sequence")
    h = _preprocess(inp, k, x)
    h = _two_convs(h, k, _dense_kw(k), L.Conv1D, 32)
    return inp, L.Flatten()(h)


def attention(x, k: Knobs):
    """One small Transformer encoder block over the 8 pixel rows as tokens."""
    inp = keras.Input(x.shape[1:], name="tokens")
    h = L.Dense(32)(_preprocess(inp, k, x))
    h = h + keras.ops.expand_dims(L.Embedding(x.shape[1], 32)(keras.ops.arange(x.shape[1])), 0)
    a = L.MultiHeadAttention(num_heads=2, key_dim=16)(h, h)
    h = L.LayerNormalization()(h + a)
    f = L.Dense(32)(L.Dense(64, activation=k.act)(h))
    h = L.LayerNormalization()(h + f)
    return inp, L.Flatten()(h)


def embedding(x, k: Knobs):
    inp = keras.Input(x.shape[1:], name="ids", dtype="int32")
    h = L.Flatten()(L.Embedding(17, 8)(inp))
    return inp, L.Dense(64, activation=k.act, **_dense_kw(k))(h)


def multi_input(x: dict, k: Knobs):
    """Dict inputs: an image branch (or a first feature group) and a summary branch."""
    kw = _dense_kw(k)
    inputs = {name: keras.Input(v.shape[1:], name=name) for name, v in x.items()}
    branches = []
    for name, inp in inputs.items():
        h = _preprocess(inp, k, x[name])
        if len(inp.shape) == 4:
            h = L.Flatten()(L.Conv2D(16, 3, padding="same", activation=k.act, **kw)(h))
        else:
            h = L.Dense(16, activation=k.act, **kw)(h)
        branches.append(h)
    h = L.Concatenate()(branches)
    h = _saturated(k, L.Dense, 64)(h) if k.saturate else L.Dense(64, activation=k.act, **kw)(h)
    return inputs, h


TRUNKS = {
    "mlp": mlp,
    "residual": residual,
    "cnn": cnn,
    "cnn_bn": cnn_bn,
    "depthwise": depthwise,
    "lstm": _rnn(L.LSTM),
    "gru": _rnn(L.GRU),
    "simplernn": _rnn(L.SimpleRNN),
    "conv1d": conv1d,
    "attention": attention,
    "embedding": embedding,
    "multi_input": multi_input,
}

HEADS = {  # head kind -> (units from the task, activation)
    "softmax": "softmax",
    "sigmoid": "sigmoid",
    "linear": None,
}


def build(family: str, x, k: Knobs, units: int, head: str) -> keras.Model:
    """The family's trunk then the head: Dense(units, activation), or a double softmax."""
    inputs, h = TRUNKS[family](x, k)
    if head == "double_softmax":
        out = L.Activation("softmax")(L.Dense(units, activation="softmax")(h))
    else:
        out = L.Dense(units, activation=HEADS[head])(h)
    return keras.Model(inputs, out)
