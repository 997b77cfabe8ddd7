"""Training curves of the embedded models, from each model folder's ``train_log.csv``.

    python scripts/plot_training.py                    # every model in data/models
    python scripts/plot_training.py --models microvlm  # one

Writes ``data/models/<name>/training_curves.png``: left, the training loss of every stage against the step
(one panel row per stage, since stages have different losses); right, the validation-slice macro-F1 where the
stage measured it. The model card (``python -m emoprobe.train`` / ``emoprobe.cards.write_card``) links the figure.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from emoprobe import paths, plots


def plot(folder) -> "object | None":
    import matplotlib.pyplot as plt

    log_path = folder / "train_log.csv"
    if not log_path.exists():
        return None
    log = pd.read_csv(log_path)
    if log.empty:
        return None
    stages = list(dict.fromkeys(log["stage"]))
    fig, axes = plt.subplots(len(stages), 2, figsize=(8, 2.2 * len(stages)), squeeze=False, layout="constrained")
    for i, st in enumerate(stages):
        d = log[log["stage"] == st]
        ax = axes[i, 0]
        ax.plot(d["step"], d["loss"], color="C0")
        if "val_loss" in d and d["val_loss"].notna().any():
            v = d[d["val_loss"].notna()]
            ax.plot(v["step"], v["val_loss"], "o-", color="C1", label="validation loss")
            ax.legend(frameon=False, fontsize=8)
        ax.set_xlabel(f"{st} step")
        ax.set_ylabel("loss")
        ax = axes[i, 1]
        if "val_macro_f1" in d and d["val_macro_f1"].notna().sum() >= 2:
            v = d[d["val_macro_f1"].notna()]
            ax.plot(v["step"], v["val_macro_f1"], "o-", color="C2")
            ax.set_ylim(0, 1)
            ax.set_ylabel("validation macro-F1")
        elif "landmark_rmse_px" in d and d["landmark_rmse_px"].notna().any():
            ax.plot(d["step"], d["landmark_rmse_px"], color="C3")
            ax.set_ylabel("landmark RMSE (px)")
        else:
            ax.axis("off")
            continue
        ax.set_xlabel(f"{st} step")
    return fig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None)
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.style()
    names = a.models or [p.name for p in sorted(paths.models().iterdir()) if (p / "train_log.csv").exists()]
    for name in names:
        folder = paths.models() / name
        fig = plot(folder)
        if fig is None:
            print(f"{name}: no train_log.csv, skipped", file=sys.stderr)
            continue
        out = folder / "training_curves.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        print(f"{name}: {out.relative_to(paths.root())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
