"""The library reference page (book/api.md, Sphinx autodoc inside the book): every module is on it, and
importing the library for autodoc runs no heavy code (no model, no data, no files written)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (ROOT / "lib" / "emoprobe").glob("*.py") if p.stem not in ("__init__", "__main__"))


def test_every_module_is_documented_once():
    page = (ROOT / "book" / "api.md").read_text()
    documented = re.findall(r"^\.\. automodule:: emoprobe\.(\w+)$", page, re.M)
    assert sorted(documented) == MODULES, f"missing {sorted(set(MODULES) - set(documented))}, " \
                                          f"stale {sorted(set(documented) - set(MODULES))}"
    assert "book/api" in (ROOT / "_toc.yml").read_text()
    cfg = (ROOT / "_config.yml").read_text()
    assert "sphinx.ext.autodoc" in cfg and "emoprobe_api" in cfg


def test_importing_the_library_runs_nothing_heavy(tmp_path):
    """What autodoc does: import every module. Nothing may be generated, downloaded or loaded."""
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "profiles.yml").write_text("profiles: {}\n")
    (tmp_path / "lib" / "emoprobe").mkdir(parents=True)
    code = ("import importlib, json, sys, threading\n"
            f"mods = {MODULES!r}\n"
            "for m in mods: importlib.import_module('emoprobe.' + m)\n"
            "heavy = [k for k in ('transformers', 'decord', 'av', 'cv2', 'facenet_pytorch', 'sentence_transformers',"
            " 'wordfreq', 'papermill') if k in sys.modules]\n"
            "print(json.dumps({'heavy': heavy, 'threads': threading.active_count()}))\n")
    env = dict(os.environ, EMOPROBE_ROOT=str(tmp_path), HOME=str(tmp_path), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLCONFIGDIR=str(tmp_path / ".mpl"))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"heavy": [], "threads": 1}, got
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                     if p.is_file() and ".mpl" not in p.parts and "__pycache__" not in p.parts)
    assert written == ["chapters/profiles.yml"], written


def test_docstring_checker_shows_broken_rst_literally():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import emoprobe_api
    finally:
        sys.path.pop(0)
    lines = ["Fine text with ``code``.", "", "* a list", "continued without a blank line"]
    ok = ["Fine text with ``code``.", "", "* a list", "", "Next paragraph."]
    bad_sub = ["enters as |x - y| / SCALE"]

    class App:
        env = None
    for given, broken in ((ok, False), (lines, True), (bad_sub, True)):
        got = list(given)
        emoprobe_api._literal_if_broken(App, "function", "f", None, {}, got)
        assert (got[0] == "::") is broken, (given, got)
        if broken:
            assert [g.strip() for g in got[2:] if g.strip()] == [g.strip() for g in given if g.strip()]
