"""gradhealth's service side: load a checkpoint safely, probe it, judge it, store
and export the verdict.

The folders are the stages of one diagnosis, in order (docs/architecture.md):
intake/ (the upload made safe), engine/ (the compiled probe and the measured
quantities), verdict/ and rules/ (judging), diagnosis.py (the stages in one
process), store/, metrics/, service/ (the gRPC server and its workers) and
commands/ (the server side of the CLI).
"""

import os

# TensorFlow reads this once, at import: keep its start-up INFO chatter out of logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["__version__"]
__version__ = "0.1.0"
