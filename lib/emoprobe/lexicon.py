"""Lexical frequency of emotion words: the paper's proxy for how common a concept is in pre-training text.

The paper (Sec. 3.3) reads per-class frequencies from the Google Books Ngram Viewer (July 2024 corpora, English and
Chinese). The viewer has no offline API, so the book uses, in order of preference:

1. a CSV the user exported from the Ngram Viewer (``load_ngram_csv``), found at ``data/ngram/<lang>.csv`` or given
   as ``source=<path>``;
2. ``wordfreq`` (offline; its lists blend Google Books Ngrams 2012 with other sources, see ``SOURCES``).

Terms: English uses the noun of each label (``emoprobe.labels.NOUN``: DFEW's "happy" -> "happiness"), Chinese uses
MAFW's Chinese label name (``emoprobe.labels.ZH`` via the noun).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import labels as _labels
from . import paths

SOURCES = {
    "wordfreq": (
        "wordfreq 3.1 (Exquisite Corpus data). `word_frequency(word, lang)` is the word's frequency per token, "
        "averaged over several text domains: Wikipedia, subtitles (OpenSubtitles 2018, SUBTLEX), news (NewsCrawl "
        "2014, GlobalVoices), books (Google Books Ngrams 2012), web text (OSCAR), Twitter and Reddit for English; "
        "for Chinese the same without Reddit, plus the word list shipped with the jieba segmenter. It is a "
        "broad-coverage proxy for how often a word is written, not the Google Books Ngram Viewer corpus (July 2024 "
        "release) the paper used, so absolute values and the order of close classes can differ from the paper's "
        "Figure 2. Chinese text is segmented with jieba; when a word splits into several tokens, wordfreq combines "
        "the token frequencies f_i as 1 / sum(1 / f_i) and divides by 10 per extra token (its 'inferred space' "
        "penalty). All eleven MAFW Chinese label names are single jieba tokens in wordfreq 3.1, so no combination "
        "happens for them (``frequencies`` records the tokens in ``Series.attrs['tokens']``)."
    ),
    "ngram-csv": (
        "Google Books Ngram Viewer (books.google.com/ngrams), values exported by the user: the share of all "
        "n-grams of the same length in the chosen corpus and year (e.g. English or Chinese 2019 corpus, the "
        "'July 2024' release the paper cites). The book averages the yearly values over a year range (default: "
        "the last 10 years in the file). Nothing is downloaded: the user exports the CSV once."
    ),
}

NGRAM_DIR_ENV = "EMOPROBE_NGRAM_DIR"


def term(label: str, lang: str = "en") -> str:
    """The word looked up for ``label``: the English noun, or the Chinese label name."""
    noun = _labels.NOUN.get(label)
    if noun is None:
        raise KeyError(f"no lexical term for label {label!r}; known: {sorted(_labels.NOUN)}")
    if lang == "en":
        return noun
    if lang == "zh":
        try:
            return _labels.ZH[noun]
        except KeyError:
            raise KeyError(f"no Chinese name for {label!r} (noun {noun!r}) in emoprobe.labels.ZH") from None
    raise ValueError(f"lang must be 'en' or 'zh', not {lang!r}")


def default_ngram_csv(lang: str) -> Path | None:
    """``$EMOPROBE_NGRAM_DIR/<lang>.csv`` or ``<repo>/data/ngram/<lang>.csv`` if that file exists, else None."""
    d = os.environ.get(NGRAM_DIR_ENV)
    if d:
        base = Path(d)
    else:
        try:
            base = paths.root() / "data" / "ngram"
        except FileNotFoundError:
            return None
    p = base / f"{lang}.csv"
    return p if p.is_file() else None


def frequencies(labels: Sequence[str], lang: str = "en", source: str | os.PathLike = "auto",
                years: tuple[int, int] | None = None, wordlist: str = "best") -> pd.Series:
    """Per-class lexical frequency as a Series (index = the canonical labels given, values = frequency).

    ``source``: "wordfreq", "auto" (the user's Ngram CSV at ``default_ngram_csv(lang)`` when present, else
    wordfreq), "ngram-csv" (that CSV, required) or a path to an Ngram CSV. ``years`` is passed to
    ``load_ngram_csv``. ``Series.attrs`` records ``source``, ``lang``, ``terms`` (label -> word) and, for
    wordfreq, ``tokens`` (label -> the tokens wordfreq looked up).
    """
    labels = list(labels)
    terms = {l: term(l, lang) for l in labels}
    path = None
    if source == "auto":
        path = default_ngram_csv(lang)
        source = "ngram-csv" if path else "wordfreq"
    elif source == "ngram-csv":
        path = default_ngram_csv(lang)
        if path is None:
            raise FileNotFoundError(f"no Ngram CSV for lang {lang!r}: expected data/ngram/{lang}.csv "
                                    f"(or ${NGRAM_DIR_ENV}/{lang}.csv)")
    elif source != "wordfreq":
        path = Path(source)
        source = "ngram-csv"

    if source == "wordfreq":
        import wordfreq  # jieba is imported lazily by wordfreq for 'zh'

        if lang == "zh":  # jieba logs its dictionary loading to stderr (DEBUG level set on import): silence it
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)

        vals = {l: wordfreq.word_frequency(t, lang, wordlist=wordlist) for l, t in terms.items()}
        tokens = {l: wordfreq.tokenize(t, lang) for l, t in terms.items()}
        s = pd.Series(vals, dtype=float, name=f"wordfreq_{lang}")
        zero = [l for l, v in vals.items() if v <= 0]
        if zero:
            raise ValueError(f"wordfreq has no frequency for {[terms[l] for l in zero]} ({lang})")
        s.attrs.update(source="wordfreq", lang=lang, terms=terms, tokens=tokens, wordlist=wordlist)
        return s

    table = load_ngram_csv(path, years=years)
    missing = [t for t in terms.values() if t not in table.index]
    if missing:
        raise ValueError(f"{path}: no column/row for term(s) {missing}; the file has {list(table.index)}")
    s = pd.Series({l: float(table[t]) for l, t in terms.items()}, name=f"ngram_{lang}")
    s.attrs.update(source="ngram-csv", lang=lang, terms=terms, path=str(path), years=table.attrs.get("years"))
    return s


def _norm_term(name: str) -> str:
    """'fear (All)' / 'fear:eng_2019' / ' Fear ' -> 'fear' (Ngram Viewer decorations stripped)."""
    n = str(name).strip()
    if n.endswith(")") and " (" in n:
        n = n[: n.rindex(" (")]
    if ":" in n:
        n = n.split(":", 1)[0]
    return n.strip().lower()


def _is_year(x) -> bool:
    try:
        v = float(str(x).strip())
    except ValueError:
        return False
    return v.is_integer() and 1000 <= v <= 3000


def load_ngram_csv(path: str | os.PathLike, years: tuple[int, int] | None = None, last_n_years: int = 10
                   ) -> pd.Series:
    """Read frequencies exported from the Google Books Ngram Viewer: Series term -> frequency.

    Accepted layouts (term names are matched case-insensitively, Ngram decorations such as ' (All)' or
    ':eng_2019' removed):

    * by year: a ``year`` column and one column per term (one row per year);
    * one row per term and one column per year (a term column named term/ngram/word, the rest years);
    * two columns ``term`` (or ngram/word) and ``frequency`` (or freq/value): already one value per term.

    Yearly layouts are averaged over ``years`` = (first, last) inclusive, default the last ``last_n_years`` years
    in the file. A malformed file raises ValueError naming the file and the problem.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Ngram CSV not found: {p}")
    try:
        df = pd.read_csv(p)
    except Exception as e:
        raise ValueError(f"{p}: cannot be read as CSV ({e})") from e
    if df.empty or df.shape[1] < 2:
        raise ValueError(f"{p}: expected at least two columns and one row, got shape {df.shape}")
    cols = {str(c).strip().lower(): c for c in df.columns}
    term_col = next((cols[k] for k in ("term", "ngram", "word") if k in cols), None)
    freq_col = next((cols[k] for k in ("frequency", "freq", "value") if k in cols), None)

    if "year" in cols:  # rows = years, columns = terms
        wide = df.set_index(cols["year"])
        wide.columns = [_norm_term(c) for c in wide.columns]
        layout = "year-rows"
    elif term_col is not None and freq_col is not None and df.shape[1] == 2:
        s = _numeric(df[freq_col], p, "frequency")
        out = pd.Series(s.to_numpy(), index=[_norm_term(t) for t in df[term_col]], name="frequency")
        _check_terms(out, p)
        out.attrs.update(layout="term-frequency", years=None, path=str(p))
        return out
    elif term_col is not None and all(_is_year(c) for c in df.columns if c != term_col):
        wide = df.set_index(term_col).T
        wide.columns = [_norm_term(c) for c in wide.columns]
        layout = "term-rows"
    else:
        raise ValueError(f"{p}: unrecognised layout (columns {list(df.columns)[:8]}): need a 'year' column with one "
                         f"column per term, a term column with one column per year, or 'term,frequency' rows")

    bad_years = [y for y in wide.index if not _is_year(y)]
    if bad_years:
        raise ValueError(f"{p}: non-year value(s) in the year axis: {bad_years[:5]}")
    wide.index = [int(float(y)) for y in wide.index]
    if wide.index.duplicated().any():
        raise ValueError(f"{p}: duplicate year(s) {sorted(set(wide.index[wide.index.duplicated()]))}")
    wide = wide.apply(lambda c: _numeric(c, p, c.name))
    if years is None:
        hi = max(wide.index)
        years = (hi - last_n_years + 1, hi)
    sel = wide.loc[(wide.index >= years[0]) & (wide.index <= years[1])]
    if sel.empty:
        raise ValueError(f"{p}: no rows in the year range {years} (file covers {min(wide.index)}-{max(wide.index)})")
    out = sel.mean(axis=0)
    out.name = "frequency"
    _check_terms(out, p)
    out.attrs.update(layout=layout, years=(int(max(years[0], min(sel.index))), int(min(years[1], max(sel.index)))),
                     n_years=len(sel), path=str(p))
    return out


def _numeric(col: pd.Series, p: Path, what) -> pd.Series:
    v = pd.to_numeric(col, errors="coerce")
    bad = col[v.isna()]
    if len(bad):
        raise ValueError(f"{p}: non-numeric or missing value(s) in {what!r}: {bad.astype(str).tolist()[:5]}")
    if (v < 0).any():
        raise ValueError(f"{p}: negative frequency in {what!r}")
    return v.astype(float)


def _check_terms(s: pd.Series, p: Path) -> None:
    if s.index.duplicated().any():
        raise ValueError(f"{p}: duplicate term(s) {sorted(set(s.index[s.index.duplicated()]))}")
    if not np.isfinite(s.to_numpy()).all():
        raise ValueError(f"{p}: non-finite frequency")
