"""The training loops of the embedded default models (recipes and constants: :mod:`emoprobe.train_recipe`;
data: :mod:`emoprobe.train_data`): vision3d and its cRT re-training, the MicroVLM's stage 0 (vision-tower
pretraining, cached), stages 1-2 and its validation, balanced LoRA fine-tuning; the learning-rate schedule, the
training-log CSV and the validation macro-F1 they share.

Determinism: CPU float arithmetic depends on the thread count: training uses ``torch.set_num_threads(threads)``
(default 1), and results are bit-identical for the same seed and thread count on the same machine; other thread
counts give slightly different weights.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import paths, prompts
from . import train_recipe as R
from .train_data import (Example, GroundTruth, MicroData, VisionBatches, check_manifest, encode_left, frames_for,
                         log_line, make_batch, make_batches, patch_targets, per_class, seeded_rng, set_seed,
                         splits, stage0_clips, classify_clips, tokenizer_corpus, vision_batch, vision_cache, vision_targets,
                         video_pixels, chat_prompt)
from .train_recipe import TrainError


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Macro-F1 of class indices ``0 .. n_classes - 1`` (a prediction outside them, e.g. -1 for an answer
    outside the label set, counts as wrong): the validation metric of every training loop, computed by
    :func:`emoprobe.metrics.macro_f1_score`."""
    from .metrics import macro_f1_score  # one definition of macro-F1

    return macro_f1_score(y_true, y_pred, range(n_classes))


class CsvLog:
    """The ``train_log.csv`` of a model folder: one row per logged step (:attr:`FIELDS`; floats to 5 significant
    digits), flushed at once; ``append=True`` continues an existing file."""

    FIELDS = ["model", "stage", "step", "loss", "lr", "val_loss", "val_acc", "val_macro_f1", "val_in_labels",
              "elapsed_s", "landmark_rmse_px", "au_mse_std"]

    def __init__(self, path: Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not (append and self.path.exists())
        self.f = open(self.path, "w" if new else "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=self.FIELDS, lineterminator="\n")
        if new:
            self.w.writeheader()

    def row(self, **kw):
        self.w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in kw.items()})
        self.f.flush()

    def close(self):
        self.f.close()


