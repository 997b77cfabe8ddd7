"""MicroVLM: would a longer instruction stage (or another task mix) reach the classification bar?

Issue 5 asks for MicroVLM macro-F1 >= 0.45 and, where the 2-core machine cannot reach it, for the curves that show
why and what would. This script measures the second part. It runs the committed recipe's stages 1-2 (caption
pretraining, instruction tuning; ``emoprobe.train_loops.train_microvlm``) on top of a stage-0 vision tower that the
recipe already trained (the ``data/cache/train/stage0_<key>.safetensors`` that ``train_loops.stage0_cached`` caches, which is
bit-identical to the tower inside the committed ``data/models/microvlm``), with other step counts or another
instruction mix, and logs the validation curve of the recipe (the 55-clip validation slice, count:8 sampling).
It never touches ``data/models``; the model it trains goes to ``--out``. Choices are read on validation only.

  # pack what a machine without the data needs (pool + validation clips, the tower, the word probabilities)
  python scripts/microvlm_budget.py pack --stage0 data/cache/train/stage0_5f9b48112b70fff0.safetensors --dest .devdata
  # run (here or on a GPU machine, with EMOPROBE_GENERATED pointing at the packed clips)
  python scripts/microvlm_budget.py run --packed .devdata --instruct-steps 4500 --device cuda --workers 6 --out runs/a

The run prints the recipe's log lines and writes ``<out>/train_log.csv`` and ``<out>/budget.json`` (the variant
and its last validation scores). Evaluate a finished model on the balanced test here with
``python scripts/eval_models.py --models <out>`` (CPU).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def pack(a) -> int:
    import pandas as pd

    from emoprobe import captions
    from emoprobe import train_data as D, train_recipe as R

    dest = Path(a.dest)
    train_df, val_df = D.splits(a.seed)
    pool = D.per_class(train_df, R.POOL_PER_CLASS, a.seed, "pool")
    src = Path(train_df["path"].iloc[0]).resolve().parent.parent        # <generated>/synthfer/<hash>/
    out = dest / "generated" / "synthfer" / src.name
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    for f in ("manifest.csv", "params.json"):
        shutil.copy2(src / f, out / f)
    n = 0
    for _, r in pd.concat([pool, val_df]).iterrows():
        for col in ("path", "gt_path"):
            p = Path(r[col]) if Path(r[col]).is_absolute() else src / r[col]
            shutil.copy2(p, out / p.parent.name / p.name)
        n += 1
    shutil.copy2(a.stage0, dest / "stage0.safetensors")
    (dest / "word_probs.json").write_text(json.dumps({m: captions.word_probs(R.LABELS, mode=m)
                                                      for m in ("lexical", "uniform")}, indent=1))
    print(f"packed {n} clips (pool {len(pool)} + validation {len(val_df)}) of {src.name}, the stage-0 tower and "
          f"the word probabilities into {dest}")
    return 0


def run(a) -> int:
    import ast
    import os

    import torch

    packed = Path(a.packed) if a.packed else None
    if packed:
        os.environ.setdefault("EMOPROBE_GENERATED", str((packed / "generated").resolve()))
    from emoprobe import train_data as D, train_loops as TL, train_recipe as R

    R.use_recipe(a.recipe or R.COMMITTED)
    for kv in a.set:   # recipe experiments: NAME=VALUE (a Python literal) on top of the recipe
        k, v = kv.split("=", 1)
        if not hasattr(R, k) or not k.isupper():
            raise SystemExit(f"--set {kv}: train_recipe has no constant {k!r}")
        setattr(R, k, ast.literal_eval(v))
    stage0 = Path(a.stage0) if a.stage0 else packed / "stage0.safetensors" if packed else None
    if a.resume:
        stage0 = None   # stages 0-2 come from the checkpoint
    elif stage0 is None or not stage0.exists():
        raise SystemExit(f"{stage0}: no stage-0 tower (run `pack` first or pass --stage0)")
    mix = dict(R.INSTRUCT_MIX)
    if a.classify_share is not None:
        rest = 1.0 - a.classify_share      # the other tasks keep their proportions
        other = sum(v for k, v in mix.items() if k != "classify")
        mix = {"classify": a.classify_share, **{k: rest * v / other for k, v in mix.items() if k != "classify"}}
    word_p = None
    if packed and (packed / "word_probs.json").exists():
        word_p = json.loads((packed / "word_probs.json").read_text())[a.mode]
    torch.set_num_threads(a.threads)
    train_df, val_df = D.splits(a.seed)
    t0 = time.time()
    meta = TL.train_microvlm(Path(a.out), mode=a.mode, seed=a.seed, pretrain_steps=a.pretrain_steps,
                            instruct_steps=a.instruct_steps, train_df=train_df, val_df=val_df,
                            eval_every=a.eval_every, device=a.device, word_p=word_p, workers=a.workers,
                            vision_tower=stage0, instruct_mix=mix, resume=a.resume, repolish=a.repolish)
    dev = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    info = {"variant": {"recipe": R.RECIPE, "set": a.set, "pretrain_steps": a.pretrain_steps, "instruct_steps": a.instruct_steps,
                        "instruct_mix": mix, "mode": a.mode, "seed": a.seed, "device": dev,
                        "workers": a.workers, "threads": a.threads, "stage0": stage0.name if stage0 else None,
                        "resume": a.resume, "repolish": a.repolish},
            "final": meta.get("final"), "wall_s": time.time() - t0}
    (Path(a.out) / "budget.json").write_text(json.dumps(info, indent=1, default=float) + "\n")
    print(json.dumps(info, default=float))
    return 0


def stage0(a) -> int:
    """Stage 0 alone, as the recipe runs it (same build, seed, clips, batches, through ``train_loops.stage0_cached``, so the
    tower lands in the recipe's stage-0 cache and a later ``python -m emoprobe.train`` with the same step count
    reuses it), with another step count. Then the selection metric: held-out within-clip R^2 of a ridge readout
    from the merged tokens to the landmark / AU motion (fitted on the pool, scored on the validation slice)."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    from emoprobe import train_data as D, train_loops as TL, train_recipe as R
    from emoprobe.vision import sha256_file

    torch.set_num_threads(a.threads)
    R.use_recipe(a.recipe)
    train_df, val = D.splits(a.seed)
    pool = D.per_class(train_df, R.POOL_PER_CLASS, a.seed, "pool")
    gt = D.GroundTruth()
    with tempfile.TemporaryDirectory() as d:
        processor, model = TL.new_microvlm(d, pool, gt, a.seed, a.device)
    data = D.MicroData(pool, pool, gt, a.seed, {k: 0.0 for k in R.LABELS})   # stage 0 uses no words
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = TL.CsvLog(out.with_suffix(".csv"))
    t0 = time.time()
    clips = D.stage0_clips(train_df, a.workers)
    key = TL.stage0_key(model, data, a.steps, a.device, clips)   # of the initial weights: before training
    TL.stage0_cached(model, processor, data, a.steps, a.device, a.workers, log, "stage0", t0, clips)
    log.close()
    wall = time.time() - t0
    save_file({k: v.detach().cpu().contiguous() for k, v in model.model.visual.state_dict().items()}, str(out))
    model.to("cpu").eval()
    r2 = TL.stage0_readout_r2(model, processor, val, gt, fit=pool)
    info = {"tower": out.name, "recipe": a.recipe, "steps": a.steps, "wall_s": round(wall, 1), "threads": a.threads,
            "heldout_within_clip_r2": {k: round(v, 3) for k, v in r2.items()},
            "readout": "ridge from merged tokens (count:8, centred per clip) fitted on the pool, scored on the "
                       "validation slice",
            # committing the tower with these two lets `make models` load it (train_loops.committed_tower)
            "sha256": sha256_file(out), "cache_key": key}
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))
    print(f"stage 0 ({a.steps} steps) -> {out} (+ {out.with_suffix('.csv').name}, {out.with_suffix('.json').name})")
    return 0


