"""Untrusted checkpoints and batches: each refused with a message saying what is wrong."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from gradhealth_server.errors import InvalidBatch, InvalidCheckpoint, LimitExceeded
from gradhealth_server.intake.archive import inspect_archive
from gradhealth_server.intake.limits import Limits
from tests import models

ROWS = 64


@pytest.fixture(scope="module")
def good_batch(tmp_path_factory) -> Path:
    x, y = models.digits()
    path = tmp_path_factory.mktemp("batch") / "batch.npz"
    np.savez(path, x=x[:ROWS], y=y[:ROWS])
    return path


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _members(checkpoint: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(checkpoint) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_not_a_zip(tmp_path, diagnoser, good_batch):
    path = tmp_path / "model.keras"
    path.write_bytes(b"\x89HDF\r\n" + bytes(range(256)) * 10)
    with pytest.raises(InvalidCheckpoint, match="not a zip archive"):
        diagnoser.diagnose(path, good_batch)


def test_truncated_zip(tmp_path, diagnoser, checkpoints, good_batch):
    data = checkpoints.path("cnn").read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidCheckpoint, match=r"not a zip|corrupt|truncated"):
        diagnoser.diagnose(path, good_batch)


def test_zip_bomb(tmp_path, checkpoints):
    members = _members(checkpoints.path("cnn"))
    members["model.weights.h5"] = b"\0" * (64 * 1024 * 1024)
    path = _zip(tmp_path / "bomb.keras", members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1024 * 1024  # tiny on disk, 64 MiB unpacked
    with pytest.raises(LimitExceeded, match="zip bomb"):
        inspect_archive(path)


def test_unpacked_size_cap(tmp_path, checkpoints):
    members = _members(checkpoints.path("cnn"))
    path = _zip(tmp_path / "big.keras", members)
    with pytest.raises(LimitExceeded, match="unpacks to"):
        inspect_archive(path, Limits(max_unpacked_bytes=1000))


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "assets/../../x", "a\\..\\b"])
def test_path_traversal_member(tmp_path, checkpoints, name):
    members = _members(checkpoints.path("cnn"))
    members[name] = b"owned"
    path = _zip(tmp_path / "traversal.keras", members)
    with pytest.raises(InvalidCheckpoint, match="unsafe"):
        inspect_archive(path)


def test_symlink_member(tmp_path, checkpoints):
    path = tmp_path / "link.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in _members(checkpoints.path("cnn")).items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("assets/passwd")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(InvalidCheckpoint, match="symbolic link"):
        inspect_archive(path)


def test_unexpected_member(tmp_path, checkpoints):
    members = _members(checkpoints.path("cnn"))
    members["payload.py"] = b"import os"
    with pytest.raises(InvalidCheckpoint, match=r"unexpected archive member .payload\.py."):
        inspect_archive(_zip(tmp_path / "extra.keras", members))


def test_lambda_layer_is_refused_naming_the_layer(tmp_path, diagnoser, good_batch):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Lambda(lambda t: t * 2.0, name="sneaky_lambda"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(InvalidCheckpoint, match=r"'sneaky_lambda' is a Lambda"):
        diagnoser.diagnose(path, good_batch)


def test_class_outside_keras_is_refused(checkpoints, diagnoser, good_batch):
    with pytest.raises(InvalidCheckpoint, match=r"SubclassedMLP.*not part of Keras"):
        diagnoser.diagnose(checkpoints.path("subclassed"), good_batch)


def test_uncompiled_model(tmp_path, diagnoser, good_batch):
    path = tmp_path / "uncompiled.keras"
    models.cnn().save(path)
    with pytest.raises(InvalidCheckpoint, match="uncompiled"):
        diagnoser.diagnose(path, good_batch)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x": np.zeros((ROWS, 64), "float32"), "y": np.zeros(ROWS, "int32")},
            r"x has shape \(64, 64\) but the model expects \(batch, 8, 8, 1\)",
        ),
        (
            {"x": np.full((ROWS, 8, 8, 1), "a"), "y": np.zeros(ROWS, "int32")},
            "dtype <U1; send numbers",
        ),
        ({"x": np.zeros((ROWS, 8, 8, 1), "float32")}, "no labels"),
        (
            {"pixels": np.zeros((ROWS, 8, 8, 1), "float32"), "y": np.zeros(ROWS, "int32")},
            "no array for model input",
        ),
        (
            {"x": np.zeros((ROWS, 8, 8, 1), "float32"), "y": np.full(ROWS, 12)},
            r"range over \[12, 12\] but the model has 10 output classes",
        ),
        (
            {"x": np.zeros((ROWS, 8, 8, 1), "float32"), "y": np.eye(10)[np.arange(ROWS) % 10]},
            "look one-hot",
        ),
        (
            {"x": np.zeros((ROWS, 8, 8, 1), "float32"), "y": np.zeros(ROWS - 1, "int32")},
            "has 64 rows but y has 63",
        ),
        # Fractional ids are read as Keras reads them (truncated); beyond the output they
        # are still unusable. (Within it they are a loss_mismatch finding, not a refusal.)
        (
            {"x": np.zeros((ROWS, 8, 8, 1), "float32"), "y": np.full(ROWS, 10.5)},
            r"range over \[10, 10\] but the model has 10 output classes",
        ),
        (
            {"x": np.zeros((ROWS, 8, 8, 1), "float32"), "y": np.full(ROWS, np.nan)},
            "NaN or infinity",
        ),
    ],
    ids=[
        "shape",
        "dtype",
        "no-y",
        "input-name",
        "label-range",
        "one-hot",
        "rows",
        "float-ids-beyond-the-output",
        "nan-labels",
    ],
)
def test_batch_that_does_not_fit(checkpoints, diagnoser, arrays, message):
    with pytest.raises(InvalidBatch, match=message):
        diagnoser.diagnose(checkpoints.path("cnn"), _npz(**arrays))


def test_pickled_batch_is_refused(checkpoints, diagnoser):
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}] * ROWS, dtype=object), y=np.zeros(ROWS))
    with pytest.raises(InvalidBatch, match="pickles"):
        diagnoser.diagnose(checkpoints.path("cnn"), buffer.getvalue())


def test_garbage_batch(checkpoints, diagnoser):
    with pytest.raises(InvalidBatch, match=r"not a readable \.npz"):
        diagnoser.diagnose(checkpoints.path("cnn"), b"PK\x03\x04 definitely not numpy")


def test_batch_row_cap(checkpoints):
    from gradhealth_server.diagnosis import Diagnoser

    x, y = models.digits()
    small = Diagnoser(limits=Limits(max_batch_rows=32))
    with pytest.raises(LimitExceeded, match="over the limit of 32"):
        small.diagnose(checkpoints.path("cnn"), _npz(x=x[:ROWS], y=y[:ROWS]))


def test_categorical_loss_with_class_ids(tmp_path, diagnoser):
    model = models.cnn()
    model.compile("adam", "categorical_crossentropy")
    path = tmp_path / "categorical.keras"
    model.save(path)
    x, y = models.digits()
    with pytest.raises(InvalidBatch, match="needs one-hot rows of 10 classes"):
        diagnoser.diagnose(path, _npz(x=x[:ROWS], y=y[:ROWS]))


def test_cache_survives_bad_input(checkpoints, diagnoser, good_batch):
    """A refused request leaves the cached model usable."""
    ok = diagnoser.diagnose(checkpoints.path("cnn"), good_batch)
    with pytest.raises(InvalidBatch):
        diagnoser.diagnose(checkpoints.path("cnn"), _npz(x=np.zeros((ROWS, 3)), y=np.zeros(ROWS)))
    again = diagnoser.diagnose(checkpoints.path("cnn"), good_batch)
    assert again.measurements.loss == pytest.approx(ok.measurements.loss, rel=1e-6)


@pytest.mark.parametrize(
    "config",
    [b'{"class_name": "X", "a": ' + b"9" * 5000 + b"}", b"[" * 100_000],
    ids=["huge-int", "deep-nesting"],
)
def test_hostile_config_json(tmp_path, checkpoints, config):
    members = _members(checkpoints.path("cnn"))
    members["config.json"] = config
    with pytest.raises(InvalidCheckpoint, match=r"config\.json is not valid JSON"):
        inspect_archive(_zip(tmp_path / "hostile.keras", members))


def test_corrupt_deflate_stream(tmp_path, checkpoints):
    members = _members(checkpoints.path("cnn"))
    path = _zip(tmp_path / "corrupt.keras", members, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("config.json")
    start = info.header_offset + 30 + len(info.filename)
    data[start : start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidCheckpoint, match="corrupt"):
        inspect_archive(path)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def _raw_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_npz(x=np.zeros(3))[:0] + b"\x93NUMPY", "not a readable .npz"),
        (_raw_zip({"x.npy": _npy_header((10**12,)) + b"\0" * 16}), "declares 8000000000000"),
        (_raw_zip({"y.npy": b"world"}), "is not a numpy array"),
        (_raw_zip({"y": b"world"}), "is not a numpy array"),
        (_raw_zip({}), "empty"),
    ],
    ids=["plain-npy", "huge-declared-shape", "not-npy-content", "not-npy-name", "empty"],
)
def test_hostile_npz(checkpoints, diagnoser, data, message):
    with pytest.raises(InvalidBatch, match=message):
        diagnoser.diagnose(checkpoints.path("cnn"), data)


def test_unbuilt_and_frozen_models(tmp_path, diagnoser, good_batch):
    empty = keras.Sequential()
    empty.compile("adam", "mse")
    empty.save(tmp_path / "empty.keras")
    with pytest.raises(InvalidCheckpoint, match="never built"):
        diagnoser.diagnose(tmp_path / "empty.keras", good_batch)
    frozen = models.cnn()
    for layer in frozen.layers:
        layer.trainable = False
    frozen.compile("adam", "sparse_categorical_crossentropy")
    frozen.save(tmp_path / "frozen.keras")
    with pytest.raises(InvalidCheckpoint, match="no trainable weights"):
        diagnoser.diagnose(tmp_path / "frozen.keras", good_batch)


def test_config_nested_just_below_the_json_limit(tmp_path, checkpoints):
    from gradhealth_server.intake.checkpoint import ModelCache

    members = _members(checkpoints.path("cnn"))
    members["config.json"] = (
        b'{"class_name": "X", "config": ' + b'{"a": ' * 2000 + b"1" + (b"}" * 2001)
    )
    with pytest.raises(InvalidCheckpoint, match=r"nests too deeply|not valid JSON"):
        ModelCache().load(_zip(tmp_path / "nested.keras", members))
