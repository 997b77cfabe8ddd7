"""The chapter-facing layer: roles, predict (one load per model, every condition), the wide table."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from emoprobe import chapter, labels
from run_helpers import FakeBackend, manifest


def test_roles_reasons(tmp_path, monkeypatch):
    ok = tmp_path / "ckpt"
    ok.mkdir()
    (ok / "config.json").write_text("{}")
    (ok / "model.safetensors").write_bytes(b"x")
    monkeypatch.delenv("SOME_KEY_FOR_TEST", raising=False)
    models = {
        "vlm": {"name": "Here", "backend": "vision", "model": str(ok)},
        "gone": {"name": "Gone", "backend": "hf", "model": str(tmp_path / "nothing")},
        "unset": None,
        "api": {"name": "Remote", "backend": "openai", "model": "m", "api_key_env": "SOME_KEY_FOR_TEST"},
        "others": [{"name": "Hub", "backend": "hf", "model": "org/some-model"}],
    }
    available, skipped = chapter.roles(models, profile="smoke")
    assert list(available) == ["vlm", "Hub"]
    assert "missing" in skipped["gone"] and "nothing" in skipped["gone"]
    assert "not set for the `smoke` profile" in skipped["unset"]
    assert "SOME_KEY_FOR_TEST" in skipped["api"]
    # a list of specs: roles are display names
    available, skipped = chapter.roles([models["vlm"], models["gone"]])
    assert list(available) == ["Here"] and list(skipped) == ["Gone"]
    with pytest.raises(TypeError):
        chapter.roles("MicroVLM")


def test_predict_loads_once_and_builds_the_wide_table(tmp_path):
    m = manifest(tmp_path, n=6)
    fb = FakeBackend("v1")
    fb.name = "Fake"
    conds = {"original": {"sampling": {"strategy": "fps", "fps": 5}},
             "shuffled": {"sampling": {"strategy": "fps", "fps": 5}, "shuffle_seed": 0}}
    pred = chapter.predict([fb], m, conds, seed=0, store=tmp_path / "runs.sqlite", n_boot=50)
    assert pred.models == ["Fake"] and pred.conditions == ["original", "shuffled"]
    assert pred.k == len(labels.MAFW) and pred.chance == pytest.approx(1 / 11)
    assert list(pred.wide.columns[:2]) == ["clip_id", "label"]
    assert pred.col("Fake", "original") in pred.wide and len(pred.wide) == 6
    assert len(fb.calls) >= 2                       # both conditions ran through the one backend
    s = pred.summary()
    assert s.loc["Fake", "answers"] == 12 and s.loc["Fake", "failed"] == 0
    # rerun: everything from the store
    pred2 = chapter.predict([fb], m, conds, seed=0, store=tmp_path / "runs.sqlite", n_boot=50)
    assert pred2.summary().loc["Fake", "from run store"] == 12
    ci = pred.f1("Fake", "original")
    assert ci.lo <= ci.point <= ci.hi
    assert pred.f1("Fake", ["original", "shuffled"]).point == pytest.approx(
        np.mean([pred.f1("Fake", "original").point, pred.f1("Fake", "shuffled").point]))
    d = pred.diff("Fake", "original", "shuffled")
    assert d.lo <= d.point <= d.hi
    sub = pred.subset(pred.wide["label"] == pred.wide["label"].iloc[0])
    assert len(sub.wide) == 1 and sub.models == ["Fake"]
    with pytest.raises(KeyError, match="no predictions"):
        pred.f1("Fake", "missing")


def test_predictions_reject_runs_missing_clips():
    runs = {("M", "a"): pd.DataFrame({"clip_id": ["1"], "label": ["anger"], "pred": ["anger"], "status": "ok"})}
    man = pd.DataFrame({"clip_id": ["1", "2"], "label": ["anger", "anger"]})
    with pytest.raises(ValueError, match="lacks 1 clip"):
        chapter.Predictions(runs, man, labels.MAFW)


def test_quiet_is_idempotent_and_silences_tqdm_warning():
    chapter.quiet()
    chapter.quiet()
    from tqdm import TqdmWarning

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("default")
        chapter.quiet()
        warnings.warn("x", TqdmWarning)
    assert not [x for x in w if issubclass(x.category, TqdmWarning)]


def test_chance_line_and_legend_outside():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.2, 0.4], label="model")
    chapter.chance_line(ax, 11)
    chapter.legend_outside(ax)
    ys = [l.get_ydata()[0] for l in ax.get_lines() if l.get_label().startswith("chance")]
    assert ys == [pytest.approx(1 / 11)]
    assert ax.get_legend() is not None
    plt.close(fig)


def test_attention_event_and_join_helpers():
    import json

    run_df = pd.DataFrame({
        "clip_id": ["a", "b"], "status": ["ok", "ok"], "n_visual_tokens": [8, 8], "n_text_tokens": [8, 8],
        "extra": [json.dumps({"t": [0.0, 0.5, 1.0, 1.5], "attention": {"frames": [0.1, 0.1, 0.3, 0.1], "text": 0.4}}),
                  json.dumps({"t": [0.0, 1.0]})]})
    events = pd.DataFrame({"micro_onset_s": [0.9], "micro_offset_s": [1.1]}, index=["a"])
    att = chapter.attention(run_df, events)
    assert list(att["clip_id"]) == ["a"]                      # b recorded no attention
    assert att["visual share"].iloc[0] == pytest.approx(0.6)
    assert att["enrichment"].iloc[0] == pytest.approx((0.3 / 0.6) / 0.25)
    assert chapter.event_sampled(run_df, events).to_dict() == {"a": True}
    ci = chapter.mean_ci([1.0, 2.0, 3.0], n_boot=50)
    assert ci.lo <= 2.0 <= ci.hi
    assert np.isnan(chapter.pearson([1, 1, 1], [1, 2, 3]))

    labs = ["x", "y", "z"]
    man = pd.DataFrame({"clip_id": ["1", "2", "3"], "label": labs})
    run = lambda preds: pd.DataFrame({"clip_id": ["1", "2", "3"], "label": labs, "pred": preds, "status": "ok",
                                      "cached": False})
    p1 = chapter.Predictions({("A", "c"): run(labs)}, man, labs, n_boot=20)
    p2 = chapter.Predictions({("B", "c"): run(["x", "x", "x"])}, man, labs, n_boot=20)
    both = p1.join(p2)
    assert both.models == ["A", "B"] and both.n_boot == 20
    d = both.paired(lambda t: 0.0, lambda t: float((t[both.col("A", "c")] == t["label"]).mean()))
    assert d.point == pytest.approx(1.0)


def test_statistics_of_the_table():
    labs = ["x", "y", "z"]
    man = pd.DataFrame({"clip_id": [str(i) for i in range(6)], "label": labs * 2})
    run = pd.DataFrame({"clip_id": man["clip_id"], "label": man["label"], "pred": ["x", "x", "z", "x", "y", "z"],
                        "status": "ok", "cached": False})
    p = chapter.Predictions({("A", "test"): run}, man, labs, n_boot=20)
    freq = pd.Series([3.0, 2.0, 1.0], index=labs)
    f1 = p.per_class("A", "test")
    assert p.statistic("freq_corr", "A", freq=freq)(p.wide) == pytest.approx(chapter.pearson(freq, f1))
    assert p.statistic("tail_f1", "A", tail=["z"])(p.wide) == pytest.approx(f1["z"])
    assert p.statistic("entropy", "A")(p.wide) == pytest.approx(
        __import__("emoprobe.metrics", fromlist=["x"]).prediction_entropy(run["pred"], labs)["entropy"])
    # y -> x twice as often as x -> y: rare y (freq 2) collapses into common x (freq 3)
    assert p.statistic("asymmetry", "A", freq=freq)(p.wide) > 0
    assert p.answer_shares("A").to_dict() == pytest.approx({"x": 0.5, "y": 1 / 6, "z": 1 / 3})
    assert chapter.ci_text((0.5, 0.25, 0.75)) == "0.50 [0.25, 0.75]"
    with pytest.raises(ValueError, match="unknown statistic"):
        p.statistic("median", "A")
