"""Figures of SynthFER clips for the chapters: a preview grid of apex frames and an AU timeline.

Kept apart from :mod:`emoprobe.synthfer` (the generator) on purpose: the generator's code is part of the dataset
cache key and of :func:`emoprobe.store.input_code_version`, so restyling a figure here regenerates no dataset and
invalidates no stored answer. ``synthfer.preview_grid`` / ``synthfer.plot_timeline`` forward here.
"""
from __future__ import annotations

import numpy as np

from . import labels as _labels
from .synthfer import AU_NAMES, load_gt


def _apex_index(gt: dict) -> int:
    e = np.asarray(gt["au_emotion"]).sum(1)
    return int(np.argmax(e)) if e.max() > 0 else len(e) // 2


def _read_frame(path: str, index: int) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path))
    return vr[min(index, len(vr) - 1)].asnumpy()


def preview_grid(manifest_df, n_per_class: int = 3, frame: str | int = "apex"):
    """One row per class, ``n_per_class`` clips each, showing the apex (or middle/first/index) frame."""
    import matplotlib.pyplot as plt

    df = manifest_df
    labs = [l for l in dict.fromkeys(df["label"])]
    if df.iloc[0]["label_set"] in _labels.LABEL_SETS:
        order = _labels.get(df.iloc[0]["label_set"])
        labs = [l for l in order if l in set(labs)]
    fig, axes = plt.subplots(len(labs), n_per_class, figsize=(1.3 * n_per_class + 1.2, 1.3 * len(labs)),
                             squeeze=False, layout="constrained")
    for r, lab in enumerate(labs):
        sub = df[df["label"] == lab].head(n_per_class)
        for c in range(n_per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c >= len(sub):
                continue
            row = sub.iloc[c]
            gt = load_gt(row)
            if frame == "apex":
                idx = _apex_index(gt)
            elif frame == "middle":
                idx = int(row["n_frames"]) // 2
            elif frame == "first":
                idx = 0
            elif isinstance(frame, (int, np.integer)):
                idx = int(frame)
            else:
                raise ValueError(f"frame must be 'apex', 'middle', 'first' or an int, got {frame!r}")
            ax.imshow(_read_frame(row["path"], idx))
            if c == 0:
                ax.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=8)
    return fig


def plot_timeline(gt: dict, aus: list[str] | None = None, ax=None):
    """AU intensities against time; the micro-event span shaded; expression phases as dotted lines."""
    import matplotlib.pyplot as plt

    names = list(gt.get("au_names", AU_NAMES))
    au = np.asarray(gt["au"])
    t = np.asarray(gt["t"])
    if aus is None:
        aus = [n for j, n in enumerate(names) if au[:, j].max() > 0.1]
    for n in aus:
        if n not in names:
            raise ValueError(f"unknown AU {n!r}; known: {names}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 2.6), layout="constrained")
    else:
        fig = ax.figure
    for n in aus:
        ax.plot(t, au[:, names.index(n)], label=n, lw=1.4)
    on, off = gt.get("micro_onset_s", float("nan")), gt.get("micro_offset_s", float("nan"))
    if on == on and off == off:
        ax.axvspan(on, off, color="0.5", alpha=0.25, lw=0, label="micro-event")
    for ph in gt.get("events", {}).get("phases", [])[1:] if not gt.get("micro") else []:
        ax.axvline(ph["onset_s"], color="0.3", ls=":", lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("AU intensity")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(t[0], t[-1])
    ax.legend(fontsize=7, ncol=min(6, max(1, len(aus))), loc="upper left", frameon=False)
    return fig
