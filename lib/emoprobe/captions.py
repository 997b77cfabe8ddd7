"""Caption corpus and motion summaries, written from SynthFER ground truth.

Three things live here:

* :func:`motion_summary` / :func:`regions_moved`: what moved on the face in a time window, read from the
  per-frame action-unit (AU) trajectories of ``synthfer.load_gt``. The summary is the MicroVLM's target for the
  motion-description instruction (MSCE stage 1); ``regions_moved`` is the ground truth the held-out check
  compares generated summaries against (:func:`regions_in_text` reads regions back out of any text).
* :func:`caption`: a free-form caption of a clip for pretraining: appearance / nuisance words from the identity,
  motion words, and (with probability ``emotion_word_prob[label]``) the emotion word of the clip's class.
* :func:`word_probs`: the per-class probability of the emotion word in a caption. ``"lexical"`` follows real
  English word frequency (wordfreq), ``"uniform"`` gives every class the mean of the lexical probabilities.

Determinism: everything is a pure function of its inputs; randomness only comes from the ``rng`` passed in,
and :func:`caption` draws the *same* random numbers whatever ``emotion_word_prob`` is, so two corpora built with
different word probabilities differ only in which captions carry the emotion word.

Motion-summary rules (fixed a priori, documented for the book)
-------------------------------------------------------------
The AUs are grouped into regions (:data:`REGION_OF_AU`). In a window ``[t0, t1)`` a region *moved* when one of
its AUs changed by at least :data:`MOVE_THRESHOLD` (max - min of the AU intensity, intensities in [0, 1]). For
each moved region (largest change first, at most :data:`MAX_REGIONS`) the summary names the AU with the largest
change, its direction and shape — *rises* (the AU's action, e.g. "brows lower"), *falls* ("brows relax"), or
*rises then falls* within the window (a brief movement, "... then relax") — how much (``slightly`` < 0.3 <=
``moderately`` < 0.55 <= ``strongly``) and when (``early`` / ``midway`` / ``late``: the third of the window in
which the change crosses half its size, or in which the peak sits for a brief movement). Time words are relative
to the window because a model shown only the window's frames cannot know clip-absolute times. A window in
which nothing moved gives ``"the face stays still"``.
"""
from __future__ import annotations

import json
import re
from typing import Iterable, Mapping

import numpy as np

MOVE_THRESHOLD = 0.15
MAX_REGIONS = 3
REGIONS = ("brows", "eyes", "nose", "cheeks", "lip corners", "lips", "jaw", "head")

