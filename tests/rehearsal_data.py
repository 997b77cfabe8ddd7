"""MAFW and DFEW trees in their real layouts, for the dress rehearsal of the paper profile (tests/test_rehearsal.py).

A few clips per class, rendered by SynthFER (so MTCNN finds faces), written as real files:

MAFW  ``Train & Test Set/single/no_caption/set_{1..5}/{train,test}.txt`` (lines ``00025.mp4 anger``), clips as
      ``data/clips/<5-digit id>.mp4`` (h264), the last clip of each class only as a frame folder
      ``data/frames/<id>/00001.jpg ...`` (the loader falls back to frames).
DFEW  ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv`` (``video_name,label``, unpadded ids,
      labels 1..7), every clip as a frame folder ``Clip/clip_224x224/<5-digit id>/<n>.jpg`` and every other clip
      also as ``Clip/original/<id>.mp4`` (the loader prefers videos, so both kinds are read).

Deterministic from ``seed``; a finished tree is recognised by its ``rehearsal_tree.json`` and reused.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from emoprobe import labels, synthfer

TREE_VERSION = 1


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _write_frames(folder: Path, frames: np.ndarray, pad: int = 5) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        name = f"{i + 1:0{pad}d}.jpg" if pad else f"{i + 1}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def _done(root: Path, params: dict) -> bool:
    stamp = root / "rehearsal_tree.json"
    return stamp.exists() and json.loads(stamp.read_text()) == params


def _clips(label_set: str, per_class: int, size: int, fps: int, duration_s: float, seed: int):
    """[(clip number 1.., label, frames)] in class order; clip numbers start at 25 (gaps as in the real sets)."""
    rng = np.random.default_rng(seed)
    out, num = [], 25
    for lab in labels.get(label_set):
        for _ in range(per_class):
            frames, _gt = synthfer.render_clip(lab, rng, size=size, fps=fps, label_set=label_set,
                                               duration_s=duration_s)
            out.append((num, lab, frames))
            num += 3
    return out


def _folds(n: int, seed: int, per_class: int, n_classes: int) -> list[np.ndarray]:
    """Five folds: for fold k a boolean test mask over the clips (one clip per class tested, rotating)."""
    masks = []
    for k in range(5):
        m = np.zeros(n, bool)
        for c in range(n_classes):
            m[c * per_class + (k % per_class)] = True
        masks.append(m)
    return masks


def write_mafw(root, per_class: int = 2, size: int = 64, fps: int = 10, duration_s: float = 2.0,
               seed: int = 0) -> Path:
    root = Path(root)
    params = {"version": TREE_VERSION, "set": "mafw", "per_class": per_class, "size": size, "fps": fps,
              "duration_s": duration_s, "seed": seed}
    if _done(root, params):
        return root
    if root.exists():
        shutil.rmtree(root)
    clips = _clips("mafw", per_class, size, fps, duration_s, seed)
    for j, (num, lab, frames) in enumerate(clips):
        cid = f"{num:05d}"
        if j % per_class == per_class - 1 and per_class > 1:
            _write_frames(root / "data" / "frames" / cid, frames)
        else:
            _write_mp4(root / "data" / "clips" / f"{cid}.mp4", frames, fps)
    for k, test in enumerate(_folds(len(clips), seed, per_class, len(labels.MAFW)), start=1):
        d = root / "Train & Test Set" / "single" / "no_caption" / f"set_{k}"
        d.mkdir(parents=True, exist_ok=True)
        for split, mask in (("train", ~test), ("test", test)):
            (d / f"{split}.txt").write_text("".join(f"{num:05d}.mp4 {lab}\n" for (num, lab, _), t in zip(clips, mask)
                                                    if t))
    (root / "rehearsal_tree.json").write_text(json.dumps(params))
    return root


def write_dfew(root, per_class: int = 2, size: int = 64, fps: int = 10, duration_s: float = 2.0,
               seed: int = 0) -> Path:
    root = Path(root)
    params = {"version": TREE_VERSION, "set": "dfew", "per_class": per_class, "size": size, "fps": fps,
              "duration_s": duration_s, "seed": seed}
    if _done(root, params):
        return root
    if root.exists():
        shutil.rmtree(root)
    clips = _clips("dfew", per_class, size, fps, duration_s, seed + 1)
    for j, (num, lab, frames) in enumerate(clips):
        cid = f"{num:05d}"
        _write_frames(root / "Clip" / "clip_224x224" / cid, frames)
        if j % 2 == 0:
            _write_mp4(root / "Clip" / "original" / f"{cid}.mp4", frames, fps)
    index = {lab: i + 1 for i, lab in enumerate(labels.DFEW)}
    for k, test in enumerate(_folds(len(clips), seed, per_class, len(labels.DFEW)), start=1):
        for split, mask in (("train", ~test), ("test", test)):
            d = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"set_{k}.csv").write_text("video_name,label\n" + "".join(
                f"{num},{index[lab]}\n" for (num, lab, _), t in zip(clips, mask) if t))
    (root / "rehearsal_tree.json").write_text(json.dumps(params))
    return root
