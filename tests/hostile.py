"""Hostile checkpoints, built at test time from a real saved model.

Each case starts from a small real `.keras` file (a digits MLP trained one
step, so its optimizer has state) and edits the one part an attacker would:
config.json, model.weights.h5, or the zip. Files an attack would reach for
(link targets, payload markers) live in an `outside/` directory next to, not
inside, the directory the checkpoint is in, so a test can check that nothing
there was read or written.

`python -m tests.hostile measure CHECKPOINT...` loads each checkpoint in this
process and prints, per checkpoint, the outcome, the seconds it took and the
peak resident memory (VmHWM, reset between checkpoints): how the memory tests
observe a load from outside.
"""

from __future__ import annotations

import base64
import io
import json
import marshal
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gradhealth_server.errors import GradhealthError, InvalidCheckpoint, LimitExceeded
from tests.service import peak_rss_mb

INVALID = "INVALID_ARGUMENT"
EXHAUSTED = "RESOURCE_EXHAUSTED"
HIDDEN = "layers/dense"  # the h5 group of the model's first Dense layer


@dataclass(frozen=True)
class Base:
    """A real checkpoint and the places hostile variants of it go."""

    path: Path  # the real checkpoint
    wider: Path  # the same model with a 32-unit hidden layer instead of 16
    spool: Path  # where hostile checkpoints are written (the server's spool, in effect)
    outside: Path  # files an attack aims at; must stay unread and unwritten

    @staticmethod
    def create(root: Path) -> Base:
        spool, outside = root / "spool", root / "outside"
        spool.mkdir(parents=True, exist_ok=True)
        outside.mkdir(exist_ok=True)
        base = Base(
            _save_mlp(root / "base.keras", 16), _save_mlp(root / "wider.keras", 32), spool, outside
        )
        for name in ("target.h5", "target.raw"):
            _write_target(outside / name)
        return base

    def members(self, path: Path | None = None) -> dict[str, bytes]:
        return read_members(path or self.path)

    def config(self) -> dict[str, Any]:
        return json.loads(self.members()["config.json"])


def _save_mlp(path: Path, width: int) -> Path:
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(width, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ],
        name="hostile_base",
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.random((8, 8, 8, 1), "float32"), rng.integers(0, 10, 8))
    model.save(path)
    return path


def _write_target(path: Path) -> None:
    """An HDF5 file (for links and virtual datasets) or raw floats (external storage)."""
    if path.suffix == ".h5":
        with h5py.File(path, "w") as h5:
            h5["data"] = np.arange(16, dtype="float32")
    else:
        path.write_bytes(np.arange(16, dtype="float32").tobytes())


# --- writing variants --------------------------------------------------------------


