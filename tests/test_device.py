"""The device choices a worker makes once, at start: on a CPU the probe's plain graph
skips Grappler's rewrites (half of a cold probe's first call, README "The cold path")
unless GRADHEALTH_GRAPPLER=on; XLA follows the device unless GRADHEALTH_XLA says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SHOW = (
    "import json, tensorflow as tf;"
    "from gradhealth_server.engine.device import configure_device, xla_by_default;"
    "device = configure_device();"
    "options = tf.config.optimizer.get_experimental_options();"
    "print(json.dumps([device, options.get('disable_meta_optimizer', False), xla_by_default()]))"
)


def device_choices(**env: str) -> list:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRADHEALTH_")}
    out = subprocess.run(
        [sys.executable, "-c", SHOW],
        env={**environ, "CUDA_VISIBLE_DEVICES": "", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_cpu_worker_skips_grappler_and_xla_by_default():
    assert device_choices() == ["/CPU:0", True, False]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GRADHEALTH_GRAPPLER": "on"}, ["/CPU:0", False, False]),
        ({"GRADHEALTH_XLA": "on"}, ["/CPU:0", True, True]),
    ],
)
def test_the_environment_overrides_either_choice(env, expected):
    assert device_choices(**env) == expected


@pytest.mark.parametrize(
    ("value", "gpu", "expected"),
    [("", True, True), ("", False, False), ("off", True, False), ("on", False, True)],
)
def test_on_a_gpu_the_rewrites_stay_unless_switched_off(monkeypatch, value, gpu, expected):
    from gradhealth_server.engine.device import graph_rewrites_by_default

    monkeypatch.setenv("GRADHEALTH_GRAPPLER", value)
    assert graph_rewrites_by_default(gpu=gpu) is expected