# FACS action unit number -> (region, subject, action verb phrase, release verb phrase)
_AU_TABLE: dict[int, tuple[str, str, str, str]] = {
    1: ("brows", "inner brows", "raise", "relax"),
    2: ("brows", "outer brows", "raise", "relax"),
    4: ("brows", "brows", "lower and draw together", "relax"),
    5: ("eyes", "upper lids", "raise and the eyes widen", "relax"),
    6: ("cheeks", "cheeks", "raise", "relax"),
    7: ("eyes", "lids", "tighten", "relax"),
    9: ("nose", "nose", "wrinkles", "relaxes"),
    10: ("lips", "upper lip", "raises", "relaxes"),
    11: ("lips", "upper lip", "deepens the nasolabial fold", "relaxes"),
    12: ("lip corners", "lip corners", "pull up", "relax"),
    13: ("cheeks", "cheeks", "puff", "relax"),
    14: ("lip corners", "one lip corner", "tightens", "relaxes"),
    15: ("lip corners", "lip corners", "pull down", "relax"),
    16: ("lips", "lower lip", "pulls down", "relaxes"),
    17: ("jaw", "chin", "raises", "relaxes"),
    18: ("lips", "lips", "pucker", "relax"),
    20: ("lips", "lips", "stretch", "relax"),
    22: ("lips", "lips", "funnel", "relax"),
    23: ("lips", "lips", "tighten", "relax"),
    24: ("lips", "lips", "press together", "relax"),
    25: ("lips", "lips", "part", "close"),
    26: ("jaw", "jaw", "drops", "closes"),
    27: ("jaw", "mouth", "stretches open", "closes"),
    28: ("lips", "lips", "suck in", "relax"),
    41: ("eyes", "lids", "droop", "lift"),
    42: ("eyes", "eyes", "narrow", "open"),
    43: ("eyes", "eyes", "close", "open"),
    44: ("eyes", "eyes", "squint", "relax"),
    45: ("eyes", "eyes", "blink", "open"),
    46: ("eyes", "one eye", "winks", "opens"),
    51: ("head", "head", "turns left", "turns back"),
    52: ("head", "head", "turns right", "turns back"),
    53: ("head", "head", "tilts up", "comes back down"),
    54: ("head", "head", "tilts down", "comes back up"),
    55: ("head", "head", "tilts left", "straightens"),
    56: ("head", "head", "tilts right", "straightens"),
    57: ("head", "head", "moves forward", "moves back"),
    58: ("head", "head", "moves back", "moves forward"),
    61: ("eyes", "eyes", "turn left", "turn back"),
    62: ("eyes", "eyes", "turn right", "turn back"),
    63: ("eyes", "eyes", "look up", "look back"),
    64: ("eyes", "eyes", "look down", "look back"),
}
# Unilateral AUs (synthfer's R12 / R14: person's right side only).
_UNILATERAL = {
    12: ("lip corners", "one lip corner", "pulls up", "relaxes"),
    14: ("lip corners", "one lip corner", "tightens", "relaxes"),
}
# Named (non-numbered) channels some generators use, matched by keyword.
_NAMED = [
    (("head", "yaw", "pitch", "roll", "nod", "pose"), ("head", "head", "moves", "settles")),
    (("blink",), ("eyes", "eyes", "blink", "open")),
    (("gaze",), ("eyes", "eyes", "shift", "return")),
    (("jaw",), ("jaw", "jaw", "drops", "closes")),
    (("brow",), ("brows", "brows", "move", "relax")),
    (("smile",), ("lip corners", "lip corners", "pull up", "relax")),
]


class CaptionError(ValueError):
    """Ground truth or a row could not be turned into text (the message says which and why)."""


def au_info(name: str) -> tuple[str, str, str, str]:
    """(region, subject, action, release) for an AU channel name such as ``"AU12"`` or ``"AU12_lip_corner_puller"``."""
    m = re.match(r"^\s*R(\d+)$", str(name), flags=re.I)
    if m and int(m.group(1)) in _UNILATERAL:
        return _UNILATERAL[int(m.group(1))]
    m = re.match(r"^\s*AU[_ ]?(\d+)", str(name), flags=re.I) or re.match(r"^\s*(\d+)\b", str(name))
    if m and int(m.group(1)) in _AU_TABLE:
        return _AU_TABLE[int(m.group(1))]
    low = str(name).lower()
    for keys, info in _NAMED:
        if any(k in low for k in keys):
            return info
    raise CaptionError(f"action unit {name!r} has no face region in captions._AU_TABLE")


def _au_names(gt: Mapping) -> list[str]:
    names = gt.get("au_names")
    if names is None:
        from . import synthfer  # the canonical channel order

        names = list(synthfer.AU_NAMES)
    names = list(names)
    au = np.asarray(gt["au"])
    if au.ndim != 2 or au.shape[1] != len(names):
        raise CaptionError(f"ground-truth 'au' has shape {au.shape}; expected (T, {len(names)}) for AU names {names}")
    return names


