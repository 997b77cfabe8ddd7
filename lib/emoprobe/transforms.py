"""Visual prompts drawn onto sampled frames (the paper's App. S1 / Table S1 input modalities).

One entry point, :func:`apply`: ``apply(name, frames, gt=None) -> Frames``. ``frames`` is a
:class:`emoprobe.sampling.Frames` (uint8 (T, H, W, 3) RGB); a new ``Frames`` comes back, the input is never
modified. The same frames in give the same pixels out (no randomness; OpenCV / MTCNN on the CPU).

Transforms (``TRANSFORMS``; the paper's names as in ``data/reference/tableS1_visual_prompting.csv``):

* ``none`` — identity (a copy).
* ``red-circle`` — a red ellipse (RGB 255, 0, 0) drawn around the face box, 10% larger than the box.
* ``heatmap`` — a translucent heat overlay (OpenCV's JET colour map) of where the face moves: per frame, the
  mean absolute grey-level difference to its neighbours in the given order, blurred, inside the face ellipse;
  the opacity grows with the motion (still pixels stay untouched).
* ``focused-heatmap`` — the same heat restricted to the eye/brow regions and the mouth region.
* ``video-montage`` — all T frames tiled, in the given order, into ONE grid image of the same H × W (cols =
  ceil(sqrt(T)), rows = ceil(T / cols), each tile shrunk with area interpolation, empty cells black). The
  result has one frame: ``t`` = ``[t[0]]`` (the instant of the first tile; a still image has no other time),
  ``indices`` = ``[indices[0]]``, ``order`` = ``[0]``; ``requested`` / ``capped`` / ``cap_reason`` describe the
  sampling and are kept as they were.
* ``motionflow-arrow`` — arrows of dense optical flow (``cv2.calcOpticalFlowFarneback``) on a grid inside the
  face box, green; frame i shows the flow from frame i-1 to frame i (frame 0 the flow from 0 to 1), drawn 3×
  its length in pixels.
* ``pointtrack`` — points detected on the first frame in the eye/brow and mouth regions
  (``cv2.goodFeaturesToTrack``; the detector's eye and mouth points if it finds none), tracked frame to frame with
  ``cv2.calcOpticalFlowPyrLK``; each frame shows the points (yellow) and their trails so far (cyan). A lost
  point stops being drawn.

Motion is always computed in the order the frames are given (shuffled frames give the motion the model sees).

Where the face is. Every transform except ``none``/``video-montage`` needs a face box per frame (and five points:
eye centres, nose tip, mouth corners). Two sources, chosen by a suffix of the name:

* ``@mtcnn`` — facenet-pytorch's MTCNN on the CPU with one torch thread (weights ship in the wheel; nothing
  downloaded), the most
  probable face per frame. Frames where it finds no face take the box of the nearest frame (in position) where
  it did. **This is the default** (``DEFAULT_DETECTOR``): it is what exists for real video, so a chapter
  comparing prompt types uses one detector for all of them, on SynthFER and on MAFW/DFEW alike, and the
  ground truth passed by ``run.classify`` for SynthFER rows is then ignored.
* ``@gt`` — the SynthFER generator's box and landmarks (``synthfer.load_gt``: ``box`` (n_frames, 4) and
  ``landmarks`` (n_frames, 26, 2), indexed by ``Frames.indices``). Exact, but only for SynthFER: an upper bound
  on what a detector-driven prompt could do.

So ``"red-circle"`` = ``"red-circle@mtcnn"``; ``"red-circle@gt"`` uses the ground truth. The full name enters
the run-store key (``run.classify``), so the two never share answers.

Errors are :class:`TransformError` (a ``ValueError``) naming the transform and the reason: unknown name or
detector, input not uint8 (T, H, W, 3), ``@gt`` without ground truth, no face in any frame. ``run.classify``
records them as failed rows ("cannot prepare input: TransformError: ...").
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

#: Face sources. ``mtcnn`` is the default (see the module docstring).
DETECTORS = ("mtcnn", "gt")
DEFAULT_DETECTOR = "mtcnn"

#: Drawing constants (documented above; they enter the run-store key through the module's source hash).
RED = (255, 0, 0)
ARROW = (0, 255, 0)
POINT = (255, 255, 0)
TRAIL = (0, 255, 255)
CIRCLE_SCALE = 1.10      # ellipse semi-axes = 1.10 × half the box size
HEAT_ALPHA = 0.65        # opacity of the heat colour at full heat
HEAT_MIN = 12.0          # grey levels: motion below this never reaches full heat (keeps codec noise faint)
FLOW_GAIN = 3.0          # arrows are drawn 3× the flow length
FLOW_MIN = 0.25          # px: shorter flow vectors are not drawn
MAX_POINTS = 24

_GT_POINTS = ("eye_left_center", "eye_right_center", "nose_tip", "mouth_left_corner", "mouth_right_corner")


class TransformError(ValueError):
    """A transform could not be applied (the message names the transform and the reason)."""


@dataclass(frozen=True)
class Transform:
    name: str
    fn: Callable
    needs_face: bool
    description: str


@dataclass
class Face:
    """Per frame: ``box`` (T, 4) x0, y0, x1, y1 pixels; ``points`` (T, 5, 2) eye centres (image left, right),
    nose tip, mouth corners (image left, right); ``found`` (T,) where the source located the face itself;
    ``source`` "mtcnn" | "gt"."""

    box: np.ndarray
    points: np.ndarray
    found: np.ndarray
    source: str


# ------------------------------------------------------------------------------------------------ face
_MTCNN = None
_MTCNN_LOCK = threading.Lock()
_CACHE: OrderedDict = OrderedDict()   # frames digest -> Face (one clip is detected once per process)
_CACHE_SIZE = 512


def _mtcnn():
    global _MTCNN
    with _MTCNN_LOCK:
        if _MTCNN is None:
            from facenet_pytorch import MTCNN

            _MTCNN = MTCNN(keep_all=True, device="cpu")
        return _MTCNN


def _fill_missing(found: np.ndarray, *arrays: np.ndarray) -> None:
    """Frames without a detection take the values of the nearest frame (by position; ties: the earlier)."""
    ok = np.flatnonzero(found)
    for i in np.flatnonzero(~found):
        j = ok[np.argmin(np.abs(ok - i))]
        for a in arrays:
            a[i] = a[j]


def detect_mtcnn(frames: np.ndarray, name: str = "mtcnn") -> Face:
    """MTCNN faces of (T, H, W, 3) uint8 RGB frames: the most probable face per frame (cached by content)."""
    digest = hashlib.sha1(np.ascontiguousarray(frames).tobytes() + repr(frames.shape).encode()).hexdigest()
    if digest in _CACHE:
        _CACHE.move_to_end(digest)
        f = _CACHE[digest]
        return Face(f.box.copy(), f.points.copy(), f.found.copy(), f.source)
    import torch

    # one thread: the same floating-point results on any machine (and no oversubscription on shared cores)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            boxes, probs, points = _mtcnn().detect(list(frames), landmarks=True)
    finally:
        torch.set_num_threads(n_threads)
    T = len(frames)
    box = np.zeros((T, 4)); pts = np.zeros((T, 5, 2)); found = np.zeros(T, bool)
    for i in range(T):
        if boxes[i] is None:
            continue
        b = np.asarray(boxes[i], float).reshape(-1, 4)   # numpy 2: object arrays -> float
        p = np.asarray(probs[i], float).reshape(-1)
        k = int(np.argmax(p))
        box[i], pts[i], found[i] = b[k], np.asarray(points[i], float).reshape(-1, 5, 2)[k], True
    if not found.any():
        raise TransformError(f"transform {name!r}: no face found by MTCNN in any of the {T} frames")
    _fill_missing(found, box, pts)
    face = Face(np.round(box, 3), np.round(pts, 3), found, "mtcnn")
    _CACHE[digest] = face
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return Face(face.box.copy(), face.points.copy(), face.found.copy(), face.source)


def face_from_gt(frames, gt: dict | None, name: str = "gt") -> Face:
    """The SynthFER ground-truth face of the sampled frames (rows ``frames.indices`` of the per-frame arrays)."""
    if gt is None:
        raise TransformError(f"transform {name!r}: needs SynthFER ground truth (gt=None; use the MTCNN default "
                             "on real data)")
    try:
        box_all = np.asarray(gt["box"], float)
        lm_all = np.asarray(gt["landmarks"], float)
        lm_names = [str(x) for x in gt["landmark_names"]]
    except KeyError as e:
        raise TransformError(f"transform {name!r}: ground truth lacks {e.args[0]!r}") from None
    idx = np.asarray(frames.indices, int)
    if len(idx) and (idx.min() < 0 or idx.max() >= len(box_all)):
        raise TransformError(f"transform {name!r}: frame indices up to {idx.max()} but the ground truth has "
                             f"{len(box_all)} frames (another clip's ground truth?)")
    try:
        sel = [lm_names.index(n) for n in _GT_POINTS]
    except ValueError as e:
        raise TransformError(f"transform {name!r}: ground truth landmarks lack a point: {e}") from None
    return Face(box_all[idx].copy(), lm_all[idx][:, sel].copy(), np.ones(len(idx), bool), "gt")


def locate_face(frames, gt: dict | None = None, detector: str = DEFAULT_DETECTOR, name: str = "") -> Face:
    """The face of every frame from ``detector`` ("mtcnn" or "gt")."""
    if detector == "gt":
        return face_from_gt(frames, gt, name or "gt")
    if detector == "mtcnn":
        return detect_mtcnn(frames.frames, name or "mtcnn")
    raise TransformError(f"transform {name!r}: unknown face detector {detector!r} (known: {', '.join(DETECTORS)})")


# ------------------------------------------------------------------------------------------------ masks
def _ellipse_mask(h: int, w: int, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return (((xx + 0.5 - cx) / max(ax, 1.0)) ** 2 + ((yy + 0.5 - cy) / max(ay, 1.0)) ** 2) <= 1.0


def face_mask(shape, box) -> np.ndarray:
    """Boolean (H, W): the ellipse inscribed in the face box."""
    x0, y0, x1, y1 = box
    return _ellipse_mask(shape[0], shape[1], (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2)


def region_mask(shape, box, points) -> np.ndarray:
    """Boolean (H, W): the eye+brow regions and the mouth region of one face (``focused-heatmap`` also keeps
    them inside :func:`face_mask`)."""
    h, w = shape[:2]
    fw, fh = box[2] - box[0], box[3] - box[1]
    m = np.zeros((h, w), bool)
    for ex, ey in points[:2]:  # eyes, reaching up to the brows
        m |= _ellipse_mask(h, w, ex, ey - 0.06 * fh, 0.20 * fw, 0.15 * fh)
    (lx, ly), (rx, ry) = points[3], points[4]
    half = max(0.5 * abs(rx - lx) * 1.35, 0.18 * fw)
    m |= _ellipse_mask(h, w, (lx + rx) / 2, (ly + ry) / 2 + 0.02 * fh, half, 0.13 * fh)
    return m


# ------------------------------------------------------------------------------------------------ drawings
def _gray(frames: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def _red_circle(frames: np.ndarray, face: Face) -> np.ndarray:
    import cv2

    out = frames.copy()
    h, w = frames.shape[1:3]
    thick = max(1, int(round(0.02 * min(h, w))))
    for i in range(len(out)):
        x0, y0, x1, y1 = face.box[i]
        c = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
        ax = (max(1, int(round(CIRCLE_SCALE * (x1 - x0) / 2))), max(1, int(round(CIRCLE_SCALE * (y1 - y0) / 2))))
        img = np.ascontiguousarray(out[i])
        cv2.ellipse(img, c, ax, 0, 0, 360, RED, thick, cv2.LINE_AA)
        out[i] = img
    return out


def _motion(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) float32: per frame the mean |Δ grey| to its neighbours in the given order, blurred."""
    import cv2

    g = _gray(frames).astype(np.float32)
    T = len(g)
    if T < 2:
        return np.zeros(g.shape, np.float32)
    d = np.abs(np.diff(g, axis=0))                # (T-1): between i and i+1
    e = np.zeros_like(g)
    e[:-1] += d
    e[1:] += d
    e[1:-1] /= 2
    k = max(3, int(round(min(g.shape[1:]) / 16)) | 1)
    return np.stack([cv2.GaussianBlur(x, (k, k), 0) for x in e])


