"""Tiny, randomly initialised checkpoints of the real VLM architectures, built entirely offline.

Every builder trains a byte-level BPE tokenizer with ``tokenizers`` on a small corpus, wraps it in
``PreTrainedTokenizerFast`` with the family's special tokens and a chat template in the family's style, builds the
family's real transformers processor and model class with a small config, initialises the weights from ``seed`` and
``save_pretrained``s model + processor into ``out_dir``. The result loads by path exactly like a hub checkpoint
(``AutoProcessor.from_pretrained(out_dir)``, ``AutoModelForImageTextToText.from_pretrained(out_dir)``) and
therefore through :class:`emoprobe.hf.HFBackend`.

Nothing is downloaded. The weights are random: the checkpoints exercise plumbing (token counts, batching,
scoring, attention maps, throughput), never accuracy.

>>> from emoprobe import tiny
>>> path = tiny.build("qwen2_5_vl", "/tmp/tiny-qwen")          # ≈0.5 M parameters
>>> paths = tiny.build_all("/tmp/tiny")                         # every family that builds offline
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Callable, Iterable

# --------------------------------------------------------------------------------------------------------------
# Corpus and tokenizer
# --------------------------------------------------------------------------------------------------------------

_WORDS = """
a an the this that these those is are was were be been being it its they them their he she his her person face
video clip frame frames image images keyframe keyframes gap gaps motion moves move moving movement region regions
when where how much little slightly strongly briefly quickly slowly suddenly then first next last before after
while during start end middle beginning across between over under up down left right upper lower inner outer
eye eyes eyebrow eyebrows brow brows forehead lid lids cheek cheeks nose mouth lip lips corner corners jaw chin
teeth smile smiles smiling frown frowns frowning raise raises raised raising lower lowers lowered lowering
tighten tightens tightened press presses pressed stretch stretches stretched open opens opened close closes
closed wrinkle wrinkles wrinkled part parts parted drop drops dropped pull pulls pulled squint blink blinks
head turn turns turned tilt tilts nod nods shake shakes look looks looking gaze
emotion emotions emotional expression expressions facial feeling feelings affect mood micro expression subtle
happy sad angry surprised disgusted fearful anxious contemptuous disappointed helpless calm neutral
happiness sadness anger surprise disgust fear anxiety contempt disappointment helplessness
question answer label labels choice choices exactly one word from reply json describe analyze following
sequence sparse detailed descriptions what which of in on at to for with and or not no yes
you are a helpful assistant system user
""".split()


def default_corpus() -> list[str]:
    """A small English corpus: emotion/face/motion words, every label name and every prompt of ``emoprobe.prompts``."""
    from . import labels, prompts

    all_labels = sorted(set(labels.MAFW) | set(labels.DFEW))
    lines = [" ".join(_WORDS)]
    for lab in all_labels:
        lines += [lab, lab.capitalize(), f" {lab}", f'{{"emotion": "{lab}"}}', f"The emotion is {lab}."]
    for name in prompts.TEMPLATES:
        for ls in (labels.MAFW, labels.DFEW):
            lines.append(prompts.render(name, ls, context="The mouth corners rise slightly."))
    lines += list(prompts.DESCRIBE.values())
    lines += [f"Frame {i}: Motion: " for i in range(1, 17)] + [str(i) for i in range(100)]
    # Repeat so that the frequent pieces get merged first.
    return lines * 3


def train_tokenizer(
    corpus: Iterable[str] | None,
    vocab_size: int,
    special_tokens: list[str],
    *,
    named: dict[str, str],
    extra_named: dict[str, str] | None = None,
    chat_template: str | None = None,
    model_max_length: int = 32768,
):
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it in ``PreTrainedTokenizerFast``.

    ``named`` maps the standard special-token attributes (``eos_token``, ``pad_token``, ``bos_token``,
    ``unk_token``) to tokens; ``extra_named`` maps model-specific names (``image_token``, ``video_token``...)
    to tokens, which become attributes of the tokenizer (as in the hub tokenizers of these families).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(default_corpus() if corpus is None else corpus)
    if not corpus:
        raise ValueError("tokenizer corpus is empty")
    min_vocab = 256 + len(special_tokens)
    if vocab_size < min_vocab:
        raise ValueError(f"vocab_size={vocab_size} is below the byte alphabet + special tokens ({min_vocab})")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    extra = dict(extra_named or {})
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        padding_side="left",
        extra_special_tokens=extra if extra else [t for t in special_tokens if t not in named.values()],
        **named,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


# --------------------------------------------------------------------------------------------------------------
# Chat templates (the family's own style; content parts {"type": "image"|"video"|"text"})
# --------------------------------------------------------------------------------------------------------------

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif content['type'] == 'video' or 'video' in content -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in content -%}{{- content['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _chatml_template(image: str, video: str | None, system: str | None = None) -> str:
    """A ChatML template (``<|im_start|>role\\n...<|im_end|>\\n``) with the given per-part placeholders."""
    sys = (
        "{%- if loop.first and message['role'] != 'system' -%}"
        "{{- '<|im_start|>system\\n" + system + "<|im_end|>\\n' -}}{%- endif -%}"
        if system
        else ""
    )
    vid = (
        "{%- elif content['type'] == 'video' -%}{{- '" + video + "' -}}" if video is not None else ""
    )
    return (
        "{%- for message in messages -%}" + sys +
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for content in message['content'] -%}"
        "{%- if content['type'] == 'image' -%}{{- '" + image + "' -}}" + vid +
        "{%- elif content['type'] == 'text' -%}{{- content['text'] -}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def _vicuna_template(image: str, video: str | None) -> str:
    """LLaVA/Vicuna style: ``USER: <image>\\n... ASSISTANT:`` (LLaVA-NeXT-Video, Video-LLaVA)."""
    vid = "{%- elif content['type'] == 'video' -%}{{- '" + video + "\\n' -}}" if video is not None else ""
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{{- message['content'] if message['content'] is string "
        "else message['content'][0]['text'] -}}{{- ' ' -}}"
        "{%- else -%}{{- message['role'].upper() + ': ' -}}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for content in message['content'] -%}"
        "{%- if content['type'] == 'image' -%}{{- '" + image + "\\n' -}}" + vid +
        "{%- elif content['type'] == 'text' -%}{{- content['text'] -}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- if message['role'] == 'assistant' -%}{{- '</s>' -}}{%- endif -%}{{- ' ' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
    )


def _smolvlm_template() -> str:
    """SmolVLM/Idefics3 style: ``<|im_start|>User:<image>...<end_of_utterance>\\nAssistant:``."""
    return (
        "<|im_start|>{%- for message in messages -%}"
        "{{- message['role'] | capitalize -}}"
        "{%- if message['content'][0]['type'] == 'image' -%}{{- ':' -}}{%- else -%}{{- ': ' -}}{%- endif -%}"
        "{%- for line in message['content'] -%}"
        "{%- if line['type'] == 'text' -%}{{- line['text'] -}}"
        "{%- elif line['type'] == 'image' -%}{{- '<image>' -}}"
        "{%- elif line['type'] == 'video' -%}{{- '<video>' -}}"
        "{%- endif -%}{%- endfor -%}"
        "{{- '<end_of_utterance>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
    )


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (t, h, w) like Qwen (16, 24, 24 of 64)."""
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def _seeded_model(model_cls, config, seed: int):
    import torch

    torch.manual_seed(seed)
    model = model_cls(config)
    model.eval()
    return model


