"""Quality bars of the embedded models, measured on the balanced SynthFER MAFW test split (45 clips/class).

    python scripts/eval_models.py                      # every model present in data/models
    python scripts/eval_models.py --models vision3d microvlm --write   # also write data/models/<m>/eval.json

* Vision classifiers (``vision`` backend): 16 frames by count (its native input); accuracy (= UAR = WAR on a
  balanced split), macro-F1, per-class F1.
* MicroVLMs (``hf`` backend, paper prompt, greedy answers): the frame sampling is CHOSEN ON THE VALIDATION
  SLICE of the train split (``train_data.splits``) among ``--options``; the test split is then measured at that
  sampling (and at ``count:8`` for reference). In-label rate = share of answers whose text is exactly a label
  (case/space-insensitive); macro-F1 counts any other answer as wrong.
* Motion summaries (MSCE stage 1): on ``--motion-clips`` test clips, every gap of ``keyframes_gaps(key_fps=1,
  m=4)`` is described with ``prompts.DESCRIBE["motion"]``; the regions the text mentions
  (``captions.regions_in_text``) are compared with the ground truth ``captions.regions_moved`` of that gap.
  Reported: hit rate (some mentioned region truly moved, on gaps where something moved), first-region accuracy,
  region precision/recall, and the hit rate of the best constant answer (one fixed region) as a baseline.
* Fresh-seed split: a balanced SynthFER MAFW test split generated with ``--fresh-seed`` (a seed no recipe uses:
  new identities; ``--fresh-per-class`` clips per class), measured like the test split (at the sampling chosen
  on validation); both print macro-F1 with a 95% bootstrap CI (resampled within class) and the share of the
  most frequent answer, so "the same quality on new identities" is read off the two intervals.
* MSCE layout (VLMs): on ``--msce-clips`` test clips, the model describes each gap itself (stage 1) and then
  classifies the keyframes interleaved with its own texts (stage 2, ``ClassifyRequest.context``), as
  ``run.msce`` does; in-label rate and macro-F1.
Nothing here feeds back into training.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from emoprobe import captions, labels as L, models, paths, prompts, sampling, synthfer, train_data
from emoprobe.models import ClassifyRequest, DescribeRequest

LABELS = list(L.MAFW)
OPTIONS = ("count:4", "count:8", "count:16", "fps:2")


def _spec(opt: str) -> dict:
    k, v = opt.split(":")
    return {"strategy": k, "count": int(v)} if k == "count" else {"strategy": k, "fps": float(v)}


def _frames(path: str, opt: str):
    s = _spec(opt)
    fr = sampling.sample(path, **s)
    return fr.frames, fr.t


def scores(y_true, y_pred) -> dict:
    from sklearn.metrics import f1_score

    yp = [p if p in LABELS else "__none__" for p in y_pred]
    per = f1_score(y_true, yp, labels=LABELS, average=None, zero_division=0)
    return {"acc": float(np.mean(np.asarray(y_true) == np.asarray(yp))),
            "macro_f1": float(np.mean(per)), "per_class_f1": {l: round(float(f), 4) for l, f in zip(LABELS, per)}}


def classify(backend, df, opt: str, batch: int = 8, score: bool = False):
    prompt = prompts.render("paper", LABELS)
    texts, preds = [], []
    for i in range(0, len(df), batch):
        reqs = []
        for p in df["path"].iloc[i:i + batch]:
            fr, t = _frames(p, opt)
            reqs.append(ClassifyRequest(frames=fr, t=t, labels=LABELS, prompt=prompt))
        for a in backend.classify(reqs, score=score):
            if a.status == "failed":
                raise RuntimeError(f"classification failed: {a.error}")
            texts.append(a.text)
            if score:
                preds.append(a.label)
            else:
                preds.append(a.text.strip().lower() if a.text.strip().lower() in LABELS else None)
    return texts, preds


def f1_ci(y_true, preds) -> dict:
    """Macro-F1 95% bootstrap CI (1,000 resamples within class) and the share of the most frequent answer."""
    import pandas as pd

    from emoprobe import metrics

    df = pd.DataFrame({"label": list(y_true), "pred": [p if p is not None else "__none__" for p in preds]})
    c = metrics.macro_f1_ci(df, LABELS, n_boot=1000, seed=0)
    counts = pd.Series([p for p in preds]).value_counts(dropna=False)
    return {"macro_f1_ci95": [round(c.lo, 4), round(c.hi, 4)],
            "top_answer_share": round(float(counts.iloc[0]) / len(preds), 4) if len(preds) else None}


def _where(name: str) -> Path:
    """A model name under data/models, or a folder path (e.g. a variant from scripts/microvlm_budget.py)."""
    p = Path(name)
    return p if len(p.parts) > 1 else paths.models() / name


def eval_vision(name: str, test, fresh=None) -> dict:
    b = models.load({"backend": "vision", "model": str(_where(name))})
    t0 = time.time()
    _, preds = classify(b, test, "count:16", batch=32)
    r = scores(list(test["label"]), preds)
    r.update(f1_ci(test["label"], preds))
    r.update(sampling="count:16", n=len(test), seconds=round(time.time() - t0, 1),
             pred_counts={l: int(sum(p == l for p in preds)) for l in LABELS})
    if fresh is not None:
        _, pf = classify(b, fresh, "count:16", batch=32)
        r["fresh"] = {**scores(list(fresh["label"]), pf), **f1_ci(fresh["label"], pf), "n": len(fresh)}
    return r


def eval_vlm(name: str, test, val, options, fresh=None) -> dict:
    b = models.load({"backend": "hf", "model": str(_where(name))})
    t0 = time.time()
    val_res = {}
    for opt in options:
        _, p = classify(b, val, opt)
        val_res[opt] = scores(list(val["label"]), p)["macro_f1"]
        print(f"  [{name}] val @ {opt}: macro-F1 {val_res[opt]:.3f} ({time.time() - t0:.0f} s)", flush=True)
    best = max(options, key=lambda o: (val_res[o], -options.index(o)))
    out = {"val_macro_f1_by_sampling": val_res, "chosen_on_val": best, "test": {}}
    for opt in dict.fromkeys([best, "count:8"]):
        texts, p = classify(b, test, opt)
        r = scores(list(test["label"]), p)
        r["in_label_rate"] = float(np.mean([x is not None for x in p]))
        r["pred_counts"] = {l: int(sum(x == l for x in p)) for l in LABELS}
        r["n_out_of_label"] = int(sum(x is None for x in p))
        r["examples_out_of_label"] = [t for t, x in zip(texts, p) if x is None][:5]
        _, ps = classify(b, test, opt, score=True)
        r["scored"] = scores(list(test["label"]), ps)
        r["scored"]["pred_counts"] = {l: int(sum(x == l for x in ps)) for l in LABELS}
        r.update(f1_ci(test["label"], p))
        out["test"][opt] = r
        print(f"  [{name}] test @ {opt} done ({time.time() - t0:.0f} s)", flush=True)
    if fresh is not None:
        texts, p = classify(b, fresh, best)
        out["fresh"] = {**scores(list(fresh["label"]), p), **f1_ci(fresh["label"], p), "sampling": best,
                        "n": len(fresh), "in_label_rate": float(np.mean([x is not None for x in p])),
                        "pred_counts": {l: int(sum(x == l for x in p)) for l in LABELS}}
    out["seconds"] = round(time.time() - t0, 1)
    return out


def eval_msce(name: str, test, n_clips: int) -> dict:
    """MSCE on ``n_clips`` test clips with the model as its own describer (stage 1) and classifier (stage 2),
    the requests built as ``run.msce`` builds them (keyframes at 1 fps, m=4 frames per gap)."""
    b = models.load({"backend": "hf", "model": str(_where(name))})
    sub = train_data.per_class(test, max(1, n_clips // len(LABELS)), 0, "msce-check")
    prompt = prompts.render("msce", LABELS)
    texts, preds = [], []
    for _, row in sub.iterrows():
        keys, gaps = sampling.keyframes_gaps(row["path"], key_fps=1, m=4)
        ctx = [a.text for a in b.describe([DescribeRequest(frames=g.frames, t=g.t, prompt=prompts.DESCRIBE["motion"])
                                           for g in gaps])]
        a = b.classify([ClassifyRequest(frames=keys.frames, t=keys.t, labels=LABELS, prompt=prompt, context=ctx)])[0]
        if a.status == "failed":
            raise RuntimeError(f"MSCE classification failed: {a.error}")
        texts.append(a.text)
        preds.append(a.text.strip().lower() if a.text.strip().lower() in LABELS else None)
    r = scores(list(sub["label"]), preds)
    r.update(n=len(sub), in_label_rate=float(np.mean([x is not None for x in preds])),
             pred_counts={l: int(sum(x == l for x in preds)) for l in LABELS},
             examples_out_of_label=[t for t, x in zip(texts, preds) if x is None][:5])
    return r


def eval_motion(name: str, test, n_clips: int) -> dict:
    b = models.load({"backend": "hf", "model": str(_where(name))})
    sub = train_data.per_class(test, max(1, n_clips // len(LABELS)), 0, "motion-check")
    truth, said, clip, change = [], [], [], []
    for k, (_, row) in enumerate(sub.iterrows()):
        gt = synthfer.load_gt(row)
        keys, gaps = sampling.keyframes_gaps(row["path"], key_fps=1, m=4)
        reqs = [DescribeRequest(frames=g.frames, t=g.t, prompt=prompts.DESCRIBE["motion"]) for g in gaps]
        for j, a in enumerate(b.describe(reqs)):
            ch = captions.region_changes(gt, float(keys.t[j]), float(keys.t[j + 1]))
            truth.append(set(ch))
            change.append(max(ch.values(), default=0.0))
            said.append(a.text)
            clip.append(k)
    out = motion_scores(truth, said, clip, change, sub["label"].to_numpy())
    # the per-gap data, for paired comparisons (motion_compare.py); not written to eval.json
    return {"clips": len(sub), **out, "_per_gap": {"truth": truth, "said": said, "clip": clip,
                                                  "labels": sub["label"].to_numpy()}}


def paired_balanced_accuracy(a: dict, b: dict, n_boot: int = 1000):
    """Paired bootstrap (clips resampled within class, the same draws for both) of the difference in region
    balanced accuracy ``b - a`` between two models' summaries of the same gaps (``eval_motion``'s ``_per_gap``)."""
    import pandas as pd

    from emoprobe import metrics

    if a["truth"] != b["truth"] or list(a["clip"]) != list(b["clip"]):
        raise ValueError("paired_balanced_accuracy: the two runs did not describe the same gaps")
    truth, clip = a["truth"], a["clip"]
    regs = [r for r in captions.REGIONS if any(r in t for t in truth) and any(r not in t for t in truth)]
    cols = {"clip": clip}
    for tag, run in (("a", a), ("b", b)):
        ment = [captions.regions_in_text(x) for x in run["said"]]
        for r in regs:
            m = np.array([r in x for x in ment])
            t = np.array([r in x for x in truth])
            for nm, v in (("tp", m & t), ("fn", ~m & t), ("fp", m & ~t), ("tn", ~m & ~t)):
                cols[f"{tag}{r}|{nm}"] = v.astype(int)
    per = pd.DataFrame(cols).groupby("clip").sum()
    per["label"] = np.asarray(a["labels"])[per.index]

    def diff(d):
        def bal(tag):
            v = [_bal_acc_one(d.rename(columns=lambda c: c[1:] if c.startswith(tag) else "_" + c), r) for r in regs]
            return float(np.nanmean(v))
        return bal("b") - bal("a")

    return metrics.bootstrap_ci(per, diff, n_boot=n_boot, seed=0)


def _region_set_f1(said: set, true: set) -> float:
    tp = len(said & true)
    return 2 * tp / (len(said) + len(true)) if said or true else 1.0


def _bal_acc_one(d, r: str) -> float:
    """Balanced accuracy of "region r named" against "region r moved" from the summed tp/fn/fp/tn columns."""
    tp, fn, fp, tn = (d[f"{r}|{x}"].sum() for x in ("tp", "fn", "fp", "tn"))
    return 0.5 * (tp / (tp + fn) + tn / (tn + fp)) if tp + fn and fp + tn else float("nan")


def motion_scores(truth: list[set], said: list[str], clip: list[int], change: list[float], clip_labels,
                  n_boot: int = 1000) -> dict:
    """Scores of motion summaries against the ground truth, one entry per gap (``truth``: the regions that moved,
    ``said``: the text, ``clip``: the index of its clip in ``clip_labels``, ``change``: its largest AU change).

    The hit rate (some region it names truly moved) rewards naming many regions: a constant answer naming the
    two or three most often moving regions hits most gaps without looking (``baseline_constant_sets``, each the
    best constant set of its size on these very gaps). Two scores that a constant answer cannot game:
    ``region_balanced_accuracy`` (per region, over every gap, moving or still: the mean of the rate at which a
    region that moved is named and the rate at which one that did not is left out; averaged over the regions
    that both moved and stayed somewhere; any constant answer scores 0.5) and the per-gap ``region_f1`` of the
    named against the moved regions, beside the best constant set's. 95% bootstrap CIs over clips (a clip's
    gaps move together), resampled within class."""
    import pandas as pd

    from emoprobe import metrics

    moved = [i for i, t in enumerate(truth) if t]
    still = [i for i, t in enumerate(truth) if not t]
    ment = [captions.regions_in_text(s) for s in said]
    first = [captions.regions_in_text(s.split(";")[0]) for s in said]
    hit = [bool(ment[i] & truth[i]) for i in moved]
    first_ok = [bool(first[i] & truth[i]) for i in moved]
    prec = [len(ment[i] & truth[i]) / len(ment[i]) for i in moved if ment[i]]
    rec = [len(ment[i] & truth[i]) / len(truth[i]) for i in moved]
    const = {r: float(np.mean([r in truth[i] for i in moved])) for r in captions.REGIONS} if moved else {}
    best_const = max(const, key=const.get) if const else None
    sets = {}
    if moved:
        import itertools

        for k in (1, 2, 3):
            best = max(itertools.combinations(captions.REGIONS, k),
                       key=lambda c: (np.mean([bool(set(c) & truth[i]) for i in moved]), c))
            sets[k] = set(best)
    # per-gap table, aggregated per clip for the bootstrap
    regs = [r for r in captions.REGIONS if any(r in t for t in truth) and any(r not in t for t in truth)]
    cols = {"clip": clip, "moving": [bool(t) for t in truth],
            "hit": [bool(ment[i] & truth[i]) for i in range(len(truth))],
            "f1": [_region_set_f1(ment[i], truth[i]) for i in range(len(truth))]}
    for k, c in sets.items():
        cols[f"hit_c{k}"] = [bool(c & t) for t in truth]
        cols[f"f1_c{k}"] = [_region_set_f1(c, t) for t in truth]
    for r in regs:
        m = np.array([r in x for x in ment])
        t = np.array([r in x for x in truth])
        for nm, v in (("tp", m & t), ("fn", ~m & t), ("fp", m & ~t), ("tn", ~m & ~t)):
            cols[f"{r}|{nm}"] = v.astype(int)
    g = pd.DataFrame(cols)
    for c in [c for c in g.columns if c.startswith(("hit", "f1"))]:
        g[c] = g[c].where(g["moving"], 0)
    per = g.drop(columns="moving").assign(n=g["moving"].astype(int)).groupby("clip").sum()
    per["label"] = np.asarray(clip_labels)[per.index]

    def bal_acc(d):
        vals = [v for v in (_bal_acc_one(d, r) for r in regs) if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def ci_of(fn):
        c = metrics.bootstrap_ci(per, fn, n_boot=n_boot, seed=0)
        return round(c.point, 4), [round(c.lo, 4), round(c.hi, 4)]

    def rate(col):
        return lambda d: d[col].sum() / d["n"].sum()

    out = {"gaps": len(truth), "gaps_with_motion": len(moved)}
    ci = const_ci = None
    if moved:
        _, ci = ci_of(rate("hit"))
        _, const_ci = ci_of(rate("hit_c1"))
    ba, ba_ci = ci_of(bal_acc) if regs else (None, None)
    f1, f1_ci = ci_of(rate("f1")) if moved else (None, None)
    out.update({
        "hit_rate": float(np.mean(hit)) if hit else None,
        "hit_rate_ci95": ci,
        "baseline_constant_hit_rate_ci95": const_ci,
        "first_region_accuracy": float(np.mean(first_ok)) if first_ok else None,
        "region_precision": float(np.mean(prec)) if prec else None,
        "region_recall": float(np.mean(rec)) if rec else None,
        "region_f1": f1, "region_f1_ci95": f1_ci,
        "region_balanced_accuracy": ba, "region_balanced_accuracy_ci95": ba_ci,
        "region_balanced_accuracy_per_region": {r: round(_bal_acc_one(per, r), 4) for r in regs},
        "still_gaps_said_still": float(np.mean(["still" in said[i] for i in still])) if still else None,
        "moving_gaps_said_still": float(np.mean(["still" in said[i] for i in moved])) if moved else None,
        # hit rate by the gap's largest AU change (the words of captions.motion_summary: slightly < 0.3 <=
        # moderately < 0.55 <= strongly): are the misses the small movements?
        "hit_rate_by_change": {
            name: {"gaps": len(idx), "hit_rate": float(np.mean([hit[moved.index(i)] for i in idx])) if idx else None}
            for name, lo, hi in (("slight", 0.0, 0.3), ("moderate", 0.3, 0.55), ("strong", 0.55, 9.0))
            for idx in [[i for i in moved if lo <= change[i] < hi]]},
        "baseline_best_constant_region": best_const,
        "baseline_constant_hit_rate": const.get(best_const) if best_const else None,
        "baseline_constant_sets": {str(k): {"regions": sorted(c), "hit_rate": round(float(g[f"hit_c{k}"].sum()
                                                                                         / len(moved)), 4),
                                            "region_f1": round(float(g[f"f1_c{k}"].sum() / len(moved)), 4)}
                                   for k, c in sets.items()},
        "examples": [{"truth": sorted(truth[i]), "said": said[i]} for i in range(min(6, len(said)))],
    })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="names under data/models, or model folders")
    ap.add_argument("--options", nargs="*", default=list(OPTIONS), help="VLM samplings to choose from on val")
    ap.add_argument("--motion-clips", type=int, default=495,
                    help="test clips for the motion-summary check (495: the whole split; about 1 min per model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="write data/models/<name>/eval.json")
    ap.add_argument("--fresh-seed", type=int, default=7919,
                    help="seed of the fresh-identity test split (no recipe uses it); -1: skip")
    ap.add_argument("--fresh-per-class", type=int, default=8)
    ap.add_argument("--msce-clips", type=int, default=44, help="test clips for the MSCE-layout check (0: skip)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    names = a.models or [p.name for p in sorted(paths.models().iterdir())
                         if (p / "config.json").exists()]
    test = synthfer.dataset("mafw", "test", seed=a.seed)
    _, val = train_data.splits(a.seed)
    fresh = None
    if a.fresh_seed >= 0:
        if a.fresh_seed == a.seed:
            ap.error("--fresh-seed must differ from --seed (the recipes' seed)")
        fresh = synthfer.dataset("mafw", "test", seed=a.fresh_seed, n_per_class=a.fresh_per_class, workers=1)
        print(f"fresh-seed split (seed {a.fresh_seed}, new identities): {len(fresh)} clips", flush=True)
    print(f"test split: {len(test)} clips ({test['label'].value_counts().min()}-"
          f"{test['label'].value_counts().max()} per class); validation slice {len(val)} clips", flush=True)
    results = {}
    for name in names:
        path = _where(name)
        cfg = json.loads((path / "config.json").read_text())
        if "arch" in cfg and "labels" in cfg:
            r = eval_vision(name, test, fresh)
            print(f"{name}: macro-F1 {r['macro_f1']:.3f} [{r['macro_f1_ci95'][0]:.3f}, {r['macro_f1_ci95'][1]:.3f}], "
                  f"acc {r['acc']:.3f} (bar: macro-F1 >= 0.6)", flush=True)
            if "fresh" in r:
                f = r["fresh"]
                print(f"  fresh-seed split ({f['n']} clips): macro-F1 {f['macro_f1']:.3f} [{f['macro_f1_ci95'][0]:.3f}, "
                      f"{f['macro_f1_ci95'][1]:.3f}]", flush=True)
        else:
            r = eval_vlm(name, test, val, list(a.options), fresh)
            best = r["chosen_on_val"]
            tb = r["test"][best]
            print(f"{name}: sampling chosen on val = {best} (val macro-F1 by sampling: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["val_macro_f1_by_sampling"].items()) + ")", flush=True)
            for opt, t in r["test"].items():
                print(f"  test @ {opt}: macro-F1 {t['macro_f1']:.3f} [{t['macro_f1_ci95'][0]:.3f}, "
                      f"{t['macro_f1_ci95'][1]:.3f}], acc {t['acc']:.3f}, in-label {t['in_label_rate']:.3f}, most "
                      f"frequent answer {t['top_answer_share']:.2f} of clips (bars: macro-F1 >= 0.40, in-label >= "
                      f"0.95, no answer > 0.30); label scoring (score=True): macro-F1 {t['scored']['macro_f1']:.3f}, "
                      f"acc {t['scored']['acc']:.3f}", flush=True)
            if "fresh" in r:
                f = r["fresh"]
                print(f"  fresh-seed split ({f['n']} clips, seed {a.fresh_seed}) @ {f['sampling']}: macro-F1 "
                      f"{f['macro_f1']:.3f} [{f['macro_f1_ci95'][0]:.3f}, {f['macro_f1_ci95'][1]:.3f}], in-label "
                      f"{f['in_label_rate']:.3f}, most frequent answer {f['top_answer_share']:.2f}", flush=True)
                r["fresh"]["seed"] = a.fresh_seed
            if a.msce_clips > 0:
                r["msce"] = eval_msce(name, test, a.msce_clips)
                ms = r["msce"]
                print(f"  MSCE layout (own motion texts) on {ms['n']} test clips: in-label {ms['in_label_rate']:.3f}, "
                      f"macro-F1 {ms['macro_f1']:.3f}", flush=True)
            if a.motion_clips > 0:
                r["motion"] = eval_motion(name, test, a.motion_clips)
                r["motion"].pop("_per_gap")
                m = r["motion"]
                print(f"  motion summaries on {m['gaps']} test gaps ({m['gaps_with_motion']} with motion): hit rate "
                      f"{m['hit_rate']:.3f} [{m['hit_rate_ci95'][0]:.3f}, {m['hit_rate_ci95'][1]:.3f}], first region {m['first_region_accuracy']:.3f}, precision "
                      f"{m['region_precision']:.3f}, recall {m['region_recall']:.3f}; best constant region "
                      f"{m['baseline_best_constant_region']!r} hits {m['baseline_constant_hit_rate']:.3f}", flush=True)
                c2 = m["baseline_constant_sets"].get("2", {})
                print(f"  against chance: region balanced accuracy {m['region_balanced_accuracy']:.3f} "
                      f"[{m['region_balanced_accuracy_ci95'][0]:.3f}, {m['region_balanced_accuracy_ci95'][1]:.3f}] "
                      f"(constant answers 0.5), region F1 {m['region_f1']:.3f}; the best constant two-region answer "
                      f"{c2.get('regions')} hits {c2.get('hit_rate')} at region F1 {c2.get('region_f1')}", flush=True)
        print("  per-class F1: " + json.dumps(r.get("per_class_f1") or r["test"][r["chosen_on_val"]]["per_class_f1"]),
              flush=True)
        results[name] = r
        if a.write:
            (path / "eval.json").write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