def _heat_overlay(frames: np.ndarray, heat: np.ndarray) -> np.ndarray:
    import cv2

    top = max(float(heat.max()), HEAT_MIN)
    h01 = np.clip(heat / top, 0.0, 1.0)
    out = np.empty_like(frames)
    for i in range(len(frames)):
        col = cv2.applyColorMap((h01[i] * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
        a = (HEAT_ALPHA * h01[i])[..., None]
        out[i] = np.clip(np.rint(frames[i].astype(np.float32) * (1 - a) + col * a), 0, 255).astype(np.uint8)
    return out


def _heatmap(frames: np.ndarray, face: Face) -> np.ndarray:
    m = _motion(frames)
    for i in range(len(m)):
        m[i] *= face_mask(frames.shape[1:3], face.box[i])
    return _heat_overlay(frames, m)


def _focused_heatmap(frames: np.ndarray, face: Face) -> np.ndarray:
    m = _motion(frames)
    for i in range(len(m)):
        m[i] *= region_mask(frames.shape[1:3], face.box[i], face.points[i]) & face_mask(frames.shape[1:3],
                                                                                         face.box[i])
    return _heat_overlay(frames, m)


def _montage(frames: np.ndarray, face=None) -> np.ndarray:
    import cv2

    T, H, W = frames.shape[:3]
    cols = int(np.ceil(np.sqrt(T)))
    rows = int(np.ceil(T / cols))
    th, tw = H // rows, W // cols
    if th < 1 or tw < 1:
        raise TransformError(f"transform 'video-montage': {T} frames do not fit a {H}x{W} grid")
    out = np.zeros((1, H, W, 3), np.uint8)
    oy, ox = (H - rows * th) // 2, (W - cols * tw) // 2
    for i in range(T):
        r, c = divmod(i, cols)
        out[0, oy + r * th:oy + (r + 1) * th, ox + c * tw:ox + (c + 1) * tw] = cv2.resize(
            frames[i], (tw, th), interpolation=cv2.INTER_AREA)
    return out


def _flow_arrows(frames: np.ndarray, face: Face) -> np.ndarray:
    import cv2

    out = frames.copy()
    T, H, W = frames.shape[:3]
    if T < 2:
        return out
    g = _gray(frames)
    win = max(5, int(round(min(H, W) / 8)) | 1)
    flows = [cv2.calcOpticalFlowFarneback(g[i], g[i + 1], None, 0.5, 3, win, 3, 5, 1.2, 0) for i in range(T - 1)]
    thick = max(1, int(round(min(H, W) / 112)))
    for i in range(T):
        fl = flows[i - 1] if i >= 1 else flows[0]
        x0, y0, x1, y1 = face.box[i]
        step = max(4, int(round((x1 - x0) / 7)))
        img = np.ascontiguousarray(out[i])
        for y in range(int(max(0, y0)) + step // 2, int(min(H, y1)), step):
            for x in range(int(max(0, x0)) + step // 2, int(min(W, x1)), step):
                dx, dy = (float(v) for v in fl[y, x])
                if np.hypot(dx, dy) < FLOW_MIN:
                    continue
                tip = (int(round(x + FLOW_GAIN * dx)), int(round(y + FLOW_GAIN * dy)))
                cv2.arrowedLine(img, (x, y), tip, ARROW, thick, cv2.LINE_AA, tipLength=0.35)
        out[i] = img
    return out


def _pointtrack(frames: np.ndarray, face: Face) -> np.ndarray:
    import cv2

    out = frames.copy()
    T, H, W = frames.shape[:3]
    g = _gray(frames)
    mask = region_mask((H, W), face.box[0], face.points[0]).astype(np.uint8) * 255
    p = cv2.goodFeaturesToTrack(g[0], maxCorners=MAX_POINTS, qualityLevel=0.01, minDistance=max(2, W // 40),
                                mask=mask, blockSize=3)
    if p is None or len(p) == 0:
        p = face.points[0][[0, 1, 3, 4]].reshape(-1, 1, 2)
    p = np.asarray(p, np.float32).reshape(-1, 1, 2)
    tracks = [p.reshape(-1, 2).copy()]
    alive_at = [np.ones(len(p), bool)]          # a point lost at frame i is not drawn from frame i on
    win = max(7, int(round(min(H, W) / 10)) | 1)
    for i in range(1, T):
        q, st, _err = cv2.calcOpticalFlowPyrLK(g[i - 1], g[i], p, None, winSize=(win, win), maxLevel=2,
                                               criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        alive = alive_at[-1] & st.reshape(-1).astype(bool)
        p = np.where(alive[:, None, None], q, p).astype(np.float32)
        tracks.append(p.reshape(-1, 2).copy())
        alive_at.append(alive)
    r = max(1, int(round(min(H, W) / 75)))
    for i in range(T):
        img = np.ascontiguousarray(out[i])
        for k in np.flatnonzero(alive_at[i]):
            for j in range(1, i + 1):
                a = tuple(int(round(v)) for v in tracks[j - 1][k])
                b = tuple(int(round(v)) for v in tracks[j][k])
                cv2.line(img, a, b, TRAIL, 1, cv2.LINE_AA)
            c = tuple(int(round(v)) for v in tracks[i][k])
            cv2.circle(img, c, r, POINT, -1, cv2.LINE_AA)
        out[i] = img
    return out


TRANSFORMS: dict[str, Transform] = {t.name: t for t in (
    Transform("none", lambda f, face: f.copy(), False, "the sampled frames unchanged"),
    Transform("red-circle", _red_circle, True, "red ellipse around the face"),
    Transform("heatmap", _heatmap, True, "translucent heat overlay of frame-to-frame motion inside the face"),
    Transform("focused-heatmap", _focused_heatmap, True, "heat overlay restricted to eyes/brows and mouth"),
    Transform("video-montage", _montage, False, "all frames tiled into one grid image of the same size"),
    Transform("motionflow-arrow", _flow_arrows, True, "arrows of dense optical flow (Farneback) on the face"),
    Transform("pointtrack", _pointtrack, True, "eye/brow and mouth points tracked (Lucas-Kanade) with trails"),
)}


def names() -> list[str]:
    """The transform names (without a detector suffix)."""
    return list(TRANSFORMS)


def parse_name(name: str) -> tuple[str, str]:
    """``"red-circle@gt"`` -> ``("red-circle", "gt")``; no suffix -> the default detector."""
    if not isinstance(name, str):
        raise TransformError(f"transform name must be a string, got {type(name).__name__}")
    base, _, det = name.partition("@")
    if base not in TRANSFORMS:
        raise TransformError(f"transform {name!r}: unknown name (known: {', '.join(TRANSFORMS)}; "
                             f"optionally with @{'/@'.join(DETECTORS)})")
    det = det or DEFAULT_DETECTOR
    if det not in DETECTORS:
        raise TransformError(f"transform {name!r}: unknown face detector {det!r} (known: {', '.join(DETECTORS)})")
    return base, det


def needs_face(name: str) -> bool:
    return TRANSFORMS[parse_name(name)[0]].needs_face


def _check(name: str, frames) -> np.ndarray:
    x = getattr(frames, "frames", None)
    if x is None:
        raise TransformError(f"transform {name!r}: expected emoprobe.sampling.Frames, got {type(frames).__name__}")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TransformError(f"transform {name!r}: frames must be uint8 (T, H, W, 3) RGB, got {desc}")
    if x.shape[0] < 1 or x.shape[1] < 2 or x.shape[2] < 2:
        raise TransformError(f"transform {name!r}: no frames to draw on (shape {x.shape})")
    if len(np.asarray(frames.t)) != x.shape[0]:
        raise TransformError(f"transform {name!r}: {x.shape[0]} frames but {len(np.asarray(frames.t))} timestamps")
    return x


def apply(name: str, frames, gt: dict | None = None):
    """Draw the visual prompt ``name`` (see the module docstring) onto ``frames``; returns a new Frames."""
    base, det = parse_name(name)
    x = _check(name, frames)
    tr = TRANSFORMS[base]
    face = locate_face(frames, gt, det, name) if tr.needs_face else None
    try:
        y = tr.fn(x, face)
    except TransformError:
        raise
    except Exception as e:  # noqa: BLE001 - an OpenCV failure names the transform
        raise TransformError(f"transform {name!r}: {type(e).__name__}: {e}") from e
    assert y.dtype == np.uint8 and y.ndim == 4, (name, y.dtype, y.shape)
    if base == "video-montage":
        return replace(frames, frames=y, t=np.asarray(frames.t, float)[:1].copy(),
                       indices=np.asarray(frames.indices)[:1].copy(), order=np.zeros(1, dtype=np.asarray(
                           frames.order).dtype))
    return replace(frames, frames=y, t=np.asarray(frames.t).copy(), indices=np.asarray(frames.indices).copy(),
                   order=np.asarray(frames.order).copy())
