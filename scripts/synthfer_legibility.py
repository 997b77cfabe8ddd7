"""How large are SynthFER's expressions? Landmark displacement at the apex, in units of the inter-ocular distance.

For every clip of a SynthFER split (ground truth only, no model): the reference frame is the clip's frame with the
lowest summed AU intensity (the most neutral), the apex the frame with the highest. Head motion is removed by a
similarity (Procrustes) alignment of the apex landmarks onto the reference on the rigid points (eye corners, nose
tip and wings); then the displacement of each expressive landmark (brows, lids, mouth, chin) is measured and
divided by the inter-ocular distance (between the eye centres, midpoints of the eye corners, at the reference).
Also: the pooled within-clip landmark spread in pixels (what stage 0 of MicroVLM regresses) and the frame size.

    python scripts/synthfer_legibility.py [--split test] [--seed 0] [--out data/benchmarks/<file>.json]

Prints per class: median over clips of the largest expressive-landmark displacement (IOD units), and the median
per region. SynthFER's rendering is not changed here; this only measures it.

``--static``: can a classifier tell the classes apart from ONE frame? Per clip the apex frame and, as a control,
the most neutral frame (lowest summed ``au``) are decoded. Two apex choices: "all_aus" = highest summed ``au``
(the choice above; it is a blink frame in ~43% of clips, since ``au`` includes the distractors) and
"emotion_aus" = highest summed ``au_emotion`` (the class's own AUs). Frames are decoded (emoprobe.sampling),
cropped to a square around the ground-truth landmarks' bounding box of that frame (side = 1.3 x the larger bbox
side, centred; padded with edge pixels where it leaves the frame), grey-scaled and resized to 48 x 48.
Trained on a train split, scored on a test split (macro-F1 over the label set, 95% bootstrap
CI stratified by class, emoprobe.metrics.macro_f1_ci):

  (a) logistic regression (scikit-learn, class_weight='balanced') on standardised HOG features (numpy, Dalal-
      Triggs layout: 8 px cells, 2 x 2-cell blocks, stride 8, 9 unsigned bins -> 900 values); C by 3-fold CV on train;
  (b) a small CNN (3 conv blocks, 1 CPU thread, fixed epochs, class-weighted loss, +-2 px shift augmentation);
  (c) logistic regression on the ground-truth landmark displacements apex - neutral of the expressive landmarks
      (brows, lids, mouth, chin; similarity-aligned on the rigid points, in IOD units): "the geometry is there";
  plus (a') logistic regression on HOG(apex) - HOG(neutral), the change a viewer of the clip could see.

    python scripts/synthfer_legibility.py --static [--train-seed 0] [--split test] [--seed 0] \
        [--extra-test-seed 4242 --extra-test-n 20] [--epochs 20,60] [--out data/benchmarks/<file>.json]

Deterministic for fixed seeds (numpy, scikit-learn, torch with one thread).

``--geometry-detail`` (ground truth only, seconds): per class, medians of named displacements (brow raise, mouth
corner, mouth opening, lower lip / chin drop, eye opening; IOD units) and mouth-width change at the apex, for
both apex choices -- the numbers compared with published measurements of real faces.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

REGIONS = {
    "brows": ["brow_left_outer", "brow_left_mid", "brow_left_inner", "brow_right_inner", "brow_right_mid",
              "brow_right_outer"],
    "lids": ["eye_left_top", "eye_left_bottom", "eye_right_top", "eye_right_bottom"],
    "mouth": ["mouth_left_corner", "mouth_right_corner", "upper_lip_top", "upper_lip_inner", "lower_lip_inner",
              "lower_lip_bottom"],
    "chin": ["chin"],
}
RIGID = ["eye_left_outer", "eye_left_inner", "eye_right_inner", "eye_right_outer", "nose_tip", "nose_left_wing",
         "nose_right_wing"]


def _align(src: np.ndarray, dst: np.ndarray, idx: list[int]) -> np.ndarray:
    """Similarity transform of ``src`` (N,2) fitted on rows ``idx`` onto ``dst`` (Umeyama), applied to all rows."""
    a, b = src[idx], dst[idx]
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    u, s, vt = np.linalg.svd(b0.T @ a0)
    d = np.sign(np.linalg.det(u @ vt))
    D = np.diag([1.0, d])
    R = u @ D @ vt
    scale = (s * np.diag(D)).sum() / (a0 ** 2).sum()
    return (src - ma) @ (scale * R).T + mb


def clip_measures(gt: dict) -> dict:
    names = list(gt["landmark_names"])
    ix = {n: i for i, n in enumerate(names)}
    lm = np.asarray(gt["landmarks"], float)
    au = np.asarray(gt["au"], float)
    tot = au.sum(1)
    r, a = int(np.argmin(tot)), int(np.argmax(tot))
    eye_l = (lm[r, ix["eye_left_outer"]] + lm[r, ix["eye_left_inner"]]) / 2
    eye_r = (lm[r, ix["eye_right_outer"]] + lm[r, ix["eye_right_inner"]]) / 2
    iod = float(np.linalg.norm(eye_l - eye_r))
    apex = _align(lm[a], lm[r], [ix[n] for n in RIGID])
    disp = np.linalg.norm(apex - lm[r], axis=1) / iod
    out = {"iod_px": iod, "max": float(max(disp[ix[n]] for ns in REGIONS.values() for n in ns))}
    for reg, ns in REGIONS.items():
        out[reg] = float(max(disp[ix[n]] for n in ns))
    within = lm - lm.mean(0, keepdims=True)
    out["within_rms_px"] = float(np.sqrt((within ** 2).sum(-1).mean()))
    return out


# ------------------------------------------------------------------------------------------------------ static mode
CROP_PX = 48
CROP_MARGIN = 1.3


def key_frames(au: np.ndarray, au_emotion: np.ndarray | None = None) -> tuple[int, int]:
    """(apex, neutral) frame indices: highest and lowest summed AU intensity of ``au`` (first one on ties).
    With ``au_emotion`` (the class's own AUs, without distractors such as blinks and talking) the apex is the
    highest sum of ``au_emotion`` instead; the neutral frame is always the lowest sum of ``au``."""
    tot = np.asarray(au, float).sum(1)
    peak = tot if au_emotion is None else np.asarray(au_emotion, float).sum(1)
    return int(np.argmax(peak)), int(np.argmin(tot))


def crop_face(frame: np.ndarray, landmarks: np.ndarray, out_px: int = CROP_PX,
              margin: float = CROP_MARGIN) -> np.ndarray:
    """Grey-scale square crop of ``frame`` (H,W,3 RGB or H,W uint8) around the bounding box of ``landmarks``
    (N,2, x right, y down): side ``margin`` x the larger bbox side, centred on the bbox; edge pixels repeat where
    the square leaves the frame. Returns uint8 (out_px, out_px)."""
    import cv2

    g = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    lo, hi = landmarks.min(0), landmarks.max(0)
    c = (lo + hi) / 2
    side = max(float((hi - lo).max()) * margin, 8.0)
    x0, y0 = int(round(c[0] - side / 2)), int(round(c[1] - side / 2))
    s = int(round(side))
    pad = max(0, -x0, -y0, x0 + s - g.shape[1], y0 + s - g.shape[0])
    if pad:
        g = cv2.copyMakeBorder(g, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    return cv2.resize(g[y0:y0 + s, x0:x0 + s], (out_px, out_px), interpolation=cv2.INTER_AREA)


def hog_features(crops: np.ndarray, cell: int = 8, bins: int = 9) -> np.ndarray:
    """HOG (Dalal & Triggs layout, numpy) of uint8 crops (n, 48, 48) -> float32 (n, 900): central-difference
    gradients, unsigned orientation in 9 bins (hard assignment, magnitude-weighted) per 8 px cell, 2 x 2-cell
    blocks at 1-cell stride, L2-Hys normalised (clip 0.2)."""
    x = np.asarray(crops, np.float32)
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    gx[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    gy[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    b = np.minimum((ang / np.pi * bins).astype(np.int64), bins - 1)
    n, h, w = x.shape
    ch, cw = h // cell, w // cell
    onehot = np.zeros((n, h, w, bins), np.float32)
    np.put_along_axis(onehot, b[..., None], mag[..., None], axis=3)
    cells = onehot[:, :ch * cell, :cw * cell].reshape(n, ch, cell, cw, cell, bins).sum((2, 4))
    blocks = np.concatenate([cells[:, :-1, :-1], cells[:, 1:, :-1], cells[:, :-1, 1:], cells[:, 1:, 1:]], axis=3)
    blocks = blocks.reshape(n, ch - 1, cw - 1, 4 * bins)

    def l2(v):
        return v / np.sqrt((v ** 2).sum(-1, keepdims=True) + 1e-6)

    blocks = l2(np.minimum(l2(blocks), 0.2))
    return blocks.reshape(n, -1).astype(np.float32)


def aligned_displacement(gt: dict, apex: int, neutral: int) -> np.ndarray:
    """Apex - neutral (x, y) of every landmark (N,2), the apex similarity-aligned on the rigid points onto the
    neutral frame, in units of the inter-ocular distance (eye-corner midpoints) at the neutral frame."""
    names = list(gt["landmark_names"])
    ix = {n: i for i, n in enumerate(names)}
    lm = np.asarray(gt["landmarks"], float)
    eye_l = (lm[neutral, ix["eye_left_outer"]] + lm[neutral, ix["eye_left_inner"]]) / 2
    eye_r = (lm[neutral, ix["eye_right_outer"]] + lm[neutral, ix["eye_right_inner"]]) / 2
    iod = float(np.linalg.norm(eye_l - eye_r))
    ap = _align(lm[apex], lm[neutral], [ix[n] for n in RIGID])
    return (ap - lm[neutral]) / iod


def geometry_features(gt: dict, apex: int, neutral: int) -> np.ndarray:
    """The expressive landmarks' (REGIONS order) rows of :func:`aligned_displacement`, flattened (34,)."""
    ix = {n: i for i, n in enumerate(gt["landmark_names"])}
    sel = [ix[n] for ns in REGIONS.values() for n in ns]
    return aligned_displacement(gt, apex, neutral)[sel].ravel().astype(np.float32)


APEX_CHOICES = ("all_aus", "emotion_aus")


def split_features(df) -> dict:
    """Per clip of a manifest: the neutral crop, and per apex choice (APEX_CHOICES: max summed ``au``, or max
    summed ``au_emotion``) the apex crop, geometry features and all landmarks' aligned displacement; uint8
    crops (n,48,48), labels, clip ids, frame indices (n, 4: apex all, apex emotion, neutral, n_frames)."""
    from emoprobe import sampling, synthfer

    out = {"neutral": [], "label": [], "clip_id": [], "frames": [], "blink_at_apex_all": []}
    for c in APEX_CHOICES:
        out.update({f"apex_{c}": [], f"geometry_{c}": [], f"disp_{c}": []})
    for _, r in df.iterrows():
        gt = synthfer.load_gt(r)
        a_all, n = key_frames(gt["au"])
        a_emo, _ = key_frames(gt["au"], gt["au_emotion"])
        fr = sampling.open_source(r["path"]).read(np.array([a_all, a_emo, n]))
        lm = np.asarray(gt["landmarks"], float)
        out["neutral"].append(crop_face(fr[2], lm[n]))
        for c, a, f in (("all_aus", a_all, fr[0]), ("emotion_aus", a_emo, fr[1])):
            out[f"apex_{c}"].append(crop_face(f, lm[a]))
            out[f"geometry_{c}"].append(geometry_features(gt, a, n))
            out[f"disp_{c}"].append(aligned_displacement(gt, a, n).astype(np.float32))
        out["label"].append(r["label"])
        out["clip_id"].append(r["clip_id"])
        out["frames"].append((a_all, a_emo, n, int(gt["n_frames"])))
        out["blink_at_apex_all"].append(float(gt["au"][a_all, list(gt["au_names"]).index("AU45")]) >= 0.5)
    return {k: np.array(v) if k in ("label", "clip_id") else np.stack(v) for k, v in out.items()}


def displacement_summary(disp: np.ndarray) -> dict:
    """Named measures (each (n,)) of aligned displacements ``disp`` (n, N, 2) in IOD units, landmark order
    LANDMARK_NAMES of synthfer: brow raise (mean of the 6 brow points, up > 0), inner-brow raise, mouth-corner
    displacement (larger of the two corners: magnitude, lateral outward, up), mouth opening change (upper-lip
    inner to lower-lip inner distance, apex - neutral), lower-lip and chin drop (down > 0), eye opening change."""
    from emoprobe.synthfer import LANDMARK_NAMES

    ix = {n: i for i, n in enumerate(LANDMARK_NAMES)}
    d = np.asarray(disp, float)
    brows = [ix[n] for n in REGIONS["brows"]]
    inner = [ix["brow_left_inner"], ix["brow_right_inner"]]
    lc, rc = d[:, ix["mouth_left_corner"]], d[:, ix["mouth_right_corner"]]
    out = {
        "brow_raise": -d[:, brows, 1].mean(1),
        "inner_brow_raise": -d[:, inner, 1].mean(1),
        "mouth_corner_abs": np.maximum(np.linalg.norm(lc, axis=1), np.linalg.norm(rc, axis=1)),
        "mouth_corner_outward": np.maximum(-lc[:, 0], rc[:, 0]),
        "mouth_corner_up": np.maximum(-lc[:, 1], -rc[:, 1]),
        "mouth_opening_change": d[:, ix["lower_lip_inner"], 1] - d[:, ix["upper_lip_inner"], 1],
        "lower_lip_drop": d[:, ix["lower_lip_bottom"], 1],
        "chin_drop": d[:, ix["chin"], 1],
        "eye_opening_change": (d[:, ix["eye_left_bottom"], 1] - d[:, ix["eye_left_top"], 1]
                               + d[:, ix["eye_right_bottom"], 1] - d[:, ix["eye_right_top"], 1]) / 2,
    }
    return out


def shape_ratios(gt: dict, apex: int, neutral: int) -> dict:
    """Ratios that need no unit: mouth width (corner to corner) at the apex over the neutral frame, minus 1; the
    neutral mouth width and the neutral inner-lip gap in IOD units; IOD in pixels."""
    ix = {n: i for i, n in enumerate(gt["landmark_names"])}
    lm = np.asarray(gt["landmarks"], float)
    eye_l = (lm[neutral, ix["eye_left_outer"]] + lm[neutral, ix["eye_left_inner"]]) / 2
    eye_r = (lm[neutral, ix["eye_right_outer"]] + lm[neutral, ix["eye_right_inner"]]) / 2
    iod = float(np.linalg.norm(eye_l - eye_r))
    ap = _align(lm[apex], lm[neutral], [ix[n] for n in RIGID])

    def width(x):
        return float(np.linalg.norm(x[ix["mouth_left_corner"]] - x[ix["mouth_right_corner"]]))

    gap = float(lm[neutral, ix["lower_lip_inner"], 1] - lm[neutral, ix["upper_lip_inner"], 1])
    return {"mouth_width_change_rel": width(ap) / width(lm[neutral]) - 1,
            "mouth_width_neutral_iod": width(lm[neutral]) / iod, "lip_gap_neutral_iod": gap / iod, "iod_px": iod}


def geometry_detail_main(a) -> int:
    """Ground truth only (no video): per class, medians over clips of displacement_summary and shape_ratios,
    for both apex choices."""
    from emoprobe import labels, synthfer

    df = synthfer.dataset("mafw", a.split, seed=a.seed)
    rows = []
    for _, r in df.iterrows():
        gt = synthfer.load_gt(r)
        a_all, n = key_frames(gt["au"])
        a_emo, _ = key_frames(gt["au"], gt["au_emotion"])
        for c, ap in (("all_aus", a_all), ("emotion_aus", a_emo)):
            m = {k: float(v[0]) for k, v in displacement_summary(aligned_displacement(gt, ap, n)[None]).items()}
            m.update(shape_ratios(gt, ap, n))
            m.update(label=r["label"], choice=c)
            rows.append(m)
    out = {"split": a.split, "seed": a.seed, "clips": len(df), "units": "IOD unless named otherwise",
           "by_apex_choice": {}}
    keys = [k for k in rows[0] if k not in ("label", "choice")]
    for c in APEX_CHOICES:
        out["by_apex_choice"][c] = {
            lab: {k: round(float(np.median([x[k] for x in rows if x["label"] == lab and x["choice"] == c])), 4)
                  for k in keys}
            for lab in labels.MAFW}
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            f.write(json.dumps(out, indent=1) + "\n")
    return 0


def fit_logreg(x_tr, y_tr, seed: int = 0):
    """Standardise + multinomial logistic regression (class_weight='balanced'); C from 3-fold CV on train."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=3000))
    gs = GridSearchCV(pipe, {"logisticregression__C": [0.001, 0.01, 0.1, 1.0]}, scoring="f1_macro",
                      cv=StratifiedKFold(3, shuffle=True, random_state=seed), n_jobs=1)
    gs.fit(x_tr, y_tr)
    return gs.best_estimator_, float(gs.best_params_["logisticregression__C"])


class _SmallCNN:  # built lazily so that importing this script does not import torch
    @staticmethod
    def make(n_classes: int):
        import torch.nn as nn

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        return nn.Sequential(block(1, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Dropout(0.3), nn.Linear(64, n_classes))


def train_cnn(x_tr: np.ndarray, y_tr: np.ndarray, n_classes: int, epochs: int = 20, seed: int = 0,
              batch: int = 64, lr: float = 2e-3):
    """Train the small CNN on uint8 crops (n,48,48) with integer labels; returns (model, per-epoch loss)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _SmallCNN.make(n_classes)
    x = torch.from_numpy(x_tr.astype(np.float32) / 255.0)[:, None]
    mu, sd = float(x.mean()), float(x.std())
    model.norm = (mu, sd)
    x = (x - mu) / sd
    y = torch.from_numpy(y_tr.astype(np.int64))
    counts = np.bincount(y_tr, minlength=n_classes).astype(np.float64)
    w = torch.tensor(len(y_tr) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(y) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    lossf = torch.nn.CrossEntropyLoss(weight=w)
    losses = []
    for _ in range(epochs):
        model.train()
        perm = rng.permutation(len(y))
        tot = 0.0
        for i in range(0, len(y), batch):
            b = perm[i:i + batch]
            xb = x[b]
            dx, dy = (int(v) for v in rng.integers(-2, 3, 2))   # same small shift for the batch
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            opt.zero_grad()
            loss = lossf(model(xb), y[b])
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(b)
        losses.append(round(tot / len(y), 4))
    model.eval()
    return model, losses


def predict_cnn(model, x_te: np.ndarray) -> np.ndarray:
    import torch

    mu, sd = model.norm
    x = (torch.from_numpy(x_te.astype(np.float32) / 255.0)[:, None] - mu) / sd
    with torch.no_grad():
        return torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)]).argmax(1).numpy()


