"""Frame sampling: one API that returns frames together with their timestamps.

Everything a chapter feeds to a model goes through :func:`sample` (or :func:`keyframes_gaps` for MSCE), so the
sampling convention is defined once, here.

Conventions (the book quotes these)
-----------------------------------
*Timestamps.* Source frame ``i`` is shown from ``start_i`` to ``start_{i+1}``; ``start_i`` comes from the
container (decord's ``get_frame_timestamp``, PyAV's ``pts * time_base``), rounded to the microsecond. If a
container gives no usable timestamps (not strictly increasing) they are replaced by ``i / fps``; a frame folder
always uses ``i / folder_fps``. The clip's duration is the end of its last frame (``n / fps`` for constant frame
rate). :attr:`Frames.t` holds the *source* frame's start time, i.e. the instant actually shown.

*By frame rate* (``strategy="fps"``): the requested instants are ``t_k = k / fps`` for ``k = 0, 1, …`` while
``t_k < duration`` (so 1 fps on a 3.0 s clip asks for 3 frames at 0, 1 and 2 s). Each instant is mapped to the
source frame whose start time is nearest (ties go to the earlier frame). When two instants land on the same
source frame (``fps`` above the source frame rate) the frame is returned once: frames are never duplicated or
invented, so fewer frames come back than were requested and ``capped`` is True (``requested`` keeps the number
asked for). This differs from qwen-vl-utils, which forces at least 4 frames and rounds counts to a multiple of
2 (its "1 fps" on a 3 s clip gives 4 frames; ours gives 3).

*By count* (``strategy="count"``): frame ``i`` of ``count`` is source index ``floor((i + 0.5) * n / count)``,
the midpoints of ``count`` equal segments (never the very first/last frame unless ``count`` is close to
``n``). If ``count > n`` all ``n`` frames are returned and ``capped`` is True.

*All* (``strategy="all"``): every source frame.

*max_frames*: if a strategy selects more than ``max_frames`` frames, ``max_frames`` of them are kept with the
count rule above applied to the selection, and ``capped`` is True.

*MSCE gaps* (:func:`keyframes_gaps`): keyframes are ``sample(strategy="fps", fps=key_fps)``. Between consecutive
keyframes with source indices ``a < b`` the ``g = b - a - 1`` frames strictly in between form a gap; ``m`` of
them are taken at ``a + floor(j * (b - a) / (m + 1))`` for ``j = 1..m`` (equally spaced, strictly between the
keys); if ``g < m`` all ``g`` are taken and that gap is ``capped``. Frames after the last keyframe belong to no
gap (the paper's n keyframes make n-1 gaps).

Decoding reads only the frames needed: decord ``get_batch`` for video files (PyAV is the fallback when decord
cannot open a file PyAV can, which is logged), ``cv2.imread`` of just the needed files for frame folders.
Bad input raises :class:`emoprobe.data.DataError` naming the path and the reason.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

#: File suffixes read as frames of a frame folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: Bump when a convention above changes: it enters every run-store key through :func:`spec_key`.
SAMPLING_VERSION = 1
#: A container declaring more frames than can be decoded by more than this (fraction, at least 2 frames) is
#: reported as truncated.
TRUNCATION_TOLERANCE = 0.05

STRATEGIES = ("fps", "count", "all", "keyframes_gaps")


@dataclass(eq=False)  # arrays inside: compare fields explicitly
class Frames:
    """Frames with their timestamps. ``frames`` is uint8 (T, H, W, 3) RGB; ``t`` seconds (T,);
    ``indices`` source frame indices (T,); ``requested`` how many frames the strategy asked for; ``capped``
    True when fewer came back than were asked for (``cap_reason`` says why); ``order`` the permutation applied
    (``frames[i]`` is the ``order[i]``-th frame in time order; identity if not shuffled)."""

    frames: np.ndarray
    t: np.ndarray
    indices: np.ndarray
    requested: int
    capped: bool
    source_fps: float
    n_source: int
    order: np.ndarray
    path: str
    cap_reason: str | None = None
    decoder: str = field(default="", compare=False)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shuffled(self) -> bool:
        return bool(np.any(self.order != np.arange(len(self.order))))


# ----------------------------------------------------------------------------------------------------------
# Sources: a uniform view of a video file (decord or PyAV) or a frame folder
# ----------------------------------------------------------------------------------------------------------
def _natural_key(name: str):
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def _clean_timestamps(starts: np.ndarray, fps: float) -> np.ndarray:
    starts = np.round(np.asarray(starts, dtype=np.float64), 6)
    if len(starts) > 1 and not np.all(np.diff(starts) > 0):
        return np.round(np.arange(len(starts)) / fps, 6)
    return starts


class _Source:
    kind = ""
    decoder = ""

    def __init__(self, path: Path):
        self.path = path
        self.n = 0
        self.fps = 0.0
        self.starts = np.zeros(0)
        self.duration = 0.0

    def read(self, indices: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class _DecordSource(_Source):
    kind = "video"
    decoder = "decord"

    def __init__(self, path: Path, declared_frames: int | None):
        super().__init__(path)
        import decord

        try:
            # one decoding thread: runs parallelise over clips, and the 2-core machine is shared
            self.vr = decord.VideoReader(str(path), num_threads=1)
            self.n = len(self.vr)
        except Exception as e:  # decord raises RuntimeError / DECORDError; normalised by the caller
            raise _OpenFailed(f"{type(e).__name__}: {_first_line(e)}") from e
        _check_count(path, self.n, declared_frames)
        self.fps = float(self.vr.get_avg_fps())
        if not self.fps > 0:
            raise DataError(f"{path}: the container gives no frame rate")
        ts = self.vr.get_frame_timestamp(np.arange(self.n))
        self.starts = _clean_timestamps(ts[:, 0], self.fps)
        end = round(float(ts[-1, 1]), 6)
        self.duration = end if end > self.starts[-1] else float(self.starts[-1] + 1.0 / self.fps)

    def read(self, indices):
        try:
            out = self.vr.get_batch(list(map(int, indices))).asnumpy()
        except Exception as e:
            raise DataError(f"{self.path}: decoding frames failed ({type(e).__name__}: {_first_line(e)})") from e
        return np.ascontiguousarray(out, dtype=np.uint8)


class _PyAVSource(_Source):
    """PyAV reader: one demux pass for timestamps (no decoding), one decode pass up to the last needed frame."""

    kind = "video"
    decoder = "pyav"

    def __init__(self, path: Path):
        super().__init__(path)
        import av

        try:
            with av.open(str(path)) as c:
                if not c.streams.video:
                    raise DataError(f"{path}: no video stream (zero decodable frames)")
                s = c.streams.video[0]
                tb = float(s.time_base) if s.time_base else None
                rate = s.average_rate or s.guessed_rate
                declared = int(s.frames) or None
                pts = [p.pts for p in c.demux(s) if p.pts is not None and p.size > 0]
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path}: cannot be read by PyAV ({type(e).__name__}: {_first_line(e)})") from e
        self.n = len(pts)
        _check_count(path, self.n, declared)
        self.fps = float(rate) if rate else 0.0
        if not self.fps > 0:
            raise DataError(f"{path}: the container gives no frame rate")
        pts = np.sort(np.asarray(pts, dtype=np.float64))
        starts = (pts - pts[0]) * tb if tb else np.arange(self.n) / self.fps
        self.starts = _clean_timestamps(starts, self.fps)
        self.duration = float(self.starts[-1] + 1.0 / self.fps)

    def read(self, indices):
        import av

        want = {int(i): k for k, i in enumerate(indices)}
        out: list[np.ndarray | None] = [None] * len(indices)
        last = max(want)
        i = -1
        try:
            with av.open(str(self.path)) as c:
                for i, frame in enumerate(c.decode(video=0)):
                    if i in want:
                        out[want[i]] = frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
        except Exception as e:
            raise DataError(f"{self.path}: decoding frames failed ({type(e).__name__}: {_first_line(e)})") from e
        if any(o is None for o in out):
            raise DataError(f"{self.path}: truncated video: only {i + 1} of {self.n} frames could be decoded")
        return np.stack(out).astype(np.uint8, copy=False)


class _FolderSource(_Source):
    kind = "folder"
    decoder = "pillow"

    def __init__(self, path: Path, folder_fps: float):
        super().__init__(path)
        if not folder_fps or folder_fps <= 0:
            raise ValueError(f"folder_fps must be > 0, got {folder_fps!r}")
        try:
            names = [p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        except OSError as e:
            raise DataError(f"{path}: frame folder cannot be listed ({e})") from e
        if not names:
            raise DataError(f"{path}: empty frame folder (no {'/'.join(IMAGE_SUFFIXES)} files)")
        self.files = [path / n for n in sorted(names, key=_natural_key)]
        self.n = len(self.files)
        self.fps = float(folder_fps)
        self.starts = np.round(np.arange(self.n) / self.fps, 6)
        self.duration = round(self.n / self.fps, 6)

    def read(self, indices):
        # Pillow, not cv2.imread: inside a Jupyter kernel that has loaded matplotlib, OpenCV's bundled libpng
        # failed on valid PNG files ("libpng error: bad parameters to zlib")
        from PIL import Image

        out = []
        for i in indices:
            f = self.files[int(i)]
            try:
                with Image.open(f) as im:
                    img = np.asarray(im.convert("RGB"))
            except (OSError, ValueError) as e:
                raise DataError(f"{f}: unreadable image in frame folder {self.path} ({e})") from e
            if out and img.shape != out[0].shape:
                raise DataError(f"{f}: size {img.shape[1]}x{img.shape[0]} differs from the folder's other frames "
                                f"{out[0].shape[1]}x{out[0].shape[0]}")
            out.append(img)
        return np.stack(out).astype(np.uint8, copy=False)


def _check_count(path: Path, n: int, declared: int | None) -> None:
    if n == 0:
        raise DataError(f"{path}: zero decodable frames")
    if declared and declared - n > max(2, TRUNCATION_TOLERANCE * declared):
        raise DataError(f"{path}: truncated video: the container declares {declared} frames but only {n} "
                        f"can be read")


class _OpenFailed(Exception):
    pass


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


def _declared_frames(path: Path) -> tuple[int | None, str | None]:
    """Frame count the container header declares (PyAV, header only), and PyAV's error if it cannot open.
    Without PyAV installed (a bare GPU machine carrying only decord) there is no header check: (None, None)."""
    try:
        import av
    except ImportError:
        return None, None

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return None, "no video stream (zero decodable frames)"
            return (int(c.streams.video[0].frames) or None), None
    except Exception as e:
        return None, f"{type(e).__name__}: {_first_line(e)}"


def open_source(path, folder_fps: float = 25.0, decoder: str = "auto") -> _Source:
    """Open a video file or frame folder for sampling. ``decoder``: "auto" (decord, PyAV fallback), "decord",
    "pyav". Raises DataError naming the path and the reason."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        return _FolderSource(p, folder_fps)
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (0 bytes)")
    if decoder not in ("auto", "decord", "pyav"):
        raise ValueError(f"decoder must be 'auto', 'decord' or 'pyav', got {decoder!r}")
    if decoder == "pyav":
        return _PyAVSource(p)
    declared, av_err = _declared_frames(p)
    try:
        return _DecordSource(p, declared)
    except _OpenFailed as e:
        decord_err = str(e)
    if decoder == "decord" or av_err is not None:
        raise DataError(
            f"{p}: not a readable video (corrupt or truncated?): decord: {decord_err}"
            + (f"; PyAV: {av_err}" if av_err else "")
        )
    log.warning("%s: decord cannot open it (%s); falling back to PyAV", p, decord_err)
    return _PyAVSource(p)


