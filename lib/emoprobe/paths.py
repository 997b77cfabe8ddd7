"""Where things live. The repository root is found from $EMOPROBE_ROOT or by walking up from the cwd."""
from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    env = os.environ.get("EMOPROBE_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "chapters" / "profiles.yml").exists() and (p / "lib" / "emoprobe").exists():
            return p
    raise FileNotFoundError(
        f"cannot find the emoprobe repository root above {here}: set EMOPROBE_ROOT or run inside the checkout"
    )


def cache() -> Path:
    """Ignored folder for generated data, run stores and other caches."""
    p = Path(os.environ.get("EMOPROBE_CACHE", root() / "data" / "cache"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def generated() -> Path:
    p = Path(os.environ.get("EMOPROBE_GENERATED", root() / "data" / "generated"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def models() -> Path:
    """Committed checkpoints of the embedded default models."""
    return root() / "data" / "models"


def towers() -> Path:
    """Committed MicroVLM stage-0 towers (``train_loops.committed_tower``)."""
    return root() / "data" / "towers"


def reference() -> Path:
    return root() / "data" / "reference"
