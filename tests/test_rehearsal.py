"""Dress rehearsal of the `paper` profile (issue 14): every chapter executes under the `rehearsal` profile of
chapters/profiles.yml (the paper's model lists with tiny random checkpoints of the same families, Gemini on a fake
OpenAI-compatible server on 127.0.0.1, MAFW/DFEW trees in their real layouts), renders to HTML and reaches its
verdict section; the fake server's key appears in no notebook, HTML page or run store.

Chapters run one at a time with papermill (as emoprobe.book does) into a temporary folder; the run store and
caches go to a temporary EMOPROBE_CACHE, so neither book/chapters/ nor data/cache/runs.sqlite is touched.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from emoprobe import book, config, paths

from fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow

PORT = 18471  # chapters/profiles.yml, profile rehearsal: base_url http://127.0.0.1:18471/v1
FAMILIES = ("qwen2_5_vl", "qwen3_vl", "internvl3", "llava_next_video", "video_llava")
TIMES: dict[str, float] = {}


def _hf_paths(models) -> list[str]:
    return [s["model"] for s in config.model_specs(models) if s.get("backend") == "hf"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    import rehearsal_data

    from emoprobe import tiny

    base = paths.root() / "data" / "cache" / "rehearsal"
    t0 = time.perf_counter()
    built = tiny.build_all(base / "tiny", families=FAMILIES)
    missing = sorted(set(FAMILIES) - set(built))
    assert not missing, f"tiny families not built: {[(f, tiny.BUILD_ERRORS.get(f)) for f in missing]}"
    rehearsal_data.write_mafw(base / "MAFW")
    rehearsal_data.write_dfew(base / "DFEW")
    TIMES["setup (tiny checkpoints + trees)"] = time.perf_counter() - t0
    # every HF path the profile names exists (the profile and the builder agree)
    for ch in book.list_chapters():
        for p in _hf_paths(config.load(ch, "rehearsal").get("models")):
            assert (paths.root() / p).is_dir(), (ch, p)
    key = "sk-rehearsal-" + secrets.token_hex(12)
    out = tmp_path_factory.mktemp("rehearsal")
    saved = {k: os.environ.get(k) for k in ("EMOPROBE_REHEARSAL_KEY", "EMOPROBE_CACHE", "EMOPROBE_PROFILE",
                                             "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS",
                                             "MKL_NUM_THREADS")}
    os.environ.update({"EMOPROBE_REHEARSAL_KEY": key, "EMOPROBE_CACHE": str(out / "cache"),
                       "EMOPROBE_PROFILE": "rehearsal", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    try:
        with FakeOpenAI(port=PORT, echo_auth=True) as srv:  # its answers echo the key back, as some servers do
            yield {"out": out, "key": key, "server": srv}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        print("\nrehearsal times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMES.items())
              + f"; total {sum(TIMES.values()):.1f}")


def _errors(nb: dict) -> list[str]:
    out = []
    for i, c in enumerate(nb["cells"]):
        for o in c.get("outputs", []) or []:
            if o.get("output_type") == "error":
                out.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}"[:500])
    return out


@pytest.mark.parametrize("chapter", book.list_chapters())
def test_chapter_runs_under_the_rehearsal_profile(rehearsal, chapter):
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    out = rehearsal["out"]
    params = config.load(chapter, "rehearsal")
    unknown = sorted(set(params) - book.declared_parameters(book.chapters_dir() / f"{chapter}.ipynb"))
    assert not unknown, f"profile rehearsal sets {unknown}, not declared in {chapter}'s parameters cell"
    nb_out = out / f"{chapter}.ipynb"
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(str(book.chapters_dir() / f"{chapter}.ipynb"), str(nb_out), parameters=params,
                                   kernel_name=book.KERNEL, cwd=str(book.chapters_dir()), progress_bar=False,
                                   log_output=False)
    except papermill.PapermillExecutionError as e:
        pytest.fail(f"{chapter} failed under the rehearsal profile at cell {e.cell_index}: {e.ename}: "
                    f"{str(e.evalue)[:800]}")
    finally:
        TIMES[chapter] = time.perf_counter() - t0
    nb = json.loads(nb_out.read_text())
    assert not _errors(nb), _errors(nb)
    stderr = [f"cell {i}: {''.join(o.get('text', ''))[:300]}" for i, c in enumerate(nb["cells"])
              for o in c.get("outputs", []) or [] if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not stderr, f"{chapter}: stderr in the rendered chapter: {stderr}"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), f"{chapter}: not every code cell executed"
    html, _ = HTMLExporter().from_notebook_node(nbformat.reads(nb_out.read_text(), as_version=4))
    (out / f"{chapter}.html").write_text(html)
    if chapter != "01_synthfer":  # chapter 01 describes SynthFER; every other chapter decides claims
        heads = [c for c in nb["cells"] if c["cell_type"] == "markdown"
                 and "verdict" in "".join(c["source"]).lower() and "".join(c["source"]).lstrip().startswith("#")]
        findings = book.read_findings(nb_out)
        assert heads or findings, f"{chapter}: no verdict section and no glued verdict"
        for rec in findings:
            assert rec.get("word"), (chapter, rec)
    text = nb_out.read_text() + html
    assert rehearsal["key"] not in text, f"{chapter}: the API key reached the notebook or its HTML"


def test_key_never_reached_the_store_and_the_server_was_used(rehearsal):
    srv, key = rehearsal["server"], rehearsal["key"]
    used = [ch for ch in book.list_chapters() if any(s.get("backend") == "openai" for s in
                                                     config.model_specs(config.load(ch, "rehearsal").get("models")))]
    if used and all((rehearsal["out"] / f"{ch}.ipynb").exists() for ch in used):
        assert srv.requests, "no chapter called the fake Gemini server"
        assert all(r["headers"].get("authorization") == f"Bearer {key}" for r in srv.requests)
    for f in Path(rehearsal["out"], "cache").rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f"{f}: holds the API key"
