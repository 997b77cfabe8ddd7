"""Profiles: deep merge of a chapter block over `common`, and the one shape of the `models` parameter."""
from __future__ import annotations

import pytest
import yaml

from emoprobe import config, models


def _write(tmp_path, data):
    p = tmp_path / "profiles.yml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_chapter_block_is_deep_merged_over_common(tmp_path):
    p = _write(tmp_path, {"profiles": {"default": {
        "common": {"seed": 0, "dataset": {"name": "synthfer", "n_per_class": 45, "size": 112}},
        "chapters": {"05_msce": {"dataset": {"limit": 5}, "n_boot": 10}}}}})
    got = config.load("05_msce", "default", path=p)
    assert got["dataset"] == {"name": "synthfer", "n_per_class": 45, "size": 112, "limit": 5}
    assert got["n_boot"] == 10 and got["seed"] == 0 and got["profile"] == "default"
    # a chapter without a block gets common unchanged, and common itself is never modified by a merge
    assert config.load("01_x", "default", path=p)["dataset"] == {"name": "synthfer", "n_per_class": 45, "size": 112}


def test_merge_replaces_lists_and_scalars_and_copies():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    out = config.merge(base, {"a": {"c": [3]}, "d": None})
    assert out == {"a": {"b": 1, "c": [3]}, "d": None}
    out["a"]["b"] = 99
    assert base["a"]["b"] == 1
    # a mapping naming another dataset replaces the block whole (no MAFW `root` left in a SynthFER spec)
    mafw = {"dataset": {"name": "mafw", "root": "/data/MAFW", "fold": 1, "n_per_class": 45}}
    got = config.merge(mafw, {"dataset": {"name": "synthfer", "n_per_class": 45}})
    assert got["dataset"] == {"name": "synthfer", "n_per_class": 45}


def test_yaml_anchors_in_the_repository_profiles_resolve():
    data = config.read()
    for prof in config.PROFILES:
        for ch, block in (data["profiles"][prof].get("chapters") or {}).items():
            if block and "models" in block:
                for spec in config.model_specs(block["models"]):
                    assert spec["name"] and spec["model"], (prof, ch, spec)


def test_model_specs_accepts_both_shapes():
    a = {"name": "A", "backend": "hf", "model": "m/a"}
    b = {"backend": "vision", "model": "m/b"}
    assert config.model_specs([a, b]) == [a, {**b, "name": "m/b"}]
    got = config.model_specs({"vlm": a, "others": [b], "vision": None})
    assert [(s["role"], s["name"]) for s in got] == [("vlm", "A"), ("others", "m/b")]
    assert "role" not in a  # inputs are not modified
    assert config.model_specs(None) == []
    with pytest.raises(ValueError, match="model"):
        config.model_specs([{"name": "no model key"}])
    with pytest.raises(ValueError, match="list of model specs"):
        config.model_specs("data/models/microvlm")


def test_role_and_name_are_not_backend_settings():
    spec = models.resolve({"name": "A", "role": "vlm", "backend": "hf", "model": "x/y"})
    assert spec == {"backend": "hf", "model": "x/y"}


def test_readme_manifest_spec_is_what_the_code_reads(tmp_path):
    """The README's `{name: manifest, ...}` example uses the key data.from_spec reads (issue 13: was `path`)."""
    import re
    from pathlib import Path

    import pandas as pd

    from emoprobe import data

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"`(\{name: manifest,[^`]*\})`", readme)
    assert m, "README documents the manifest dataset spec"
    spec = yaml.safe_load(m.group(1))
    (tmp_path / "a.mp4").write_bytes(b"x")
    pd.DataFrame({"path": ["a.mp4"], "label": ["fear"], "split": ["test"]}).to_csv(tmp_path / "my.csv", index=False)
    spec = {**spec, "csv": str(tmp_path / "my.csv")} if "csv" in spec else spec
    df = data.from_spec(spec, "test")
    assert list(df["label"]) == ["fear"]
    with pytest.raises(ValueError, match="`csv`"):
        data.from_spec({"name": "manifest", "label_set": "mafw"}, "test")
