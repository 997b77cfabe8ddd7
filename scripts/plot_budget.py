"""Validation curves of the MicroVLM budget runs (scripts/microvlm_budget.py) from their logs.

    python scripts/plot_budget.py data/benchmarks/2026-11-26_h200_microvlm_budget_*.log \
        --csv data/benchmarks/2026-11-26_h200_microvlm_budget.csv --png data/benchmarks/2026-11-26_h200_microvlm_budget.png

Parses the recipe's log lines (``<name> instruct <step>/<total> loss <l> val acc <a> F1 <f> ...``), writes one
tidy CSV and a two-panel figure (instruction-stage training loss; validation macro-F1 with the chance level and
the committed CPU model's last validation score from data/models/microvlm/train_log.csv).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

LINE = re.compile(r"instruct (\d+)/(\d+) loss ([\d.]+) val acc ([\d.]+) F1 ([\d.]+)")


def parse(paths) -> pd.DataFrame:
    rows = []
    for p in paths:
        variant = Path(p).stem.split("budget_")[-1]
        for m in LINE.finditer(Path(p).read_text()):
            step, total, loss, acc, f1 = m.groups()
            rows.append(dict(variant=variant, instruct_steps_planned=int(total), step=int(step), train_loss=float(loss),
                             val_acc=float(acc), val_macro_f1=float(f1)))
    if not rows:
        raise SystemExit(f"no instruct validation lines in {list(paths)}")
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--png", required=True)
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emoprobe import labels, paths

    df = parse(a.logs)
    df.to_csv(a.csv, index=False)
    cpu = pd.read_csv(paths.models() / "microvlm" / "train_log.csv").dropna(subset=["val_macro_f1"])
    cpu = cpu[cpu["stage"] == "instruct"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for v, g in df.groupby("variant"):
        ax[0].plot(g["step"], g["train_loss"], marker=".", label=v)
        ax[1].plot(g["step"], g["val_macro_f1"], marker=".", label=v)
    ax[1].plot(cpu["step"], cpu["val_macro_f1"], "k*", ms=9, label="committed recipe (CPU, 1500 steps)")
    ax[1].axhline(1 / len(labels.MAFW), color="grey", ls=":", label="chance (1/11)")
    ax[1].axhline(0.45, color="grey", ls="--", label="issue-5 aim 0.45")
    ax[0].set(xlabel="instruction step", ylabel="training loss (all tasks)")
    ax[1].set(xlabel="instruction step", ylabel="validation macro-F1 (55 clips)", ylim=(0, 0.5))
    ax[1].legend(fontsize=7)
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.png, dpi=110)
    print(df.groupby("variant").agg(last_step=("step", "max"), best_f1=("val_macro_f1", "max"),
                                    last_f1=("val_macro_f1", "last"), last_loss=("train_loss", "last")).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
