"""Operator-configurable caps on untrusted input, with safe defaults.

Every cap is checked before the expensive or dangerous step it protects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps applied to checkpoints and batches (see docs/security.md)."""

    # The archive as uploaded, and everything it unpacks to.
    max_checkpoint_bytes: int = 2048 * MiB
    max_unpacked_bytes: int = 4096 * MiB
    # Weights compress poorly; a high ratio means a zip bomb, not a model.
    max_compression_ratio: float = 100.0
    max_archive_members: int = 64
    max_config_bytes: int = 16 * MiB
    max_parameters: int = 500_000_000
    # Values in the largest layer output for one example (1 GiB of float32): a
    # RepeatVector or UpSampling declaring more cannot be probed even on 2 rows.
    max_activation_elements: int = 1 << 28
    # What the probe may need for the layer outputs of the whole batch (about
    # 3x their sum, see intermediates.py), with the dimensions the batch sets (a
    # sequence length). `gradhealth serve` lowers it to half the worker's cap.
    max_probe_activation_bytes: int = 8192 * MiB
    # What the probe may hold of weights and optimizer state (float32 values, each
    # held several times: PROBE_WEIGHT_COPIES, PROBE_STATE_COPIES), checked before
    # loading. `gradhealth serve` lowers it to the worker's cap less TensorFlow's own.
    max_probe_state_bytes: int = 16384 * MiB
    # CPU: what one call may make the worker trace and run. The deepest
    # keras.applications model has about 1,100 layers; an unrolled RNN traces one
    # copy of its cell per step; 5 TFLOP is ResNet50's forward pass on 1,200 images.
    max_layers: int = 3000
    max_unrolled_steps: int = 512
    max_forward_gflops: float = 5000.0
    # The sample batch.
    max_batch_bytes: int = 256 * MiB
    max_batch_rows: int = 4096
    # Class names outside Keras's own that an operator trusts ("module.ClassName").
    allowed_classes: frozenset[str] = field(default_factory=frozenset)


DEFAULT_LIMITS = Limits()

# While the probe measures one optimizer step and restores it, it holds about six
# copies of the weights (the variables, their snapshot, gradients per micro-batch and
# summed, the step) and two of the optimizer state (the slots and their snapshot).
# Measured: 100M parameters under Adam peaked at 4.1 GB in a worker (bench/large_checkpoint.py).
PROBE_WEIGHT_COPIES = 6
PROBE_STATE_COPIES = 2
