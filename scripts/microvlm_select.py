"""Choose between MicroVLM checkpoints on a validation split large enough to tell them apart.

The recipe's validation slice (5 clips per class of the train split, 55 clips) gives macro-F1 intervals about
+-0.1 wide: two checkpoints 0.08 apart cannot be told apart on it. Issue 12's choice between the committed MicroVLM
and a new recipe's is therefore read here, on a balanced SynthFER MAFW split generated with seed 4242 (new
identities; a seed no recipe trains on, not the test split, not the fresh-seed split 7919 that eval_models.py
reports), 20 clips per class, with the paper prompt at count:8 and fps:2 sampling. Prints macro-F1 with its
95% bootstrap CI and the share of the most frequent answer, and for every model after the first the paired
difference from the first on the same clips (bootstrap within class: the two models' intervals overlap far more
than their difference varies). Nothing here feeds back into training.

    python scripts/microvlm_select.py data/models/microvlm data/cache/models-ml/microvlm
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_models as E  # noqa: E402  (the same classify / scores / CI as the quality report)

import pandas as pd  # noqa: E402

from emoprobe import metrics, models, synthfer, threads  # noqa: E402

SEED, PER_CLASS = 4242, 20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model folders")
    ap.add_argument("--options", nargs="*", default=["count:8", "fps:2"])
    ap.add_argument("--out", default=None, help="write the rows as JSON")
    a = ap.parse_args(argv)
    threads.configure()
    split = synthfer.dataset("mafw", "test", seed=SEED, n_per_class=PER_CLASS)
    rows, first = [], {}
    for path in a.models:
        b = models.load({"backend": "hf", "model": path})
        for opt in a.options:
            _, p = E.classify(b, split, opt)
            s = E.scores(list(split["label"]), p)
            table = pd.DataFrame({"clip_id": split["clip_id"], "label": split["label"],
                                  "pred": [x if x is not None else "__none__" for x in p]})
            row = {"model": path, "sampling": opt, "n": len(split), "seed": SEED,
                   "macro_f1": round(s["macro_f1"], 4), **E.f1_ci(split["label"], p)}
            if opt in first:
                d = metrics.paired_bootstrap_diff(first[opt][1], table, lambda t: metrics.macro_f1(t, E.LABELS),
                                                  n_boot=1000, seed=0, strata="label")
                row["paired_diff_vs_first"] = {"vs": first[opt][0], "diff": round(d.point, 4),
                                               "ci95": [round(d.lo, 4), round(d.hi, 4)], "p": round(d.p, 3)}
            else:
                first[opt] = (path, table)
            print(json.dumps(row), flush=True)
            rows.append({**row, "preds": table["pred"].tolist()})
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
