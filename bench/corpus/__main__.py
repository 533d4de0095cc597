"""`python -m bench.corpus [--shard I/N] [--only TEXT]`: train the corpus runs the cache lacks,
then print the composition (labels after verification, drops, splits).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.corpus")
    parser.add_argument("--shard", default="0/1", help="I/N: train every N-th run from the I-th")
    parser.add_argument("--only", default="", help="only runs whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the specs, train nothing")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also diagnose each kept run right after it is trained (no XLA), caching the verdict",
    )
    args = parser.parse_args()
    from bench.corpus.cache import cache_dir, generate, limit_threads
    from bench.corpus.specs import all_specs

    specs = [s for s in all_specs() if args.only in s.name]
    if args.list:
        for s in specs:
            print(f"{s.name:60s} {s.label:24s} twin={s.twin}")
        print(len(specs), "runs")
        return 0
    limit_threads()
    i, n = (int(v) for v in args.shard.split("/"))
    # The healthy bases (the twins) first, then the rest in a seeded-hash order: a generation
    # cut short leaves a random sample of the corpus, not its first families only.
    twins = {s.twin for s in specs if s.twin}
    ordered = sorted(
        specs, key=lambda s: (s.name not in twins, hashlib.sha256(s.name.encode()).digest())
    )
    start = time.perf_counter()
    for k, s in enumerate(ordered):
        if k % n != i:
            continue
        meta = generate(s)
        if "error" in meta:
            print(f"{s.name:62s} ERROR {meta['error'][:100]}", flush=True)
            continue
        m = meta["measures"]
        if args.diagnose:
            from bench.corpus.cache import entries
            from bench.corpus.evaluate import diagnose

            kept = [e for e in entries([s], train_missing=False) if e.label is not None]
            diagnose(kept, xla=False, progress=False)
        print(
            f"{s.name:62s} q={m.get('quality', float('nan')):7.3f} "
            f"loss={m['loss_last']:<10.4g} {meta['train_seconds']:6.1f}s",
            flush=True,
        )
    print(f"shard {args.shard}: {time.perf_counter() - start:.0f} s; cache {cache_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
