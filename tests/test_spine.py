"""The book's spine: chapter notebooks, profiles, README <-> CI contract (fast checks)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import nbformat
import papermill
import pytest

from emoprobe import book, config

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_chapters():
    assert CHAPTERS, "chapters/ holds no NN_slug.ipynb notebook"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_committed_clean(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    with_outputs = [i for i, c in enumerate(code) if c.outputs]
    assert not with_outputs, f"{nb_path.name}: code cells {with_outputs} carry outputs (commit without outputs)"
    counted = [i for i, c in enumerate(code) if c.execution_count is not None]
    assert not counted, f"{nb_path.name}: code cells {counted} carry execution counts"
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{nb_path.name}: {len(params)} cells tagged 'parameters' (want exactly 1)"
    i = params[0]
    assert nb.cells[i].cell_type == "code"
    assert i > 0 and nb.cells[i - 1].cell_type == "markdown" and re.search(
        r"^#+\s*Parameters", nb.cells[i - 1].source, re.M), f"{nb_path.name}: parameters cell must follow a 'Parameters' heading"
    assert "profile" in papermill.inspect_notebook(str(nb_path)), f"{nb_path.name}: parameters must declare `profile`"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# "), \
        f"{nb_path.name}: the first cell must be the chapter's title"
    assert any(re.search(r"^#+\s*Exercises", c.source, re.M) for c in nb.cells if c.cell_type == "markdown"), \
        f"{nb_path.name}: a chapter ends with exercises"


@pytest.mark.parametrize("profile", config.PROFILES)
def test_profiles_only_set_declared_parameters(profile):
    for nb_path in CHAPTERS:
        params = config.load(nb_path.stem, profile)
        declared = set(papermill.inspect_notebook(str(nb_path)))
        assert set(params) <= declared, f"{profile}/{nb_path.stem}: undeclared {sorted(set(params) - declared)}"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown profile"):
        config.load(CHAPTERS[0].stem, "nope")


def test_every_chapter_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for nb_path in CHAPTERS:
        assert f"book/chapters/{nb_path.stem}" in toc, f"{nb_path.stem} missing from _toc.yml"


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert first_block, "README must start with a code block holding the two commands"
    cmds = [l.strip() for l in first_block.group(1).splitlines() if l.strip() and not l.strip().startswith("#")]
    assert cmds == ["make book", "make test"], cmds
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert re.search(r"^make test$", ci, re.M), ".ci/run must run the README's test command"
    assert readme.index("make book") < 400, "the two commands come first in the README"


def test_content_hash_ignores_outputs_but_not_sources(tmp_path):
    nb = nbformat.read(CHAPTERS[0], as_version=4)
    a, b = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    nbformat.write(nb, a)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="x")] if nb.cells[-1].cell_type == "code" else []
    nb.cells[-1].metadata["execution"] = {"x": 1}
    nbformat.write(nb, b)
    assert book.notebook_source_hash(a) == book.notebook_source_hash(b)
    nb.cells[0].source += " changed"
    nbformat.write(nb, b)
    assert book.notebook_source_hash(a) != book.notebook_source_hash(b)


def test_external_asset_scan(tmp_path):
    (tmp_path / "x.html").write_text('<script src="https://cdn.example/mathjax.js"></script><img src="a.png">')
    (tmp_path / "y.html").write_text('<link rel="stylesheet" href="_static/a.css">')
    bad = book.external_assets(tmp_path)
    assert len(bad) == 1 and bad[0].startswith("x.html")


def test_ci_script_is_executable():
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111
    out = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
