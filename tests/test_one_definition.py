"""Conventions defined once and re-exported where older code imports them (issue 13 housekeeping)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score

from emoprobe import errors, metrics, sampling


def test_data_and_sampling_share_one_error_type_without_an_import_loop():
    # a fresh interpreter: importing sampling must not import data (the loop issue 13 removed)
    code = "import sys, emoprobe.sampling; print('emoprobe.data' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
    from emoprobe import data

    assert data.DataError is errors.DataError is sampling.DataError
    assert data.IMAGE_SUFFIXES is sampling.IMAGE_SUFFIXES


def test_sampled_fps_convention_is_one_function():
    from emoprobe import hf, train_data

    assert hf.sampling_fps is sampling.sampled_fps and train_data.video_fps is sampling.sampled_fps
    assert sampling.sampled_fps(np.arange(5) / 5.0) == pytest.approx(5.0)
    assert sampling.sampled_fps([0.0]) == 1.0 and sampling.sampled_fps([0.0, 0.0]) == 1.0
    # the median step, not the mean: one long gap does not change the rate
    assert sampling.sampled_fps([0, 0.5, 1.0, 1.5, 9.0]) == pytest.approx(2.0)


def test_oom_detection_is_one_function():
    from emoprobe import hf, run

    assert run.is_oom is errors.is_oom and hf._is_oom is errors.is_oom
    assert errors.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert errors.is_oom(MemoryError("out of memory"))
    assert not errors.is_oom(RuntimeError("shape mismatch")) and not errors.is_oom(ValueError("out of memory"))


def test_macro_f1_score_matches_sklearn_and_counts_missing_predictions_wrong():
    labels = ["a", "b", "c"]
    y = ["a", "a", "b", "b", "c", "c"]
    p = ["a", "b", "b", None, "x", "c"]
    want = f1_score(y, [q if q in labels else "<other>" for q in p], labels=labels, average="macro", zero_division=0)
    assert metrics.macro_f1_score(y, p, labels) == pytest.approx(want)
    assert metrics.macro_f1_score(y, y, labels) == 1.0
    # class indices with -1 / None for unanswered (training's validation) give the same number
    idx = {lab: i for i, lab in enumerate(labels)}
    yi, pi = [idx[v] for v in y], [idx.get(v, -1) if v else None for v in p]
    assert metrics.macro_f1_score(yi, pi, range(3)) == pytest.approx(want)
    with pytest.raises(ValueError, match="predictions"):
        metrics.macro_f1_score(y, p[:-1], labels)


def test_train_validation_f1_is_the_metrics_one():
    from emoprobe import train_loops

    assert train_loops.macro_f1([0, 1, 2, 2], [0, 1, 1, None], 3) == pytest.approx(
        metrics.macro_f1_score([0, 1, 2, 2], [0, 1, 1, None], range(3)))
