"""MicroVLM stage-2 harness (issue 12): how much of what a stage-0 tower encodes can the language model learn
to read, and how fast? The tower is frozen (as in stages 1-2), so its merger inputs for count:8 sampling are
computed once per clip and cached (data/cache/harness/feats_<tower sha>_<sampling>.pt); the merger + language model are then trained on
classification alone (paper prompt, answer = label, class-balanced draws) and scored by label likelihood on a dev
split of 20 clips/class held out of the train split (never the validation slice's choices, never the test split).
``--probe``: logistic-regression probes on the same features (raw tokens, deviations from the clip mean).
Measurements: data/benchmarks/2026-11-30_cpu_stage2_harness.txt.

  python scripts/microvlm_stage2_harness.py --tower data/cache/train/stage0_<key>.safetensors --lr 3e-4
  python scripts/microvlm_stage2_harness.py --tower ... --probe
"""
import os, sys, time, json, argparse
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np, torch
from emoprobe import threads; threads.configure()
from emoprobe import paths, train_data as D, train_loops as TL, train_recipe as R
from safetensors.torch import load_file


def build(seed=0):
    import tempfile

    train_df, val_df = D.splits(seed)
    pool = D.per_class(train_df, R.POOL_PER_CLASS, seed, "pool")
    gt = D.GroundTruth()
    with tempfile.TemporaryDirectory() as d:
        processor, model = TL.new_microvlm(d, pool, gt, seed)
    return train_df, val_df, pool, processor, model

class _Flat(torch.nn.Module):
    def forward(self, x):
        return x.reshape(-1, 4 * x.shape[-1])

def features(tower, choice=("count", 8)):
    import hashlib

    sha = hashlib.sha256(open(tower, "rb").read()).hexdigest()[:16]      # the tower's content, not its file name
    key = paths.cache() / "harness" / f"feats_{sha}_{choice[0]}_{choice[1]}.pt"
    key.parent.mkdir(parents=True, exist_ok=True)
    if key.exists():
        return torch.load(key)
    train_df, val_df, pool, processor, model = build()
    model.model.visual.load_state_dict(load_file(tower))
    vis = model.model.visual
    real = vis.merger
    vis.merger = _Flat()
    out = {}
    import pandas as pd
    df = pd.concat([train_df, val_df])
    t0 = time.time()
    for i, (_, r) in enumerate(df.iterrows()):
        fr, t = D.frames_for(r["path"], choice)
        enc = processor.video_processor(videos=[fr], video_metadata=[D.video_metadata(fr, t)], return_tensors="pt")
        with torch.no_grad():
            o = vis(enc["pixel_values_videos"], grid_thw=enc["video_grid_thw"]).pooler_output
        out[r["clip_id"]] = (o.to(torch.float16), enc["video_grid_thw"][0].clone(), 2.0 / float(D.video_fps(t)))
        if i % 500 == 0:
            print("feat", i, time.time() - t0, flush=True)
    vis.merger = real
    torch.save(out, key)
    return out

def label_rows(processor):
    """Token rows (input_ids, mm_token_type_ids, labels) of the paper prompt + each label, count:8 layout."""
    from emoprobe import prompts
    prompt = prompts.render("paper", R.LABELS)
    fr = np.zeros((8, 112, 112, 3), np.uint8); t = np.linspace(0, 3, 8)
    rows = {}
    for lab in R.LABELS:
        b = D.make_batch(processor, [D.Example(fr, t, prompt, lab)])
        rows[lab] = {k: b[k][0] for k in ("input_ids", "mm_token_type_ids", "labels") if k in b}
    return rows

def collate(rows, feats, pad_id, items):
    """items: list of (clip_id, label)."""
    L = max(len(rows[l]["input_ids"]) for _, l in items)
    B = len(items)
    ids = torch.full((B, L), pad_id); att = torch.zeros((B, L), dtype=torch.long)
    mm = torch.zeros((B, L), dtype=torch.long); lab = torch.full((B, L), -100)
    px, grid, sgt = [], [], []
    for i, (c, l) in enumerate(items):
        r = rows[l]; n = len(r["input_ids"])
        ids[i, L - n:] = r["input_ids"]; att[i, L - n:] = 1; lab[i, L - n:] = r["labels"]
        if "mm_token_type_ids" in r:
            mm[i, L - n:] = r["mm_token_type_ids"]
        f, g, s = feats[c]
        px.append(f.float()); grid.append(g); sgt.append(s)
    return dict(input_ids=ids, attention_mask=att, mm_token_type_ids=mm, labels=lab,
                pixel_values_videos=torch.cat(px).reshape(-1, px[0].shape[-1] // 4),
                video_grid_thw=torch.stack(grid), second_per_grid_ts=torch.tensor(sgt))

def patch_visual(model):
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    vis = model.model.visual
    def fwd(hidden_states, grid_thw=None, **kw):
        return BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=vis.merger(hidden_states))
    vis.forward = fwd

