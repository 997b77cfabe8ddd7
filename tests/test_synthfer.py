"""SynthFER: determinism, splits, micro-events, ground truth, AUs that move pixels and landmarks, bad input."""
from __future__ import annotations

import hashlib
import math
import os

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from emoprobe import labels, synthfer

# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def _decode(path):
    import decord

    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


@pytest.fixture(scope="module")
def small_dfew(tmp_path_factory):
    """One clip per DFEW class, seed 0, rendered twice (workers 1 and 2) and once with seed 1."""
    base = tmp_path_factory.mktemp("sf")
    a = synthfer.generate(base / "a", "dfew", "test", n_per_class=1, seed=0, workers=1, micro_share=1.0)
    b = synthfer.generate(base / "b", "dfew", "test", n_per_class=1, seed=0, workers=2, micro_share=1.0)
    c = synthfer.generate(base / "c", "dfew", "test", n_per_class=1, seed=1, workers=1, micro_share=1.0)
    return a, b, c


def _ident(size=112, seed=11):
    return synthfer._identity(np.random.default_rng(seed), size)


def _render_aus(aus: dict, size=112, ident=None, seed=5, post=False):
    ov = {n: 0.0 for n in synthfer.AU_NAMES}
    ov.update(aus)
    return synthfer.render_clip("neutral", np.random.default_rng(seed), size, 25, identity=ident or _ident(size),
                                au_override=ov, post=post, duration_s=1.0)


# ---------------------------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_and_frames_any_workers(small_dfew):
    a, b, _ = small_dfew
    assert a.read_bytes() == b.read_bytes()          # manifest bytes (incl. sha256 of every mp4)
    da, db = pd.read_csv(a), pd.read_csv(b)
    for pa, pb, sha in zip(da["path"], db["path"], da["sha256"]):
        ba, bb = (a.parent / pa).read_bytes(), (b.parent / pb).read_bytes()
        assert ba == bb
        assert hashlib.sha256(ba).hexdigest() == sha
    fa, fb = _decode(a.parent / da["path"][0]), _decode(b.parent / db["path"][0])
    assert fa.shape[0] == da["n_frames"][0] and np.array_equal(fa, fb)


def test_different_seed_differs(small_dfew):
    a, _, c = small_dfew
    da, dc = pd.read_csv(a), pd.read_csv(c)
    assert set(da["sha256"]).isdisjoint(set(dc["sha256"]))
    assert list(da["identity"]) != list(dc["identity"])


def test_render_clip_is_pure():
    f1, g1 = synthfer.render_clip("fear", np.random.default_rng(3), 112, 25)
    f2, g2 = synthfer.render_clip("fear", np.random.default_rng(3), 112, 25)
    assert np.array_equal(f1, f2) and np.array_equal(g1["au"], g2["au"])
    assert f1.dtype == np.uint8 and f1.shape[1:] == (112, 112, 3)


# ---------------------------------------------------------------------------------------------------------------
# manifest, ground truth, splits
# ---------------------------------------------------------------------------------------------------------------


def test_manifest_columns_and_gt_shapes(small_dfew):
    a, _, _ = small_dfew
    df = synthfer.read_manifest(a)
    for col in ("clip_id", "path", "label", "split", "label_set", "duration_s", "fps", "n_frames", "size",
                "order_dependent", "micro", "micro_onset_s", "micro_offset_s", "identity", "seed", "sha256"):
        assert col in df.columns
    assert sorted(df["label"]) == sorted(labels.DFEW)
    assert (df["split"] == "test").all() and (df["label_set"] == "dfew").all()
    for _, row in df.iterrows():
        assert os.path.isabs(row["path"]) and os.path.exists(row["path"])
        assert 2.0 <= row["duration_s"] <= 4.0 + 1e-9
        gt = synthfer.load_gt(row)
        T = int(row["n_frames"])
        assert gt["au"].shape == (T, len(synthfer.AU_NAMES)) and gt["au"].dtype == np.float32
        assert gt["au"].min() >= 0 and gt["au"].max() <= 1
        assert gt["landmarks"].shape == (T, len(synthfer.LANDMARK_NAMES), 2)
        assert gt["box"].shape == (T, 4) and gt["t"].shape == (T,) and gt["head"].shape == (T, 3)
        assert np.allclose(np.diff(gt["t"]), 1 / 25, atol=1e-6)
        assert gt["au_names"] == list(synthfer.AU_NAMES)
        # landmarks inside their face box (box covers the face outline and the forehead)
        lm = gt["landmarks"]
        assert (lm[..., 0] >= gt["box"][:, None, 0] - 1).all() and (lm[..., 0] <= gt["box"][:, None, 2] + 1).all()
        json_ident = row["identity"]
        assert "skin" in json_ident and "crf" in json_ident


