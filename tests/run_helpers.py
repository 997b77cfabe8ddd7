"""Helpers for the run / store / CLI tests: tiny PyAV clips, a manifest, and a fake backend."""
from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pandas as pd

from emoprobe import labels
from emoprobe.models import Answer, Backend


def write_clip(path: Path, level: int, n: int = 20, fps: int = 10, size: int = 32) -> Path:
    """A uniform-grey clip of ``n`` frames (grey level ``level``), mpeg4 so it encodes in milliseconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for _ in range(n):
            img = np.full((size, size, 3), level, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def manifest(tmp_path: Path, n: int = 6, broken: int = 0, label_set: str = "mafw") -> pd.DataFrame:
    """``n`` good clips (labels cycling over the label set) plus ``broken`` undecodable files."""
    labs = labels.get(label_set)
    rows = []
    for i in range(n):
        p = write_clip(Path(tmp_path) / "clips" / f"c{i:03d}.mp4", level=20 + 10 * i)
        rows.append({"clip_id": f"c{i:03d}", "path": str(p), "label": labs[i % len(labs)], "split": "test",
                     "label_set": label_set})
    for j in range(broken):
        p = Path(tmp_path) / "clips" / f"bad{j}.mp4"
        p.write_bytes(b"this is not a video " * 10)
        rows.append({"clip_id": f"bad{j}", "path": str(p), "label": labs[0], "split": "test",
                     "label_set": label_set})
    return pd.DataFrame(rows)


class FakeBackend(Backend):
    """Deterministic: predicts a label from the mean grey level of the frames. Counts calls and batch sizes.

    ``oom_above``: raise a CUDA-style OOM RuntimeError for batches larger than this.
    ``fail_clip_level``: answer ``failed`` for frames of that grey level.
    """

    def __init__(self, tag: str = "v1", oom_above: int | None = None, delay: float = 0.0):
        self.spec = {"backend": "fake", "model": f"fake-{tag}"}
        self.tag = tag
        self.oom_above = oom_above
        self.delay = delay
        self.calls: list[int] = []
        self.describe_calls: list[int] = []

    def fingerprint(self) -> dict:
        return {"backend": "fake", "model": f"fake-{self.tag}"}

    def _label(self, frames, labs):
        level = int(round(float(np.asarray(frames).mean())))
        return labs[(level // 10) % len(labs)], level

    def classify(self, requests, score=False):
        import time

        self.calls.append(len(requests))
        if self.oom_above is not None and len(requests) > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = []
        for r in requests:
            if self.delay:
                time.sleep(self.delay)
            lab, level = self._label(r.frames, r.labels)
            scores = {l: (1.0 if l == lab else 0.0) for l in r.labels} if score else None
            ctx = f" ctx={len(r.context)}" if r.context is not None else ""
            out.append(Answer(text=f"{lab}", label=lab, status="ok", parse_method="exact", scores=scores,
                              n_visual_tokens=8 * len(r.frames), n_text_tokens=len(r.prompt.split()),
                              extra={"level": level, "note": f"T={len(r.frames)}{ctx}"}))
        return out

    def describe(self, requests):
        self.describe_calls.append(len(requests))
        return [Answer(text=f"motion over {len(r.frames)} frames, digest "
                            f"{hashlib.sha256(np.ascontiguousarray(r.frames).tobytes()).hexdigest()[:6]}",
                       status="ok", parse_method="text") for r in requests]
