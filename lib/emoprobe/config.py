"""Profiles: one YAML (`chapters/profiles.yml`) giving per-chapter parameters for smoke / default / paper.

A chapter's parameters are ``profiles[profile].common`` overlaid by ``profiles[profile].chapters[chapter]`` with a
deep merge: a chapter block that sets only ``dataset: {limit: 5}`` keeps the rest of ``common.dataset``
(:func:`merge`). Only names that the notebook declares in its ``parameters`` cell may be set (typos fail loudly).

The ``models`` parameter has one shape, a list of model specs ``{name, backend, model, ...}``, each with an
optional ``role`` (e.g. ``vlm``, ``vision_balanced``) for chapters that give models parts to play;
:func:`model_specs` also reads the older mapping ``{role: spec | [spec, ...] | None}`` and returns that list.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from . import paths

PROFILES = ("smoke", "default", "paper", "rehearsal")  # rehearsal: the paper profile on tiny checkpoints (tests)


def profiles_file() -> Path:
    return paths.root() / "chapters" / "profiles.yml"


def read(path: Path | None = None) -> dict:
    path = Path(path or profiles_file())
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: profiles file not found") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or "profiles" not in data:
        raise ValueError(f"{path}: expected a mapping with a 'profiles' key")
    return data


def load(chapter: str, profile: str = "default", path: Path | None = None) -> dict:
    """Parameters for ``chapter`` (file stem, e.g. '02_long_tail') under ``profile``."""
    data = read(path)
    profs = data["profiles"]
    if profile not in profs:
        raise ValueError(f"unknown profile {profile!r}; {path or profiles_file()} defines {sorted(profs)}")
    prof = profs[profile] or {}
    params = merge(prof.get("common") or {}, (prof.get("chapters") or {}).get(chapter) or {})
    params["profile"] = profile
    return params


def merge(base: dict, over: dict) -> dict:
    """A deep copy of ``base`` with ``over`` laid on top: nested mappings are merged key by key, anything else
    (lists, scalars, ``None``) in ``over`` replaces the value in ``base``. A nested mapping whose ``name`` differs
    from the one it lands on describes another thing (e.g. ``dataset: {name: synthfer, ...}`` over a MAFW
    ``dataset``) and replaces it whole. Neither argument is modified."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict) and v.get("name", old.get("name")) == old.get("name"):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def model_specs(models) -> list[dict]:
    """The ``models`` parameter as a list of spec dicts (copies), each with a ``name``.

    Accepts the list shape (``[{name, backend, model, role?}, ...]``) and the mapping shape
    ``{role: spec | [spec, ...] | None}``, whose entries come back in the mapping's order with ``role`` set;
    roles mapped to ``None`` (not available in this profile) are left out. A spec without ``name`` is named
    after its ``model``. Raises ValueError naming the entry for anything else."""
    if models is None:
        return []
    if isinstance(models, dict):
        items = []
        for role, v in models.items():
            for spec in (v if isinstance(v, (list, tuple)) else [v]):
                if spec is not None:
                    items.append((role, spec))
    elif isinstance(models, (list, tuple)):
        items = [(None, spec) for spec in models]
    else:
        raise ValueError(f"`models` must be a list of model specs (or a mapping role -> spec); got {models!r}")
    out = []
    for role, spec in items:
        if not isinstance(spec, dict) or "model" not in spec:
            raise ValueError(f"`models` entry {spec!r}{f' (role {role!r})' if role else ''}: "
                             "expected a mapping with at least a `model` key")
        spec = copy.deepcopy(spec)
        spec.setdefault("name", str(spec["model"]))
        if role is not None:
            spec.setdefault("role", role)
        out.append(spec)
    return out
