"""Ground-truth views of a keyframe gap for ``scripts/microvlm_budget.py motion-probe``: what the frame sampling
leaves for any reader (AUs or landmarks at the gap's own frames, averaged in pairs as a temporal patch does)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import microvlm_budget as B  # noqa: E402


def _gt(n=10):
    t = np.arange(n) / 25.0
    au = np.zeros((n, 3), np.float32)
    au[:, 1] = np.arange(n)                       # one AU rising by 1 per frame
    head = np.zeros((n, 3), np.float32)
    names = ["eye_left_center", "eye_right_center", "chin"]
    lm = np.zeros((n, 3, 2), np.float32)
    lm[:, 1, 0] = 20.0                            # inter-ocular distance 20 px
    lm[:, 2, 1] = 40.0 + np.arange(n)             # the chin drops 1 px per frame
    return {"t": t, "au": au, "head": head, "landmarks": lm, "landmark_names": names}


def test_pairs_average_frames_like_a_temporal_patch():
    v = B.gt_gap_view(_gt(), [2, 3, 4, 5], "gt-au-pairs")
    assert v.shape == (2, 6)                      # 3 AUs + 3 head values, one row per pair
    assert v[:, 1].tolist() == [2.5, 4.5]
    f = B.gt_gap_view(_gt(), [2, 3, 4, 5], "gt-au-frames")
    assert f.shape == (4, 6) and f[:, 1].tolist() == [2, 3, 4, 5]


def test_landmarks_are_in_inter_ocular_units_and_indices_are_clipped():
    v = B.gt_gap_view(_gt(), [8, 9, 12, 15], "gt-landmarks-frames")   # past the end: the last frame
    chin_y = v.reshape(4, 3, 2)[:, 2, 1]
    assert chin_y == pytest.approx([48 / 20, 49 / 20, 49 / 20, 49 / 20])


def test_unknown_feature_sets_are_refused():
    with pytest.raises(ValueError, match="ground-truth"):
        B.gt_gap_view(_gt(), [1, 2], "tokens")
    with pytest.raises(ValueError, match="pairs or -frames"):
        B.gt_gap_view(_gt(), [1, 2], "gt-au")
