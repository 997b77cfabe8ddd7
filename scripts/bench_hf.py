"""Throughput of the HF backend: batched vs a per-clip batch-1 loop, generation vs label scoring.

Same model, same inputs: N synthetic clips (random frames, 3 s at 25 fps, sampled at each --fps), classified
(a) in one call with batch_size=N (padded batches) and (b) one clip per call. Prints clips/s, the speed-up,
whether the batched answers equal the batch-1 answers, and peak GPU memory (CUDA only).

  # CPU, tiny random checkpoint (built offline into a temp dir)
  python scripts/bench_hf.py --family qwen2_5_vl --size tiny --fps 1 5 25 --n-clips 8
  # GPU, random weights with the real full-size dimensions built directly on the GPU in bf16 (nothing downloaded):
  # Qwen2.5-VL-7B, Qwen3-VL-8B, InternVL3-8B, LLaVA-NeXT-Video-7B, Video-LLaVA-7B
  python scripts/bench_hf.py --family qwen2_5_vl --size full --fps 1 5 25 --n-clips 8
  python scripts/bench_hf.py --family qwen3_vl --size full --fps 1 5 25 --n-clips 8
  python scripts/bench_hf.py --family internvl3 --size full --fps 1 5 --n-clips 8
  python scripts/bench_hf.py --family llava_next_video --size full --fps 1 5 --n-clips 8
  python scripts/bench_hf.py --family video_llava --size full --fps 1 5 --n-clips 8
  # CPU correctness check of the full-size path: real widths, vocab and processor sizes, 1 layer, float32
  python scripts/bench_hf.py --family internvl3 --size full --device cpu --layers 1 --fps 1 --n-clips 2

``--size full`` keeps the tiny tokenizer/chat template/special-token ids (ids < the full vocab) and sets the
image/video processors to the real model's sizes: Qwen2.5-VL patch 14 and Qwen3-VL patch 16 with the
processors' transformers defaults for pixel budgets (Qwen2.5-VL video: 128·28² ≤ pixels/frame ≤ 768·28²;
Qwen3-VL video: 128·32² ≤ pixels ≤ 768·32² per clip), i.e. what a hub checkpoint without a video-processor
config gets; InternVL3 one 448² tile per frame (256 tokens); LLaVA-NeXT-Video 336² (144 pooled tokens per video
frame); Video-LLaVA 224² (257 tokens per frame). ``--max-pixels`` overrides the pixel budget. ``--layers N``
cuts the depth of the language model and of the vision tower(s) to N (widths, vocab and processors unchanged);
``--vocab`` overrides the LM vocabulary. On CPU (``--device cpu``) the model is float32 and ``--layers`` is
required.
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

# Full-size dimensions of the public checkpoints (their config.json files). "text" / "vision" go into the family's
# config class as sub-configs; the rest are family-specific (see the FULL_BUILDERS below).
FULL = {
    # Qwen2.5-VL-7B-Instruct
    "qwen2_5_vl": dict(
        text=dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                  intermediate_size=18944, vocab_size=152064, max_position_embeddings=128000),
        vision=dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420, out_hidden_size=3584,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                    fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        rope_theta=1000000.0,
    ),
    # Qwen3-VL-8B-Instruct (interleaved M-RoPE [24, 20, 20], DeepStack from vision blocks 8/16/24)
    "qwen3_vl": dict(
        text=dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                  head_dim=128, intermediate_size=12288, vocab_size=151936, max_position_embeddings=262144,
                  rms_norm_eps=1e-6),
        vision=dict(depth=27, hidden_size=1152, num_heads=16, intermediate_size=4304, out_hidden_size=4096,
                    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[8, 16, 24],
                    num_position_embeddings=2304, hidden_act="gelu_pytorch_tanh"),
        rope_theta=5000000.0, mrope_section=[24, 20, 20],
        # preprocessor_config.json of the hub checkpoint; the video processor keeps transformers' defaults
        # (128·32² ≤ pixels ≤ 768·32² for the whole clip), like Qwen2.5-VL above
        image_size={"shortest_edge": 65536, "longest_edge": 16777216},
    ),
    # InternVL3-8B(-hf): InternViT-300M-448px + pixel shuffle (0.5) + MLP + Qwen2.5-7B; 256 tokens per 448² tile
    "internvl3": dict(
        text=dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                  intermediate_size=18944, vocab_size=151674, max_position_embeddings=32768, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    image_size=[448, 448], patch_size=[14, 14], attention_bias=True, use_qk_norm=False,
                    norm_type="layer_norm", layer_scale_init_value=0.1, use_mean_pooling=True),
        image_size=448, downsample_ratio=0.5,
    ),
    # LLaVA-NeXT-Video-7B(-hf): CLIP ViT-L/14-336 + 2-layer MLP + Vicuna-7B; video frames pooled 2×2 (144 tok/frame)
    "llava_next_video": dict(
        text=dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  intermediate_size=11008, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5),
        vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
        image_size=336, image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    ),
    # Video-LLaVA-7B(-hf): ViT-L/14 224 (LanguageBind image and video towers) + Vicuna-7B v1.5
    "video_llava": dict(
        text=dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5),
        vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
        image_size=224,
    ),
}


def _keep_below(indexes: list[int], n: int) -> list[int]:
    """Block indexes that still exist in an n-block tower (at least its last block)."""
    return [i for i in indexes if i < n] or [n - 1]


def _depth(dims: dict, layers: int | None) -> tuple[dict, dict]:
    """Text and vision sub-config dicts with num_hidden_layers/depth replaced by ``layers`` (None: full depth);
    layer-index lists (Qwen2.5-VL full-attention blocks, Qwen3-VL DeepStack taps) are clipped to the new depth."""
    text, vision = dict(dims["text"]), dict(dims["vision"])
    if layers is not None:
        text["num_hidden_layers"] = layers
        vision["depth" if "depth" in vision else "num_hidden_layers"] = layers
        for k in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if k in vision:
                vision[k] = _keep_below(vision[k], layers)
    return text, vision


def _full_qwen2_5_vl(proc, dims, text, vision):
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLVideoProcessor)

    tok = proc.tokenizer
    proc.image_processor = Qwen2VLImageProcessor()
    proc.video_processor = Qwen2VLVideoProcessor(do_sample_frames=False, cap_pixels_per_frame=False)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    text = dict(text, rope_parameters={"rope_type": "default", "rope_theta": dims["rope_theta"],
                                       "mrope_section": tiny._mrope_section(head_dim)},
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                                                **tiny.qwen_token_ids(tok))


def _full_qwen3_vl(proc, dims, text, vision):
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLVideoProcessor)

    tok = proc.tokenizer
    common = dict(patch_size=vision["patch_size"], merge_size=vision["spatial_merge_size"],
                  temporal_patch_size=vision["temporal_patch_size"], image_mean=[0.5] * 3, image_std=[0.5] * 3)
    proc.image_processor = Qwen2VLImageProcessor(size=dims["image_size"], **common)
    proc.video_processor = Qwen3VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=False)
    text = dict(text, rope_parameters={"rope_type": "default", "rope_theta": dims["rope_theta"],
                                       "mrope_section": dims["mrope_section"], "mrope_interleaved": True},
                bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    return Qwen3VLForConditionalGeneration, Qwen3VLConfig(text_config=text, vision_config=vision,
                                                          tie_word_embeddings=False, **tiny.qwen_token_ids(tok))


def _full_internvl3(proc, dims, text, vision):
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLVideoProcessor)

    tok = proc.tokenizer
    side, patch = dims["image_size"], vision["patch_size"][0]
    seq = int((side // patch) ** 2 * dims["downsample_ratio"] ** 2)               # 256 per 448² tile
    sz = {"height": side, "width": side}
    proc.image_processor = GotOcr2ImageProcessor(size=sz, crop_to_patches=False)  # one tile per frame, as tiny
    proc.video_processor = InternVLVideoProcessor(size=sz)
    proc.image_seq_length = seq
    text = dict(text, model_type="qwen2", bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    return InternVLForConditionalGeneration, InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=seq, downsample_ratio=dims["downsample_ratio"], tie_word_embeddings=False)


def _llama_text(tok, text):
    return dict(text, model_type="llama", bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, tie_word_embeddings=False)


def _full_llava_next_video(proc, dims, text, vision):
    from transformers import (LlavaNextImageProcessor, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration,
                              LlavaNextVideoVideoProcessor)

    tok = proc.tokenizer
    side, pins = dims["image_size"], dims["image_grid_pinpoints"]
    crop = {"height": side, "width": side}
    proc.video_processor = LlavaNextVideoVideoProcessor(size={"shortest_edge": side}, crop_size=crop)
    proc.image_processor = LlavaNextImageProcessor(size={"shortest_edge": side}, crop_size=crop,
                                                   image_grid_pinpoints=pins)
    proc.patch_size = vision["patch_size"]
    n_side = side // vision["patch_size"]
    return LlavaNextVideoForConditionalGeneration, LlavaNextVideoConfig(
        vision_config=dict(vision, model_type="clip_vision_model"), text_config=_llama_text(tok, text),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pins, vision_feature_layer=-2, vision_feature_select_strategy="default",
        spatial_pool_stride=2, image_seq_length=n_side * n_side, video_seq_length=(n_side // 2) ** 2,
        tie_word_embeddings=False)


def _full_video_llava(proc, dims, text, vision):
    from transformers import (VideoLlavaConfig, VideoLlavaForConditionalGeneration, VideoLlavaImageProcessor,
                              VideoLlavaVideoProcessor)

    tok = proc.tokenizer
    side = dims["image_size"]
    crop = {"height": side, "width": side}
    proc.image_processor = VideoLlavaImageProcessor(size={"shortest_edge": side}, crop_size=crop)
    proc.video_processor = VideoLlavaVideoProcessor(size={"shortest_edge": side}, crop_size=crop)
    proc.patch_size = vision["patch_size"]
    n_side = side // vision["patch_size"]
    return VideoLlavaForConditionalGeneration, VideoLlavaConfig(
        vision_config=dict(vision, model_type="clip_vision_model"), text_config=_llama_text(tok, text),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=n_side * n_side, video_seq_length=8 * (n_side * n_side + 1), tie_word_embeddings=False)


# family -> fn(processor of the tiny build (modified in place: real image/video processors), FULL[family],
#              text dims, vision dims) -> (model class, config)
FULL_BUILDERS = {
    "qwen2_5_vl": _full_qwen2_5_vl,
    "qwen3_vl": _full_qwen3_vl,
    "internvl3": _full_internvl3,
    "llava_next_video": _full_llava_next_video,
    "video_llava": _full_video_llava,
}


def full_backend(family: str, workdir: Path, spec: dict, *, device: str = "cuda", layers: int | None = None,
                 vocab: int | None = None) -> HFBackend:
    """A random-weight model with ``family``'s full-size dimensions, built directly on ``device``.

    CUDA: bf16. CPU (a correctness check, not a benchmark): float32, and ``layers`` is required (full depth
    in fp32 is ~30 GB). ``layers`` replaces the LM's and the vision tower's depth; ``vocab`` the LM's
    vocabulary (both default to the real model's). The tokenizer, chat template and special-token ids come from
    the family's tiny build (all ids < the full vocab); image/video processors are set to the real model's sizes.
    """
    if family not in FULL:
        raise SystemExit(f"--size full is defined for {sorted(FULL)}, not {family!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--size full needs a CUDA GPU (a random 7-9 B-parameter model in bf16); for a CPU "
                         "correctness check with the real widths use --device cpu --layers 1")
    if device == "cpu" and layers is None:
        raise SystemExit("--size full --device cpu builds in float32: pass --layers N (full depth needs ~30 GB)")
    if layers is not None and layers < 1:
        raise SystemExit(f"--layers must be >= 1, got {layers}")
    from transformers import AutoProcessor

    small = tiny.build(family, workdir / "proc")              # tokenizer, chat template, token ids
    proc = AutoProcessor.from_pretrained(small, local_files_only=True)
    tok = proc.tokenizer
    dims = FULL[family]
    text, vision = _depth(dims, layers)
    if vocab is not None:
        text["vocab_size"] = vocab
    if text["vocab_size"] < len(tok):
        raise SystemExit(f"--vocab {text['vocab_size']} is below the tokenizer's {len(tok)} tokens")
    model_cls, config = FULL_BUILDERS[family](proc, dims, text, vision)
    config._attn_implementation = "eager" if spec.get("attention") else "sdpa"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = model_cls._from_config(config, dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.do_sample = False
    n = sum(p.numel() for p in model.parameters())
    emb = sum(m.weight.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings())
              if m is not None)
    tc, vc = config.get_text_config(), config.vision_config
    v_layers = getattr(vc, "depth", None) or vc.num_hidden_layers
    mem = f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else f"{n * 4 / 2**30:.1f} GiB fp32"
    print(f"built random {family} full{'' if layers is None else f' (depth cut to {layers})'} on {device}: "
          f"{n / 1e9:.2f} B params ({emb / 1e9:.2f} B in embeddings + LM head) in {time.perf_counter() - t0:.1f} s, "
          f"{mem}\n  text: {tc.num_hidden_layers} layers, hidden {tc.hidden_size}, heads {tc.num_attention_heads}/"
          f"{tc.num_key_value_heads}, intermediate {tc.intermediate_size}, vocab {tc.vocab_size}; vision: "
          f"{v_layers} layers, hidden {vc.hidden_size}, intermediate {vc.intermediate_size}; processors: "
          f"{_proc_sizes(proc)}")
    name = f"random-full:{family}" + ("" if layers is None else f":L{layers}")
    return HFBackend.from_objects(model, proc, {"model": name, **spec})


def _proc_sizes(proc) -> str:
    out = []
    for kind in ("image", "video"):
        p = getattr(proc, f"{kind}_processor", None)
        if p is None:
            continue
        size = getattr(p, "size", None)
        size = {k: v for k, v in dict(size).items() if v is not None} if size is not None else None
        extra = f" patch {p.patch_size}" if getattr(p, "patch_size", None) else ""
        out.append(f"{kind} {type(p).__name__} size={size}{extra}")
    if getattr(proc, "image_seq_length", None):
        out.append(f"image_seq_length={proc.image_seq_length}")
    return "; ".join(out)


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


def timed(fn, cuda: bool):
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = fn()
    if cuda:
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
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                    help="auto: cuda if available; --size full on cpu is float32 and needs --layers")
    ap.add_argument("--layers", type=int, default=None,
                    help="--size full: LM and vision-tower depth (default: the real model's)")
    ap.add_argument("--vocab", type=int, default=None, help="--size full: LM vocabulary (default: the real one)")
    a = ap.parse_args(argv)
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if a.size == "tiny" and (a.layers is not None or a.vocab is not None):
        ap.error("--layers/--vocab apply to --size full only")

    spec = {"max_new_tokens": a.max_new_tokens, "batch_size": a.n_clips, "as_video": not a.images,
            "parse_embedding": False}
    with tempfile.TemporaryDirectory() as d:
        if a.size == "tiny":
            spec["max_pixels"] = a.max_pixels or 112 * 112
            path = tiny.build(a.family, Path(d) / a.family)
            b = HFBackend({"model": str(path), "device": device, **spec})
        else:
            if a.device == "auto" and a.layers is None:
                device = "cuda"   # full depth: refuse (with a hint) rather than fall back to a 30 GB fp32 CPU model
            spec["max_pixels"] = a.max_pixels
            b = full_backend(a.family, Path(d), spec, device=device, layers=a.layers, vocab=a.vocab)
        cuda = b.device.type == "cuda"
        dev = "cuda:" + torch.cuda.get_device_name(b.device) if cuda else "cpu"
        print(f"family={a.family} size={a.size} device={dev} torch threads={torch.get_num_threads()} "
              f"clips={a.n_clips} res={a.res} max_pixels={spec['max_pixels']} max_new_tokens={a.max_new_tokens}")
        print(f"{'fps':>4} {'frames':>6} {'vis_tok':>7} {'mode':>8} {'batched/s':>10} {'batch1/s':>9} "
              f"{'speedup':>7} {'same':>5} {'peak_GiB':>8}")
        for fps in a.fps:
            reqs = synthetic_clips(a.n_clips, fps, a.res)
            for mode in a.modes:
                score = mode == "score"
                b.classify(reqs[:2], score=score)  # warm-up (allocator, kernels)
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                batched, tb = timed(lambda: b.classify(reqs, score=score), cuda)
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
                single, t1 = timed(lambda: [b.classify([r], score=score)[0] for r in reqs], cuda)
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
