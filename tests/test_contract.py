"""The wire contract: generated code is importable without TensorFlow and
speaks the same taxonomy as the rules."""

from __future__ import annotations

import subprocess
import sys

from gradhealth.v1 import service_pb2, verdict_pb2
from gradhealth_server.verdict import Cause, Severity


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
            training_metrics=service_pb2.TrainingMetrics(loss=2.3),
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
        "import sys, gradhealth.v1.service_pb2_grpc, gradhealth.cli, gradhealth.render; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
