"""The Findings page: built by the book runner from the verdicts the executed chapters glued."""
from __future__ import annotations

import json

import nbformat
import pytest

from emoprobe import book, verdicts


def _executed(path, records):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("glue(...)")
    for key, v in records:
        rec = {**v.record(), "key": key}
        cell.outputs.append(nbformat.v4.new_output(
            "display_data", data={"text/plain": repr(json.dumps(rec))},
            metadata={"scrapbook": {"name": verdicts.FINDING_PREFIX + key, "mime_prefix": ""}}))
    cell.outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": "'x'"},
                                               metadata={"scrapbook": {"name": "other", "mime_prefix": ""}}))
    nb.cells.append(cell)
    nbformat.write(nb, str(path))


def test_findings_page_collects_glued_verdicts(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPROBE_ROOT", str(tmp_path))
    (tmp_path / "pyproject.toml").write_text("")
    for d in ("chapters", "book/chapters"):
        (tmp_path / d).mkdir(parents=True)
    for stem in ("03_x", "04_y"):
        (tmp_path / "chapters" / f"{stem}.ipynb").write_text("{}")
    v = verdicts.decide_null((0.01, -0.02, 0.04), 0.1, f1_ci=(0.8, 0.7, 0.9), k=11, claim="VLMs ignore order",
                             paper="−0.010", model="MicroVLM | A", measure="Δ macro-F1")
    _executed(tmp_path / "book" / "chapters" / "03_x.ipynb", [("verdict_vlm", v)])
    recs = book.read_findings(tmp_path / "book" / "chapters" / "03_x.ipynb")
    assert [r["key"] for r in recs] == ["verdict_vlm"] and recs[0]["word"] == verdicts.REPLICATED
    page = book.write_findings_page().read_text()
    assert "VLMs ignore order" in page and "**replicated here**" in page and "+0.010 [-0.020, +0.040]" in page
    assert "MicroVLM \\| A" in page               # a pipe in a cell does not break the table
    assert "Not executed in this build: 04_y" in page


def test_read_findings_names_the_file_on_bad_json(tmp_path):
    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell("")
    c.outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": "not a string"},
                                            metadata={"scrapbook": {"name": "finding_x"}}))
    nb.cells.append(c)
    p = tmp_path / "n.ipynb"
    nbformat.write(nb, str(p))
    with pytest.raises(ValueError, match="n.ipynb"):
        book.read_findings(p)


def test_status_page_says_clips_per_class_used():
    assert book._describe({"name": "synthfer", "n_per_class": 45, "limit": 5}).startswith(
        "**5 test clips per class used**")
    assert book._describe({"name": "synthfer", "n_per_class": 45}).startswith("**45 test clips per class used**")