def _save(out_dir: Path, model, processor, tokenizer, family: str, params: dict) -> Path:
    from transformers import GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    gen = GenerationConfig(
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model.generation_config = gen
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    card = {"family": family, "random_weights": True, "n_params": n_params, "vocab": len(tokenizer), **params}
    (out_dir / "tiny_build.json").write_text(json.dumps(card, indent=1, sort_keys=True, default=str))
    return out_dir


def _vocab(tokenizer, requested: int) -> int:
    """Embedding rows: the tokenizer's length (the trained BPE may stop short of the request), rounded to 8."""
    return int(math.ceil(max(len(tokenizer), 1) / 8) * 8)


# --------------------------------------------------------------------------------------------------------------
# Qwen2.5-VL (also the MicroVLM's architecture)
# --------------------------------------------------------------------------------------------------------------

QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_NAMED = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
QWEN_EXTRA = {
    "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
}

TINY_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128)
TINY_VISION = dict(depth=2, hidden_size=64, num_heads=4, intermediate_size=128)


def qwen_pixel_size(image_size: int, *, factor: int = 28) -> dict:
    """The Qwen processors' pixel budget for ``image_size``-px frames: at most image_size² pixels per frame
    (the processor rounds each side to its patch×merge ``factor``), at least min(image_size, 2·factor)²."""
    return {"shortest_edge": min(image_size, 2 * factor) ** 2, "longest_edge": image_size * image_size}