def read_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def with_config(base: Base, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    config = base.config()
    edit(config)
    members = base.members()
    members["config.json"] = json.dumps(config).encode()
    return write_zip(base.spool / f"{name}.keras", members)


def with_weights(
    base: Base, name: str, edit: Callable[[h5py.File], None], source: Path | None = None
) -> Path:
    members = base.members()
    buffer = io.BytesIO(base.members(source)["model.weights.h5"])
    with h5py.File(buffer, "r+") as h5:
        edit(h5)
    members["model.weights.h5"] = buffer.getvalue()
    return write_zip(base.spool / f"{name}.keras", members)


def layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return config["config"]["layers"]


def layer(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in layers(config) if item["config"].get("name") == name)


def set_units(config: dict[str, Any], sizes: dict[str, int]) -> None:
    """Resize Dense layers as an attacker would: consistently, so Keras can build it."""
    for name, units in sizes.items():
        layer(config, name)["config"]["units"] = units
    for item in layers(config):
        item.pop("build_config", None)  # Sequential rebuilds every layer from its Input


def insert_layer(config: dict[str, Any], node: dict[str, Any], after: str = "flatten") -> None:
    items = layers(config)
    index = next(i for i, item in enumerate(items) if item["config"].get("name") == after)
    items.insert(index + 1, node)


def function_node(module: str, name: str) -> dict[str, Any]:
    return {
        "module": module,
        "class_name": "function",
        "config": name,
        "registered_name": "function",
    }


def lambda_payload(code: str) -> dict[str, Any]:
    """Keras's own encoding of a Python lambda: marshalled bytecode, base64."""
    compiled = compile(code, "<payload>", "eval")
    return {
        "class_name": "__lambda__",
        "config": {"value": base64.b64encode(marshal.dumps(compiled)).decode(), "defaults": None},
    }


# --- the corpus --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile checkpoint and how it must be refused.

    `stage` is the screen that must refuse it on its own, before Keras builds or
    reads anything: "config" (config_screen), "weights" (weights_file), "size"
    (model_size, before any allocation), or "keras" for mismatches that only
    Keras's own loader can see, which are harmless until then.
    """

    name: str
    build: Callable[[Base], Path]
    stage: str
    message: str  # a regex the refusal's message must match
    status: str = INVALID
    error: type[GradhealthError] = InvalidCheckpoint
    targets: tuple[str, ...] = field(default=())  # files in outside/ that must stay unread


def _marker(base: Base, name: str) -> str:
    return str(base.outside / f"{name}.pwned")


def _config_case(
    name: str, stage_message: str, edit: Callable[[Base, dict[str, Any]], None]
) -> Case:
    return Case(
        name,
        lambda base: with_config(base, name, lambda config: edit(base, config)),
        "config",
        stage_message,
    )


def _layer_node(module: str, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _activation(function: dict[str, Any]) -> Callable[[Base, dict[str, Any]], None]:
    def edit(base: Base, config: dict[str, Any]) -> None:
        layer(config, "hidden")["config"]["activation"] = function

    return edit


def _insert(node: Callable[[Base], dict[str, Any]]) -> Callable[[Base, dict[str, Any]], None]:
    def edit(base: Base, config: dict[str, Any]) -> None:
        insert_layer(config, node(base))

    return edit


CONFIG_CASES = [
    _config_case(
        "lambda-bytecode-layer",
        r"'payload' is a Lambda",
        _insert(
            lambda base: _layer_node(
                "keras.layers",
                "Lambda",
                {
                    "name": "payload",
                    "function": lambda_payload(f"open({_marker(base, 'lambda')!r}, 'w')"),
                },
            )
        ),
    ),
    _config_case(
        "lambda-bytecode-activation",
        r"is a __lambda__, which runs code",
        lambda base, config: _activation(lambda_payload(f"open({_marker(base, 'act')!r}, 'w')"))(
            base, config
        ),
    ),
    _config_case(
        "os-system-layer",
        r"'os\.system', which is not part of Keras",
        _insert(
            lambda base: _layer_node("os", "system", {"command": f"touch {_marker(base, 'os')}"})
        ),
    ),
    _config_case(
        "os-system-function",
        r"uses function 'os\.system', which is not part of Keras",
        _activation(function_node("os", "system")),
    ),
    _config_case(
        "subprocess-popen-layer",
        r"'subprocess\.Popen', which is not part of Keras",
        _insert(
            lambda base: _layer_node(
                "subprocess", "Popen", {"args": ["touch", _marker(base, "sub")]}
            )
        ),
    ),
    _config_case(
        "builtins-eval-class",
        r"'builtins\.eval', which is not part of Keras",
        _insert(lambda base: _layer_node("builtins", "eval", {"source": "1"})),
    ),
    _config_case(
        "builtins-eval-activation",
        r"names function 'eval' \(module 'builtins'\), which is not a Keras activation",
        _activation(function_node("builtins", "eval")),
    ),
    _config_case(
        "builtins-deserialize-activation",
        r"names function 'deserialize' \(module 'builtins'\)",
        _activation(function_node("builtins", "deserialize")),
    ),
    _config_case(
        "registered-name-builtins-eval",
        r"'hidden' at .* registered as 'builtins>eval'",
        lambda base, config: layer(config, "hidden").update(registered_name="builtins>eval"),
    ),
    _config_case(
        "get-file-as-layer",
        r"'keras\.utils\.get_file', not a modeling object",
        _insert(
            lambda base: _layer_node(
                "keras.utils",
                "get_file",
                {"fname": _marker(base, "download"), "origin": "http://127.0.0.1:9/payload"},
            )
        ),
    ),
    _config_case(
        "get-file-via-keras-src-module",
        r"'keras\.src\.utils\.get_file', which is a function, not a Keras layer",
        _insert(
            lambda base: _layer_node("keras.src.utils", "get_file", {"fname": "x", "origin": "y"})
        ),
    ),
    _config_case(
        "get-file-as-activation",
        r"names function 'get_file' \(module 'keras\.utils'\)",
        _activation(function_node("keras.utils", "get_file")),
    ),
    _config_case(
        "enable-unsafe-deserialization-as-activation",
        r"names function 'enable_unsafe_deserialization'",
        _activation(function_node("keras.config", "enable_unsafe_deserialization")),
    ),
    _config_case(
        "enable-unsafe-deserialization-as-layer",
        r"'keras\.config\.enable_unsafe_deserialization', not a modeling object",
        _insert(lambda base: _layer_node("keras.config", "enable_unsafe_deserialization", {})),
    ),
    _config_case(
        "saving-lib-load-model-as-layer",
        r"'keras\.src\.saving\.saving_lib\.load_model', which is a function",
        _insert(
            lambda base: _layer_node(
                "keras.src.saving.saving_lib", "load_model", {"filepath": "/etc/passwd"}
            )
        ),
    ),
    # Op classes (`x + y` is keras.src.ops.numpy.Add) are accepted only when defined in
    # Keras's ops modules; not what those modules import, nor ops that call functions.
    _config_case(
        "control-flow-op-as-layer",
        r"'keras\.src\.ops\.core\.WhileLoop', which is not a Keras layer",
        _insert(lambda base: _layer_node("keras.src.ops.core", "WhileLoop", {"name": "loop"})),
    ),
    _config_case(
        "operation-base-imported-into-an-ops-module",
        r"'keras\.src\.ops\.numpy\.Operation', which is not a Keras layer",
        _insert(lambda base: _layer_node("keras.src.ops.numpy", "Operation", {"name": "op"})),
    ),
    _config_case(
        "functional-graph-as-op",
        r"'keras\.src\.ops\.function\.Function', which is not a Keras layer",
        _insert(
            lambda base: _layer_node(
                "keras.src.ops.function", "Function", {"name": "f", "inputs": [], "outputs": []}
            )
        ),
    ),
    _config_case(
        "keras-class-that-is-not-a-layer",
        r"'keras\.callbacks\.BackupAndRestore', which is not a Keras layer",
        _insert(
            lambda base: _layer_node(
                "keras.callbacks", "BackupAndRestore", {"backup_dir": _marker(base, "backup")}
            )
        ),
    ),
    _config_case(
        "tfsm-layer",
        r"is a TFSMLayer",
        _insert(
            lambda base: _layer_node(
                "keras.layers", "TFSMLayer", {"name": "saved", "filepath": str(base.outside)}
            )
        ),
    ),
    _config_case(
        "torch-module-wrapper",
        r"is a TorchModuleWrapper",
        _insert(lambda base: _layer_node("keras.layers", "TorchModuleWrapper", {"name": "torch"})),
    ),
    _config_case(
        "safe-mode-false",
        r"config sets 'safe_mode'",
        lambda base, config: config.update(safe_mode=False),
    ),
    _config_case(
        "custom-objects",
        r"config sets 'custom_objects'",
        lambda base, config: layer(config, "hidden")["config"].update(
            custom_objects={"relu": function_node("builtins", "eval")}
        ),
    ),
    _config_case(
        "typespec-outside-tensorflow",
        r"type spec at .* names os\.system",
        lambda base, config: layer(config, "hidden")["config"].update(
            spec={
                "class_name": "__typespec__",
                "spec_name": "system",
                "module": "os",
                "config": ["id"],
                "registered_name": None,
            }
        ),
    ),
    _config_case(
        "numpy-value-with-a-4gb-dtype",
        r"__numpy__ value at .* has dtype 'U500000000'",
        lambda base, config: config["compile_config"].update(
            loss_weights={
                "class_name": "__numpy__",
                "config": {"value": ["a", "b"], "dtype": "U500000000"},
            }
        ),
    ),
    _config_case(
        "vocabulary-file-path",
        r"config names a file as 'vocabulary'",
        _insert(
            lambda base: _layer_node(
                "keras.layers", "StringLookup", {"name": "lookup", "vocabulary": "/etc/passwd"}
            )
        ),
    ),
]


def _weights_case(
    name: str, message: str, edit: Callable[[Base, h5py.File], None], *targets: str
) -> Case:
    return Case(
        name,
        lambda base: with_weights(base, name, lambda h5: edit(base, h5)),
        "weights",
        message,
        targets=targets,
    )


def _virtual(base: Base, h5: h5py.File) -> None:
    layout = h5py.VirtualLayout(shape=(16,), dtype="float32")
    layout[:] = h5py.VirtualSource(str(base.outside / "target.h5"), "data", shape=(16,))
    del h5[f"{HIDDEN}/vars/1"]
    h5.create_virtual_dataset(f"{HIDDEN}/vars/1", layout)


def _external_storage(base: Base, h5: h5py.File) -> None:
    del h5[f"{HIDDEN}/vars/1"]
    h5.create_dataset(
        f"{HIDDEN}/vars/1",
        shape=(16,),
        dtype="float32",
        external=[(str(base.outside / "target.raw"), 0, 64)],
    )


def _replace(path: str, **kwargs: Any) -> Callable[[Base, h5py.File], None]:
    def edit(base: Base, h5: h5py.File) -> None:
        del h5[path]
        h5.create_dataset(path, **kwargs)

    return edit


WEIGHTS_CASES = [
    _weights_case(
        "h5-external-link",
        r"'layers/dense/vars/1' is an HDF5 ExternalLink to '.*target\.h5'",
        lambda base, h5: (
            h5.__delitem__(f"{HIDDEN}/vars/1"),
            h5.__setitem__(
                f"{HIDDEN}/vars/1", h5py.ExternalLink(str(base.outside / "target.h5"), "/data")
            ),
        ),
        "target.h5",
    ),
    _weights_case(
        "h5-soft-link",
        r"is an HDF5 SoftLink to '/optimizer/vars/4'",
        lambda base, h5: (
            h5.__delitem__(f"{HIDDEN}/vars/1"),
            h5.__setitem__(f"{HIDDEN}/vars/1", h5py.SoftLink("/optimizer/vars/4")),
        ),
    ),
    _weights_case(
        "h5-external-storage",
        r"'layers/dense/vars/1' keeps its data in external files",
        _external_storage,
        "target.raw",
    ),
    _weights_case(
        "h5-virtual-dataset",
        r"'layers/dense/vars/1' is a virtual dataset mapping other files",
        _virtual,
        "target.h5",
    ),
    _weights_case(
        "h5-chunked-fill-value-giant",
        r"declares shape \(2000000000, 16\) \(128000000000 bytes\) in chunked storage",
        _replace(
            f"{HIDDEN}/vars/0",
            shape=(2_000_000_000, 16),
            dtype="float32",
            chunks=(1 << 16, 16),
            compression="gzip",
            fillvalue=1.0,
        ),
    ),
    _weights_case(
        "h5-contiguous-never-written",
        r"declares shape \(1000000000,\) \(4000000000 bytes\) but the file holds 0 bytes",
        _replace(f"{HIDDEN}/vars/1", shape=(1_000_000_000,), dtype="float32"),
    ),
    _weights_case(
        "h5-string-dataset",
        r"'layers/dense/vars/1' has dtype object",
        _replace(f"{HIDDEN}/vars/1", data=["a"] * 16, dtype=h5py.string_dtype()),
    ),
    _weights_case(
        "h5-object-reference-dataset",
        r"has dtype object",
        lambda base, h5: _replace(f"{HIDDEN}/vars/1", data=[h5.ref] * 16, dtype=h5py.ref_dtype)(
            base, h5
        ),
    ),
    _weights_case(
        "h5-compound-dataset",
        r"has dtype \[\('a', '<f4'\), \('b', '<f4'\)\]",
        _replace(f"{HIDDEN}/vars/1", data=np.zeros(16, dtype=[("a", "<f4"), ("b", "<f4")])),
    ),
    _weights_case(
        "h5-hard-link-alias",
        r"reachable under several names",
        lambda base, h5: h5.__setitem__("layers/alias", h5[f"{HIDDEN}/vars/0"]),
    ),
    _weights_case(
        "h5-attribute-string-list",
        r"attribute 'dtype' of 'layers/dense/vars/0' is a list of 2,000 variable-length strings",
        lambda base, h5: h5[f"{HIDDEN}/vars/0"].attrs.__setitem__(
            "dtype", np.array(["bfloat16"] * 2000, dtype=h5py.string_dtype())
        ),
    ),
    _weights_case(
        "h5-attribute-huge-string",
        r"holds 2\d,\d{3},\d{3} bytes outside its datasets",
        lambda base, h5: h5[f"{HIDDEN}/vars/0"].attrs.__setitem__(
            "dtype", np.array("b" * 20_000_000, dtype=h5py.string_dtype())
        ),
    ),
    _weights_case(
        "h5-attribute-reference",
        r"attribute 'dtype' of 'layers/dense/vars/0' is not a number or a string",
        lambda base, h5: h5[f"{HIDDEN}/vars/0"].attrs.__setitem__("dtype", h5.ref),
    ),
    _weights_case(
        "h5-committed-datatype",
        r"'layers/type' is a Datatype",
        lambda base, h5: h5.__setitem__("layers/type", np.dtype("float32")),
    ),
]


def _not_hdf5(base: Base) -> Path:
    members = base.members()
    members["model.weights.h5"] = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8
    return write_zip(base.spool / "not-hdf5.keras", members)


def _local_header_lies(base: Base) -> Path:
    """The central directory says model.weights.h5; the local header says otherwise."""
    path = write_zip(base.spool / "local-header.keras", base.members())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    name_at = info.header_offset + 30
    data[name_at : name_at + 5] = b"MODEL"
    path.write_bytes(bytes(data))
    return path


ZIP_CASES = [
    Case("weights-not-hdf5", _not_hdf5, "weights", r"model\.weights\.h5 is not a readable HDF5"),
    Case(
        "zip-local-header-disagrees",
        _local_header_lies,
        "weights",
        r"zip entry of model\.weights\.h5 is corrupt",
    ),
]


def _size_case(
    name: str,
    message: str,
    edit: Callable[[dict[str, Any]], None],
    status: str = INVALID,
    error: type[GradhealthError] = InvalidCheckpoint,
) -> Case:
    return Case(name, lambda base: with_config(base, name, edit), "size", message, status, error)


def _giant_embedding(config: dict[str, Any]) -> None:
    insert_layer(
        config,
        _layer_node(
            "keras.layers",
            "Embedding",
            {"name": "table", "input_dim": 100_000_000, "output_dim": 1_000},
        ),
        after="out",
    )
    set_units(config, {})


def _giant_conv(config: dict[str, Any]) -> None:
    items = layers(config)
    items[1:2] = [
        _layer_node(
            "keras.layers",
            "Conv2D",
            {"name": f"conv{i}", "filters": 100_000, "kernel_size": 3, "padding": "same"},
        )
        for i in (1, 2)
    ] + [items[1]]
    set_units(config, {})


def _giant_activation(config: dict[str, Any]) -> None:
    """Weights unchanged (pooling brings the width back), one activation of 6.4e10."""
    insert_layer(
        config, _layer_node("keras.layers", "RepeatVector", {"name": "repeat", "n": 10**9})
    )
    insert_layer(
        config,
        _layer_node("keras.layers", "GlobalAveragePooling1D", {"name": "pool"}),
        after="repeat",
    )
    set_units(config, {})


def _giant_input(config: dict[str, Any]) -> None:
    layers(config)[0]["config"]["batch_shape"] = [None, 10**12]
    layers(config).pop(1)  # no Flatten: Dense reads the giant input directly
    set_units(config, {})


def _compile_metric(class_name: str, **config: Any) -> Callable[[dict[str, Any]], None]:
    """A metric in compile_config whose state Keras allocates when it loads."""

    def edit(model_config: dict[str, Any]) -> None:
        node = {"module": "keras.metrics", "class_name": class_name, "config": config}
        model_config["compile_config"]["metrics"] = [node]

    return edit


SIZE_CASES = [
    _size_case(
        "dense-two-billion-units",
        r"declares a model of 150,000,000,010 parameters \(.*hidden/kernel of shape "
        r"\(64, 2000000000\)\) but model\.weights\.h5 holds only 3,632 values",
        lambda config: set_units(config, {"hidden": 2_000_000_000}),
    ),
    _size_case(
        "two-dense-200k-units",
        r"declares a model of 40,\d{3},\d{3},\d{3} parameters .*out/kernel of shape "
        r"\(200000, 200000\)",
        lambda config: set_units(config, {"hidden": 200_000, "out": 200_000}),
    ),
    _size_case("conv-100k-filters", r"conv2/kernel of shape \(3, 3, 100000, 100000\)", _giant_conv),
    _size_case(
        "embedding-1e11-table", r"table/embeddings of shape \(100000000, 1000\)", _giant_embedding
    ),
    _size_case("input-1e12-wide", r"hidden/kernel of shape \(1000000000000, 16\)", _giant_input),
    _size_case(
        "repeat-vector-1e9",
        r"makes 64,000,000,000 values in a single activation \(repeat output "
        r"\(None, 1000000000, 64\)\), over the limit",
        _giant_activation,
        EXHAUSTED,
        LimitExceeded,
    ),
    # Metric and optimizer state the compile_config builds at load (issue 15).
    _size_case(
        "compile-mean-iou-1e5-classes",
        r"holds 10,000,00\d,\d{3} values .* the largest iou/total_confusion_matrix "
        r"of shape \(100000, 100000\)\), over the limit",
        _compile_metric("MeanIoU", num_classes=100_000, name="iou"),
        EXHAUSTED,
        LimitExceeded,
    ),
    _size_case(
        "compile-auc-1e9-thresholds",
        r"compile_config\.metrics\[0\]\.config\.num_thresholds is 1,000,000,000, over the",
        _compile_metric("AUC", num_thresholds=1_000_000_000, name="auc"),
        EXHAUSTED,
        LimitExceeded,
    ),
]


def _mismatch(name: str, message: str, build: Callable[[Base], Path], stage: str) -> Case:
    return Case(name, build, stage, message)


MISMATCH_CASES = [
    _mismatch(
        "config-wider-than-weights",
        r"declares a model of 4,810 parameters .* holds only 3,632 values: the config and the "
        r"weights do not belong together",
        lambda base: with_config(
            base, "config-wider-than-weights", lambda config: set_units(config, {"hidden": 64})
        ),
        "size",
    ),
    _mismatch(
        "weights-of-a-wider-model",
        r"could not load the checkpoint.*shape=\(64, 16\)",
        lambda base: with_weights(base, "weights-of-a-wider-model", lambda h5: None, base.wider),
        "keras",
    ),
    _mismatch(
        "kernel-transposed",
        r"could not load the checkpoint.*shape=\(64, 16\)",
        lambda base: with_weights(
            base,
            "kernel-transposed",
            lambda h5: _replace(f"{HIDDEN}/vars/0", data=np.zeros((16, 64), "float32"))(base, h5),
        ),
        "keras",
    ),
    _mismatch(
        "variable-missing",
        r"could not load the checkpoint.*expected 2 variables, but received 1",
        lambda base: with_weights(
            base, "variable-missing", lambda h5: h5.__delitem__(f"{HIDDEN}/vars/1")
        ),
        "keras",
    ),
    _mismatch(
        "variable-extra",
        r"could not load the checkpoint.*expected 2 variables, but received 3",
        lambda base: with_weights(
            base,
            "variable-extra",
            lambda h5: h5.create_dataset(f"{HIDDEN}/vars/2", data=np.zeros(16, "float32")),
        ),
        "keras",
    ),
]

CASES: list[Case] = CONFIG_CASES + WEIGHTS_CASES + ZIP_CASES + SIZE_CASES + MISMATCH_CASES
BY_NAME = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"


# --- measuring a load from outside -------------------------------------------------


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def measure(paths: list[str]) -> dict[str, dict[str, Any]]:
    """Outcome, seconds and peak RSS of loading each checkpoint, TensorFlow and
    Keras already imported (as in a warm worker)."""
    import keras  # noqa: F401

    from gradhealth_server.intake.checkpoint import ModelCache

    results: dict[str, dict[str, Any]] = {}
    for path in paths:
        _reset_peak_rss()
        before = peak_rss_mb()
        start = time.perf_counter()
        try:
            ModelCache().load(path)
            outcome = "loaded"
        except GradhealthError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        results[Path(path).stem] = {
            "outcome": outcome,
            "seconds": time.perf_counter() - start,
            "rss_before_mb": before,
            "peak_rss_mb": peak_rss_mb(),
        }
    return results


if __name__ == "__main__":
    if sys.argv[1:2] != ["measure"]:
        raise SystemExit("usage: python -m tests.hostile measure CHECKPOINT...")
    from gradhealth_server.engine.device import quiet_tensorflow

    quiet_tensorflow()
    print(json.dumps(measure(sys.argv[2:])))
