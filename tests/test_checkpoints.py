"""Every committed checkpoint under data/models, loaded through the real backend (``emoprobe.models.load``),
answers a handful of SynthFER clips sensibly: every answer a label of the set (vision: always; VLMs: at least
90% of the generated answers), and not one constant answer for every clip."""
from __future__ import annotations

import json

import pytest

from emoprobe import labels, models, paths, prompts, sampling
from emoprobe.models import ClassifyRequest

MAFW = list(labels.MAFW)


def _committed() -> list[str]:
    root = paths.models()
    return sorted(p.name for p in root.iterdir() if (p / "config.json").exists()) if root.exists() else []


@pytest.fixture(scope="module")
def clips():
    """Two clips per class of a small balanced SynthFER MAFW test split (22 clips)."""
    from emoprobe import synthfer

    return synthfer.dataset("mafw", "test", n_per_class=2, seed=0)


def test_every_model_folder_is_checked():
    names = _committed()
    assert {"vision3d", "vision3d-balanced", "microvlm", "microvlm-uniform", "microvlm-lora-balanced"} <= set(names)


@pytest.mark.parametrize("name", _committed())
def test_checkpoint_answers_are_in_label_and_not_constant(name, clips):
    cfg = json.loads((paths.models() / name / "config.json").read_text())
    kind = "vision" if ("arch" in cfg and "labels" in cfg) else "hf"
    b = models.load({"backend": kind, "model": f"data/models/{name}"})
    prompt = "" if kind == "vision" else prompts.render("paper", MAFW)
    reqs = []
    for path in clips["path"]:
        fr = sampling.sample(path, strategy="count", count=16 if kind == "vision" else 8)
        reqs.append(ClassifyRequest(frames=fr.frames, t=fr.t, labels=MAFW, prompt=prompt))
    answers = b.classify(reqs)
    assert len(answers) == len(reqs)
    assert all(a.status != "failed" for a in answers), [a.error for a in answers if a.status == "failed"]
    said = [a.label if kind == "vision" else a.text.strip().lower() for a in answers]
    in_label = [s for s in said if s in MAFW]
    if kind == "vision":
        assert len(in_label) == len(said)
    else:
        assert len(in_label) >= 0.9 * len(said), said
    assert len(set(in_label)) >= 3, f"{name}: near-constant answers {said}"
