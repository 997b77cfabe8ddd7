"""Cache keys follow the code that changes pixels, not its docs, layout or figures (issue 13)."""
from __future__ import annotations

import pytest

from emoprobe import store, synthfer


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    mod = tmp_path / "emoprobe_fake_pixels.py"
    monkeypatch.syspath_prepend(str(tmp_path))

    def version(src: str) -> str:
        mod.write_text(src)
        store.input_code_version.cache_clear()
        try:
            return store.input_code_version(("emoprobe_fake_pixels",))
        finally:
            store.input_code_version.cache_clear()
    return version


def test_docstrings_comments_and_layout_do_not_change_the_version(fake_module):
    base = fake_module('"""Module doc."""\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    assert fake_module('"""Other words."""\n# a comment\n\ndef f(x):\n    """New doc."""\n\n    return (x\n            + 1)\n') == base
    assert fake_module('def f(x):\n    return x + 1\n') == base


def test_code_changes_do_change_the_version(fake_module):
    base = fake_module('def f(x):\n    """Doc."""\n    return x + 1\n')
    assert fake_module('def f(x):\n    """Doc."""\n    return x + 2\n') != base
    assert fake_module('def f(x):\n    return x + 1\n\ndef g():\n    pass\n') != base
    # a file that does not parse still gets a version (its bytes)
    assert fake_module('def f(:\n') != base


def test_synthfer_figures_live_outside_the_generator():
    from emoprobe import synthfer_plots

    src = open(synthfer.__file__).read()
    assert "matplotlib" not in src and "imshow" not in src
    assert "emoprobe.synthfer_plots" not in store.INPUT_MODULES
    assert callable(synthfer.preview_grid) and callable(synthfer.plot_timeline)
    assert synthfer._source_hash() == store.input_code_version(("emoprobe.synthfer",))
    assert synthfer_plots.preview_grid.__module__ == "emoprobe.synthfer_plots"