def qwen_token_ids(tok) -> dict:
    """The Qwen-VL special-token ids a Qwen2.5-VL / Qwen3-VL config needs, read from ``tok``."""
    return {n: tok.convert_tokens_to_ids(s) for n, s in
            [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
             ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}


def build_qwen2_5_vl(
    out_dir,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 2048,
    text: dict | None = None,
    vision: dict | None = None,
    image_size: int = 112,
    seed: int = 0,
    tie_word_embeddings: bool = True,
    max_position_embeddings: int = 4096,
    chat_template: str = QWEN_CHAT_TEMPLATE,
) -> Path:
    """Build a randomly initialised Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``) + processor in ``out_dir``.

    ``text``: overrides of the text config (hidden_size, num_hidden_layers, num_attention_heads,
    num_key_value_heads, intermediate_size, ...). ``vision``: overrides of the vision config (depth, hidden_size,
    num_heads, intermediate_size, out_hidden_size (default: text hidden), patch_size 14, spatial_merge_size 2,
    temporal_patch_size 2, window_size 112, fullatt_block_indexes (default: last block)). ``image_size``: the
    pixel budget per frame (image_size² pixels). Defaults give ≈0.5 M parameters.
    """
    from transformers import (
        Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out_dir = Path(out_dir)
    tok = train_tokenizer(corpus, vocab_size, QWEN_SPECIAL, named=QWEN_NAMED, extra_named=QWEN_EXTRA,
                          chat_template=chat_template, model_max_length=max_position_embeddings)
    t = {**TINY_TEXT, **(text or {})}
    v = {**TINY_VISION, **(vision or {})}
    v.setdefault("out_hidden_size", t["hidden_size"])
    v.setdefault("patch_size", 14)
    v.setdefault("spatial_merge_size", 2)
    v.setdefault("temporal_patch_size", 2)
    v.setdefault("window_size", 112)
    v.setdefault("fullatt_block_indexes", [v["depth"] - 1])
    head_dim = t["hidden_size"] // t["num_attention_heads"]
    if head_dim * t["num_attention_heads"] != t["hidden_size"] or head_dim % 2:
        raise ValueError(f"text hidden_size {t['hidden_size']} must split into an even head_dim over "
                         f"{t['num_attention_heads']} heads")
    ids = qwen_token_ids(tok)
    text_config = dict(
        vocab_size=_vocab(tok, vocab_size),
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(head_dim)},
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
        **t,
    )
    config = Qwen2_5_VLConfig(text_config=text_config, vision_config=v, tie_word_embeddings=tie_word_embeddings,
                              **ids)
    patch, merge, tps = v["patch_size"], v["spatial_merge_size"], v["temporal_patch_size"]
    size = qwen_pixel_size(image_size, factor=patch * merge)
    common = dict(size=size, patch_size=patch, merge_size=merge, temporal_patch_size=tps)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=False),
        tokenizer=tok,
        chat_template=chat_template,
    )
    model = _seeded_model(Qwen2_5_VLForConditionalGeneration, config, seed)
    return _save(out_dir, model, processor, tok, "qwen2_5_vl",
                 dict(text=t, vision=v, image_size=image_size, seed=seed, pixel_size=size))


# --------------------------------------------------------------------------------------------------------------
# Qwen3-VL
# --------------------------------------------------------------------------------------------------------------

QWEN3_CHAT_TEMPLATE = QWEN_CHAT_TEMPLATE.replace(
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}", "")  # Qwen3-VL's template adds no default system message