def cosine_lr(step: int, total: int, lr: float, warmup: int) -> float:
    """The learning rate of every training loop at ``step`` of ``total``: linear warm-up over ``warmup`` steps,
    then a cosine decay from ``lr`` to a tenth of it."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


class _Tee:
    def __init__(self, *logs):
        self.logs = logs

    def row(self, **kw):
        for lg in self.logs:
            lg.row(**kw)


def _vision_eval(model, cache, y, cfg) -> dict:
    model.eval()
    preds, losses = [], []
    with torch.no_grad():
        for i in range(0, len(y), 64):
            idx = np.arange(i, min(i + 64, len(y)))
            logits = model(vision_batch(cache, idx, None, cfg))
            losses.append(F.cross_entropy(logits, torch.as_tensor(y[idx]), reduction="sum").item())
            preds.extend(logits.argmax(1).tolist())
    return {"val_loss": sum(losses) / len(y), "val_acc": float(np.mean(np.asarray(preds) == y)),
            "val_macro_f1": macro_f1(list(y), preds, len(R.LABELS)), "preds": preds}


def train_vision(train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir, *, seed: int = 0,
                 steps: int = R.VISION_STEPS, crt_steps: int = R.CRT_STEPS, balanced_out=None,
                 eval_every: int = 250) -> dict:
    """Train vision3d (plain CE, natural long-tailed sampling) then cRT into ``balanced_out``."""
    from . import vision

    check_manifest(train_df, "vision train")
    check_manifest(val_df, "vision val")
    set_seed(seed)
    cfg = dict(vision.DEFAULT_CONFIG, labels=R.LABELS)
    t_start = time.time()
    log_line(f"vision3d: caching frames of {len(train_df)} train + {len(val_df)} val clips")
    Xtr, Xva = vision_cache(train_df, cfg), vision_cache(val_df, cfg)
    ytr = np.array([R.LABELS.index(l) for l in train_df["label"]])
    yva = np.array([R.LABELS.index(l) for l in val_df["label"]])
    model = vision.build(cfg, len(R.LABELS))
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=R.VISION_LR, weight_decay=R.VISION_WD)
    rng = seeded_rng(seed, "vision")
    out_dir = Path(out_dir)
    log = CsvLog(out_dir / "train_log.csv")
    order, pos = rng.permutation(len(ytr)), 0
    run_loss = []
    for step in range(steps):
        if pos + R.VISION_BATCH > len(order):
            order, pos = rng.permutation(len(ytr)), 0
        idx = order[pos:pos + R.VISION_BATCH]
        pos += R.VISION_BATCH
        lr = cosine_lr(step, steps, R.VISION_LR, max(1, steps // 20))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        loss = F.cross_entropy(model(vision_batch(Xtr, idx, rng, cfg)), torch.as_tensor(ytr[idx]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        run_loss.append(loss.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            ev = _vision_eval(model, Xva, yva, cfg)
            log.row(model="vision3d", stage="ce", step=step + 1, loss=float(np.mean(run_loss)), lr=lr,
                    val_loss=ev["val_loss"], val_acc=ev["val_acc"], val_macro_f1=ev["val_macro_f1"],
                    elapsed_s=time.time() - t_start)
            log_line(f"vision3d step {step + 1}/{steps} loss {np.mean(run_loss):.3f} val acc {ev['val_acc']:.3f} "
                 f"macro-F1 {ev['val_macro_f1']:.3f}")
            run_loss = []
    log.close()
    ev = _vision_eval(model, Xva, yva, cfg)
    meta = {"n_params": n_params, "steps": steps, "seed": seed, "wall_s": time.time() - t_start,
            "threads": torch.get_num_threads(),
            "train_clips": len(train_df), "val": {k: v for k, v in ev.items() if k != "preds"},
            "train_class_counts": train_df["label"].value_counts().reindex(R.LABELS, fill_value=0).astype(int).tolist()}
    vision.save(model, dict(cfg, training=dict(meta, recipe="plain cross-entropy, natural long-tailed sampling")),
                out_dir)
    result = {"vision3d": meta}
    if balanced_out is not None:
        result["vision3d-balanced"] = crt(model, cfg, Xtr, ytr, Xva, yva, balanced_out, seed=seed, steps=crt_steps,
                                          base_meta=meta)
    return result


def crt(model, cfg, Xtr, ytr, Xva, yva, out_dir, *, seed: int = 0, steps: int = R.CRT_STEPS,
        base_meta: dict | None = None) -> dict:
    """Classifier re-training (cRT): frozen features, re-initialised linear head, class-balanced sampling.

    Features are computed once per clip for two views (as stored, and horizontally flipped; no other
    augmentation) with BN in eval mode; the head is trained on them."""
    from . import vision

    t_start = time.time()
    set_seed(seed + 1)
    model.eval()
    feats = []
    with torch.no_grad():
        for flip in (False, True):
            fs = []
            for i in range(0, len(ytr), 64):
                x = vision_batch(Xtr, np.arange(i, min(i + 64, len(ytr))), None, cfg)
                fs.append(model.embed(x.flip(-1) if flip else x))
            feats.append(torch.cat(fs))
    feats = torch.stack(feats, 1)                                     # (N, 2, D)
    head = torch.nn.Linear(feats.shape[-1], len(R.LABELS))
    opt = torch.optim.AdamW(head.parameters(), lr=R.CRT_LR, weight_decay=1e-4)
    rng = seeded_rng(seed, "crt")
    by_class = [np.flatnonzero(ytr == c) for c in range(len(R.LABELS))]
    empty = [R.LABELS[c] for c, b in enumerate(by_class) if len(b) == 0]
    if empty:
        raise TrainError(f"cRT needs training clips of every class; none of {empty}")
    out_dir = Path(out_dir)
    log = CsvLog(out_dir / "train_log.csv")
    run = []
    for step in range(steps):
        cls = rng.integers(0, len(R.LABELS), R.CRT_BATCH)
        idx = np.array([by_class[c][rng.integers(len(by_class[c]))] for c in cls])
        view = rng.integers(0, 2, R.CRT_BATCH)
        lr = cosine_lr(step, steps, R.CRT_LR, max(1, steps // 20))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(head(F.dropout(feats[idx, view], cfg.get("dropout", 0.0))), torch.as_tensor(cls))
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.append(loss.item())
        if (step + 1) % 250 == 0 or step + 1 == steps:
            model.classifier.load_state_dict(head.state_dict())
            ev = _vision_eval(model, Xva, yva, cfg)
            log.row(model="vision3d-balanced", stage="crt", step=step + 1, loss=float(np.mean(run)), lr=lr,
                    val_loss=ev["val_loss"], val_acc=ev["val_acc"], val_macro_f1=ev["val_macro_f1"],
                    elapsed_s=time.time() - t_start)
            run = []
    log.close()
    model.classifier.load_state_dict(head.state_dict())
    ev = _vision_eval(model, Xva, yva, cfg)
    log_line(f"vision3d-balanced (cRT) val acc {ev['val_acc']:.3f} macro-F1 {ev['val_macro_f1']:.3f}")
    meta = {"steps": steps, "seed": seed, "wall_s": time.time() - t_start, "base": base_meta,
            "threads": torch.get_num_threads(),
            "val": {k: v for k, v in ev.items() if k != "preds"}}
    vision.save(model, dict(cfg, training=dict(meta, recipe="cRT: frozen features, class-balanced sampler")),
                out_dir)
    return meta


def build_microvlm(out_dir, pool: pd.DataFrame, gt: GroundTruth, seed: int) -> Path:
    from . import tiny

    corpus = tokenizer_corpus(pool, gt, seed)
    return tiny.build_qwen2_5_vl(out_dir, corpus=corpus, vocab_size=R.VOCAB, text=R.MICRO_TEXT, vision=R.MICRO_VISION,
                                 image_size=R.IMAGE_SIZE, seed=seed)


def new_microvlm(out_dir, pool: pd.DataFrame, gt: "GroundTruth", seed: int, device: str = "cpu"):
    """Build the untrained MicroVLM into ``out_dir`` and load it seeded, as every recipe run starts:
    returns (processor, model)."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    build_microvlm(out_dir, pool, gt, seed)
    set_seed(seed)
    processor = AutoProcessor.from_pretrained(out_dir)
    return processor, Qwen2_5_VLForConditionalGeneration.from_pretrained(out_dir).to(device)


