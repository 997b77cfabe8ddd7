"""Profiles: one YAML (`chapters/profiles.yml`) giving per-chapter parameters for smoke / default / paper.

A chapter's parameters are ``profiles[profile].common`` overlaid by ``profiles[profile].chapters[chapter]``.
Only names that the notebook declares in its ``parameters`` cell may be set (typos fail loudly).
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from . import paths

PROFILES = ("smoke", "default", "paper")


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
    params = copy.deepcopy(prof.get("common") or {})
    params.update(copy.deepcopy((prof.get("chapters") or {}).get(chapter) or {}))
    params["profile"] = profile
    return params
