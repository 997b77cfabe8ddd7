"""The direct tensor path of the HF backend (``fast_inputs``) gives exactly the processor's model inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emoprobe import labels, models, paths, prompts

MICROVLM = paths.root() / "data" / "models" / "microvlm"


def _clips(rng, n_frames_list, size=112):
    out = []
    for t in n_frames_list:
        frames = rng.integers(0, 256, size=(t, size, size, 3), dtype=np.uint8)
        out.append((frames, np.arange(t) / rng.choice([1.0, 2.0, 4.7, 25.0])))
    return out


def _both(backend, batch):
    backend.spec["fast_inputs"] = "auto"
    fast, texts_f, _ = backend._prepare(batch)
    backend.spec["fast_inputs"] = False
    slow, texts_s, _ = backend._prepare(batch)
    backend.spec["fast_inputs"] = "auto"
    return fast, slow, texts_f, texts_s


def _assert_same(fast, slow):
    assert sorted(fast.keys()) == sorted(slow.keys())
    for k in slow.keys():
        a, b = fast[k], slow[k]
        assert a.dtype == b.dtype and a.shape == b.shape, (k, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(a, b), k


@pytest.fixture(scope="module", params=["microvlm", "tiny"])
def backend(request, tmp_path_factory):
    if request.param == "microvlm":
        if not (MICROVLM / "config.json").exists():
            pytest.skip("no committed MicroVLM checkpoint")
        return models.load({"backend": "hf", "model": str(MICROVLM)})
    from emoprobe import tiny

    d = tiny.build_qwen2_5_vl(tmp_path_factory.mktemp("tiny") / "qwen")
    return models.load({"backend": "hf", "model": str(d)})


@pytest.mark.parametrize("n_frames", [[1], [2], [3], [7, 7], [16, 16, 16], [4, 4, 4, 4, 4, 4, 4, 4]])
def test_fast_inputs_equal_processor(backend, n_frames):
    rng = np.random.default_rng(len(n_frames) * 100 + n_frames[0])
    prompt = prompts.render("paper", list(labels.MAFW))
    batch = [(f, t, prompt, None) for f, t in _clips(rng, n_frames)]
    assert backend._fast_ok([b[0] for b in batch])
    fast, slow, tf, ts = _both(backend, batch)
    assert tf == ts
    _assert_same(fast, slow)


def test_fast_inputs_padding_with_different_prompts(backend):
    rng = np.random.default_rng(7)
    clips = _clips(rng, [5, 5, 5])
    ps = ["Which emotion?", prompts.render("paper", list(labels.MAFW)), "Describe the face in a few words."]
    batch = [(f, t, p, None) for (f, t), p in zip(clips, ps)]
    fast, slow, _, _ = _both(backend, batch)
    _assert_same(fast, slow)


def test_fast_inputs_not_used_where_processor_resizes(backend):
    rng = np.random.default_rng(3)
    odd = rng.integers(0, 256, size=(4, 100, 90, 3), dtype=np.uint8)   # not a multiple of 28: processor resizes
    assert not backend._fast_ok([odd])
    big = rng.integers(0, 256, size=(4, 224, 224, 3), dtype=np.uint8)  # above the checkpoint's pixel budget
    if big.shape[1] * big.shape[2] > backend.processor.video_processor.size.longest_edge:
        assert not backend._fast_ok([big])


def test_fast_inputs_same_answers(backend):
    """End to end: generation on the direct inputs answers exactly as on the processor's."""
    from emoprobe.models import ClassifyRequest

    rng = np.random.default_rng(11)
    prompt = prompts.render("paper", list(labels.MAFW))
    reqs = [ClassifyRequest(frames=f, t=t, labels=list(labels.MAFW), prompt=prompt) for f, t in _clips(rng, [6, 6, 3])]
    backend.spec["fast_inputs"] = "auto"
    a = backend.classify(reqs)
    backend.spec["fast_inputs"] = False
    b = backend.classify(reqs)
    backend.spec["fast_inputs"] = "auto"
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.n_visual_tokens for x in a] == [x.n_visual_tokens for x in b]
