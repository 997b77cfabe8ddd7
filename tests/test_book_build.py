"""End to end: every chapter executes under the smoke profile via papermill, the book renders with
jupyter-book, a warm rebuild re-executes nothing, and headless Chromium finds every page sound.

The build runs in a temporary copy of the book sources, so `make test` never clobbers the user's book.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
pytestmark = [pytest.mark.slow, pytest.mark.book]


def _copy_sources(dst: Path) -> None:
    for f in ("_config.yml", "_toc.yml", "pyproject.toml"):
        shutil.copy(ROOT / f, dst / f)
    shutil.copytree(ROOT / "chapters", dst / "chapters", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "book", dst / "book", ignore=shutil.ignore_patterns("chapters", "status.md", "findings.md"))
    shutil.copytree(ROOT / "lib", dst / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dst / "data").mkdir()
    shutil.copytree(ROOT / "data" / "reference", dst / "data" / "reference")
    if (ROOT / "data" / "models").exists():
        (dst / "data" / "models").symlink_to(ROOT / "data" / "models", target_is_directory=True)


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("book")
    _copy_sources(root)
    env = dict(os.environ, EMOPROBE_ROOT=str(root),
               # generated SynthFER data is deterministic from its parameters: share the cache across builds
               EMOPROBE_GENERATED=str(ROOT / "data" / "generated"))
    cmd = [sys.executable, "-m", "emoprobe.book", "--profile", "smoke"]
    first = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    second = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    return root, first, second


def test_every_chapter_executes_and_the_book_builds(smoke_book):
    root, first, _ = smoke_book
    assert first.returncode == 0, f"build failed:\n{first.stdout[-4000:]}\n{first.stderr[-4000:]}"
    assert (root / "_build" / "html" / "index.html").exists()
    chapters = sorted(p.stem for p in (root / "chapters").glob("[0-9][0-9]_*.ipynb"))
    for ch in chapters:
        st = json.loads((root / "data" / "cache" / "stamps" / f"{ch}.json").read_text())
        assert st["status"] == "ok", f"{ch}: {st['error']}"
        assert st["profile"] == "smoke"
        assert (root / "_build" / "html" / "book" / "chapters" / f"{ch}.html").exists()


def test_warm_rebuild_reexecutes_nothing(smoke_book):
    _, _, second = smoke_book
    assert second.returncode == 0, second.stderr[-3000:]
    lines = [l for l in second.stdout.splitlines() if l.startswith("[book] ") and " s  peak" in l]
    assert lines and all(" up-to-date " in l for l in lines), "\n".join(lines)


def test_executed_notebooks_keep_tags_and_glue(smoke_book):
    root, _, _ = smoke_book
    for src in sorted((root / "chapters").glob("[0-9][0-9]_*.ipynb")):
        nb_src = nbformat.read(src, as_version=4)
        nb_out = nbformat.read(root / "book" / "chapters" / src.name, as_version=4)
        out_cells = [c for c in nb_out.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        assert len(out_cells) == len(nb_src.cells)
        for a, b in zip(nb_src.cells, out_cells):
            assert set(a.metadata.get("tags", [])) <= set(b.metadata.get("tags", [])), src.name
        glued = [o for c in nb_out.cells if c.cell_type == "code" for o in c.outputs
                 if o.get("metadata", {}).get("scrapbook")]
        assert glued, f"{src.name}: no glued values (numbers in prose must be glued)"
        errors = [o for c in nb_out.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{src.name}: error outputs {errors[0].get('ename')}"
        stderr = [o.get("text", "")[:300] for c in nb_out.cells if c.cell_type == "code" for o in c.outputs
                  if o.get("name") == "stderr"]
        assert not stderr, f"{src.name}: stderr in the book (fix the warning at its source): {stderr[0]}"


@pytest.fixture(scope="module")
def served(smoke_book):
    html = smoke_book[0] / "_build" / "html"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (binary and driver_path):
        pytest.fail("headless Chromium check needs Debian's chromium and chromium-driver (.ci/run installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1280,1600"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_every_page_in_headless_chromium(served, browser):
    html, base = served
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not p.relative_to(html).as_posix().startswith(("_static", "_sources")))
    problems = []
    checked_links = {}
    for page in pages:
        browser.get(f"{base}/{page}")
        broken_imgs = browser.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
        if broken_imgs:
            problems.append(f"{page}: missing images {broken_imgs}")
        n_err = browser.execute_script(
            "return document.querySelectorAll('.output.traceback, .output.error, .output.stderr').length")
        text = browser.execute_script("return document.body.innerText")
        if n_err or "Traceback (most recent call last)" in text:
            problems.append(f"{page}: {n_err} error/stderr outputs or a traceback")
        remote = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(u => !u.startsWith(location.origin) && !u.startsWith('data:'))")
        if remote:
            problems.append(f"{page}: loads from the network {remote[:3]} (the book must read offline)")
        hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        for h in hrefs:
            if not h.startswith(base):
                continue
            target, _, frag = h.partition("#")
            if target not in checked_links:
                checked_links[target] = _status(target)
            if checked_links[target] != 200:
                problems.append(f"{page}: broken link {h} ({checked_links[target]})")
            elif frag and target.rstrip("/") == f"{base}/{page}".rstrip("/"):
                found = browser.execute_script("return !!document.getElementById(arguments[0])",
                                               urllib.parse.unquote(frag))
                if not found:
                    problems.append(f"{page}: broken anchor #{frag}")
    assert not problems, "\n".join(problems[:30])
    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(f"{base}/index.html")
    browser.save_screenshot(str(ARTIFACTS / "landing.png"))
    chapters = sorted(p for p in pages if p.startswith("book/chapters/"))
    assert chapters
    browser.get(f"{base}/{chapters[-1]}")
    browser.save_screenshot(str(ARTIFACTS / "chapter.png"))
    assert (ARTIFACTS / "landing.png").stat().st_size > 10_000


def test_smoke_verdicts_are_glued_words_with_statistics(smoke_book):
    """Every verdict a chapter glued is one of the allowed words and carries its statistic and interval; a
    verdict whose reason names a failed gate (model not clearly above chance, test unable to detect a
    paper-sized effect) is "inconclusive"; the smoke split (2 clips per class) produces both kinds; the Findings
    page lists every verdict."""
    from emoprobe import book, verdicts

    root, _, _ = smoke_book
    findings_md = (root / "book" / "findings.md").read_text().replace("\\|", "|")
    recs = [(nb.name, r) for nb in sorted((root / "book" / "chapters").glob("[0-9][0-9]_*.ipynb"))
            for r in book.read_findings(nb)]
    assert len(recs) >= 6, "the chapters glued fewer verdicts than chapters 02-04 decide"
    gates = {"chance": "does not clear chance", "power": "detects with"}
    seen = set()
    for name, rec in recs:
        assert rec["word"] in verdicts.WORDS, (name, rec)
        assert "statistic" in rec and len(rec["interval"]) == 2 and rec["sentence"] and rec["reason"], (name, rec)
        if rec["statistic"] is None:   # only a claim that could not be measured has no statistic
            assert rec["sentence"].startswith("not evaluated") and rec["word"] == verdicts.INCONCLUSIVE, (name, rec)
        for gate, text in gates.items():
            if text in rec["reason"]:
                seen.add(gate)
                assert rec["word"] == verdicts.INCONCLUSIVE, (name, rec["key"], rec["sentence"])
        assert rec["reason"] in findings_md, (name, rec["key"])
    assert seen == set(gates), f"the smoke build should show both failed gates, saw {seen}"
