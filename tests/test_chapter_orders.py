"""Chapter-layer additions for chapters 05-07: label-order designs (predict_orders), image grids, face check."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emoprobe import chapter, labels
from run_helpers import FakeBackend, manifest


def test_latin_orders_put_every_label_first_equally_often():
    labs = list(labels.MAFW)
    orders = chapter.latin_orders(labs, n_clips=110, n_sets=2, seed=0)
    assert list(orders) == ["random order 1", "random order 2"]
    for base, rot in orders.values():
        assert sorted(base) == sorted(labs)
        firsts = pd.Series([lst[0] for lst in chapter.rotated(base, rot)]).value_counts()
        assert len(firsts) == 11 and firsts.min() == firsts.max() == 10
    assert orders["random order 1"][0] != orders["random order 2"][0]
    again = chapter.latin_orders(labs, 110, 2, seed=0)
    assert all(np.array_equal(again[k][1], orders[k][1]) and again[k][0] == orders[k][0] for k in orders)
    assert chapter.rotated(["a", "b", "c"], [0, 1, 2]) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]


def test_predict_orders_runs_rotations_and_records_positions(tmp_path):
    m = manifest(tmp_path, n=6)
    fb = FakeBackend("v1")      # answers labels[(grey level // 10) % K]: a purely positional model
    fb.name = "Fake"
    s = {"sampling": {"strategy": "fps", "fps": 5}}
    orders = chapter.latin_orders(labels.MAFW, len(m), 1, seed=0)
    pred = chapter.predict_orders([fb], m, {"alphabetical": s}, orders, s, store=tmp_path / "r.sqlite", n_boot=20)
    assert pred.conditions == ["alphabetical", "random order 1"]
    pos_col = pred.col("Fake", "random order 1") + chapter.SEP + "position"
    assert pos_col in pred.wide
    # the fake model answers by position only: its answer's position is the same in every list it is shown
    alpha_pos = pred.wide[pred.col("Fake", "alphabetical")].map(lambda x: labels.MAFW.index(x) + 1)
    assert (pred.wide[pos_col].to_numpy() == alpha_pos.to_numpy()).all()
    shown = pred.shown["random order 1"]
    assert len(shown) == 6 and all(sorted(x) == sorted(labels.MAFW) for x in shown)
    with pytest.raises(ValueError, match="one rotation per clip"):
        chapter.predict_orders([fb], m, {}, {"bad": (list(labels.MAFW), np.zeros(2, int))}, s,
                               store=tmp_path / "r.sqlite")


def test_image_grid_has_one_visible_panel_per_image():
    import matplotlib.pyplot as plt

    imgs = {f"img {i}": np.full((8, 8, 3), 20 * i, np.uint8) for i in range(7)}
    fig = chapter.image_grid(imgs, ncols=4)
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 8 and len(visible) == 7
    assert [ax.get_xlabel() for ax in visible] == list(imgs)
    assert fig.get_figwidth() >= 6
    plt.close(fig)


def test_face_check_counts_frames_without_a_face(tmp_path):
    m = manifest(tmp_path, n=2)     # flat grey clips: MTCNN finds no face
    df = chapter.face_check(m, {"strategy": "fps", "fps": 5}, detector="mtcnn")
    assert list(df.columns) == ["clip_id", "frames", "found", "iou"]
    assert (df["found"] == 0).all() and (df["frames"] > 0).all() and df["iou"].isna().all()


def test_share_diff_counts_answers_in_a_set():
    labs = list(labels.MAFW)
    man = pd.DataFrame({"clip_id": [f"c{i:02d}" for i in range(22)], "label": [labs[i % 11] for i in range(22)]})
    runs = {("M", "a"): pd.DataFrame({"clip_id": man["clip_id"], "label": man["label"], "pred": "anger", "status": "ok"}),
            ("M", "b"): pd.DataFrame({"clip_id": man["clip_id"], "label": man["label"],
                                      "pred": ["anger"] * 11 + [None] * 11, "status": ["ok"] * 11 + ["unparsed"] * 11})}
    pred = chapter.Predictions(runs, man, labs, n_boot=30)
    assert chapter.share_diff(pred, "M", None, "a", {"anger"}).point == pytest.approx(1.0)
    d = chapter.share_diff(pred, "M", "a", "b", {"anger"})
    assert d.point == pytest.approx(-0.5) and d.lo <= -0.5 <= d.hi
    assert chapter.share_diff(pred, "M", None, ["a", "b"], {"anger"}).point == pytest.approx(0.75)
    with pytest.raises(KeyError, match="no column"):
        chapter.share_diff(pred, "M", None, "a", {1}, suffix=" | position")
