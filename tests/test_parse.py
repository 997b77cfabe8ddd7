import os
import sys
from pathlib import Path

import pytest

from emoprobe import labels, parse

MAFW, DFEW = labels.MAFW, labels.DFEW
NO_EMB = {"use_embedding": False}


@pytest.mark.parametrize("text,want,method", [
    ("Sadness", "sadness", "exact"),
    ("  sadness.  ", "sadness", "exact"),
    ("The emotion is: Sadness.", "sadness", "exact"),
    ("Answer: ANGER", "anger", "exact"),
    ("**Contempt**", "contempt", "exact"),
    ("happy", "happiness", "synonym"),
    ("Happily!", "happiness", "synonym"),
    ("afraid", "fear", "synonym"),
    ("scared", "fear", "synonym"),
    ("anxious", "anxiety", "synonym"),
    ("disappointed", "disappointment", "synonym"),
    ("helpless", "helplessness", "synonym"),
    ("contemptuous", "contempt", "synonym"),
    ("The emotion is: surprised", "surprise", "synonym"),
    ("悲伤", "sadness", "synonym"),
    ("开心", "happiness", "synonym"),
    ("高兴。", "happiness", "synonym"),
    ("生气", "anger", "synonym"),
    ('{"emotion": "Fear"}', "fear", "json"),
    ('```json\n{"emotion": "happy"}\n```', "happiness", "json"),
    ('Here you go: {"label": "disgust", "confidence": 0.8}', "disgust", "json"),
    ("The person in the video appears to be happy.", "happiness", "sentence"),
    ("Based on the frowning, the emotion is most likely anger.", "anger", "sentence"),
    ("视频中的人看起来很伤心", "sadness", "sentence"),
])
def test_rules_mafw(text, want, method):
    assert parse.parse_label(text, MAFW, **NO_EMB) == (want, method)


@pytest.mark.parametrize("text,want,method", [
    ("Happiness", "happy", "synonym"),
    ("anger", "angry", "synonym"),
    ("sadness.", "sad", "synonym"),
    ("The person is surprised.", "surprise", "sentence"),
    ("Fearful", "fear", "synonym"),
    ("neutral", "neutral", "exact"),
    ('{"emotion": "Disgusted"}', "disgust", "json"),
    ("快乐", "happy", "synonym"),
])
def test_synonyms_map_onto_dfew_forms(text, want, method):
    assert parse.parse_label(text, DFEW, **NO_EMB) == (want, method)


@pytest.mark.parametrize("text", [
    "", None, "   ",
    "The person looks happy but also a little sad.",          # two labels named
    "Either anger or disgust.",
    "The person is not happy.",                               # negated
    "他看起来不高兴",                                            # negated (Chinese)
    "Emotion Labels choices: anger, anxiety, contempt",       # prompt echo
    "anxiety" + " neutral",
])
def test_ambiguous_or_empty_is_unparsed(text, monkeypatch):
    def boom(*a):
        raise AssertionError("ambiguous answers must not reach the embedding fallback")

    monkeypatch.setattr(parse, "similarities", boom)
    assert parse.parse_label(text, MAFW) == (None, "unparsed")


def test_labels_outside_the_set_are_not_returned():
    # "contempt" is not a DFEW label; the answer must not be mapped onto something else.
    assert parse.parse_label("contempt", DFEW, **NO_EMB) == (None, "unparsed")


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty label set"):
        parse.parse_label("x", [])
    with pytest.raises(ValueError, match="lang"):
        parse.parse_label("x", MAFW, lang="fr")


# ----------------------------------------------------------------------------------- embedding
def test_embedding_fallback_paraphrase_and_unrelated():
    assert parse.parse_label("The person looks joyful.", MAFW) == ("happiness", "embedding")
    assert parse.parse_label("The person looks joyful.", DFEW) == ("happy", "embedding")
    assert parse.parse_label("The video shows a man in a blue shirt standing in a kitchen.", MAFW) == \
        (None, "unparsed")
    assert parse.parse_label("I cannot determine that from the video.", MAFW) == (None, "unparsed")
    assert parse.parse_label('{"emotion": "confused"}', MAFW) == (None, "unparsed")
    # threshold override: with an impossible threshold the paraphrase is not accepted
    assert parse.parse_label("The person looks joyful.", MAFW, embed_threshold=0.99) == (None, "unparsed")
    # Chinese text never goes to the English embedding model
    assert parse.parse_label("这个人看起来喜气洋洋", MAFW, lang="zh") == (None, "unparsed")


@pytest.mark.slow
def test_threshold_separates_handmade_set():
    """The hand-made set of scripts/parse_threshold.py: every accepted paraphrase is right, no unrelated one
    is accepted (the measurement behind EMBED_THRESHOLD / EMBED_MARGIN)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import parse_threshold as pt

    accepted = 0
    for text, want in pt.PARAPHRASES:
        lab, method = parse.parse_label(text, MAFW)
        assert method in ("embedding", "unparsed"), (text, method)
        if lab is not None:
            accepted += 1
            assert lab == want, text
    assert accepted >= len(pt.PARAPHRASES) // 3
    for text in pt.UNRELATED:
        assert parse.parse_label(text, MAFW) == (None, "unparsed"), text