def score(labels_true, labels_pred, names, n_boot: int = 1000) -> dict:
    import pandas as pd

    from emoprobe import metrics

    d = pd.DataFrame({"label": list(labels_true), "pred": list(labels_pred)})
    ci = metrics.macro_f1_ci(d, list(names), n_boot=n_boot, seed=0)
    per = {}
    for lab in names:
        t, p = d["label"] == lab, d["pred"] == lab
        tp = int((t & p).sum())
        per[lab] = round(2 * tp / max(int(t.sum()) + int(p.sum()), 1), 3)
    return {"macro_f1": round(ci.point, 4), "ci95": [round(ci.lo, 4), round(ci.hi, 4)],
            "accuracy": round(float((d["label"] == d["pred"]).mean()), 4), "per_class_f1": per}


def static_main(a) -> int:
    import platform
    import time

    import torch

    from emoprobe import labels, synthfer

    torch.set_num_threads(1)
    names = list(labels.get("mafw"))
    t0 = time.time()
    walls = {}
    tr_df = synthfer.dataset("mafw", "train", seed=a.train_seed)
    te_df = synthfer.dataset("mafw", a.split, seed=a.seed)
    tests = {f"{a.split}_seed{a.seed}": te_df}
    if a.extra_test_seed is not None:
        tests[f"{a.split}_seed{a.extra_test_seed}_n{a.extra_test_n}"] = synthfer.dataset(
            "mafw", a.split, seed=a.extra_test_seed, n_per_class=a.extra_test_n)
    walls["dataset_from_cache_s"] = round(time.time() - t0, 1)
    t = time.time()
    tr = split_features(tr_df)
    te = {k: split_features(v) for k, v in tests.items()}
    walls["decode_crop_s"] = round(time.time() - t, 1)
    t = time.time()
    crops = ["neutral", *(f"apex_{c}" for c in APEX_CHOICES)]
    hog_tr = {k: hog_features(tr[k]) for k in crops}
    hog_te = {s: {k: hog_features(f[k]) for k in crops} for s, f in te.items()}
    walls["hog_s"] = round(time.time() - t, 1)
    code = {n: i for i, n in enumerate(names)}
    y_tr = np.array([code[x] for x in tr["label"]])

    def feats(h, f):
        d = {"hog_neutral": h["neutral"]}
        for c in APEX_CHOICES:
            d[f"hog_apex_{c}"] = h[f"apex_{c}"]
            d[f"hog_apex_minus_neutral_{c}"] = h[f"apex_{c}"] - h["neutral"]
            d[f"geometry_apex_{c}"] = f[f"geometry_{c}"]
        return d

    feats_tr = feats(hog_tr, tr)
    feats_te = {s: feats(hog_te[s], te[s]) for s in te}
    results = {}
    for fname, xtr in feats_tr.items():
        t = time.time()
        model, c = fit_logreg(xtr, y_tr, seed=0)
        r = {"classifier": "logreg", "features": fname, "C_by_3fold_cv": c, "dim": int(xtr.shape[1]),
             "train_macro_f1": score(tr["label"], [names[i] for i in model.predict(xtr)], names, n_boot=1)["macro_f1"]}
        for s in te:
            r[s] = score(te[s]["label"], [names[i] for i in model.predict(feats_te[s][fname])], names)
        r["wall_s"] = round(time.time() - t, 1)
        results[f"logreg_{fname}"] = r
        print(f"logreg {fname}: " + ", ".join(f"{s} {r[s]['macro_f1']} {r[s]['ci95']}" for s in te), flush=True)
    for ep, frame in [(ep, frame) for ep in a.epochs for frame in crops]:
        t = time.time()
        model, losses = train_cnn(tr[frame], y_tr, len(names), epochs=ep, seed=0)
        r = {"classifier": "cnn", "features": f"crop48_{frame}", "epochs": ep, "train_loss": losses,
             "params": int(sum(p.numel() for p in model.parameters())),
             "train_macro_f1": score(tr["label"], [names[i] for i in predict_cnn(model, tr[frame])], names,
                                     n_boot=1)["macro_f1"]}
        for s in te:
            r[s] = score(te[s]["label"], [names[i] for i in predict_cnn(model, te[s][frame])], names)
        r["wall_s"] = round(time.time() - t, 1)
        results[f"cnn_{frame}_{ep}ep"] = r
        print(f"cnn {frame} {ep} epochs: " + ", ".join(f"{s} {r[s]['macro_f1']} {r[s]['ci95']}" for s in te),
              flush=True)

    # landmark detail on the main test split: per class, median over clips of named displacements (IOD units)
    first = next(iter(te.values()))
    detail = {}
    for c in APEX_CHOICES:
        detail[c] = {}
        for lab in names:
            m = first["label"] == lab
            if m.any():
                detail[c][lab] = {k: round(float(np.median(v[m])), 4)
                                  for k, v in displacement_summary(first[f"disp_{c}"]).items()}
    first = next(iter(te.values()))
    apex_pos = first["frames"][:, 0] / np.maximum(first["frames"][:, 3] - 1, 1)
    res = {
        "what": "static (single-frame) legibility of SynthFER: classifiers on one apex frame vs one neutral frame, "
                "and on ground-truth apex landmark displacement",
        "command": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/synthfer_legibility.py "
                   + " ".join(a.argv),
        "label_set": "mafw", "labels": names, "chance_macro_f1_approx": round(1 / len(names), 3),
        "train": {"split": "train", "seed": a.train_seed, "clips": len(tr_df),
                  "class_counts": {n: int((tr["label"] == n).sum()) for n in names}},
        "tests": {s: {"clips": len(te[s]["label"])} for s in te},
        "frame_choice": {"neutral": "argmin_t sum(gt['au'][t]) (as in the displacement mode)",
                         "apex_all_aus": "argmax_t sum(gt['au'][t]): all rendered AUs incl. distractors (blinks, "
                                         "talking); the displacement mode's choice and the brief's",
                         "apex_emotion_aus": "argmax_t sum(gt['au_emotion'][t]): the class's own AUs only (for "
                                             "neutral clips, all zero, so the first frame)",
                         "same_frame_share": {"apex_all_vs_emotion": round(float(np.mean(
                             first["frames"][:, 0] == first["frames"][:, 1])), 3)},
                         "apex_all_aus_is_blink_share": round(float(first["blink_at_apex_all"].mean()), 3)},
        "crop": f"grey, square around the GT landmark bbox of that frame, side {CROP_MARGIN} x larger bbox side, "
                f"resized to {CROP_PX} px (INTER_AREA); frames decoded with emoprobe.sampling.open_source",
        "features": {
            "hog": "numpy HOG (hog_features): 8 px cells, 2x2-cell blocks at 8 px stride, 9 unsigned bins, "
                   "L2-Hys; 900 values, standardised",
            "geometry": "apex - neutral (x, y) of 17 expressive landmarks (brows, lids, mouth, chin), Procrustes-"
                        "aligned on 7 rigid points, / IOD (34 values), standardised",
        },
        "logreg": "sklearn LogisticRegression(class_weight='balanced', lbfgs, max_iter=3000), C in "
                  "{0.001, 0.01, 0.1, 1} by 3-fold stratified CV (macro-F1) on train only",
        "cnn": "3 blocks (2 x conv3x3+BN+ReLU, maxpool) 16/32/64 ch, GAP, dropout 0.3, linear; AdamW lr 2e-3 "
               "one-cycle, wd 1e-4, batch 64, class-weighted CE, +-2 px shift; fixed epochs (no test-set "
               "selection); torch 1 thread",
        "ci": "95% percentile bootstrap over clips, stratified by true class, 1000 resamples, seed 0 "
              "(emoprobe.metrics.macro_f1_ci)",
        "apex_position_in_clip_median": round(float(np.median(apex_pos)), 3),
        "results": results,
        "landmark_displacement_detail": {
            "what": "test split (first listed), per class, median over clips; apex - neutral, aligned on rigid "
                    "points, IOD units; y > 0 = down in the image. mouth_corner_*: of the two corners, the larger",
            "by_apex_choice": detail},
        "wall_s": walls,
        "host": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1},
    }
    walls["total_s"] = round(time.time() - t0, 1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: {s: v[s]["macro_f1"] for s in te} for k, v in results.items()}, indent=1))
    print(json.dumps(walls))
    return 0


