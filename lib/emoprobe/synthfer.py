"""SynthFER: synthetic dynamic facial-expression videos whose ground truth is known down to the frame.

A 2-D parametric face (pseudo-3-D landmarks under head pose, drawn with OpenCV) is driven frame by frame by
FACS-style action-unit (AU) intensities.  Each class is a documented *recipe* (:data:`RECIPES`): one or two
phases of AUs with intensities and onset/apex/offset dynamics.  Identity, lighting, background clutter,
sensor noise and compression vary per clip, independently of the class.  Distractors that carry no emotion
(talking-like mouth motion, blinks, nods, gaze shifts, head drift) occur in every class at random.

Public API (contract in CONTRIBUTING.md, section ``synthfer``)::

    generate(out_dir, label_set, split, n_per_class, n_total, size, fps, seed, workers, micro_share) -> Path
    dataset(label_set, split, size, seed, ...) -> DataFrame      # cached under paths.generated()/synthfer/
    render_clip(label, rng, size, fps, ...) -> (frames uint8 (T,H,W,3), gt dict)
    load_gt(row_or_path) -> dict
    class_counts(label_set, split, n_per_class, n_total) -> dict[label, int]
    recipes_table(label_set) -> DataFrame
    preview_grid(manifest_df, n_per_class, frame) -> Figure;  plot_timeline(gt, aus) -> Figure
    AU_NAMES, LANDMARK_NAMES, RECIPES, TRAIN_PROPORTIONS, TRAIN_PROPORTIONS_SOURCE

Coordinates: image x to the right, y down.  "left"/"right" in landmark names mean *image* left/right
(the person's right side is image left).  The unilateral AUs ``R12``/``R14`` act on the person's right side,
i.e. the image-left mouth corner.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import labels as _labels

__all__ = [
    "AU_NAMES", "LANDMARK_NAMES", "RECIPES", "TRAIN_PROPORTIONS", "TRAIN_PROPORTIONS_SOURCE",
    "DEFAULT_N_PER_CLASS", "DEFAULT_N_TOTAL", "MANIFEST_COLUMNS", "GENERATOR_VERSION",
    "generate", "dataset", "render_clip", "load_gt", "class_counts", "recipes_table", "order_dependent",
    "preview_grid", "plot_timeline",
]

GENERATOR_VERSION = "1"

# --------------------------------------------------------------------------------------------------------------
# Action units and landmarks
# --------------------------------------------------------------------------------------------------------------
# FACS action units rendered by the face model.  R12 / R14 are the unilateral (person's right) lip-corner puller
# and dimpler of EMFACS contempt (R12A+R14A).  AU41 (lid droop) and AU45 (blink) drive the lids.
AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "R12", "R14",
    "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU41", "AU45",
)
AU_DESCRIPTION = {
    "AU1": "inner brow raiser", "AU2": "outer brow raiser", "AU4": "brow lowerer", "AU5": "upper lid raiser",
    "AU6": "cheek raiser", "AU7": "lid tightener", "AU9": "nose wrinkler", "AU10": "upper lip raiser",
    "AU12": "lip corner puller", "R12": "lip corner puller, right side only",
    "R14": "dimpler, right side only", "AU15": "lip corner depressor", "AU17": "chin raiser",
    "AU20": "lip stretcher", "AU23": "lip tightener", "AU25": "lips part", "AU26": "jaw drop",
    "AU41": "lid droop", "AU45": "blink",
}
_AU = {n: i for i, n in enumerate(AU_NAMES)}

LANDMARK_NAMES: tuple[str, ...] = (
    "eye_left_outer", "eye_left_inner", "eye_right_inner", "eye_right_outer",
    "eye_left_center", "eye_right_center",            # iris centres (move with gaze)
    "eye_left_top", "eye_left_bottom", "eye_right_top", "eye_right_bottom",   # lid apices (eye opening)
    "brow_left_outer", "brow_left_mid", "brow_left_inner", "brow_right_inner", "brow_right_mid",
    "brow_right_outer",
    "nose_tip", "nose_left_wing", "nose_right_wing",
    "mouth_left_corner", "mouth_right_corner", "upper_lip_top", "upper_lip_inner", "lower_lip_inner",
    "lower_lip_bottom", "chin",
)
_LM = {n: i for i, n in enumerate(LANDMARK_NAMES)}

MANIFEST_COLUMNS = (
    "clip_id", "path", "label", "split", "label_set", "duration_s", "fps", "n_frames", "size",
    "order_dependent", "micro", "micro_onset_s", "micro_offset_s", "identity", "seed", "sha256",
    "variant", "gt_path",
)

# --------------------------------------------------------------------------------------------------------------
# Class distributions of the real datasets (train split is long-tailed like them)
# --------------------------------------------------------------------------------------------------------------
TRAIN_PROPORTIONS_SOURCE = (
    "APPROXIMATE. Relative per-class clip counts of the single-label sets of MAFW (Liu et al., ACM MM 2022; "
    "11 classes) and DFEW (Jiang et al., ACM MM 2020; the ~12,059 single-labelled of its 16,372 clips). The "
    "project's reference search (pages/code/issues corpora, queries such as 'MAFW dataset class distribution "
    "anger disgust contempt helplessness' and 'DFEW 12059 single-labeled clips ... distribution') returned the "
    "datasets' descriptions but no per-class table, so the counts below are reconstructed from the published "
    "class-distribution figures as best known, rounded to tens. They agree with what the reproduced paper states "
    "(MAFW head classes anger, happiness, neutral, sadness, surprise; tail contempt, disappointment, "
    "helplessness; DFEW head happy/sad/neutral, tail disgust and fear) but are not exact: replace them with the "
    "official counts when the dataset split files are available (data.load_mafw / data.load_dfew)."
)
_APPROX_COUNTS = {
    "mafw": {
        "anger": 1250, "anxiety": 590, "contempt": 220, "disappointment": 230, "disgust": 640, "fear": 560,
        "happiness": 1780, "helplessness": 280, "neutral": 1320, "sadness": 1540, "surprise": 1020,
    },
    "dfew": {
        "happy": 2700, "sad": 2100, "neutral": 2500, "angry": 1950, "surprise": 1450, "disgust": 150,
        "fear": 1200,
    },
}
TRAIN_PROPORTIONS: dict[str, dict[str, float]] = {
    ls: {k: v / sum(c.values()) for k, v in c.items()} for ls, c in _APPROX_COUNTS.items()
}
DEFAULT_N_PER_CLASS = {"mafw": 45, "dfew": 100}   # the paper's balanced test sets (495 / 700 clips)
DEFAULT_N_TOTAL = {"mafw": 3000, "dfew": 3000}

# --------------------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------------------
# A phase: AU -> intensity (float, always present) or (intensity, probability present); optional "head"
# (yaw, pitch, roll offsets in radians at full phase; pitch > 0 = head down), "gaze" (dx, dy in iris travel
# units; dy > 0 = looking down), "shrug" (shoulder rise, 0..1).
_P_SMILE_HOPE = {"aus": {"AU6": 0.45, "AU12": 0.6, "AU1": 0.35, "AU2": 0.3, "AU5": (0.25, 0.5)},
                 "head": (0.0, -0.05, 0.0)}
_P_SAD_LITE = {"aus": {"AU1": 0.55, "AU4": 0.45, "AU15": 0.6, "AU17": (0.5, 0.7), "AU41": (0.3, 0.5)},
               "head": (0.0, 0.14, 0.0), "gaze": (0.0, 0.5)}
_P_APPEAL = {"aus": {"AU1": 0.75, "AU2": 0.6, "AU5": 0.35, "AU25": 0.55, "AU26": (0.3, 0.6)},
             "head": (0.0, -0.06, 0.0)}
_P_COLLAPSE = {"aus": {"AU1": 0.45, "AU4": 0.35, "AU15": 0.5, "AU41": 0.65, "AU17": (0.35, 0.5)},
               "head": (0.0, 0.24, 0.06), "gaze": (0.0, 0.6), "shrug": 0.8}

_FAST = {"onset_s": (0.1, 0.25), "apex_s": (0.5, 1.2), "offset_s": (0.3, 0.7)}
_MED = {"onset_s": (0.25, 0.6), "apex_s": (0.8, 2.0), "offset_s": (0.3, 0.8)}
_SLOW = {"onset_s": (0.5, 1.1), "apex_s": (1.0, 2.5), "offset_s": (0.5, 1.0)}
_TWO = {"onset_s": (0.25, 0.5), "phase_a_s": (0.5, 0.9), "cross_s": (0.3, 0.6), "offset_s": (0.4, 0.8)}

RECIPES: dict[str, dict[str, Any]] = {
    "anger": {
        "dfew": "angry",
        "note": "EMFACS anger prototypes 4+5+7+23 (closed, with 17/24) and 4+5+7+10+23+25/26 (open, shouting); "
                "Ekman & Friesen (1978/2002), Matsumoto & Ekman (2008).",
        "variants": {
            "closed": {"weight": {"mafw": 0.6, "dfew": 0.6}, "dynamics": _MED,
                       "phases": [{"aus": {"AU4": 0.8, "AU5": 0.45, "AU7": 0.6, "AU23": 0.7, "AU17": (0.4, 0.5)},
                                   "head": (0.0, 0.05, 0.0)}]},
            "open": {"weight": {"mafw": 0.4, "dfew": 0.4}, "dynamics": _MED,
                     "phases": [{"aus": {"AU4": 0.8, "AU5": 0.5, "AU7": 0.55, "AU10": 0.5, "AU23": 0.4,
                                         "AU25": 0.7, "AU26": 0.45}, "head": (0.0, -0.04, 0.0)}]},
        },
    },
    "anxiety": {
        "note": "Not an EMFACS prototype. Documented choice after Harrigan & O'Connell (1996, 'How do you look "
                "when feeling anxious?'): worried brow (1+4), horizontal lip stretch (20), lip press (23), lid "
                "tightening, raised blink rate and gaze aversion, restless head; intensities fluctuate instead of "
                "a single apex. Shares 1+4+20 with fear at lower intensity (fear/anxiety confusable).",
        "variants": {
            "worry": {"weight": {"mafw": 1.0}, "dynamics": {**_MED, "fluctuate": (0.25, 0.45)},
                      "blink_rate_x": 2.5, "gaze_shift_x": 3.0, "head_jitter_x": 2.0,
                      "phases": [{"aus": {"AU1": 0.5, "AU4": 0.45, "AU20": 0.45, "AU23": (0.35, 0.6),
                                          "AU7": (0.25, 0.5)}, "gaze": (0.0, 0.2)}]},
        },
    },
    "contempt": {
        "note": "EMFACS contempt R12A+R14A: unilateral lip-corner tightening/raise (the only asymmetric "
                "prototype), with a slight head tilt back and away (Ekman & Friesen 1986; Matsumoto & Ekman 2004).",
        "variants": {
            "unilateral": {"weight": {"mafw": 1.0}, "dynamics": {**_FAST, "apex_s": (0.6, 1.5)},
                           "phases": [{"aus": {"R12": 0.6, "R14": 0.65, "AU2": (0.2, 0.3)},
                                       "head": (0.1, -0.08, 0.06)}]},
        },
    },
    "disappointment": {
        "note": "Compound class, documented choice: hope that falls. A brief hopeful smile with raised brows "
                "collapses into lip-corner depression with chin raise and a lowered head (order matters: the "
                "reverse sequence is the 'cheered up' happiness variant). A minority are a mild static "
                "disappointed face (15+17+23, 1+4 weak), confusable with sadness.",
        "variants": {
            "hope_falls": {"weight": {"mafw": 0.75}, "dynamics": _TWO, "phases": [_P_SMILE_HOPE, _P_SAD_LITE]},
            "mild": {"weight": {"mafw": 0.25}, "dynamics": _MED,
                     "phases": [{"aus": {"AU15": 0.5, "AU17": 0.5, "AU23": 0.35, "AU1": (0.3, 0.6),
                                         "AU4": (0.25, 0.6)}, "head": (0.0, 0.1, 0.0), "gaze": (0.0, 0.3)}]},
        },
    },
    "disgust": {
        "dfew": "disgust",
        "note": "EMFACS disgust: 9+15+17 / 9+16+15+26 (nose wrinkle) and 10+17 / 10+25 (upper-lip raise); "
                "AU16 is approximated by 15+25. Head turns slightly away.",
        "variants": {
            "nose": {"weight": {"mafw": 0.55, "dfew": 0.55}, "dynamics": _MED,
                     "phases": [{"aus": {"AU9": 0.75, "AU15": 0.45, "AU17": 0.45, "AU4": (0.3, 0.5),
                                         "AU7": (0.3, 0.5)}, "head": (0.06, 0.0, 0.05)}]},
            "lip": {"weight": {"mafw": 0.45, "dfew": 0.45}, "dynamics": _MED,
                    "phases": [{"aus": {"AU10": 0.75, "AU9": (0.3, 0.5), "AU17": (0.4, 0.5),
                                        "AU25": (0.4, 0.5)}, "head": (0.06, -0.03, 0.04)}]},
        },
    },
    "fear": {
        "dfew": "fear",
        "note": "EMFACS fear 1+2+4+5+7+20+26 (or 25): raised and drawn-together brows, widened eyes, "
                "horizontally stretched mouth; head pulls back. Shares 1+2+5 with surprise and 1+4+20 with anxiety.",
        "variants": {
            "full": {"weight": {"mafw": 1.0, "dfew": 1.0}, "dynamics": _FAST,
                     "phases": [{"aus": {"AU1": 0.75, "AU2": 0.55, "AU4": 0.5, "AU5": 0.7, "AU7": (0.35, 0.6),
                                         "AU20": 0.65, "AU25": 0.5, "AU26": (0.35, 0.6)},
                                 "head": (0.0, -0.08, 0.0)}]},
        },
    },
    "happiness": {
        "dfew": "happy",
        "note": "EMFACS happiness 6+12 (Duchenne smile), optionally with lips parted (laugh, 25/26). A share "
                "of clips are 'cheered up': a sad-lite face that turns into a smile (the time-reverse of the "
                "MAFW disappointment recipe / DFEW sad 'smile fades'; order decides).",
        "variants": {
            "duchenne": {"weight": {"mafw": 0.8, "dfew": 0.8}, "dynamics": _MED,
                         "phases": [{"aus": {"AU6": 0.7, "AU12": 0.85, "AU25": (0.45, 0.5),
                                             "AU26": (0.2, 0.3)}, "head": (0.0, -0.04, 0.0)}]},
            "cheered_up": {"weight": {"mafw": 0.2, "dfew": 0.2}, "dynamics": _TWO,
                           "phases": [_P_SAD_LITE, _P_SMILE_HOPE]},
        },
    },
    "helplessness": {
        "note": "Compound class, documented choice: an appeal (brows up, eyes open, mouth falls open) that "
                "collapses: brows sink (1+4), lids droop (41), lip corners fall (15+17), head drops with a "
                "shrug. The reverse sequence is the surprise 'startle from lull' variant (order decides). A "
                "minority show the static 'facial shrug' (1+2 with 15+17; Chovil 1991, Ekman 1985).",
        "variants": {
            "appeal_collapse": {"weight": {"mafw": 0.7}, "dynamics": _TWO, "phases": [_P_APPEAL, _P_COLLAPSE]},
            "facial_shrug": {"weight": {"mafw": 0.3}, "dynamics": _MED,
                             "phases": [{"aus": {"AU1": 0.6, "AU2": 0.5, "AU15": 0.5, "AU17": 0.5,
                                                 "AU41": (0.3, 0.5)}, "head": (0.0, 0.06, 0.08),
                                         "shrug": 0.9}]},
        },
    },
    "neutral": {
        "dfew": "neutral",
        "note": "No emotional AUs: only the class-independent distractors (talking, blinks, nods, gaze shifts, "
                "head drift) and the low spontaneous AU activity every clip has.",
        "variants": {"rest": {"weight": {"mafw": 1.0, "dfew": 1.0}, "dynamics": _MED, "phases": [{"aus": {}}]}},
    },
    "sadness": {
        "dfew": "sad",
        "note": "EMFACS sadness 1+4+15 (+17), 1+4+11+15+54+64 (head and eyes down), slow onset and long hold. "
                "For DFEW (no disappointment/helplessness classes) 'sad' also takes the MAFW disappointment "
                "and helplessness sequences, which annotators of a 7-class scheme label sad.",
        "variants": {
            "classic": {"weight": {"mafw": 1.0, "dfew": 0.6}, "dynamics": _SLOW,
                        "phases": [{"aus": {"AU1": 0.7, "AU4": 0.55, "AU15": 0.65, "AU17": (0.5, 0.6),
                                            "AU41": (0.35, 0.5), "AU6": (0.2, 0.25)},
                                    "head": (0.0, 0.16, 0.0), "gaze": (0.0, 0.6)}]},
            "smile_fades": {"weight": {"dfew": 0.2}, "dynamics": _TWO, "phases": [_P_SMILE_HOPE, _P_SAD_LITE]},
            "appeal_collapse": {"weight": {"dfew": 0.2}, "dynamics": _TWO, "phases": [_P_APPEAL, _P_COLLAPSE]},
        },
    },
    "surprise": {
        "dfew": "surprise",
        "note": "EMFACS surprise 1+2+5B+26 (or 25/27): fast onset, short apex (the briefest emotion), head "
                "back. A share 'startle from lull' begins drooped and looking down (the reverse of the "
                "helplessness appeal-collapse sequence; order decides).",
        "variants": {
            "classic": {"weight": {"mafw": 0.8, "dfew": 0.8}, "dynamics": _FAST,
                        "phases": [{"aus": {"AU1": 0.8, "AU2": 0.75, "AU5": 0.7, "AU26": 0.6, "AU25": 0.6},
                                    "head": (0.0, -0.07, 0.0)}]},
            "startle_from_lull": {"weight": {"mafw": 0.2, "dfew": 0.2}, "dynamics": _TWO,
                                  "phases": [_P_COLLAPSE, _P_APPEAL]},
        },
    },
}

# The polite (non-Duchenne) social smile used as a mask around micro-expressions.
_MASK_SMILE = {"AU12": 0.35, "AU25": 0.1}

_DEFAULT_DYN = _MED


def _canonical(label: str, label_set: str) -> str:
    """Map a label of ``label_set`` to its RECIPES key (MAFW noun)."""
    names = _labels.get(label_set)
    if label not in names:
        raise ValueError(f"label {label!r} is not in label_set {label_set!r}; known: {list(names)}")
    return _labels.NOUN.get(label, label)


def _variants(cls: str, label_set: str) -> list[tuple[str, float, dict]]:
    out = [(name, v["weight"].get(label_set, 0.0), v) for name, v in RECIPES[cls]["variants"].items()]
    return [o for o in out if o[1] > 0]


def order_dependent(label_set: str, label: str, variant: str) -> bool:
    """True when the variant has >= 2 phases and another class of ``label_set`` has the time-reversed phases.

    Such a clip shows the same bag of frames as a clip of another class: only the order decides the class.
    """
    cls = _canonical(label, label_set)
    phases = RECIPES[cls]["variants"][variant]["phases"]
    if len(phases) < 2:
        return False
    rev = phases[::-1]
    for other in _labels.get(label_set):
        ocls = _labels.NOUN.get(other, other)
        if ocls == cls:
            continue
        for _, _, v in _variants(ocls, label_set):
            if len(v["phases"]) == len(rev) and all(a is b or a == b for a, b in zip(v["phases"], rev)):
                return True
    return False


def _fmt_phase(p: dict) -> str:
    parts = []
    for au, val in p["aus"].items():
        if isinstance(val, tuple):
            parts.append(f"{au} {val[0]:.2f} (p={val[1]:.1f})")
        else:
            parts.append(f"{au} {val:.2f}")
    extra = []
    if p.get("head"):
        y, pi, r = p["head"]
        if abs(pi) > 0:
            extra.append("head down" if pi > 0 else "head back")
        if abs(y) > 0 or abs(r) > 0:
            extra.append("head turn/tilt")
    if p.get("gaze") and p["gaze"][1] > 0.3:
        extra.append("gaze down")
    if p.get("shrug"):
        extra.append("shrug")
    s = " + ".join(parts) if parts else "(no AUs)"
    return s + (f" [{', '.join(extra)}]" if extra else "")


def recipes_table(label_set: str | None = None):
    """The recipes as a DataFrame (one row per class variant) for the chapter to print."""
    import pandas as pd

    sets = [label_set] if label_set else ["mafw", "dfew"]
    for s in sets:
        _labels.get(s)
    rows = []
    for s in sets:
        for lab in _labels.get(s):
            cls = _labels.NOUN.get(lab, lab)
            for name, w, v in _variants(cls, s):
                d = v.get("dynamics", _DEFAULT_DYN)
                rows.append({
                    "label_set": s, "label": lab, "variant": name, "weight": w,
                    "sequence": "  ->  ".join(_fmt_phase(p) for p in v["phases"]),
                    "onset_s": "{:.2f}-{:.2f}".format(*d["onset_s"]),
                    "order_dependent": order_dependent(s, lab, name),
                    "note": RECIPES[cls]["note"],
                })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------------
# Split plans
# --------------------------------------------------------------------------------------------------------------
def _largest_remainder(props: dict[str, float], n: int) -> dict[str, int]:
    keys = list(props)
    if n < len(keys):
        raise ValueError(f"n_total={n} is smaller than the number of classes ({len(keys)}): every class needs >= 1")
    quotas = np.array([props[k] for k in keys], dtype=float) * n
    counts = np.floor(quotas).astype(int)
    rem = quotas - counts
    order = sorted(range(len(keys)), key=lambda i: (-rem[i], i))
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    while (counts < 1).any():          # every class at least one clip, taken from the largest
        j = int(np.argmin(counts))
        k = int(np.argmax(counts))
        counts[j] += 1
        counts[k] -= 1
    return {k: int(c) for k, c in zip(keys, counts)}


def _check_int(name: str, v, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def class_counts(label_set: str = "mafw", split: str = "test", n_per_class: int | None = None,
                 n_total: int | None = None) -> dict[str, int]:
    """Clips per class: balanced ``n_per_class`` for test, largest-remainder long tail of ``n_total`` for train."""
    names = _labels.get(label_set)
    label_set = label_set.lower()
    if split == "test":
        if n_total is not None:
            raise ValueError("n_total applies to split='train'; the test split is balanced (use n_per_class)")
        n = DEFAULT_N_PER_CLASS[label_set] if n_per_class is None else _check_int("n_per_class", n_per_class)
        return {k: n for k in names}
    if split == "train":
        if n_per_class is not None:
            raise ValueError("n_per_class applies to split='test'; the train split is long-tailed (use n_total)")
        n = DEFAULT_N_TOTAL[label_set] if n_total is None else _check_int("n_total", n_total)
        props = TRAIN_PROPORTIONS[label_set]
        return _largest_remainder({k: props[k] for k in names}, n)
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _clip_rng(seed: int, label_set: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(label_set.encode()), zlib.crc32(split.encode()), int(index)])


def _plan(label_set: str, split: str, counts: dict[str, int], seed: int, micro_share: float) -> list[dict]:
    """Deterministic list of clip specs (label, micro flag) in a class-interleaved order."""
    prng = np.random.default_rng([int(seed), zlib.crc32(label_set.encode()), zlib.crc32(split.encode()),
                                  zlib.crc32(b"plan")])
    items = []
    for lab, n in counts.items():
        cls = _labels.NOUN.get(lab, lab)
        micro = np.zeros(n, bool)
        if cls != "neutral":          # neutral has no decisive expression to flash
            k = int(round(micro_share * n))
            micro[prng.permutation(n)[:k]] = True
        items += [{"label": lab, "micro": bool(m)} for m in micro]
    order = prng.permutation(len(items))
    return [items[i] for i in order]


# --------------------------------------------------------------------------------------------------------------
# Time courses
# --------------------------------------------------------------------------------------------------------------
def _ramp(t: np.ndarray, t0: float, dur: float) -> np.ndarray:
    """Smoothstep from 0 at t0 to 1 at t0+dur."""
    x = np.clip((t - t0) / max(dur, 1e-6), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _sample_phase(p: dict, rng: np.random.Generator, gain: float) -> dict:
    aus = np.zeros(len(AU_NAMES), np.float64)
    for au, val in p["aus"].items():
        inten, prob = (val if isinstance(val, tuple) else (val, 1.0))
        if rng.random() < prob:
            aus[_AU[au]] = inten * gain * rng.uniform(0.75, 1.2)
    head = np.array(p.get("head", (0.0, 0.0, 0.0)), float) * gain * rng.uniform(0.7, 1.2)
    gaze = np.array(p.get("gaze", (0.0, 0.0)), float) * rng.uniform(0.6, 1.2)
    shrug = float(p.get("shrug", 0.0)) * rng.uniform(0.7, 1.1)
    return {"aus": np.clip(aus, 0, 1), "head": head, "gaze": gaze, "shrug": shrug}


def _smooth_noise(rng, t, n_comp=2, fmax=0.5, amp=1.0):
    out = np.zeros_like(t)
    for _ in range(n_comp):
        f = rng.uniform(0.05, fmax)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return amp * out / n_comp


def _timecourse(cls: str, variant: dict, micro: bool, rng: np.random.Generator, T: int, fps: float) -> dict:
    t = np.arange(T) / fps
    D = T / fps
    n_au = len(AU_NAMES)
    emo = np.zeros((T, n_au))
    head_e = np.zeros((T, 3))
    gaze_e = np.zeros((T, 2))
    shrug = np.zeros(T)
    events: dict[str, Any] = {"phases": []}
    dyn = variant.get("dynamics", _DEFAULT_DYN)
    gain = rng.uniform(0.6, 1.0)            # per-clip expression intensity (classes overlap)
    phases = [_sample_phase(p, rng, gain) for p in variant["phases"]]

    def add(ph, env):
        nonlocal emo, head_e, gaze_e, shrug
        emo += env[:, None] * ph["aus"][None]
        head_e += env[:, None] * ph["head"][None]
        gaze_e += env[:, None] * ph["gaze"][None]
        shrug += env * ph["shrug"]

    micro_on = micro_off = float("nan")
    if micro:
        # Decisive expression only as a brief 0.25-0.5 s event inside neutral or a polite-smile mask.
        dur = rng.uniform(0.25, 0.5)
        on = rng.uniform(0.4, D - 0.4 - dur)
        off = on + dur
        ramp = dur * rng.uniform(0.25, 0.35)
        ev = _ramp(t, on, ramp) * (1.0 - _ramp(t, off - ramp, ramp))
        mask_kind = "polite_smile" if (cls != "happiness" and rng.random() < 0.4) else "neutral"
        if mask_kind == "polite_smile":
            m = np.zeros(n_au)
            for au, v in _MASK_SMILE.items():
                m[_AU[au]] = v * rng.uniform(0.8, 1.2)
            menv = _ramp(t, 0.0, rng.uniform(0.2, 0.5)) * (1.0 - ev)
            emo += menv[:, None] * m[None]
        ph = phases[-1]
        add(ph, ev * rng.uniform(0.85, 1.15))
        micro_on, micro_off = float(on), float(off)
        events.update(micro_onset_s=micro_on, micro_offset_s=micro_off, mask=mask_kind)
        events["phases"].append({"onset_s": micro_on, "apex_s": float(on + ramp), "offset_s": float(off - ramp),
                                 "end_s": micro_off})
    elif len(phases) == 1:
        on_d = rng.uniform(*dyn["onset_s"])
        t0 = rng.uniform(0.1, max(0.15, min(0.35 * D, D - on_d - 0.8)))
        apex = rng.uniform(*dyn["apex_s"])
        off_d = rng.uniform(*dyn["offset_s"])
        env = _ramp(t, t0, on_d)
        t_off = t0 + on_d + apex
        if t_off + 0.3 < D and rng.random() < 0.6:
            env = env * (1.0 - _ramp(t, t_off, off_d))
        else:
            t_off = float("nan")
        if "fluctuate" in dyn:
            a = rng.uniform(*dyn["fluctuate"])
            env = env * (1.0 - a + a * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 1.4) * t
                                                              + rng.uniform(0, 2 * np.pi))))
        add(phases[0], env)
        events["phases"].append({"onset_s": float(t0), "apex_s": float(t0 + on_d),
                                 "offset_s": float(t_off), "end_s": float(min(D, t_off + off_d))
                                 if t_off == t_off else float("nan")})
    else:
        # Two phases: A rises, holds, cross-fades into B which holds to (nearly) the end.
        on_d = rng.uniform(*dyn["onset_s"])
        pa = rng.uniform(*dyn["phase_a_s"])
        cr = rng.uniform(*dyn["cross_s"])
        need = on_d + pa + cr + 0.5
        t0 = rng.uniform(0.05, max(0.08, min(0.25 * D, D - need)))
        tx = t0 + on_d + pa
        ea = _ramp(t, t0, on_d) * (1.0 - _ramp(t, tx, cr))
        eb = _ramp(t, tx, cr)
        add(phases[0], ea)
        add(phases[1], eb)
        events["phases"].append({"onset_s": float(t0), "apex_s": float(t0 + on_d), "offset_s": float(tx),
                                 "end_s": float(tx + cr)})
        events["phases"].append({"onset_s": float(tx), "apex_s": float(tx + cr), "offset_s": float("nan"),
                                 "end_s": float("nan")})
    emo = np.clip(emo, 0.0, 1.0)

    # ---- class-independent distractors ----------------------------------------------------------------
    dist = np.zeros((T, n_au))
    # spontaneous low-level AU activity on a few random AUs (every class)
    for j in rng.choice([_AU[a] for a in AU_NAMES if a not in ("AU45",)], size=rng.integers(0, 4), replace=False):
        dist[:, j] += np.clip(0.06 + _smooth_noise(rng, t, 2, 0.6, 0.08), 0, 0.15)
    # talking: AU25/AU26 oscillation at syllable rate
    talk_spans = []
    if rng.random() < 0.45:
        for _ in range(rng.integers(1, 3)):
            a = rng.uniform(0, D - 0.6)
            b = min(D, a + rng.uniform(0.6, 2.0))
            env = _ramp(t, a, 0.1) * (1.0 - _ramp(t, b - 0.1, 0.1))
            f = rng.uniform(3.0, 5.5)
            syl = np.clip(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) * 0.5 + 0.5 +
                          0.2 * np.sin(2 * np.pi * f * 0.37 * t), 0, 1)
            dist[:, _AU["AU25"]] += env * rng.uniform(0.4, 0.8)
            dist[:, _AU["AU26"]] += env * syl * rng.uniform(0.15, 0.35)
            talk_spans.append([float(a), float(b)])
    # blinks
    blink_x = variant.get("blink_rate_x", 1.0)
    rate = rng.uniform(0.2, 0.45) * blink_x
    blinks = []
    tb = rng.exponential(1.0 / rate)
    while tb < D - 0.1:
        bd = rng.uniform(0.12, 0.22)
        x = np.clip(1.0 - np.abs(t - (tb + bd / 2)) / (bd / 2), 0, 1)
        dist[:, _AU["AU45"]] = np.maximum(dist[:, _AU["AU45"]], np.minimum(1.0, 1.6 * x))
        blinks.append(float(tb))
        tb += bd + rng.exponential(1.0 / rate)
    au = np.clip(emo + dist, 0.0, 1.0)

    # head pose: base + drift + nods + expression component
    hj = variant.get("head_jitter_x", 1.0)
    base = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.12, 0.12), rng.uniform(-0.15, 0.15)])
    head = np.tile(base, (T, 1))
    for k, amp in enumerate((0.06, 0.04, 0.03)):
        head[:, k] += _smooth_noise(rng, t, 2, 0.35 * hj, amp * hj)
    nods = []
    if rng.random() < 0.3:
        a = rng.uniform(0, D - 0.8)
        dur = rng.uniform(0.5, 1.0)
        f = rng.uniform(1.5, 2.5)
        env = _ramp(t, a, 0.1) * (1.0 - _ramp(t, a + dur - 0.1, 0.1))
        head[:, 1] += env * rng.uniform(0.05, 0.1) * np.sin(2 * np.pi * f * (t - a))
        nods.append([float(a), float(a + dur)])
    head += head_e
    # gaze: fixations with saccades
    gx_base = rng.uniform(-0.3, 0.3)
    gy_base = rng.uniform(-0.2, 0.2)
    gaze = np.tile([gx_base, gy_base], (T, 1)).astype(float)
    n_sacc = rng.poisson(0.4 * D * variant.get("gaze_shift_x", 1.0))
    for ts in np.sort(rng.uniform(0, D, n_sacc)):
        gaze += _ramp(t, ts, 0.05)[:, None] * rng.uniform(-0.35, 0.35, 2)[None]
    gaze = np.clip(gaze + gaze_e, -1, 1)
    events.update(blinks_s=blinks, talk_s=talk_spans, nods_s=nods)
    return {"au": au.astype(np.float32), "au_emotion": emo.astype(np.float32), "head": head.astype(np.float32),
            "gaze": gaze.astype(np.float32), "shrug": np.clip(shrug, 0, 1).astype(np.float32),
            "events": events, "micro_onset_s": micro_on, "micro_offset_s": micro_off, "t": t}


# --------------------------------------------------------------------------------------------------------------
# Identity and scene
# --------------------------------------------------------------------------------------------------------------
_SKIN = np.array([[255, 224, 196], [241, 194, 158], [224, 172, 125], [198, 134, 90], [141, 85, 50],
                  [92, 56, 36]], float)
_HAIR = np.array([[20, 18, 18], [60, 40, 28], [110, 75, 45], [190, 150, 90], [150, 70, 35], [160, 160, 160]],
                 float)


def _identity(rng: np.random.Generator, size: int) -> dict:
    tone = rng.uniform(0, len(_SKIN) - 1)
    i = int(tone)
    skin = _SKIN[i] + (tone - i) * (_SKIN[min(i + 1, len(_SKIN) - 1)] - _SKIN[i])
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
    a = rng.uniform(0.88, 1.08)
    return {
        "skin": [round(float(x), 1) for x in np.clip(skin * rng.uniform(0.93, 1.05, 3), 0, 255)],
        "hair": [round(float(x), 1) for x in np.clip(hair, 0, 255)],
        "hair_style": int(rng.integers(0, 5)),
        "lip": [round(float(x), 1) for x in np.clip(skin * np.array([0.8, 0.5, 0.5]) * rng.uniform(0.85, 1.1), 0, 255)],
        "iris": [round(float(x), 1) for x in _HAIR[rng.integers(0, 3)] * rng.uniform(0.8, 1.5)],
        "cloth": [round(float(x), 1) for x in rng.uniform(20, 235, 3)],
        "face_w": round(float(a), 4), "face_h": round(float(a * rng.uniform(1.25, 1.45)), 4),
        "eye_x": round(float(rng.uniform(0.36, 0.44)), 4), "eye_y": round(float(rng.uniform(-0.2, -0.07)), 4),
        "eye_w": round(float(rng.uniform(0.17, 0.22)), 4), "eye_open": round(float(rng.uniform(0.09, 0.12)), 4),
        "brow_gap": round(float(rng.uniform(0.2, 0.27)), 4), "brow_th": round(float(rng.uniform(0.035, 0.07)), 4),
        "nose_y": round(float(rng.uniform(0.25, 0.36)), 4), "nose_w": round(float(rng.uniform(0.11, 0.16)), 4),
        "mouth_dy": round(float(rng.uniform(0.27, 0.35)), 4), "mouth_w": round(float(rng.uniform(0.25, 0.33)), 4),
        "lip_up": round(float(rng.uniform(0.045, 0.07)), 4), "lip_lo": round(float(rng.uniform(0.055, 0.09)), 4),
        "age_lines": round(float(rng.uniform(0.0, 0.35)), 4),
        # Face-aligned crops, like the clips DFER models consume (DFEW's clip_224x224, MAFW's cropped faces):
        # the face fills most of the frame, with small misalignments.
        "scale": round(float(size * rng.uniform(0.33, 0.37)), 3),
        "cx": round(float(size * (0.5 + rng.uniform(-0.03, 0.03))), 3),
        "cy": round(float(size * (0.5 + rng.uniform(-0.03, 0.03))), 3),
    }


def _nuisance(rng: np.random.Generator) -> dict:
    return {
        "bg_a": [round(float(x), 1) for x in rng.uniform(0, 255, 3)],
        "bg_b": [round(float(x), 1) for x in rng.uniform(0, 255, 3)],
        "bg_angle": round(float(rng.uniform(0, 2 * np.pi)), 4),
        "bg_shapes": int(rng.integers(3, 13)),
        "bg_texture": round(float(rng.uniform(0, 40)), 2),
        "light_angle": round(float(rng.uniform(0, 2 * np.pi)), 4),
        "light_strength": round(float(rng.uniform(0.0, 0.45)), 4),
        "brightness": round(float(rng.uniform(0.7, 1.15)), 4),
        "noise_sigma": round(float(rng.uniform(0.0, 6.0)), 3),
        "blur_sigma": round(float(rng.uniform(0.0, 0.9)), 3),
        "crf": int(rng.integers(20, 31)),
        "drift": [round(float(x), 4) for x in rng.uniform(-0.03, 0.03, 2)],
    }


def _background(rng: np.random.Generator, size: int, nz: dict):
    import cv2

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    d = math.cos(nz["bg_angle"]) * xx + math.sin(nz["bg_angle"]) * yy + 0.5
    a = np.array(nz["bg_a"], np.float32)
    b = np.array(nz["bg_b"], np.float32)
    img = a[None, None] * (1 - d[..., None]) + b[None, None] * d[..., None]
    if nz["bg_texture"] > 0:
        g = rng.standard_normal((8, 8, 3)).astype(np.float32)
        img += cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC) * nz["bg_texture"]
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(nz["bg_shapes"]):
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        p = rng.integers(0, size, 4)
        if kind == 0:
            cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), col, -1)
        elif kind == 1:
            cv2.circle(img, (int(p[0]), int(p[1])), int(rng.integers(size // 20, size // 5)), col, -1, cv2.LINE_AA)
        elif kind == 2:
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), col,
                     int(rng.integers(1, max(2, size // 25))), cv2.LINE_AA)
        else:
            pts = rng.integers(0, size, (int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
    return img


# --------------------------------------------------------------------------------------------------------------
# Face geometry
# --------------------------------------------------------------------------------------------------------------
_BASIS: dict[int, tuple] = {}


def _bez(p0, c, p1, n=7):
    if n not in _BASIS:
        s = np.linspace(0.0, 1.0, n)[:, None]
        _BASIS[n] = ((1 - s) ** 2, 2 * (1 - s) * s, s ** 2)
    w0, w1, w2 = _BASIS[n]
    return w0 * p0 + w1 * c + w2 * p1


def _through(p0, mid, p1, n=7):
    """Quadratic Bezier from p0 to p1 passing through ``mid`` at s=0.5."""
    c = 2 * mid - 0.5 * (p0 + p1)
    return _bez(p0, c, p1, n)


_TH40 = np.linspace(0, 2 * np.pi, 40, endpoint=False)
_COS40, _SIN40 = np.cos(_TH40), np.sin(_TH40)
_JAW40 = np.where(_SIN40 > 0, 1.0 - 0.12 * _SIN40 ** 4, 1.0)
_HAIR_ANG = np.linspace(np.pi * 1.05, np.pi * 1.95, 16)
_BACK_ANG = np.linspace(np.pi, 2 * np.pi, 12)


class _Face:
    """Canonical 2-D geometry (units of face half-width, y down) from identity + one frame of AUs."""

    def __init__(self, ident: dict):
        self.id = ident
        self.a = ident["face_w"]
        self.b = ident["face_h"]

    def depth(self, xy):
        x, y = xy[..., 0], xy[..., 1]
        r = 1.0 - 0.8 * (x / self.a) ** 2 - 0.6 * (y / self.b) ** 2
        return 0.9 * self.a * np.sqrt(np.clip(r, 0.0, None))

    def build(self, au: np.ndarray, gaze: np.ndarray) -> dict:
        I = self.id
        A = lambda n: float(au[_AU[n]])  # noqa: E731
        g: dict[str, Any] = {}
        ex, ey, ew = I["eye_x"], I["eye_y"], I["eye_w"]
        # ---- brows ----
        by = ey - I["brow_gap"]
        brows = {}
        for side, sx in (("left", -1), ("right", 1)):
            inner = np.array([sx * (ex - 0.85 * ew), by])
            mid = np.array([sx * ex, by - 0.04])
            outer = np.array([sx * (ex + 1.15 * ew), by + 0.015])
            inner = inner + [-sx * 0.05 * A("AU4"), -0.13 * A("AU1") + 0.09 * A("AU4") + 0.03 * A("AU9")]
            mid = mid + [0.0, -0.08 * A("AU1") - 0.09 * A("AU2") + 0.06 * A("AU4") + 0.015 * A("AU9")]
            outer = outer + [0.0, -0.13 * A("AU2") + 0.03 * A("AU4") + 0.02 * A("AU1")]
            brows[side] = np.stack([outer, mid, inner]) if sx < 0 else np.stack([inner, mid, outer])
        g["brows"] = brows
        # ---- eyes ----
        up = I["eye_open"] * (1 + 0.8 * A("AU5") - 0.35 * A("AU7") - 0.6 * A("AU41") - 0.15 * A("AU6")
                              - 0.2 * A("AU4"))
        up = max(up, 0.0) * (1.0 - A("AU45"))
        lo = 0.07 * (1 - 0.55 * A("AU7") - 0.45 * A("AU6") + 0.15 * A("AU5")) * (1.0 - A("AU45"))
        eyes = {}
        ir = I["eye_open"] * 1.15
        for side, sx in (("left", -1), ("right", 1)):
            c = np.array([sx * ex, ey])
            pin = c + [-sx * ew, 0.0]
            pout = c + [sx * ew, 0.01]
            upper = _through(pin, c + [0.0, -up], pout, 9)
            lower = _through(pin, c + [0.0, lo], pout, 9)
            iris = c + [gaze[0] * ew * 0.45, gaze[1] * I["eye_open"] * 0.45]
            cover_up = _through(pin + [-sx * 0.03, 0], c + [0.0, -I["eye_open"] * 2.4], pout + [sx * 0.03, 0], 9)
            cover_lo = _through(pin + [-sx * 0.03, 0], c + [0.0, 0.07 * 2.6], pout + [sx * 0.03, 0], 9)
            eyes[side] = {"center": c, "inner": pin, "outer": pout, "upper": upper, "lower": lower,
                          "iris": iris, "ir": ir, "cover_up": cover_up, "cover_lo": cover_lo,
                          "top": c + [0.0, -up], "bottom": c + [0.0, lo]}
        g["eyes"] = eyes
        # ---- nose ----
        ny, nw = I["nose_y"], I["nose_w"]
        wing_up = 0.04 * A("AU9") + 0.025 * A("AU10")
        g["nose_tip"] = np.array([0.0, ny])
        g["nose_wing"] = {"left": np.array([-nw - 0.01 * A("AU9"), ny + 0.02 - wing_up]),
                          "right": np.array([nw + 0.01 * A("AU9"), ny + 0.02 - wing_up])}
        # ---- mouth ----
        my = ny + I["mouth_dy"]
        mw = I["mouth_w"]
        jaw = 0.2 * A("AU26")
        gap = 0.035 * A("AU25") + jaw
        thin = 1.0 - 0.55 * A("AU23")
        corners = {}
        for side, sx in (("left", -1), ("right", 1)):
            dy = (-0.1 * A("AU12") + 0.1 * A("AU15") + 0.02 * A("AU20") + 0.35 * jaw - 0.02 * A("AU10"))
            dx = 0.08 * A("AU12") + 0.1 * A("AU20") - 0.045 * A("AU23") - 0.02 * A("AU17")
            if side == "left":     # person's right side: unilateral R12 / R14
                dy += -0.08 * A("R12") - 0.025 * A("R14")
                dx += 0.05 * A("R12") - 0.025 * A("R14")
            corners[side] = np.array([sx * (mw + dx), my + dy])
        up_in = my - 0.25 * gap - 0.035 * A("AU10")     # a strong upper-lip raise parts the lips (teeth show)
        lo_in = my + 0.75 * gap - 0.035 * A("AU17") * (1.0 - A("AU26"))
        lo_in = max(lo_in, up_in)
        up_out = up_in - I["lip_up"] * thin - 0.035 * A("AU10") - 0.02 * A("AU9")
        lo_out = lo_in + I["lip_lo"] * thin - 0.015 * A("AU17") * 0.0 + 0.01 * A("AU15")
        L, R = corners["left"], corners["right"]
        mid_up_in = np.array([0.0, up_in])
        mid_lo_in = np.array([0.0, lo_in])
        # lip line sags with the corners: the inner contour passes through the mid points
        g["mouth"] = {
            "L": L, "R": R,
            "outer_up": np.concatenate([_through(L, np.array([-mw * 0.5, up_out + 0.008]) +
                                                 [0, 0.5 * (L[1] - my)], np.array([0.0, up_out + 0.012]), 6),
                                        _through(np.array([0.0, up_out + 0.012]),
                                                 np.array([mw * 0.5, up_out + 0.008]) + [0, 0.5 * (R[1] - my)],
                                                 R, 6)[1:]]),
            "outer_lo": _through(R, np.array([0.0, lo_out]) + [0, 0.0], L, 11),
            "inner_up": _through(L, mid_up_in, R, 11),
            "inner_lo": _through(L, mid_lo_in, R, 11),
            "gap": lo_in - up_in,
            "up_out": np.array([0.0, up_out]), "up_in": mid_up_in, "lo_in": mid_lo_in,
            "lo_out": np.array([0.0, lo_out]),
        }
        # ---- chin & outline ----
        chin_y = self.b + 0.6 * jaw - 0.03 * A("AU17")
        g["chin"] = np.array([0.0, chin_y])
        ox = self.a * _COS40 * _JAW40                                   # narrower jaw
        oy = self.b * _SIN40 * np.where(_SIN40 > 0, chin_y / self.b, 1.0)
        g["outline"] = np.stack([ox, oy], 1)
        # ---- wrinkles / folds (strength 0..1) ----
        g["w_forehead"] = max(A("AU1"), A("AU2")) * 0.9
        g["w_forehead_wide"] = A("AU2")
        g["w_glabella"] = A("AU4")
        g["w_nose"] = A("AU9")
        g["w_crow"] = A("AU6")
        g["w_fold"] = {"left": min(1.0, I["age_lines"] + 0.85 * max(A("AU12"), A("AU10"), 0.7 * A("AU9"), A("R12"))),
                       "right": min(1.0, I["age_lines"] + 0.85 * max(A("AU12"), A("AU10"), 0.7 * A("AU9")))}
        g["w_chin"] = A("AU17")
        g["w_dimple"] = A("R14")
        g["cheek_raise"] = A("AU6")
        g["ny"], g["my"], g["by"] = ny, my, by
        return g


class _Pose:
    """Pseudo-3-D rigid head pose + projection to pixels."""

    def __init__(self, face: _Face, ident: dict, yaw, pitch, roll, shift):
        cy_, sy_ = math.cos(yaw), math.sin(yaw)
        cp, sp = math.cos(pitch), math.sin(pitch)
        cr, sr = math.cos(roll), math.sin(roll)
        Ry = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]])
        Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])     # pitch > 0: face tips down
        Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        self.R = (Rz @ Ry @ Rx)[:2]
        self.face = face
        self.s = ident["scale"]
        self.c = np.array([ident["cx"] + shift[0], ident["cy"] + shift[1]])

    def project(self, xy, z):
        return self.c + self.s * (xy @ self.R[:, :2].T + z[:, None] * self.R[:, 2][None])

    def __call__(self, xy, z=None, dz=0.0):
        xy = np.asarray(xy, float)
        if z is None:
            z = self.face.depth(xy) + dz
        p = np.concatenate([xy, np.broadcast_to(np.asarray(z, float), xy.shape[:-1])[..., None]], -1)
        return self.c + self.s * (p @ self.R.T)


# --------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------
_SH = 4
_SC = float(1 << _SH)


def _ip(p):
    return np.round(np.asarray(p) * _SC).astype(np.int32)


def _col(c):
    return tuple(min(255, max(0, int(v + 0.5))) for v in c)


class _Canvas:
    """Collects shapes in canonical face coordinates, projects them in one batch, then draws them in order."""

    def __init__(self):
        self.items: list[tuple] = []
        self.pts: list = []
        self.n: list[int] = []
        self.z: list[float] = []        # nan -> surface depth (+ dz), else fixed z
        self.dz: list[float] = []
        self.dz_arrays: list[tuple[int, np.ndarray]] = []
        self.cols: list = []
        self.total = 0

    def add(self, kind, pts, col=None, th=1, z=None, dz=0.0, **kw):
        if type(pts) is not np.ndarray or pts.ndim != 2:
            pts = np.asarray(pts, float).reshape(-1, 2)
        n = len(pts)
        self.pts.append(pts)
        self.n.append(n)
        self.z.append(np.nan if z is None else z)
        if type(dz) is np.ndarray:
            self.dz_arrays.append((self.total, dz))
            dz = 0.0
        self.dz.append(dz)
        self.cols.append((0.0, 0.0, 0.0) if col is None else col)
        self.items.append((kind, n, col is not None, th, kw))
        self.total += n

    def render(self, img, pose: "_Pose") -> dict:
        import cv2

        AA = cv2.LINE_AA
        xy = np.concatenate(self.pts)
        zm = np.repeat(np.array(self.z, float), self.n)
        dz = np.repeat(np.array(self.dz, float), self.n)
        for k0, arr in self.dz_arrays:
            dz[k0:k0 + len(arr)] += arr
        z = np.where(np.isnan(zm), pose.face.depth(xy) + dz, zm)
        pix = pose.project(xy, z)
        ip = np.round(pix * _SC).astype(np.int32)
        cols = np.clip(np.rint(np.array(self.cols, float)), 0, 255).astype(int).tolist()
        named = {}
        k = 0
        for (kind, n, draw, th, kw), c in zip(self.items, cols):
            seg = ip[k:k + n]
            if kw.get("name"):
                named[kw["name"]] = pix[k:k + n]
            k += n
            if not draw:
                continue
            c = tuple(c)
            if kind == "poly":
                cv2.fillPoly(img, [seg], c, AA, _SH)
            elif kind == "line":
                cv2.polylines(img, [seg], False, c, th, AA, _SH)
            elif kind == "circle":
                cv2.circle(img, (int(seg[0, 0]), int(seg[0, 1])), int(kw["r"] * pose.s * _SC), c, -1, AA, _SH)
            elif kind == "ellipse":
                cv2.ellipse(img, (int(seg[0, 0]), int(seg[0, 1])),
                            (int(kw["ax"][0] * pose.s * _SC), int(kw["ax"][1] * pose.s * _SC)),
                            0, 0, 360, c, -1, AA, _SH)
        return named


def _draw_frame(img, face: _Face, geo: dict, pose: "_Pose", ident: dict, shrug: float, size: int) -> dict:
    """Draw one frame onto ``img`` (in place); returns projected named shapes (``outline``)."""
    import cv2

    AA = cv2.LINE_AA
    skin = np.array(ident["skin"])
    hair = np.array(ident["hair"])
    lw = max(1, int(round(size / 112)))
    a, b = face.a, face.b
    s = pose.s
    C = _Canvas()

    # shoulders & neck (body does not rotate with the head): drawn directly in pixels
    c = np.array([ident["cx"], ident["cy"]])
    sh_y = c[1] + s * (b + 0.9 - 0.18 * shrug)
    cv2.ellipse(img, (int(c[0] * _SC), int(sh_y * _SC)), (int(s * 2.3 * _SC), int(s * 0.85 * _SC)), 0, 0, 360,
                _col(ident["cloth"]), -1, AA, _SH)
    neck = np.array([[c[0] - 0.42 * s, c[1] + 0.4 * s * b], [c[0] + 0.42 * s, c[1] + 0.4 * s * b],
                     [c[0] + 0.45 * s, sh_y - 0.4 * s], [c[0] - 0.45 * s, sh_y - 0.4 * s]])
    cv2.fillPoly(img, [_ip(neck)], _col(skin * 0.85), AA, _SH)

    style = ident["hair_style"]
    if style == 1:        # long hair behind the head
        ang = _BACK_ANG
        top = np.stack([a * 1.12 * np.cos(ang), -b * 0.2 + b * 0.92 * np.sin(ang)], 1)
        C.add("poly", np.concatenate([top, [[a * 1.15, b * 0.9], [-a * 1.15, b * 0.9]]]), hair * 0.85, z=0.0)
    for sx in (-1, 1):
        C.add("ellipse", [[sx * a * 0.97, ident["eye_y"] + 0.1]], skin * 0.9, z=0.0, ax=(0.12, 0.22))
    C.add("poly", geo["outline"], skin, z=0.0, name="outline")
    if style == 4:        # bun on top
        C.add("circle", [[0.0, -b * 1.08]], hair, z=0.0, r=0.33)
    # cheeks (AU6 raises and darkens the cheek mound; infra-orbital furrow pushed up under the eye)
    cr = geo["cheek_raise"]
    for side, sx in (("left", -1), ("right", 1)):
        C.add("ellipse", [[sx * (ident["eye_x"] + 0.05), ident["eye_y"] + 0.3 - 0.08 * cr]],
              skin * (0.97 - 0.07 * cr) + np.array([12, 0, 0]) * (0.3 + cr), ax=(0.2, 0.11 + 0.03 * cr))
        if cr > 0.15:
            C.add("line", geo["eyes"][side]["lower"][1:-1] + [0, 0.05 - 0.015 * cr], skin * (1 - 0.3 * cr), lw)
    # nasolabial folds
    for side, sx in (("left", -1), ("right", 1)):
        w = geo["w_fold"][side]
        if w > 0.05:
            wing = geo["nose_wing"][side]
            corner = geo["mouth"]["L" if side == "left" else "R"]
            pts = _through(wing + [sx * 0.05, 0.0],
                           np.array([sx * (abs(wing[0]) + 0.13), 0.5 * (wing[1] + corner[1])]),
                           corner + [sx * 0.06, -0.01], 7)
            C.add("line", pts, skin * (1 - 0.35 * w), lw)
    # nose
    tip, wl, wr = geo["nose_tip"], geo["nose_wing"]["left"], geo["nose_wing"]["right"]
    ey = ident["eye_y"]
    C.add("line", [[-0.07, ey + 0.05], [-0.08, tip[1] - 0.08]], skin * 0.88, lw, dz=0.1)
    C.add("line", [wl, [-0.06, tip[1] + 0.05], [0.0, tip[1] + 0.03], [0.06, tip[1] + 0.05], wr], skin * 0.7, lw,
          dz=np.array([0.1, 0.25, 0.3, 0.25, 0.1]))
    for wing in (wl, wr):
        C.add("circle", wing[None] + [0, 0.005], skin * 0.75, dz=0.12, r=0.035)
    if geo["w_nose"] > 0.1:
        k = geo["w_nose"]
        for dy in (0.07, 0.12, 0.17):
            C.add("line", [[-0.08, ey + dy], [0.0, ey + dy - 0.02], [0.08, ey + dy]], skin * (1 - 0.4 * k), lw, dz=0.12)
    # eyes
    for side in ("left", "right"):
        e = geo["eyes"][side]
        if e["bottom"][1] - e["top"][1] > 0.015:
            C.add("poly", np.concatenate([e["upper"], e["lower"][::-1]]), (235, 232, 228))
            C.add("circle", e["iris"][None], ident["iris"], r=e["ir"])
            C.add("circle", e["iris"][None], (15, 12, 12), r=e["ir"] * 0.45)
            C.add("poly", np.concatenate([e["upper"], e["cover_up"][::-1]]), skin * 0.97)
            C.add("poly", np.concatenate([e["lower"], e["cover_lo"][::-1]]), skin)
        C.add("line", e["upper"], (40, 30, 30), lw + (1 if size >= 200 else 0))
        C.add("line", e["lower"][2:-2], skin * 0.75, lw)
        if geo["w_crow"] > 0.15:
            o = e["outer"]
            sx = 1 if o[0] > 0 else -1
            for ang in (-0.35, 0.0, 0.35):
                q = o + [sx * 0.04, 0.0]
                C.add("line", [q, q + [sx * 0.08 * math.cos(ang), 0.08 * math.sin(ang)]],
                      skin * (1 - 0.35 * geo["w_crow"]), lw)
    # brows and brow wrinkles
    th = max(1, int(round(ident["brow_th"] * s)))
    for side in ("left", "right"):
        C.add("line", geo["brows"][side], hair * 0.8 + 10, th)
    if geo["w_glabella"] > 0.15:
        k = geo["w_glabella"]
        by = geo["brows"]["left"][2][1]
        for sx in (-1, 1):
            C.add("line", [[sx * 0.05, by - 0.06], [sx * 0.035, by + 0.06]], skin * (1 - 0.4 * k), lw)
    if geo["w_forehead"] > 0.15:
        k = geo["w_forehead"]
        by = min(geo["brows"]["left"][:, 1].min(), geo["brows"]["right"][:, 1].min())
        half = 0.2 + 0.3 * geo["w_forehead_wide"]
        for dy in (0.08, 0.16):
            C.add("line", _through(np.array([-half, by - dy]), np.array([0.0, by - dy - 0.03]),
                                   np.array([half, by - dy]), 7), skin * (1 - 0.3 * k), lw)
    # mouth
    m = geo["mouth"]
    C.add("poly", np.concatenate([m["outer_up"], m["outer_lo"][1:-1]]), ident["lip"])
    if m["gap"] > 0.012:
        C.add("poly", np.concatenate([m["inner_up"], m["inner_lo"][::-1][1:-1]]), (60, 20, 25))
        tb = min(m["gap"] * 0.5, 0.05)
        C.add("poly", np.concatenate([m["inner_up"][2:-2], (m["inner_up"][2:-2] + [0, tb])[::-1]]), (240, 238, 230))
    else:
        C.add("line", m["inner_up"], np.array(ident["lip"]) * 0.45, lw)
    if geo["w_chin"] > 0.15:
        k = geo["w_chin"]
        cy = m["lo_out"][1] + 0.06
        C.add("line", _through(np.array([-0.12, cy + 0.02]), np.array([0.0, cy + 0.05]), np.array([0.12, cy + 0.02]), 7),
              skin * (1 - 0.3 * k), lw)
    if geo["w_dimple"] > 0.15:
        L = m["L"]
        C.add("line", [L + [-0.03, -0.04], L + [-0.05, 0.0], L + [-0.03, 0.04]], skin * (1 - 0.45 * geo["w_dimple"]), lw)
    # front hair
    if style in (0, 1, 3, 4):
        hl = -b * (0.45 if style == 3 else 0.62)
        ang = _HAIR_ANG
        outer = np.stack([a * 1.04 * np.cos(ang), -b * 0.25 + b * 0.85 * np.sin(ang)], 1)
        inner = _through(outer[-1] + [-0.02, 0.05], np.array([0.0, hl]), outer[0] + [0.02, 0.05], 16)
        C.add("poly", np.concatenate([outer, inner]), hair, z=0.0)
    # landmarks ride along in the same projection (not drawn)
    C.add("lm", _landmark_points(geo), None, dz=_LM_DZ, name="landmarks")
    return C.render(img, pose)


_LM_DZ = np.zeros(len(LANDMARK_NAMES))
_LM_DZ[_LM["nose_tip"]] = 0.3
_LM_DZ[[_LM["nose_left_wing"], _LM["nose_right_wing"]]] = 0.12


def _landmark_points(geo: dict) -> np.ndarray:
    e, br, m = geo["eyes"], geo["brows"], geo["mouth"]
    return np.stack([
        e["left"]["outer"], e["left"]["inner"], e["right"]["inner"], e["right"]["outer"],
        e["left"]["iris"], e["right"]["iris"],
        e["left"]["top"], e["left"]["bottom"], e["right"]["top"], e["right"]["bottom"],
        br["left"][0], br["left"][1], br["left"][2], br["right"][0], br["right"][1], br["right"][2],
        geo["nose_tip"], geo["nose_wing"]["left"], geo["nose_wing"]["right"],
        m["L"], m["R"], m["up_out"], m["up_in"], m["lo_in"], m["lo_out"], geo["chin"],
    ])



# --------------------------------------------------------------------------------------------------------------
# Rendering a clip
# --------------------------------------------------------------------------------------------------------------
def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not (64 <= size <= 512) or size % 2:
        raise ValueError(f"size must be an even integer in [64, 512] (112 default, 224), got {size!r}")
    return int(size)


def _check_fps(fps) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not (5 <= fps <= 60):
        raise ValueError(f"fps must be a number in [5, 60], got {fps!r}")
    if float(fps) != int(fps):
        raise ValueError(f"fps must be a whole number (mp4 time base), got {fps!r}")
    return int(fps)


def render_clip(label: str, rng: np.random.Generator, size: int = 112, fps: int = 25, *,
                label_set: str = "mafw", micro: bool = False, duration_s: float | None = None,
                variant: str | None = None, identity: dict | None = None, au_override: dict | None = None,
                post: bool = True) -> tuple[np.ndarray, dict]:
    """Render one clip: ``(frames uint8 (T,H,W,3) RGB, gt dict)``. Pure: everything comes from ``rng``.

    ``identity``/``variant``/``duration_s`` fix those draws (for controlled comparisons); ``au_override`` maps
    AU names to a constant intensity or a (T,) array replacing that AU's time course; ``post=False`` skips
    lighting, blur and noise.
    """
    import cv2

    size = _check_size(size)
    fps = _check_fps(fps)
    label_set = str(label_set).lower()
    cls = _canonical(label, label_set)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    vars_ = _variants(cls, label_set)
    if micro and cls == "neutral":
        raise ValueError("micro=True is not defined for the neutral class (no decisive expression)")
    if variant is None:
        if micro:   # micro events use the single-phase core of the class when there is one
            single = [v for v in vars_ if len(v[2]["phases"]) == 1]
            vars_ = single or vars_
        w = np.array([v[1] for v in vars_])
        vname, _, vdef = vars_[int(rng.choice(len(vars_), p=w / w.sum()))]
    else:
        if variant not in RECIPES[cls]["variants"]:
            raise ValueError(f"variant {variant!r} unknown for {cls!r}; known: {list(RECIPES[cls]['variants'])}")
        vname, vdef = variant, RECIPES[cls]["variants"][variant]
    D = rng.uniform(2.0, 4.0) if duration_s is None else float(duration_s)
    if not (1.0 <= D <= 10.0):
        raise ValueError(f"duration_s must be within [1, 10] seconds, got {duration_s!r}")
    T = int(round(D * fps))
    ident = dict(identity) if identity is not None else _identity(rng, size)
    nz_rng = np.random.default_rng(rng.integers(0, 2**63))
    tc_rng = np.random.default_rng(rng.integers(0, 2**63))
    nz = _nuisance(nz_rng)
    tc = _timecourse(cls, vdef, micro, tc_rng, T, fps)
    au = tc["au"].copy()
    if au_override:
        for k, v in au_override.items():
            if k not in _AU:
                raise ValueError(f"au_override: unknown AU {k!r}; known: {list(AU_NAMES)}")
            au[:, _AU[k]] = np.broadcast_to(np.asarray(v, np.float32), (T,))
        au = np.clip(au, 0, 1)
    bg = _background(nz_rng, size, nz)
    face = _Face(ident)
    frames = np.empty((T, size, size, 3), np.uint8)
    lms = np.empty((T, len(LANDMARK_NAMES), 2), np.float32)
    boxes = np.empty((T, 4), np.float32)
    t = tc["t"]
    drift = np.array(nz["drift"]) * size
    for i in range(T):
        yaw, pitch, roll = (float(x) for x in tc["head"][i])
        sh = float(tc["shrug"][i])
        shift = drift * (t[i] / max(t[-1], 1e-6) - 0.5) + np.array([0.0, 0.06 * sh + 0.25 * pitch]) * ident["scale"]
        pose = _Pose(face, ident, yaw, pitch, roll, shift)
        geo = face.build(au[i], tc["gaze"][i])
        img = bg.copy()
        named = _draw_frame(img, face, geo, pose, ident, sh, size)
        frames[i] = img
        lms[i] = named["landmarks"]
        ol = named["outline"]
        boxes[i] = [ol[:, 0].min(), ol[:, 1].min() - 0.1 * ident["scale"], ol[:, 0].max(), ol[:, 1].max()]
    if post:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        gain = nz["brightness"] * (1.0 + nz["light_strength"] * 2 * (math.cos(nz["light_angle"]) * xx +
                                                                      math.sin(nz["light_angle"]) * yy))
        gain *= 1.0 - 0.25 * (xx ** 2 + yy ** 2)
        bs = nz["blur_sigma"] * size / 112
        gain3 = np.repeat(gain[:, :, None], 3, axis=2).astype(np.float32)
        sigma = float(nz["noise_sigma"])
        noise = np.empty((size, size), np.float32)   # luminance noise, same on the 3 channels
        cv2.setRNGSeed(int(nz_rng.integers(0, 2**31 - 1)))   # OpenCV's generator, seeded from the clip's RNG
        for i in range(T):                                    # frame by frame: cache-friendly
            f = frames[i]
            if bs > 0.3:
                cv2.GaussianBlur(f, (0, 0), bs, dst=f)
            g = cv2.multiply(f, gain3, dtype=cv2.CV_32F)
            if sigma > 0:
                cv2.randn(noise, 0.0, sigma)
                g += noise[:, :, None]
            np.clip(g, 0, 255, out=g)
            frames[i] = g
    gt = {
        "au": au.astype(np.float32), "au_emotion": tc["au_emotion"], "landmarks": lms, "box": boxes,
        "t": t.astype(np.float32), "head": tc["head"], "gaze": tc["gaze"], "shrug": tc["shrug"],
        "au_names": list(AU_NAMES), "landmark_names": list(LANDMARK_NAMES),
        "label": label, "label_set": label_set, "variant": vname, "micro": bool(micro),
        "micro_onset_s": tc["micro_onset_s"], "micro_offset_s": tc["micro_offset_s"],
        "order_dependent": bool(order_dependent(label_set, label, vname)) and not micro,
        "events": tc["events"], "identity": ident, "nuisance": nz, "fps": fps, "n_frames": T,
        "duration_s": T / fps, "size": size,
    }
    return frames, gt


# --------------------------------------------------------------------------------------------------------------
# Encoding and ground-truth files
# --------------------------------------------------------------------------------------------------------------
def _encode_mp4(frames: np.ndarray, path: Path, fps: int, crf: int) -> None:
    import av
    import cv2
    from fractions import Fraction

    T, H, W, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.thread_type = "NONE"
        # Fixed options, one thread. mbtree is off: with it, identical input gave different bytes in ~3% of encodes
        # (measured here; deterministic with no-asm, so an asm path of the macroblock-tree lookahead), with it off
        # 300/300 encodes were byte-identical.
        stream.options = {"crf": str(int(crf)), "preset": "veryfast", "threads": "1",
                          "x264-params": "threads=1:mbtree=0"}
        for i in range(T):
            # RGB -> BT.601 limited-range I420 with OpenCV (what decoders assume for untagged yuv420p)
            vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frames[i], cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            vf.pts = i
            for pkt in stream.encode(vf):
                container.mux(pkt)
        for pkt in stream.encode(None):
            container.mux(pkt)


def _save_gt(path: Path, gt: dict) -> None:
    meta = {k: gt[k] for k in ("label", "label_set", "variant", "micro", "micro_onset_s", "micro_offset_s",
                               "order_dependent", "events", "identity", "nuisance", "fps", "n_frames",
                               "duration_s", "size")}
    arrays = {k: gt[k] for k in ("au", "au_emotion", "landmarks", "box", "t", "head", "gaze", "shrug")}
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays, au_names=np.array(AU_NAMES), landmark_names=np.array(LANDMARK_NAMES),
                            meta_json=np.array(json.dumps(meta, sort_keys=True, allow_nan=True)))


def load_gt(row_or_path) -> dict:
    """Per-frame ground truth of a clip from a manifest row (``gt_path`` or ``path``) or a .npz / .mp4 path."""
    if isinstance(row_or_path, (str, os.PathLike)):
        p = Path(row_or_path)
    else:
        try:
            p = Path(row_or_path["gt_path"]) if "gt_path" in row_or_path and isinstance(row_or_path["gt_path"], str) \
                else Path(row_or_path["path"])
        except (KeyError, TypeError):
            raise ValueError(f"load_gt needs a path or a manifest row with gt_path/path, got {type(row_or_path)}")
        if not p.is_absolute() and "path" in row_or_path:
            p = Path(row_or_path["path"]).parent.parent / p
    if p.suffix == ".mp4":
        p = p.parent.parent / "gt" / (p.stem + ".npz")
    if not p.exists():
        raise FileNotFoundError(f"{p}: SynthFER ground-truth file not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{p}: not a readable SynthFER ground-truth .npz ({e})") from e
    meta = json.loads(str(out.pop("meta_json")))
    out["au_names"] = [str(x) for x in out["au_names"]]
    out["landmark_names"] = [str(x) for x in out["landmark_names"]]
    out.update(meta)
    return out


# --------------------------------------------------------------------------------------------------------------
# Dataset generation
# --------------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return "" if x != x else f"{x:.4f}"


def _make_one(job: tuple) -> dict:
    import cv2

    cv2.setNumThreads(1)
    out_dir, label_set, split, seed, index, label, micro, size, fps = job
    rng = _clip_rng(seed, label_set, split, index)
    frames, gt = render_clip(label, rng, size, fps, label_set=label_set, micro=micro)
    clip_id = f"{label_set}_{split}_s{seed}_{index:05d}"
    vpath = Path(out_dir) / "videos" / f"{clip_id}.mp4"
    gpath = Path(out_dir) / "gt" / f"{clip_id}.npz"
    _encode_mp4(frames, vpath, fps, gt["nuisance"]["crf"])
    _save_gt(gpath, gt)
    sha = hashlib.sha256(vpath.read_bytes()).hexdigest()
    ident = {"identity": gt["identity"], "nuisance": gt["nuisance"], "variant": gt["variant"]}
    return {
        "clip_id": clip_id, "path": f"videos/{clip_id}.mp4", "label": label, "split": split,
        "label_set": label_set, "duration_s": f"{gt['duration_s']:.4f}", "fps": fps, "n_frames": gt["n_frames"],
        "size": size, "order_dependent": bool(gt["order_dependent"]), "micro": bool(micro),
        "micro_onset_s": _fmt(gt["micro_onset_s"]), "micro_offset_s": _fmt(gt["micro_offset_s"]),
        "identity": json.dumps(ident, sort_keys=True, separators=(",", ":")), "seed": seed, "sha256": sha,
        "variant": gt["variant"], "gt_path": f"gt/{clip_id}.npz",
    }


def generate(out_dir, label_set: str = "mafw", split: str = "test", n_per_class: int | None = None,
             n_total: int | None = None, size: int = 112, fps: int = 25, seed: int = 0, workers: int = 1,
             micro_share: float = 0.25) -> Path:
    """Render a SynthFER split into ``out_dir`` (videos/, gt/, manifest.csv) and return the manifest path.

    Deterministic: clip ``i`` depends only on (seed, label_set, split, i) and the plan, never on ``workers``.
    """
    import csv

    names = _labels.get(label_set)  # raises ValueError naming the label set
    label_set = label_set.lower()
    size = _check_size(size)
    fps = _check_fps(fps)
    seed = _check_int("seed", seed, lo=0)
    workers = _check_int("workers", workers)
    if isinstance(micro_share, bool) or not isinstance(micro_share, (int, float)) or not 0 <= micro_share <= 1:
        raise ValueError(f"micro_share must be a number in [0, 1], got {micro_share!r}")
    counts = class_counts(label_set, split, n_per_class, n_total)
    assert list(counts) == list(names)
    plan = _plan(label_set, split, counts, seed, float(micro_share))
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), label_set, split, seed, i, p["label"], p["micro"], size, fps) for i, p in enumerate(plan)]
    if workers == 1 or len(jobs) < 2:
        rows = [_make_one(j) for j in jobs]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(min(workers, len(jobs))) as pool:
            rows = pool.map(_make_one, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    mpath = out / "manifest.csv"
    with open(mpath, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return mpath


def _param_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(path) -> "Any":
    """Read a SynthFER manifest CSV; ``path`` / ``gt_path`` made absolute."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: SynthFER manifest not found")
    df = pd.read_csv(p, dtype={"micro_onset_s": float, "micro_offset_s": float, "identity": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: not a SynthFER manifest (missing columns {missing})")
    base = p.parent.resolve()
    df["path"] = [str(base / x) for x in df["path"]]
    df["gt_path"] = [str(base / x) for x in df["gt_path"]]
    return df


def _source_hash() -> str:
    """Hash of the generator's code (this module's syntax tree without docstrings and comments, as
    :func:`emoprobe.store.input_code_version` hashes it): a change to what the generator does invalidates
    cached datasets; re-worded docs and the figures (``emoprobe.synthfer_plots``) do not."""
    from .store import input_code_version

    return input_code_version((__name__,))


def dataset(label_set: str = "mafw", split: str = "test", size: int = 112, seed: int = 0,
            n_per_class: int | None = None, n_total: int | None = None, fps: int = 25,
            micro_share: float = 0.25, workers: int = 1):
    """Generate once into ``paths.generated()/synthfer/<param-hash>/`` and return the manifest DataFrame.

    Written to a temporary folder and renamed atomically, so a crash never leaves half a dataset.
    """
    from . import paths

    names = _labels.get(label_set)
    counts = class_counts(label_set, split, n_per_class, n_total)
    params = {"version": GENERATOR_VERSION, "code": _source_hash(), "label_set": label_set.lower(), "split": split,
              "size": _check_size(size), "fps": _check_fps(fps), "seed": _check_int("seed", seed, lo=0),
              "counts": [counts[k] for k in names], "micro_share": float(micro_share)}
    root = paths.generated() / "synthfer"
    root.mkdir(parents=True, exist_ok=True)
    final = root / _param_hash(params)
    if not (final / "manifest.csv").exists():
        tmp = root / f".tmp-{final.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            generate(tmp, label_set, split, n_per_class, n_total, size, fps, seed, workers, micro_share)
            (tmp / "params.json").write_text(json.dumps(params, sort_keys=True, indent=1))
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "manifest.csv").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)   # another process finished first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return read_manifest(final / "manifest.csv")


# --------------------------------------------------------------------------------------------------------------
# Figures live in emoprobe.synthfer_plots (restyling them changes no pixel, so no dataset or stored answer);
# these names stay importable from here for chapters and scripts.
# --------------------------------------------------------------------------------------------------------------
def preview_grid(manifest_df, n_per_class: int = 3, frame: str | int = "apex"):
    """See :func:`emoprobe.synthfer_plots.preview_grid`."""
    from .synthfer_plots import preview_grid as f

    return f(manifest_df, n_per_class=n_per_class, frame=frame)


def plot_timeline(gt: dict, aus: list[str] | None = None, ax=None):
    """See :func:`emoprobe.synthfer_plots.plot_timeline`."""
    from .synthfer_plots import plot_timeline as f

    return f(gt, aus=aus, ax=ax)
