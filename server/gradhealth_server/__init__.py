"""gradhealth's service side: load a checkpoint safely, probe it, judge it.

The data path of one diagnosis, module by module:

    archive     inspect the .keras zip before anything is loaded
    checkpoint  safe load, architecture fingerprint, model cache
    batch       decode and validate the sample batch
    engine      ONE compiled probe -> Measurements (no TF types leak out)
    rules       pure functions Measurements -> [Finding]
    verdict     Findings -> Verdict
    diagnosis   ties the above together (embedded mode and the worker)
"""

import os

# TensorFlow reads this once, at import: keep its start-up INFO chatter out of logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["__version__"]
__version__ = "0.1.0"
