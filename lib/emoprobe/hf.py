"""The transformers backend: every open VLM of the book (and the embedded MicroVLM) through one class.

``HFBackend(spec)`` implements :class:`emoprobe.models.Backend` for Qwen2.5-VL, Qwen3-VL, Qwen2.5-Omni (thinker),
InternVL3-hf, LLaVA-NeXT-Video, Video-LLaVA, SmolVLM and any ``AutoModelForImageTextToText`` checkpoint with a
chat template, loaded by hub id (from the local cache only, unless ``allow_download``) or by path.

Spec keys (defaults in :data:`DEFAULTS`):

``model``                hub id or local path (required).  ``revision``: hub revision.
``allow_download``       False: never touch the network (``local_files_only=True``).
``trust_remote_code``    False unless explicitly opted in (e.g. Emotion-Qwen).
``dtype``                "auto": the checkpoint's dtype on CUDA, float32 on CPU; or "bfloat16"/"float16"/"float32".
``device``               "auto": cuda if available (``device_map="auto"``) else cpu.
``attn_implementation``  "sdpa"; forced to "eager" when ``attention`` is on.
``as_video``             True: frames go in as one video; False: as T images.
``max_pixels``           per-frame pixel budget: frames larger than this are resized by us (area ≤ max_pixels,
                         aspect kept, bicubic+antialias); Qwen-style processors additionally get the matching
                         ``size`` so they do not upscale (None: the processor's own defaults, i.e. the model's).
``max_new_tokens``       16 (classify).  ``describe_max_new_tokens``: 48.
``batch_size``           8: clips per forward (the run loop may pass smaller batches).
``score_norm``           "sum" (default) or "mean": label scores from summed or length-normalised log-probs.
``score_eos``            True: the label continuation ends with the end-of-turn token (so "sad" ≠ "sadness…").
``attention``            False; True: eager attention and ``Answer.extra["attention"]`` (see below).
``max_context``          the model's ``max_position_embeddings`` unless given: longer prompts fail.
``parse_embedding``      True: let ``parse.parse_label`` use its embedding fallback.
``fast_inputs``          "auto": for local (or in-memory) Qwen2-VL / Qwen2.5-VL checkpoints, video prompts without
                         context whose frames need no resizing are turned into model inputs directly (the video
                         processor's own normalise + patchify on a tensor, the prompt tokenised once and its video
                         placeholder expanded), skipping the processor call's per-call overhead; identical tensors
                         (tests/test_hf_fast_inputs.py). False: always the processor. Hub checkpoints always use
                         the processor.

What each family receives about time (frames are decoded by us and passed as uint8 (T,H,W,3) arrays):
every video gets ``video_metadata`` {fps: sampling rate 1/median(Δt), frames_indices: round(t·fps),
total_num_frames: T}. Qwen2.5-VL turns it into ``second_per_grid_ts`` (the temporal M-RoPE spacing); Qwen3-VL
into the textual ``<t seconds>`` stamps; SmolVLM into its "Frame from mm:ss" lines; Qwen2.5-Omni gets ``fps``
(its ``video_second_per_grid``); InternVL, LLaVA-NeXT-Video and Video-LLaVA use no timing (frame order only).
Multi-image mode (``as_video=False``) and MSCE (``ClassifyRequest.context``) pass no timing either; MSCE
interleaves "Frame i:" <image> "Motion: ..." parts in the user message.

Batching: requests are grouped by (frame count, frame size, context length, fps) and each group goes through
one padded forward (left padding) per ``batch_size`` clips; if a batched call fails for any reason but CUDA
OOM, the group is retried clip by clip so one bad clip only fails itself. CUDA OOM is raised (the run loop
halves the batch).

Label scoring (``classify(score=True)``): one forward over the batch of prompts (through the assistant prefix)
fills the KV cache; each label's continuation is then run against that cache (one short forward per label
index for the whole batch; the cache is cropped back after each), with the position ids ``generate`` would
use. ``Answer.scores`` = softmax over labels of the summed (``score_norm="sum"``) or per-token mean
(``"mean"``) log-probs; both are kept in ``Answer.extra["logprob_sum"]`` / ``["logprob_mean"]``. The answer's
label is the arg-max (``parse_method="score"``); no text is generated.

Attention (``attention=True``): the attention paid by the last prompt position (the one that predicts the first
answer token), averaged over layers and heads, summed per frame (visual tokens → frames via the processor's
``*_grid_thw`` for Qwen-style models: temporal patch g covers frames [g·tps, (g+1)·tps) and its mass is split
equally over them; otherwise visual tokens are split equally over frames, in order) and over text tokens:
``Answer.extra["attention"] = {"frames": [..T..], "text": x}`` (sums to 1).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .models import Answer, Backend, ClassifyRequest, DescribeRequest, ModelError

DEFAULTS: dict[str, Any] = {
    "revision": None,
    "allow_download": False,
    "trust_remote_code": False,
    "dtype": "auto",
    "device": "auto",
    "attn_implementation": "sdpa",
    "as_video": True,
    "max_pixels": None,
    "max_new_tokens": 16,
    "describe_max_new_tokens": 48,
    "batch_size": 8,
    "score_norm": "sum",
    "score_eos": True,
    "attention": False,
    "max_context": None,
    "parse_embedding": True,
    "fast_inputs": "auto",
}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
BIG_FILE = 64 * 2**20      # files above this are fingerprinted by (size, sha256 of the first 16 MiB)
HEAD_BYTES = 16 * 2**20


from .errors import is_oom as _is_oom  # noqa: E402  (one definition of OOM detection)


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size > BIG_FILE:
            h.update(f"size={size};head=".encode())
            h.update(f.read(HEAD_BYTES))
        else:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
    return h.hexdigest()


def resize_frames(frames: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """Shrink (T,H,W,3) uint8 frames so that H·W ≤ max_pixels (aspect kept; never enlarges)."""
    if max_pixels is None:
        return frames
    t, h, w, _ = frames.shape
    if h * w <= max_pixels:
        return frames
    import torch

    s = math.sqrt(max_pixels / (h * w))
    nh, nw = max(1, int(h * s)), max(1, int(w * s))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


from .sampling import sampled_fps as sampling_fps  # noqa: E402  (one definition of the sampled-fps convention)


def needs_resize(video_processor, h: int, w: int) -> bool:
    """Whether the Qwen2(.5)-VL video processor would resize (h, w) frames (then :func:`video_patches` does not
    reproduce it)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    vp = video_processor
    try:
        return smart_resize(h, w, factor=vp.patch_size * vp.merge_size, min_pixels=vp.size.shortest_edge,
                            max_pixels=vp.size.longest_edge) != (h, w)
    except ValueError:
        return True


