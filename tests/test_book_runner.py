"""The papermill runner: a failing chapter does not stop the others, the build fails naming chapter and cell,
the executed notebook with its traceback is kept, and unchanged chapters are not re-executed."""
from __future__ import annotations

import json

import nbformat
import pytest

from emoprobe import book

pytestmark = pytest.mark.slow


def _chapter(path, body: str):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A chapter"),
        nbformat.v4.new_markdown_cell("## Parameters"),
        nbformat.v4.new_code_cell('profile = "default"\nx = 1', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
        nbformat.v4.new_markdown_cell("## Exercises\n1. none"),
    ])
    nb.metadata["kernelspec"] = {"name": book.KERNEL, "display_name": "Python (emoprobe)", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def mini_root(tmp_path, monkeypatch):
    (tmp_path / "lib" / "emoprobe").mkdir(parents=True)
    ch = tmp_path / "chapters"
    ch.mkdir()
    (ch / "profiles.yml").write_text("profiles:\n  smoke:\n    chapters:\n      01_ok: {x: 2}\n  default: {}\n")
    _chapter(ch / "01_ok.ipynb", "y = x * 21\nprint(y)")
    _chapter(ch / "02_broken.ipynb", "raise RuntimeError('planted failure')")
    _chapter(ch / "03_after.ipynb", "z = x + 1")
    monkeypatch.setenv("EMOPROBE_ROOT", str(tmp_path))
    return tmp_path


def test_failure_is_kept_named_and_does_not_stop_the_rest(mini_root, capsys):
    rc = book.run("smoke", html=False)
    err = capsys.readouterr().err
    assert rc == 1
    assert "02_broken" in err and "cell 3" in err and "planted failure" in err
    stamps = {p.stem: json.loads(p.read_text()) for p in (mini_root / "data" / "cache" / "stamps").glob("*.json")}
    assert stamps["01_ok"]["status"] == "ok" and stamps["03_after"]["status"] == "ok"
    assert stamps["02_broken"]["status"] == "failed" and stamps["02_broken"]["failed_cell"] == 3
    kept = nbformat.read(mini_root / "book" / "chapters" / "02_broken.ipynb", as_version=4)
    assert any(o.output_type == "error" for c in kept.cells if c.cell_type == "code" for o in c.outputs)
    ok = nbformat.read(mini_root / "book" / "chapters" / "01_ok.ipynb", as_version=4)
    assert "42" in "".join(o.get("text", "") for c in ok.cells if c.cell_type == "code" for o in c.outputs)
    status_md = (mini_root / "book" / "status.md").read_text()
    assert "02_broken" in status_md and "failed" in status_md and "smoke" in status_md


def test_unchanged_chapters_are_not_reexecuted(mini_root):
    book.run("smoke", only=["01_ok"], html=False)
    assert book.execute_chapter("01_ok", "smoke").status == "up-to-date"
    _chapter(mini_root / "chapters" / "01_ok.ipynb", "y = x * 2")
    assert book.execute_chapter("01_ok", "smoke").status == "ok"          # the notebook changed
    assert book.execute_chapter("01_ok", "default").status == "ok"        # the parameters changed


def test_undeclared_profile_parameter_is_refused(mini_root):
    (mini_root / "chapters" / "profiles.yml").write_text("profiles:\n  smoke:\n    chapters:\n      01_ok: {typo: 1}\n")
    with pytest.raises(ValueError, match="not declared"):
        book.execute_chapter("01_ok", "smoke")
