"""Decode and check the sample batch the training job sent.

The batch is an `.npz` file: `x` and `y`, or `x_<input name>` per input for a
multi-input model and `y_<output name>` per output for a multi-output one. It is
untrusted: loaded without pickle, sized against the limits, and checked against
the model's inputs, outputs and loss before any of it reaches TensorFlow, so a
wrong batch gets a message instead of a stack trace.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradhealth_server.errors import InvalidBatch, LimitExceeded
from gradhealth_server.intake.limits import DEFAULT_LIMITS, Limits
from gradhealth_server.intake.zip_directory import DirectoryTooLarge, check_directory

# Labels as the loss takes them: one array, or one per output in the model's order
# (numpy arrays on the host, tensors inside the probe).
Targets = Any

# Without a model to say how many inputs it has: a generous bound on arrays.
MAX_BATCH_MEMBERS = 64


@dataclass(frozen=True)
class LabelsRead:
    """How one output's loss reads its labels: what the label checks need."""

    problem: str  # engine/facts.problem_of
    units: int | None
    loss: str | None


@dataclass
class Batch:
    """Inputs by model input name (as the model expects them) and labels."""

    x: dict[str, np.ndarray]
    # The first output's labels as its loss reads them (sparse ids truncated to
    # integers, as Keras does): what the label and output statistics describe.
    y: np.ndarray
    raw_x: dict[str, np.ndarray]  # as sent, before any dtype cast: its scale is evidence
    raw_y: np.ndarray | None = None  # as sent: labels that do not fit the loss are evidence
    # Every output's labels, in the model's output order (one output: [y]), as the
    # loss reads them and as sent.
    ys: list[np.ndarray] = field(default_factory=list)
    raw_ys: list[np.ndarray] = field(default_factory=list)

    @property
    def targets(self) -> Targets:
        """What the loss takes: y for one output, a list in output order for several."""
        return self.ys[0] if len(self.ys) <= 1 else list(self.ys)


