"""The hostile-checkpoint corpus (tests/hostile.py): every case refused with the
right status and a message naming the problem, by the screen meant to catch it
before Keras builds or reads anything, touching nothing outside the spool, in
bounded time and memory; embedded and through the real server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import grpc
import h5py
import keras
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from gradhealth.v1 import service_pb2
from gradhealth_server.errors import LimitExceeded
from gradhealth_server.intake.checkpoint import ModelCache, check_declared_size
from gradhealth_server.intake.config_screen import screen_config
from gradhealth_server.intake.model_size import declared_size
from gradhealth_server.intake.weights_file import screen_weights
from tests import hostile, models
from tests.hostile import CASES, EXHAUSTED, Base, Case
from tests.service import TOKEN, raw_diagnose

ROOT = Path(__file__).resolve().parents[1]
# The worker process, TensorFlow loaded, sits near 600 MB; a refused giant must
# not add more than this on top (a single float32 of the smallest giant is 4 GB).
MAX_GROWTH_MB = 256
MAX_PEAK_MB = 2048


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    return Base.create(Path(tmp_path_factory.mktemp("hostile")))


@pytest.fixture(scope="module")
def built(base) -> dict[str, Path]:
    return {case.name: case.build(base) for case in CASES}


@pytest.fixture(autouse=True)
def _private_temp_dir(tmp_path_factory, monkeypatch):
    """This process's temporary files go to a directory of its own, so that the
    check for new ones sees what loading a hostile checkpoint wrote, not what any
    other process on the machine writes to the shared /tmp meanwhile."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tempdir")))


class Outside:
    """What a test can see of the world outside the spool: the attack targets'
    access times (aged first, so that with relatime any read moves them), any
    new file there, and new entries in the temp directory and the cwd."""

    def __init__(self, base: Base) -> None:
        self.base = base
        for target in base.outside.iterdir():
            stat = target.stat()
            os.utime(target, (stat.st_mtime - 100, stat.st_mtime))
        self.atimes = {p.name: p.stat().st_atime for p in base.outside.iterdir()}
        self.temp = set(os.listdir(tempfile.gettempdir()))
        self.cwd = set(os.listdir())

    def assert_untouched(self) -> None:
        now = {p.name: p.stat().st_atime for p in self.base.outside.iterdir()}
        assert now == self.atimes, "a file outside the spool was created or read"
        assert set(os.listdir(tempfile.gettempdir())) <= self.temp
        assert set(os.listdir()) <= self.cwd


def _screen_alone(case: Case, path: Path) -> None:
    """Run only the screen that must refuse the case (no Keras build, no load)."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    if case.stage == "config":
        screen_config(config)
    elif case.stage == "weights":
        screen_weights(path)
    elif case.stage == "size":
        check_declared_size(config, screen_weights(path))
    else:
        raise AssertionError(f"no screen stage {case.stage!r}")


def test_the_base_checkpoint_passes_every_screen(base):
    """So each refusal below is the edit's doing."""
    config = base.config()
    screen_config(config)
    weights = screen_weights(base.path)
    check_declared_size(config, weights)
    entry, _, _ = ModelCache().load(base.path)
    assert declared_size(config).parameters == entry.model.count_params() == 1210
    assert weights.elements == 3632  # the weights plus Adam's two slots and two counters


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_checkpoint_is_refused_before_it_runs(base, built, case):
    path = built[case.name]
    outside = Outside(base)
    if case.stage == "keras":
        # Harmless until Keras's loader compares the two: every screen lets it by.
        config = json.loads(zipfile.ZipFile(path).read("config.json"))
        screen_config(config)
        check_declared_size(config, screen_weights(path))
    else:
        start = time.perf_counter()
        with pytest.raises(case.error, match=case.message):
            _screen_alone(case, path)
        assert time.perf_counter() - start < 1.0
    with pytest.raises(case.error, match=case.message):
        ModelCache().load(path)
    outside.assert_untouched()
    assert sorted(p.name for p in base.spool.iterdir()) == sorted(p.name for p in built.values())


