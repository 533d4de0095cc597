"""The corpus instrument end to end, on a handful of cheap runs: the generator trains and
caches them, verification labels them, the split is a stable pure function, and
`python -m bench.evaluate --suite corpus` writes dev and test figures.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from bench.corpus import cache
from bench.corpus.specs import HEALTHY, all_specs
from bench.corpus.split import SPLIT_SEED, sample, split_of
from bench.corpus.verify import decide

FEW = "mlp-iris-adamax"  # one iris base and the faults derived from it: seconds each


def test_the_spec_grid_is_wide_enough():
    specs = all_specs()
    assert len(specs) >= 300
    assert len({s.optimizer for s in specs}) >= 6
    assert len({s.family for s in specs}) >= 12
    for s in specs:
        if s.twin:
            assert s.twin in {t.name for t in specs}


def test_the_split_is_a_stable_pure_function_and_balanced():
    names = [s.name for s in all_specs()]
    assert SPLIT_SEED == "gradhealth-corpus-split-v1"  # changing it reshuffles dev and test
    # pinned: the assignment must never move once rules are tuned on dev
    assert split_of("mlp-digits-sgd") == "dev"
    assert split_of("mlp-digits-adam") == "test"
    assert [split_of(n) for n in names] == [split_of(n) for n in names]
    share = sum(split_of(n) == "test" for n in names) / len(names)
    assert 0.4 <= share <= 0.6, share
    assert sample(names, 30, seed=1) == sample(list(reversed(names)), 30, seed=1)
    assert sample(names, 30, seed=1) != sample(names, 30, seed=2)
    assert len(sample(names, 30, seed=1)) == 30


def test_verification_drops_or_relabels_a_run_whose_symptom_does_not_show():
    twin = {"task": "multiclass", "quality": 0.95, "final": HEALTHY, "finite": True}
    slow = {"task": "multiclass", "quality": 0.5, "finite": True, "loss_last": 1.0}
    fine = dict(slow, quality=0.93)
    assert decide("learning_rate_too_low", "", slow, twin)[0] == "learning_rate_too_low"
    assert decide("learning_rate_too_low", "", fine, twin)[0] is None
    nan = dict(slow, finite=False)
    assert decide("learning_rate_too_high", "", nan, twin)[0] == "non_finite"
    assert decide(HEALTHY, "", dict(fine, loss_first=2.0), None)[0] == HEALTHY


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    old = os.environ.get("GRADHEALTH_CORPUS_CACHE")
    os.environ["GRADHEALTH_CORPUS_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("GRADHEALTH_CORPUS_CACHE")
    else:
        os.environ["GRADHEALTH_CORPUS_CACHE"] = old


def test_generate_verify_split_and_report_end_to_end(corpus_cache, tmp_path, monkeypatch):
    from bench.evaluate import main

    report = tmp_path / "report.json"
    assert main(["--suite", "corpus", "--only", FEW, "--no-xla", "--json", str(report)]) == 0
    out = json.loads(report.read_text())["corpus"]
    comp = out["composition"]
    assert comp["candidates"] == len([s for s in all_specs() if FEW in s.name])
    assert comp["kept"] + comp["dropped"] == comp["candidates"]
    assert comp["by_cause"].get(HEALTHY) == 1  # the base verifies as healthy
    assert {o["split"] for o in out["outcomes"]} <= {"dev", "test"}
    for split in ("dev", "test"):
        if split in out:
            figures = out[split]
            assert {"confusion", "per_cause", "top1_accuracy", "false_alarm_rate", "errors"} <= set(
                figures
            )
            assert [r["bucket"] for r in figures["calibration"]["primary"]][-1] == "[0.9, 1.0]"
    for o in out["outcomes"]:
        assert o["split"] == split_of(o["scenario"])
        assert o["status"] in ("healthy", "warning", "critical", "error")

    # cached: a second evaluation trains nothing
    def no_training(spec):
        raise AssertionError(f"retrained {spec.name}")

    monkeypatch.setattr("bench.corpus.train.train", no_training)
    again = tmp_path / "again.json"
    assert main(["--suite", "corpus", "--only", FEW, "--no-xla", "--json", str(again)]) == 0
    first = {o["scenario"]: o["predicted"] for o in out["outcomes"]}
    second = {
        o["scenario"]: o["predicted"] for o in json.loads(again.read_text())["corpus"]["outcomes"]
    }
    assert first == second
    assert (cache.cache_dir() / FEW / "model.keras").exists()

    # A seeded sample of one split, --strict (what CI once ran on its own): it passes
    # on cached runs, and fails when nothing is evaluated.
    split = out["outcomes"][0]["split"]
    sampled = tmp_path / "sampled.json"
    argv = ["--suite", "corpus", "--only", FEW, "--no-xla", "--split", split]
    assert main([*argv, "--sample", "1", "--seed", "1", "--strict", "--json", str(sampled)]) == 0
    picked = json.loads(sampled.read_text())["corpus"]["outcomes"]
    assert len(picked) == 1 and picked[0]["split"] == split
    assert main([*argv[:2], "--only", "no-such-run", "--no-xla", "--strict"]) == 1
