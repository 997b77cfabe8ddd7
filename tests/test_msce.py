"""emoprobe.msce: gap windows, oracle and dealt texts, the region check and the micro-expression contrast."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from emoprobe import chapter, labels, msce


@pytest.fixture(scope="module")
def synth():
    from emoprobe import data

    return data.from_spec({"name": "synthfer", "label_set": "mafw", "n_per_class": 1, "n_train": 11, "size": 112,
                           "seed": 0, "micro_share": 0.5}, "test")


def test_windows_oracle_and_moved_regions_line_up(synth):
    w = msce.gap_windows(synth, key_fps=1.0, m=4)
    assert set(w) == set(synth["clip_id"].astype(str))
    for cid, gaps in w.items():
        assert gaps and all(a < b for a, b in gaps)
        assert all(gaps[i][1] == gaps[i + 1][0] for i in range(len(gaps) - 1))   # consecutive keyframes
    oracle, moved = msce.oracle_texts(synth, w), msce.moved_regions(synth, w)
    assert all(len(oracle[c]) == len(w[c]) == len(moved[c]) for c in w)
    # the oracle text names exactly regions that moved (it is written from the same ground truth)
    gaps = msce.region_check(synth, w, moved, oracle, oracle)
    assert len(gaps) == sum(map(len, w.values())) and gaps["exact"].all()
    assert (gaps["tp"] == gaps["named"]).all()
    scores = msce.region_scores(gaps, n_boot=50)
    assert scores.loc["all gaps", "precision"] == pytest.approx(1.0) and scores.loc["all gaps", "exact"] == 1.0
    misses = msce.keyframe_misses(synth, w)
    assert len(misses) == int(synth["micro"].astype(bool).sum()) and misses.dtype == bool
    with pytest.raises(ValueError, match="ground truth"):
        msce.oracle_texts(synth.drop(columns=["gt_path"]), w)


def test_deal_keeps_counts_and_moves_texts():
    texts = {f"c{i}": [f"t{i}.{j}" for j in range(1 + i % 3)] for i in range(20)}
    dealt = msce.deal(texts, seed=0)
    assert list(dealt) == list(texts) and all(len(dealt[c]) == len(texts[c]) for c in texts)
    assert sorted(sum(dealt.values(), [])) == sorted(sum(texts.values(), []))
    assert dealt != texts and msce.deal(texts, seed=0) == dealt


def test_stage1_texts_skip_failed_clips():
    df = pd.DataFrame({"clip_id": ["a", "b", "c"], "status": ["ok", "failed", "unparsed"],
                       "extra": [json.dumps({"context": ["x", "y"]}), None, json.dumps({"context": ["z"]})]})
    assert msce.stage1_texts(df) == {"a": ["x", "y"], "c": ["z"]}


def test_region_scores_count_misses():
    gaps = pd.DataFrame({"clip_id": ["a", "a", "b"], "label": ["anger", "anger", "fear"], "gap": [0, 1, 0],
                         "micro gap": [True, False, False], "tp": [1, 0, 2], "named": [2, 1, 2],
                         "moved": [1, 0, 4], "exact": [False, False, True]})
    s = msce.region_scores(gaps, n_boot=20)
    assert s.loc["all gaps", "precision"] == pytest.approx(3 / 5)
    assert s.loc["all gaps", "recall"] == pytest.approx(3 / 5)
    assert s.loc["micro gaps", "recall"] == pytest.approx(1.0) and s.loc["all gaps", "still"] == pytest.approx(1 / 3)


def test_micro_gain_gap_sees_a_gain_only_on_micro_clips():
    labs = list(labels.MAFW)
    n = 44
    man = pd.DataFrame({"clip_id": [f"c{i:02d}" for i in range(n)], "label": [labs[i % 11] for i in range(n)],
                        "micro": [i % 2 == 0 for i in range(n)]})
    wrong = [labs[(i + 1) % 11] for i in range(n)]
    right = list(man["label"])
    msce_pred = [right[i] if man["micro"][i] else wrong[i] for i in range(n)]
    runs = {("M", c): pd.DataFrame({"clip_id": man["clip_id"], "label": man["label"], "pred": p, "status": "ok"})
            for c, p in (("baseline", wrong), ("MSCE", msce_pred))}
    pred = chapter.Predictions(runs, man, labs, n_boot=50)
    ci = msce.micro_gain_gap(pred, "M", "baseline", "MSCE")
    assert ci.point == pytest.approx(1.0) and ci.lo > 0.5
