"""Throughput of the HF backend: batched vs a per-clip batch-1 loop, generation vs label scoring.

Same model, same inputs: N synthetic clips (random frames, 3 s at 25 fps, sampled at each --fps), classified
(a) in one call with batch_size=N (padded batches) and (b) one clip per call. Prints clips/s, the speed-up,
whether the batched answers equal the batch-1 answers, and peak GPU memory (CUDA only).

  # CPU, tiny random checkpoint (built offline into a temp dir)
  python scripts/bench_hf.py --family qwen2_5_vl --size tiny --fps 1 5 25 --n-clips 8
  # GPU, random-weight Qwen2.5-VL-7B dimensions built directly on the GPU in bf16 (nothing downloaded)
  python scripts/bench_hf.py --family qwen2_5_vl --size full --fps 1 5 25 --n-clips 8

``--size full`` keeps the tiny tokenizer/chat template (ids < the full vocab) and uses the processors'
transformers defaults for pixel budgets (Qwen2.5-VL video: 128·28² ≤ pixels/frame ≤ 768·28²), i.e. what a hub
checkpoint without a video-processor config gets; ``--max-pixels`` overrides.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emoprobe import labels, prompts, tiny
from emoprobe.hf import HFBackend
from emoprobe.models import ClassifyRequest

FULL = {
    # Qwen2.5-VL-7B-Instruct dimensions (config.json of the public checkpoint).
    "qwen2_5_vl": dict(
        text=dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                  intermediate_size=18944, vocab_size=152064, max_position_embeddings=128000),
        vision=dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420, out_hidden_size=3584,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                    fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
    ),
}


def full_backend(family: str, workdir: Path, spec: dict) -> HFBackend:
    if family not in FULL:
        raise SystemExit(f"--size full is defined for {sorted(FULL)}, not {family!r}")
    if not torch.cuda.is_available():
        raise SystemExit("--size full needs a CUDA GPU (a random 8 B-parameter model in bf16)")
    from transformers import (AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    small = tiny.build(family, workdir / "proc")              # tokenizer, chat template, token ids
    proc = AutoProcessor.from_pretrained(small, local_files_only=True)
    proc.image_processor = Qwen2VLImageProcessor()
    proc.video_processor = Qwen2VLVideoProcessor(do_sample_frames=False, cap_pixels_per_frame=False)
    dims = FULL[family]
    tok = proc.tokenizer
    head_dim = dims["text"]["hidden_size"] // dims["text"]["num_attention_heads"]
    text = dict(dims["text"], rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                               "mrope_section": tiny._mrope_section(head_dim)},
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    ids = {n: tok.convert_tokens_to_ids(s) for n, s in
           [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    config = Qwen2_5_VLConfig(text_config=text, vision_config=dims["vision"], **ids)
    config._attn_implementation = "eager" if spec.get("attention") else "sdpa"
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    n = sum(p.numel() for p in model.parameters())
    print(f"built random {family} full: {n / 1e9:.2f} B params in {time.perf_counter() - t0:.1f} s, "
          f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB")
    return HFBackend.from_objects(model, proc, {"model": f"random-full:{family}", **spec})


def synthetic_clips(n: int, fps: float, res: int, seed: int = 0, src_fps: int = 25, seconds: float = 3.0):
    rng = np.random.RandomState(seed)
    n_src = int(round(seconds * src_fps))
    idx = np.unique(np.round(np.arange(0, seconds, 1.0 / fps) * src_fps).astype(int))
    idx = idx[idx < n_src]
    L = list(labels.MAFW)
    out = []
    for _ in range(n):
        frames = rng.randint(0, 256, (len(idx), res, res, 3), dtype=np.uint8)
        out.append(ClassifyRequest(frames=frames, t=idx / src_fps, labels=L, prompt=prompts.render("paper", L)))
    return out


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return r, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="qwen2_5_vl", choices=sorted(tiny.BUILDERS))
    ap.add_argument("--size", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--fps", type=float, nargs="+", default=[1, 5, 25])
    ap.add_argument("--n-clips", type=int, default=8)
    ap.add_argument("--res", type=int, default=112, help="synthetic frame side (px)")
    ap.add_argument("--max-pixels", type=int, default=None, help="per-frame pixel budget (default: tiny 112², "
                                                                  "full: the processor's own)")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=["generate", "score"], choices=["generate", "score"])
    ap.add_argument("--images", action="store_true", help="frames as multiple images instead of a video")
    a = ap.parse_args(argv)

    spec = {"max_new_tokens": a.max_new_tokens, "batch_size": a.n_clips, "as_video": not a.images,
            "parse_embedding": False}
    with tempfile.TemporaryDirectory() as d:
        if a.size == "tiny":
            spec["max_pixels"] = a.max_pixels or 112 * 112
            path = tiny.build(a.family, Path(d) / a.family)
            b = HFBackend({"model": str(path), **spec})
        else:
            spec["max_pixels"] = a.max_pixels
            b = full_backend(a.family, Path(d), spec)
        dev = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(f"family={a.family} size={a.size} device={dev} torch threads={torch.get_num_threads()} "
              f"clips={a.n_clips} res={a.res} max_pixels={spec['max_pixels']} max_new_tokens={a.max_new_tokens}")
        print(f"{'fps':>4} {'frames':>6} {'vis_tok':>7} {'mode':>8} {'batched/s':>10} {'batch1/s':>9} "
              f"{'speedup':>7} {'same':>5} {'peak_GiB':>8}")
        for fps in a.fps:
            reqs = synthetic_clips(a.n_clips, fps, a.res)
            for mode in a.modes:
                score = mode == "score"
                b.classify(reqs[:2], score=score)  # warm-up (allocator, kernels)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                batched, tb = timed(lambda: b.classify(reqs, score=score))
                peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
                single, t1 = timed(lambda: [b.classify([r], score=score)[0] for r in reqs])
                failed = [x.error for x in batched + single if x.status == "failed"]
                if failed:
                    print("  failures:", failed[:2])
                if score:
                    same = all(x.label == y.label for x, y in zip(batched, single))
                else:
                    same = all(x.text == y.text for x, y in zip(batched, single))
                print(f"{fps:>4g} {len(reqs[0].frames):>6} {batched[0].n_visual_tokens:>7} {mode:>8} "
                      f"{a.n_clips / tb:>10.2f} {a.n_clips / t1:>9.2f} {t1 / tb:>7.2f} {str(same):>5} {peak:>8.2f}")


if __name__ == "__main__":
    main()