def score_eval(model, rows, feats, pad_id, clips, labels, bs=44):
    model.eval()
    items = [(c, l) for c in clips for l in R.LABELS]
    losses = []
    with torch.no_grad():
        for i in range(0, len(items), bs):
            b = collate(rows, feats, pad_id, items[i:i + bs])
            out = model(**{k: v for k, v in b.items() if k != "labels"})
            lg = out.logits[:, :-1].float(); tg = b["labels"][:, 1:]
            ll = torch.nn.functional.cross_entropy(lg.transpose(1, 2), tg.clamp(min=0), reduction="none")
            ll = (ll * (tg != -100)).sum(1)
            losses.append(ll)
    S = torch.cat(losses).reshape(len(clips), len(R.LABELS)).numpy()
    pred = S.argmin(1); yt = np.array([R.LABELS.index(l) for l in labels])
    f1 = TL.macro_f1(list(yt), list(pred), len(R.LABELS))
    top = np.bincount(pred, minlength=11).max() / len(pred)
    return dict(f1=f1, acc=float((pred == yt).mean()), top=float(top))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tower", default="/work/main/data/cache/train/stage0_4c8cd75c41feda29.safetensors")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--merger-lr", type=float, default=None)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--dev-per-class", type=int, default=20)
    ap.add_argument("--train-per-class", type=int, default=0, help="0: all remaining, class-balanced draws")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="x")
    ap.add_argument("--features-only", action="store_true")
    ap.add_argument("--probe", action="store_true", help="linear probes on the cached features instead")
    a = ap.parse_args()
    if a.probe:
        return probe(a.tower)
    feats = features(a.tower)
    if a.features_only:
        return
    train_df, val_df, pool, processor, model = build()
    model.model.visual.load_state_dict(load_file(a.tower))
    patch_visual(model)
    for n, p in model.model.visual.named_parameters():
        p.requires_grad_(n.startswith("merger."))
    dev = D.per_class(train_df, a.dev_per_class, 123, "dev")
    tr = train_df[~train_df.clip_id.isin(set(dev.clip_id))]
    if a.train_per_class:
        tr = D.per_class(tr, a.train_per_class, 0, "trsub")
    by = [tr[tr.label == l].clip_id.tolist() for l in R.LABELS]
    rows = label_rows(processor); pad = processor.tokenizer.pad_token_id
    merger = [p for n, p in model.named_parameters() if p.requires_grad and "visual.merger" in n]
    lm = [p for n, p in model.named_parameters() if p.requires_grad and "visual.merger" not in n]
    groups = [dict(params=lm, base=a.lr), dict(params=merger, base=a.merger_lr or a.lr)]
    opt = torch.optim.AdamW([dict(params=g["params"], lr=g["base"]) for g in groups], weight_decay=a.wd, betas=(0.9, 0.98))
    rng = np.random.default_rng(a.seed)
    t0 = time.time(); run = []
    hist = []
    for step in range(a.steps):
        f = TL.cosine_lr(step, a.steps, 1.0, a.warmup)
        for g, gg in zip(opt.param_groups, groups):
            g["lr"] = gg["base"] * f
        items = []
        for _ in range(a.bs):
            c = int(rng.integers(11)); items.append((by[c][int(rng.integers(len(by[c])))], R.LABELS[c]))
        model.train()
        loss = model(**collate(rows, feats, pad, items)).loss
        opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step(); run.append(loss.item())
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            ev = score_eval(model, rows, feats, pad, dev.clip_id.tolist(), dev.label.tolist())
            ev.update(step=step + 1, loss=float(np.mean(run)), s=time.time() - t0); run = []
            hist.append(ev)
            print(a.tag, json.dumps(ev), flush=True)
    ev = score_eval(model, rows, feats, pad, val_df.clip_id.tolist(), val_df.label.tolist())
    print(a.tag, "VAL", json.dumps(ev), flush=True)



# Linear probe on the same cached features (run: python scripts/microvlm_stage2_harness.py --probe --tower T)
def probe(tower):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    feats = features(tower)
    tr, _ = D.splits(0)
    dev = D.per_class(tr, 20, 123, "dev")
    rest = tr[~tr.clip_id.isin(set(dev.clip_id))]

    def X(df, mode):
        out = []
        for c in df.clip_id:
            f = feats[c][0].float().numpy().reshape(4, 16, -1)
            out.append((f - f.mean(0, keepdims=True) if mode == "deviations" else f).reshape(-1))
        return np.asarray(out)

    for mode in ("raw", "deviations"):
        sc = StandardScaler().fit(X(rest, mode))
        for C in (0.001, 0.01):
            clf = LogisticRegression(C=C, max_iter=300, class_weight="balanced").fit(sc.transform(X(rest, mode)),
                                                                                    rest.label)
            print(mode, C, round(f1_score(dev.label, clf.predict(sc.transform(X(dev, mode))), average="macro"), 3),
                  flush=True)


if __name__ == "__main__":
    main()