def _window(gt: Mapping, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    for k in ("au", "t"):
        if k not in gt:
            raise CaptionError(f"ground truth has no {k!r} (keys: {sorted(gt)})")
    t = np.asarray(gt["t"], dtype=np.float64)
    au = np.asarray(gt["au"], dtype=np.float32)
    if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
        raise CaptionError(f"empty or invalid window [{t0}, {t1})")
    sel = (t >= t0 - 1e-9) & (t < t1 - 1e-9)
    return t[sel], au[sel]


#: Head pose (radians) enters as |angle - angle at window start| / HEAD_SCALE, so a 0.1 rad (~6 deg) excursion
#: reaches MOVE_THRESHOLD.
HEAD_SCALE = 0.667
_HEAD = {
    "head_yaw": ("head", "head", "turns", "turns back"),
    "head_pitch": ("head", "head", "nods", "comes back up"),
    "head_roll": ("head", "head", "tilts", "straightens"),
}


def _channels(gt: Mapping, t0: float, t1: float):
    """(t, values (T, C), channel names) in the window: AU intensities then head-pose excursions."""
    names = _au_names(gt)
    t, au = _window(gt, t0, t1)
    if "head" in gt and len(t):
        tt = np.asarray(gt["t"], dtype=np.float64)
        sel = (tt >= t0 - 1e-9) & (tt < t1 - 1e-9)
        h = np.asarray(gt["head"], dtype=np.float32)[sel]
        if h.ndim == 2 and h.shape[1] == 3:
            au = np.concatenate([au, np.abs(h - h[:1]) / HEAD_SCALE], axis=1)
            names = names + list(_HEAD)
    return t, au, names


def _info(name: str):
    return _HEAD[name] if name in _HEAD else au_info(name)


def _region_changes(gt: Mapping, t0: float, t1: float):
    """Per moved region: (region, change, channel index); sorted by change, largest first (ties: region order)."""
    t, au, names = _channels(gt, t0, t1)
    if len(t) < 2:
        return [], t, au, names
    rng = au.max(axis=0) - au.min(axis=0)
    best: dict[str, tuple[float, int]] = {}
    for j, n in enumerate(names):
        reg = _info(n)[0]
        if rng[j] >= MOVE_THRESHOLD and (reg not in best or rng[j] > best[reg][0]):
            best[reg] = (float(rng[j]), j)
    out = sorted(((r, c, j) for r, (c, j) in best.items()), key=lambda x: (-round(x[1], 6), REGIONS.index(x[0])))
    return out, t, au, names


def regions_moved(gt: Mapping, t0: float, t1: float) -> set[str]:
    """The face regions whose AUs changed by at least MOVE_THRESHOLD in ``[t0, t1)``."""
    return set(region_changes(gt, t0, t1))


def region_changes(gt: Mapping, t0: float, t1: float) -> dict[str, float]:
    """Region -> its largest AU change (max - min) in ``[t0, t1)``, for the regions that moved (>= MOVE_THRESHOLD)."""
    return {r: c for r, c, _ in _region_changes(gt, t0, t1)[0]}


def _how_much(c: float) -> str:
    return "slightly" if c < 0.3 else ("moderately" if c < 0.55 else "strongly")


def _when(frac: float) -> str:
    return "early" if frac < 1 / 3 else ("midway" if frac < 2 / 3 else "late")


def _phrase(a: np.ndarray, t: np.ndarray, info, change: float, t0: float, t1: float) -> str:
    _, subject, act, rel = info
    a0, a1 = float(a[0]), float(a[-1])
    span = max(t1 - t0, 1e-6)
    hi = float(a.max())
    mag = _how_much(change)
    if hi - max(a0, a1) >= 0.5 * change:                    # up then down inside the window: brief movement
        k = int(np.argmax(a))
        return f"{subject} {act} {mag} {_when((t[k] - t0) / span)} then {rel}"
    half = a0 + 0.5 * (a1 - a0)
    if a1 >= a0:
        k = int(np.argmax(a >= half))
        return f"{subject} {act} {mag} {_when((t[k] - t0) / span)}"
    k = int(np.argmax(a <= half))
    return f"{subject} {rel} {mag} {_when((t[k] - t0) / span)}"


def motion_summary(gt: Mapping, t0: float, t1: float) -> str:
    """Deterministic text of what moved in ``[t0, t1)``, e.g.
    ``"brows lower and draw together strongly early; lip corners pull up slightly late then relax"``."""
    changes, t, au, names = _region_changes(gt, t0, t1)
    if not changes:
        return "the face stays still"
    parts = [_phrase(au[:, j], t, _info(names[j]), min(c, 1.0), t0, t1) for _, c, j in changes[:MAX_REGIONS]]
    return "; ".join(parts)


_REGION_WORDS = {
    "brows": ("brow", "brows", "eyebrow", "eyebrows"),
    "eyes": ("eye", "eyes", "lid", "lids", "upper lids"),
    "nose": ("nose",),
    "cheeks": ("cheek", "cheeks"),
    "lip corners": ("lip corner", "lip corners"),
    "lips": ("lips", "upper lip", "lower lip", "mouth"),
    "jaw": ("jaw", "chin"),
    "head": ("head",),
}


def regions_in_text(text: str) -> set[str]:
    """Face regions a text mentions (the vocabulary of :func:`motion_summary`)."""
    low = " " + re.sub(r"[^a-z ]+", " ", str(text).lower()) + " "
    found = set()
    if re.search(r"\blip corners?\b", low):
        found.add("lip corners")
    low_wo = re.sub(r"\blip corners?\b", " ", low)
    for reg, words in _REGION_WORDS.items():
        if reg == "lip corners":
            continue
        if any(re.search(r"\b" + re.escape(w) + r"\b", low_wo) for w in words):
            found.add(reg)
    return found


# --------------------------------------------------------------------------------------------------------------
# Emotion-word probabilities
# --------------------------------------------------------------------------------------------------------------

#: Probability that a caption of the most frequent label word carries that word (chosen a priori: web alt-text
#: mentions the salient emotion word of a clip most of the time, never always).
P_MAX = 0.9


def word_probs(labels: Iterable[str], mode: str = "lexical", p_max: float = P_MAX) -> dict[str, float]:
    """Per-label probability that a caption contains the label's emotion word.

    ``lexical``: proportional to the English lexical frequency of the label noun (``wordfreq.word_frequency``,
    labels mapped to nouns by ``labels.NOUN``), scaled so the most frequent word has probability ``p_max``.
    ``uniform``: every label gets the mean of the lexical probabilities (same expected number of emotion words).
    """
    from wordfreq import word_frequency

    from .labels import NOUN

    labels = list(labels)
    if not labels:
        raise CaptionError("word_probs: empty label list")
    if not 0 < p_max <= 1:
        raise CaptionError(f"word_probs: p_max must be in (0, 1], got {p_max}")
    freqs = {}
    for lab in labels:
        noun = NOUN.get(lab, lab)
        f = word_frequency(noun, "en")
        if f <= 0:
            raise CaptionError(f"word_probs: wordfreq has no English frequency for {noun!r} (label {lab!r})")
        freqs[lab] = f
    top = max(freqs.values())
    lex = {lab: p_max * f / top for lab, f in freqs.items()}
    if mode == "lexical":
        return lex
    if mode == "uniform":
        m = float(np.mean(list(lex.values())))
        return {lab: m for lab in labels}
    raise CaptionError(f"word_probs: unknown mode {mode!r}; use 'lexical' or 'uniform'")


# --------------------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------------------

_EMOTION_PHRASES = (   # label words used as nouns
    "an expression of {w}",
    "the face shows {w}",
    "{w} is visible on the face",
    "a clear look of {w}",
    "the person shows {w}",
    "a moment of {w}",
)
_ADJ_PHRASES = (       # the same six slots for label words that are adjectives (neutral)
    "a {w} expression",
    "the face looks {w}",
    "the face stays {w}",
    "a {w} look",
    "the person looks {w}",
    "a {w} moment",
)
_ADJECTIVES = {"neutral", "happy", "sad", "angry"}
_OPENERS = (
    "a close-up video of a face",
    "a short clip of a person",
    "a video of a person facing the camera",
    "a face in a short video",
)


def _identity(row) -> dict:
    ident = row.get("identity") if hasattr(row, "get") else None
    if ident is None or (isinstance(ident, float) and np.isnan(ident)):
        return {}
    if isinstance(ident, str):
        try:
            ident = json.loads(ident)
        except json.JSONDecodeError as e:
            raise CaptionError(f"clip {row.get('clip_id')}: identity is not valid JSON ({e})") from None
    if not isinstance(ident, dict):
        raise CaptionError(f"clip {row.get('clip_id')}: identity must be a JSON object, got {type(ident).__name__}")
    return ident


_HAIR_NAMES = {  # synthfer's hair palette (RGB) -> words
    "black": (20, 18, 18), "dark brown": (60, 40, 28), "brown": (110, 75, 45), "blond": (190, 150, 90),
    "auburn": (150, 70, 35), "grey": (160, 160, 160),
}


def _colour_name(rgb) -> str:
    r, g, b = (float(x) for x in rgb)
    mx, mn = max(r, g, b), min(r, g, b)
    if mx < 60:
        return "black"
    if mx - mn < 30:
        return "white" if mx > 200 else "grey"
    if r >= g and r >= b:
        return "orange" if g > 0.55 * r and b < 0.5 * r else ("pink" if b > 0.6 * r else "red")
    if g >= r and g >= b:
        return "yellow" if r > 0.8 * g else "green"
    return "purple" if r > 0.6 * b else "blue"


def appearance_words(row) -> list[str]:
    """Short appearance / nuisance phrases from the SynthFER identity JSON (hair, skin, clothing, lighting,
    background, image quality). Never uses the recipe ``variant`` (that would leak the class)."""
    ident = _identity(row)
    face = ident.get("identity", {}) if isinstance(ident.get("identity"), dict) else {}
    nz = ident.get("nuisance", {}) if isinstance(ident.get("nuisance"), dict) else {}
    out = []
    if "hair" in face:
        h = np.asarray(face["hair"], float)
        name = min(_HAIR_NAMES, key=lambda k: float(np.sum((np.asarray(_HAIR_NAMES[k]) - h) ** 2)))
        out.append(f"{name} hair")
    if "skin" in face:
        lum = float(np.dot(np.asarray(face["skin"], float), [0.299, 0.587, 0.114]))
        out.append("light skin" if lum > 185 else ("medium skin" if lum > 130 else "dark skin"))
    if "cloth" in face:
        out.append(f"a {_colour_name(face['cloth'])} shirt")
    if "light_strength" in nz:
        ls = float(nz["light_strength"])
        out.append("even lighting" if ls < 0.15 else ("soft side light" if ls < 0.3 else "strong side light"))
    if "brightness" in nz:
        b = float(nz["brightness"])
        out.append("a dim scene" if b < 0.85 else ("a bright scene" if b > 1.0 else "normal exposure"))
    if "bg_shapes" in nz:
        k = int(nz["bg_shapes"])
        out.append("a plain background" if k <= 5 else ("a busy background" if k >= 10 else "a patterned background"))
    if float(nz.get("noise_sigma", 0)) > 4:
        out.append("a grainy image")
    if float(nz.get("blur_sigma", 0)) > 0.6:
        out.append("soft focus")
    return out


def emotion_word(label: str) -> str:
    """The word a caption uses for ``label`` (its noun, e.g. 'happiness' for DFEW's 'happy')."""
    from .labels import NOUN

    return NOUN.get(label, label)


def caption(row, gt: Mapping, rng: np.random.Generator, emotion_word_prob: Mapping[str, float]) -> str:
    """A free-form caption of one clip.

    Draws exactly the same random numbers for any ``emotion_word_prob``: the emotion word is included iff a
    uniform draw ``u < emotion_word_prob[label]``, so two corpora built from the same ``rng`` seeds differ only in
    the presence of emotion words.
    """
    label = row["label"]
    if label not in emotion_word_prob:
        raise CaptionError(f"clip {row.get('clip_id')}: label {label!r} has no emotion-word probability")
    dur = float(row.get("duration_s", np.nan))
    t = np.asarray(gt["t"], dtype=np.float64)
    if not np.isfinite(dur) or dur <= 0:
        dur = float(t[-1] + (t[1] - t[0] if len(t) > 1 else 0.04))
    # --- all random draws first, in a fixed order ---
    u_emotion = rng.random()
    k_phrase = int(rng.integers(len(_EMOTION_PHRASES)))
    k_open = int(rng.integers(len(_OPENERS)))
    app = appearance_words(row)
    n_app = int(rng.integers(0, min(3, len(app)) + 1)) if app else 0
    app_pick = rng.permutation(len(app))[:n_app] if app else np.array([], int)
    emotion_first = bool(rng.random() < 0.5)
    # --- text ---
    parts = [_OPENERS[k_open]]
    if n_app:
        parts[0] += " with " + ", ".join(app[i] for i in sorted(app_pick))
    motion = motion_summary(gt, 0.0, dur + 1e-6)
    word = emotion_word(label)
    table = _ADJ_PHRASES if word in _ADJECTIVES else _EMOTION_PHRASES
    emo = table[k_phrase].format(w=word) if u_emotion < emotion_word_prob[label] else None
    if emo and emotion_first:
        parts.append(emo)
    parts.append(motion)
    if emo and not emotion_first:
        parts.append(emo)
    return ". ".join(parts) + "."
