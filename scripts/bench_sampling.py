"""Benchmark emoprobe.sampling: decord vs PyAV for sparse (1 fps), dense (25 fps) and full decode.

Generates a 3 s, 25 fps h264 clip (moving shapes on a gradient, libx264 crf 23) at 112 px and at 224 px in a
temporary folder, then times ``sampling.sample`` (open + select + decode, i.e. what a run pays per clip).
Prints the median and the best of ``--repeats`` runs (decoders alternating) as ms per clip, and returned
frames per second at the median.

    python scripts/bench_sampling.py [--repeats 20] [--seconds 3] [--sizes 112 224]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from emoprobe import sampling


def make_clip(path: Path, size: int, seconds: float, fps: int = 25, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 128)], -1).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "23", "preset": "medium"}
        for i in range(n):
            img = base.copy()
            cx = int(size * (0.2 + 0.6 * i / max(n - 1, 1)))
            cv2.circle(img, (cx, size // 2), size // 6, (230, 60, 40), -1)
            cv2.ellipse(img, (size // 2, int(size * 0.75)), (size // 5, max(1, int(size / 20 * (1 + np.sin(i / 4))))),
                        0, 0, 360, (20, 20, 20), -1)
            img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def bench(path: Path, kw: dict, repeats: int, decoders=("decord", "pyav")) -> dict:
    """Per decoder: (median s, min s, frames returned). Decoders alternate within each repeat so that load
    from other processes hits both alike."""
    for dec in decoders:
        sampling.sample(path, decoder=dec, **kw)  # warm-up (imports, page cache)
    times = {dec: [] for dec in decoders}
    n = {}
    for _ in range(repeats):
        for dec in decoders:
            t0 = time.perf_counter()
            f = sampling.sample(path, decoder=dec, **kw)
            times[dec].append(time.perf_counter() - t0)
            n[dec] = len(f)
    return {dec: (statistics.median(ts), min(ts), n[dec]) for dec, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    a = ap.parse_args()
    modes = {"sparse 1 fps": {"strategy": "fps", "fps": 1}, "dense 25 fps": {"strategy": "fps", "fps": 25},
             "full (all)": {"strategy": "all"}}
    print(f"{'clip':>10} {'mode':>13} {'decoder':>7} {'frames':>6} {'ms/clip med':>11} {'ms/clip min':>11} "
          f"{'frames/s med':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes:
            clip = make_clip(Path(tmp) / f"clip_{size}.mp4", size, a.seconds)
            label = f"{size}px {a.seconds:g}s"
            for mode, kw in modes.items():
                for dec, (med, best, n) in bench(clip, kw, a.repeats).items():
                    print(f"{label:>10} {mode:>13} {dec:>7} {n:>6} {med * 1e3:>11.2f} {best * 1e3:>11.2f} "
                          f"{n / med:>12.0f}")


if __name__ == "__main__":
    main()
