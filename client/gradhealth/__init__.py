"""gradhealth client side: the gRPC client, the Keras callback and the CLI.

Nothing here imports TensorFlow at import time: the client installs without the
server's extras.
"""

__version__ = "0.1.0"
