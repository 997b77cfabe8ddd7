"""MicroVLM stage-2 harness (issue 12): how much of what a stage-0 tower encodes can the language model learn
to read, and how fast? The tower is frozen (as in stages 1-2), so its merger inputs for count:8 sampling are
computed once per clip and cached (data/cache/harness/feats_<tower sha>_<sampling>[_seed<s>].pt); the merger +
language model are then trained on classification alone (paper prompt, answer = label, class-balanced draws) and
scored by label likelihood on a dev split of 20 clips/class held out of the seed-0 train split (never the
validation slice's choices, never the test split, never the fresh-seed or selection splits).
``--extra-seeds S ...``: also train on the labelled train splits of those seeds (more identities).
``--aux W``: add an auxiliary label-free loss (landmark/AU deviations read at the answer position; no gain).
``--probe``: logistic-regression probes on the same features (``--probe-modes raw deviations two-step``,
``--fraction``, ``--extra-seeds``).
Measurements: data/benchmarks/2026-11-30_cpu_stage2_harness.txt (fifth session) and
data/benchmarks/2026-11-30_cpu_stage2_harness_3splits.txt (sixth).

  python scripts/microvlm_stage2_harness.py --lr 3e-4 [--extra-seeds 1 2]
  python scripts/microvlm_stage2_harness.py --probe --probe-modes deviations two-step [--extra-seeds 1 2]
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

def extra_split(seed):
    """The SynthFER MAFW train split of another seed, through the recipe's own loader (which refuses the
    evaluation and selection seeds, ``train_data.HELD_OUT_SEEDS``)."""
    return D.extra_train_splits([seed], "--extra-seeds", workers=1)[0]


def features(tower, choice=("count", 8), seed=0):
    """Merger inputs of every clip of the seed-0 train split (seed 0) or of another seed's train split."""
    import hashlib
    import pandas as pd

    sha = hashlib.sha256(open(tower, "rb").read()).hexdigest()[:16]      # the tower's content, not its file name
    tag = "" if seed == 0 else f"_seed{seed}"
    key = paths.cache() / "harness" / f"feats_{sha}_{choice[0]}_{choice[1]}{tag}.pt"
    key.parent.mkdir(parents=True, exist_ok=True)
    if key.exists():
        return torch.load(key)
    train_df, val_df, pool, processor, model = build()
    model.model.visual.load_state_dict(load_file(tower))
    vis = model.model.visual
    real = vis.merger
    vis.merger = _Flat()
    out = {}
    df = pd.concat([train_df, val_df]) if seed == 0 else extra_split(seed)
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
    ap.add_argument("--tower", default=str(paths.towers() / "stage0_cpu_motion-long.safetensors"),
                    help="stage-0 tower (default: the committed CPU rerun of motion-long's stage 0, data/towers/; the H200 tower of the committed MicroVLMs was not kept)")
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
    ap.add_argument("--extra-seeds", type=int, nargs="*", default=[],
                    help="also train on the labelled train splits of these seeds (more identities)")
    ap.add_argument("--probe-modes", nargs="*", default=["raw", "deviations"],
                    choices=("raw", "deviations", "two-step"))
    ap.add_argument("--fraction", type=float, default=1.0, help="probe: share of the seed-0 training clips used")
    ap.add_argument("--init", default=None, help="start from this checkpoint folder (language model + merger)")
    ap.add_argument("--save", default=None, help="save the trained model to this folder")
    ap.add_argument("--aux", type=float, default=0.0, help="weight of the auxiliary facial-motion loss")
    ap.add_argument("--aux-target", default="apex", choices=("apex", "trajectory"))
    a = ap.parse_args()
    if a.probe:
        return probe(a.tower, a.probe_modes, a.extra_seeds, a.fraction)
    feats = features(a.tower)
    if a.features_only:
        return
    train_df, val_df, pool, processor, model = build()
    model.model.visual.load_state_dict(load_file(a.tower))
    if a.init:   # continue from a trained checkpoint (its tower must be the --tower: the features are cached from it)
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(a.init)
        processor = AutoProcessor.from_pretrained(a.init)
        tw = load_file(a.tower)
        own = {k: v for k, v in model.model.visual.state_dict().items() if not k.startswith("merger.")}
        if any(not torch.equal(v, tw[k]) for k, v in own.items()):
            raise SystemExit(f"{a.init}: its vision tower is not {a.tower}")
    patch_visual(model)
    for n, p in model.model.visual.named_parameters():
        p.requires_grad_(n.startswith("merger."))
    dev = D.per_class(train_df, a.dev_per_class, 123, "dev")
    tr = train_df[~train_df.clip_id.isin(set(dev.clip_id))]
    if a.train_per_class:
        tr = D.per_class(tr, a.train_per_class, 0, "trsub")
    for s in a.extra_seeds:
        feats.update(features(a.tower, seed=s))
        tr = pd_concat(tr, extra_split(s))
    by = [tr[tr.label == l].clip_id.tolist() for l in R.LABELS]
    rows = label_rows(processor); pad = processor.tokenizer.pad_token_id
    merger = [p for n, p in model.named_parameters() if p.requires_grad and "visual.merger" in n]
    lm = [p for n, p in model.named_parameters() if p.requires_grad and "visual.merger" not in n]
    groups = [dict(params=lm, base=a.lr), dict(params=merger, base=a.lr if a.merger_lr is None else a.merger_lr)]
    head = None
    if a.aux:
        aux_t = aux_targets(pd_concat(tr, dev), a.aux_target)
        head = torch.nn.Linear(model.config.text_config.hidden_size, next(iter(aux_t.values())).shape[0])
        groups.append(dict(params=list(head.parameters()), base=a.lr))
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
        b = collate(rows, feats, pad, items)
        out = model(**b, output_hidden_states=bool(a.aux))
        loss = out.loss
        if a.aux:
            h = out.hidden_states[-1]
            first = (b["labels"] != -100).float().argmax(1) - 1      # the last prompt token: where the answer starts
            z = head(h[torch.arange(len(items)), first])
            loss = loss + a.aux * torch.nn.functional.mse_loss(z, torch.stack([aux_t[c] for c, _ in items]))
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
    if a.save:   # a loadable checkpoint (e.g. for scripts/microvlm_select.py); the visual forward is the model's own again
        del model.model.visual.forward
        model.save_pretrained(a.save)
        processor.save_pretrained(a.save)
        print(a.tag, "saved", a.save, flush=True)



