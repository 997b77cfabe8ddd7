"""Multi-Stage Context Enrichment (chapter 05): the texts of the gaps between keyframes, and how to check them.

``run.msce`` runs MSCE (stage 1 describes each gap, stage 2 classifies keyframes interleaved with the texts;
``contexts=`` replaces stage 1 with given texts). This module makes the texts the chapter's controls need and
measures them:

* :func:`gap_windows` — per clip, the time window [keyframe j, keyframe j+1) of every gap;
* :func:`oracle_texts` / :func:`moved_regions` — SynthFER ground truth per gap: the motion summary a perfect
  stage 1 would write (``captions.motion_summary``) and the face regions that moved (``captions.regions_moved``);
* :func:`stage1_texts` — the texts a model wrote in an MSCE run; :func:`deal` — texts pooled, permuted with a
  seed and dealt back so each clip keeps its number of gaps (the content control);
* :func:`region_check` / :func:`region_scores` — do the texts name the regions that moved (precision, recall
  with bootstrap intervals over clips); :func:`token_costs` — context tokens of each condition and of stage 1;
* :func:`keyframe_misses` and :func:`micro_gain_gap` — micro-expressions that fall between keyframes, and
  whether MSCE gains more accuracy on those clips than on the others.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from . import captions, metrics

SUBSETS = ("all gaps", "micro gaps")


def gap_windows(manifest: pd.DataFrame, key_fps: float = 1.0, m: int = 4) -> dict[str, list[tuple[float, float]]]:
    """Per clip id, the (start, end) source times in seconds of each gap between consecutive keyframes, as
    ``sampling.keyframes_gaps(path, key_fps, m)`` takes them."""
    from . import sampling

    out = {}
    for cid, path in zip(manifest["clip_id"].astype(str), manifest["path"]):
        keys, _ = sampling.keyframes_gaps(path, key_fps=key_fps, m=m)
        t = np.asarray(keys.t, float)
        out[cid] = [(float(a), float(b)) for a, b in zip(t[:-1], t[1:])]
    return out


def _ground_truth(manifest: pd.DataFrame) -> dict:
    from . import synthfer

    if "gt_path" not in manifest.columns or manifest["gt_path"].isna().any():
        raise ValueError("MSCE oracle texts need SynthFER ground truth (a gt_path for every clip)")
    return {str(r["clip_id"]): synthfer.load_gt(r) for r in manifest.to_dict("records")}


def oracle_texts(manifest: pd.DataFrame, windows: dict) -> dict[str, list[str]]:
    """Per clip, one ``captions.motion_summary`` of the ground truth per gap window (SynthFER only)."""
    gts = _ground_truth(manifest)
    return {cid: [captions.motion_summary(gts[cid], a, b) for a, b in windows[cid]] for cid in gts}


def moved_regions(manifest: pd.DataFrame, windows: dict) -> dict[str, list[set]]:
    """Per clip, the face regions that moved in each gap window (``captions.regions_moved``; SynthFER only)."""
    gts = _ground_truth(manifest)
    return {cid: [captions.regions_moved(gts[cid], a, b) for a, b in windows[cid]] for cid in gts}


def stage1_texts(run_df: pd.DataFrame) -> dict[str, list[str]]:
    """Per clip, the gap texts stage 1 wrote in a ``run.msce`` frame (clips whose stage 1 failed are absent)."""
    out = {}
    for cid, extra, status in zip(run_df["clip_id"].astype(str), run_df["extra"], run_df["status"]):
        ctx = json.loads(extra).get("context") if status != "failed" and isinstance(extra, str) else None
        if ctx is not None:
            out[cid] = list(ctx)
    return out


def deal(texts: dict[str, list[str]], seed: int) -> dict[str, list[str]]:
    """All gap texts pooled, permuted with ``seed`` and dealt back in the dict's clip order, each clip keeping
    its number of gaps: the same texts, attached to other clips' gaps."""
    pool = [t for c in texts for t in texts[c]]
    perm = np.random.default_rng(seed).permutation(len(pool))
    out, i = {}, 0
    for c, ts in texts.items():
        out[c] = [pool[k] for k in perm[i:i + len(ts)]]
        i += len(ts)
    return out


def keyframe_misses(manifest: pd.DataFrame, windows: dict) -> pd.Series:
    """For each micro-expression clip (``micro`` column), True when no keyframe falls inside its micro event."""
    if "micro" not in manifest.columns:
        return pd.Series(dtype=bool)
    out = {}
    for r in manifest[manifest["micro"].astype(bool)].to_dict("records"):
        w = windows[str(r["clip_id"])]
        keys = [a for a, _ in w] + ([w[-1][1]] if w else [])
        on, off = float(r["micro_onset_s"]), float(r["micro_offset_s"])
        out[str(r["clip_id"])] = not any(on <= t <= off for t in keys)
    return pd.Series(out, dtype=bool)