def video_patches(video_processor, frames: np.ndarray):
    """``(patches, (t, h, w))``: the Qwen2(.5)-VL video processor's ``pixel_values_videos`` rows and grid for one
    uint8 video (T, H, W, 3) that needs no resize, built with the processor's own normalise and patchify (about 30x
    faster than calling it; identical tensors, ``tests/test_hf_fast_inputs.py``). The one definition used by the
    backend's fast inputs and by training."""
    import torch

    vp = video_processor
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).unsqueeze(0)  # (1,T,C,H,W)
    x = vp.rescale_and_normalize(x, True, vp.rescale_factor, True, vp.image_mean, vp.image_std)
    patches, gt, gh, gw = vp.patchify(x, patch_size=vp.patch_size, merge_size=vp.merge_size,
                                      temporal_patch_size=vp.temporal_patch_size)
    return patches[0], (int(gt), int(gh), int(gw))


def _failed_slots(errs, n_vis, n_text) -> list:
    """One slot per request: a failed Answer (with its token counts) where ``errs`` has a reason, else None."""
    out: list = []
    for e, v, t in zip(errs, n_vis, n_text):
        a = Answer.failed(e) if e else None
        if a is not None:
            a.n_visual_tokens, a.n_text_tokens = v, t
        out.append(a)
    return out