# ----------------------------------------------------------------------------------------------------------
# Index selection (pure functions of the source's timestamps)
# ----------------------------------------------------------------------------------------------------------
def _nearest(starts: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the nearest start time for each instant in ``t`` (ties to the earlier frame)."""
    hi = np.clip(np.searchsorted(starts, t, side="left"), 0, len(starts) - 1)
    lo = np.clip(hi - 1, 0, len(starts) - 1)
    d_lo = np.round(np.abs(t - starts[lo]), 6)
    d_hi = np.round(np.abs(starts[hi] - t), 6)
    return np.where(d_lo <= d_hi, lo, hi)


def fps_instants(duration: float, fps: float) -> np.ndarray:
    """The requested instants ``k / fps`` for ``k >= 0`` while ``k / fps < duration``."""
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    n = math.ceil(round(duration * fps, 6))
    return np.round(np.arange(n) / fps, 6)


def sampled_fps(t) -> float:
    """The rate at which a clip was sampled, from its frame timestamps: 1 / median of the positive time steps;
    1.0 for a single frame or no positive step. The one convention shared by the HF backend (the ``fps`` it
    gives the processor) and training (``train.video_fps``)."""
    t = np.asarray(t, dtype=np.float64)
    if t.size < 2:
        return 1.0
    d = np.diff(t)
    d = d[d > 0]
    return float(1.0 / np.median(d)) if d.size else 1.0


def count_indices(n: int, count: int) -> np.ndarray:
    """``floor((i + 0.5) * n / count)`` for ``i < count`` (``count <= n``): distinct, increasing."""
    return np.floor((np.arange(count) + 0.5) * n / count).astype(np.int64)


def _select(src: _Source, strategy: str, fps, count) -> tuple[np.ndarray, int, str | None]:
    if strategy == "fps":
        if fps is None:
            raise ValueError("strategy='fps' needs fps=")
        inst = fps_instants(src.duration, float(fps))
        idx = np.unique(_nearest(src.starts, inst))
        reason = None
        if len(idx) < len(inst):
            reason = (f"{fps:g} fps asks for {len(inst)} frames but the source has {src.n} frames at "
                      f"{src.fps:g} fps: {len(idx)} distinct frames returned")
        return idx, len(inst), reason
    if strategy == "count":
        if count is None or int(count) < 1:
            raise ValueError(f"strategy='count' needs count >= 1, got {count!r}")
        count = int(count)
        if count >= src.n:
            reason = f"count={count} but the source has {src.n} frames" if count > src.n else None
            return np.arange(src.n), count, reason
        return count_indices(src.n, count), count, None
    if strategy == "all":
        return np.arange(src.n), src.n, None
    raise ValueError(f"unknown strategy {strategy!r}; use 'fps', 'count' or 'all'")


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def sample(path, strategy: str = "fps", fps: float | None = None, count: int | None = None,
           max_frames: int | None = None, seed: int | None = None, folder_fps: float = 25.0,
           decoder: str = "auto") -> Frames:
    """Sample frames of a video file or frame folder; see the module docstring for the exact conventions.

    ``strategy``: "fps" (needs ``fps``), "count" (needs ``count``) or "all". ``max_frames`` caps the number
    returned (count rule on the selection). ``seed``: if not None the frames are shuffled with
    :func:`shuffle` (timestamps travel with them). ``folder_fps``: the frame rate of a frame folder.
    ``decoder``: "auto" (decord, PyAV fallback), "decord" or "pyav" (identical frames; for benchmarks).
    """
    ck = _cache_key(path, strategy, fps, count, max_frames, folder_fps, decoder)
    out = _cache_get(ck)
    if out is None:
        out = _sample(path, strategy, fps, count, max_frames, folder_fps, decoder)
        _cache_put(ck, out)
    return shuffle(out, seed) if seed is not None else out


# Decoded frames of recent video files, reused while the file is unchanged (path, size, mtime, inode): a chapter
# asks many questions of the same clip (27 in chapter 06), and decoding costs about as much as the model's answer
# on the embedded models (issue 11). Bounded in bytes (EMOPROBE_FRAME_CACHE_MB, default 512; 0 turns it off);
# callers always receive their own copies, so nothing they do can alter what is cached.
_CACHE: "dict[tuple, Frames]" = {}
_CACHE_USED = [0]
_CACHE_LOCK = __import__("threading").Lock()


def _cache_limit() -> int:
    import os

    try:
        return max(0, int(float(os.environ.get("EMOPROBE_FRAME_CACHE_MB", "512")) * 2**20))
    except ValueError:
        return 512 * 2**20


def _cache_key(path, *params) -> tuple | None:
    try:
        p = Path(path)
        st = p.stat()
    except (OSError, TypeError, ValueError):
        return None
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode) or _cache_limit() == 0:
        return None  # frame folders (and anything unusual) are read afresh
    return (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, *params)


def _copy(fr: Frames) -> Frames:
    return replace(fr, frames=fr.frames.copy(), t=fr.t.copy(), indices=fr.indices.copy(), order=fr.order.copy())


def _cache_get(key) -> Frames | None:
    if key is None:
        return None
    with _CACHE_LOCK:
        fr = _CACHE.pop(key, None)
        if fr is None:
            return None
        _CACHE[key] = fr  # most recently used last
    return _copy(fr)


def _cache_put(key, fr: Frames) -> None:
    if key is None:
        return
    limit = _cache_limit()
    size = int(fr.frames.nbytes)
    if size > limit // 4:
        return
    fr = _copy(fr)
    with _CACHE_LOCK:
        old = _CACHE.pop(key, None)
        if old is not None:
            _CACHE_USED[0] -= int(old.frames.nbytes)
        _CACHE[key] = fr
        _CACHE_USED[0] += size
        while _CACHE_USED[0] > limit and _CACHE:
            ev = _CACHE.pop(next(iter(_CACHE)))
            _CACHE_USED[0] -= int(ev.frames.nbytes)


def clear_cache() -> None:
    """Forget every cached decoded clip."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _CACHE_USED[0] = 0


def _sample(path, strategy, fps, count, max_frames, folder_fps, decoder) -> Frames:
    src = open_source(path, folder_fps=folder_fps, decoder=decoder)
    idx, requested, reason = _select(src, strategy, fps, count)
    if max_frames is not None:
        if int(max_frames) < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames!r}")
        if len(idx) > max_frames:
            idx = idx[count_indices(len(idx), int(max_frames))]
            reason = (reason + "; " if reason else "") + f"max_frames={max_frames} kept {len(idx)} frames"
    return _frames(src, idx, requested, reason)


