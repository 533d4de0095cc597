"""The wire contract: generated code is importable without TensorFlow and
speaks the same taxonomy as the rules."""

from __future__ import annotations

import subprocess
import sys

from gradhealth.v1 import service_pb2, verdict_pb2
from gradhealth_server.verdict.findings import Cause, Severity


def test_every_cause_and_severity_is_on_the_wire():
    for cause in Cause:
        assert verdict_pb2.Cause.Value(f"CAUSE_{cause.name}") > 0
    assert len(verdict_pb2.Cause.keys()) == len(Cause) + 1  # + CAUSE_UNSPECIFIED
    for severity in Severity:
        assert verdict_pb2.Severity.Value(f"SEVERITY_{severity.name}") > 0


def test_a_diagnose_stream_round_trips():
    header = service_pb2.DiagnoseRequest(
        header=service_pb2.DiagnoseHeader(
            run_id="run-1",
            step=300,
            checkpoint=service_pb2.UploadInfo(size_bytes=3, sha256="ab" * 32),
            training_metrics=verdict_pb2.TrainingMetrics(loss=2.3),
        )
    )
    again = service_pb2.DiagnoseRequest.FromString(header.SerializeToString())
    assert again.WhichOneof("part") == "header"
    assert again.header.training_metrics.HasField("loss")
    assert not again.header.training_metrics.HasField("accuracy")
    chunk = service_pb2.DiagnoseRequest(checkpoint_chunk=b"PK\x03\x04")
    assert (
        service_pb2.DiagnoseRequest.FromString(chunk.SerializeToString()).WhichOneof("part")
        == "checkpoint_chunk"
    )


def test_client_side_imports_no_tensorflow():
    code = (
        "import sys, gradhealth.v1.service_pb2_grpc, gradhealth.cli, gradhealth.render, "
        "gradhealth.verdicts; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_a_verdict_crosses_the_wire_unchanged(checkpoints, diagnoser, tmp_path):
    """Server mode must print what embedded mode prints (issue 4 builds on this)."""
    import datetime as dt
    import json

    import numpy as np

    from gradhealth.verdicts import verdict_to_dict
    from gradhealth_server.verdict.wire import to_verdict
    from tests import models

    x, y = models.digits(scale=255 / 16)
    batch = tmp_path / "batch.npz"
    np.savez(batch, x=x[:128], y=y[:128])
    diagnosis = diagnoser.diagnose(checkpoints.path("cnn"), batch)
    embedded = json.loads(json.dumps(diagnosis.to_dict()))
    wire = to_verdict(
        diagnosis,
        verdict_id="v-1",
        run_id="run-1",
        step=7,
        created=dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
    )
    back = verdict_to_dict(verdict_pb2.Verdict.FromString(wire.SerializeToString()))
    assert back["status"] == embedded["status"]
    assert back["primary_cause"] == embedded["primary_cause"]
    assert len(back["findings"]) == len(embedded["findings"]) > 0
    for got, want in zip(back["findings"], embedded["findings"], strict=True):
        for key in ("cause", "severity", "summary", "remedy", "layers", "evidence", "explained_by"):
            assert got[key] == want[key], key
    assert back["measurements"] == embedded["measurements"]
    assert back["fingerprint"] == embedded["fingerprint"]
    assert (back["run_id"], back["step"]) == ("run-1", 7)
