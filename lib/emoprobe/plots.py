"""The book's one plotting style and a few figure helpers. Figures carry no titles: the book uses captions.

Every helper draws into ``ax`` when given (and returns ``ax.figure``) or makes a new figure, and returns the
``matplotlib.figure.Figure``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import labels as _labels

FIG_W = 6.4           # inches: the book's text width at 100%
DPI = 110             # on-screen (notebook / HTML)
SAVE_DPI = 200        # saved files
_PALETTE = "colorblind"


def style(font_scale: float = 1.0) -> None:
    """Apply the book's style: seaborn whitegrid, colour-blind palette, readable fonts, book dpi, no titles."""
    sns.set_theme(context="notebook", style="whitegrid", palette=_PALETTE, font_scale=font_scale)
    plt.rcParams.update({
        "figure.dpi": DPI, "savefig.dpi": SAVE_DPI, "savefig.bbox": "tight",
        "figure.figsize": (FIG_W, FIG_W * 0.62), "figure.autolayout": False, "figure.constrained_layout.use": True,
        "font.size": 10, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9,
        "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    })


def label_colors(labels: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per emotion, the same in every chapter; DFEW adjectives share their MAFW noun's colour
    ("happy" = "happiness"). Unknown labels get the remaining palette colours in order."""
    base = sns.color_palette(_PALETTE, 10) + [(0.25, 0.25, 0.25)]
    order = list(_labels.MAFW)
    out, spare = {}, iter(sns.color_palette("husl", max(1, len(labels))))
    for l in labels:
        noun = _labels.NOUN.get(l, l)
        out[l] = tuple(base[order.index(noun)]) if noun in order else tuple(next(spare))
    return out


def _ax(ax, figsize=None):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def confusion_heatmap(cm_df: pd.DataFrame, ax=None, annot: bool = True, fmt: str | None = None,
                      cmap: str = "Blues", vmax: float | None = None):
    """Heatmap of a confusion DataFrame (rows true, columns predicted; e.g. ``metrics.confusion``)."""
    n = max(cm_df.shape)
    fig, ax = _ax(ax, figsize=(0.55 * n + 2.2, 0.5 * n + 1.2))
    is_int = np.issubdtype(cm_df.to_numpy().dtype, np.integer)
    fmt = fmt or ("d" if is_int else ".2f")
    vmax = vmax if vmax is not None else (None if is_int else 1.0)
    sns.heatmap(cm_df, ax=ax, annot=annot, fmt=fmt, cmap=cmap, vmin=0, vmax=vmax, square=True, cbar=True,
                annot_kws={"fontsize": 7}, linewidths=0.3, linecolor="white")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(axis="x", rotation=60)
    ax.tick_params(axis="y", rotation=0)
    return fig


def freq_vs_f1(freq: pd.Series, f1: pd.DataFrame, log_x: bool = True, ax=None, annotate: bool = True,
               xlabel: str = "lexical frequency"):
    """Per-class F1 (``f1``: index labels, one column per model) against the label's frequency (``freq``)."""
    if isinstance(f1, pd.Series):
        f1 = f1.to_frame()
    common = [l for l in f1.index if l in freq.index]
    if not common:
        raise ValueError("freq_vs_f1: no labels shared by freq and f1")
    fig, ax = _ax(ax)
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    x = freq.loc[common].astype(float)
    for k, col in enumerate(f1.columns):
        ax.scatter(x, f1.loc[common, col], label=str(col), marker=markers[k % len(markers)], s=36, alpha=0.9)
    if annotate:
        y = f1.loc[common].mean(axis=1)
        for l in common:
            ax.annotate(l, (x[l], y[l]), textcoords="offset points", xytext=(4, 3), fontsize=7, color="0.3")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("per-class F1")
    if len(f1.columns) > 1:
        ax.legend()
    return fig


def paired_bars(df: pd.DataFrame, x: str = "label", y: str = "f1", hue: str = "condition", ax=None,
                order: Sequence[str] | None = None):
    """Grouped bars, e.g. per-class F1 for original vs shuffled (long DataFrame with columns x, y, hue)."""
    for c in (x, y, hue):
        if c not in df.columns:
            raise ValueError(f"paired_bars: column {c!r} missing; has {list(df.columns)}")
    order = list(order) if order is not None else list(dict.fromkeys(df[x]))
    fig, ax = _ax(ax, figsize=(max(FIG_W, 0.5 * len(order) + 2), FIG_W * 0.55))
    sns.barplot(data=df, x=x, y=y, hue=hue, order=order, ax=ax, errorbar=None)
    ax.tick_params(axis="x", rotation=45)
    for t in ax.get_xticklabels():   # rotated labels end under their bar instead of overlapping the next one
        t.set_horizontalalignment("right")
        t.set_rotation_mode("anchor")
    ax.set_xlabel("")
    return fig


def curve(df: pd.DataFrame, x: str, y: str, hue: str | None = None, ci_cols: tuple[str, str] | None = None,
          ax=None, logx: bool = False):
    """Lines with markers (one per ``hue`` value) and optional CI bands from columns ``ci_cols`` = (lo, hi);
    e.g. macro-F1 against FPS."""
    fig, ax = _ax(ax)
    groups = df.groupby(hue, sort=False) if hue else [(None, df)]
    for name, g in groups:
        g = g.sort_values(x)
        (line,) = ax.plot(g[x], g[y], marker="o", label=None if name is None else str(name))
        if ci_cols:
            ax.fill_between(g[x], g[ci_cols[0]], g[ci_cols[1]], color=line.get_color(), alpha=0.2, linewidth=0)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue:
        ax.legend(title=hue)
    return fig


def comparison(paper: pd.Series, ours: pd.Series) -> pd.DataFrame:
    """Side-by-side table of the paper's numbers and ours (aligned on the index), with ours − paper."""
    t = pd.concat({"paper": paper.astype(float), "ours": ours.astype(float)}, axis=1)
    t["diff"] = t["ours"] - t["paper"]
    return t


def paper_vs_ours(paper: pd.Series, ours: pd.Series, ax=None, annotate: bool = True, lims=(0.0, 1.0)):
    """Scatter of our value against the paper's for the same items (index), with the y = x line."""
    t = comparison(paper, ours).dropna()
    fig, ax = _ax(ax, figsize=(FIG_W * 0.6, FIG_W * 0.6))
    ax.plot(lims, lims, color="0.6", linestyle="--", linewidth=1)
    ax.scatter(t["paper"], t["ours"], s=30)
    if annotate:
        for k, row in t.iterrows():
            ax.annotate(str(k), (row.paper, row.ours), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    ax.set_aspect("equal")
    ax.set_xlabel("paper")
    ax.set_ylabel("ours")
    return fig