def _frames(src: _Source, idx: np.ndarray, requested: int, reason: str | None,
            pixels: np.ndarray | None = None) -> Frames:
    idx = np.asarray(idx, dtype=np.int64)
    if pixels is None:
        pixels = src.read(idx)
    return Frames(
        frames=pixels, t=src.starts[idx].copy(), indices=idx, requested=int(requested),
        capped=len(idx) < requested or reason is not None, source_fps=src.fps, n_source=src.n,
        order=np.arange(len(idx)), path=str(src.path), cap_reason=reason, decoder=src.decoder,
    )


def gap_indices(a: int, b: int, m: int) -> np.ndarray:
    """MSCE gap between keyframes ``a < b``: ``a + floor(j * (b - a) / (m + 1))``, ``j = 1..m``, or all
    ``b - a - 1`` in-between frames if there are fewer than ``m``."""
    g = b - a - 1
    if g <= m:
        return np.arange(a + 1, b, dtype=np.int64)
    return a + np.floor(np.arange(1, m + 1) * (b - a) / (m + 1)).astype(np.int64)


def keyframes_gaps(path, key_fps: float = 1.0, m: int = 4, folder_fps: float = 25.0,
                   decoder: str = "auto") -> tuple[Frames, list[Frames]]:
    """MSCE (paper Sec. 4.2): keyframes at ``key_fps`` and, for each of the n-1 gaps between consecutive
    keyframes, ``m`` frames equally spaced strictly between them (see the module docstring). All needed frames
    are decoded in one batch. Returns ``(keys, gaps)`` with ``len(gaps) == len(keys) - 1``."""
    if int(m) < 1:
        raise ValueError(f"m must be >= 1, got {m!r}")
    src = open_source(path, folder_fps=folder_fps, decoder=decoder)
    kidx, krequested, kreason = _select(src, "fps", key_fps, None)
    gidx = [gap_indices(int(a), int(b), int(m)) for a, b in zip(kidx[:-1], kidx[1:])]
    allidx = np.unique(np.concatenate([kidx, *gidx]))
    pixels = src.read(allidx)
    pos = {int(i): k for k, i in enumerate(allidx)}

    def take(ix):
        return pixels[[pos[int(i)] for i in ix]] if len(ix) else pixels[:0]

    keys = _frames(src, kidx, krequested, kreason, take(kidx))
    gaps = []
    for (a, b), gi in zip(zip(kidx[:-1], kidx[1:]), gidx):
        reason = None if len(gi) >= m else f"gap between frames {a} and {b} holds only {len(gi)} frames (< m={m})"
        gaps.append(_frames(src, gi, int(m), reason, take(gi)))
    return keys, gaps


