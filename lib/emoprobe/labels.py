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


# Sentiment group of each MAFW / DFEW label. This grouping is emoprobe's own (used by the prompt-sensitivity
# chapter), not a MAFW or paper annotation: happiness and surprise count as positive (surprise's valence is
# ambiguous; the chapter says so), neutral as neutral, every other class as negative.
SENTIMENT = {
    "anger": "negative", "anxiety": "negative", "contempt": "negative", "disappointment": "negative",
    "disgust": "negative", "fear": "negative", "happiness": "positive", "helplessness": "negative",
    "neutral": "neutral", "sadness": "negative", "surprise": "positive",
    "angry": "negative", "happy": "positive", "sad": "negative",
}
SENTIMENTS = ("positive", "neutral", "negative")


def sentiment_order(labels, first: str = "positive") -> list[str]:
    """``labels`` grouped by :data:`SENTIMENT`: positive, neutral, negative (``first="positive"``) or negative,
    neutral, positive (``first="negative"``); within a group the given order is kept."""
    if first not in ("positive", "negative"):
        raise ValueError(f"sentiment_order: first must be 'positive' or 'negative', not {first!r}")
    unknown = [x for x in labels if x not in SENTIMENT]
    if unknown:
        raise ValueError(f"sentiment_order: labels without a sentiment group {unknown}")
    groups = SENTIMENTS if first == "positive" else SENTIMENTS[::-1]
    return [x for g in groups for x in labels if SENTIMENT[x] == g]
