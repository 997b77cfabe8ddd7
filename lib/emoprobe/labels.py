"""Canonical label sets. Class *names* are canonical; never rely on another codebase's index order."""
from __future__ import annotations

# MAFW's 11 single-label classes, alphabetical (the order of the paper's Table S2).
MAFW = (
    "anger", "anxiety", "contempt", "disappointment", "disgust", "fear",
    "happiness", "helplessness", "neutral", "sadness", "surprise",
)
# DFEW's 7 classes in DFEW's own index order 1..7 (EmoLabel_DataSplit csv files).
DFEW = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")

LABEL_SETS = {"mafw": MAFW, "dfew": DFEW}

# Two-letter abbreviations used by the paper's tables S2/S3.
ABBREV = {
    "anger": "AG", "anxiety": "AX", "contempt": "CO", "disappointment": "DA", "disgust": "DG",
    "fear": "FE", "happiness": "HA", "helplessness": "HP", "neutral": "NU", "sadness": "SD",
    "surprise": "SU", "angry": "AG", "happy": "HA", "sad": "SD",
}

# The noun used for lexical-frequency look-ups (DFEW's adjectives map to MAFW's nouns).
NOUN = {
    "angry": "anger", "happy": "happiness", "sad": "sadness", "neutral": "neutral",
    "surprise": "surprise", "disgust": "disgust", "fear": "fear",
    **{m: m for m in MAFW},
}

# Chinese label names (MAFW's Chinese annotation vocabulary), for lexical frequency and parsing.
ZH = {
    "anger": "愤怒", "anxiety": "焦虑", "contempt": "轻蔑", "disappointment": "失望", "disgust": "厌恶",
    "fear": "恐惧", "happiness": "快乐", "helplessness": "无助", "neutral": "中性", "sadness": "悲伤",
    "surprise": "惊讶",
}


def get(label_set: str) -> tuple[str, ...]:
    """Return the canonical labels of ``label_set`` ('mafw' or 'dfew')."""
    try:
        return LABEL_SETS[label_set.lower()]
    except KeyError:
        raise ValueError(f"unknown label set {label_set!r}; known: {sorted(LABEL_SETS)}") from None
