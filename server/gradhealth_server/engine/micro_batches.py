"""How the probe splits the sample batch: micro-batches whose gradients, averaged
by size, are the whole batch's, and whose spread gives the gradient noise scale."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradhealth_server.engine.structure import ModelStructure

if TYPE_CHECKING:
    from gradhealth_server.engine.probe import ProbeOptions


def micro_batches(rows: int, structure: ModelStructure, options: ProbeOptions) -> list[int]:
    """Row counts of the micro-batches: [probe rows, then the rest split evenly]."""
    k = options.micro_batches if options.mode == "full" else 1
    # Batch statistics couple the examples: micro-batches would change the gradient.
    # Only a mean-reduced loss averages exactly over micro-batches (a summed one
    # would count the regularization losses k times).
    if structure.facts.batch_coupled or structure.facts.loss_reduction not in (
        "sum_over_batch_size",
        None,
    ):
        k = 1
    k = max(1, min(k, rows // max(options.min_micro_batch_rows, 1)))
    if k == 1:
        return [rows]
    first = max(options.min_micro_batch_rows, min(options.probe_rows, rows // k))
    base, extra = divmod(rows - first, k - 1)
    return [first] + [base + (1 if i < extra else 0) for i in range(k - 1)]
