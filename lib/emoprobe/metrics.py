"""Metrics and statistical tests for classification runs (scikit-learn and scipy do the arithmetic).

Input is the run table of ``emoprobe.run.classify``: one row per clip with at least the true ``label`` and the
predicted ``pred``, optionally ``status`` ("ok" | "unparsed" | "failed") and ``clip_id``. A row whose status is
"failed" or "unparsed", or whose prediction is missing, counts as a wrong answer: its prediction is replaced by
``OTHER`` (a sentinel that is never a label), so nothing vanishes from a denominator.

Conventions (the book quotes them):

* per-class and macro precision/recall/F1: ``sklearn.metrics.precision_recall_fscore_support(labels=labels,
  zero_division=0)``; macro = unweighted mean over ``labels`` (a class never predicted has precision 0).
* UAR = unweighted mean of recall over the classes that occur in the truth; WAR = accuracy over all rows.
  On a balanced set (equal support for every class) UAR == WAR.
* bootstrap: percentile intervals over clips, resampled within true class by default (keeps a balanced test set
  balanced in every replicate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

OTHER = "unparsed/failed"  # the sentinel prediction of failed / unparsed / missing answers (never a label)
_BAD_STATUS = ("failed", "unparsed")


# ---------------------------------------------------------------------------------------------------- helpers
def _check_columns(df: pd.DataFrame, cols: Sequence[str], what: str = "run table") -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; has {list(df.columns)}")


def predictions(df: pd.DataFrame, labels: Sequence[str], true: str = "label", pred: str = "pred"
                ) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) as object arrays; failed/unparsed/missing/out-of-set predictions become ``OTHER``.

    Raises ValueError if a true label is not in ``labels`` (a manifest/label-set mismatch must not be scored)."""
    _check_columns(df, [true, pred])
    labels = list(labels)
    if OTHER in labels:
        raise ValueError(f"{OTHER!r} is reserved and cannot be a label")
    y_true = df[true].astype(object).to_numpy()
    allowed = set(labels)
    if not allowed.issuperset(y_true.tolist()):
        bad_true = sorted({str(x) for x in y_true if x not in allowed})
        raise ValueError(f"run table: true label(s) {bad_true} are not in the label set {labels}")
    y_pred = df[pred].astype(object).to_numpy().copy()
    # a valid answer is a string naming a label (this runs once per bootstrap replicate: kept lean)
    bad = np.fromiter((not (isinstance(x, str) and x in allowed) for x in y_pred), dtype=bool, count=len(y_pred))
    if "status" in df.columns:
        bad |= df["status"].isin(_BAD_STATUS).to_numpy()
    y_pred[bad] = OTHER
    return y_true, y_pred


def correct(df: pd.DataFrame, labels: Sequence[str], true: str = "label", pred: str = "pred") -> np.ndarray:
    """Boolean array: the answer is a valid label equal to the truth (failed/unparsed count as wrong)."""
    y_true, y_pred = predictions(df, labels, true, pred)
    return y_true == y_pred


# ---------------------------------------------------------------------------------------------------- report
@dataclass
class Report:
    per_class: pd.DataFrame          # index label; precision, recall, f1, support, n_pred
    macro_precision: float
    macro_recall: float
    macro_f1: float
    uar: float
    war: float
    n: int
    n_failed: int
    n_unparsed: int
    n_other: int                     # all answers scored as OTHER (failed + unparsed + missing/out-of-set)
    balanced: bool
    labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("macro_precision", "macro_recall", "macro_f1", "uar", "war", "n",
                                           "n_failed", "n_unparsed", "n_other", "balanced")}
        d["per_class"] = self.per_class.to_dict(orient="index")
        return d

    def __getitem__(self, key):  # dict-style access for notebooks
        return getattr(self, key)


def report(df: pd.DataFrame, labels: Sequence[str], true: str = "label", pred: str = "pred") -> Report:
    """Per-class and macro precision/recall/F1, UAR, WAR and failure counts of one run (see module doc)."""
    labels = list(labels)
    y_true, y_pred = predictions(df, labels, true, pred)
    n = len(y_true)
    if n == 0:
        raise ValueError("run table: no rows to score")
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    n_pred = pd.Series(y_pred).value_counts().reindex(labels, fill_value=0).to_numpy()
    per = pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s.astype(int), "n_pred": n_pred},
                       index=pd.Index(labels, name="label"))
    present = s > 0
    status = df["status"] if "status" in df.columns else pd.Series([], dtype=object)
    return Report(
        per_class=per,
        macro_precision=float(p.mean()), macro_recall=float(r.mean()), macro_f1=float(f.mean()),
        uar=float(r[present].mean()), war=float(accuracy_score(y_true, y_pred)), n=n,
        n_failed=int((status == "failed").sum()), n_unparsed=int((status == "unparsed").sum()),
        n_other=int((y_pred == OTHER).sum()),
        balanced=bool(present.all() and len(set(s.tolist())) == 1), labels=labels,
    )