class HFBackend(Backend):
    """A transformers VLM behind the :class:`~emoprobe.models.Backend` protocol (see the module docstring)."""

    def __init__(self, spec: dict):
        if "model" not in spec or not spec["model"]:
            raise ModelError(f"hf backend: spec has no 'model': {spec!r}")
        self.spec = {**DEFAULTS, **spec}
        self.name = str(self.spec["model"])
        self.path = self._resolve(self.name)
        self._local = Path(self.name).expanduser().exists()
        self._load()

    # ------------------------------------------------------------------------------------------------ loading
    def _resolve(self, name: str) -> Path:
        p = Path(name).expanduser()
        if p.exists():
            if not p.is_dir():
                raise ModelError(f"model path {name!r} is a file, not a checkpoint directory")
            if not (p / "config.json").exists():
                raise ModelError(f"model path {name!r} has no config.json: not a transformers checkpoint")
            return p.resolve()
        looks_like_path = name.startswith((".", "/", "~")) or name.count("/") != 1 or os.sep + os.sep in name
        if looks_like_path:
            raise ModelError(f"model path {name!r} does not exist")
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id=name, revision=self.spec["revision"],
                                          local_files_only=not self.spec["allow_download"]))
        except Exception as e:  # noqa: BLE001 - any hub failure is a load failure naming the model
            how = "downloads are off (set allow_download)" if not self.spec["allow_download"] else "download failed"
            raise ModelError(f"model {name!r} is not a local path and not in the local HF cache; {how}: "
                             f"{type(e).__name__}: {e}") from e

    def _load(self) -> None:
        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        s = self.spec
        dev = s["device"]
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(dev)
        from .threads import configure

        configure()  # one torch thread per process (see emoprobe.threads: why, and how to override)
        if s["dtype"] == "auto":
            dtype = "auto" if self.device.type == "cuda" else torch.float32
        else:
            dtype = getattr(torch, s["dtype"]) if isinstance(s["dtype"], str) else s["dtype"]
        attn = "eager" if s["attention"] else s["attn_implementation"]
        common = dict(local_files_only=True, trust_remote_code=bool(s["trust_remote_code"]))
        import logging as _logging

        # Video-LLaVA's image processor exists only for the "pil" backend: the auto class, defaulting to torchvision,
        # warns "Requested torchvision backend is not available" on stderr (into the book) while falling back, though
        # nothing is wrong (found by the dress rehearsal, issue 14). Only that logger is quietened, while loading.
        _auto = _logging.getLogger("transformers.models.auto.image_processing_auto")
        _level = _auto.level
        try:
            _auto.setLevel(_logging.ERROR)
            self.processor = AutoProcessor.from_pretrained(self.path, **common)
            config = AutoConfig.from_pretrained(self.path, **common)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"model {self.name!r}: cannot load processor/config: {type(e).__name__}: {e}") from e
        finally:
            _auto.setLevel(_level)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ModelError(f"model {self.name!r}: processor {type(self.processor).__name__} has no tokenizer")
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise ModelError(f"model {self.name!r} has no chat template (processor and tokenizer): cannot build "
                             "prompts; add one to the checkpoint")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kw = dict(dtype=dtype, attn_implementation=attn, **common)
        if self.device.type == "cuda":
            kw["device_map"] = "auto" if dev == "cuda" else dev
        # no weight-loading progress bar (it lands on stderr in notebooks and logs); restored afterwards
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        try:
            try:
                model = AutoModelForImageTextToText.from_pretrained(self.path, **kw)
            except ValueError as e:
                if "Unrecognized configuration class" not in str(e):
                    raise
                arch = (config.architectures or [None])[0]
                cls = getattr(transformers, arch, None) if arch else None
                if cls is None:
                    raise ModelError(f"model {self.name!r}: {type(config).__name__} is not an image-text-to-text "
                                     f"model and its architecture {arch!r} is unknown to transformers") from e
                model = cls.from_pretrained(self.path, **kw)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001
            if _is_oom(e):
                raise
            raise ModelError(f"model {self.name!r}: cannot load weights: {type(e).__name__}: {e}") from e
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        if self.device.type != "cuda":
            model = model.to(self.device)
        self._setup(model)

    @classmethod
    def from_objects(cls, model, processor, spec: dict | None = None) -> "HFBackend":
        """Wrap an in-memory model + processor (benchmarks with random full-size weights, training loops).

        The fingerprint then names the objects, not files: ``weights_sha256`` is ``{"in-memory": n_params}``.
        """
        self = cls.__new__(cls)
        self.spec = {**DEFAULTS, **(spec or {})}
        self.spec.setdefault("model", f"in-memory:{type(model).__name__}")
        self.name = str(self.spec["model"])
        self.path = None
        self._local = True
        self.processor = processor
        self.tokenizer = processor.tokenizer
        if not (getattr(processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)):
            raise ModelError(f"model {self.name!r} has no chat template")
        self.tokenizer.padding_side = "left"
        self.device = next(model.parameters()).device
        self._setup(model)
        return self

    def _setup(self, model) -> None:
        s = self.spec
        model.eval()
        self.model = model
        self.config = model.config
        text_cfg = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        self.max_context = int(s["max_context"] or getattr(text_cfg, "max_position_embeddings", 0) or 10**9)
        self.visual_ids = self._visual_token_ids()
        if not self.visual_ids:
            raise ModelError(f"model {self.name!r}: cannot find its image/video placeholder tokens")
        eos = self.tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.eos_ids = sorted({*([gen_eos] if isinstance(gen_eos, int) else (gen_eos or [])), *([eos] if eos is not None else [])})
        self.dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        self.family = getattr(self.config, "model_type", "?")
        self._fingerprint: dict | None = None

    def _visual_token_ids(self) -> set[int]:
        ids = set()
        for attr in ("image_token_id", "video_token_id"):
            v = getattr(self.processor, attr, None)
            if isinstance(v, int):
                ids.add(v)
        for attr in ("image_token", "video_token"):
            tok = getattr(self.processor, attr, None)
            if isinstance(tok, str):
                i = self.tokenizer.convert_tokens_to_ids(tok)
                if isinstance(i, int) and i != self.tokenizer.unk_token_id:
                    ids.add(i)
        for attr in ("image_token_id", "video_token_id", "image_token_index", "video_token_index"):
            v = getattr(self.config, attr, None)
            if isinstance(v, int) and v >= 0:
                ids.add(v)
        return ids

    # ------------------------------------------------------------------------------------------------ fingerprint
    def fingerprint(self) -> dict:
        """Model id/path, revision, weight hashes (files > 64 MiB: sha256 of size + first 16 MiB), a hash of the
        processor/tokenizer/chat-template files, and every setting that changes answers."""
        if self._fingerprint is None:
            import transformers

            weights, proc = {}, hashlib.sha256()
            if self.path is None:
                weights = {"in-memory": sum(p.numel() for p in self.model.parameters())}
            for f in (sorted(self.path.rglob("*")) if self.path is not None else []):
                if not f.is_file():
                    continue
                rel = str(f.relative_to(self.path))
                if f.name.endswith(WEIGHT_SUFFIXES):
                    weights[rel] = _file_sha(f)
                elif f.suffix in (".json", ".jinja", ".txt", ".model") and f.name != "tiny_build.json":
                    proc.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
            s = self.spec
            self._fingerprint = {
                "backend": "hf", "model": self.name, "revision": s["revision"], "family": self.family,
                "weights_sha256": weights, "processor_sha256": proc.hexdigest(), "dtype": self.dtype,
                "as_video": bool(s["as_video"]), "max_pixels": s["max_pixels"],
                "max_new_tokens": int(s["max_new_tokens"]), "describe_max_new_tokens": int(s["describe_max_new_tokens"]),
                "score_norm": s["score_norm"], "score_eos": bool(s["score_eos"]),
                "attn_implementation": "eager" if s["attention"] else s["attn_implementation"],
                "trust_remote_code": bool(s["trust_remote_code"]), "transformers": transformers.__version__,
            }
        return dict(self._fingerprint)

    # ------------------------------------------------------------------------------------------------ inputs
    def _content(self, frames: np.ndarray, prompt: str, context: list[str] | None) -> tuple[list, str]:
        """The user-message content parts and the mode ('video' or 'images')."""
        if context is not None:
            parts: list[dict] = []
            for i in range(len(frames)):
                parts.append({"type": "text", "text": f"Frame {i + 1}: "})
                parts.append({"type": "image"})
                if i < len(context):
                    parts.append({"type": "text", "text": f"\nMotion: {context[i]}\n"})
            parts.append({"type": "text", "text": "\n" + prompt})
            return parts, "images"
        if self.spec["as_video"]:
            return [{"type": "video"}, {"type": "text", "text": prompt}], "video"
        return [{"type": "image"} for _ in range(len(frames))] + [{"type": "text", "text": prompt}], "images"

    def _size_kwargs(self, mode: str, n_frames: int) -> dict:
        """Qwen-style processors: a size that matches max_pixels (so they neither exceed nor upscale past it)."""
        mp = self.spec["max_pixels"]
        if mp is None:
            return {}
        proc = self.processor.video_processor if mode == "video" else self.processor.image_processor
        if proc is None or not hasattr(proc, "merge_size"):
            return {}
        size = getattr(proc, "size", None)
        if size is None or getattr(size, "longest_edge", None) is None:
            return {}
        total = mp * n_frames if (mode == "video" and "Qwen3" in type(proc).__name__) else mp
        shortest = min(int(getattr(size, "shortest_edge", None) or mp), mp)
        key = "videos_kwargs" if mode == "video" else "images_kwargs"
        return {key: {"size": {"shortest_edge": shortest, "longest_edge": int(total)}}}

    def _prepare(self, items: list[tuple[np.ndarray, np.ndarray, str, list | None]], add_text: list[str] | None = None):
        """Processor outputs for a batch of (frames, t, prompt, context); returns (inputs, prompt_texts, mode)."""
        texts, videos, images, metas = [], [], [], []
        mode = None
        for frames, t, prompt, context in items:
            if not (isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[-1] == 3):
                raise ValueError(f"frames must be a (T,H,W,3) uint8 array, got {getattr(frames, 'shape', type(frames))}")
            if frames.dtype != np.uint8:
                raise ValueError(f"frames must be uint8, got {frames.dtype}")
            if len(frames) == 0:
                raise ValueError("a clip with no frames")
            frames = resize_frames(frames, self.spec["max_pixels"])
            content, mode = self._content(frames, prompt, context)
            msgs = [{"role": "user", "content": content}]
            texts.append(self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
            if mode == "video":
                fps = sampling_fps(t)
                videos.append(frames)
                tt = np.asarray(t, dtype=float) if len(t) == len(frames) else np.arange(len(frames)) / fps
                metas.append({"fps": fps, "total_num_frames": int(len(frames)),
                              "frames_indices": [int(round(x * fps)) for x in tt]})
            else:
                images.append(list(frames))
        if add_text is None and mode == "video" and self._fast_ok(videos):
            return self._fast_video_inputs(texts, videos, metas), texts, mode
        kw: dict[str, Any] = dict(padding=True, return_tensors="pt")
        if mode == "video":
            kw["videos"] = videos
            if "Omni" in type(self.processor).__name__:
                kw["fps"] = metas[0]["fps"]
            else:
                kw["video_metadata"] = metas
        else:
            kw["images"] = images
        kw.update(self._size_kwargs(mode, len(items[0][0])))
        full = texts if add_text is None else [a + b for a, b in zip(texts, add_text)]
        inputs = self.processor(text=full, **kw)
        return inputs, texts, mode

    # ------------------------------------------------------------------------------------------------ fast inputs
    _FAST_PROCESSORS = ("Qwen2_5_VLProcessor", "Qwen2VLProcessor")

    def _fast_ok(self, videos: list[np.ndarray]) -> bool:
        """Whether :meth:`_fast_video_inputs` reproduces the processor for these videos (see ``fast_inputs``)."""
        fast = self.spec.get("fast_inputs", "auto")
        if fast is False or fast == "off" or not getattr(self, "_local", False):
            return False
        if type(self.processor).__name__ not in self._FAST_PROCESSORS:
            return False
        vp = getattr(self.processor, "video_processor", None)
        if type(vp).__name__ != "Qwen2VLVideoProcessor" or getattr(vp, "do_sample_frames", False):
            return False
        if not (vp.do_rescale and vp.do_normalize) or not videos:
            return False
        h, w = videos[0].shape[1:3]
        if any(v.shape[1:3] != (h, w) for v in videos):
            return False
        return not needs_resize(vp, h, w)  # where the processor would resize, keep its exact resampling

    def _fast_video_inputs(self, texts: list[str], videos: list[np.ndarray], metas: list[dict]):
        """The processor's outputs for Qwen2(.5)-VL video prompts, built directly (``fast_inputs``)."""
        import torch
        from transformers import BatchFeature
        from transformers.video_utils import VideoMetadata

        vp = self.processor.video_processor
        pix, grids, seconds, ids = [], [], [], []
        merge = vp.merge_size ** 2
        vid = self.tokenizer.convert_tokens_to_ids(self.processor.video_token)
        for frames, meta, text in zip(videos, metas, texts):
            patches, (gt, gh, gw) = video_patches(vp, frames)
            pix.append(patches)
            grids.append([gt, gh, gw])
            seconds.append(vp.temporal_patch_size / VideoMetadata(**meta).sampled_fps)
            base = self._token_cache(text)
            at = [i for i, t in enumerate(base) if t == vid]
            if len(at) != 1:
                raise ValueError(f"prompt has {len(at)} video placeholders, expected 1")
            n = gt * gh * gw // merge
            ids.append(base[:at[0]] + [vid] * n + base[at[0] + 1:])
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], dtype=torch.long)
        data = {"input_ids": input_ids, "attention_mask": mask}
        if "mm_token_type_ids" in self.processor.model_input_names:
            tt = torch.zeros_like(input_ids)
            tt[(input_ids == vid) & mask.bool()] = 2
            img = getattr(self.processor, "image_token_id", None)
            if isinstance(img, int):
                tt[(input_ids == img) & mask.bool()] = 1
            data["mm_token_type_ids"] = tt
        data["pixel_values_videos"] = torch.cat(pix, 0)
        data["video_grid_thw"] = torch.tensor(grids, dtype=torch.long)
        if "second_per_grid_ts" in self.processor.model_input_names:
            data["second_per_grid_ts"] = torch.tensor(seconds, dtype=torch.float32)
        return BatchFeature(data=data)

    def _token_cache(self, text: str) -> list[int]:
        cache = self.__dict__.setdefault("_tok_cache", {})
        if text not in cache:
            if len(cache) > 512:
                cache.clear()
            cache[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return cache[text]

    def _to_device(self, inputs) -> dict:
        import torch

        out = {}
        fdtype = next(self.model.parameters()).dtype
        for k, v in dict(inputs).items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.model.device)
                if v.is_floating_point():
                    v = v.to(fdtype)
            out[k] = v
        return out

    def _groups(self, reqs: list) -> list[list[int]]:
        """Indices grouped by visual signature, each group cut into batch_size chunks."""
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            f = r.frames
            ctx = getattr(r, "context", None)
            sig = (tuple(getattr(f, "shape", ())), None if ctx is None else len(ctx),
                   round(sampling_fps(r.t), 3) if getattr(r, "t", None) is not None else None)
            groups.setdefault(sig, []).append(i)
        bs = max(1, int(self.spec["batch_size"]))
        return [idx[j:j + bs] for idx in groups.values() for j in range(0, len(idx), bs)]

    # ------------------------------------------------------------------------------------------------ counting
    def _counts(self, inputs) -> tuple[list[int], list[int]]:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        vis = self._visual_mask(ids) & mask.bool()
        n_vis = vis.sum(-1).tolist()
        n_all = mask.sum(-1).tolist()
        return [int(v) for v in n_vis], [int(a - v) for a, v in zip(n_all, n_vis)]

    def _visual_mask(self, ids):
        import torch

        m = torch.zeros_like(ids, dtype=torch.bool)
        for v in self.visual_ids:
            m |= ids == v
        return m

    def _frame_masses(self, att_row, vis_pos, n_frames: int, mode: str, inputs, row: int) -> list[float]:
        """Sum attention on visual tokens per frame (see module docstring for the mapping)."""
        vals = att_row[vis_pos].tolist()
        n = len(vals)
        out = [0.0] * n_frames
        grid_key = "video_grid_thw" if mode == "video" else "image_grid_thw"
        merge = None
        proc = self.processor.video_processor if mode == "video" else getattr(self.processor, "image_processor", None)
        if proc is not None:
            merge = getattr(proc, "merge_size", None)
        grid = inputs.get(grid_key) if hasattr(inputs, "get") else None
        if grid is not None and merge:
            if mode == "video":
                g = grid[row].tolist()   # one video per row
                per = int(g[1] * g[2] // merge**2)
                tps = int(getattr(proc, "temporal_patch_size", 1) or 1)
                if per * g[0] == n:
                    for k in range(g[0]):
                        fr = [f for f in range(k * tps, (k + 1) * tps) if f < n_frames] or [n_frames - 1]
                        m = sum(vals[k * per:(k + 1) * per])
                        for f in fr:
                            out[f] += m / len(fr)
                    return out
            else:
                rows = grid[row * n_frames:(row + 1) * n_frames].tolist()
                per = [int(a * b * c // merge**2) for a, b, c in rows]
                if sum(per) == n and len(per) == n_frames:
                    o = 0
                    for f, p in enumerate(per):
                        out[f] = sum(vals[o:o + p])
                        o += p
                    return out
        for f, chunk in enumerate(np.array_split(np.asarray(vals, dtype=float), n_frames)):
            out[f] = float(chunk.sum())
        return out

    # ------------------------------------------------------------------------------------------------ running
    def _run_groups(self, reqs, fn) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(reqs)
        for idx in self._groups(reqs):
            try:
                res = fn([reqs[i] for i in idx])
            except Exception as e:  # noqa: BLE001
                if _is_oom(e):
                    raise
                if len(idx) == 1:
                    res = [Answer.failed(f"{self.name}: {type(e).__name__}: {e}")]
                else:  # retry one by one: only the bad clip fails
                    res = []
                    for i in idx:
                        try:
                            res.extend(fn([reqs[i]]))
                        except Exception as e1:  # noqa: BLE001
                            if _is_oom(e1):
                                raise
                            res.append(Answer.failed(f"{self.name}: {type(e1).__name__}: {e1}"))
            for i, a in zip(idx, res):
                answers[i] = a
        return answers  # type: ignore[return-value]

    def _too_long(self, n_text, n_vis) -> list[str | None]:
        return [f"prompt of {a + b} tokens exceeds context {self.max_context}" if a + b > self.max_context else None
                for a, b in zip(n_text, n_vis)]

    def _split_long(self, reqs, prepare):
        """Prepare a batch; clips whose prompt exceeds the context are answered as failed and dropped."""
        items = [(r.frames, r.t, r.prompt, getattr(r, "context", None)) for r in reqs]
        inputs, texts, mode = prepare(items)
        n_vis, n_text = self._counts(inputs)
        errs = self._too_long(n_text, n_vis)
        if any(errs):
            keep = [i for i, e in enumerate(errs) if e is None]
            if keep:
                sub, _, _ = prepare([items[i] for i in keep])
                texts = [texts[i] for i in keep]
                n_vis2, n_text2 = self._counts(sub)
            else:
                sub, n_vis2, n_text2 = None, [], []
            return sub, texts, mode, keep, errs, n_vis, n_text, n_vis2, n_text2
        return inputs, texts, mode, list(range(len(reqs))), errs, n_vis, n_text, n_vis, n_text

    def _generate_batch(self, reqs, max_new: int, parse: bool) -> list[Answer]:
        import torch

        inputs, texts, mode, keep, errs, n_vis_all, n_text_all, n_vis, n_text = self._split_long(reqs, self._prepare)
        answers = _failed_slots(errs, n_vis_all, n_text_all)
        if not keep:
            return answers
        kw = self._to_device(inputs)
        want_att = bool(self.spec["attention"])
        with torch.inference_mode():
            out = self.model.generate(**kw, max_new_tokens=max_new, do_sample=False, num_beams=1,
                                      output_attentions=want_att, return_dict_in_generate=True,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_ids or None)
        seq = out.sequences[:, kw["input_ids"].shape[1]:]
        texts_out = self.tokenizer.batch_decode(seq, skip_special_tokens=True)
        att = None
        if want_att:
            att = self._attention(out.attentions[0], kw, inputs, mode, [reqs[i] for i in keep])
        if parse:
            from .parse import parse_label
        for j, i in enumerate(keep):
            text = texts_out[j].strip()
            a = Answer(text=text, n_visual_tokens=n_vis[j], n_text_tokens=n_text[j])
            if parse:
                label, method = parse_label(text, reqs[i].labels, use_embedding=bool(self.spec["parse_embedding"]))
                a.label, a.parse_method = label, method
                a.status = "ok" if label is not None else "unparsed"
            if att is not None:
                a.extra["attention"] = att[j]
            answers[i] = a
        return answers

    def _attention(self, layers, kw, inputs, mode, reqs) -> list[dict]:
        import torch

        stack = torch.stack([a[:, :, -1, :].float() for a in layers if a is not None])  # (L, B, H, S)
        mean = stack.mean(dim=(0, 2))                                                    # (B, S)
        vis = self._visual_mask(kw["input_ids"]) & kw["attention_mask"].bool()
        out = []
        for b in range(mean.shape[0]):
            row = mean[b].cpu()
            vpos = vis[b].nonzero().flatten().cpu()
            frames = self._frame_masses(row, vpos, len(reqs[b].frames), mode, inputs, b)
            text_mask = kw["attention_mask"][b].bool().cpu() & ~vis[b].cpu()
            out.append({"frames": [float(x) for x in frames], "text": float(row[text_mask].sum())})
        return out

    # ------------------------------------------------------------------------------------------------ scoring
    def _label_ids(self, prefix_text: str, label: str) -> list[int]:
        lead = " " if prefix_text.endswith(":") else ""
        ids = self.tokenizer(lead + label, add_special_tokens=False)["input_ids"]
        if self.spec["score_eos"] and self.tokenizer.eos_token_id is not None:
            ids = ids + [self.tokenizer.eos_token_id]
        return ids

    @property
    def _cache_kw(self) -> str:
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _positions(self, kw: dict):
        """Prompt position ids exactly as ``generate`` computes them (3-D M-RoPE for Qwen-style models)."""
        import inspect

        if "position_ids" not in inspect.signature(self.model.forward).parameters:
            return None
        mk = {k: v for k, v in kw.items()}
        return self.model._prepare_position_ids_for_generation(kw["input_ids"], mk)

    def _score_batch(self, reqs) -> list[Answer]:
        import torch

        inputs, texts, mode, keep, errs, n_vis_all, n_text_all, n_vis, n_text = self._split_long(reqs, self._prepare)
        answers = _failed_slots(errs, n_vis_all, n_text_all)
        if not keep:
            return answers
        kept = [reqs[i] for i in keep]
        kw = self._to_device(inputs)
        logp = self.score_prefix_cached(kw, [texts[j] for j in range(len(kept))], [r.labels for r in kept])
        for j, i in enumerate(keep):
            answers[i] = self._score_answer(kept[j].labels, logp[j], n_vis[j], n_text[j])
        return answers

    def _score_answer(self, labels, lp: list[tuple[float, int]], n_vis: int, n_text: int) -> Answer:
        sums = np.array([s for s, _ in lp], dtype=float)
        means = np.array([s / max(n, 1) for s, n in lp], dtype=float)
        use = sums if self.spec["score_norm"] == "sum" else means
        p = np.exp(use - use.max())
        p /= p.sum()
        best = labels[int(np.argmax(p))]
        return Answer(text=best, label=best, status="ok", parse_method="score",
                      scores={lab: float(x) for lab, x in zip(labels, p)}, n_visual_tokens=n_vis,
                      n_text_tokens=n_text,
                      extra={"logprob_sum": {lab: float(x) for lab, x in zip(labels, sums)},
                             "logprob_mean": {lab: float(x) for lab, x in zip(labels, means)},
                             "score_norm": self.spec["score_norm"]})

    def score_prefix_cached(self, kw: dict, prefix_texts: list[str], label_sets: list[list[str]]):
        """Per row, per label: (summed log-prob of the label continuation, its token count), using one prompt
        forward that fills the KV cache and one short forward per label index against that cache."""
        import torch

        pos = self._positions(kw)
        pad = self.tokenizer.pad_token_id
        B = kw["input_ids"].shape[0]
        S = kw["input_ids"].shape[1]
        with torch.inference_mode():
            fwd = dict(kw)
            if pos is not None:
                fwd["position_ids"] = pos
            out = self.model(**fwd, use_cache=True)
            # transformers 5 names it `cache` (reading `past_key_values` logs a deprecation); older: past_key_values
            cache = out.cache if "cache" in out else getattr(out, "past_key_values", None)
            first = torch.log_softmax(out.logits[:, -1, :].float(), -1)  # (B, V)
            n_lab = max(len(ls) for ls in label_sets)
            result: list[list[tuple[float, int]]] = [[] for _ in range(B)]
            for li in range(n_lab):
                conts = [self._label_ids(prefix_texts[b], label_sets[b][li]) if li < len(label_sets[b]) else [pad]
                         for b in range(B)]
                c = max(len(x) for x in conts)
                ids = torch.full((B, c), pad, dtype=torch.long)
                cm = torch.zeros((B, c), dtype=kw["attention_mask"].dtype)
                for b, x in enumerate(conts):
                    ids[b, :len(x)] = torch.tensor(x)
                    cm[b, :len(x)] = 1
                ids, cm = ids.to(self.model.device), cm.to(self.model.device)
                step = {"input_ids": ids, "attention_mask": torch.cat([kw["attention_mask"], cm], 1),
                        self._cache_kw: cache, "use_cache": True}
                if pos is not None:
                    ar = torch.arange(1, c + 1, device=pos.device).view(*([1] * (pos.dim() - 1)), c)
                    step["position_ids"] = pos[..., -1:] + ar
                o = self.model(**step)
                lp = torch.log_softmax(o.logits.float(), -1)  # (B, c, V)
                for b, x in enumerate(conts):
                    if li >= len(label_sets[b]):
                        continue
                    tot = float(first[b, x[0]])
                    for k in range(1, len(x)):
                        tot += float(lp[b, k - 1, x[k]])
                    result[b].append((tot, len(x)))
                cache.crop(-c)  # back to the prompt
                assert cache.get_seq_length() == S
        return result

    def score_naive(self, req: ClassifyRequest) -> list[tuple[float, int]]:
        """Reference scorer: for each label a full forward over prompt + continuation (no cache, batch 1)."""
        import torch

        inputs, texts, mode = self._prepare([(req.frames, req.t, req.prompt, req.context)])
        kw = self._to_device(inputs)
        out = []
        for lab in req.labels:
            x = self._label_ids(texts[0], lab)
            full = dict(kw)
            full["input_ids"] = torch.cat([kw["input_ids"], torch.tensor([x], device=self.model.device)], 1)
            full["attention_mask"] = torch.ones_like(full["input_ids"])
            if "mm_token_type_ids" in full:
                full["mm_token_type_ids"] = torch.cat(
                    [kw["mm_token_type_ids"], torch.zeros((1, len(x)), dtype=kw["mm_token_type_ids"].dtype,
                                                          device=self.model.device)], 1)
            pos = self._positions(full)
            if pos is not None:
                full["position_ids"] = pos
            with torch.inference_mode():
                logits = self.model(**full, use_cache=False).logits.float()
            lp = torch.log_softmax(logits[0], -1)
            S = kw["input_ids"].shape[1]
            out.append((float(sum(lp[S - 1 + k, x[k]] for k in range(len(x)))), len(x)))
        return out

    # ------------------------------------------------------------------------------------------------ protocol
    def classify(self, requests: list[ClassifyRequest], score: bool = False) -> list[Answer]:
        if score:
            return self._run_groups(requests, self._score_batch)
        n = int(self.spec["max_new_tokens"])
        return self._run_groups(requests, lambda rs: self._generate_batch(rs, n, parse=True))

    def describe(self, requests: list[DescribeRequest]) -> list[Answer]:
        n = int(self.spec["describe_max_new_tokens"])
        return self._run_groups(requests, lambda rs: self._generate_batch(rs, n, parse=False))
