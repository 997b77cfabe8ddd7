"""Benchmark SynthFER generation: clips/s at 112 and 224 px with 1 and 2 workers (render + encode + ground truth).

    python scripts/bench_synthfer.py [--n-per-class 3] [--label-set mafw] [--sizes 112 224] [--workers 1 2]

Also prints the single-process split between rendering and encoding for a 3-s clip (CPU time), so a slow run on a
busy machine can be told apart from a slow generator. Writes into a temporary folder that is removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from emoprobe import labels, synthfer


def split_timing(size: int, n: int = 10) -> tuple[float, float]:
    """CPU ms per 3-s clip for render_clip and for the mp4 encode, single process."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_sf_"))
    try:
        r = e = 0.0
        for i in range(n):
            t0 = time.process_time()
            frames, gt = synthfer.render_clip("anger", np.random.default_rng(i), size, 25, duration_s=3.0)
            t1 = time.process_time()
            synthfer._encode_mp4(frames, tmp / f"{i}.mp4", 25, gt["nuisance"]["crf"])
            e += time.process_time() - t1
            r += t1 - t0
        return 1e3 * r / n, 1e3 * e / n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label-set", default="mafw")
    ap.add_argument("--n-per-class", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    n_cls = len(labels.get(args.label_set))
    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}")
    for size in args.sizes:
        r, e = split_timing(size)
        print(f"size {size}: render {r:.1f} ms + encode {e:.1f} ms CPU per 3-s clip "
              f"-> {1e3 / (r + e):.1f} clips/s per core (excl. ground-truth file)")
    print(f"{'size':>5} {'workers':>7} {'clips':>6} {'seconds':>8} {'clips/s':>8} {'mean dur s':>10}")
    for size in args.sizes:
        for w in args.workers:
            tmp = Path(tempfile.mkdtemp(prefix="bench_sf_"))
            try:
                t0 = time.perf_counter()
                m = synthfer.generate(tmp, args.label_set, "test", n_per_class=args.n_per_class, size=size,
                                      seed=0, workers=w)
                dt = time.perf_counter() - t0
                import pandas as pd

                dur = pd.read_csv(m)["duration_s"].mean()
                n = args.n_per_class * n_cls
                print(f"{size:>5} {w:>7} {n:>6} {dt:>8.2f} {n / dt:>8.1f} {dur:>10.2f}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
