"""One diagnosis, end to end: checkpoint + batch -> measurements -> verdict.

Used in-process by `gradhealth diagnose` (embedded mode) and by the service's
worker process. It owns the model cache, so successive checkpoints of one
architecture reuse the loaded model and the compiled probe.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gradhealth_server.engine.device import configure_device
from gradhealth_server.engine.init_gain import exploding_init
from gradhealth_server.engine.measure import build_measurements
from gradhealth_server.engine.measurements import (
    Measurements,
    ScratchTrial,
    StepTrial,
    finite_json,
)
from gradhealth_server.engine.output_losses import output_losses
from gradhealth_server.engine.probe import Probe, ProbeOptions, batch_signature
from gradhealth_server.engine.quantities.optimizer import loss_scale
from gradhealth_server.engine.structure import current_learning_rate, read_structure
from gradhealth_server.engine.trial_steps import Trials
from gradhealth_server.engine.trials import input_remedy, target_remedy
from gradhealth_server.engine.weights import frozen_at_init, weight_digests
from gradhealth_server.errors import Cancelled, InvalidBatch, LimitExceeded
from gradhealth_server.intake.allow_list import import_allowed
from gradhealth_server.intake.batch import (
    Batch,
    Targets,
    as_model_inputs,
    make_batch,
    read_npz,
    take_rows,
)
from gradhealth_server.intake.checkpoint import LoadedModel, ModelCache, dtype_policy_scope
from gradhealth_server.intake.intermediates import check_intermediates
from gradhealth_server.intake.limits import DEFAULT_LIMITS, Limits
from gradhealth_server.rules import build_rules, judge
from gradhealth_server.rules.exploding_gradients import ExplodingGradientsRule
from gradhealth_server.rules.history import NO_HISTORY, RunHistory
from gradhealth_server.rules.learning_rate_too_high import LearningRateTooHighRule
from gradhealth_server.rules.learning_rate_too_low import LearningRateTooLowRule
from gradhealth_server.rules.loss_mismatch import LossMismatchRule
from gradhealth_server.rules.unnormalized_input import UnnormalizedInputRule
from gradhealth_server.verdict.findings import RuleVerdict

log = logging.getLogger(__name__)

# What a checkpoint whose optimizer state Keras could not restore cannot show.
NO_OPTIMIZER_STATE = ("optimizer_state", "optimizer_step", "lr_probe")

# Each batch shape compiles its own probe; a client sending many shapes must not
# fill memory with them.
MAX_PROBES_PER_MODEL = 4


@dataclass
class Diagnosis:
    verdict: RuleVerdict
    measurements: Measurements
    fingerprint: str
    checkpoint_sha256: str
    cache_hit: bool
    probe_cached: bool
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase

    def to_dict(self) -> dict[str, Any]:
        out = self.verdict.to_dict()
        out.update(
            fingerprint=self.fingerprint,
            checkpoint_sha256=self.checkpoint_sha256,
            cache_hit=self.cache_hit,
            probe_cached=self.probe_cached,
            phases={k: round(v, 6) for k, v in self.phases.items()},
            measurements=self.measurements.to_dict(),
        )
        return finite_json(out)


class Diagnoser:
    """Holds the model cache; diagnose() is called once per checkpoint."""

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        options: ProbeOptions | None = None,
        cache_capacity: int = 8,
        rules_config: dict[str, dict[str, Any]] | None = None,
        gpu_memory_mb: int | None = None,
    ) -> None:
        self.device = configure_device(gpu_memory_mb)
        self.limits = limits
        # What the allow-list's modules register with Keras must be registered here
        # (every worker process) before a checkpoint naming it is loaded.
        import_allowed(limits.allowed_classes)
        self.options = options or ProbeOptions()
        self.cache = ModelCache(cache_capacity, limits)
        self.rules_config = rules_config or {}
        self.rules = build_rules(self.rules_config)  # fails fast on a bad config
        # The trials run when these rules, as configured, propose their remedy.
        self._input_rule = next(r for r in self.rules if isinstance(r, UnnormalizedInputRule))
        self._lr_low_rule = next(r for r in self.rules if isinstance(r, LearningRateTooLowRule))
        self._lr_high_rule = next(r for r in self.rules if isinstance(r, LearningRateTooHighRule))
        self._exploding_rule = next(r for r in self.rules if isinstance(r, ExplodingGradientsRule))
        self._loss_rule = next(r for r in self.rules if isinstance(r, LossMismatchRule))

    def diagnose(
        self,
        checkpoint: str | Path,
        batch: str | Path | bytes | dict[str, np.ndarray],
        options: ProbeOptions | None = None,
        checkpoint_sha256: str | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        history: RunHistory = NO_HISTORY,
    ) -> Diagnosis:
        """Diagnose one checkpoint; pass its sha256 when already known (the service
        hashes uploads while spooling them) to skip reading the file once more.

        `should_stop` is asked between phases: the service drops the work of a call
        that was cancelled or ran out of time (raises Cancelled). `history` is the
        run's earlier checkpoints, for the causes only visible across them.
        """
        import tensorflow as tf

        def checkpoint_phase() -> None:
            if should_stop():
                raise Cancelled("the call was cancelled or its deadline passed")

        options = options or self.options
        phases: dict[str, float] = {}
        checkpoint_phase()  # it may have been cancelled on its way to the worker
        t0 = time.perf_counter()
        sha = checkpoint_sha256 or _sha256(checkpoint)
        entry, _info, hit = self.cache.load(checkpoint)
        # Probed under the policy it was loaded under; the next job starts clean.
        with dtype_policy_scope(entry.dtype_policy):
            if entry.structure is None:
                entry.structure = read_structure(entry.model)
            elif hit:
                # The architecture is cached, the learning rate is the checkpoint's own.
                facts = replace(
                    entry.structure.facts, learning_rate=current_learning_rate(entry.model)
                )
                entry.structure = replace(entry.structure, facts=facts)
            t1 = time.perf_counter()
            phases["load"] = t1 - t0
            checkpoint_phase()
            specs = _input_specs(entry)
            # One array per input and per output: the model says how many members it needs.
            members = len(specs) + max(1, len(entry.structure.facts.output_names))
            arrays = batch if isinstance(batch, dict) else read_npz(batch, self.limits, members)
            data = make_batch(arrays, specs, entry.structure.facts, self.limits)
            key = (batch_signature(data.x, data.targets), options)
            probe = entry.probes.get(key)
            probe_cached = probe is not None
            if probe is None:
                check_intermediates(
                    entry.model, [data.x[name] for name, _, _ in specs], self.limits
                )
                _check_loss_runs(entry, data)
            digests = weight_digests(entry.model, entry.structure)  # before the probe touches them
            frozen = frozen_at_init(entry.model)
            t2 = time.perf_counter()
            phases["batch"] = t2 - t1
            checkpoint_phase()
            try:
                with tf.device(self.device):
                    if probe is None:
                        probe = Probe(entry.model, entry.structure, data.x, data.targets, options)
                        entry.probes[key] = probe
                        while len(entry.probes) > MAX_PROBES_PER_MODEL:
                            entry.probes.pop(next(iter(entry.probes)))  # the oldest
                    else:
                        probe.structure = entry.structure
                    result = probe.run(data.x, data.targets)
                    t3 = time.perf_counter()
                    measurements = build_measurements(
                        result,
                        entry.structure,
                        data.raw_x,
                        data.y,
                        options.mode,
                        data.raw_y,
                        other_ys=data.ys[1:],
                        other_sent=data.raw_ys[1:],
                    )
                    measurements.weight_digests = digests
                    measurements.frozen_at_init = frozen
                    if measurements.nonfinite.weights:  # nothing else can be measured
                        measurements.init_gain = exploding_init(entry.model)
                    measurements.output_losses = output_losses(
                        entry.model,
                        [data.x[name] for name in probe.input_order],
                        data.ys,
                        entry.structure.facts.output_names,
                    )
                    if entry.optimizer_state_lost:
                        _without_optimizer_state(measurements, entry.optimizer_state_lost)
                    elif measurements.optimizer is not None:
                        measurements.optimizer.loss_scale = loss_scale(entry.model.optimizer)
                    if options.mode == "full" and not entry.optimizer_state_lost:
                        self._try_remedies(probe, data, measurements)
            except tf.errors.ResourceExhaustedError as exc:
                raise LimitExceeded(
                    f"the probe ran out of device memory: {exc.message[:200]}"
                ) from exc
            phases["probe" if probe_cached else "compile_and_probe"] = t3 - t2
            checkpoint_phase()
            t4 = time.perf_counter()
            phases["trials"] = t4 - t3
            history = history.of_model(entry.fingerprint)
            verdict = judge(measurements, self.rules, self.rules_config, history)
            phases["rules"] = time.perf_counter() - t4
            return Diagnosis(
                verdict, measurements, entry.fingerprint, sha, hit, probe_cached, phases
            )

    def _try_remedies(self, probe: Probe, data: Batch, m: Measurements) -> None:
        """Test the fixes the rules propose; the results go into m.trials, m.lr_trial,
        m.clip_trial, m.pairing_trial and m.scratch_trials."""
        if probe.trials is None:
            probe.trials = Trials(probe)
        start = time.perf_counter()
        remedy = input_remedy(data.raw_x, m, self._input_rule.off_scale)
        if remedy is not None:
            change, remedied = remedy
            remedied = {k: v.astype(data.x[k].dtype) for k, v in remedied.items()}
            base_before, base_after = probe.trials.step(data.x, data.targets)
            before, after = probe.trials.step(remedied, data.targets)
            m.trials["input_scale"] = StepTrial(change, before, after, base_before, base_after)
        elif len(data.ys) <= 1 and self._input_rule.targets_off_scale(m):
            remedy_y = target_remedy(data.y, m)
            if remedy_y is not None:
                change, y_std, unit = remedy_y
                arms = [(data.x, data.y), (data.x, y_std)]
                self._scratch(probe, m, "target_scale", change, arms, unit=unit)
        # One learning-rate trial, over the scales of whichever rule proposes.
        scales = sorted(
            {
                *(self._lr_low_rule.TRIAL_SCALES if self._lr_low_rule.proposes(m) else ()),
                *(self._lr_high_rule.TRIAL_SCALES if self._lr_high_rule.proposes(m) else ()),
            }
        )
        if scales:
            m.lr_trial = probe.trials.learning_rate(data.x, data.targets, tuple(scales))
        loss_remedy = self._loss_rule.proposes(m)
        if loss_remedy is not None:
            fixed = loss_remedy.labels(data.y, data.raw_y)
            m.pairing_trial = probe.trials.paired(data.x, data.targets, fixed, loss_remedy)
        if self._exploding_rule.proposes(m):
            rule = self._exploding_rule
            m.clip_trial = probe.trials.clipped(data.x, data.targets, rule.CLIPNORM)
            arms = [(data.x, data.targets), (data.x, data.targets)]
            self._scratch(probe, m, "standard_init", rule.INIT_CHANGE, arms, (False, True))
        m.probe_seconds += time.perf_counter() - start

    @staticmethod
    def _scratch(
        probe: Probe,
        m: Measurements,
        key: str,
        change: str,
        arms: list[tuple[dict[str, np.ndarray], Targets]],
        standard_init: tuple[bool, ...] = (),
        unit: float = 1.0,
    ) -> None:
        """Both arms from a fresh start (the model's own initializers, or Keras's
        standard ones where standard_init says so); into m.scratch_trials[key]."""
        results = probe.trials.from_scratch(arms, standard_init)
        if results is None:
            return
        (as_before, as_after), (rem_before, rem_after) = results
        steps = probe.trials.scratch_steps
        m.scratch_trials[key] = ScratchTrial(
            change, steps, as_before, as_after, rem_before, rem_after, unit
        )


def _without_optimizer_state(m: Measurements, why: str) -> None:
    """The step the probe measured came from fresh optimizer state (iteration 0,
    zero moments), not the run's: drop it, so the rules that judge the optimizer's
    step stay silent, and say so in `unavailable`."""
    log.warning("optimizer state not restored: %s", why)
    m.optimizer = None
    for layer in m.layers:
        layer.update_norm = layer.update_ratio = None
    m.unavailable = sorted({*m.unavailable, *NO_OPTIMIZER_STATE})


def _input_specs(entry: LoadedModel) -> list[tuple[str, tuple[int | None, ...] | None, str]]:
    """(name, shape, dtype) per model input; a subclassed model declares none."""
    names = list(entry.structure.facts.input_names)
    if not entry.structure.facts.functional:
        return [("x", None, "float32")]
    return [(name, tuple(kt.shape), str(kt.dtype)) for name, kt in zip(names, entry.model.inputs)]


def _check_loss_runs(entry: LoadedModel, data: Batch) -> None:
    """Run the loss eagerly on two rows so a wrong batch fails with a message.

    Inside the compiled probe the same mistake would surface as a graph error.
    """
    import tensorflow as tf

    model = entry.model
    metric_values = [v.numpy() for v in model.metrics_variables]
    x2 = {k: v[:2] for k, v in data.x.items()}
    xs = as_model_inputs(model, list(x2.values()))
    try:
        y_pred = model(xs, training=False)
        y2 = take_rows(data.targets, None, 2)
        loss = model.compute_loss(x=xs, y=y2, y_pred=y_pred, training=False)
        np.asarray(loss)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise InvalidBatch(f"the batch does not fit the model or its loss: {text}") from exc
    finally:
        for v, value in zip(model.metrics_variables, metric_values):
            v.assign(value)


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