def main(argv=None) -> int:
    from emoprobe import labels, synthfer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--static", action="store_true", help="single-frame classifiers (see the module docstring)")
    ap.add_argument("--train-seed", type=int, default=0, help="--static: seed of the train split")
    ap.add_argument("--extra-test-seed", type=int, default=None, help="--static: a second test split's seed")
    ap.add_argument("--extra-test-n", type=int, default=20, help="--static: its clips per class")
    ap.add_argument("--epochs", default="20",
                    help="--static: CNN epochs, or a comma-separated list (one CNN per value and frame)")
    ap.add_argument("--geometry-detail", action="store_true",
                    help="ground truth only: per-class named displacements and mouth-width ratios, both apex choices")
    a = ap.parse_args(argv)
    if a.geometry_detail:
        return geometry_detail_main(a)
    if a.static:
        a.argv = list(sys.argv[1:] if argv is None else argv)
        a.epochs = [int(x) for x in str(a.epochs).split(",")]
        return static_main(a)
    df = synthfer.dataset("mafw", a.split, seed=a.seed)
    rows = []
    for _, r in df.iterrows():
        m = clip_measures(synthfer.load_gt(r))
        m["label"] = r["label"]
        rows.append(m)
    res = {"split": a.split, "seed": a.seed, "clips": len(rows), "frame_px": int(df["size"].iloc[0]),
           "median_iod_px": round(float(np.median([x["iod_px"] for x in rows])), 2),
           "median_within_clip_landmark_rms_px": round(float(np.median([x["within_rms_px"] for x in rows])), 3),
           "per_class": {}}
    for lab in labels.MAFW:
        xs = [x for x in rows if x["label"] == lab]
        if not xs:
            continue
        res["per_class"][lab] = {k: round(float(np.median([x[k] for x in xs])), 4)
                                 for k in ["max", *REGIONS]}
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            f.write(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
