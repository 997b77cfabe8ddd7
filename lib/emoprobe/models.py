"""One way to ask any model about a clip: the backend protocol and the loader.

Backends live in their own modules: ``hf`` (transformers, incl. the embedded MicroVLM), ``remote``
(OpenAI-compatible HTTP: vLLM, Gemini) and ``vision`` (the vision-only temporal classifier).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ModelError(RuntimeError):
    """A model could not be loaded or called (the message names the model and the reason)."""


@dataclass
class ClassifyRequest:
    frames: np.ndarray            # (T, H, W, 3) uint8
    t: np.ndarray                 # (T,) seconds
    labels: list[str]
    prompt: str                   # rendered prompt text (see emoprobe.prompts)
    context: list[str] | None = None  # MSCE stage 2: one motion text per gap, interleaved with the frames


@dataclass
class DescribeRequest:
    frames: np.ndarray
    t: np.ndarray
    prompt: str


@dataclass
class Answer:
    text: str
    label: str | None = None
    status: str = "ok"            # "ok" | "unparsed" | "failed"
    parse_method: str = ""
    scores: dict[str, float] | None = None  # probability over labels, where the backend can give it
    n_visual_tokens: int = 0
    n_text_tokens: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. attention mass per frame

    @classmethod
    def failed(cls, error: str) -> "Answer":
        return cls(text="", status="failed", error=error)


class Backend:
    """Protocol every backend implements."""

    spec: dict

    def fingerprint(self) -> dict:
        """Everything about the model and its settings that changes answers (enters the run-store key)."""
        raise NotImplementedError

    def classify(self, requests: list[ClassifyRequest], score: bool = False) -> list[Answer]:
        raise NotImplementedError

    def describe(self, requests: list[DescribeRequest]) -> list[Answer]:
        raise NotImplementedError


def resolve(spec: dict) -> dict:
    """A spec whose ``model`` (or ``adapter``) is a path relative to the repository root (e.g. the embedded
    ``data/models/microvlm``) gets it made absolute, so chapters and the CLI run from any folder. The display
    ``name`` and the ``role`` a chapter gives a model are not part of the backend's settings."""
    from pathlib import Path

    from . import paths

    spec = {k: v for k, v in spec.items() if k not in ("name", "role")}
    for k in ("model", "adapter"):
        v = spec.get(k)
        if isinstance(v, str) and v and not Path(v).is_absolute():
            try:
                cand = paths.root() / v
            except FileNotFoundError:
                continue
            if cand.exists():
                spec[k] = str(cand)
    return spec


BACKENDS = {
    "hf": "emoprobe.hf:HFBackend",
    "openai": "emoprobe.remote:OpenAIBackend",
    "vision": "emoprobe.vision:VisionBackend",
}


def load(spec: dict | str) -> Backend:
    """Build a backend from a spec such as ``{"backend": "hf", "model": "data/models/microvlm"}``.

    A plain string is taken as an HF model id or path.
    """
    import importlib

    if isinstance(spec, str):
        spec = {"backend": "hf", "model": spec}
    spec = resolve(spec)
    kind = spec.get("backend", "hf")
    if kind not in BACKENDS:
        from .store import redact

        raise ModelError(f"unknown backend {kind!r} in model spec {redact(spec)!r}; known: {sorted(BACKENDS)}")
    mod, cls = BACKENDS[kind].split(":")
    return getattr(importlib.import_module(mod), cls)(spec)