def confusion(df: pd.DataFrame, labels: Sequence[str], normalize: str | None = "true",
              true: str = "label", pred: str = "pred") -> pd.DataFrame:
    """Confusion matrix, rows = true label, columns = predicted label plus ``OTHER`` ("unparsed/failed").

    ``normalize``: "true" (rows sum to 1), "pred", "all", or None for counts (sklearn's convention)."""
    if normalize not in ("true", "pred", "all", None):
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, not {normalize!r}")
    labels = list(labels)
    y_true, y_pred = predictions(df, labels, true, pred)
    cm = confusion_matrix(y_true, y_pred, labels=labels + [OTHER])[:-1]  # OTHER is never a true label
    cm = cm.astype(float)
    if normalize == "true":
        tot = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, tot, out=np.zeros_like(cm), where=tot > 0)
    elif normalize == "pred":
        tot = cm.sum(axis=0, keepdims=True)
        cm = np.divide(cm, tot, out=np.zeros_like(cm), where=tot > 0)
    elif normalize == "all":
        cm = cm / cm.sum()
    else:
        cm = cm.astype(int)
    return pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels + [OTHER], name="pred"))


# ---------------------------------------------------------------------------------------------------- bootstrap
class CI(NamedTuple):
    point: float
    lo: float
    hi: float


class PairedDiff(NamedTuple):
    point: float   # stat(b) - stat(a)
    lo: float
    hi: float
    p: float       # two-sided bootstrap p-value for "no difference"


