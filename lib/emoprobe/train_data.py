"""The data of the training recipes (:mod:`emoprobe.train_recipe`): seeded generators, the validation split,
class-balanced subsets, SynthFER ground truth, the frames of a clip, the MicroVLM's examples and tokenised
batches, the stage-0 clips, pixels and targets, and the vision classifier's frame cache. No optimiser, no
training step (those are in :mod:`emoprobe.train_loops`).

Video timing convention (the HF backend's, ``hf.sampling_fps``; see :func:`video_metadata`): each video is
passed to the Qwen processor with metadata whose sampled frame rate is 1 / median of the positive steps between
the frames' timestamps (1 frame: 1.0 fps), so the model's temporal M-RoPE positions follow real seconds, as in
Qwen2.5-VL, identically in training and inference.

Determinism: all randomness comes from :func:`seeded_rng` (numpy Generators derived from ``seed`` and tags) and
:func:`set_seed`; data order, frame draws and caption draws never depend on the word-probability mode.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import paths, prompts
from . import train_recipe as R
from .sampling import sampled_fps as video_fps  # noqa: F401  (the HF backend's convention, one definition)
from .train_recipe import TrainError


def log_line(msg: str) -> None:
    """Print one time-stamped progress line of training (flushed)."""
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def set_seed(seed: int) -> None:
    """Seed Python's, numpy's global and torch's generators (model initialisation, dropout)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def seeded_rng(seed: int, *tags) -> np.random.Generator:
    """An independent generator for (seed, tags...): streams never depend on each other."""
    h = hashlib.sha256(json.dumps([int(seed), *map(str, tags)]).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def check_manifest(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """``df`` if it is a non-empty manifest (clip_id, path, label) of MAFW labels, else :class:`TrainError`
    naming ``what``."""
    need = {"clip_id", "path", "label"}
    if not isinstance(df, pd.DataFrame):
        raise TrainError(f"{what}: expected a manifest DataFrame, got {type(df).__name__}")
    miss = need - set(df.columns)
    if miss:
        raise TrainError(f"{what}: manifest lacks columns {sorted(miss)}")
    if df.empty:
        raise TrainError(f"{what}: manifest is empty")
    bad = sorted(set(df["label"]) - set(R.LABELS))
    if bad:
        raise TrainError(f"{what}: labels {bad} are not MAFW labels {R.LABELS}")
    return df


def per_class(df: pd.DataFrame, n: int, seed: int, tag: str, labels=None) -> pd.DataFrame:
    """``n`` clips of every label (seeded, independent of row order); raises naming the short classes."""
    labels = list(labels or R.LABELS)
    d = df.sort_values("clip_id", kind="stable").reset_index(drop=True)
    counts = d["label"].value_counts()
    short = [f"{c} ({int(counts.get(c, 0))})" for c in labels if counts.get(c, 0) < n]
    if short:
        raise TrainError(f"{tag}: need {n} clips per class; too few in " + ", ".join(short))
    rng = seeded_rng(seed, "per_class", tag)
    rows = []
    for c in labels:
        idx = np.flatnonzero(d["label"].to_numpy() == c)
        rows.extend(idx[rng.permutation(len(idx))[:n]])
    return d.iloc[sorted(rows)].reset_index(drop=True)


def splits(seed: int = 0, train_df: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train_rest, val): the validation slice is :data:`~emoprobe.train_recipe.VAL_PER_CLASS` clips per class of
    the train split."""
    if train_df is None:
        from . import synthfer

        train_df = synthfer.dataset("mafw", "train", seed=seed, workers=max(1, min(2, os.cpu_count() or 1)))
    train_df = check_manifest(train_df, "train split")
    val = per_class(train_df, R.VAL_PER_CLASS, seed, "val")
    rest = train_df[~train_df["clip_id"].isin(set(val["clip_id"]))].sort_values("clip_id").reset_index(drop=True)
    return rest, val


class GroundTruth:
    """Small cache of SynthFER ground truth by clip_id."""

    def __init__(self):
        self._d = {}

    def __call__(self, row):
        k = row["clip_id"]
        if k not in self._d:
            from . import synthfer

            self._d[k] = synthfer.load_gt(row)
        return self._d[k]


# seeds of SynthFER splits that judge models and so never train one: the fresh-seed evaluation split
# (scripts/eval_models.py) and the 220-clip selection split (scripts/microvlm_select.py)
HELD_OUT_SEEDS = (7919, 4242)


def extra_train_splits(seeds, what: str, workers: int | None = None) -> list[pd.DataFrame]:
    """The SynthFER MAFW train splits generated with ``seeds`` (new identities, MAFW's long-tailed proportions),
    generated on first use. ``what`` names the recipe constant in errors; a seed of :data:`HELD_OUT_SEEDS` is
    refused."""
    from . import synthfer

    bad = sorted(set(int(s) for s in seeds) & set(HELD_OUT_SEEDS))
    if bad:
        raise TrainError(f"{what} must not hold {bad}: seeds {list(HELD_OUT_SEEDS)} are the fresh-seed evaluation "
                         "and selection splits")
    w = workers if workers else max(1, min(2, os.cpu_count() or 1))
    return [check_manifest(synthfer.dataset("mafw", "train", seed=int(s), workers=w), f"{what} seed {s}")
            for s in seeds]


def stage0_clips(train_df: pd.DataFrame, workers: int | None = None) -> pd.DataFrame:
    """The clips stage 0 draws from: the non-validation train clips, then (recipe :data:`~emoprobe.train_recipe.S0_EXTRA_SEEDS`) every
    clip of further SynthFER MAFW train splits generated with those seeds (stage 0 reads no label)."""
    if not R.S0_EXTRA_SEEDS:
        return train_df
    return pd.concat([train_df, *extra_train_splits(R.S0_EXTRA_SEEDS, "S0_EXTRA_SEEDS", workers)], ignore_index=True)


def classify_clips(train_df: pd.DataFrame, pool: pd.DataFrame, seed: int, workers: int | None = None) -> pd.DataFrame:
    """The labelled clips of stage 2's classification examples (drawn class-balanced when
    :data:`~emoprobe.train_recipe.CLS_PER_CLASS` is None): :data:`~emoprobe.train_recipe.CLS_PER_CLASS` clips per
    class of the pool, or every non-validation train clip, then (recipe
    :data:`~emoprobe.train_recipe.CLS_EXTRA_SEEDS`) every clip of the train splits of those seeds (more
    identities, same long-tailed proportions)."""
    base = train_df if R.CLS_PER_CLASS is None else per_class(pool, R.CLS_PER_CLASS, seed, "cls")
    if not R.CLS_EXTRA_SEEDS:
        return base
    return pd.concat([base, *extra_train_splits(R.CLS_EXTRA_SEEDS, "CLS_EXTRA_SEEDS", workers)], ignore_index=True)


def vision_cache(df: pd.DataFrame, cfg: dict, n_store: int = R.VISION_STORE) -> np.ndarray:
    """(N, n_store, size, size, 3) uint8: ``n_store`` uniformly chosen frames of each clip, cropped and resized
    exactly as the backend does (``vision.crop_resize``). Cached on disk under ``paths.cache()/train`` by clip
    ids, sha256 and the preprocessing settings."""
    from . import sampling, vision

    size, crop = int(cfg["size"]), cfg.get("crop")
    key = hashlib.sha256(json.dumps([list(df["clip_id"]), list(df["sha256"] if "sha256" in df else df["path"]),
                                     n_store, size, crop]).encode()).hexdigest()[:16]
    f = paths.cache() / "train" / f"vision_{key}.npy"
    if f.exists():
        return np.load(f)
    out = np.zeros((len(df), n_store, size, size, 3), np.uint8)
    t0 = time.time()
    for i, path in enumerate(df["path"]):
        fr = sampling.sample(path, strategy="count", count=n_store).frames
        if len(fr) < n_store:   # short clip: repeat frames by uniform index selection
            fr = fr[vision.uniform_indices(len(fr), n_store)]
        x = vision.crop_resize(fr, size, crop) * 255.0
        out[i] = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        if (i + 1) % 500 == 0:
            log_line(f"vision cache: {i + 1}/{len(df)} clips decoded ({time.time() - t0:.0f} s)")
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, f)
    return out


def vision_batch(cache: np.ndarray, idx: np.ndarray, rng: np.random.Generator | None, cfg: dict,
                  n_frames: int = 16) -> torch.Tensor:
    """Normalised (B, 3, T, H, W). rng=None: no augmentation (frames 1, 3, 5, ... of the 32-frame grid)."""
    step = cache.shape[1] // n_frames
    xs = []
    for i in idx:
        if rng is None:
            fi = np.arange(n_frames) * step + step // 2
        else:
            fi = np.arange(n_frames) * step + rng.integers(0, step, n_frames)
        x = torch.from_numpy(cache[i][fi]).float() / 255.0           # (T, H, W, 3)
        if rng is not None:
            if rng.random() < 0.5:
                x = x.flip(2)
            c = float(rng.uniform(0.75, 1.25))
            b = float(rng.uniform(-0.1, 0.1))
            x = ((x - 0.5) * c + 0.5 + b).clamp(0, 1)
            dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
            x = torch.roll(x, shifts=(dy, dx), dims=(1, 2))
        xs.append(x)
    x = torch.stack(xs)                                               # (B, T, H, W, 3)
    m = torch.tensor(cfg["mean"]).view(1, 1, 1, 1, 3)
    s = torch.tensor(cfg["std"]).view(1, 1, 1, 1, 3)
    return ((x - m) / s).permute(0, 4, 1, 2, 3).contiguous()


def video_metadata(frames: np.ndarray, t) -> "object":
    """transformers ``VideoMetadata`` for already-sampled frames (the Qwen processor derives time positions
    from ``sampled_fps``): the HF backend and training use this same convention."""
    from transformers.video_utils import VideoMetadata

    n = int(len(frames))
    return VideoMetadata(total_num_frames=n, fps=video_fps(t), frames_indices=list(range(n)),
                         height=int(frames.shape[1]), width=int(frames.shape[2]))


def chat_prompt(processor, prompt: str) -> str:
    """The user turn (one video, then the text) + the assistant header, through the model's chat template."""
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


@dataclass
class Example:
    frames: np.ndarray
    t: np.ndarray
    prompt: str
    answer: str
    task: str = ""
    context: list | None = None   # MSCE layout: one motion text per gap (frames are the keyframes)


def encode_left(processor, texts: list[str], examples: list[Example]):
    """Processor call on texts + the examples' videos (with timing metadata), left padded."""
    tok = processor.tokenizer
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        return processor(text=texts, videos=[e.frames for e in examples],
                         video_metadata=[video_metadata(e.frames, e.t) for e in examples],
                         return_tensors="pt", padding=True)
    finally:
        tok.padding_side = old_side


def _msce_inputs(processor, examples: list[Example], add_text: list[str]):
    """Processor inputs of MSCE-layout examples, built by the HF backend's own builder (``HFBackend._prepare``,
    the one ``run.msce`` goes through at inference), with ``add_text`` appended after the assistant header."""
    from . import hf

    b = hf.HFBackend.__new__(hf.HFBackend)     # only the input builder is used: no model is needed
    b.spec, b.processor, b.tokenizer = dict(hf.DEFAULTS), processor, processor.tokenizer
    old_side = processor.tokenizer.padding_side
    processor.tokenizer.padding_side = "left"
    try:
        inputs, _, _ = b._prepare([(e.frames, e.t, e.prompt, list(e.context)) for e in examples], add_text=add_text)
    finally:
        processor.tokenizer.padding_side = old_side
    return inputs


def make_batches(processor, examples: list[Example]) -> list[dict]:
    """:func:`make_batch` per layout: the video examples in one batch, the MSCE-layout ones (``context`` set) in
    another (a processor call takes one layout). Each batch carries ``n_examples``."""
    out = []
    for group in ([e for e in examples if e.context is None], [e for e in examples if e.context is not None]):
        if group:
            b = make_batch(processor, group)
            b["n_examples"] = len(group)
            out.append(b)
    return out


def make_batch(processor, examples: list[Example]) -> dict:
    """Tokenised batch (left padded) with ``labels`` = -100 except the answer tokens and the end-of-turn token.
    All examples in the video layout, or all in the MSCE layout (``context`` set)."""
    tok = processor.tokenizer
    eot = tok.eos_token or "<|im_end|>"
    msce = [e.context is not None for e in examples]
    if any(msce):
        if not all(msce):
            raise TrainError("make_batch: video-layout and MSCE-layout examples cannot share a batch")
        enc = _msce_inputs(processor, examples, [e.answer + eot for e in examples])
    else:
        texts = [chat_prompt(processor, e.prompt) + e.answer + eot for e in examples]
        enc = encode_left(processor, texts, examples)
    ids = enc["input_ids"]
    labels = torch.full_like(ids, -100)
    for i, e in enumerate(examples):
        ans = tok(e.answer + eot, add_special_tokens=False)["input_ids"]
        n = len(ans)
        if ids[i, -n:].tolist() != ans:
            raise TrainError(f"answer {e.answer!r} does not tokenise identically at the end of its prompt")
        labels[i, -n:] = ids[i, -n:]
    enc["labels"] = labels
    return dict(enc)


def frames_for(path: str, choice) -> tuple[np.ndarray, np.ndarray]:
    """(frames, timestamps) of a clip sampled by ``choice`` = ("count", n) or ("fps", rate), at most
    :data:`~emoprobe.train_recipe.MAX_FRAMES`: how every training and validation example draws its frames."""
    from . import sampling

    strategy, v = choice
    kw = {"count": int(v)} if strategy == "count" else {"fps": float(v)}
    fr = sampling.sample(path, strategy=strategy, max_frames=R.MAX_FRAMES, **kw)
    return fr.frames, fr.t


def tokenizer_corpus(pool: pd.DataFrame, gt: GroundTruth, seed: int) -> list[str]:
    """The BPE training corpus: identical for both word-probability modes (every emotion word included with
    probability 1), plus every prompt and motion summary form the models will meet."""
    from . import captions, tiny

    allp = {l: 1.0 for l in R.LABELS}
    lines = list(tiny.default_corpus())
    rng = seeded_rng(seed, "tokenizer-corpus")
    for _, row in pool.iterrows():
        g = gt(row)
        lines.append(captions.caption(row, g, rng, allp))
        d = float(row["duration_s"])
        for a in np.arange(0.0, d - 1.0, 1.0):
            lines.append(captions.motion_summary(g, a, a + 1.0))
    lines += [prompts.render("paper", R.LABELS), prompts.DESCRIBE["motion"], R.CAPTION_PROMPT] * 20
    lines += [l for l in R.LABELS] * 20
    return lines


class MicroData:
    """All examples of the MicroVLM recipe; every draw is a function of (seed, stage, step, slot) only."""

    def __init__(self, pool: pd.DataFrame, cls_set: pd.DataFrame, gt: GroundTruth, seed: int, word_p: dict,
                 mix: dict | None = None):
        self.pool, self.cls_set, self.gt, self.seed, self.word_p = pool, cls_set, gt, seed, word_p
        self.mix = dict(R.INSTRUCT_MIX if mix is None else mix)
        self.cls_prompt = prompts.render("paper", R.LABELS)
        self.msce_prompt = prompts.render("msce", R.LABELS)
        self._gaps = {}
        self._by_class = [np.flatnonzero(cls_set["label"].to_numpy() == c) for c in R.LABELS]
        empty = [c for c, b in zip(R.LABELS, self._by_class) if len(b) == 0]
        if empty:
            raise TrainError(f"classification set has no clips of {empty}")

    def _balanced_row(self, rng):
        """A class uniformly, then one of its clips (class-balanced draws from the classification set)."""
        idx = self._by_class[int(rng.integers(len(R.LABELS)))]
        return self.cls_set.iloc[int(idx[int(rng.integers(len(idx)))])]

    def _row(self, df, rng):
        return df.iloc[int(rng.integers(len(df)))]

    def caption_example(self, rng) -> Example:
        from . import captions

        row = self._row(self.pool, rng)
        choice = R.FRAME_MENU[int(rng.integers(len(R.FRAME_MENU)))]
        text = captions.caption(row, self.gt(row), rng, self.word_p)
        fr, t = frames_for(row["path"], choice)
        return Example(fr, t, R.CAPTION_PROMPT, text, "caption")

    def classify_example(self, rng) -> Example:
        row = self._balanced_row(rng) if R.CLS_PER_CLASS is None else self._row(self.cls_set, rng)
        choice = R.FRAME_MENU[int(rng.integers(len(R.FRAME_MENU)))]
        fr, t = frames_for(row["path"], choice)
        return Example(fr, t, self.cls_prompt, row["label"], "classify")

    def motion_example(self, rng) -> Example:
        from . import captions, sampling

        if R.MOTION_FROM not in ("pool", "cls"):
            raise TrainError(f"MOTION_FROM must be 'pool' or 'cls', not {R.MOTION_FROM!r}")
        row = self._row(self.pool if R.MOTION_FROM == "pool" else self.cls_set, rng)
        if row["clip_id"] in self._gaps:
            kt, gaps = self._gaps[row["clip_id"]]
        else:
            keys, g = sampling.keyframes_gaps(row["path"], key_fps=1, m=4)
            kt, gaps = keys.t.copy(), [(x.frames, x.t) for x in g]
            if R.MOTION_FROM == "pool":   # 660 clips: keep their decoded gaps; thousands would not fit in memory
                self._gaps[row["clip_id"]] = (kt, gaps)
        j = int(rng.integers(len(gaps)))
        fr, t = gaps[j]
        text = captions.motion_summary(self.gt(row), float(kt[j]), float(kt[j + 1]))
        return Example(fr, t, prompts.DESCRIBE["motion"], text, "motion")

    def msce_example(self, rng) -> Example:
        """Classification in MSCE's stage-2 layout (``run.msce``: keyframes at 1 fps interleaved with one motion
        text per gap, the ``msce`` prompt), the texts being ground-truth motion summaries of the gaps; answer =
        the label. Trains the format only (no contrast with the plain layout). ``Example.t`` holds the
        keyframes' times and ``Example.context`` the texts."""
        from . import captions, sampling

        row = self._balanced_row(rng)
        keys, gaps = sampling.keyframes_gaps(row["path"], key_fps=1, m=4)
        g = self.gt(row)
        ctx = [captions.motion_summary(g, float(keys.t[j]), float(keys.t[j + 1])) for j in range(len(gaps))]
        return Example(keys.frames, keys.t, self.msce_prompt, row["label"], "msce", context=ctx)

    def batch(self, stage: str, step: int, size: int) -> list[Example]:
        out = []
        for slot in range(size):
            rng = seeded_rng(self.seed, "micro", stage, step, slot)
            if stage == "pretrain":
                out.append(self.caption_example(rng))
            else:
                u = rng.random()
                edges = np.cumsum([self.mix.get(k, 0.0) for k in ("classify", "msce", "motion")])
                if u < edges[0]:
                    out.append(self.classify_example(rng))
                elif u < edges[1]:
                    out.append(self.msce_example(rng))
                elif u < edges[2]:
                    out.append(self.motion_example(rng))
                else:
                    out.append(self.caption_example(rng))
        return out


class VisionBatches(torch.utils.data.Dataset):
    """Stage 0 batches: processed video pixels + per-temporal-patch targets: the 26 facial landmarks (x, y, as
    fractions of the frame side) and the action-unit intensities of the frames each temporal patch covers,
    averaged over its frames (odd frame counts are padded with the last frame, as the processor does). Raw
    values; ``train_loops._motion_loss`` centres and scales them. ``norm`` is unused (kept for the call signature)."""

    def __init__(self, processor, data: "MicroData", clips: pd.DataFrame, steps: int, size: int, norm=None):
        self.processor, self.data, self.clips, self.steps, self.size = processor, data, clips, steps, size

    def __len__(self):
        return self.steps

    def __getitem__(self, step):
        from . import sampling

        vids, tgts = [], []
        tps = int(self.processor.video_processor.temporal_patch_size)
        for slot in range(self.size):
            rng = seeded_rng(self.data.seed, "micro", "vision", int(step), slot)
            row = self.data._row(self.clips, rng)
            strategy, v = R.FRAME_MENU[int(rng.integers(len(R.FRAME_MENU)))]
            kw = {"count": int(v)} if strategy == "count" else {"fps": float(v)}
            fr = sampling.sample(row["path"], strategy=strategy, max_frames=R.MAX_FRAMES, **kw)
            vids.append(fr.frames)
            tgts.append(torch.from_numpy(patch_targets(self.data.gt(row), float(row["size"]), fr.indices, tps)))
        return {**video_pixels(self.processor, vids), "targets": torch.cat(tgts)}


def video_pixels(processor, videos: list[np.ndarray]) -> dict:
    """``pixel_values_videos`` + ``video_grid_thw`` of uint8 videos, as the processor makes them: built directly
    (``hf.video_patches``, identical tensors) where the processor would not resize, else by the processor."""
    from . import hf

    vp = processor.video_processor
    if any(hf.needs_resize(vp, *v.shape[1:3]) for v in videos):
        enc = vp(videos=videos, return_tensors="pt")
        return {"pixel_values_videos": enc["pixel_values_videos"], "video_grid_thw": enc["video_grid_thw"]}
    parts = [hf.video_patches(vp, v) for v in videos]
    return {"pixel_values_videos": torch.cat([p for p, _ in parts]),
            "video_grid_thw": torch.tensor([g for _, g in parts], dtype=torch.long)}


def patch_targets(gt: dict, size: float, indices, tps: int) -> np.ndarray:
    """(temporal patches, targets) float32: :func:`vision_targets` of the sampled frames, averaged per patch."""
    y = vision_targets(gt, size)
    y = y[np.minimum(np.asarray(indices), len(y) - 1)]
    pad = (-len(y)) % tps
    if pad:
        y = np.concatenate([y, np.repeat(y[-1:], pad, 0)])
    return y.reshape(-1, tps, y.shape[1]).mean(1).astype(np.float32)


def vision_targets(gt: dict, size: float) -> np.ndarray:
    """Per-frame stage-0 targets of one clip: landmark coordinates as fractions of the frame side (2 per
    landmark), then the action-unit intensities. No emotion label enters."""
    lm = np.asarray(gt["landmarks"], np.float32)
    return np.concatenate([lm.reshape(len(lm), -1) / size, np.asarray(gt["au"], np.float32)], 1)
