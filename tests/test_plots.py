"""Each plotting helper returns a Figure with the expected axes and artists (Agg backend, no display)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from emoprobe import labels as L  # noqa: E402
from emoprobe import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _style():
    plots.style()
    yield
    plt.close("all")


def test_style_sets_dpi_and_no_titles():
    assert plt.rcParams["figure.dpi"] == plots.DPI and plt.rcParams["savefig.dpi"] == plots.SAVE_DPI


def test_label_colors_stable_and_shared():
    c = plots.label_colors(L.MAFW)
    assert len(set(c.values())) == 11
    d = plots.label_colors(L.DFEW)
    assert d["happy"] == c["happiness"] and d["angry"] == c["anger"]
    assert len(plots.label_colors(["x", "y"])) == 2


def test_confusion_heatmap():
    cm = pd.DataFrame(np.eye(3), index=list("abc"), columns=list("abc"))
    fig = plots.confusion_heatmap(cm)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap + colour bar
    assert len(fig.axes[0].texts) == 9 and fig.axes[0].get_title() == ""


def test_freq_vs_f1():
    freq = pd.Series([1e-5, 2e-5, 5e-5], index=list("abc"))
    f1 = pd.DataFrame({"m1": [0.1, 0.3, 0.5], "m2": [0.2, 0.2, 0.6]}, index=list("abc"))
    fig = plots.freq_vs_f1(freq, f1)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.collections) == 2 and len(ax.texts) == 3
    assert ax.get_xscale() == "log"
    with pytest.raises(ValueError):
        plots.freq_vs_f1(pd.Series([1.0], index=["z"]), f1)


def test_paired_bars():
    df = pd.DataFrame({"label": list("abcabc"), "condition": ["original"] * 3 + ["shuffled"] * 3,
                       "f1": [0.1, 0.2, 0.3, 0.2, 0.1, 0.3]})
    fig = plots.paired_bars(df)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) >= 6


def test_curve_with_ci():
    df = pd.DataFrame({"fps": [1, 5, 10] * 2, "f1": [0.2, 0.3, 0.25, 0.1, 0.2, 0.15],
                       "model": ["a"] * 3 + ["b"] * 3})
    df["lo"], df["hi"] = df.f1 - 0.02, df.f1 + 0.02
    fig = plots.curve(df, "fps", "f1", hue="model", ci_cols=("lo", "hi"))
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2


def test_paper_vs_ours():
    p = pd.Series([0.2, 0.4, 0.6], index=list("abc"))
    o = pd.Series([0.25, 0.35, 0.6], index=list("abc"))
    t = plots.comparison(p, o)
    assert t["diff"].round(2).tolist() == [0.05, -0.05, 0.0]
    fig = plots.paper_vs_ours(p, o)
    ax = fig.axes[0]
    assert len(ax.collections) == 1 and len(ax.lines) == 1 and len(ax.texts) == 3