def probe(a) -> int:
    """Linear probes on what MicroVLM's language model receives: the merged video tokens of a tower (count:8
    sampling), raw and as deviations from the clip's mean over temporal patches. Trained on the pool clips (60 per
    class, as the instruction stage) or on every train clip, scored on held-out train clips (15 per class, never
    the test split) + the validation slice."""
    import numpy as np
    import pandas as pd
    import torch
    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from emoprobe import paths
    from emoprobe import train_data as D, train_recipe as R

    torch.set_num_threads(a.threads)
    train_df, val = D.splits(a.seed)
    hold = D.per_class(train_df, 15, a.seed, "probe-hold")
    rest = train_df[~train_df["clip_id"].isin(set(hold["clip_id"]))].reset_index(drop=True)
    pool = D.per_class(train_df, R.POOL_PER_CLASS, a.seed, "pool")
    base = paths.models() / "microvlm"
    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base).eval()
    if a.tower:
        model.model.visual.load_state_dict(load_file(a.tower))

    def feats(df):
        out = []
        for i in range(0, len(df), 16):
            vids = [D.frames_for(r.path, ("count", 8))[0] for r in df.iloc[i:i + 16].itertuples()]
            enc = processor.video_processor(videos=vids, return_tensors="pt")
            with torch.no_grad():
                o = model.model.get_video_features(enc["pixel_values_videos"], enc["video_grid_thw"]).pooler_output
            out += [t.reshape(thw[0], -1, t.shape[-1]).numpy() for t, thw in zip(o, enc["video_grid_thw"].tolist())]
        return np.stack(out)

    heldout = pd.concat([hold, val], ignore_index=True)
    y = {k: np.array([R.LABELS.index(x) for x in df["label"]]) for k, df in (("hold", heldout), ("rest", rest))}
    fe, fr = feats(heldout), feats(rest)
    in_pool = rest["clip_id"].isin(set(pool["clip_id"])).to_numpy()
    rows = []
    for kind in ("raw", "deviation"):
        rep = (lambda f: f.reshape(len(f), -1)) if kind == "raw" else \
            (lambda f: (f - f.mean(1, keepdims=True)).reshape(len(f), -1))
        for train_on, mask in (("pool (60/class)", in_pool), ("all train clips", np.ones(len(rest), bool))):
            clf = LogisticRegression(C=0.01, max_iter=2000, class_weight="balanced").fit(rep(fr[mask]), y["rest"][mask])
            rows.append({"tower": a.tower or "committed microvlm", "features": kind, "trained_on": train_on,
                         "n_train": int(mask.sum()), "n_heldout": len(fe),
                         "heldout_macro_f1": round(float(f1_score(y["hold"], clf.predict(rep(fe)),
                                                                  average="macro")), 3),
                         "train_macro_f1": round(float(f1_score(y["rest"][mask], clf.predict(rep(fr[mask])),
                                                                average="macro")), 3)})
            print(json.dumps(rows[-1]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def gt_gap_view(gt: dict, idx, features: str):
    """Ground truth at a gap's frames (source indices ``idx``), seen as the tower sees pixels: averaged in pairs, one
    temporal patch per pair (``features`` ending in ``pairs``), or frame by frame (``frames``). ``gt-au-*``: the AU
    intensities and head pose; ``gt-landmarks-*``: the 26 landmarks (x, y) in units of the clip's median
    inter-ocular distance. Returns (rows, values): 2 rows for 4 frames in pairs, 4 frame by frame."""
    import numpy as np

    idx = np.minimum(np.asarray(idx, dtype=int), len(gt["t"]) - 1)
    if features.startswith("gt-au"):
        v = np.concatenate([np.asarray(gt["au"], np.float32), np.asarray(gt["head"], np.float32)], 1)[idx]
    elif features.startswith("gt-landmarks"):
        lm, names = np.asarray(gt["landmarks"], np.float32), list(gt["landmark_names"])
        c = [names.index(n) for n in ("eye_left_center", "eye_right_center")]
        iod = float(np.median(np.linalg.norm(lm[:, c[0]] - lm[:, c[1]], axis=1)))
        v = (lm[idx] / iod).reshape(len(idx), -1)
    else:
        raise ValueError(f"not a ground-truth feature set: {features!r}")
    if features.endswith("pairs"):
        v = v[: len(v) // 2 * 2].reshape(-1, 2, v.shape[-1]).mean(1)
    elif not features.endswith("frames"):
        raise ValueError(f"{features!r}: say -pairs or -frames")
    return v


def motion_probe(a) -> int:
    """Can the tokens tell which face region moved in a gap? Per region, a logistic probe (class-balanced) on what
    the language model receives for one motion-summary request (the 4 frames of a 1-fps keyframe gap, as
    ``eval_models.eval_motion``): the merged tokens of the gap's two temporal patches and their difference.
    Fitted on the gaps of ``--train-per-class`` clips per class of the seed-0 train split (0: all of it), scored on the gaps of the
    seed-4242 selection split (never the test split) as region balanced accuracy (0.5 = chance, as in
    ``eval_models.motion_scores``), beside what the model itself says on the same gaps. If the probe reads well
    above the model, the language model is what fails to read the motion; if not, the tokens cap it."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import eval_models as E
    import microvlm_select as S

    from emoprobe import captions, models, prompts, sampling, synthfer
    from emoprobe import train_data as D
    from emoprobe.models import DescribeRequest

    torch.set_num_threads(a.threads)
    processor = AutoProcessor.from_pretrained(a.model)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(a.model).eval()

    if a.abs_diff and a.features == "lm-hidden":
        raise SystemExit("--abs-diff needs two temporal patches or frames to difference; lm-hidden has one state")
    lm = models.load({"backend": "hf", "model": str(a.model)}) if a.features == "lm-hidden" else None

    def gaps_of(df):
        X, truth, clip, change, gap_frames = [], [], [], [], []
        for k, r in enumerate(df.itertuples()):
            gt = synthfer.load_gt(r._asdict())
            keys, gaps = sampling.keyframes_gaps(r.path, key_fps=1, m=4)
            if a.features == "lm-hidden":
                # the language model's hidden state at the last prompt position (where the answer starts), every
                # layer, for the motion-summary request exactly as the backend builds it
                inputs, _, _ = lm._prepare([(g.frames, g.t, prompts.DESCRIBE["motion"], None) for g in gaps])
                kw = lm._to_device(inputs)
                with torch.no_grad():
                    hs = lm.model(**kw, output_hidden_states=True).hidden_states
                last = [int(kw["attention_mask"][j].nonzero().max()) for j in range(len(gaps))]
                o = [torch.cat([h[j, last[j]] for h in hs]).float().numpy() for j in range(len(gaps))]
                grids = [None] * len(gaps)
            elif a.features == "tokens":
                enc = processor.video_processor(videos=[g.frames for g in gaps], return_tensors="pt")
                with torch.no_grad():
                    o = model.model.get_video_features(enc["pixel_values_videos"],
                                                       enc["video_grid_thw"]).pooler_output
                grids = enc["video_grid_thw"].tolist()
            else:
                o, grids = [None] * len(gaps), [None] * len(gaps)
            for j, (tok, thw) in enumerate(zip(o, grids)):
                if a.features == "lm-hidden":
                    X.append(tok)
                else:
                    # (2 temporal patches, tokens, dim), or ground truth as (2 pairs or 4 frames, values)
                    t = tok.reshape(thw[0], -1, tok.shape[-1]).numpy() if a.features == "tokens" \
                        else gt_gap_view(gt, gaps[j].indices, a.features)
                    d = [t[i + 1] - t[i] for i in range(len(t) - 1)] if a.features.endswith("frames") \
                        else [t[-1] - t[0]]
                    parts = [*(x.ravel() for x in t), *(x.ravel() for x in d)]
                    if a.abs_diff:
                        parts += [np.abs(x).ravel() for x in d]
                    X.append(np.concatenate(parts))
                ch = captions.region_changes(gt, float(keys.t[j]), float(keys.t[j + 1]))
                truth.append(set(ch))
                change.append(max(ch.values(), default=0.0))
                clip.append(k)
                gap_frames.append(gaps[j])
        return np.stack(X), truth, clip, change, gap_frames

    train = synthfer.dataset("mafw", "train", seed=0)
    if a.train_per_class > 0:
        train = D.per_class(train, a.train_per_class, 0, "motion-probe")
    sel = synthfer.dataset("mafw", "test", seed=S.SEED, n_per_class=S.PER_CLASS)
    t0 = time.time()
    Xtr, ytr, _, _, _ = gaps_of(train)
    Xse, yse, cse, chse, gse = gaps_of(sel)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    Xtr, Xse = (Xtr - mu) / sd, (Xse - mu) / sd
    named = [set() for _ in yse]
    for r in captions.REGIONS:
        y = np.array([r in t for t in ytr])
        if y.all() or not y.any():
            continue
        clf = LogisticRegression(C=a.C, max_iter=3000, class_weight="balanced").fit(Xtr, y)
        for i, v in enumerate(clf.predict(Xse)):
            if v:
                named[i].add(r)
    as_text = ["; ".join(sorted(n)) or "the face stays still" for n in named]
    probe = E.motion_scores(yse, as_text, cse, chse, sel["label"].to_numpy())
    b = lm or models.load({"backend": "hf", "model": str(a.model)})
    said = [x.text for x in b.describe([DescribeRequest(frames=g.frames, t=g.t, prompt=prompts.DESCRIBE["motion"])
                                         for g in gse])]
    own = E.motion_scores(yse, said, cse, chse, sel["label"].to_numpy())
    keys = ("region_balanced_accuracy", "region_balanced_accuracy_ci95", "region_f1", "region_f1_ci95", "hit_rate",
            "region_balanced_accuracy_per_region")
    what = (": the language model's hidden states at the last prompt position, every layer"
            if a.features == "lm-hidden" else ": both temporal patches (or the 4 frames) and their difference(s)")
    res = {"model": str(a.model), "train_gaps": len(ytr), "selection_gaps": len(yse), "C": a.C,
           "features": a.features + (" + |diff|" if a.abs_diff else "") + what + ", standardised on train",
           "wall_s": round(time.time() - t0, 1),
           "probe": {k: probe[k] for k in keys}, "model_says": {k: own[k] for k in keys}}
    print(json.dumps(res, indent=1), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--stage0", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("--packed", default=None, help="folder written by `pack` (clips, tower, word probabilities)")
    r.add_argument("--stage0", default=None, help="stage-0 tower safetensors (default: <packed>/stage0.safetensors)")
    r.add_argument("--out", required=True)
    r.add_argument("--mode", default="lexical", choices=("lexical", "uniform"))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--pretrain-steps", type=int, default=None)
    r.add_argument("--instruct-steps", type=int, default=None)
    r.add_argument("--classify-share", type=float, default=None,
                   help="share of classification examples in the instruction mix (others keep their ratio)")
    r.add_argument("--eval-every", type=int, default=250)
    r.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="override train_recipe constants on top of --recipe (e.g. PRETRAIN_MERGER=False)")
    r.add_argument("--resume", default=None,
                   help="a model folder trained by stages 0-2 of the recipe: load it and run the polish stage only")
    r.add_argument("--repolish", action="store_true",
                   help="with --resume: accept a checkpoint that was already polished (diagnostics, e.g. with "
                        "--set 'POLISH_MIX={\"motion\": 1.0}'); never for a committed recipe")
    r.add_argument("--device", default="cpu")
    r.add_argument("--workers", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--recipe", default=None,
                   help="train_recipe.RECIPES name (stage-2 data and mix; default: the committed recipe)")
    s0 = sub.add_parser("stage0", help="stage 0 alone with another step count (writes the tower + its log)")
    s0.add_argument("--steps", type=int, required=True)
    s0.add_argument("--out", required=True, help="tower .safetensors (log beside it as .csv)")
    s0.add_argument("--seed", type=int, default=0)
    s0.add_argument("--device", default="cpu")
    s0.add_argument("--workers", type=int, default=0)
    s0.add_argument("--threads", type=int, default=1)
    s0.add_argument("--recipe", default="motion", help="train_recipe.RECIPES name (its stage-0 loss)")
    pr = sub.add_parser("probe", help="linear probes on the merged video tokens the language model receives")
    pr.add_argument("--tower", default=None, help="tower .safetensors (default: the committed microvlm's)")
    pr.add_argument("--out", default=None, help="write the rows as JSON")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--threads", type=int, default=1)
    mp = sub.add_parser("motion-probe", help="per-region probes on a gap's tokens vs the model's motion summaries")
    mp.add_argument("--model", default="data/models/microvlm")
    mp.add_argument("--train-per-class", type=int, default=40, help="0: every clip of the seed-0 train split")
    mp.add_argument("--C", type=float, default=0.01)
    mp.add_argument("--features", default="tokens",
                    choices=("tokens", "lm-hidden", "gt-au-pairs", "gt-au-frames", "gt-landmarks-pairs",
                             "gt-landmarks-frames"),
                    help="what the probe reads: the gap's merged tokens (the language model's input), the language "
                         "model's hidden states at the last prompt position (every layer), or ground truth "
                         "at the same 4 frames (averaged in pairs like a temporal patch, or frame by frame): the "
                         "ceiling that the frame sampling itself sets")
    mp.add_argument("--abs-diff", action="store_true",
                    help="add |difference| features (a linear probe cannot form them)")
    mp.add_argument("--out", default=None)
    mp.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if a.cmd == "motion-probe":
        return motion_probe(a)
    if a.cmd == "pack":
        return pack(a)
    if a.cmd == "stage0":
        return stage0(a)
    if a.cmd == "probe":
        return probe(a)
    from emoprobe import train_recipe as R

    R.use_recipe(a.recipe or R.COMMITTED)
    a.pretrain_steps = R.PRETRAIN_STEPS if a.pretrain_steps is None else a.pretrain_steps
    a.instruct_steps = R.INSTRUCT_STEPS if a.instruct_steps is None else a.instruct_steps
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