def region_check(manifest: pd.DataFrame, windows: dict, moved: dict, texts: dict, oracle: dict) -> pd.DataFrame:
    """One row per gap whose clip has a text for every gap: ``clip_id, label, gap, micro gap`` (the gap overlaps
    the clip's micro event), ``tp`` (regions named that moved), ``named``, ``moved`` and ``exact`` (the text
    equals the oracle text)."""
    rows = []
    for r in manifest.to_dict("records"):
        cid = str(r["clip_id"])
        if cid not in texts or len(texts[cid]) != len(windows[cid]):
            continue
        micro = bool(r.get("micro", False))
        on = float(r["micro_onset_s"]) if micro else np.nan
        off = float(r["micro_offset_s"]) if micro else np.nan
        for j, ((a, b), mv, txt) in enumerate(zip(windows[cid], moved[cid], texts[cid])):
            named = captions.regions_in_text(txt)
            rows.append({"clip_id": cid, "label": r["label"], "gap": j, "micro gap": bool(on < b and off > a),
                         "tp": len(named & mv), "named": len(named), "moved": len(mv),
                         "exact": txt.strip() == oracle[cid][j].strip()})
    return pd.DataFrame(rows, columns=["clip_id", "label", "gap", "micro gap", "tp", "named", "moved", "exact"])


def _pooled(d: pd.DataFrame, num: str, den: str) -> float:
    s = d[den].sum()
    return float(d[num].sum() / s) if s else np.nan


def region_scores(gaps: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Precision (named regions that moved / named) and recall (moved regions named / moved), pooled over gaps
    with 95% bootstrap intervals over clips (stratified by class), for all gaps and for micro gaps; ``exact``
    and ``still`` (share of gaps where nothing moved). A ratio with a zero denominator is NaN."""
    rows = {}
    for sub in SUBSETS:
        d = gaps if sub == "all gaps" else gaps[gaps["micro gap"]]
        if not len(d):
            continue
        per_clip = d.groupby(["clip_id", "label"], as_index=False)[["tp", "named", "moved"]].sum()
        row = {"n gaps": len(d)}
        for stat, den in (("precision", "named"), ("recall", "moved")):
            ci = (metrics.bootstrap_ci(per_clip, lambda x, den=den: _pooled(x, "tp", den), n_boot=n_boot, seed=seed)
                  if per_clip[den].sum() else metrics.CI(np.nan, np.nan, np.nan))
            row.update({stat: ci.point, f"{stat} CI lo": ci.lo, f"{stat} CI hi": ci.hi})
        row.update({"exact": float(d["exact"].mean()), "still": float((d["moved"] == 0).mean())})
        rows[sub] = row
    return pd.DataFrame(rows).T


def token_costs(runs: dict, msce_condition: str = "MSCE", store=None) -> pd.DataFrame:
    """Mean context per clip and condition: frames, visual and text tokens of the classifier (stage 2) as the
    backend reports them, and for ``msce_condition`` the stage-1 describe calls of all of a clip's gaps (read
    from the run store). ``runs``: {(model, condition): run frame}, e.g. ``Predictions.runs``."""
    from . import store as _store

    st = _store.open_store(store)
    rows = []
    for (model, cond), df in runs.items():
        vis = pd.to_numeric(df["n_visual_tokens"], errors="coerce").astype(float)
        txt = pd.to_numeric(df["n_text_tokens"], errors="coerce").astype(float)
        r = {"model": model, "condition": cond, "frames (stage 2)": df["n_frames"].astype(float).mean(),
             "visual tokens (stage 2)": vis.mean(), "text tokens (stage 2)": txt.mean(),
             "tokens (stage 2)": (vis + txt).mean()}
        if cond == msce_condition and df.attrs.get("run"):
            s1 = st.to_frame(run=df.attrs["run"])
            s1 = s1[s1["task"] == "describe"].copy()
            s1["clip"] = s1["clip_id"].astype(str).str.split("#gap").str[0]
            per_clip = s1.groupby("clip")[["n_visual_tokens", "n_text_tokens"]].sum().astype(float)
            r["tokens (stage 1)"] = float((per_clip["n_visual_tokens"] + per_clip["n_text_tokens"]).mean())
        rows.append(r)
    return pd.DataFrame(rows).set_index(["model", "condition"])


def micro_gain_gap(pred, model: str, base: str, cond: str) -> metrics.CI:
    """Bootstrap (over the clips of a :class:`emoprobe.chapter.Predictions` with a ``micro`` column) of
    Δaccuracy(micro clips) − Δaccuracy(other clips), Δ = ``cond`` − ``base``: positive when ``cond`` helps more
    where a micro-expression can hide between keyframes."""
    cb, cc = pred.col(model, base), pred.col(model, cond)

    def stat(d):
        hit_c, hit_b = (d[cc] == d["label"]).to_numpy(), (d[cb] == d["label"]).to_numpy()
        micro = d["micro"].astype(bool).to_numpy()
        return float((hit_c[micro].mean() - hit_b[micro].mean()) - (hit_c[~micro].mean() - hit_b[~micro].mean()))

    return pred.bootstrap(stat, cache=f"micro_gain_gap:{model}:{base}:{cond}")
