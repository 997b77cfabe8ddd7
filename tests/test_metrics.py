"""emoprobe.metrics against scikit-learn / scipy on small hand-made examples."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score, precision_recall_fscore_support, recall_score

from emoprobe import metrics as M

LABELS = ["anger", "fear", "happiness"]


def run_table(true, pred, status=None):
    df = pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(len(true))], "label": true, "pred": pred})
    df["status"] = status if status is not None else ["ok"] * len(true)
    return df


def test_report_matches_sklearn_and_class_never_predicted():
    true = ["anger"] * 4 + ["fear"] * 4 + ["happiness"] * 4
    pred = ["anger", "anger", "happiness", "happiness", "anger", "happiness", "happiness", "anger",
            "happiness", "happiness", "happiness", "anger"]  # fear never predicted
    rep = M.report(run_table(true, pred), LABELS)
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=LABELS, zero_division=0)
    np.testing.assert_allclose(rep.per_class["precision"], p)
    np.testing.assert_allclose(rep.per_class["f1"], f)
    assert rep.per_class.loc["fear", "precision"] == 0 and rep.per_class.loc["fear", "f1"] == 0
    assert rep.per_class.loc["fear", "n_pred"] == 0
    assert rep.macro_f1 == pytest.approx(f1_score(true, pred, labels=LABELS, average="macro", zero_division=0))
    assert rep.uar == pytest.approx(recall_score(true, pred, labels=LABELS, average="macro"))
    # balanced: UAR == WAR
    assert rep.balanced and rep.uar == pytest.approx(rep.war)
    assert rep.n == 12 and rep.n_failed == 0


def test_failed_and_unparsed_rows_count_as_wrong():
    true = ["anger", "anger", "fear", "fear", "happiness", "happiness"]
    pred = ["anger", "anger", "fear", None, "happiness", "fear"]
    status = ["ok", "failed", "ok", "unparsed", "ok", "ok"]  # row 1 has a label but failed: still wrong
    rep = M.report(run_table(true, pred, status), LABELS)
    assert rep.n == 6 and rep.n_failed == 1 and rep.n_unparsed == 1 and rep.n_other == 2
    assert rep.war == pytest.approx(3 / 6)
    assert rep.per_class.loc["anger", "recall"] == pytest.approx(0.5)
    assert rep.per_class.loc["fear", "recall"] == pytest.approx(0.5)
    # the sklearn reference with an explicit sentinel
    sk_pred = ["anger", "__x__", "fear", "__x__", "happiness", "fear"]
    assert rep.macro_f1 == pytest.approx(f1_score(true, sk_pred, labels=LABELS, average="macro", zero_division=0))
    assert rep.to_dict()["n_failed"] == 1 and rep["uar"] == rep.uar


def test_unbalanced_uar_differs_from_war_and_bad_truth_rejected():
    rep = M.report(run_table(["anger"] * 3 + ["fear"], ["anger"] * 4), LABELS)
    assert not rep.balanced
    assert rep.war == pytest.approx(0.75)
    assert rep.uar == pytest.approx(0.5)  # over the classes present in the truth
    with pytest.raises(ValueError, match="not in the label set"):
        M.report(run_table(["joy"], ["anger"]), LABELS)
    with pytest.raises(ValueError, match="missing column"):
        M.report(pd.DataFrame({"label": ["anger"]}), LABELS)


def test_confusion_keeps_failures():
    true = ["anger", "anger", "fear", "happiness"]
    pred = ["anger", None, "anger", "happiness"]
    cm = M.confusion(run_table(true, pred, ["ok", "failed", "ok", "ok"]), LABELS, normalize=None)
    assert list(cm.columns) == LABELS + [M.OTHER]
    assert cm.to_numpy().sum() == 4
    assert cm.loc["anger", M.OTHER] == 1 and cm.loc["fear", "anger"] == 1
    cmn = M.confusion(run_table(true, pred, ["ok", "failed", "ok", "ok"]), LABELS)
    np.testing.assert_allclose(cmn.sum(axis=1), 1.0)


def test_bootstrap_deterministic_and_contains_point():
    rng = np.random.default_rng(1)
    true = np.repeat(LABELS, 20)
    pred = np.where(rng.random(60) < 0.6, true, rng.choice(LABELS, 60))
    df = run_table(list(true), list(pred))
    a = M.macro_f1_ci(df, LABELS, n_boot=60, seed=3)
    b = M.macro_f1_ci(df, LABELS, n_boot=60, seed=3)
    assert a == b
    assert a.lo <= a.point <= a.hi and a.hi - a.lo > 0
    assert M.macro_f1_ci(df, LABELS, n_boot=60, seed=4) != a
    # stratified resampling keeps the class counts: every replicate stays balanced, so UAR == WAR in each
    war = M.bootstrap_ci(df, lambda d: M.report(d, LABELS).war, n_boot=20, seed=0)
    uar = M.uar_ci(df, LABELS, n_boot=20, seed=0)
    assert war == pytest.approx(uar)


def test_paired_bootstrap_diff():
    rng = np.random.default_rng(2)
    true = list(np.repeat(LABELS, 30))
    good = [t if rng.random() < 0.8 else "anger" for t in true]
    bad = [t if rng.random() < 0.4 else "anger" for t in true]
    a, b = run_table(true, bad), run_table(true, good).sample(frac=1, random_state=0)  # order must not matter
    d = M.paired_bootstrap_diff(a, b, lambda x: M.macro_f1(x, LABELS), n_boot=80, seed=0)
    assert d.point > 0 and d.lo > 0 and d.p < 0.05
    same = M.paired_bootstrap_diff(a, a, lambda x: M.macro_f1(x, LABELS), n_boot=50)
    assert same.point == 0 and same.p == 1.0
    with pytest.raises(ValueError, match="same clips"):
        M.paired_bootstrap_diff(a, b.iloc[1:], lambda x: M.macro_f1(x, LABELS), n_boot=5)


def test_mcnemar_known_values():
    # b=10, c=2: exact two-sided binomial p = 2 * P(X <= 2 | 12, .5) = 2 * 79 / 4096
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3, bool)
    r = M.mcnemar(a, b)
    assert (r.b, r.c, r.method) == (10, 2, "exact")
    assert r.pvalue == pytest.approx(2 * 79 / 4096)
    # b=30, c=10: chi2 with continuity = 19^2 / 40 = 9.025
    a = np.array([1] * 30 + [0] * 10, bool)
    r = M.mcnemar(a, ~a)
    assert r.method == "chi2-cc" and r.statistic == pytest.approx(9.025)
    assert r.pvalue == pytest.approx(stats.chi2.sf(9.025, 1))
    assert M.mcnemar(a, a).pvalue == 1.0
    with pytest.raises(ValueError):
        M.mcnemar([1, 0], [1])


def test_permutation_test_paired():
    x = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 1], float)
    y = np.zeros(10)
    r = M.permutation_test_paired(x, y, n_resamples=2000)
    assert r.statistic == pytest.approx(0.9)
    # exact: 9 non-zero pairs, only all-positive and all-negative sign flips reach |0.9| -> p = 2 / 2^9
    assert r.pvalue == pytest.approx(2 / 512)
    assert M.permutation_test_paired(x, x, n_resamples=100).pvalue == pytest.approx(1.0)


def _cm(mat, labels):
    return pd.DataFrame(np.asarray(mat, float), index=labels, columns=labels)


def test_asymmetry_detects_planted_rare_to_common_collapse():
    labels = [f"k{i}" for i in range(7)]
    freq = pd.Series(np.arange(1, 8) ** 2, index=labels, dtype=float)  # k0 rarest, k6 commonest
    rng = np.random.default_rng(0)
    mat = np.eye(7) * 30
    for i in range(7):
        for j in range(i + 1, 7):
            mat[i, j] = rng.integers(3, 8)   # rare -> common
            mat[j, i] = rng.integers(0, 2)   # common -> rare, rarely
    a = M.asymmetry(_cm(mat, labels), freq)
    assert a.n_pairs == 21
    assert a.rare_to_common > 3 * a.common_to_rare and a.ratio > 3
    assert a.wilcoxon.pvalue < 0.001 and a.sign.pvalue < 0.001
    assert a.permutation.pvalue < 0.01 and a.n_permutations == 5040  # exact (7! <= 9999)
    assert (a.pairs.freq_rare < a.pairs.freq_common).all()


def test_asymmetry_ignores_symmetric_confusion():
    labels = [f"k{i}" for i in range(7)]
    freq = pd.Series(np.arange(1, 8), index=labels, dtype=float)
    rng = np.random.default_rng(1)
    off = rng.integers(0, 6, (7, 7))
    mat = np.triu(off, 1) + np.triu(off, 1).T
    mat = mat + np.diag(60 - mat.sum(axis=1))  # balanced test set: equal row totals, symmetric confusions
    a = M.asymmetry(_cm(mat, labels), freq)
    assert a.wilcoxon.pvalue > 0.2 and a.sign.pvalue > 0.2 and a.permutation.pvalue > 0.2
    # all-diagonal: nothing to test
    z = M.asymmetry(_cm(np.eye(7) * 10, labels), freq)
    assert z.wilcoxon.pvalue == 1.0 and z.rare_to_common == 0
    with pytest.raises(ValueError, match="no frequency"):
        M.asymmetry(_cm(mat, labels), freq.iloc[1:])


def test_asymmetry_uses_other_column_in_row_totals():
    labels = ["a", "b", "c"]
    cm = M.confusion(run_table(["a", "a", "b", "c"], ["b", None, "b", "c"], ["ok", "failed", "ok", "ok"]),
                     labels, normalize=None)
    a = M.asymmetry(cm, pd.Series({"a": 1.0, "b": 2.0, "c": 3.0}), n_permutations=100)
    row = a.pairs.set_index(["rare", "common"]).loc[("a", "b")]
    assert row.rare_to_common == pytest.approx(0.5)  # 1 of 2 'a' clips went to 'b'; the other failed


def test_correlations_layout_and_values():
    rng = np.random.default_rng(0)
    x = rng.random(11)
    t = pd.DataFrame({"en": x, "f1": x * 2 + rng.normal(0, 0.1, 11), "noise": rng.random(11)})
    c = M.correlations(t)
    assert len(c) == 9 and set(c.columns) >= {"row", "col", "r", "p", "spearman_rho", "spearman_p", "n"}
    diag = c[c.row == c.col]
    assert (diag.r == 1).all() and diag.p.isna().all()
    r = c[(c.row == "en") & (c.col == "f1")].iloc[0]
    ref = stats.pearsonr(t.en, t.f1)
    assert r.r == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    assert r.spearman_rho == pytest.approx(stats.spearmanr(t.en, t.f1).statistic)
    sym = c.set_index(["row", "col"]).r
    assert sym[("en", "noise")] == pytest.approx(sym[("noise", "en")])


def test_prediction_entropy():
    e = M.prediction_entropy(["a", "b", "c", "d"] * 5, list("abcd"))
    assert e["entropy"] == pytest.approx(2.0) and e["max"] == 2.0 and e["normalized"] == pytest.approx(1)
    e = M.prediction_entropy(["a"] * 9 + [None], list("abcd"))
    assert e["entropy"] == 0 and e["n_other"] == 1 and e["counts"]["a"] == 9
    e = M.prediction_entropy(["a", "a", "b", "c"], list("abc"))
    assert e["entropy"] == pytest.approx(stats.entropy([2, 1, 1], base=2)) and e["max"] == math.log2(3)


def test_top_answer_share_and_uninformative():
    import pandas as pd

    from emoprobe import metrics

    df = pd.DataFrame({"pred": ["neutral"] * 19 + [None]})
    assert metrics.top_answer_share(df) == 0.95 and metrics.is_uninformative(df)
    df2 = pd.DataFrame({"pred": ["neutral"] * 9 + ["anger"]})
    assert metrics.top_answer_share(df2) == 0.9 and not metrics.is_uninformative(df2)


def test_answer_positions_and_share_of():
    from emoprobe import metrics as _m

    order = ["b", "a", "c"]
    assert _m.answer_positions(["a", "b", None, "x"], order).tolist() == [2, 1, 0, 0]
    per = [["a", "b"], ["b", "a"]]
    assert _m.answer_positions(["a", "a"], per).tolist() == [1, 2]
    import pytest as _pt

    with _pt.raises(ValueError):
        _m.answer_positions(["a"], [["a"], ["a"]])


def test_asymmetry_pairs_is_the_table_of_asymmetry():
    import numpy as np
    import pandas as pd

    from emoprobe import metrics

    rng = np.random.default_rng(3)
    labs = [f"c{i}" for i in range(5)]
    cm = pd.DataFrame(rng.integers(0, 9, (5, 5)), index=labs, columns=labs)
    freq = pd.Series([5.0, 4, 3, 2, 1], index=labs)
    pairs, rates, f = metrics.asymmetry_pairs(cm, freq)
    full = metrics.asymmetry(cm, freq, n_permutations=50)
    pd.testing.assert_frame_equal(pairs, full.pairs)
    assert rates.shape == (5, 5) and np.all(np.diag(rates) == 0) and list(f) == list(freq)


def test_macro_f1_score_equals_sklearn_and_bootstrap_ignores_storage():
    """The bincount macro-F1 gives sklearn's numbers exactly; a bootstrap over Arrow-backed string columns gives
    the interval it gives over plain object columns (the speed-ups change no number)."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    from emoprobe import labels, metrics

    lab = list(labels.MAFW)
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 150))
        yt = rng.choice(lab[: int(rng.integers(1, 12))], n)
        yp = rng.choice(lab + [None, "other", float("nan")], n)
        idx = {x: i for i, x in enumerate(lab)}
        ref = precision_recall_fscore_support([idx[y] for y in yt],
                                              [idx.get(y, -1) if isinstance(y, str) else -1 for y in yp],
                                              labels=list(range(len(lab))), zero_division=0)[2].mean()
        assert metrics.macro_f1_score(yt, yp, lab) == ref
    d = pd.DataFrame({"label": np.repeat(lab, 9), "pred": rng.choice(lab + [None], 99)})
    arrow = d.astype({"label": "string[pyarrow]", "pred": "string[pyarrow]"})
    obj = d.astype(object)
    f = lambda x: metrics.macro_f1(x, lab)  # noqa: E731
    assert metrics.bootstrap_ci(arrow, f, n_boot=200) == metrics.bootstrap_ci(obj, f, n_boot=200)