@pytest.mark.parametrize(
    ("case", "dataset"),
    [
        ("h5-external-link", "layers/dense/vars/1"),
        ("h5-virtual-dataset", "layers/dense/vars/1"),
        ("h5-external-storage", "layers/dense/vars/1"),
    ],
)
def test_the_link_attacks_are_live(base, built, tmp_path, case, dataset):
    """Control for the test above: opened as Keras opens an extracted weights
    file, these datasets do read the file outside, and its access time shows it."""
    extracted = tmp_path / "model.weights.h5"
    extracted.write_bytes(zipfile.ZipFile(built[case]).read("model.weights.h5"))
    outside = Outside(base)
    with h5py.File(extracted, "r") as h5:
        values = h5[dataset][...]
    np.testing.assert_array_equal(values, np.arange(16, dtype="float32"))
    with pytest.raises(AssertionError, match="outside the spool"):
        outside.assert_untouched()


def test_giant_declarations_are_refused_in_bounded_time_and_memory(base, built):
    """Each giant case loaded in a fresh process that reports its peak RSS."""
    giants = [c for c in CASES if c.stage == "size"] + [
        hostile.BY_NAME["h5-chunked-fill-value-giant"],
        hostile.BY_NAME["h5-contiguous-never-written"],
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tests.hostile", "measure", *(str(built[c.name]) for c in giants)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    for case in giants:
        got = measured[case.name]
        assert got["outcome"].startswith(case.error.__name__), got
        assert re.search(case.message, got["outcome"]), got
        assert got["seconds"] < 1.0, got
        assert got["peak_rss_mb"] - got["rss_before_mb"] < MAX_GROWTH_MB, got
        assert got["peak_rss_mb"] < MAX_PEAK_MB, got


def test_a_cached_architecture_gets_its_new_weights_screened_too(base, built):
    """A second checkpoint of a cached architecture skips the build, not the screens."""
    cache = ModelCache()
    cache.load(base.path)
    with pytest.raises(Exception, match="ExternalLink"):
        cache.load(built["h5-external-link"])
    assert len(cache) == 1  # refused before the weights were touched: the entry stays
    with pytest.raises(Exception, match=r"could not load the checkpoint's weights.*shape"):
        cache.load(built["kernel-transposed"])
    assert len(cache) == 0  # half-loaded weights: the entry is dropped
    entry, _, hit = cache.load(base.path)
    assert not hit and entry.model.count_params() == 1210


def test_declared_size_is_exact_and_allocates_nothing(tmp_path):
    """The size screen compares the model's exact parameter count with the weights
    file, so it must never overstate a real model (or it would refuse it)."""
    from keras.src.backend.common import global_state

    x = keras.Input((6, 16))
    attention = keras.layers.MultiHeadAttention(2, 8)(x, x)
    recurrent = keras.layers.LSTM(4)(keras.layers.LayerNormalization()(attention))
    sequence = keras.Model(x, keras.layers.Dense(3, activation="softmax")(recurrent))
    for model in [builder() for builder in models.BUILDERS.values()] + [sequence]:
        config = json.loads(model.to_json())
        size = declared_size(config)
        assert size.parameters == model.count_params(), model.name
        assert not global_state.get_global_attribute("uninitialized_variables")


def test_keras_function_references_and_bfloat16_weights_are_accepted(tmp_path):
    """Real checkpoints the screens must let through: functions passed by object
    (serialized with module "builtins"), bfloat16 weights (HDF5 opaque), a
    re-zipped (deflated) archive."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation=keras.activations.gelu, dtype="bfloat16"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        "adam",
        keras.losses.sparse_categorical_crossentropy,
        metrics=[keras.metrics.sparse_categorical_accuracy],
    )
    path = tmp_path / "functions.keras"
    model.save(path)
    entry, _, _ = ModelCache().load(path)
    assert entry.model.count_params() == model.count_params()
    deflated = hostile.write_zip(
        tmp_path / "deflated.keras", hostile.read_members(path), zipfile.ZIP_DEFLATED
    )
    assert screen_weights(deflated) == screen_weights(path)
    assert not list(tmp_path.glob("tmp*"))  # the inflated copy of the weights is gone


# --- through the real server ------------------------------------------------------------


def _stream(checkpoint: bytes, batch: bytes, run_id: str) -> list[service_pb2.DiagnoseRequest]:
    def info(data: bytes) -> service_pb2.UploadInfo:
        return service_pb2.UploadInfo(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    header = service_pb2.DiagnoseHeader(
        run_id=run_id, step=1, checkpoint=info(checkpoint), batch=info(batch)
    )
    size = 256 * 1024
    return (
        [service_pb2.DiagnoseRequest(header=header)]
        + [
            service_pb2.DiagnoseRequest(checkpoint_chunk=checkpoint[i : i + size])
            for i in range(0, len(checkpoint), size)
        ]
        + [
            service_pb2.DiagnoseRequest(batch_chunk=batch[i : i + size])
            for i in range(0, len(batch), size)
        ]
    )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_checkpoint_over_grpc(server, base, built, batch, case):
    outside = Outside(base)
    messages = _stream(built[case.name].read_bytes(), Path(batch).read_bytes(), "hostile")
    with pytest.raises(grpc.RpcError) as caught:
        raw_diagnose(server, messages)
    status = (
        grpc.StatusCode.RESOURCE_EXHAUSTED
        if case.status == EXHAUSTED
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    assert caught.value.code() == status, caught.value.details()
    assert re.search(case.message, caught.value.details()), caught.value.details()
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
    outside.assert_untouched()


def test_server_diagnoses_after_the_hostile_corpus(server, checkpoints, batch):
    from gradhealth.client import GradientHealthClient

    with GradientHealthClient(server.target, token=TOKEN) as client:
        verdict = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="after-hostile")
    assert verdict.status in ("healthy", "warning", "critical")
    assert server.metric("gradhealth_rejected_total", reason="invalid_checkpoint") >= len(
        [c for c in CASES if c.status != EXHAUSTED]
    )
    assert server.spooled() == []


def test_keras_unpacks_an_archive_with_assets_inside_the_spool(tmp_path, monkeypatch):
    """Keras extracts every member of an archive with assets/ into a temp dir:
    with the machine's temp dir made unusable, the load still works, because
    those files go next to the checkpoint, and are gone after."""
    lookup = keras.layers.StringLookup()
    lookup.adapt(np.array([["a", "b", "c"]]))  # an adapted vocabulary is saved as an asset
    tokens = keras.Input((3,), dtype="string")
    ids = lookup(tokens)
    hidden = keras.layers.Flatten()(keras.layers.Embedding(5, 2)(ids))
    model = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy")
    spool = tmp_path / "spool"
    spool.mkdir()
    path = spool / "assets.keras"
    model.save(path)
    assert any(name.startswith("assets/") for name in zipfile.ZipFile(path).namelist())
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_directory))
    with pytest.raises(NotADirectoryError):
        keras.saving.load_model(path)  # the control: plain Keras uses the temp dir
    entry, _, _ = ModelCache().load(path)
    assert entry.model.count_params() == model.count_params()
    assert [p.name for p in spool.iterdir()] == ["assets.keras"]


def test_a_forward_pass_over_the_flop_budget_is_refused_from_shapes_alone():
    """FLOPs are estimated on the batch's shapes without allocating it: a Dense
    over 4096 rows of 4000 steps is 33 TFLOP, refused by name."""
    from gradhealth_server.errors import LimitExceeded
    from gradhealth_server.intake.intermediates import check_intermediates
    from gradhealth_server.intake.limits import Limits

    seq = keras.Input((None, 1000))
    model = keras.Model(seq, keras.layers.Dense(1000, name="wide")(seq))
    rows = np.broadcast_to(np.float32(0), (4096, 4000, 1000))  # no memory behind it
    with pytest.raises(LimitExceeded, match=r"about 32,768 GFLOP \(the most: wide"):
        check_intermediates(model, [rows], Limits())
    check_intermediates(model, [rows[:2, :10]], Limits())  # small: passes


def test_a_model_whose_probe_state_exceeds_the_workers_share_is_refused_before_loading(base):
    """1210 weights and 2420 values of Adam state: the probe holds about
    4 * (6 * 1210 + 2 * 2420) bytes. One byte under that, the screen refuses it in one
    line naming the figures and the flag; at it, it passes."""
    from gradhealth_server.intake.limits import PROBE_STATE_COPIES, PROBE_WEIGHT_COPIES, Limits

    config = base.config()
    size = declared_size(config)
    weights = screen_weights(base.path)
    needed = 4 * (PROBE_WEIGHT_COPIES * size.parameters + PROBE_STATE_COPIES * size.compile_state)
    assert size.parameters == 1210 and size.compile_state == 2 * 1210  # Adam's two slots
    check_declared_size(config, weights, Limits(max_probe_state_bytes=needed))
    with pytest.raises(
        LimitExceeded, match=r"needs about 0 MiB for its 1,210 weights and .*--worker-memory-mb\)$"
    ):
        check_declared_size(config, weights, Limits(max_probe_state_bytes=needed - 1))