def read_npz(
    source: str | Path | bytes,
    limits: Limits = DEFAULT_LIMITS,
    max_members: int = MAX_BATCH_MEMBERS,
) -> dict[str, np.ndarray]:
    """Arrays of an `.npz` file or its bytes, pickle refused. `max_members`: the
    arrays the model needs (its inputs and y); more is refused before parsing."""
    if isinstance(source, bytes):
        if len(source) > limits.max_batch_bytes:
            raise LimitExceeded(f"batch is {len(source)} bytes, over {limits.max_batch_bytes}")
        handle: Any = io.BytesIO(source)
    else:
        path = Path(source)
        size = path.stat().st_size
        if size > limits.max_batch_bytes:
            raise LimitExceeded(f"batch is {size} bytes, over {limits.max_batch_bytes}")
        handle = path
    try:
        if isinstance(handle, io.BytesIO):
            check_directory(handle, max_members, "the batch .npz")
        else:
            with open(handle, "rb") as raw:
                check_directory(raw, max_members, "the batch .npz")
        with zipfile.ZipFile(handle) as archive:
            _check_members(archive, limits)
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        with np.load(handle, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (InvalidBatch, LimitExceeded):
        raise
    except DirectoryTooLarge as exc:
        raise InvalidBatch(f"{exc}: send one array per model input, and y") from exc
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InvalidBatch("batch holds object arrays (pickles); send numeric arrays") from exc
        raise InvalidBatch(f"batch is not a readable .npz file: {exc}") from exc
    except (
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise InvalidBatch(f"batch is not a readable .npz file: {exc}") from exc


def _check_members(archive: zipfile.ZipFile, limits: Limits) -> None:
    """Every member an .npy array whose declared shape fits in what it holds.

    numpy allocates from the header's shape before reading data, so a 16-byte
    member declaring 10**12 elements must be refused here, not by numpy.
    """
    infos = archive.infolist()
    if not infos:
        raise InvalidBatch("batch .npz is empty: it needs arrays x and y")
    unpacked = sum(info.file_size for info in infos)
    if unpacked > limits.max_batch_bytes:
        raise LimitExceeded(f"batch unpacks to {unpacked} bytes, over {limits.max_batch_bytes}")
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    seen: set[str] = set()
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise InvalidBatch(f"batch member {info.filename!r} is not a numpy array (.npy)")
        if info.filename in seen:  # numpy would read the last, after parsing them all
            raise InvalidBatch(f"batch member {info.filename!r} appears twice")
        seen.add(info.filename)
        with archive.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
                if version not in readers:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, _, dtype = readers[version](member)
            except (ValueError, SyntaxError) as exc:  # numpy parses the header as a literal
                raise InvalidBatch(
                    f"batch member {info.filename!r} is not a numpy array (.npy): {exc}"
                ) from exc
        if dtype.hasobject:
            raise InvalidBatch("batch holds object arrays (pickles); send numeric arrays")
        declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if declared > info.file_size:
            raise InvalidBatch(
                f"batch member {info.filename!r} declares {declared} bytes but holds "
                f"{info.file_size}"
            )


def make_batch(
    arrays: dict[str, np.ndarray],
    input_specs: list[tuple[str, tuple[int | None, ...] | None, str]],
    facts: Any,
    limits: Limits = DEFAULT_LIMITS,
) -> Batch:
    """Match arrays to the model's inputs and the labels to its outputs and loss."""
    keys = _label_keys(arrays, tuple(getattr(facts, "output_names", ()) or ()))
    y = _numeric(arrays[keys[0]], keys[0])
    if y.ndim == 0 or y.shape[0] < 2:
        raise InvalidBatch(f"batch needs at least 2 examples ({keys[0]} has fewer)")
    rows = y.shape[0]
    others = []
    sent_others = [_numeric(arrays[key], key) for key in keys[1:]]
    for key, other, output in zip(
        keys[1:], sent_others, _other_outputs(facts, len(keys) - 1), strict=True
    ):
        if other.shape[0] != rows:
            raise InvalidBatch(f"{key} has {other.shape[0]} rows but {keys[0]} has {rows}")
        others.append(_check_labels(other, output, key))
    if rows > limits.max_batch_rows:
        raise LimitExceeded(f"batch has {rows} rows, over the limit of {limits.max_batch_rows}")
    raw_x: dict[str, np.ndarray] = {}
    x: dict[str, np.ndarray] = {}
    for name, shape, dtype in input_specs:
        key = _input_key(arrays, name, len(input_specs))
        arr = _numeric(arrays[key], key)
        if arr.shape[0] != rows:
            raise InvalidBatch(f"{key} has {arr.shape[0]} rows but y has {rows}")
        if shape is not None:
            _check_shape(key, arr.shape, shape)
        limit = getattr(facts, "id_input_limits", {}).get(name)
        if limit is not None and arr.size and (arr.min() < 0 or arr.max() >= limit):
            raise InvalidBatch(
                f"{key} holds ids in [{arr.min():g}, {arr.max():g}] but its Embedding has "
                f"{limit} entries (valid ids 0..{limit - 1})"
            )
        raw_x[name] = arr
        x[name] = _cast(arr, dtype, key) if dtype else arr
    sent = y
    first = LabelsRead(
        getattr(facts, "problem", "unknown"),
        getattr(facts, "output_units", None),
        getattr(facts, "loss", None),
    )
    y = _check_labels(y, first, keys[0])
    return Batch(x=x, y=y, raw_x=raw_x, raw_y=sent, ys=[y, *others], raw_ys=[sent, *sent_others])


def _other_outputs(facts: Any, n: int) -> list[LabelsRead | None]:
    """How the loss of each later output reads its labels (unknown: None, no check
    but finiteness)."""
    outputs = list(getattr(facts, "other_outputs", ()) or ())
    if len(outputs) != n:
        return [None] * n
    return [LabelsRead(o.problem, o.units, o.loss) for o in outputs]


def _label_keys(arrays: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[str]:
    """The batch's label arrays in the model's output order: `y` for one output,
    `y_<output name>` per output for several (a model's outputs are named by their
    layers). A plain `y` for several outputs is refused, naming what is expected."""
    if len(outputs) <= 1:
        name = outputs[0] if outputs else None
        for key in ("y", *((f"y_{name}",) if name else ())):
            if key in arrays:
                return [key]
        raise InvalidBatch("batch has no labels: the .npz needs an array named y")
    expected = [f"y_{name}" for name in outputs]
    missing = [key for key in expected if key not in arrays]
    if missing:
        have = ", ".join(sorted(arrays)) or "nothing"
        raise InvalidBatch(
            f"the model has {len(outputs)} outputs: the batch needs labels "
            f"{', '.join(expected)} (one per output), found {have}"
        )
    return expected


def as_model_inputs(model: Any, xs: list[Any]) -> Any:
    """The batch's inputs (in `input_names` order, the model's flat input order) in the
    structure the model was built with: a dict by key for `keras.Model(inputs={...})`, a
    list for a list, one tensor for one input. Keras refuses a list for a dict whose keys
    are not sorted, and warns when one tensor comes as a one-element list."""
    struct = getattr(model, "_inputs_struct", None)  # a functional model's own inputs
    if struct is not None:
        import keras

        return keras.tree.pack_sequence_as(struct, list(xs))
    return xs[0] if len(xs) == 1 else list(xs)


def take_rows(targets: Targets, start: int | None, stop: int | None) -> Targets:
    """Rows [start:stop) of every label array (one, or one per output)."""
    if isinstance(targets, (list, tuple)):
        return [t[start:stop] for t in targets]
    return targets[start:stop]


def swapped_halves(x: dict[str, np.ndarray], y: Targets, half: int) -> tuple[dict, Targets]:
    """The batch with rows [half:] first: a trial that trains on the first `half`
    rows and holds out the rest now holds out what it trained on."""

    def swap(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[half:], a[:half]])

    ys = [swap(t) for t in y] if isinstance(y, (list, tuple)) else swap(y)
    return {name: swap(a) for name, a in x.items()}, ys


def target_rows(targets: Targets) -> int:
    first = targets[0] if isinstance(targets, (list, tuple)) else targets
    return int(first.shape[0])


def _input_key(arrays: dict[str, np.ndarray], name: str, n_inputs: int) -> str:
    for key in (f"x_{name}", name):
        if key in arrays:
            return key
    if n_inputs == 1 and "x" in arrays:
        return "x"
    expected = "x" if n_inputs == 1 else f"x_{name}"
    have = ", ".join(sorted(arrays)) or "nothing"
    raise InvalidBatch(
        f"batch has no array for model input {name!r}: expected {expected!r}, found {have}"
    )


def _numeric(arr: np.ndarray, key: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise InvalidBatch(f"{key} has dtype {arr.dtype}; send numbers (int, uint, float, bool)")
    if arr.ndim == 0:
        raise InvalidBatch(f"{key} is a scalar; the first axis must be the batch")
    if arr.dtype.kind == "b":
        return arr.astype(np.float32)
    return arr


def _cast(arr: np.ndarray, dtype: str, key: str) -> np.ndarray:
    """The array in the model's dtype; a value the cast would turn into inf or
    garbage (1e39 to float32, NaN to int32) is refused, not silently changed."""
    try:
        with np.errstate(over="raise", invalid="raise"):
            return arr.astype(dtype, copy=False)
    except FloatingPointError as exc:
        span = f"[{arr.min():g}, {arr.max():g}]" if arr.size else "no values"
        raise InvalidBatch(f"{key} holds values {span} that {dtype} cannot represent") from exc


def _check_shape(key: str, got: tuple[int, ...], want: tuple[int | None, ...]) -> None:
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got[1:], want[1:])):
        expected = "(batch, " + ", ".join("?" if w is None else str(w) for w in want[1:]) + ")"
        raise InvalidBatch(f"{key} has shape {tuple(got)} but the model expects {expected}")


def _check_labels(y: np.ndarray, output: LabelsRead | None, key: str = "y") -> np.ndarray:
    """Labels the loss cannot take at all are refused (on GPU some give NaN silently):
    non-finite values, one-hot rows for sparse ids, ids beyond the output, rows of the
    wrong width. Labels it takes but misreads (binary crossentropy on class ids or on a
    regression target, fractional sparse ids, which Keras truncates) are the user's bug:
    they pass, as Keras would read them, and the loss_mismatch rule names them."""
    if y.size == 0:
        raise InvalidBatch(f"labels {key} have shape {y.shape}: no label in them")
    yf = y.astype(np.float64, copy=False)
    if not np.all(np.isfinite(yf)):
        raise InvalidBatch(f"labels {key} contain NaN or infinity")
    if output is None:
        return _cast(y, "float32", key) if y.dtype.kind == "f" else y
    problem, units = output.problem, output.units
    if problem == "sparse_categorical":
        if y.ndim > 1 and y.shape[-1] not in (1,) and units is not None and y.shape[-1] == units:
            raise InvalidBatch(
                f"labels {key} look one-hot (shape {y.shape}) but the loss is "
                "sparse_categorical_crossentropy, which takes class ids; use "
                f"categorical_crossentropy or send {key}.argmax(-1)"
            )
        # Keras casts sparse labels to integers, truncating: 0.7 is class 0.
        yf = np.trunc(yf)
        if units and (yf.min() < 0 or yf.max() >= units):
            raise InvalidBatch(
                f"labels {key} range over [{yf.min():g}, {yf.max():g}] but the model has {units} "
                f"output classes (valid ids 0..{units - 1})"
            )
        if yf.min() < 0 or yf.max() > np.iinfo(np.int32).max:
            # Output width unknown: still no id that the int32 cast below would garble.
            raise InvalidBatch(
                f"labels {key} range over [{yf.min():g}, {yf.max():g}]; class ids are 0 or more "
                "and fit in int32"
            )
        return yf.astype(np.int32)
    if problem == "categorical" and units and (y.ndim < 2 or y.shape[-1] != units):
        raise InvalidBatch(
            f"labels {key} have shape {y.shape} but {output.loss} needs one-hot rows of {units} "
            "classes; use sparse_categorical_crossentropy for class ids"
        )
    return _cast(y, "float32", key) if y.dtype.kind == "f" else y