def shuffle(frames: Frames, seed: int) -> Frames:
    """Permute frames, timestamps and indices together with ``numpy.random.default_rng(seed)``.
    ``order`` records the permutation relative to the input's time order; for T >= 2 the permutation is never
    the identity (a draw equal to the identity is replaced by the next draw of the same generator)."""
    T = len(frames)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(T)
    while T >= 2 and np.array_equal(perm, np.arange(T)):
        perm = rng.permutation(T)
    return replace(frames, frames=frames.frames[perm], t=frames.t[perm], indices=frames.indices[perm],
                   order=frames.order[perm])


def spec_key(strategy: str, **params) -> dict:
    """The canonical JSON-able dict describing a sampling spec (enters the run-store key).

    ``spec_key("fps", fps=5) == spec_key("fps", fps=5.0)``; parameters irrelevant to the strategy are rejected;
    ``decoder`` is not part of the key (decoders return identical frames)."""
    allowed = {
        "fps": {"fps", "max_frames", "seed", "folder_fps"},
        "count": {"count", "max_frames", "seed", "folder_fps"},
        "all": {"max_frames", "seed", "folder_fps"},
        "keyframes_gaps": {"key_fps", "m", "folder_fps"},
    }
    if strategy not in allowed:
        raise ValueError(f"unknown strategy {strategy!r}; known: {sorted(allowed)}")
    params = {k: v for k, v in params.items() if k != "decoder"}
    extra = set(params) - allowed[strategy]
    if extra:
        raise ValueError(f"parameters {sorted(extra)} do not apply to strategy {strategy!r}")
    key: dict = {"strategy": strategy, "version": SAMPLING_VERSION}
    floats = {"fps", "key_fps", "folder_fps"}
    defaults = {"folder_fps": 25.0, "key_fps": 1.0, "m": 4}
    for name in sorted(allowed[strategy]):
        v = params.get(name, defaults.get(name))
        if v is None:
            continue
        key[name] = float(v) if name in floats else int(v)
    if strategy == "fps" and "fps" not in key:
        raise ValueError("strategy='fps' needs fps=")
    if strategy == "count" and "count" not in key:
        raise ValueError("strategy='count' needs count=")
    return key