def _target_norm(data: "MicroData", clips: pd.DataFrame) -> dict:
    """Scales of the stage-0 targets over ``clips`` (every frame): ``within``: the pooled within-clip standard
    deviation of each column (motion), floored at 2% of the column's overall deviation; ``mean``/``std``: the
    overall mean and standard deviation (used by the absolute-AU term)."""
    dev, allv = [], []
    for _, r in clips.iterrows():
        y = vision_targets(data.gt(r), float(r["size"]))
        allv.append(y)
        dev.append(y - y.mean(0, keepdims=True))
    ys, ds = np.concatenate(allv), np.concatenate(dev)
    std = ys.std(0) + 1e-4
    within = np.maximum(np.sqrt((ds ** 2).mean(0)), 0.02 * std) + 1e-4
    return {"mean": ys.mean(0).astype(np.float32), "std": std.astype(np.float32),
            "within": within.astype(np.float32), "abs_std": (ys.std(0) + 1e-3).astype(np.float32)}


def _centre(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Subtract each clip's mean over its temporal patches (rows of ``x`` grouped by ``counts``)."""
    return torch.cat([c - c.mean(0, keepdim=True) for c in torch.split(x, counts)])


def _motion_loss(pred: torch.Tensor, tgt: torch.Tensor, counts: list[int], norm: dict, n_lm: int):
    """Stage-0 loss: predictions and targets are both centred over each clip's temporal patches (identity and
    pose cancel; within-clip motion remains) and divided by the within-clip spread; landmark and AU columns are
    averaged separately and weighted :data:`~emoprobe.train_recipe.S0_W_LANDMARK` /
    :data:`~emoprobe.train_recipe.S0_W_AU`; plus :data:`~emoprobe.train_recipe.S0_W_AU_ABS` x the standardised MSE
    of the absolute AU intensities. Returns (loss, landmark-motion MSE, AU-motion MSE, abs-AU MSE)."""
    w = torch.as_tensor(norm["within"], device=pred.device)
    m = torch.as_tensor(norm["mean"], device=pred.device)
    s = torch.as_tensor(norm["std"], device=pred.device)
    e = (_centre(pred, counts) - _centre((tgt - m) / w, counts)) ** 2
    lm, au = e[:, :n_lm].mean(), e[:, n_lm:].mean()
    # the absolute term reads the same head output, rescaled from within-clip to overall units
    pa = pred[:, n_lm:] * (w[n_lm:] / s[n_lm:])
    ab = ((pa - (tgt[:, n_lm:] - m[n_lm:]) / s[n_lm:]) ** 2).mean()
    return R.S0_W_LANDMARK * lm + R.S0_W_AU * au + R.S0_W_AU_ABS * ab, lm, au, ab


def _within_r2(pred: np.ndarray, tgt: np.ndarray, counts: list[int], n_lm: int) -> dict:
    """Held-out within-clip R^2 (both centred per clip), pooled over the landmark and over the AU columns."""
    cp = np.concatenate([c - c.mean(0) for c in np.split(pred, np.cumsum(counts)[:-1])])
    ct = np.concatenate([c - c.mean(0) for c in np.split(tgt, np.cumsum(counts)[:-1])])
    out = {}
    for k, sl in (("landmark", slice(0, n_lm)), ("au", slice(n_lm, None))):
        out[k] = float(1 - ((cp[:, sl] - ct[:, sl]) ** 2).sum() / max((ct[:, sl] ** 2).sum(), 1e-12))
    return out


def stage0_readout_r2(model, processor, clips: pd.DataFrame, gt: "GroundTruth", choice=("count", 8), fit: pd.DataFrame | None = None,
                      ridge: float = 1.0) -> dict:
    """Held-out within-clip R^2 of a ridge readout from the merged tokens (flattened per temporal patch, centred
    per clip) to the centred landmark/AU targets: fitted on ``fit`` clips, scored on ``clips`` (never the test
    split). Tells how much within-clip motion the tokens the language model receives hold (the stage-0 selection
    metric, with ``scripts/microvlm_budget.py probe``)."""
    tps = int(processor.video_processor.temporal_patch_size)

    def feats(df):
        from . import sampling

        kw = {"count": int(choice[1])} if choice[0] == "count" else {"fps": float(choice[1])}
        X, Y, cnt = [], [], []
        for i in range(0, len(df), 16):
            rows = df.iloc[i:i + 16]
            frs = [sampling.sample(r["path"], strategy=choice[0], max_frames=R.MAX_FRAMES, **kw)
                   for _, r in rows.iterrows()]
            enc = processor.video_processor(videos=[f.frames for f in frs], return_tensors="pt")
            with torch.no_grad():
                o = model.model.get_video_features(enc["pixel_values_videos"], enc["video_grid_thw"]).pooler_output
            for (_, r), fr, t, thw in zip(rows.iterrows(), frs, o, enc["video_grid_thw"].tolist()):
                x = t.reshape(thw[0], -1).numpy()
                y = patch_targets(gt(r), float(r["size"]), fr.indices, tps)
                X.append(x - x.mean(0))
                Y.append(y - y.mean(0))
                cnt.append(len(x))
        return np.concatenate(X), np.concatenate(Y), cnt

    Xf, Yf, _ = feats(fit)
    Xh, Yh, ch = feats(clips)
    sd = Yf.std(0) + 1e-6
    A = Xf.T @ Xf + ridge * len(Xf) * np.eye(Xf.shape[1]) * np.mean(np.diag(Xf.T @ Xf)) / len(Xf)
    W = np.linalg.solve(A, Xf.T @ (Yf / sd))
    n_lm = int(np.asarray(gt(clips.iloc[0])["landmarks"]).shape[1]) * 2
    return _within_r2((Xh @ W) * sd, Yh, ch, n_lm)


def pretrain_vision_tower(model, processor, data: "MicroData", steps: int, device: str, workers: int, log,
                          name: str, t_start: float, clips: pd.DataFrame | None = None) -> None:
    """Stage 0 (the analogue of a VLM's separately pretrained vision encoder; here a facial-motion encoder): the
    Qwen vision tower (+ merger) learns, for each temporal patch, the 26 facial landmarks and the action-unit
    intensities of the frames it covers (SynthFER ground truth; no emotion labels, no words) through a
    temporary linear head on the grid of merged tokens (the head is discarded).
    :data:`~emoprobe.train_recipe.S0_LOSS` "absolute": MSE of the standardised targets themselves; "motion"
    (:func:`_motion_loss`): on values centred over the clip's
    temporal patches and scaled by the within-clip spread, so it asks for motion (what changes within the clip),
    not for identity and pose; plus a small absolute-AU term. ``clips``: the clips drawn from (default: the
    pretraining pool)."""
    visual = model.model.visual
    clips = data.pool if clips is None else clips
    norm = _target_norm(data, clips)
    vc = model.config.vision_config
    merge = vc.spatial_merge_size ** 2
    side = int(processor.video_processor.size["longest_edge"] ** 0.5) // vc.patch_size   # patches per side
    n_tok = side * side // merge
    head = torch.nn.Linear(n_tok * vc.out_hidden_size, len(norm["mean"])).to(device)
    params = list(visual.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=R.VISION_TOWER_LR, weight_decay=0.01)
    loader = torch.utils.data.DataLoader(VisionBatches(processor, data, clips, steps, R.S0_BATCH),
                                         batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    run = []
    n_lm = int(np.asarray(data.gt(clips.iloc[0])["landmarks"]).shape[1]) * 2   # landmark columns lead the targets
    for step, b in enumerate(loader):
        lr = cosine_lr(step, steps, R.VISION_TOWER_LR, max(1, min(50, steps // 10)))
        for g in opt.param_groups:
            g["lr"] = lr
        visual.train()
        out = model.model.get_video_features(b["pixel_values_videos"].to(device), b["video_grid_thw"].to(device))
        feats, counts = [], []
        for toks, thw in zip(out.pooler_output, b["video_grid_thw"].tolist()):
            if (thw[1] * thw[2]) // merge != n_tok:
                raise TrainError(f"{name}: stage 0 expects {n_tok} merged tokens per temporal patch, got "
                                 f"{(thw[1] * thw[2]) // merge} (square frames filling the processor's pixel budget are expected)")
            feats.append(toks.reshape(thw[0], -1))
            counts.append(int(thw[0]))
        pred = head(torch.cat(feats))
        tgt = b["targets"].to(device)
        size = float(clips.iloc[0]["size"])
        if R.S0_LOSS == "motion":
            loss, l_lm, l_au, l_ab = _motion_loss(pred, tgt, counts, norm, n_lm)
        else:   # "absolute": standardised regression of the targets themselves (the committed checkpoints' stage 0)
            tgt = (tgt - torch.as_tensor(norm["mean"], device=device)) / torch.as_tensor(norm["abs_std"], device=device)
            loss = F.mse_loss(pred, tgt)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            if R.S0_LOSS == "motion":
                # landmark error in pixels of the centred (motion) part: the within-clip error
                px = torch.sqrt(l_lm * torch.as_tensor(norm["within"][:n_lm] ** 2).mean()).item() * size
                run.append((loss.item(), px, l_au.item(), l_ab.item()))
            else:
                run.append((loss.item(), F.mse_loss(pred[:, :n_lm], tgt[:, :n_lm]).item(),
                            F.mse_loss(pred[:, n_lm:], tgt[:, n_lm:]).item(), float("nan")))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            m = np.mean(run, 0)
            if R.S0_LOSS == "motion":
                log.row(model=name, stage="vision", step=step + 1, loss=float(m[0]), lr=lr,
                        elapsed_s=time.time() - t_start, landmark_rmse_px=float(m[1]), au_mse_std=float(m[2]))
                log_line(f"{name} vision-tower {step + 1}/{steps} loss {m[0]:.4f} (within-clip landmark RMSE ~{m[1]:.3f} "
                     f"px, AU motion MSE {m[2]:.3f} / within-clip variance 1, absolute AU MSE {m[3]:.3f})")
            else:
                # landmark RMSE in pixels: standardised error times the per-coordinate std, times the frame side
                lm_px = float(np.sqrt(m[1] * np.mean(norm["abs_std"][:n_lm] ** 2)) * size)
                log.row(model=name, stage="vision", step=step + 1, loss=float(m[0]), lr=lr,
                        elapsed_s=time.time() - t_start, landmark_rmse_px=lm_px, au_mse_std=float(m[2]))
                log_line(f"{name} vision-tower {step + 1}/{steps} loss {m[0]:.4f} (landmark RMSE ~{lm_px:.2f} px, "
                     f"AU standardised MSE {m[2]:.3f})")
            run = []


def stage0_key(model, data, steps, device, clips) -> str:
    """The stage-0 cache key (16 hex digits): initial tower weights, clips, steps, every stage-0 recipe constant,
    the source of every function stage 0 runs through, device and torch thread count."""
    import inspect

    visual = model.model.visual
    h = hashlib.sha256()
    for k, v in sorted(visual.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([list(clips["clip_id"]), int(steps), R.VISION_TOWER_LR, R.S0_BATCH, R.FRAME_MENU, R.MAX_FRAMES,
                         R.S0_LOSS, R.S0_W_LANDMARK, R.S0_W_AU, R.S0_W_AU_ABS,
                         device, torch.get_num_threads(), data.seed]).encode())
    # every function stage 0 runs through, in whichever module it lives (train_data: batches, pixels, targets,
    # seeded draws; here: loss, normalisation, schedule)
    for fn in (pretrain_vision_tower, VisionBatches, video_pixels, patch_targets, vision_targets, _target_norm,
               _centre, _motion_loss, cosine_lr, seeded_rng):
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:16]


def stage0_cached(model, processor, data, steps, device, workers, log, name, t_start, clips) -> None:
    """Stage 0 through a cache: it uses no words, so MicroVLM and MicroVLM-uniform (same seed, same initial
    weights, same clips) get the identical tower; the second reuses the first's instead of recomputing it. The
    key holds everything that affects the result: initial tower weights, clips, steps, recipe constants, the
    source of the stage-0 functions, device and thread count. Its log rows are stored with it and copied into
    ``log``."""
    path = paths.cache() / "train" / f"stage0_{stage0_key(model, data, steps, device, clips)}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    # one process computes a key at a time: `make models` runs MicroVLM and MicroVLM-uniform in two chains, and
    # the second waits here for the first's tower instead of computing the same one beside it
    with open(path.with_suffix(".lock"), "w") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _stage0_locked(model, processor, data, steps, device, workers, log, name, t_start, clips, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stage0_locked(model, processor, data, steps, device, workers, log, name, t_start, clips, path) -> None:
    """:func:`stage0_cached` under its key's lock: load the cached tower, or compute and store it."""
    from safetensors.torch import load_file, save_file

    visual = model.model.visual
    rows_path = path.with_suffix(".csv")
    if not (path.exists() and rows_path.exists()):
        committed_tower(path)
    if path.exists() and rows_path.exists():
        visual.load_state_dict(load_file(str(path), device=str(device)))
        for r in pd.read_csv(rows_path).to_dict("records"):
            log.row(**{k: v for k, v in r.items() if k != "model" and pd.notna(v)}, model=name)
        log_line(f"{name}: stage 0 reused from {path.name} (identical recipe, weights and data)")
        return
    tmp_log = CsvLog(rows_path.with_suffix(".tmp.csv"))
    pretrain_vision_tower(model, processor, data, steps, device, workers, _Tee(log, tmp_log), name, t_start,
                          clips=clips)
    tmp_log.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in visual.state_dict().items()}, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)
    os.replace(rows_path.with_suffix(".tmp.csv"), rows_path)


RECOMPUTE_STAGE0_ENV = "EMOPROBE_RECOMPUTE_STAGE0"   # "1": ignore committed towers (``train --recompute-stage0``)


def committed_tower(path: Path) -> Path | None:
    """Fill the stage-0 cache entry ``path`` from a committed tower with the same cache key, if there is one.

    ``data/towers/*.json`` describe towers that :func:`stage0_cached` computed and that were then committed (stage 0
    is the longest stage on the CPU). A tower is used only if its JSON's ``cache_key`` equals this entry's key (which
    covers the initial weights, the clips, the step count, every stage-0 constant, the source of every stage-0
    function, the device and the thread count) and the file's sha256 equals the JSON's; a mismatched hash raises
    :class:`TrainError` naming the file. Returns the tower used, or None (also when
    ``EMOPROBE_RECOMPUTE_STAGE0=1``)."""
    if os.environ.get(RECOMPUTE_STAGE0_ENV) == "1":
        return None
    key = path.stem.split("_", 1)[1]
    for meta_path in sorted(paths.towers().glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("cache_key") != key:
            continue
        tower = meta_path.with_name(meta["tower"])
        rows = tower.with_suffix(".csv")
        for f in (tower, rows):
            if not f.exists():
                raise TrainError(f"{meta_path}: names {f.name}, which is missing")
        from .vision import sha256_file

        digest = sha256_file(tower)
        if digest != meta.get("sha256"):
            raise TrainError(f"{tower}: sha256 {digest[:12]}... differs from {meta_path.name}'s "
                             f"{str(meta.get('sha256'))[:12]}... (a changed or truncated tower)")
        shutil.copy2(rows, path.with_suffix(".csv.tmp"))
        shutil.copy2(tower, str(path) + ".tmp")
        os.replace(path.with_suffix(".csv.tmp"), path.with_suffix(".csv"))
        os.replace(str(path) + ".tmp", path)
        log_line(f"stage 0: cache entry {path.name} filled from the committed tower {tower.name} (same cache key; "
                 f"{RECOMPUTE_STAGE0_ENV}=1 recomputes it)")
        return tower
    return None


class _Batches(torch.utils.data.Dataset):
    """Step -> tokenised batch; lets a DataLoader prepare batches in worker processes. Batch ``step`` depends only
    on (seed, stage, step), so the order and content are identical for any number of workers."""

    def __init__(self, processor, data: "MicroData", stage: str, steps: int, size: int):
        self.processor, self.data, self.stage, self.steps, self.size = processor, data, stage, steps, size

    def __len__(self):
        return self.steps

    def __getitem__(self, step):
        return make_batches(self.processor, self.data.batch(self.stage, int(step), self.size))


def generate_answers(model, processor, examples: list[Example], max_new_tokens: int = 8) -> list[str]:
    tok = processor.tokenizer
    texts = [chat_prompt(processor, e.prompt) for e in examples]
    enc = encode_left(processor, texts, examples)
    model.eval()
    enc = {k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in enc.items()}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return [s.strip() for s in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def micro_eval(model, processor, val_df: pd.DataFrame, choice=("count", 8), batch: int = 8) -> dict:
    """Greedy answers on the validation slice with the paper prompt: accuracy, macro-F1, in-label rate."""
    prompt = prompts.render("paper", R.LABELS)
    preds, truth = [], []
    for i in range(0, len(val_df), batch):
        rows = val_df.iloc[i:i + batch]
        ex = []
        for _, r in rows.iterrows():
            fr, t = frames_for(r["path"], choice)
            ex.append(Example(fr, t, prompt, ""))
        preds += generate_answers(model, processor, ex)
        truth += list(rows["label"])
    inl = [p in R.LABELS for p in preds]
    yp = [R.LABELS.index(p) if p in R.LABELS else -1 for p in preds]
    yt = [R.LABELS.index(l) for l in truth]
    return {"val_acc": float(np.mean(np.asarray(yp) == np.asarray(yt))), "val_macro_f1": macro_f1(yt, yp, len(R.LABELS)),
            "val_in_labels": float(np.mean(inl)), "preds": preds}


def _save_hf(model, processor, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)


def _resume_check(resume, name: str, mode: str, seed: int, pretrain_steps: int, instruct_steps: int,
                  mix: dict, repolish: bool = False) -> dict:
    """The ``training.json`` of a checkpoint to polish, after checking it was trained by stages 0-2 of the
    current recipe (same model, seed, steps, task mix, merger schedule) and has not been polished already
    (``repolish``: a polished one is accepted too; its polish steps are then recorded in ``resumed_from``)."""
    f = Path(resume) / "training.json"
    if not f.exists():
        raise TrainError(f"{f}: missing; resume needs a folder written by train_microvlm")
    prior = json.loads(f.read_text())
    want = {"name": name, "mode": mode, "seed": seed, "pretrain_steps": pretrain_steps,
            "instruct_steps": instruct_steps, "instruct_mix": dict(mix), "s0_loss": R.S0_LOSS,
            "freeze_vision": R.FREEZE_VISION, "pretrain_merger": R.PRETRAIN_MERGER}
    bad = {k: (prior.get(k), v) for k, v in want.items() if prior.get(k) != v}
    if prior.get("polish_steps") and not repolish:
        bad["polish_steps"] = (prior["polish_steps"], 0)
    if bad:
        raise TrainError(f"{f}: not stages 0-2 of recipe {R.RECIPE!r}; differs in "
                         + ", ".join(f"{k} (checkpoint {a!r}, recipe {b!r})" for k, (a, b) in bad.items()))
    return prior


def train_microvlm(out_dir, *, mode: str = "lexical", seed: int = 0, pretrain_steps: int | None = None,
                   instruct_steps: int | None = None, train_df: pd.DataFrame | None = None,
                   val_df: pd.DataFrame | None = None, eval_every: int = 250, device: str = "cpu",
                   word_p: dict | None = None, workers: int = 0, vision_steps: int | None = None,
                   vision_tower=None, instruct_mix: dict | None = None, resume=None,
                   polish_steps: int | None = None, repolish: bool = False) -> dict:
    """Build and train one MicroVLM (``mode`` = word-probability mode of the pretraining captions).

    ``word_p``: the per-label emotion-word probabilities, when computed elsewhere (must equal
    ``captions.word_probs(LABELS, mode)``; lets the recipe run where wordfreq is not installed).
    ``device``: "cpu" or "cuda" (the data pipeline is identical; GPU float arithmetic differs from CPU's).
    ``workers``: DataLoader worker processes preparing batches (same batches for any number).
    ``vision_tower``: a stage-0 tower (safetensors of ``model.model.visual``) to start from instead of running
    stage 0; ``instruct_mix``: another task mix than :data:`~emoprobe.train_recipe.INSTRUCT_MIX` (both for recipe
    experiments, ``scripts/microvlm_budget.py``; the committed models use neither).
    Step counts left at None are the recipe's (:mod:`~emoprobe.train_recipe`, read at call time).

    ``resume``: a model folder this function wrote with the same recipe, seed and mode up to the end of stage 2
    (its ``training.json`` is checked); its weights are loaded and only the polish stage
    (:data:`~emoprobe.train_recipe.POLISH_STEPS`) runs, so a recipe that adds a polish stage to a committed one
    does not retrain stages 0-2. Its ``train_log.csv`` rows head the new log, and ``training.json`` says it.
    ``repolish``: ``resume`` may be a checkpoint that was already polished (diagnostics: more steps of one task,
    :data:`~emoprobe.train_recipe.POLISH_MIX`); ``training.json`` records the earlier polish under ``resumed_from``."""
    from . import captions

    vision_steps = R.VISION_TOWER_STEPS if vision_steps is None else vision_steps
    pretrain_steps = R.PRETRAIN_STEPS if pretrain_steps is None else pretrain_steps
    instruct_steps = R.INSTRUCT_STEPS if instruct_steps is None else instruct_steps
    polish_steps = R.POLISH_STEPS if polish_steps is None else polish_steps
    if train_df is None or val_df is None:
        train_df, val_df = splits(seed)
    check_manifest(train_df, "microvlm train")
    name = "microvlm" if mode == "lexical" else f"microvlm-{mode}"
    if word_p is None:
        word_p = captions.word_probs(R.LABELS, mode=mode)
    missing = set(R.LABELS) - set(word_p)
    if missing:
        raise TrainError(f"{name}: word_p lacks labels {sorted(missing)}")
    t_start = time.time()
    pool = per_class(train_df, R.POOL_PER_CLASS, seed, "pool")
    cls_set = classify_clips(train_df, pool, seed, workers)
    gt = GroundTruth()
    out_dir = Path(out_dir)
    if resume and Path(resume).resolve() == out_dir.resolve():
        raise TrainError(f"{name}: resume folder {resume} is the output folder; write the polished model elsewhere")
    data = MicroData(pool, cls_set, gt, seed, word_p, mix=instruct_mix)
    prior = _resume_check(resume, name, mode, seed, pretrain_steps, instruct_steps, data.mix,
                          repolish) if resume else None
    instruct_mix_used = dict(data.mix)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if prior is not None:   # stages 0-2 come from the checkpoint: load it instead of building a new model
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        processor = AutoProcessor.from_pretrained(resume)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(resume).to(device)
        out_dir.mkdir(parents=True)
        shutil.copy2(Path(resume) / "train_log.csv", out_dir / "train_log.csv")
        log_line(f"{name}: stages 0-2 loaded from {resume}; polish only")
    else:
        log_line(f"{name}: building tokenizer + model (seed {seed})")
        processor, model = new_microvlm(out_dir, pool, gt, seed, device)
        (out_dir / "tiny_build.json").unlink(missing_ok=True)   # random-init card; the README replaces it
    n_params = sum(p.numel() for p in model.parameters())
    log = CsvLog(out_dir / "train_log.csv", append=prior is not None)
    history = []
    if prior is None and vision_tower is not None:
        from safetensors.torch import load_file

        model.model.visual.load_state_dict(load_file(str(vision_tower), device=str(device)))
        log_line(f"{name}: stage-0 tower loaded from {vision_tower}")
    elif prior is None and vision_steps > 0:
        stage0_cached(model, processor, data, vision_steps, device, workers, log, name, t_start, stage0_clips(train_df))
    set_seed(seed + 1)   # later stages start from the same RNG state whether stage 0 ran or was reused
    if R.FREEZE_VISION:
        visual = model.model.visual
        for n, p in visual.named_parameters():
            if not n.startswith("merger."):
                p.requires_grad_(False)
    stages = [("pretrain", pretrain_steps, R.MICRO_LR), ("instruct", instruct_steps, R.INSTRUCT_LR),
              ("polish", polish_steps, R.POLISH_LR)]
    merger_trains = {"pretrain": R.PRETRAIN_MERGER, "instruct": True, "polish": R.POLISH_MERGER}
    for stage, steps, lr0 in stages[2:] if prior is not None else stages:
        if steps <= 0:
            continue
        if stage == "polish" and R.POLISH_MIX is not None:
            data.mix = dict(R.POLISH_MIX)
        trainable = [p for n, p in model.named_parameters()
                     if p.requires_grad and (merger_trains[stage] or ".merger." not in n)]
        opt = torch.optim.AdamW(trainable, lr=lr0, weight_decay=0.01, betas=(0.9, 0.98))
        run = []
        loader = torch.utils.data.DataLoader(_Batches(processor, data, stage, steps, R.MICRO_BATCH), batch_size=None,
                                             shuffle=False, num_workers=workers,
                                             persistent_workers=False, prefetch_factor=4 if workers else None)
        for step, batch in enumerate(loader):
            lr = cosine_lr(step, steps, lr0, max(1, min(50, steps // 10)))
            for g in opt.param_groups:
                g["lr"] = lr
            model.train()
            n_all = sum(b["n_examples"] for b in batch)
            loss = 0.0
            for b in batch:   # one forward per layout; the loss weighs each layout by its share of the examples
                n = b.pop("n_examples")
                b = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in b.items()}
                loss = loss + model(**b).loss * (n / n_all)
            if not torch.isfinite(loss):
                raise TrainError(f"{name}: non-finite loss at {stage} step {step}")
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            run.append(loss.item())
            last = step + 1 == steps
            if (step + 1) % 25 == 0 or last:
                row = dict(model=name, stage=stage, step=step + 1, loss=float(np.mean(run)), lr=lr,
                           elapsed_s=time.time() - t_start)
                if (stage != "pretrain" or step + 1 == steps) and ((step + 1) % eval_every == 0 or last):
                    ev = micro_eval(model, processor, val_df)
                    row.update(val_acc=ev["val_acc"], val_macro_f1=ev["val_macro_f1"], val_in_labels=ev["val_in_labels"])
                log.row(**row)
                history.append(row)
                log_line(f"{name} {stage} {step + 1}/{steps} loss {np.mean(run):.3f}"
                     + (f" val acc {row['val_acc']:.3f} F1 {row['val_macro_f1']:.3f} in-labels "
                        f"{row['val_in_labels']:.2f}" if "val_acc" in row else "")
                     + f" ({time.time() - t_start:.0f} s)")
                run = []
    log.close()
    model.eval()
    model.to("cpu")
    _save_hf(model, processor, out_dir)
    meta = {"name": name, "mode": mode, "device": device, "word_probs": word_p, "n_params": n_params, "seed": seed,
            "vision_steps": vision_steps, "pretrain_steps": pretrain_steps, "instruct_steps": instruct_steps,
            "polish_steps": polish_steps, "polish_lr": R.POLISH_LR, "polish_merger": R.POLISH_MERGER,
            "wall_s": time.time() - t_start + (prior["wall_s"] if prior else 0.0),
            "resumed_from": None if prior is None else {"path": str(resume), "wall_s": prior["wall_s"],
                                                        "recipe": prior.get("recipe"),
                                                        "polish_steps": prior.get("polish_steps", 0)},
            "pool_clips": len(pool), "cls_clips": len(cls_set), "final": history[-1] if history else None,
            "instruct_mix": instruct_mix_used, "polish_mix": dict(data.mix) if polish_steps > 0 else None,
            "recipe": R.RECIPE, "s0_loss": R.S0_LOSS,
            "freeze_vision": R.FREEZE_VISION, "pretrain_merger": R.PRETRAIN_MERGER,
            "threads": torch.get_num_threads()}
    (out_dir / "training.json").write_text(json.dumps(meta, indent=1, default=float) + "\n")
    return meta


def lora_targets(model) -> list[str]:
    """Leaf names of the language model's linear layers: ``q_proj``/``v_proj`` when present, else all of them
    (never the LM head or vision tower)."""
    lm = None
    for attr in ("language_model",):
        lm = getattr(getattr(model, "model", model), attr, None) or getattr(model, attr, None)
    if lm is None and hasattr(model, "get_decoder"):
        lm = model.get_decoder()
    if lm is None:
        raise TrainError(f"{type(model).__name__}: cannot find the language model to place LoRA adapters in")
    leaves = sorted({n.split(".")[-1] for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear)})
    if not leaves:
        raise TrainError(f"{type(model).__name__}: its language model has no linear layers")
    if {"q_proj", "v_proj"} <= set(leaves):
        return ["q_proj", "v_proj"]
    return [l for l in leaves if l != "lm_head"]


def lora_balanced(model_path, manifest: pd.DataFrame, n_per_class: int, out_dir, steps: int = R.LORA_STEPS,
                  lr: float = R.LORA_LR, seed: int = 0, device: str = "auto", *, r: int = R.LORA_R,
                  alpha: int = R.LORA_ALPHA, batch_size: int = R.LORA_BATCH, labels=None,
                  frame_choice=("count", 8), merge: str | bool = "auto") -> dict:
    """LoRA fine-tuning on a class-balanced subset (``n_per_class`` per class) with the paper prompt.

    Works for any HF VLM with a chat template (MicroVLM on CPU, a 7B VLM on a GPU). Saves the adapter
    (``adapter/``: adapter_config.json + adapter_model.safetensors) and, when ``merge`` (auto: models under
    100 M parameters), a merged ordinary checkpoint + processor in ``out_dir`` that the HF backend loads by path.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    labels = list(labels or R.LABELS)
    manifest = check_manifest(manifest, "lora manifest") if labels == R.LABELS else manifest
    mp = Path(model_path)
    if not mp.exists() and not str(model_path).count("/") == 1:
        raise TrainError(f"lora_balanced: model {model_path} not found")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    set_seed(seed)
    t_start = time.time()
    subset = per_class(manifest, n_per_class, seed, "lora", labels)
    processor = AutoProcessor.from_pretrained(model_path)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype).to(device)
    n_base = sum(p.numel() for p in model.parameters())
    targets = lora_targets(model)
    pattern = r".*language_model.*\.(" + "|".join(targets) + r")$"
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.05, target_modules=pattern, bias="none")
    model = get_peft_model(model, cfg)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    prompt = prompts.render("paper", labels)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    log = CsvLog(out_dir / "train_log.csv")
    frames_cache = {}
    run = []
    for step in range(steps):
        rng = seeded_rng(seed, "lora", step)
        rows = subset.iloc[rng.integers(0, len(subset), batch_size)]
        ex = []
        for _, row in rows.iterrows():
            if row["clip_id"] not in frames_cache:
                frames_cache[row["clip_id"]] = frames_for(row["path"], frame_choice)
            fr, t = frames_cache[row["clip_id"]]
            ex.append(Example(fr, t, prompt, row["label"], "classify"))
        batch = make_batch(processor, ex)
        batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
        if "pixel_values_videos" in batch:
            batch["pixel_values_videos"] = batch["pixel_values_videos"].to(dtype)
        cur = cosine_lr(step, steps, lr, max(1, steps // 10))
        for g in opt.param_groups:
            g["lr"] = cur
        model.train()
        loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise TrainError(f"lora: non-finite loss at step {step}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.append(loss.item())
        if (step + 1) % 25 == 0 or step + 1 == steps:
            log.row(model="lora-balanced", stage="lora", step=step + 1, loss=float(np.mean(run)), lr=cur,
                    elapsed_s=time.time() - t_start)
            log_line(f"lora {step + 1}/{steps} loss {np.mean(run):.3f}")
            run = []
    log.close()
    model.save_pretrained(out_dir / "adapter")
    (out_dir / "adapter" / "README.md").unlink(missing_ok=True)   # peft's empty template card; ours is above
    # the base path recorded in the adapter config: repo-relative when inside the repository
    try:
        rel = str(Path(model_path).resolve().relative_to(paths.root()))
    except (ValueError, FileNotFoundError):
        rel = str(model_path)
    acfg = out_dir / "adapter" / "adapter_config.json"
    c = json.loads(acfg.read_text())
    c["base_model_name_or_path"] = rel
    acfg.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    do_merge = (n_base < 100e6) if merge == "auto" else bool(merge)
    if do_merge:
        merged = model.merge_and_unload()
        merged.to("cpu").to(torch.float32).eval()
        _save_hf(merged, processor, out_dir)
    meta = {"base": rel, "n_per_class": n_per_class, "clips": len(subset), "steps": steps, "lr": lr, "seed": seed,
            "r": r, "alpha": alpha, "targets": targets, "trainable_params": n_train, "base_params": n_base,
            "merged": do_merge, "device": device, "wall_s": time.time() - t_start}
    (out_dir / "training.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta
