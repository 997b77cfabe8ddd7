"""Motion summaries of several MicroVLM checkpoints on one sample, with 95% CIs: is a change in region hit rate real?

The quality report (``eval_models.py``) measures the motion summaries (MSCE stage 1) on 44 test clips (about 90
gaps with motion): its interval is about +-0.1 wide, as wide as the differences issue 12 asks about. This script
runs the same measurement (``eval_models.eval_motion``: the model describes each 1-fps keyframe gap from 4 frames;
a hit = some region it names truly moved) on a larger sample of the balanced test split for every checkpoint given,
with bootstrap CIs over clips, and the best constant answer's hit rate as the baseline.

    python scripts/motion_compare.py data/models/microvlm data/cache/ckpt/2ba1274/microvlm --clips 495
    python scripts/motion_compare.py <candidate> --selection --clips 220   # for a choice: the selection split
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_models as E  # noqa: E402  (the same motion check as the quality report)
import microvlm_select as S  # noqa: E402  (the selection split)

from emoprobe import synthfer, threads  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model folders")
    ap.add_argument("--clips", type=int, default=495, help="test clips (class-balanced; 495 = the whole split)")
    ap.add_argument("--selection", action="store_true",
                    help="use the seed-4242 selection split (220 clips; microvlm_select.py's) instead of the test "
                         "split: for choices, which are never made on the test split")
    ap.add_argument("--out", default=None, help="write the rows as JSON")
    a = ap.parse_args(argv)
    threads.configure()
    test = (synthfer.dataset("mafw", "test", seed=S.SEED, n_per_class=S.PER_CLASS) if a.selection
            else synthfer.dataset("mafw", "test", seed=0))
    rows, first = [], None
    for path in a.models:
        m = E.eval_motion(path, test, a.clips)
        gaps = m.pop("_per_gap")
        rows.append({"model": path, **{k: v for k, v in m.items() if k != "examples"}})
        if first is None:
            first = gaps
        else:   # paired: the same gaps, the same bootstrap draws
            d = E.paired_balanced_accuracy(first, gaps)
            rows[-1]["balanced_accuracy_paired_diff_vs_first"] = {"vs": a.models[0], "diff": round(d.point, 4),
                                                                 "ci95": [round(d.lo, 4), round(d.hi, 4)]}
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