def build_qwen3_vl(out_dir, *, corpus=None, vocab_size: int = 2048, text: dict | None = None,
                   vision: dict | None = None, image_size: int = 112, seed: int = 0,
                   max_position_embeddings: int = 4096) -> Path:
    """Random ``Qwen3VLForConditionalGeneration`` (interleaved M-RoPE, DeepStack, 16-px patches) + processor.

    The Qwen3-VL processor writes each temporal patch's timestamp (``<1.2 seconds>``) into the prompt from the
    video metadata (fps, frame indices) the caller passes.
    """
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    out_dir = Path(out_dir)
    tok = train_tokenizer(corpus, vocab_size, QWEN_SPECIAL, named=QWEN_NAMED, extra_named=QWEN_EXTRA,
                          chat_template=QWEN3_CHAT_TEMPLATE, model_max_length=max_position_embeddings)
    t = {**TINY_TEXT, **(text or {})}
    t.setdefault("head_dim", t["hidden_size"] // t["num_attention_heads"])
    v = {**TINY_VISION, **(vision or {})}
    v.setdefault("out_hidden_size", t["hidden_size"])
    v.setdefault("patch_size", 16)
    v.setdefault("spatial_merge_size", 2)
    v.setdefault("temporal_patch_size", 2)
    v.setdefault("num_position_embeddings", 64)  # an 8×8 learned grid, interpolated to the frame's grid
    v.setdefault("deepstack_visual_indexes", [0])
    half = t["head_dim"] // 2
    tsec = max(1, round(half * 24 / 64))  # Qwen3-VL: [24, 20, 20] of 64
    mrope = [tsec, (half - tsec) // 2, half - tsec - (half - tsec) // 2]
    ids = qwen_token_ids(tok)
    text_config = dict(
        vocab_size=_vocab(tok, vocab_size), max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": mrope,
                         "mrope_interleaved": True},
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **t)
    config = Qwen3VLConfig(text_config=text_config, vision_config=v, tie_word_embeddings=True, **ids)
    factor = v["patch_size"] * v["spatial_merge_size"]
    size = qwen_pixel_size(image_size, factor=factor)
    common = dict(size=size, patch_size=v["patch_size"], merge_size=v["spatial_merge_size"],
                  temporal_patch_size=v["temporal_patch_size"], image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen3VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=False),
        tokenizer=tok, chat_template=QWEN3_CHAT_TEMPLATE)
    model = _seeded_model(Qwen3VLForConditionalGeneration, config, seed)
    return _save(out_dir, model, processor, tok, "qwen3_vl",
                 dict(text=t, vision=v, image_size=image_size, seed=seed, pixel_size=size))


# --------------------------------------------------------------------------------------------------------------
# InternVL3 (transformers-native "-hf" layout: InternVLForConditionalGeneration, Qwen2 language model)
# --------------------------------------------------------------------------------------------------------------

INTERNVL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]


def build_internvl3(out_dir, *, corpus=None, vocab_size: int = 2048, text: dict | None = None,
                    vision: dict | None = None, image_size: int = 112, seed: int = 0) -> Path:
    """Random ``InternVLForConditionalGeneration`` (InternViT + pixel-shuffle MLP + Qwen2) + ``InternVLProcessor``.

    One ``image_size``² tile per frame (no dynamic tiling: ``crop_to_patches=False``), so each frame costs
    (image_size/14)²/4 ``<IMG_CONTEXT>`` tokens; videos are expanded by the processor to
    ``Frame1: <img>...</img>`` per frame, as in InternVL3.
    """
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor)

    out_dir = Path(out_dir)
    template = _chatml_template("<IMG_CONTEXT>\\n", "<video>\\n")
    tok = train_tokenizer(corpus, vocab_size, INTERNVL_SPECIAL,
                          named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
                          extra_named={"start_image_token": "<img>", "end_image_token": "</img>",
                                       "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
                          chat_template=template)
    t = {**TINY_TEXT, **(text or {})}
    patch = 14
    if image_size % (2 * patch):
        raise ValueError(f"internvl3: image_size {image_size} must be a multiple of {2 * patch}")
    v = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             image_size=[image_size, image_size], patch_size=[patch, patch])
    v.update(vision or {})
    seq = (image_size // patch) ** 2 // 4
    text_config = dict(model_type="qwen2", vocab_size=_vocab(tok, vocab_size), max_position_embeddings=4096,
                       bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=True, **t)
    config = InternVLConfig(vision_config=v, text_config=text_config,
                            image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=seq,
                            downsample_ratio=0.5, tie_word_embeddings=True)
    sz = {"height": image_size, "width": image_size}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=sz, crop_to_patches=False),
        video_processor=InternVLVideoProcessor(size=sz),
        tokenizer=tok, image_seq_length=seq, chat_template=template)
    model = _seeded_model(InternVLForConditionalGeneration, config, seed)
    return _save(out_dir, model, processor, tok, "internvl3",
                 dict(text=t, vision=v, image_size=image_size, seed=seed, image_seq_length=seq))


