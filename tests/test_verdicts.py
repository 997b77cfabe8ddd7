"""Decision rules on synthetic tables with known effects (emoprobe.verdicts + chapter.Predictions)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from emoprobe import metrics, verdicts
from emoprobe.chapter import Predictions

LABELS = ["a", "b", "c", "d", "e"]


def _run(truth: np.ndarray, acc: float, rng: np.random.Generator, base: np.ndarray | None = None,
         flip: float = 1.0) -> pd.DataFrame:
    """Predictions correct with probability ``acc`` (wrong ones uniform over the other labels). With ``base``,
    only a share ``flip`` of the clips is redrawn, the rest keeps ``base``'s answer (paired conditions)."""
    pred = np.array([t if rng.random() < acc else rng.choice([l for l in LABELS if l != t]) for t in truth],
                    dtype=object)
    if base is not None:
        keep = rng.random(len(truth)) >= flip
        pred[keep] = base[keep]
    return pd.DataFrame({"clip_id": [f"c{i:04d}" for i in range(len(truth))], "label": truth, "pred": pred,
                         "status": "ok", "cached": False})


def table(n_per_class: int, accs: dict[str, float], seed: int = 0, flip: float = 1.0, n_boot: int = 200,
          model: str = "M") -> Predictions:
    """One model, one condition per entry of ``accs`` (condition -> accuracy); conditions after the first
    share the first one's answers on a share 1 − ``flip`` of the clips."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(LABELS, n_per_class).astype(object)
    runs, base = {}, None
    for c, acc in accs.items():
        df = _run(truth, acc, rng, base=base, flip=flip)
        base = df["pred"].to_numpy() if base is None else base
        runs[(model, c)] = df
    manifest = runs[(model, next(iter(accs)))][["clip_id", "label"]]
    return Predictions(runs, manifest, LABELS, n_boot=n_boot, seed=0)


# ---------------------------------------------------------------------------------------------- number rules
def test_mde_is_2_8_standard_errors():
    se = 0.05
    z = 1.959963984540054
    assert verdicts.standard_error((-z * se, z * se)) == pytest.approx(se)
    assert verdicts.mde((-z * se, z * se)) == pytest.approx(2.8016 * se, rel=1e-3)


def test_verdict_rejects_unknown_word_and_records_json():
    with pytest.raises(ValueError, match="one of"):
        verdicts.Verdict("replicated", 0.1, (0.0, 0.2), "s", "r")
    v = verdicts.Verdict("inconclusive", float("nan"), (float("nan"), float("nan")), "s", "r")
    rec = v.record()
    assert rec["statistic"] is None and rec["word"] == "inconclusive"
    json.dumps(rec)


def test_decide_effect_gates_and_sides():
    f1_good = (0.8, 0.75, 0.85)
    # clear drop, tight interval, model far above chance
    v = verdicts.decide_effect((-0.2, -0.25, -0.15), 0.1, direction=-1, f1_ci=f1_good, k=5)
    assert v.word == verdicts.REPLICATED
    # clear absence: the interval excludes a paper-sized drop
    v = verdicts.decide_effect((0.0, -0.03, 0.03), 0.1, direction=-1, f1_ci=f1_good, k=5)
    assert v.word == verdicts.NOT_REPLICATED
    # the same clear drop, but the model is at chance -> inconclusive, and the reason says so
    v = verdicts.decide_effect((-0.2, -0.25, -0.15), 0.1, direction=-1, f1_ci=(0.22, 0.18, 0.26), k=5)
    assert v.word == verdicts.INCONCLUSIVE and "chance" in v.reason
    # too wide to detect a paper-sized effect -> inconclusive on power
    v = verdicts.decide_effect((-0.2, -0.4, -0.01), 0.1, direction=-1, f1_ci=f1_good, k=5)
    assert v.word == verdicts.INCONCLUSIVE and "detects" in v.reason
    assert v.mde > 0.1


def test_decide_null_and_margin_for_drops():
    f1_good = (0.8, 0.75, 0.85)
    assert verdicts.decide_null((0.0, -0.03, 0.03), 0.1, f1_ci=f1_good, k=5).word == verdicts.REPLICATED
    assert verdicts.decide_null((-0.12, -0.15, -0.09), 0.1, f1_ci=f1_good, k=5).word == verdicts.NOT_REPLICATED
    # room to drop: 0.05 above chance (0.2) is not enough to lose a paper-sized 0.1 drop
    v = verdicts.decide_null((0.0, -0.03, 0.03), 0.1, f1_ci=(0.3, 0.26, 0.34), k=5)
    assert v.word == verdicts.INCONCLUSIVE and "margin 0.100" in v.reason


def test_decide_bell():
    f1_good = (0.8, 0.75, 0.85)
    assert verdicts.decide_bell((0.2, 0.15, 0.25), (0.2, 0.15, 0.25), 0.1, f1_ci=f1_good, k=5).word == \
        verdicts.REPLICATED
    # no fall after the peak: excluded at paper size
    assert verdicts.decide_bell((0.2, 0.15, 0.25), (0.0, -0.03, 0.03), 0.1, f1_ci=f1_good, k=5).word == \
        verdicts.NOT_REPLICATED
    v = verdicts.decide_bell((0.2, 0.15, 0.25), (0.05, -0.2, 0.3), 0.1, f1_ci=f1_good, k=5)
    assert v.word == verdicts.INCONCLUSIVE and "fall" in v.reason


# ---------------------------------------------------------------------------------------------- table rules
def test_model_at_chance_is_inconclusive():
    pred = table(60, {"orig": 0.2, "shuf": 0.2}, seed=1)          # uniform guessing, 5 classes
    for expect in ("effect", "none"):
        v = verdicts.change(pred, "M", "orig", "shuf", 0.1, expect=expect)
        assert v.word == verdicts.INCONCLUSIVE
        assert "chance" in v.reason


def test_too_small_sample_is_inconclusive():
    pred = table(2, {"orig": 0.95, "shuf": 0.8}, seed=2)           # a paper-sized drop, 10 clips
    for expect in ("effect", "none"):
        v = verdicts.change(pred, "M", "orig", "shuf", 0.1, expect=expect)
        assert v.word == verdicts.INCONCLUSIVE, v.sentence
        assert "detects" in v.reason and v.mde > 0.1


def test_an_effect_far_beyond_paper_size_needs_no_power_gate():
    # interval entirely below −effect: the test resolved a paper-sized drop even though its MDE is larger
    v = verdicts.decide_effect((-0.31, -0.36, -0.27), 0.056, direction=-1, f1_ci=(0.6, 0.57, 0.64), k=11)
    assert v.mde > 0.056 and v.word == verdicts.REPLICATED
    v = verdicts.decide_null((-0.31, -0.36, -0.27), 0.056, f1_ci=(0.6, 0.57, 0.64), k=11)
    assert v.word == verdicts.NOT_REPLICATED
    # the same width around a small drop is still gated on power
    v = verdicts.decide_effect((-0.04, -0.085, 0.005), 0.056, direction=-1, f1_ci=(0.6, 0.57, 0.64), k=11)
    assert v.word == verdicts.INCONCLUSIVE and "detects" in v.reason


def test_clear_effect_is_replicated():
    pred = table(80, {"orig": 0.9, "shuf": 0.45}, seed=3)
    v = verdicts.change(pred, "M", "orig", "shuf", 0.1, expect="effect")
    assert v.word == verdicts.REPLICATED, v.sentence
    assert v.statistic < -0.3 and v.interval[1] < 0
    # the same data decide against a claim of "no drop"
    assert verdicts.change(pred, "M", "orig", "shuf", 0.1, expect="none").word == verdicts.NOT_REPLICATED


def test_clear_null_with_power_is_not_replicated():
    pred = table(80, {"orig": 0.85, "shuf": 0.85}, seed=4, flip=0.1)   # 10% of answers redrawn, same accuracy
    v = verdicts.change(pred, "M", "orig", "shuf", 0.15, expect="effect")
    assert v.word == verdicts.NOT_REPLICATED, v.sentence
    assert v.mde <= 0.15
    assert verdicts.change(pred, "M", "orig", "shuf", 0.15, expect="none").word == verdicts.REPLICATED


def test_bell_on_the_table_and_a_zigzag():
    pred = table(80, {"1": 0.5, "5": 0.9, "25": 0.5}, seed=5)
    assert verdicts.bell(pred, "M", "1", "5", "25", 0.1).word == verdicts.REPLICATED
    flat = table(80, {"1": 0.8, "5": 0.8, "25": 0.8}, seed=6, flip=0.1)
    assert verdicts.bell(flat, "M", "1", "5", "25", 0.1).word == verdicts.NOT_REPLICATED


def test_table_statistics_match_metrics():
    pred = table(20, {"orig": 0.7, "shuf": 0.5}, seed=7, n_boot=100)
    ci = pred.f1("M", "orig")
    ref = metrics.macro_f1_ci(pred.runs[("M", "orig")], LABELS, n_boot=100, seed=0)
    assert ci == pytest.approx(tuple(ref))
    d = pred.diff("M", "orig", "shuf")
    ref_d = metrics.paired_bootstrap_diff(pred.runs[("M", "orig")], pred.runs[("M", "shuf")],
                                          lambda x: metrics.macro_f1(x, LABELS), n_boot=100, seed=0)
    assert tuple(d) == pytest.approx(tuple(ref_d))
    assert not math.isnan(verdicts.mde(d[1:3]))


def test_an_effect_in_the_opposite_direction_settles_the_claim():
    good = (0.6, 0.57, 0.64)
    # claimed: F1 falls by >= 0.05; measured: a rise of 0.185 [0.145, 0.229] with an MDE above 0.05
    v = verdicts.decide_effect((0.185, 0.145, 0.229), 0.05, direction=-1, f1_ci=good, k=11)
    assert v.mde > 0.05 and v.word == verdicts.NOT_REPLICATED
    # claimed: no paper-sized drop; measured: a clear rise
    assert verdicts.decide_null((0.185, 0.145, 0.229), 0.05, f1_ci=good, k=11).word == verdicts.REPLICATED
    # a bell whose fall is clearly negative is settled by that side
    v = verdicts.decide_bell((0.16, 0.12, 0.19), (-0.09, -0.15, -0.03), 0.05, f1_ci=good, k=11)
    assert v.word == verdicts.NOT_REPLICATED

