"""The frozen dev/test split: a pure function of the run's name, fixed before any tuning."""

from __future__ import annotations

import hashlib

SPLIT_SEED = "gradhealth-corpus-split-v1"  # never change: it would reshuffle dev and test
TEST_SHARE = 0.5


def split_of(name: str, seed: str = SPLIT_SEED) -> str:
    """'dev' or 'test' from sha256(seed + name): stable across runs, machines, versions."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")
    return "test" if h / 2**64 < TEST_SHARE else "dev"


def sample(names: list[str], n: int, seed: int) -> list[str]:
    """A seeded sample of n names: the n with the smallest sha256(seed + name)."""

    def key(name: str) -> bytes:
        return hashlib.sha256(f"sample-{seed}:{name}".encode()).digest()

    return sorted(sorted(names, key=key)[:n])
