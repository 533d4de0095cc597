"""gradhealth client side: CLI, (later) the gRPC client and the Keras callback.

Nothing here imports TensorFlow at import time: the client installs without the
server's extras.
"""

__version__ = "0.1.0"
