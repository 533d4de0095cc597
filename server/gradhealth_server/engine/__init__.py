"""The measuring half of gradhealth: one compiled probe per architecture and batch.

`structure` reads the model once (layers, taps, static facts), `probe` builds and
runs the compiled function, `measurements` turns its raw numbers into plain
dataclasses. Nothing here judges; that is `gradhealth_server.rules`.
"""
