"""Size every layer output on the real batch before the probe allocates it.

`model_size` caps activations from the config, where a variable-length input has
unknown dimensions and counts them as 1. The batch fixes them: a `Dot` of a
(B, T, 8) input with itself makes a (B, T, T) tensor, so 64 rows of T = 4000 ask
for 4 GB that no config-time check could see. Here the model runs symbolically
(shapes only, nothing allocated) on the batch's own shapes and every output is
measured against the caps, naming the largest.

The probe keeps every layer output for the backward pass, which makes a
gradient of each, and its taps copy some: its peak is about PEAK_FACTOR times
the sum of the outputs (measured: a (64, 1500, 1500) float32 Dot output, 576 MiB,
takes a worker capped at 3000 MB down; (64, 1200, 1200), 369 MiB, fits without
XLA). The estimate is not a guarantee: with XLA compiling in the same 3000 MiB,
(64, 1200, 1200) reaches the address-space cap too. Such a death is the cap's, and
the caller is told so (service/worker_memory.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gradhealth_server.errors import LimitExceeded
from gradhealth_server.intake.limits import Limits

PEAK_FACTOR = 3


def check_intermediates(model: Any, inputs: list[np.ndarray], limits: Limits) -> None:
    """Refuse a batch whose layer outputs would need more than
    `limits.max_probe_activation_bytes` in the probe, or make more than
    `limits.max_activation_elements` values for one row in any output.

    A subclassed model has no graph to run symbolically: only its config-time
    checks and the worker's memory cap bound it.
    """
    import keras

    graph = _graph(model)
    if graph is None:
        return
    specs = [keras.KerasTensor(x.shape, dtype=str(x.dtype)) for x in inputs]
    rows = int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 1
    tally = _Tally()
    try:
        graph._run_through_graph(specs, operation_fn=_measuring(limits, rows, tally))
    except LimitExceeded:
        raise
    except Exception:  # a shape Keras cannot infer symbolically: the probe will say
        return
    gflops = tally.flops / 1e9
    if gflops > limits.max_forward_gflops:
        raise LimitExceeded(
            f"on this batch one forward pass is about {gflops:,.0f} GFLOP (the most: "
            f"{tally.heaviest}), over the limit of {limits.max_forward_gflops:,.0f}; the probe "
            "runs several: send fewer rows"
        )
    peak = PEAK_FACTOR * tally.total
    if peak > limits.max_probe_activation_bytes:
        raise LimitExceeded(
            f"on this batch the probe needs about {peak / 2**20:,.0f} MiB for layer outputs "
            f"(the largest: {tally.largest}), over the "
            f"{limits.max_probe_activation_bytes / 2**20:,.0f} MiB this worker's memory allows; "
            "send fewer rows or shorter sequences"
        )


class _Tally:
    """Bytes of every layer output seen, and the largest."""

    def __init__(self) -> None:
        self.total = 0
        self.largest_bytes = 0
        self.largest = "none"
        self.flops = 0
        self.heaviest_flops = 0
        self.heaviest = "none"

    def add_flops(self, name: str, flops: int) -> None:
        self.flops += flops
        if flops > self.heaviest_flops:
            self.heaviest_flops = flops
            self.heaviest = f"{name}, {flops / 1e9:,.0f} GFLOP"

    def add(self, name: str, shape: tuple[int, ...], nbytes: int) -> None:
        self.total += nbytes
        if nbytes > self.largest_bytes:
            self.largest_bytes = nbytes
            self.largest = f"{name} output {shape}, {nbytes / 2**20:,.0f} MiB"


def _graph(model: Any) -> Any:
    """The functional graph of a Functional or Sequential model, if it has one."""
    if hasattr(model, "_run_through_graph"):
        return model
    functional = getattr(model, "_functional", None)
    return functional if hasattr(functional, "_run_through_graph") else None


def _measuring(limits: Limits, rows: int, tally: _Tally) -> Callable[[Any], Callable[..., Any]]:
    def operation_fn(operation: Any) -> Callable[..., Any]:
        inner = _graph(operation)

        def call(*args: Any, **kwargs: Any) -> Any:
            _check_unrolled(operation, args, limits)
            out = None
            if inner is not None and args:  # a nested model: measure inside it too
                try:
                    out = inner._run_through_graph(args[0], operation_fn=operation_fn)
                except LimitExceeded:
                    raise
                except Exception:  # called in a way its graph does not take: as a whole
                    out = None
            if out is None:
                out = operation.compute_output_spec(*args, **kwargs)
            _check(operation, out, limits, rows, tally)
            if inner is None:
                tally.add_flops(getattr(operation, "name", "?"), _flops(operation, out))
            return out

        return call

    return operation_fn


def _check(operation: Any, out: Any, limits: Limits, rows: int, tally: _Tally) -> None:
    import keras

    for tensor in keras.tree.flatten(out):
        shape = tuple(getattr(tensor, "shape", ()) or ())
        if any(not isinstance(d, int) for d in shape):
            continue
        elements = math.prod(shape)
        try:
            itemsize = np.dtype(str(tensor.dtype)).itemsize
        except TypeError:
            itemsize = 4
        name = getattr(operation, "name", type(operation).__name__)
        per_row = elements // max(rows, 1)
        if per_row > limits.max_activation_elements:
            raise LimitExceeded(
                f"on this batch, {name} output {shape} holds {per_row:,} values per row, over "
                f"the limit of {limits.max_activation_elements:,}"
            )
        tally.add(name, shape, elements * itemsize)


def _check_unrolled(operation: Any, args: tuple[Any, ...], limits: Limits) -> None:
    """An RNN with `unroll=True` traces its cell once per time step: 3000 steps of a
    38-parameter SimpleRNN held a worker for the whole job timeout."""
    cells = [operation] + [
        getattr(operation, attr, None) for attr in ("layer", "forward_layer", "backward_layer")
    ]
    if not any(getattr(cell, "unroll", False) is True for cell in cells) or not args:
        return
    shape = tuple(getattr(args[0], "shape", ()) or ())
    steps = shape[1] if len(shape) > 1 else None
    if isinstance(steps, int) and steps > limits.max_unrolled_steps:
        name = getattr(operation, "name", type(operation).__name__)
        raise LimitExceeded(
            f"{name} is unrolled over {steps:,} time steps, over the limit of "
            f"{limits.max_unrolled_steps:,}; train with unroll=False"
        )


def _flops(operation: Any, out: Any) -> int:
    """Multiply-adds of a layer with a kernel: 2 x its kernel's size x the output
    positions that apply it (rows x spatial positions or time steps)."""
    import keras

    kernel = getattr(operation, "kernel", None)
    shape = tuple(getattr(kernel, "shape", ()) or ())
    if not shape:
        return 0
    flops = 0
    for tensor in keras.tree.flatten(out):
        dims = tuple(getattr(tensor, "shape", ()) or ())
        if dims and all(isinstance(d, int) for d in dims):
            flops += 2 * math.prod(shape) * (math.prod(dims) // max(dims[-1], 1))
    return flops