# --------------------------------------------------------------------------------------------------------------
# LLaVA-NeXT-Video and Video-LLaVA (CLIP vision tower + Llama language model, Vicuna-style prompt)
# --------------------------------------------------------------------------------------------------------------

LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]
LLAVA_NAMED = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
LLAVA_EXTRA = {"image_token": "<image>", "video_token": "<video>"}
TINY_CLIP = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 projection_dim=64, patch_size=14)


def _llama_text(tok, vocab_size: int, text: dict | None) -> dict:
    t = {**TINY_TEXT, **(text or {})}
    return dict(model_type="llama", vocab_size=_vocab(tok, vocab_size), max_position_embeddings=4096,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                **t)


def build_llava_next_video(out_dir, *, corpus=None, vocab_size: int = 2048, text: dict | None = None,
                           vision: dict | None = None, image_size: int = 112, seed: int = 0) -> Path:
    """Random ``LlavaNextVideoForConditionalGeneration`` + ``LlavaNextVideoProcessor``.

    Video frames: CLIP patches average-pooled with stride 2 → (image_size/14/2)² tokens per frame. Images use
    LLaVA-NeXT "anyres" with a single grid pinpoint (image_size × image_size).
    """
    from transformers import (LlavaNextImageProcessor, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration,
                              LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor)

    out_dir = Path(out_dir)
    template = _vicuna_template("<image>", "<video>")
    tok = train_tokenizer(corpus, vocab_size, LLAVA_SPECIAL, named=LLAVA_NAMED, extra_named=LLAVA_EXTRA,
                          chat_template=template)
    v = {**TINY_CLIP, "model_type": "clip_vision_model", "image_size": image_size, **(vision or {})}
    n_side = image_size // v["patch_size"]
    pin = [[image_size, image_size]]
    config = LlavaNextVideoConfig(
        vision_config=v, text_config=_llama_text(tok, vocab_size, text),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pin, vision_feature_layer=-2, vision_feature_select_strategy="default",
        spatial_pool_stride=2, image_seq_length=n_side * n_side, video_seq_length=(n_side // 2) ** 2)
    crop = {"height": image_size, "width": image_size}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size={"shortest_edge": image_size}, crop_size=crop),
        image_processor=LlavaNextImageProcessor(size={"shortest_edge": image_size}, crop_size=crop,
                                                image_grid_pinpoints=pin),
        tokenizer=tok, chat_template=template, patch_size=v["patch_size"], vision_feature_select_strategy="default",
        num_additional_image_tokens=1)
    model = _seeded_model(LlavaNextVideoForConditionalGeneration, config, seed)
    return _save(out_dir, model, processor, tok, "llava_next_video",
                 dict(text=text or TINY_TEXT, vision=v, image_size=image_size, seed=seed))


def build_video_llava(out_dir, *, corpus=None, vocab_size: int = 2048, text: dict | None = None,
                      vision: dict | None = None, image_size: int = 112, seed: int = 0) -> Path:
    """Random ``VideoLlavaForConditionalGeneration`` + ``VideoLlavaProcessor`` (every CLIP patch + CLS per frame).

    Note: the real Video-LLaVA was trained on exactly 8 frames per video; the architecture itself accepts any T.
    """
    from transformers import (VideoLlavaConfig, VideoLlavaForConditionalGeneration, VideoLlavaImageProcessor,
                              VideoLlavaProcessor, VideoLlavaVideoProcessor)

    out_dir = Path(out_dir)
    template = _vicuna_template("<image>", "<video>")
    tok = train_tokenizer(corpus, vocab_size, LLAVA_SPECIAL, named=LLAVA_NAMED, extra_named=LLAVA_EXTRA,
                          chat_template=template)
    v = {**TINY_CLIP, "model_type": "clip_vision_model", "image_size": image_size, **(vision or {})}
    n_side = image_size // v["patch_size"]
    config = VideoLlavaConfig(
        vision_config=v, text_config=_llama_text(tok, vocab_size, text),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=n_side * n_side, video_seq_length=8 * (n_side * n_side + 1))
    crop = {"height": image_size, "width": image_size}
    processor = VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(size={"shortest_edge": image_size}, crop_size=crop),
        video_processor=VideoLlavaVideoProcessor(size={"shortest_edge": image_size}, crop_size=crop),
        tokenizer=tok, patch_size=v["patch_size"], vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=template)
    model = _seeded_model(VideoLlavaForConditionalGeneration, config, seed)
    return _save(out_dir, model, processor, tok, "video_llava",
                 dict(text=text or TINY_TEXT, vision=v, image_size=image_size, seed=seed))


