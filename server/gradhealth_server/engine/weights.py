"""A digest of each layer's trainable weights, as the checkpoint holds them.

Consecutive checkpoints of a run that trains differ in every layer; a layer
whose digest does not change is not being trained (unchanged_weights).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from gradhealth_server.engine.structure import ModelStructure


def weight_digests(model: Any, structure: ModelStructure) -> dict[str, str]:
    variables = model.trainable_variables
    out = {}
    for layer in structure.layers:
        digest = hashlib.blake2b(digest_size=16)
        for index in layer.variable_indices:
            digest.update(np.ascontiguousarray(variables[index].numpy()).tobytes())
        out[layer.name] = digest.hexdigest()
    return out
