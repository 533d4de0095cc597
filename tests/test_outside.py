"""The outside set's bookkeeping, without training or TensorFlow: the registered runs (whose
names fix the training seeds), their labels and twins, the frozen split, the runs directory
and the table built from saved metas and verdicts."""

from __future__ import annotations

import hashlib
import json

from bench.corpus.split import split_of
from bench.outside import cache, evaluate
from bench.outside.registry import all_runs
from bench.outside.table import table, verified
from gradhealth_server.verdict.findings import Cause


def test_the_runs_are_the_ones_trained():
    runs = all_runs()
    # A run's seed is its index among the sorted names: a new, removed or renamed run moves
    # the seeds of others, and the saved runs no longer match the code.
    names = "\n".join(sorted(runs)).encode()
    assert hashlib.sha256(names).hexdigest()[:16] == "29595c707c390407"
    assert len(runs) == 74
    assert sum(spec["evaluated"] for spec in runs.values()) == 71


def test_every_fault_names_a_healthy_twin_and_known_causes():
    runs = all_runs()
    causes = {str(c) for c in Cause}
    for name, spec in runs.items():
        if spec["label"] == "healthy":
            assert spec["twin"] is None and name.startswith("h_")
            continue
        assert name.startswith("f_") and spec["label"] in causes
        assert set(spec["accept"]) <= causes
        assert runs[spec["twin"]]["label"] == "healthy"


def test_the_split_is_frozen():
    assert evaluate.SPLIT_SEED == "redteam-v1"  # changing it reshuffles dev and test
    assert split_of("f_seq_lstm_adam_lr_x100", evaluate.SPLIT_SEED) == "dev"
    assert split_of("f_digits_mlp_adam_lr_x100", evaluate.SPLIT_SEED) == "test"
    assert len(evaluate.select("dev")) == 28
    assert len(evaluate.select("test")) == 43
    assert evaluate.select("dev", ["lstm"]) == [
        "f_seq_lstm_adam_lr_x100",
        "f_digits_lstm_pixels_0_255",
    ]


def test_the_runs_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV, raising=False)
    assert cache.runs_dir() == cache.ROOT / "v1"
    assert cache.ROOT.parts[-2:] == (".cache", "outside")
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    assert cache.run_dir("h_blobs_adagrad") == tmp_path / "h_blobs_adagrad"
    assert cache.gradhealth_command()[0]


def _save(tmp_path, name, value, verdict=None):
    spec = all_runs()[name]
    d = tmp_path / name
    d.mkdir()
    meta = dict(metric="test_acc", value=value, train_loss=0.1, pred_classes=2)
    meta.update(label=spec["label"], twin=spec["twin"], accept=spec["accept"], note="")
    (d / "meta.json").write_text(json.dumps(meta))
    if verdict is not None:
        (d / "verdict.json").write_text(json.dumps(dict(returncode=0, verdict=verdict)))


def test_the_table_from_saved_runs(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    healthy = dict(status="healthy", primary_cause=None, findings=[])
    hit = dict(
        status="critical",
        primary_cause="learning_rate_too_high",
        findings=[dict(cause="learning_rate_too_high", severity="critical", confidence=0.9)],
    )
    _save(tmp_path, "h_digits_mlp_adam", 0.97, healthy)
    _save(tmp_path, "f_digits_mlp_adam_lr_x100", 0.80, hit)
    out = tmp_path / "out"
    s = table(out=out)
    assert s["diagnosed"] == 2 and s["top1"] == 1 and s["false_alarms"] == 0
    assert s["faulty_verified"] == 1
    assert len(s["errors"]) == 69  # the runs not saved here
    assert (out / "results.md").exists() and (out / "results.json").exists()
    assert verified(dict(value=float("nan"), twin_value=0.9)) is True
    assert verified(dict(value=0.89, twin_value=0.9)) is False