# --------------------------------------------------------------------------------------------------------------
# SmolVLM (SigLIP-style encoder + pixel shuffle + Llama; any AutoModelForImageTextToText with a chat template)
# --------------------------------------------------------------------------------------------------------------

SMOLVLM_SPECIAL = (["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
                    "<global-img>", "<video>"]
                   + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)])


def build_smolvlm(out_dir, *, corpus=None, vocab_size: int = 2048, text: dict | None = None,
                  vision: dict | None = None, image_size: int = 112, seed: int = 0) -> Path:
    """Random ``SmolVLMForConditionalGeneration`` + ``SmolVLMProcessor``; one global image per frame
    (``do_image_splitting=False``), (image_size/14)²/4 ``<image>`` tokens each."""
    from transformers import (SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor,
                              SmolVLMProcessor, SmolVLMVideoProcessor)

    out_dir = Path(out_dir)
    template = _smolvlm_template()
    tok = train_tokenizer(corpus, vocab_size, SMOLVLM_SPECIAL,
                          named={"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>",
                                 "pad_token": "<|endoftext|>"},
                          extra_named={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                                       "global_image_token": "<global-img>", "video_token": "<video>",
                                       "end_of_utterance_token": "<end_of_utterance>"},
                          chat_template=template)
    patch = 14
    v = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             image_size=image_size, patch_size=patch, **(vision or {}))
    seq = (image_size // patch) ** 2 // 4
    t = _llama_text(tok, vocab_size, text)
    config = SmolVLMConfig(vision_config=v, text_config=t, image_token_id=tok.convert_tokens_to_ids("<image>"),
                           scale_factor=2)
    edge = {"longest_edge": image_size}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=edge, max_image_size=edge, do_image_splitting=False),
        video_processor=SmolVLMVideoProcessor(size=edge, max_image_size=edge, do_sample_frames=False),
        tokenizer=tok, image_seq_len=seq, chat_template=template)
    model = _seeded_model(SmolVLMForConditionalGeneration, config, seed)
    return _save(out_dir, model, processor, tok, "smolvlm",
                 dict(text=text or TINY_TEXT, vision=v, image_size=image_size, seed=seed, image_seq_len=seq))


# --------------------------------------------------------------------------------------------------------------
# Qwen2.5-Omni (thinker only: the text-generating half; the talker/speech half is not built)
# --------------------------------------------------------------------------------------------------------------

OMNI_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_bos|>", "<|vision_eos|>", "<|IMAGE|>",
                "<|VIDEO|>", "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>"]


