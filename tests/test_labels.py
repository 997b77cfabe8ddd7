"""labels: sentiment grouping used by the prompt-sensitivity chapter."""
import pytest

from emoprobe import labels as L


def test_sentiment_covers_both_label_sets():
    for ls in (L.MAFW, L.DFEW):
        assert set(ls) <= set(L.SENTIMENT)
        assert set(L.SENTIMENT.values()) == set(L.SENTIMENTS)


def test_sentiment_order_groups_and_keeps_order():
    pos = L.sentiment_order(L.MAFW, "positive")
    neg = L.sentiment_order(L.MAFW, "negative")
    assert sorted(pos) == sorted(L.MAFW) == sorted(neg)
    assert pos[:3] == ["happiness", "surprise", "neutral"]
    assert neg[-3:] == ["neutral", "happiness", "surprise"]
    assert neg[:8] == [x for x in L.MAFW if L.SENTIMENT[x] == "negative"]
    with pytest.raises(ValueError):
        L.sentiment_order(L.MAFW, "neutral")
    with pytest.raises(ValueError):
        L.sentiment_order(["joy"], "positive")
