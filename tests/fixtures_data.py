"""Fixtures and helpers for tests of emoprobe.data and emoprobe.sampling (imported by those test files).

Videos are written with PyAV; frame ``i`` is a uniform grey of level ``BASE + STEP * i`` so tests can recover
which source frames came back (:func:`frame_index`).
"""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

BASE, STEP = 8, 3  # grey level of frame i; frames up to 80 fit in uint8


def grey(i: int, size: int) -> np.ndarray:
    return np.full((size, size, 3), BASE + STEP * i, np.uint8)


def frame_index(frames: np.ndarray) -> np.ndarray:
    """Recover the encoded source index of each frame of (T,H,W,3)."""
    return np.rint((frames.reshape(len(frames), -1).mean(axis=1) - BASE) / STEP).astype(int)


def write_video(path, n: int = 75, fps: int = 25, size: int = 64, codec: str = "libx264",
                faststart: bool = False, noise: bool = False) -> Path:
    """A PyAV-written clip of ``n`` frames; ``noise`` adds incompressible noise (large files for truncation)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream(codec, rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        if codec == "libx264":
            s.options = {"crf": "0", "preset": "ultrafast"}
        if n == 0:
            c.start_encoding()
        for i in range(n):
            img = grey(i, size)
            if noise:
                img = rng.integers(0, 256, img.shape, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_folder(path, n: int = 75, size: int = 64, ext: str = ".png", pad: int = 5) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"{i + 1:0{pad}d}{ext}" if pad else f"{i + 1}{ext}"
        cv2.imwrite(str(path / name), grey(i, size))  # grey: BGR == RGB
    return path


@pytest.fixture(scope="module")
def video_fixture(tmp_path_factory):
    """A 25 fps, 3.0 s (75 frames) 64-px h264 clip whose frame i has grey level BASE + STEP*i."""
    return write_video(tmp_path_factory.mktemp("vid") / "clip.mp4", n=75, fps=25)


@pytest.fixture(scope="module")
def folder_fixture(tmp_path_factory):
    """The same 75 frames as a PNG frame folder (names 00001.png ..)."""
    return write_folder(tmp_path_factory.mktemp("fold") / "clip", n=75)


@pytest.fixture(scope="module")
def bad_media_fixture(tmp_path_factory):
    """Bad inputs: random bytes, truncated (first 30 %, moov at end and at start), zero frames, empty folder,
    empty file, missing."""
    d = tmp_path_factory.mktemp("bad")
    (d / "random.mp4").write_bytes(np.random.default_rng(1).bytes(20000))
    good = write_video(d / "good.mp4", n=50, noise=True).read_bytes()
    (d / "truncated.mp4").write_bytes(good[: int(0.3 * len(good))])
    good_fs = write_video(d / "good_fs.mp4", n=50, noise=True, faststart=True).read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(good_fs[: int(0.3 * len(good_fs))])
    write_video(d / "zero.mp4", n=0)
    (d / "emptydir").mkdir()
    (d / "empty.mp4").write_bytes(b"")
    return d


DFEW_ROWS = {  # split -> [(video_name as in the csv, label index 1..7)]
    "train": [(1, 1), (2, 2), (3, 3), (4, 4)],
    "test": [(5, 5), (6, 6), (7, 7), (8, 1)],
}


def write_dfew(root, with_video=True, with_jpg=True) -> Path:
    """DFEW layout: EmoLabel_DataSplit/{train,test}(single-labeled)/set_1.csv (unpadded ids, as DFEW ships);
    odd clips as Clip/original/0000N.mp4, even clips as Clip/jpg_256/0000N/ folders; clip 8 also as
    Clip/clip_224x224/00008/."""
    root = Path(root)
    for sp, rows in DFEW_ROWS.items():
        d = root / "EmoLabel_DataSplit" / f"{sp}(single-labeled)"
        d.mkdir(parents=True, exist_ok=True)
        (d / "set_1.csv").write_text("video_name,label\n" + "".join(f"{v},{lab}\n" for v, lab in rows))
        for v, _ in rows:
            if v % 2 and with_video:
                write_video(root / "Clip" / "original" / f"{v:05d}.mp4", n=10, size=32)
            elif not v % 2 and with_jpg:
                write_folder(root / "Clip" / "jpg_256" / f"{v:05d}", n=6, size=32, ext=".jpg")
    write_folder(root / "Clip" / "clip_224x224" / "00008", n=4, size=32, ext=".jpg")
    return root


MAFW_ROWS = {
    "train": [("00025.mp4", "anger"), ("00026.mp4", "contempt"), ("00027.mp4", "helplessness")],
    "test": [("00030.mp4", "disappointment"), ("00031.mp4", "anxiety")],
}


def write_mafw(root) -> Path:
    """MAFW layout: Train & Test Set/single/no_caption/set_1/{train,test}.txt; clips 25, 27, 30 as
    data/clips/<id>.mp4; 26 and 31 as data/frames/<id>/ folders."""
    root = Path(root)
    d = root / "Train & Test Set" / "single" / "no_caption" / "set_1"
    d.mkdir(parents=True, exist_ok=True)
    for sp, rows in MAFW_ROWS.items():
        (d / f"{sp}.txt").write_text("".join(f"{n} {lab}\n" for n, lab in rows))
        for n, _ in rows:
            cid = n.split(".")[0]
            if cid in ("00026", "00031"):
                write_folder(root / "data" / "frames" / cid, n=5, size=32, ext=".jpg")
            else:
                write_video(root / "data" / "clips" / n, n=8, size=32)
    return root


@pytest.fixture(scope="module")
def dfew_fixture(tmp_path_factory):
    return write_dfew(tmp_path_factory.mktemp("dfew"))


@pytest.fixture(scope="module")
def mafw_fixture(tmp_path_factory):
    return write_mafw(tmp_path_factory.mktemp("mafw"))