def build_qwen2_5_omni(out_dir, *, corpus=None, vocab_size: int = 2048, text: dict | None = None,
                       vision: dict | None = None, audio: dict | None = None, image_size: int = 112,
                       seed: int = 0) -> Path:
    """Random ``Qwen2_5OmniThinkerForConditionalGeneration`` + ``Qwen2_5OmniProcessor`` (vision-only use: no
    audio is passed; the audio encoder exists, tiny, because the thinker's class always builds it)."""
    from transformers import (Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig,
                              Qwen2_5OmniThinkerForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLVideoProcessor, WhisperFeatureExtractor)

    out_dir = Path(out_dir)
    template = _chatml_template("<|vision_bos|><|IMAGE|><|vision_eos|>", "<|vision_bos|><|VIDEO|><|vision_eos|>",
                                system="You are a helpful assistant.")
    tok = train_tokenizer(corpus, vocab_size, OMNI_SPECIAL, named=QWEN_NAMED,
                          extra_named={"image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>",
                                       "audio_token": "<|AUDIO|>", "vision_bos_token": "<|vision_bos|>",
                                       "vision_eos_token": "<|vision_eos|>", "audio_bos_token": "<|audio_bos|>",
                                       "audio_eos_token": "<|audio_eos|>"},
                          chat_template=template)
    t = {**TINY_TEXT, **(text or {})}
    head_dim = t["hidden_size"] // t["num_attention_heads"]
    v = {**TINY_VISION, "out_hidden_size": t["hidden_size"], "fullatt_block_indexes": [TINY_VISION["depth"] - 1],
         **(vision or {})}
    a = dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
             output_dim=t["hidden_size"], **(audio or {}))
    cid = tok.convert_tokens_to_ids
    text_config = dict(vocab_size=_vocab(tok, vocab_size), max_position_embeddings=4096,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                        "mrope_section": _mrope_section(head_dim)},
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **t)
    config = Qwen2_5OmniThinkerConfig(
        audio_config=a, vision_config=v, text_config=text_config,
        audio_token_index=cid("<|AUDIO|>"), image_token_index=cid("<|IMAGE|>"), video_token_index=cid("<|VIDEO|>"),
        audio_start_token_id=cid("<|audio_bos|>"), audio_end_token_id=cid("<|audio_eos|>"),
        vision_start_token_id=cid("<|vision_bos|>"), vision_end_token_id=cid("<|vision_eos|>"),
        user_token_id=cid("<|im_start|>"))
    size = qwen_pixel_size(image_size)
    common = dict(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=False),
        feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok, chat_template=template)
    model = _seeded_model(Qwen2_5OmniThinkerForConditionalGeneration, config, seed)
    return _save(out_dir, model, processor, tok, "qwen2_5_omni",
                 dict(text=t, vision=v, audio=a, image_size=image_size, seed=seed, pixel_size=size))


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[..., Path]] = {
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen3_vl": build_qwen3_vl,
    "internvl3": build_internvl3,
    "llava_next_video": build_llava_next_video,
    "video_llava": build_video_llava,
    "smolvlm": build_smolvlm,
    "qwen2_5_omni": build_qwen2_5_omni,
}

# Families that cannot be built offline, with the reason (filled in below as they are tried).
UNBUILDABLE: dict[str, str] = {}


def build(family: str, out_dir, **kw) -> Path:
    """Build the tiny checkpoint of ``family`` into ``out_dir`` and return the path."""
    if family in UNBUILDABLE:
        raise ValueError(f"tiny family {family!r} cannot be built offline: {UNBUILDABLE[family]}")
    if family not in BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[family](Path(out_dir), **kw)


# Families that failed in the last build_all (family -> "ExceptionType: message"), e.g. SmolVLM's processor
# needs the optional package num2words.
BUILD_ERRORS: dict[str, str] = {}


def build_all(directory, families: Iterable[str] | None = None, *, rebuild: bool = False,
              strict: bool = False) -> dict[str, Path]:
    """Build (or reuse, cached by family under ``directory``) every buildable family; return family → path.

    A finished build is recognised by its ``tiny_build.json``; a half-written directory is rebuilt. A family
    that fails to build (e.g. a missing optional package) is left out of the result and its error recorded in
    :data:`BUILD_ERRORS` (``strict=True`` raises instead).
    """
    import warnings

    directory = Path(directory)
    out = {}
    for fam in families or BUILDERS:
        path = directory / fam
        if rebuild or not (path / "tiny_build.json").exists():
            if path.exists():
                shutil.rmtree(path)
            try:
                build(fam, path)
            except Exception as e:  # noqa: BLE001 - recorded, reported, never silently dropped
                if strict:
                    raise
                BUILD_ERRORS[fam] = f"{type(e).__name__}: {e}"
                warnings.warn(f"tiny family {fam!r} not built: {BUILD_ERRORS[fam]}", stacklevel=2)
                shutil.rmtree(path, ignore_errors=True)
                continue
        BUILD_ERRORS.pop(fam, None)
        out[fam] = path
    return out
