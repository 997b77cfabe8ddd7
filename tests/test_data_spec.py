"""data.from_spec: a profile's `dataset` entry -> the manifest a chapter evaluates on."""
from __future__ import annotations

import pandas as pd
import pytest

from emoprobe import data, labels


def test_synthfer_spec_balanced_test_and_limit():
    spec = {"name": "synthfer", "label_set": "mafw", "n_per_class": 2, "n_train": 22, "size": 112, "seed": 0}
    test = data.from_spec(spec, "test")
    assert len(test) == 22 and set(test["label"]) == set(labels.MAFW)
    assert (test["label"].value_counts() == 2).all()
    one = data.from_spec({**spec, "limit": 1}, "test")
    assert len(one) == 11 and (one["label"].value_counts() == 1).all()
    assert set(one["clip_id"]) <= set(test["clip_id"])
    # the train split keeps its long-tailed distribution whatever the evaluation subset
    assert len(data.from_spec({**spec, "limit": 1}, "train")) == len(data.from_spec(spec, "train")) == 22


def test_unknown_names_and_missing_root_are_clear():
    with pytest.raises(ValueError, match="unknown dataset name"):
        data.from_spec({"name": "affectnet"})
    with pytest.raises(ValueError, match="needs `root`"):
        data.from_spec({"name": "mafw"})
    with pytest.raises(ValueError, match="split must be"):
        data.from_spec({"name": "synthfer"}, "val")


def test_manifest_spec_filters_split(tmp_path):
    vid = tmp_path / "a.mp4"
    vid.write_bytes(b"x")
    pd.DataFrame({"path": ["a.mp4", "a.mp4"], "label": ["fear", "anger"], "split": ["test", "train"],
                  "clip_id": ["c1", "c2"]}).to_csv(tmp_path / "m.csv", index=False)
    df = data.from_spec({"name": "manifest", "csv": str(tmp_path / "m.csv"), "label_set": "mafw"}, "test")
    assert list(df["clip_id"]) == ["c1"]
