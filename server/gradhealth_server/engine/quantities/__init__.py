"""The measured quantities, one family per module.

Each module owns its family whole: the statistic it computes inside the compiled
probe for one micro-batch (`graph`), how two micro-batches' statistics combine
(`MERGE`), and how the merged numbers become the plain dataclasses of
`engine/measurements.py` (`decode`). The probe calls `graph` and `MERGE`, and
files each family's numbers under its `KEY`; `engine/measure.py` calls
`decode`. A family's key names never leave its module.

To add a quantity: a module here with those three parts, a field in
`Measurements`, a line in the probe and one in `measure.py`
(docs/architecture.md).
"""
