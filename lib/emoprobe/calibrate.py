"""Inference-time prior correction of label scores: contextual calibration and post-hoc logit adjustment.

Both methods divide a model's label probabilities by an estimate of the prior it carries, then take the argmax:

    s_y(x) = log p(y | x) − τ · log π_y            ŷ(x) = argmax_y s_y(x)

* **Contextual calibration** (Zhao et al. 2021, "Calibrate before use"): π is the model's own probability vector on
  *content-free* inputs (there: "N/A", "", "[MASK]"; for video: a blank grey clip, noise clips), averaged. Their
  diagonal affine map W = diag(π)⁻¹, b = 0 gives q ∝ p / π, i.e. τ = 1 above.
* **Post-hoc logit adjustment** (Menon et al. 2021, Eq. 9): π is the training label prior and τ a temperature
  (τ = 1 is the Bayes-optimal correction for the balanced error when p(y | x) is calibrated).

With τ = 1 the two differ only in *where π comes from*; the arithmetic is the same, and it lives here once.
No training; the test labels are never used.

Run tables come from ``emoprobe.run.classify(..., score=True)``: column ``scores`` holds a JSON object (or dict)
label -> probability per clip, None where the backend gave none (failed rows).
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

EPS = 1e-12  # floor for probabilities before the logarithm (a label with probability 0 stays last)


def _as_dict(x) -> dict | None:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return None
    if isinstance(x, Mapping):
        return dict(x)
    if isinstance(x, str):
        d = json.loads(x)
        if d is None:
            return None
        if not isinstance(d, dict):
            raise ValueError(f"scores: expected a JSON object label -> probability, got {x[:80]!r}")
        return d
    raise TypeError(f"scores: expected a dict, a JSON string or None, got {type(x).__name__}")


def score_matrix(scores: Sequence | pd.Series, labels: Sequence[str]) -> np.ndarray:
    """(N, K) array of probabilities over ``labels`` from a sequence of score dicts / JSON strings.

    Rows without scores are NaN. Each row is renormalised over ``labels`` (backends give probabilities over
    the requested labels; renormalising only removes rounding). A row that lacks one of ``labels`` or has a
    negative or non-finite value raises ValueError naming the row."""
    labels = list(labels)
    if not labels:
        raise ValueError("score_matrix: empty label list")
    vals = list(scores)
    out = np.full((len(vals), len(labels)), np.nan)
    for i, x in enumerate(vals):
        d = _as_dict(x)
        if d is None:
            continue
        missing = [l for l in labels if l not in d]
        if missing:
            raise ValueError(f"scores row {i}: no probability for {missing} (has {sorted(d)})")
        row = np.array([float(d[l]) for l in labels])
        if not np.all(np.isfinite(row)) or (row < 0).any():
            raise ValueError(f"scores row {i}: probabilities must be finite and >= 0, got {row.tolist()}")
        tot = row.sum()
        if tot <= 0:
            raise ValueError(f"scores row {i}: probabilities sum to {tot}")
        out[i] = row / tot
    return out


def prior(probs: np.ndarray | Sequence, labels: Sequence[str] | None = None) -> pd.Series | np.ndarray:
    """Mean probability vector over the rows that have scores (NaN rows skipped), renormalised to sum 1.

    With ``labels`` a Series indexed by them (the content-free prior of contextual calibration)."""
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"prior: expected an (N, K) array, got shape {p.shape}")
    ok = ~np.isnan(p).any(axis=1)
    if not ok.any():
        raise ValueError("prior: no row has scores")
    m = p[ok].mean(axis=0)
    m = m / m.sum()
    return pd.Series(m, index=list(labels), name="prior") if labels is not None else m


def label_prior(labels_seen: Sequence[str], labels: Sequence[str], smoothing: float = 1.0) -> pd.Series:
    """Class prior from training labels (logit adjustment), with additive ``smoothing`` so no class has π = 0."""
    labels = list(labels)
    counts = pd.Series(list(labels_seen), dtype=object).value_counts().reindex(labels, fill_value=0).astype(float)
    unknown = set(labels_seen) - set(labels)
    if unknown:
        raise ValueError(f"label_prior: labels {sorted(map(str, unknown))} are not in {labels}")
    counts = counts + smoothing
    if counts.sum() <= 0:
        raise ValueError("label_prior: no labels")
    return (counts / counts.sum()).rename("prior")


def adjust(probs: np.ndarray, prior_: Sequence[float] | pd.Series, tau: float = 1.0) -> np.ndarray:
    """Adjusted log-scores s = log p − τ·log π, shape (N, K); NaN rows stay NaN. ``prior_`` must be positive."""
    p = np.asarray(probs, dtype=float)
    pi = np.asarray(prior_, dtype=float)
    if p.ndim != 2 or pi.shape != (p.shape[1],):
        raise ValueError(f"adjust: probs (N, K) and prior (K,) expected, got {p.shape} and {pi.shape}")
    if not np.all(np.isfinite(pi)) or (pi <= 0).any():
        raise ValueError(f"adjust: prior must be finite and > 0, got {pi.tolist()}")
    return np.log(np.clip(p, EPS, None)) - tau * np.log(pi)


def calibrated_probs(probs: np.ndarray, prior_, tau: float = 1.0) -> np.ndarray:
    """softmax(log p − τ·log π): for τ = 1, Zhao et al.'s q ∝ p / π."""
    s = adjust(probs, prior_, tau)
    out = np.full_like(s, np.nan)
    ok = ~np.isnan(s).any(axis=1)
    e = np.exp(s[ok] - s[ok].max(axis=1, keepdims=True))
    out[ok] = e / e.sum(axis=1, keepdims=True)
    return out


