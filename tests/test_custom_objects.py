"""Custom layers, losses and metrics (tests/custom_objects_fixture.py): refused unless
the operator allow-lists them (--allow-class MODULE.NAME), the refusal naming the
object and the flag; allowed, the module is imported where checkpoints are loaded
(embedded diagnose, every server worker) and the checkpoint is diagnosed."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import keras
import numpy as np
import pytest

from gradhealth.client import GradientHealthClient
from gradhealth_server.diagnosis import Diagnoser
from gradhealth_server.errors import InvalidCheckpoint
from gradhealth_server.intake.limits import Limits
from tests import custom_objects_fixture as fixture
from tests.service import TOKEN, ServerProcess, cli

MODULE = fixture.__name__  # tests.custom_objects_fixture
LAYER, LOSS, METRIC = f"{MODULE}.Scale", f"{MODULE}.scaled_mse", f"{MODULE}.mean_abs_error"
ALL = ",".join((LAYER, LOSS, METRIC))


@pytest.fixture(scope="module")
def custom(tmp_path_factory) -> tuple[Path, Path]:
    """A regression MLP with a custom layer, loss and metric, trained a few steps."""
    directory = tmp_path_factory.mktemp("custom")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], dtype="float32"))[:, None]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            fixture.Scale(),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", fixture.scaled_mse, metrics=[fixture.mean_abs_error])
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = directory / "custom.keras"
    model.save(path)
    batch = directory / "batch.npz"
    np.savez(batch, x=x[:128], y=y[:128])
    return path, batch


def test_refused_without_the_flag_naming_the_class_and_the_flag(custom):
    path, batch = custom
    with pytest.raises(InvalidCheckpoint) as caught:
        Diagnoser().diagnose(path, batch)
    assert f"uses class {LAYER!r}, which is not part of Keras" in str(caught.value)
    assert f"(--allow-class {LAYER})" in str(caught.value)


def test_custom_loss_and_metric_functions_go_through_the_allow_list(custom):
    path, batch = custom
    with pytest.raises(InvalidCheckpoint) as caught:
        Diagnoser(Limits(allowed_classes=frozenset({LAYER}))).diagnose(path, batch)
    text = str(caught.value)
    # Keras writes module "builtins" for a registered function: the message names its real one.
    assert f"loss uses function {LOSS!r}" in text and "builtins" not in text
    assert f"(--allow-class {LOSS})" in text
    with pytest.raises(InvalidCheckpoint, match=rf"uses function '{METRIC}'"):
        Diagnoser(Limits(allowed_classes=frozenset({LAYER, LOSS}))).diagnose(path, batch)
    d = Diagnoser(Limits(allowed_classes=frozenset({LAYER, LOSS, METRIC}))).diagnose(path, batch)
    assert d.measurements.static.loss == "scaled_mse"
    assert [layer.class_name for layer in d.measurements.layers] == ["Dense", "Scale", "Dense"]
    assert np.isfinite(d.measurements.loss)


def test_a_registered_function_unknown_here_names_its_package():
    from gradhealth_server.intake.config_screen import screen_config

    node = {
        "module": "builtins",
        "class_name": "function",
        "config": "teamlib>focal_loss",
        "registered_name": "function",
    }
    with pytest.raises(InvalidCheckpoint) as caught:
        screen_config({"compile_config": {"loss": node}})
    text = str(caught.value)
    assert "function 'focal_loss', registered with Keras by package 'teamlib'" in text
    assert "--allow-class MODULE.focal_loss" in text


def test_embedded_cli_takes_allow_class(custom):
    path, batch = custom
    refused = cli("diagnose", str(path), "--batch", str(batch), "--json", token=None)
    assert refused.returncode != 0
    assert f"(--allow-class {LAYER})" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    accepted = cli(
        "diagnose", str(path), "--batch", str(batch), "--json", "--allow-class", ALL, token=None
    )
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["measurements"]["static"]["loss"] == "scaled_mse"


def test_serve_refuses_an_allow_list_module_that_is_not_installed(tmp_path):
    out = cli("serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--allow-class", "nosuch.Layer")
    assert out.returncode != 0
    assert "--allow-class names module 'nosuch', which is not installed here" in out.stderr


def test_the_server_refuses_then_accepts_with_the_flag(server, custom, tmp_path):
    path, batch = custom
    with (
        GradientHealthClient(server.target, token=TOKEN, timeout=300) as client,
        pytest.raises(grpc.RpcError) as caught,
    ):
        client.diagnose(path, batch=batch, run_id="custom-refused")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The workers of this server never imported the module: the config's own names.
    assert f"(--allow-class {LAYER})" in caught.value.details()
    (tmp_path / "token").write_text(TOKEN + "\n")
    allowing = ServerProcess(
        tmp_path, "--token-file", str(tmp_path / "token"), "--allow-class", ALL
    ).start()
    with GradientHealthClient(allowing.target, token=TOKEN, timeout=300) as client:
        verdict = client.diagnose(path, batch=batch, run_id="custom-allowed", step=1)
    assert verdict.measurements["static"]["loss"] == "scaled_mse"
    assert np.isfinite(verdict.measurements["loss"])
    assert allowing.stop() == 0, allowing.log()
