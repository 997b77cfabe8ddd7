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


def main(argv=None) -> int:
    from emoprobe import labels, synthfer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
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