def _strata_groups(df: pd.DataFrame, strata) -> list[np.ndarray]:
    if strata is None:
        strata = "label" if "label" in df.columns else False
    if strata is False:
        return [np.arange(len(df))]
    _check_columns(df, [strata])
    codes = pd.factorize(df[strata])[0]
    return [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its extension-typed string columns (pandas' Arrow-backed strings) as plain NumPy object
    columns (missing values as None): the same values, but taking rows costs one NumPy take per block instead of one Arrow call per column
    (a bootstrap takes rows thousands of times). Index and ``attrs`` are kept."""
    ext = [c for c in df.columns if not isinstance(df[c].dtype, np.dtype) and pd.api.types.is_string_dtype(df[c].dtype)]
    if not ext:
        return df
    out = df.copy()
    for c in ext:
        vals = df[c].astype(object).where(df[c].notna(), None).to_numpy(dtype=object)
        out[c] = pd.Series(vals, index=df.index, dtype=object)  # explicit: pandas would infer strings again
    return out.copy()  # one block per dtype: a row take is then a few NumPy calls


def _resample(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])


def bootstrap_ci(df: pd.DataFrame, stat_fn: Callable[[pd.DataFrame], float], n_boot: int = 1000, seed: int = 0,
                 ci: float = 0.95, strata: str | bool | None = None) -> CI:
    """Percentile bootstrap over clips: (point, lo, hi) of ``stat_fn(df)``.

    ``strata``: None = resample within the true class (column "label") when present, a column name to
    stratify by it, or False for plain resampling. Deterministic for a given ``seed``."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), not {ci}")
    if len(df) == 0:
        raise ValueError("bootstrap_ci: empty run table")
    groups = _strata_groups(df, strata)
    rng = np.random.default_rng(seed)
    point = float(stat_fn(df))
    base = _plain(df)
    boots = np.array([stat_fn(base.iloc[_resample(groups, rng)]) for _ in range(n_boot)], dtype=float)
    a = (1 - ci) / 2
    lo, hi = np.nanquantile(boots, [a, 1 - a])
    return CI(point, float(lo), float(hi))


def macro_f1_score(y_true, y_pred, labels) -> float:
    """Macro-F1 over ``labels`` of two sequences: the mean of the per-label F1 (0 for a label never predicted
    correctly); a prediction outside ``labels`` (None, an unparsed answer, -1) counts as wrong, never dropped.
    Labels may be strings or class indices. The one macro-F1 of the project (:func:`macro_f1`, the CLI's
    report and training's validation use it)."""
    labels = list(labels)
    yt, yp = _codes(y_true, labels), _codes(y_pred, labels)
    if len(yt) != len(yp):
        raise ValueError(f"macro_f1_score: {len(yt)} true labels but {len(yp)} predictions")
    if not labels or not len(yt):
        return float("nan")
    # per label: F1 = 2 TP / (2 TP + FP + FN), 0 where the label is neither true nor predicted (sklearn's
    # precision_recall_fscore_support(..., zero_division=0) gives the same numbers; counted with bincount because
    # this runs once per bootstrap replicate, thousands of times per chapter)
    k = len(labels)
    tp = np.bincount(yt[(yt == yp) & (yt >= 0)], minlength=k)[:k].astype(float)
    n_true = np.bincount(yt[yt >= 0], minlength=k)[:k]
    n_pred = np.bincount(yp[yp >= 0], minlength=k)[:k]
    den = n_true + n_pred                      # = 2 TP + FP + FN
    f1 = np.divide(2 * tp, den, out=np.zeros(k), where=den > 0)
    return float(f1.mean())


def _codes(values, labels: list) -> np.ndarray:
    """Index of each value in ``labels`` (-1 for anything else: None, NaN, an unparsed answer, ``OTHER``)."""
    if len(labels) and all(isinstance(x, (int, np.integer)) for x in labels):
        index = {lab: i for i, lab in enumerate(labels)}
        return np.array([index.get(y, -1) if isinstance(y, (int, np.integer)) else -1 for y in values], dtype=int)
    index = {lab: i for i, lab in enumerate(labels)}
    get = index.get
    return np.fromiter((get(y, -1) if isinstance(y, str) else -1 for y in values), dtype=int)


def macro_f1(df: pd.DataFrame, labels: Sequence[str], true: str = "label", pred: str = "pred") -> float:
    y_true, y_pred = predictions(df, labels, true, pred)
    return macro_f1_score(y_true, y_pred, labels)


def macro_f1_ci(df: pd.DataFrame, labels: Sequence[str], **kw) -> CI:
    """Bootstrap CI of macro-F1 (keyword arguments go to ``bootstrap_ci``)."""
    return bootstrap_ci(df, lambda d: macro_f1(d, labels), **kw)


def uar_ci(df: pd.DataFrame, labels: Sequence[str], **kw) -> CI:
    return bootstrap_ci(df, lambda d: report(d, labels).uar, **kw)


def _align(df_a: pd.DataFrame, df_b: pd.DataFrame, on: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    _check_columns(df_a, [on], "run table a")
    _check_columns(df_b, [on], "run table b")
    for name, d in (("a", df_a), ("b", df_b)):
        if d[on].duplicated().any():
            raise ValueError(f"run table {name}: duplicate {on} values {d[on][d[on].duplicated()].tolist()[:5]}")
    ids_a, ids_b = set(df_a[on]), set(df_b[on])
    if ids_a != ids_b:
        raise ValueError(f"paired comparison needs the same clips: {len(ids_a - ids_b)} only in a, "
                         f"{len(ids_b - ids_a)} only in b (e.g. {sorted(map(str, ids_a ^ ids_b))[:3]})")
    a = df_a.sort_values(on).reset_index(drop=True)
    b = df_b.set_index(on).loc[a[on]].reset_index()
    return a, b


def paired_bootstrap_diff(df_a: pd.DataFrame, df_b: pd.DataFrame, stat_fn: Callable[[pd.DataFrame], float],
                          n_boot: int = 1000, seed: int = 0, ci: float = 0.95, strata: str | bool | None = None,
                          on: str = "clip_id") -> PairedDiff:
    """Paired bootstrap of ``stat_fn(b) - stat_fn(a)`` for two conditions on the same clips (matched on ``on``).

    The same resampled clips enter both conditions in each replicate. ``p`` = two-sided bootstrap p-value
    2·min(P*(diff ≤ 0), P*(diff ≥ 0)), capped at 1."""
    a, b = _align(df_a, df_b, on)
    groups = _strata_groups(a, strata)
    rng = np.random.default_rng(seed)
    point = float(stat_fn(b) - stat_fn(a))
    a, b = _plain(a), _plain(b)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = _resample(groups, rng)
        diffs[i] = stat_fn(b.iloc[idx]) - stat_fn(a.iloc[idx])
    al = (1 - ci) / 2
    lo, hi = np.nanquantile(diffs, [al, 1 - al])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return PairedDiff(point, float(lo), float(hi), float(p))


# ---------------------------------------------------------------------------------------------------- paired tests
class McNemar(NamedTuple):
    statistic: float
    pvalue: float
    b: int          # a correct, b wrong
    c: int          # a wrong, b correct
    method: str     # "exact" | "chi2-cc" | "none"


def mcnemar(correct_a, correct_b, exact_below: int = 25) -> McNemar:
    """McNemar's test on paired correctness vectors.

    With b = #(a right, b wrong) and c = #(a wrong, b right): if b + c < ``exact_below`` the exact two-sided
    binomial test ``scipy.stats.binomtest(b, b+c, 0.5)`` (statistic = b); otherwise the chi-square statistic with
    continuity correction (|b−c|−1)²/(b+c) and its ``scipy.stats.chi2`` (1 df) survival p. b + c = 0 → p = 1."""
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise ValueError(f"mcnemar: correctness vectors must be 1-D and of equal length, got {a.shape} and {bb.shape}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n = b + c
    if n == 0:
        return McNemar(0.0, 1.0, b, c, "none")
    if n < exact_below:
        return McNemar(float(b), float(stats.binomtest(b, n, 0.5).pvalue), b, c, "exact")
    stat = (abs(b - c) - 1) ** 2 / n
    return McNemar(float(stat), float(stats.chi2.sf(stat, 1)), b, c, "chi2-cc")


class TestResult(NamedTuple):
    statistic: float
    pvalue: float


def permutation_test_paired(x, y, statistic: Callable | None = None, n_resamples: int = 9999, seed: int = 0,
                            alternative: str = "two-sided") -> TestResult:
    """Paired permutation test (``scipy.stats.permutation_test``, permutation_type="samples": the two values of
    each pair are swapped at random). Default statistic: mean(x) − mean(y), e.g. per-clip correctness or score."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"permutation_test_paired: x and y must be 1-D and of equal length, got {x.shape}, {y.shape}")
    if statistic is None:
        def statistic(u, v, axis=-1):
            return np.mean(u, axis=axis) - np.mean(v, axis=axis)
    res = stats.permutation_test((x, y), statistic, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative=alternative, random_state=seed)
    return TestResult(float(res.statistic), float(res.pvalue))


# ---------------------------------------------------------------------------------------------------- asymmetry
@dataclass
class Asymmetry:
    """Direction of confusions relative to a class frequency (see ``asymmetry``)."""
    pairs: pd.DataFrame        # rare, common, freq_rare, freq_common, rare_to_common, common_to_rare, diff
    rare_to_common: float      # sum over pairs of the row-normalised rate rare -> common
    common_to_rare: float      # sum over pairs of the row-normalised rate common -> rare
    n_pairs: int
    wilcoxon: TestResult       # one-sided signed-rank test of diff > 0 over pairs
    sign: TestResult           # one-sided sign test (binomial) of #(diff > 0) among non-tied pairs
    permutation: TestResult    # statistic = sum(diff); p from permuting the frequencies over classes
    n_permutations: int

    @property
    def ratio(self) -> float:
        return self.rare_to_common / self.common_to_rare if self.common_to_rare > 0 else math.inf


def _directional_sum(rates: np.ndarray, f: np.ndarray) -> float:
    lower = f[:, None] < f[None, :]  # lower[i, j]: class i rarer than class j
    return float(np.sum(rates[lower]) - np.sum(rates.T[lower]))


def asymmetry_pairs(confusion_counts: pd.DataFrame, freq: pd.Series) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Steps 1-2 of :func:`asymmetry` without the tests: ``(pairs, rates, f)`` — the pairs table (rare, common,
    freq_rare, freq_common, rare_to_common, common_to_rare, diff), the row-normalised off-diagonal rates and the
    frequencies in label order. Cheap enough to bootstrap (e.g. the mean of ``pairs["diff"]`` over clips)."""
    if not isinstance(confusion_counts, pd.DataFrame):
        raise TypeError("asymmetry: confusion_counts must be a DataFrame (rows true, columns pred)")
    labels = [l for l in confusion_counts.index if l in confusion_counts.columns]
    if len(labels) < 3:
        raise ValueError(f"asymmetry: need at least 3 classes shared by rows and columns, got {labels}")
    freq = pd.Series(freq, dtype=float)
    missing = [l for l in labels if l not in freq.index]
    if missing:
        raise ValueError(f"asymmetry: no frequency for class(es) {missing}")
    counts = confusion_counts.loc[labels].astype(float)
    if (counts.to_numpy() < 0).any():
        raise ValueError("asymmetry: confusion counts must be non-negative")
    tot = counts.sum(axis=1).to_numpy()[:, None]
    sq = counts[labels].to_numpy()
    rates = np.divide(sq, tot, out=np.zeros_like(sq), where=tot > 0)
    np.fill_diagonal(rates, 0.0)
    f = freq.loc[labels].to_numpy()

    rows = []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if f[i] < f[j]:
                rows.append((labels[i], labels[j], f[i], f[j], rates[i, j], rates[j, i]))
    pairs = pd.DataFrame(rows, columns=["rare", "common", "freq_rare", "freq_common", "rare_to_common",
                                        "common_to_rare"])
    pairs["diff"] = pairs.rare_to_common - pairs.common_to_rare
    return pairs, rates, f


def asymmetry(confusion_counts: pd.DataFrame, freq: pd.Series, n_permutations: int = 9999,
              seed: int = 0) -> Asymmetry:
    """Do confusions flow from rare to common classes more than the reverse?

    ``confusion_counts``: counts, rows = true class, columns = predicted class (as from ``confusion(...,
    normalize=None)``; extra columns such as "unparsed/failed" are used only in the row totals). ``freq``: per-class
    frequency (lexical or training-set), indexed by label; only the order matters.

    1. Row-normalise: R[i, j] = count(true i, pred j) / count(true i) (all answers, failures included).
    2. For every unordered pair {i, j} with freq[i] < freq[j] (ties skipped): rare_to_common = R[i, j],
       common_to_rare = R[j, i], diff = R[i, j] − R[j, i]. Purely semantic confusion is symmetric in expectation
       (diff ≈ 0); a frequency prior makes diff > 0.
    3. Tests over the pairs: Wilcoxon signed-rank of diff > 0 (``scipy.stats.wilcoxon``, alternative="greater",
       zero differences dropped) and the sign test (``scipy.stats.binomtest``, alternative="greater").
    4. Permutation test: statistic S = Σ diff; the frequencies are permuted over the classes
       (``scipy.stats.permutation_test``, permutation_type="pairings", exact when K! ≤ n_permutations) and
       p = P(S_perm ≥ S_obs). This asks whether *this* frequency order explains the direction of confusions
       better than a random order of the same classes.
    Pairs with no confusion in either direction count as ties (they do not enter the Wilcoxon/sign tests).
    Note the permutation p cannot fall below about 1/K when all confusions go into a single class (only that
    class's rank matters then); the pair tests carry the evidence in that case.
    """
    pairs, rates, f = asymmetry_pairs(confusion_counts, freq)
    labels = [l for l in confusion_counts.index if l in confusion_counts.columns]
    d = pairs["diff"].to_numpy()
    nz = d[d != 0]
    if len(nz) == 0:
        wil = TestResult(0.0, 1.0)
        sign = TestResult(0.0, 1.0)
    else:
        w = stats.wilcoxon(nz, alternative="greater")
        wil = TestResult(float(w.statistic), float(w.pvalue))
        k = int((nz > 0).sum())
        sign = TestResult(float(k), float(stats.binomtest(k, len(nz), 0.5, alternative="greater").pvalue))

    def stat(fr):
        return _directional_sum(rates, np.asarray(fr))

    perm = stats.permutation_test((f,), stat, permutation_type="pairings", n_resamples=n_permutations,
                                  alternative="greater", random_state=seed, vectorized=False)
    return Asymmetry(pairs=pairs, rare_to_common=float(pairs.rare_to_common.sum()),
                     common_to_rare=float(pairs.common_to_rare.sum()), n_pairs=len(pairs), wilcoxon=wil, sign=sign,
                     permutation=TestResult(float(perm.statistic), float(perm.pvalue)),
                     n_permutations=min(n_permutations, math.factorial(len(labels))))


# ---------------------------------------------------------------------------------------------------- correlations
def correlations(table: pd.DataFrame, min_n: int = 3) -> pd.DataFrame:
    """Pearson r with two-tailed p (``scipy.stats.pearsonr``) for every ordered pair of columns of ``table``
    (rows = classes), in the long layout of the paper's Table 1 (row, col, r, p; diagonal r = 1, p NaN), plus
    Spearman rho and p (``scipy.stats.spearmanr``) as a robustness check, and n (rows without NaN in the pair)."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError("correlations: expected a DataFrame with one column per variable")
    out = []
    cols = list(table.columns)
    for a in cols:
        for b in cols:
            sub = table[[a, b]].apply(pd.to_numeric, errors="raise").dropna() if a != b else table[[a]].dropna()
            n = len(sub)
            if a == b:
                out.append((a, b, 1.0, np.nan, 1.0, np.nan, n))
                continue
            if n < min_n:
                raise ValueError(f"correlations: only {n} complete rows for ({a}, {b}); need {min_n}")
            x, y = sub[a].to_numpy(float), sub[b].to_numpy(float)
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                out.append((a, b, np.nan, np.nan, np.nan, np.nan, n))
                continue
            pr = stats.pearsonr(x, y)
            sr = stats.spearmanr(x, y)
            out.append((a, b, float(pr.statistic), float(pr.pvalue), float(sr.statistic), float(sr.pvalue), n))
    return pd.DataFrame(out, columns=["row", "col", "r", "p", "spearman_rho", "spearman_p", "n"])


# ---------------------------------------------------------------------------------------------------- entropy
def prediction_entropy(preds, labels: Sequence[str]) -> dict:
    """Entropy (bits, ``scipy.stats.entropy`` base 2) of the distribution of predicted labels over ``labels``.

    Answers outside ``labels`` (None, failed, unparsed) are left out of the distribution and counted in
    ``n_other``. Returns entropy, max = log2(K), normalized = entropy / max, counts (Series), n, n_other.
    A model that always answers the same class has entropy 0; a uniform answerer has log2(K)."""
    labels = list(labels)
    s = pd.Series(list(preds), dtype=object)
    valid = s[s.isin(labels)]
    counts = valid.value_counts().reindex(labels, fill_value=0)
    h = float(stats.entropy(counts.to_numpy(float), base=2)) if counts.sum() > 0 else float("nan")
    hmax = math.log2(len(labels))
    return {"entropy": h, "max": hmax, "normalized": h / hmax if hmax > 0 else float("nan"),
            "counts": counts, "n": int(len(s)), "n_other": int(len(s) - len(valid))}


# The share of clips given one and the same answer above which a model is called uninformative: its "per-class
# F1", "Δ under shuffling" or "gain from MSCE" then describe its prior, not what it saw. Chapters treat such a
# model's verdicts as inconclusive (the rule is stated in each chapter before its result).
UNINFORMATIVE_SHARE = 0.95


def top_answer_share(df, pred: str = "pred") -> float:
    """Share of rows whose answer is the most common one (failed/unparsed rows count as one answer, 'OTHER')."""
    import pandas as pd

    answers = df[pred].where(df[pred].notna(), "OTHER") if len(df) else pd.Series(dtype=object)
    return float(answers.value_counts(normalize=True).iloc[0]) if len(answers) else float("nan")


def is_uninformative(df, pred: str = "pred", share: float = UNINFORMATIVE_SHARE) -> bool:
    """True when one answer covers at least ``share`` of the clips (see :data:`UNINFORMATIVE_SHARE`)."""
    s = top_answer_share(df, pred)
    return bool(s == s and s >= share)


# ---------------------------------------------------------------------------------------------------- label order
def answer_positions(preds, orders) -> np.ndarray:
    """1-based position of each answer in the label list that clip was shown; 0 where the answer is not in it
    (failed, unparsed, None). ``orders``: one list for all answers, or one list per answer (same length as
    ``preds``). The share of answers at position 1 is the primacy rate (1/K without any position effect when
    every label is first equally often)."""
    preds = list(preds)
    if len(orders) and isinstance(orders[0], str):
        orders = [orders] * len(preds)
    if len(orders) != len(preds):
        raise ValueError(f"answer_positions: {len(preds)} answers but {len(orders)} label lists")
    out = np.zeros(len(preds), dtype=int)
    for i, (p, order) in enumerate(zip(preds, orders)):
        order = list(order)
        if isinstance(p, str) and p in order:
            out[i] = order.index(p) + 1
    return out