def pd_concat(*dfs):
    import pandas as pd
    return pd.concat(dfs)


def aux_targets(df, kind):
    """Auxiliary label-free targets per clip from SynthFER ground truth at count:8 (4 temporal patches x 71
    landmark/AU columns, standardised): "apex": the patch of largest total AU intensity minus the clip mean, and
    its AU intensities; "trajectory": every patch minus the clip mean."""
    from emoprobe import sampling
    gt = D.GroundTruth(); Y = {}
    for _, r in df.iterrows():
        g = gt(r)
        Y[r["clip_id"]] = D.patch_targets(g, float(r["size"]), sampling.count_indices(len(g["au"]), 8), 2)
    A = np.stack(list(Y.values()))
    n_lm = 52
    cen = A - A.mean(1, keepdims=True)
    sd_c = cen.reshape(-1, A.shape[-1]).std(0) + 1e-6
    sd_a = A.reshape(-1, A.shape[-1]).std(0) + 1e-6
    out = {}
    for k, y in Y.items():
        c = (y - y.mean(0)) / sd_c
        if kind == "trajectory":
            v = c.reshape(-1)
        else:
            ap = int(np.argmax(y[:, n_lm:].sum(1)))
            v = np.concatenate([c[ap], (y[ap, n_lm:] - A[:, :, n_lm:].mean((0, 1))) / sd_a[n_lm:]])
        out[k] = torch.as_tensor(v, dtype=torch.float32)
    return out


# Linear probe on the same cached features (run: python scripts/microvlm_stage2_harness.py --probe --tower T)
def probe(tower, modes=("raw", "deviations"), extra_seeds=(), fraction=1.0, Cs=(0.001, 0.01)):
    """Logistic probes (class-balanced) on the cached merger inputs, fitted on the train split minus the dev split
    (``fraction`` of it; plus every clip of the ``extra_seeds`` train splits), scored on the dev split. Modes:
    "raw" tokens; "deviations" from the clip mean (per token position, over the 4 temporal patches); "two-step":
    a ridge readout (fitted on the same clips, no labels) from each temporal patch's tokens to its landmark/AU
    targets, both centred over the clip, then the probe on the 4 x 71 predicted deviations."""
    import pandas as pd
    from emoprobe import sampling
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    feats = features(tower)
    tr, _ = D.splits(0)
    dev = D.per_class(tr, 20, 123, "dev")
    rest = tr[~tr.clip_id.isin(set(dev.clip_id))]
    if fraction < 1.0:
        rest = rest.sample(frac=fraction, random_state=0)
    for s in extra_seeds:
        feats.update(features(tower, seed=s))
        rest = pd.concat([rest, extra_split(s)])
    gt = D.GroundTruth()

    def X(df, mode):
        f = np.stack([feats[c][0].float().numpy().reshape(4, 16, -1) for c in df.clip_id])
        return (f - f.mean(1, keepdims=True) if mode != "raw" else f).reshape(len(f), 4, -1)

    def Y(df):   # landmark/AU targets per temporal patch (count:8: 4 patches of 2 frames), centred over the clip
        y = np.stack([D.patch_targets(gt(r), float(r["size"]), sampling.count_indices(len(gt(r)["au"]), 8), 2)
                      for _, r in df.iterrows()])
        return y - y.mean(1, keepdims=True)

    print(f"probe: {len(rest)} training clips, {len(dev)} dev clips", flush=True)
    for mode in modes:
        Xr, Xd = X(rest, mode), X(dev, mode)
        if mode == "two-step":
            Yr = Y(rest)
            sd = Yr.reshape(-1, Yr.shape[-1]).std(0) + 1e-6
            A = Xr.reshape(-1, Xr.shape[-1])
            G = A.T @ A
            W = np.linalg.solve(G + np.mean(np.diag(G)) * np.eye(len(G)), A.T @ (Yr / sd).reshape(len(A), -1))
            Xr, Xd = Xr @ W, Xd @ W
        Xr, Xd = Xr.reshape(len(Xr), -1), Xd.reshape(len(Xd), -1)
        sc = StandardScaler().fit(Xr)
        for C in Cs:
            clf = LogisticRegression(C=C, max_iter=300, class_weight="balanced").fit(sc.transform(Xr), rest.label)
            print(mode, C, round(f1_score(dev.label, clf.predict(sc.transform(Xd)), average="macro"), 3), flush=True)


if __name__ == "__main__":
    main()
