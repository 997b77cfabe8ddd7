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
    """The Qwen processors' pixel budget for ``image_size``-px frames: up to image_size² pixels per frame
    (rounded to the 28-px patch×merge grid), at least 56×56."""
    side = max(factor, int(round(image_size / factor)) * factor)
    return {"shortest_edge": min(side, 2 * factor) ** 2, "longest_edge": side * side}


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
    ids = {n: tok.convert_tokens_to_ids(s) for n, s in
           [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
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
# Registry
# --------------------------------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[..., Path]] = {
    "qwen2_5_vl": build_qwen2_5_vl,
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


def build_all(directory, families: Iterable[str] | None = None, *, rebuild: bool = False) -> dict[str, Path]:
    """Build (or reuse, cached by family under ``directory``) every buildable family; return family → path.

    A finished build is recognised by its ``tiny_build.json``; a half-written directory is rebuilt.
    """
    directory = Path(directory)
    out = {}
    for fam in families or BUILDERS:
        path = directory / fam
        if rebuild or not (path / "tiny_build.json").exists():
            if path.exists():
                shutil.rmtree(path)
            build(fam, path)
        out[fam] = path
    return out
