"""Tiny random checkpoints of every VLM family, loaded by path through HFBackend (no downloads)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from emoprobe import labels, prompts, tiny
from emoprobe.hf import HFBackend, resize_frames, sampling_fps
from emoprobe.models import ClassifyRequest, DescribeRequest, ModelError

FAMILIES = list(tiny.BUILDERS)
LABELS = list(labels.DFEW)
PROMPT = prompts.render("paper", LABELS)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    return tiny.build_all(tmp_path_factory.mktemp("tiny"))


_BACKENDS: dict = {}


def backend(ckpts, family, **spec) -> HFBackend:
    if family not in ckpts:
        pytest.skip(f"tiny {family} not buildable here: {tiny.BUILD_ERRORS.get(family)}")
    key = (family, tuple(sorted(spec.items())))
    if key not in _BACKENDS:
        full = {"model": str(ckpts[family]), "max_pixels": 112 * 112, "max_new_tokens": 4,
                "parse_embedding": False, **spec}
        _BACKENDS[key] = HFBackend(full)
    return _BACKENDS[key]


def clip(seed=0, t_len=4, size=112, fps=2.0):
    rng = np.random.RandomState(seed)
    frames = rng.randint(0, 256, (t_len, size, size, 3), dtype=np.uint8)
    return frames, np.arange(t_len) / fps


def req(seed=0, **kw):
    f, t = clip(seed)
    return ClassifyRequest(frames=f, t=t, labels=LABELS, prompt=PROMPT, **kw)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("as_video", [True, False], ids=["video", "images"])
def test_family_classifies_by_path(ckpts, family, as_video):
    b = backend(ckpts, family, as_video=as_video)
    (a,) = b.classify([req()])
    assert a.status in {"ok", "unparsed"}, a.error
    assert a.n_visual_tokens > 0 and a.n_text_tokens > 0
    assert b.fingerprint()["family"] == json.loads((ckpts[family] / "config.json").read_text())["model_type"]


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_batch1_and_scores_match_naive(ckpts, family):
    b = backend(ckpts, family)
    reqs = [req(0), req(1), req(2)]
    batched = b.classify(reqs)
    single = [b.classify([r])[0] for r in reqs]
    assert [a.text for a in batched] == [a.text for a in single]
    assert [a.n_visual_tokens for a in batched] == [a.n_visual_tokens for a in single]

    scored = b.classify(reqs, score=True)
    for a in scored:
        assert a.status == "ok" and a.parse_method == "score"
        assert set(a.scores) == set(LABELS)
        assert sum(a.scores.values()) == pytest.approx(1.0, abs=1e-6)
        assert a.label == max(a.scores, key=a.scores.get)
    naive = b.score_naive(reqs[1])
    cached = scored[1].extra["logprob_sum"]
    for lab, (lp, _) in zip(LABELS, naive):
        assert cached[lab] == pytest.approx(lp, abs=2e-4)
    one = b.classify([reqs[1]], score=True)[0]
    for lab in LABELS:
        assert one.scores[lab] == pytest.approx(scored[1].scores[lab], abs=1e-5)


def test_mean_normalised_scores(ckpts):
    b = backend(ckpts, "qwen2_5_vl", score_norm="mean")
    (a,) = b.classify([req()], score=True)
    lp = a.extra["logprob_mean"]
    p = np.exp(np.array([lp[k] for k in LABELS]) - max(lp.values()))
    p /= p.sum()
    assert [a.scores[k] for k in LABELS] == pytest.approx(list(p), abs=1e-9)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "internvl3", "llava_next_video"])
@pytest.mark.parametrize("as_video", [True, False], ids=["video", "images"])
def test_attention_masses_sum_to_one(ckpts, family, as_video):
    b = backend(ckpts, family, attention=True, as_video=as_video)
    (a,) = b.classify([req()])
    att = a.extra["attention"]
    assert len(att["frames"]) == 4
    assert all(x > 0 for x in att["frames"])
    assert sum(att["frames"]) + att["text"] == pytest.approx(1.0, abs=1e-3)


def test_msce_context_interleaves_images_and_text(ckpts):
    b = backend(ckpts, "qwen2_5_vl")
    plain = b.classify([req()])[0]
    ctx = ["The mouth corners rise.", "The brows lower.", "Nothing moves."]
    (a,) = b.classify([req(context=ctx)])
    assert a.status in {"ok", "unparsed"}, a.error
    # four single-frame images cost as many tokens as two 2-frame video patches twice over
    assert a.n_visual_tokens == 2 * plain.n_visual_tokens
    assert a.n_text_tokens > plain.n_text_tokens + 10


def test_describe(ckpts):
    b = backend(ckpts, "qwen2_5_vl", describe_max_new_tokens=6)
    f, t = clip()
    (a,) = b.describe([DescribeRequest(frames=f, t=t, prompt=prompts.DESCRIBE["motion"])])
    assert a.status == "ok" and a.label is None and a.n_visual_tokens > 0


def test_missing_path_and_unknown_id():
    with pytest.raises(ModelError, match="does-not-exist"):
        HFBackend({"model": "/nonexistent/does-not-exist"})
    with pytest.raises(ModelError, match="not in the local HF cache"):
        HFBackend({"model": "emoprobe-nobody/no-such-model"})


def test_every_family_builds_or_says_why(ckpts):
    assert "qwen2_5_vl" in ckpts  # the MicroVLM architecture must always build
    for fam in FAMILIES:
        assert fam in ckpts or tiny.BUILD_ERRORS.get(fam), fam


def test_no_chat_template(ckpts, tmp_path):
    dst = tmp_path / "nochat"
    shutil.copytree(ckpts["qwen2_5_vl"], dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    for name in ("tokenizer_config.json", "processor_config.json"):
        p = dst / name
        if p.exists():
            cfg = json.loads(p.read_text())
            cfg.pop("chat_template", None)
            p.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="no chat template"):
        HFBackend({"model": str(dst)})


def test_overlong_prompt_fails_only_that_clip(ckpts):
    b = backend(ckpts, "qwen2_5_vl", max_context=120)
    short = req(0)
    long = ClassifyRequest(frames=short.frames, t=short.t, labels=LABELS, prompt=PROMPT + " happy" * 200)
    a_short, a_long = b.classify([short, long])
    assert a_short.status in {"ok", "unparsed"}
    assert a_long.status == "failed" and "exceeds context 120" in a_long.error
    assert a_long.error.startswith("prompt of ")
    s_short, s_long = b.classify([short, long], score=True)
    assert s_short.status == "ok" and s_long.status == "failed"


def test_bad_frames_fail_the_clip_not_the_batch(ckpts):
    b = backend(ckpts, "qwen2_5_vl")
    bad = ClassifyRequest(frames=np.zeros((4, 112, 112, 3), np.float32), t=np.arange(4) / 2, labels=LABELS,
                          prompt=PROMPT)
    good, worse = b.classify([req(0), bad])
    assert good.status in {"ok", "unparsed"}
    assert worse.status == "failed" and "uint8" in worse.error


def test_fingerprint_and_determinism(ckpts, tmp_path):
    b = backend(ckpts, "qwen2_5_vl")
    fp = b.fingerprint()
    assert fp["weights_sha256"] and fp["as_video"] is True and fp["max_pixels"] == 112 * 112
    assert fp["transformers"] and fp["dtype"] == "float32"
    again = tiny.build("qwen2_5_vl", tmp_path / "again")
    fp2 = HFBackend({"model": str(again), "max_pixels": 112 * 112, "max_new_tokens": 4,
                     "parse_embedding": False}).fingerprint()
    assert fp2["weights_sha256"] == fp["weights_sha256"]
    assert fp2["processor_sha256"] == fp["processor_sha256"]
    assert backend(ckpts, "qwen2_5_vl", as_video=False).fingerprint()["as_video"] is False


def test_tiny_builder_sizes(tmp_path):
    p = tiny.build_qwen2_5_vl(tmp_path / "q", corpus=["a happy sad face"] * 5, vocab_size=400,
                              text=dict(hidden_size=96, num_hidden_layers=1, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=192),
                              vision=dict(depth=1, hidden_size=32, num_heads=2, intermediate_size=64),
                              image_size=56, seed=3)
    cfg = json.loads((p / "config.json").read_text())
    tc = cfg["text_config"]
    assert tc["hidden_size"] == 96 and cfg["vision_config"]["out_hidden_size"] == 96
    assert sum(tc["rope_parameters"]["mrope_section"]) == 96 // 4 // 2
    card = json.loads((p / "tiny_build.json").read_text())
    assert card["pixel_size"]["longest_edge"] == 56 * 56
    with pytest.raises(ValueError, match="unknown tiny family"):
        tiny.build("nope", tmp_path / "x")


def test_helpers():
    f, _ = clip(size=224)
    small = resize_frames(f, 112 * 112)
    assert small.shape == (4, 112, 112, 3) and small.dtype == np.uint8
    assert resize_frames(f, None) is f
    assert sampling_fps(np.arange(5) / 5.0) == pytest.approx(5.0)
    assert sampling_fps(np.array([0.0])) == 1.0