def argmax_labels(scores: np.ndarray, labels: Sequence[str]) -> list[str | None]:
    """Label of the largest score per row (first label on ties); None for NaN rows."""
    labels = list(labels)
    s = np.asarray(scores, dtype=float)
    out: list[str | None] = []
    for row in s:
        out.append(None if np.isnan(row).any() else labels[int(np.argmax(row))])
    return out


def apply(run: pd.DataFrame, labels: Sequence[str], prior_=None, tau: float = 1.0) -> pd.DataFrame:
    """A copy of a run table whose ``pred`` is the argmax of the (adjusted) label scores.

    ``prior_`` None: argmax of the raw scores (the score-based decision without any correction — the fair
    "before" for a calibration, since the generated text may differ from the argmax of the scores). Rows
    without scores keep ``pred`` = None and ``status`` "failed" (as ``emoprobe.metrics`` scores them: wrong);
    other rows get ``status`` "ok" and ``parse_method`` "scores". The original decision is kept in
    ``pred_generated``."""
    if "scores" not in run.columns:
        raise ValueError("apply: the run table has no 'scores' column (run.classify(..., score=True))")
    labels = list(labels)
    p = score_matrix(run["scores"], labels)
    s = np.log(np.clip(p, EPS, None)) if prior_ is None else adjust(p, prior_, tau)
    out = run.copy()
    if "pred" in out.columns:
        out["pred_generated"] = out["pred"]
    out["pred"] = pd.Series(argmax_labels(s, labels), index=out.index, dtype=object)
    has = ~np.isnan(p).any(axis=1)
    out["status"] = np.where(has, "ok", "failed")
    pm = out["parse_method"] if "parse_method" in out.columns else pd.Series("", index=out.index)
    out["parse_method"] = np.where(has, "scores", pm.astype(object).to_numpy())
    return out


CONTENT_FREE = ("grey", "black", "white", "noise-0", "noise-1")


def content_free_manifest(ref_path, label_set: str, fps: float = 25.0) -> pd.DataFrame:
    """Content-free clips (Zhao et al.'s "N/A" for video) of the size and length of the clip at ``ref_path``:
    a mid-grey, a black, a white and two uniform-noise clips (seeded), written once as lossless BMP frame
    folders under ``paths.cache()/content_free/<w>x<h>-<n>/``. Returns a manifest (label None, split
    "content-free") for ``run.classify(..., score=True)``; ``prior(score_matrix(run["scores"], labels))`` is
    then the model's content-free prior."""
    import cv2

    from emoprobe import data, paths

    info = data.probe(ref_path)
    w, h = int(info["width"]), int(info["height"])
    n = max(2, int(round(float(info["duration_s"]) * fps)))
    base = paths.cache() / "content_free" / f"{w}x{h}-{n}"
    rng = np.random.default_rng(0)
    plain = {"grey": 128, "black": 0, "white": 255}
    rows = []
    for name in CONTENT_FREE:
        folder = base / name
        if not (folder / f"{n - 1:05d}.bmp").exists():
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = (np.full((h, w, 3), plain[name], np.uint8) if name in plain
                       else rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                cv2.imwrite(str(folder / f"{i:05d}.bmp"), img)
        rows.append({"clip_id": f"content-free-{name}", "path": str(folder), "label": None,
                     "split": "content-free", "label_set": label_set})
    return pd.DataFrame(rows)