def test_test_split_is_balanced():
    assert synthfer.class_counts("mafw", "test") == {k: 45 for k in labels.MAFW}
    assert synthfer.class_counts("dfew", "test") == {k: 100 for k in labels.DFEW}
    assert synthfer.class_counts("mafw", "test", n_per_class=3) == {k: 3 for k in labels.MAFW}


def _largest_remainder_reference(props, n):
    quotas = {k: p * n for k, p in props.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    left = n - sum(counts.values())
    for k in sorted(props, key=lambda k: (-(quotas[k] - counts[k]), list(props).index(k)))[:left]:
        counts[k] += 1
    return counts


@pytest.mark.parametrize("label_set,n", [("mafw", 3000), ("mafw", 137), ("dfew", 3000), ("dfew", 250)])
def test_train_split_follows_proportions(label_set, n):
    props = synthfer.TRAIN_PROPORTIONS[label_set]
    assert abs(sum(props.values()) - 1) < 1e-12 and list(props) == list(labels.get(label_set))
    counts = synthfer.class_counts(label_set, "train", n_total=n)
    assert sum(counts.values()) == n and min(counts.values()) >= 1
    ref = _largest_remainder_reference(props, n)
    if min(ref.values()) >= 1:
        assert counts == ref
    assert max(counts, key=counts.get) == max(props, key=props.get)      # long-tailed like the real data


def test_train_split_every_class_at_least_one():
    counts = synthfer.class_counts("dfew", "train", n_total=7)
    assert counts == {k: 1 for k in labels.DFEW}
    counts = synthfer.class_counts("dfew", "train", n_total=20)   # disgust's quota < 1 still gets one
    assert counts["disgust"] >= 1 and sum(counts.values()) == 20


def test_generated_train_counts(tmp_path):
    m = synthfer.generate(tmp_path, "dfew", "train", n_total=9, seed=2)
    got = pd.read_csv(m)["label"].value_counts().to_dict()
    assert got == {k: v for k, v in synthfer.class_counts("dfew", "train", n_total=9).items()}
    assert (pd.read_csv(m)["split"] == "train").all()


# ---------------------------------------------------------------------------------------------------------------
# micro-expressions and order
# ---------------------------------------------------------------------------------------------------------------


def test_micro_events_within_bounds(small_dfew):
    a, _, _ = small_dfew
    df = pd.read_csv(a)
    micro = df[df["micro"]]
    assert set(micro["label"]) == set(labels.DFEW) - {"neutral"}   # micro_share=1: every non-neutral clip
    dur = micro["micro_offset_s"] - micro["micro_onset_s"]
    assert ((dur >= 0.25 - 1e-6) & (dur <= 0.5 + 1e-6)).all()
    assert (micro["micro_onset_s"] > 0).all() and (micro["micro_offset_s"] < micro["duration_s"]).all()
    assert df.loc[~df["micro"], "micro_onset_s"].isna().all()
    assert not micro["order_dependent"].any()


@pytest.mark.parametrize("label", ["anger", "contempt", "disappointment", "helplessness", "surprise"])
def test_micro_expression_peak_inside_event(label):
    for s in range(3):
        _, gt = synthfer.render_clip(label, np.random.default_rng(100 + s), 112, 25, micro=True)
        on, off = gt["micro_onset_s"], gt["micro_offset_s"]
        assert 0.25 - 1e-9 <= off - on <= 0.5 + 1e-9 and 0 < on and off < gt["duration_s"]
        emo = gt["au_emotion"]
        t = gt["t"]
        outside = (t < on - 0.04) | (t > off + 0.04)
        # outside the event only the (weak) mask may be present; the decisive AUs peak inside
        mask_aus = [synthfer.AU_NAMES.index(a) for a in ("AU12", "AU25")]
        other = np.delete(emo, mask_aus, axis=1)
        assert other[outside].max(initial=0) < 1e-6
        assert emo[~outside].max() > 0.2


def test_micro_share_rounds_per_class(tmp_path):
    plan = synthfer._plan("mafw", "test", synthfer.class_counts("mafw", "test", 8), 0, 0.25)
    df = pd.DataFrame(plan)
    per = df.groupby("label")["micro"].sum()
    assert per["neutral"] == 0 and (per.drop("neutral") == 2).all()


def test_order_dependent_is_mirror_of_another_class():
    assert synthfer.order_dependent("mafw", "disappointment", "hope_falls")
    assert synthfer.order_dependent("mafw", "happiness", "cheered_up")
    assert synthfer.order_dependent("mafw", "helplessness", "appeal_collapse")
    assert not synthfer.order_dependent("mafw", "sadness", "classic")
    assert synthfer.order_dependent("dfew", "sad", "smile_fades")
    # the same frames in the reverse order are a different class
    f_hope = synthfer.RECIPES["disappointment"]["variants"]["hope_falls"]["phases"]
    f_cheer = synthfer.RECIPES["happiness"]["variants"]["cheered_up"]["phases"]
    assert f_hope == f_cheer[::-1]
    tab = synthfer.recipes_table("mafw")
    assert set(tab["label"]) == set(labels.MAFW) and tab["note"].str.len().min() > 40


def test_two_phase_clip_has_phase_order():
    _, gt = synthfer.render_clip("disappointment", np.random.default_rng(0), 112, 25, variant="hope_falls")
    au, t = gt["au_emotion"], gt["t"]
    i12, i15 = synthfer.AU_NAMES.index("AU12"), synthfer.AU_NAMES.index("AU15")
    assert gt["order_dependent"]
    assert t[np.argmax(au[:, i12])] < t[np.argmax(au[:, i15])]     # smile first, then the corners fall


# ---------------------------------------------------------------------------------------------------------------
# AUs change pixels and landmarks
# ---------------------------------------------------------------------------------------------------------------


def _lm(gt, name):
    return gt["landmarks"][0, synthfer.LANDMARK_NAMES.index(name)]


def test_au12_changes_pixels_around_mouth_only():
    ident = _ident()
    f0, g0 = _render_aus({}, ident=ident)
    f1, g1 = _render_aus({"AU12": 1.0}, ident=ident)
    d = np.abs(f0[0].astype(int) - f1[0].astype(int)).sum(-1)
    lc, rc = _lm(g0, "mouth_left_corner"), _lm(g0, "mouth_right_corner")
    x0, x1 = int(min(lc[0], rc[0])) - 8, int(max(lc[0], rc[0])) + 8
    y0, y1 = int(min(lc[1], rc[1])) - 10, int(max(lc[1], rc[1])) + 8
    assert d[y0:y1, x0:x1].sum() > 500
    assert d[:20, :].sum() == 0                # the top of the image (hair/background) does not change
    # the corners rise (y down) and move outwards
    assert _lm(g1, "mouth_left_corner")[1] < lc[1] - 2 and _lm(g1, "mouth_right_corner")[1] < rc[1] - 2
    assert _lm(g1, "mouth_right_corner")[0] - _lm(g1, "mouth_left_corner")[0] > rc[0] - lc[0] + 2


@pytest.mark.parametrize("au,landmark,axis,sign", [
    ("AU1", "brow_left_inner", 1, -1), ("AU2", "brow_right_outer", 1, -1), ("AU4", "brow_right_inner", 1, +1),
    ("AU15", "mouth_left_corner", 1, +1), ("AU26", "chin", 1, +1), ("AU26", "lower_lip_inner", 1, +1),
    ("AU20", "mouth_right_corner", 0, +1), ("AU10", "upper_lip_top", 1, -1), ("R12", "mouth_left_corner", 1, -1),
])
def test_landmarks_move_with_aus(au, landmark, axis, sign):
    ident = _ident()
    _, g0 = _render_aus({}, ident=ident)
    _, g1 = _render_aus({au: 1.0}, ident=ident)
    delta = _lm(g1, landmark)[axis] - _lm(g0, landmark)[axis]
    assert sign * delta > 1.5, (au, landmark, delta)


@pytest.mark.parametrize("au", [a for a in synthfer.AU_NAMES])
def test_every_au_changes_the_image(au):
    ident = _ident()
    f0, _ = _render_aus({}, ident=ident)
    f1, _ = _render_aus({au: 1.0}, ident=ident)
    assert np.abs(f0[0].astype(int) - f1[0].astype(int)).sum() > 300, au


def test_eye_opening_follows_lid_aus():
    ident = _ident()

    def opening(aus):
        _, g = _render_aus(aus, ident=ident)
        return _lm(g, "eye_left_bottom")[1] - _lm(g, "eye_left_top")[1]

    base = opening({})
    assert opening({"AU5": 1.0}) > base + 1
    assert opening({"AU7": 1.0}) < base - 0.5
    assert opening({"AU45": 1.0}) < 0.5


def test_unilateral_r14_is_asymmetric():
    ident = _ident()
    f0, g0 = _render_aus({}, ident=ident)
    f1, g1 = _render_aus({"R14": 1.0, "R12": 1.0}, ident=ident)
    dl = np.linalg.norm(_lm(g1, "mouth_left_corner") - _lm(g0, "mouth_left_corner"))
    dr = np.linalg.norm(_lm(g1, "mouth_right_corner") - _lm(g0, "mouth_right_corner"))
    assert dl > 2 and dr < 0.5


def test_nuisance_varies_and_is_class_independent():
    # identity / nuisance come from the clip RNG before the class enters: same rng -> same identity across classes
    _, ga = synthfer.render_clip("anger", np.random.default_rng(9), 112, 25, variant="closed", duration_s=2)
    _, gb = synthfer.render_clip("happiness", np.random.default_rng(9), 112, 25, variant="duchenne", duration_s=2)
    assert ga["identity"] == gb["identity"] and ga["nuisance"] == gb["nuisance"]
    skins = {tuple(synthfer._identity(np.random.default_rng(i), 112)["skin"]) for i in range(20)}
    assert len(skins) == 20


# ---------------------------------------------------------------------------------------------------------------
# dataset cache, figures
# ---------------------------------------------------------------------------------------------------------------


def test_dataset_caches_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPROBE_GENERATED", str(tmp_path))
    df = synthfer.dataset("dfew", "test", n_per_class=1, seed=3)
    assert len(df) == 7 and all(os.path.isabs(p) and os.path.exists(p) for p in df["path"])
    root = tmp_path / "synthfer"
    dirs = [p for p in root.iterdir()]
    assert len(dirs) == 1 and not dirs[0].name.startswith(".tmp")
    mtime = (dirs[0] / "manifest.csv").stat().st_mtime_ns
    df2 = synthfer.dataset("dfew", "test", n_per_class=1, seed=3)
    assert (dirs[0] / "manifest.csv").stat().st_mtime_ns == mtime and df2.equals(df)


def test_figures(small_dfew):
    import matplotlib.figure

    df = synthfer.read_manifest(small_dfew[0])
    fig = synthfer.preview_grid(df, n_per_class=1)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 7
    gt = synthfer.load_gt(df[df["micro"]].iloc[0])
    fig2 = synthfer.plot_timeline(gt)
    assert isinstance(fig2, matplotlib.figure.Figure)
    import matplotlib.pyplot as plt

    plt.close("all")


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    ({"label_set": "affectnet"}, "label set"),
    ({"split": "val"}, "split"),
    ({"size": 113}, "size"),
    ({"size": "112"}, "size"),
    ({"size": 32}, "size"),
    ({"fps": 0}, "fps"),
    ({"n_per_class": 0}, "n_per_class"),
    ({"split": "train", "n_total": 5}, "n_total"),
    ({"split": "train", "n_per_class": 3}, "n_per_class"),
    ({"micro_share": 1.5}, "micro_share"),
    ({"workers": 0}, "workers"),
])
def test_generate_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthfer.generate(tmp_path / "x", **kwargs)


def test_render_clip_rejects_bad_label():
    with pytest.raises(ValueError, match="label"):
        synthfer.render_clip("joy", np.random.default_rng(0))
    with pytest.raises(ValueError, match="label"):
        synthfer.render_clip("happiness", np.random.default_rng(0), label_set="dfew")   # dfew says 'happy'
    with pytest.raises(ValueError, match="micro"):
        synthfer.render_clip("neutral", np.random.default_rng(0), micro=True)


def test_load_gt_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        synthfer.load_gt(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        synthfer.load_gt(bad)
