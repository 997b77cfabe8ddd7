"""emoprobe.calibrate: contextual calibration / post-hoc logit adjustment on small hand-made examples."""
import json

import numpy as np
import pandas as pd
import pytest

from emoprobe import calibrate as C
from emoprobe import metrics as M

LABELS = ["anger", "fear", "happiness"]


def test_score_matrix_reads_json_dicts_and_none():
    rows = [json.dumps({"anger": 0.2, "fear": 0.3, "happiness": 0.5}), {"anger": 1, "fear": 1, "happiness": 2},
            None, "null"]
    p = C.score_matrix(rows, LABELS)
    np.testing.assert_allclose(p[0], [0.2, 0.3, 0.5])
    np.testing.assert_allclose(p[1], [0.25, 0.25, 0.5])  # renormalised
    assert np.isnan(p[2]).all() and np.isnan(p[3]).all()


@pytest.mark.parametrize("bad, match", [({"anger": 0.5, "fear": 0.5}, "no probability"),
                                        ({"anger": -0.1, "fear": 0.5, "happiness": 0.6}, ">= 0"),
                                        ({"anger": 0, "fear": 0, "happiness": 0}, "sum to")])
def test_score_matrix_rejects_bad_rows(bad, match):
    with pytest.raises(ValueError, match=match):
        C.score_matrix([bad], LABELS)


def test_prior_is_mean_of_scored_rows():
    p = np.array([[0.6, 0.2, 0.2], [0.4, 0.4, 0.2], [np.nan] * 3])
    pi = C.prior(p, LABELS)
    np.testing.assert_allclose(pi.to_numpy(), [0.5, 0.3, 0.2])
    assert list(pi.index) == LABELS
    with pytest.raises(ValueError, match="no row"):
        C.prior(np.full((2, 3), np.nan))


def test_label_prior_counts_with_smoothing():
    pi = C.label_prior(["anger"] * 7 + ["fear"] * 1, LABELS, smoothing=1.0)
    np.testing.assert_allclose(pi.to_numpy(), [8 / 11, 2 / 11, 1 / 11])
    with pytest.raises(ValueError, match="not in"):
        C.label_prior(["joy"], LABELS)


def test_adjust_is_zhao_diag_calibration_and_menon_logit_adjustment():
    p = np.array([[0.5, 0.3, 0.2]])
    pi = np.array([0.6, 0.3, 0.1])
    # Zhao et al. 2021: W = diag(pi)^-1, b = 0  ->  q ∝ W p
    q = (p / pi) / (p / pi).sum()
    np.testing.assert_allclose(C.calibrated_probs(p, pi), q)
    # Menon et al. 2021: argmax log p - tau log pi
    np.testing.assert_allclose(C.adjust(p, pi, tau=0.5), np.log(p) - 0.5 * np.log(pi))
    assert C.argmax_labels(C.adjust(p, pi), LABELS) == ["happiness"]  # 0.2/0.1 beats 0.5/0.6 and 0.3/0.3
    assert C.argmax_labels(C.adjust(p, pi, tau=0.0), LABELS) == ["anger"]  # tau 0: no correction


def test_uniform_prior_changes_nothing():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=20)
    s = C.adjust(p, np.full(3, 1 / 3))
    assert C.argmax_labels(s, LABELS) == C.argmax_labels(np.log(p), LABELS)
    np.testing.assert_allclose(C.calibrated_probs(p, np.full(3, 1 / 3)), p)


def test_adjust_rejects_bad_prior_and_keeps_nan_rows():
    p = np.array([[0.5, 0.3, 0.2], [np.nan] * 3])
    with pytest.raises(ValueError, match="> 0"):
        C.adjust(p, [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="expected"):
        C.adjust(p, [0.5, 0.5])
    s = C.adjust(p, [0.2, 0.3, 0.5])
    assert np.isnan(s[1]).all()
    assert C.argmax_labels(s, LABELS)[1] is None
    assert np.isnan(C.calibrated_probs(p, [0.2, 0.3, 0.5])[1]).all()


def test_calibration_recovers_classes_swamped_by_a_prior():
    """A biased scorer: true-class evidence times a strong prior towards 'anger'. Dividing the prior out (estimated
    from content-free inputs, i.e. evidence-free scores) restores the true-class argmax and raises macro-F1."""
    rng = np.random.default_rng(1)
    bias = np.array([0.8, 0.1, 0.1])
    true = np.repeat(np.arange(3), 30)
    evidence = np.full((90, 3), 1.0)
    evidence[np.arange(90), true] = 3.0
    p = evidence * bias
    p /= p.sum(axis=1, keepdims=True)
    content_free = np.tile(bias, (4, 1)) * rng.uniform(0.95, 1.05, size=(4, 3))  # no evidence: prior only
    pi = C.prior(content_free, LABELS)
    run = pd.DataFrame({"clip_id": [f"c{i}" for i in range(90)], "label": [LABELS[k] for k in true],
                        "pred": ["anger"] * 90, "status": ["ok"] * 90,
                        "scores": [json.dumps(dict(zip(LABELS, row))) for row in p]})
    raw = C.apply(run, LABELS)
    cal = C.apply(run, LABELS, pi)
    assert M.report(raw, LABELS).macro_f1 < 0.2
    assert M.report(cal, LABELS).macro_f1 == pytest.approx(1.0)
    assert (cal["pred_generated"] == "anger").all() and (cal["parse_method"] == "scores").all()


def test_apply_marks_rows_without_scores_failed():
    run = pd.DataFrame({"clip_id": ["a", "b"], "label": ["fear", "anger"], "pred": ["fear", None],
                        "status": ["ok", "failed"], "parse_method": ["exact", ""],
                        "scores": [json.dumps({"anger": 0.1, "fear": 0.7, "happiness": 0.2}), None]})
    out = C.apply(run, LABELS, [0.2, 0.5, 0.3])
    assert out["pred"].tolist() == ["fear", None]
    assert out["status"].tolist() == ["ok", "failed"]
    assert out["parse_method"].tolist() == ["scores", ""]
    with pytest.raises(ValueError, match="no 'scores'"):
        C.apply(run.drop(columns="scores"), LABELS)
