"""emoprobe.lexicon: wordfreq look-ups and the Google Books Ngram CSV loader."""
import pytest

from emoprobe import labels as L
from emoprobe import lexicon


def test_english_wordfreq_order_and_values():
    f = lexicon.frequencies(L.MAFW, lang="en", source="wordfreq")
    assert list(f.index) == list(L.MAFW)
    assert f["fear"] > f["surprise"] > f["anxiety"]
    assert f["helplessness"] == f.min() and f["fear"] == f.max()
    assert f["fear"] == pytest.approx(8.9e-5, rel=0.05)      # facts.md, wordfreq 3.1.1
    assert f["contempt"] == pytest.approx(5.5e-6, rel=0.05)
    assert f.attrs["source"] == "wordfreq" and f.attrs["terms"]["anger"] == "anger"


def test_dfew_adjectives_use_nouns():
    f = lexicon.frequencies(L.DFEW, lang="en", source="wordfreq")
    g = lexicon.frequencies(["happiness", "sadness", "anger"], lang="en", source="wordfreq")
    assert f["happy"] == g["happiness"] and f["sad"] == g["sadness"] and f["angry"] == g["anger"]


def test_chinese_positive_and_tokenisation_recorded():
    f = lexicon.frequencies(L.MAFW, lang="zh", source="wordfreq")
    assert (f > 0).all() and len(f) == 11
    assert f.attrs["terms"]["fear"] == "恐惧"
    assert all(len(t) >= 1 for t in f.attrs["tokens"].values())


def test_unknown_label_and_lang():
    with pytest.raises(KeyError):
        lexicon.frequencies(["joy"], source="wordfreq")
    with pytest.raises(ValueError, match="lang"):
        lexicon.frequencies(["fear"], lang="fr", source="wordfreq")


def test_ngram_csv_year_rows(tmp_path):
    p = tmp_path / "en.csv"
    rows = ["year,fear (All),surprise (All),anxiety:eng_2019"]
    for y in range(2000, 2020):
        rows.append(f"{y},{1e-5 if y < 2010 else 3e-5},2e-5,1e-5")
    p.write_text("\n".join(rows) + "\n")
    s = lexicon.load_ngram_csv(p)
    assert s["fear"] == pytest.approx(3e-5)  # last 10 years: 2010-2019
    assert s.attrs["years"] == (2010, 2019) and s.attrs["n_years"] == 10
    s2 = lexicon.load_ngram_csv(p, years=(2000, 2019))
    assert s2["fear"] == pytest.approx(2e-5)
    f = lexicon.frequencies(["fear", "surprise", "anxiety"], source=p)
    assert f["fear"] > f["surprise"] > f["anxiety"] and f.attrs["source"] == "ngram-csv"


def test_ngram_csv_term_rows_and_term_frequency(tmp_path):
    p = tmp_path / "zh.csv"
    p.write_text("ngram,2017,2018,2019\n恐惧,1e-6,2e-6,3e-6\n惊讶,1e-7,1e-7,1e-7\n")
    s = lexicon.load_ngram_csv(p)
    assert s["恐惧"] == pytest.approx(2e-6) and s.attrs["layout"] == "term-rows"
    q = tmp_path / "tf.csv"
    q.write_text("term,frequency\nFear,3e-5\nsurprise,2e-5\n")
    s = lexicon.load_ngram_csv(q)
    assert s["fear"] == 3e-5 and s.attrs["layout"] == "term-frequency"
    with pytest.raises(ValueError, match="anxiety"):
        lexicon.frequencies(["fear", "anxiety"], source=q)


@pytest.mark.parametrize("content, msg", [
    ("a,b,c\n1,2,3\n", "unrecognised layout"),
    ("year,fear\n2019,abc\n", "non-numeric"),
    ("year,fear\n2019,-1\n", "negative"),
    ("year,fear\nnineteen,1e-5\n", "non-year"),
    ("term,frequency\nfear,1\nfear,2\n", "duplicate term"),
    ("year,fear\n2019,1e-5\n2019,2e-5\n", "duplicate year"),
    ("onlyone\n1\n", "at least two columns"),
])
def test_ngram_csv_malformed(tmp_path, content, msg):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(ValueError, match=msg) as e:
        lexicon.load_ngram_csv(p)
    assert "bad.csv" in str(e.value)


def test_ngram_csv_missing_and_year_range(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        lexicon.load_ngram_csv(tmp_path / "nope.csv")
    p = tmp_path / "en.csv"
    p.write_text("year,fear\n2018,1e-5\n2019,1e-5\n")
    with pytest.raises(ValueError, match="year range"):
        lexicon.load_ngram_csv(p, years=(1900, 1950))


def test_auto_prefers_user_ngram_csv(tmp_path, monkeypatch):
    monkeypatch.setenv(lexicon.NGRAM_DIR_ENV, str(tmp_path))
    assert lexicon.frequencies(["fear"], source="auto").attrs["source"] == "wordfreq"
    (tmp_path / "en.csv").write_text("term,frequency\nfear,0.5\n")
    f = lexicon.frequencies(["fear"], source="auto")
    assert f.attrs["source"] == "ngram-csv" and f["fear"] == 0.5
