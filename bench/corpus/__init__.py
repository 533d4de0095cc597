"""A wide labelled corpus of real Keras training runs, for measuring gradhealth's verdicts.

specs (what runs exist) -> train (train one, measure it) -> verify (is its label true?)
-> cache (on disk, keyed by version and name) -> split (frozen dev/test by name hash).
`python -m bench.corpus` generates; `python -m bench.evaluate --suite corpus` scores.
"""
