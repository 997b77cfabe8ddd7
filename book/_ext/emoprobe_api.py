"""Sphinx glue for the book's library reference page (book/api.md), loaded through `_config.yml`.

The book is built with warnings as errors (``-W -n``). Docstrings are written for people reading the code,
in a loose reStructuredText; one slip (an unclosed ``*``, a list without a blank line) must not fail the whole
book, and type hints name classes (``pandas.DataFrame``, ``torch.Tensor``) that no page documents. So:

* a docstring that docutils would warn about is shown as it is written, in a literal block;
* unresolved Python cross-references (type hints, constants without a docstring) render as plain code text
  instead of warning (``nitpick_ignore_regex``); the book's own links and citations stay checked.

Importing the library here must stay cheap: every ``emoprobe`` module only defines things at import time
(``tests/test_api_page.py`` checks that an import writes nothing and loads no model).
"""
from __future__ import annotations

import io


def _rst_warnings(text: str, env) -> list[str]:
    """docutils messages at WARNING level or above for ``text`` parsed as reStructuredText (Sphinx roles
    resolve through the current build's domains)."""
    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    parser = Parser()
    settings = get_default_settings(Parser)
    settings.report_level, settings.halt_level = 5, 5
    settings.warning_stream = io.StringIO()
    settings.env = env
    doc = new_document("<docstring>", settings)
    found: list[str] = []
    doc.reporter.attach_observer(lambda msg: found.append(msg.astext()) if msg["level"] >= 2 else None)
    try:
        parser.parse(text, doc)
    except Exception as e:  # a role or directive that cannot run outside its page: show the text literally
        found.append(f"{type(e).__name__}: {e}")
    from docutils import nodes

    # |x| is a substitution docstrings never define (docutils reports it only later, as a "problematic" node)
    found += [n.astext() for n in doc.findall(lambda n: isinstance(n, (nodes.substitution_reference,
                                                                        nodes.problematic)))]
    return found


def _literal_if_broken(app, what, name, obj, options, lines):
    if not lines:
        return
    if _rst_warnings("\n".join(lines), app.env):
        body = ["   " + line if line.strip() else "" for line in lines]
        lines[:] = ["::", ""] + body + [""]


def setup(app):
    app.connect("autodoc-process-docstring", _literal_if_broken)
    app.config.nitpick_ignore_regex = list(app.config.nitpick_ignore_regex or []) + [(r"py:.*", r".*")]
    app.config.autodoc_member_order = "bysource"
    app.config.autosummary_generate = False
    return {"parallel_read_safe": True, "parallel_write_safe": True}
