"""Scores of the motion summaries (``scripts/eval_models.py``): the hit rate can be gamed by a constant answer
naming several regions; the chance-corrected scores cannot."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import eval_models as E  # noqa: E402


def _gaps(seed=0, n_clips=30, per_clip=3):
    rng = np.random.default_rng(seed)
    regs = ["eyes", "jaw", "brows", "lips"]
    p = [0.6, 0.5, 0.3, 0.2]
    truth = [{r for r, q in zip(regs, p) if rng.random() < q} for _ in range(n_clips * per_clip)]
    clip = [i // per_clip for i in range(len(truth))]
    labels = np.array(["anger", "fear"] * (n_clips // 2))
    return truth, clip, labels


def _text(regions):
    words = {"eyes": "eyes widen", "jaw": "jaw drops", "brows": "brows raise", "lips": "lips part"}
    return "; ".join(words[r] for r in sorted(regions)) or "the face stays still"


def test_a_constant_answer_hits_often_but_scores_chance():
    truth, clip, labels = _gaps()
    said = ["eyes widen; jaw drops; brows raise"] * len(truth)
    m = E.motion_scores(truth, said, clip, [0.5] * len(truth), labels, n_boot=50)
    assert m["hit_rate"] > 0.8                                    # the bar this measure was, gamed
    assert m["region_balanced_accuracy"] == pytest.approx(0.5)    # named whatever moved: no skill
    assert m["baseline_constant_sets"]["3"]["hit_rate"] >= m["hit_rate"] - 1e-9
    assert m["moving_gaps_said_still"] == 0.0


def test_a_perfect_answer_scores_one_and_a_noisy_one_in_between():
    truth, clip, labels = _gaps(1)
    perfect = E.motion_scores(truth, [_text(t) for t in truth], clip, [0.5] * len(truth), labels, n_boot=50)
    assert perfect["region_balanced_accuracy"] == pytest.approx(1.0) and perfect["region_f1"] == pytest.approx(1.0)
    assert perfect["hit_rate"] == 1.0 and perfect["still_gaps_said_still"] == 1.0
    lo, hi = perfect["region_balanced_accuracy_ci95"]
    assert lo <= 1.0 <= hi + 1e-9
    rng = np.random.default_rng(2)
    noisy = [t if rng.random() < 0.5 else set() for t in truth]         # says half the gaps right, else "still"
    m = E.motion_scores(truth, [_text(t) for t in noisy], clip, [0.5] * len(truth), labels, n_boot=50)
    assert 0.55 < m["region_balanced_accuracy"] < 0.95
    assert m["hit_rate_by_change"]["moderate"]["gaps"] == m["gaps_with_motion"]
    assert set(m["region_balanced_accuracy_per_region"]) == {"eyes", "jaw", "brows", "lips"}


def test_paired_balanced_accuracy_sees_a_better_reader():
    truth, clip, labels = _gaps(3, n_clips=40)
    rng = np.random.default_rng(4)
    half = [t if rng.random() < 0.4 else set() for t in truth]
    most = [t if rng.random() < 0.9 else set() for t in truth]
    a = {"truth": truth, "clip": clip, "labels": labels, "said": [_text(t) for t in half]}
    b = {**a, "said": [_text(t) for t in most]}
    d = E.paired_balanced_accuracy(a, b, n_boot=200)
    one = E.motion_scores(truth, a["said"], clip, [0.5] * len(truth), labels, n_boot=10)
    two = E.motion_scores(truth, b["said"], clip, [0.5] * len(truth), labels, n_boot=10)
    assert d.point == pytest.approx(two["region_balanced_accuracy"] - one["region_balanced_accuracy"], abs=1e-3)
    assert d.lo > 0
    assert E.paired_balanced_accuracy(a, a, n_boot=50).point == 0.0
    with pytest.raises(ValueError, match="same gaps"):
        E.paired_balanced_accuracy(a, {**b, "truth": truth[::-1]})
