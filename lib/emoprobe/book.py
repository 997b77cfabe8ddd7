"""Build the book: execute chapters with papermill under a profile, then render with jupyter-book 1.x.

* A chapter is re-executed only when its content hash changed: the notebook's cells (not outputs), its
  parameters, the library's source, and its inputs (committed reference tables and model checkpoints).
* A failing chapter does not stop the others; its executed notebook (with the traceback) is kept in
  ``book/chapters/`` and the build exits non-zero at the end, naming the chapter and the cell.
* Every execution writes a status record (profile, models, datasets, wall time, peak memory, device,
  package versions, git commit) from which ``book/status.md`` is generated.

Usage: ``python -m emoprobe.book --profile default [--only 02_long_tail] [--force] [--no-html]``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from . import config, paths
from .run import ANSWER_LOG_ENV


KERNEL = "emoprobe"
PACKAGES = ("emoprobe", "torch", "torchvision", "transformers", "peft", "numpy", "pandas", "scikit-learn",
            "scipy", "papermill", "jupyter-book", "myst-nb", "decord", "av", "wordfreq")
# Inputs whose content enters a chapter's hash besides the notebook, its parameters and the lib.
INPUT_DIRS = ("data/reference", "data/models")


@dataclass
class ChapterStatus:
    chapter: str
    profile: str
    status: str                      # "ok" | "failed" | "up-to-date"
    hash: str
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    device: str = ""
    models: list = field(default_factory=list)
    datasets: list = field(default_factory=list)
    error: str = ""
    failed_cell: int | None = None
    executed_at: str = ""
    git_commit: str = ""
    versions: dict = field(default_factory=dict)
    answers_computed: int | None = None   # model answers this execution computed ...
    answers_from_store: int | None = None  # ... and read from the run store (run.ANSWER_LOG_ENV)


def chapters_dir() -> Path:
    return paths.root() / "chapters"


def out_dir() -> Path:
    return paths.root() / "book" / "chapters"


def stamps_dir() -> Path:
    p = paths.cache() / "stamps"
    p.mkdir(parents=True, exist_ok=True)
    return p


def list_chapters() -> list[str]:
    return sorted(p.stem for p in chapters_dir().glob("[0-9][0-9]_*.ipynb"))


def _hash_files(h, files):
    for f in sorted(files):
        h.update(str(f.relative_to(paths.root())).encode())
        h.update(f.read_bytes())


def notebook_source_hash(nb_path: Path) -> str:
    """Hash of the cells' sources and tags only (outputs and execution counts never count)."""
    nb = json.loads(nb_path.read_text())
    h = hashlib.sha256()
    for c in nb["cells"]:
        h.update(c["cell_type"].encode())
        src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        h.update(src.encode())
        h.update(json.dumps(c.get("metadata", {}).get("tags", []), sort_keys=True).encode())
    return h.hexdigest()


def content_hash(chapter: str, params: dict) -> str:
    root = paths.root()
    h = hashlib.sha256()
    h.update(notebook_source_hash(chapters_dir() / f"{chapter}.ipynb").encode())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    _hash_files(h, (root / "lib" / "emoprobe").rglob("*.py"))
    for d in INPUT_DIRS:
        _hash_files(h, [p for p in (root / d).rglob("*") if p.is_file()])
    return h.hexdigest()


def declared_parameters(nb_path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(nb_path)))


def git_commit() -> str:
    """The short form of :func:`emoprobe.store.git_commit` (the one git helper) for the status page."""
    from .store import git_commit as full

    c = full()
    return "unknown" if not c else c.split("+")[0][:7] + ("+dirty" if c.endswith("+dirty") else "")


def versions() -> dict:
    v = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            v[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            v[p] = "absent"
    return v


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # torch missing or broken: say CPU, the status page shows versions anyway
        pass
    return f"CPU ({os.cpu_count()} cores)"


class _PeakRSS:
    """Samples the summed RSS of this process's children (the Jupyter kernel) while a chapter runs."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for c in me.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _describe(x) -> str:
    """Short text for a model or dataset spec on the status page (never an API key: specs hold env-var names).
    A dataset spec opens with the test clips per class actually used (``limit`` when set, else
    ``n_per_class``), so "n_per_class=45 ... limit=5" cannot be read as 45."""
    if isinstance(x, dict):
        if "name" in x and "model" in x:
            return f"{x['name']} ({x['model']})"
        text = ", ".join(f"{k}={v}" for k, v in x.items() if not isinstance(v, (dict, list)))
        used = x.get("limit") if x.get("limit") is not None else x.get("n_per_class")
        if used is not None:
            text = f"**{used} test clips per class used** ({text})"
        return text
    return str(x)


def _listify(v) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [_describe(x) for x in v]
    if isinstance(v, dict) and v and all(isinstance(x, (dict, list, type(None))) for x in v.values()):
        # roles -> spec(s), e.g. chapter 02's {"vlm": {...}, "vlm_others": [...], ...}
        return [f"{role}: {_describe(x)}" for role, xs in v.items() if xs
                for x in (xs if isinstance(xs, list) else [xs])]
    return [_describe(v)]


def effective_parameters(nb_path: Path, params: dict) -> dict:
    """The notebook's own defaults overlaid by the profile's parameters: what the chapter really ran with."""
    import ast

    import papermill

    out = {}
    for name, info in papermill.inspect_notebook(str(nb_path)).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = info["default"]
    out.update(params)
    return out


_ADDED_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


def _failed_source_index(nb_path: Path) -> int | None:
    """Index, in the SOURCE notebook, of the cell whose output is an error (papermill's own index counts the
    cells it added: the injected parameters and the error banners)."""
    try:
        cells = json.loads(nb_path.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    src = 0
    for c in cells:
        if _ADDED_TAGS & set(c.get("metadata", {}).get("tags", [])):
            continue
        if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
            return src
        src += 1
    return None


def execute_chapter(chapter: str, profile: str, force: bool = False) -> ChapterStatus:
    import papermill

    nb_in = chapters_dir() / f"{chapter}.ipynb"
    nb_out = out_dir() / f"{chapter}.ipynb"
    params = config.load(chapter, profile)
    declared = declared_parameters(nb_in)
    unknown = sorted(set(params) - declared)
    if unknown:
        raise ValueError(f"{config.profiles_file()}: parameters {unknown} for chapter {chapter} (profile "
                         f"{profile}) are not declared in the parameters cell of {nb_in}")
    digest = content_hash(chapter, params)
    stamp = stamps_dir() / f"{chapter}.json"
    if not force and stamp.exists() and nb_out.exists():
        old = json.loads(stamp.read_text())
        if old.get("hash") == digest and old.get("status") == "ok":
            old["status"] = "up-to-date"
            return ChapterStatus(**old)
    used = effective_parameters(nb_in, params)
    st = ChapterStatus(chapter=chapter, profile=profile, status="ok", hash=digest, device=device_name(),
                       models=_listify(used.get("models")), datasets=_listify(used.get("dataset")),
                       executed_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"), git_commit=git_commit(),
                       versions=versions())
    out_dir().mkdir(parents=True, exist_ok=True)
    answer_log = stamps_dir() / f"{chapter}.answers.jsonl"
    answer_log.unlink(missing_ok=True)
    saved_env = os.environ.get(ANSWER_LOG_ENV)
    os.environ[ANSWER_LOG_ENV] = str(answer_log)  # the kernel inherits it: every model call logs its counts
    t0 = time.perf_counter()
    with _PeakRSS() as mem:
        try:
            papermill.execute_notebook(str(nb_in), str(nb_out), parameters=params, kernel_name=KERNEL,
                                       cwd=str(chapters_dir()), progress_bar=False, log_output=False)
        except papermill.PapermillExecutionError as e:
            # papermill counts cells of the executed notebook, where it injected one after `parameters`:
            # report the index in the source notebook, the one a reader opens
            src_index = _failed_source_index(nb_out)
            st.status, st.failed_cell = "failed", e.cell_index if src_index is None else src_index
            st.error = f"{e.ename}: {e.evalue}"
        except Exception as e:  # kernel died, notebook unreadable, ...: recorded, the others go on
            st.status, st.error = "failed", f"{type(e).__name__}: {e}"
    st.wall_s = round(time.perf_counter() - t0, 2)
    st.peak_rss_mb = round(mem.peak / 2**20, 1)
    if saved_env is None:
        os.environ.pop(ANSWER_LOG_ENV, None)
    else:
        os.environ[ANSWER_LOG_ENV] = saved_env
    st.answers_computed, st.answers_from_store = _answer_counts(answer_log)
    stamp.write_text(json.dumps(asdict(st), indent=1))
    return st


def _answer_counts(path: Path) -> tuple[int, int]:
    """Sum of ``(computed, from_store)`` over the answer log a chapter's execution wrote (0, 0 if none)."""
    comp = stored = 0
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            comp += int(rec.get("computed", 0))
            stored += int(rec.get("from_store", 0))
    return comp, stored


def _answers_cell(s: ChapterStatus) -> str:
    if s.answers_computed is None:
        return "—"
    return f"{s.answers_computed:,} / {s.answers_from_store:,}"


def write_status_page(statuses: list[ChapterStatus]) -> Path:
    """Generate book/status.md from the latest status record of every chapter."""
    rows = []
    for s in statuses:
        cell = "" if s.failed_cell is None else f" (cell {s.failed_cell})"
        rows.append(
            f"| [{s.chapter}](chapters/{s.chapter}.ipynb) | {s.profile} | {s.status}{cell} | "
            f"{'<br>'.join(s.models) or '—'} | {'<br>'.join(s.datasets) or '—'} | {s.wall_s:.1f} | "
            f"{s.peak_rss_mb:.0f} | {_answers_cell(s)} | {s.device} | {s.git_commit} | {s.executed_at} |")
    vers = statuses[0].versions if statuses else versions()
    lines = [
        "# Build status and provenance", "",
        "Each chapter below was executed headless by papermill; this page is generated by `emoprobe.book` at "
        "build time. *up-to-date* means the chapter's content hash (notebook, parameters, library source, "
        "reference tables and checkpoints) was unchanged, so the stored execution was reused; wall time and "
        "memory are those of that execution.", "",
        "| chapter | profile | status | models | datasets | wall time (s) | peak memory (MB) | "
        "model answers computed / from the run store | device | git commit | executed |",
        "|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
        "## Package versions", "", "| package | version |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in vers.items()], "",
    ]
    failed = [s for s in statuses if s.status == "failed"]
    if failed:
        lines += ["## Failures", ""]
        lines += [f"- **{s.chapter}** failed at cell {s.failed_cell}: `{s.error[:300]}`" for s in failed]
    p = paths.root() / "book" / "status.md"
    p.write_text("\n".join(lines) + "\n")
    return p


FINDINGS_PREFIX = "finding_"   # = emoprobe.verdicts.FINDING_PREFIX (kept here: the runner imports no chapter code)


def read_findings(nb_path: Path) -> list[dict]:
    """The verdict records a chapter glued (``Verdict.glue`` -> ``finding_<key>``, a JSON string), in order."""
    import ast

    nb = json.loads(Path(nb_path).read_text())
    out = []
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []) or []:
            scrap = (o.get("metadata") or {}).get("scrapbook") or {}
            name = scrap.get("name", "")
            if not name.startswith(FINDINGS_PREFIX):
                continue
            prefix = scrap.get("mime_prefix") or ""   # glue(display=False) stores under a papermill prefix
            text = (o.get("data") or {}).get(prefix + "text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            try:
                rec = json.loads(ast.literal_eval(text))
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"{nb_path}: glued {name} is not a JSON string ({e})") from None
            rec.setdefault("key", name[len(FINDINGS_PREFIX):])
            out.append(rec)
    return out


def _cell(v) -> str:
    return ("—" if v in (None, "") else str(v)).replace("|", "\\|").replace("\n", " ")


def write_findings_page(chapters: list[str] | None = None) -> Path:
    """Generate book/findings.md: one table of every claim the executed chapters decided (glued verdicts)."""
    rows, missing = [], []
    for name in chapters or list_chapters():
        nb = out_dir() / f"{name}.ipynb"
        if not nb.exists():
            missing.append(name)
            continue
        for r in read_findings(nb):
            ours = "n/a"
            if r.get("statistic") is not None:
                lo, hi = (r.get("interval") or [None, None])[:2]
                ours = f"{r['statistic']:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else "")
            mde = "" if r.get("mde") is None else f"{r['mde']:.3f}"
            rows.append(f"| [{name}](chapters/{name}.ipynb) | {_cell(r.get('claim'))} | {_cell(r.get('model'))} | "
                        f"{_cell(r.get('paper'))} | {_cell(r.get('measure'))} | {ours} | {_cell(mde)} | "
                        f"**{_cell(r.get('word'))}** | {_cell(r.get('reason'))} |")
    lines = [
        "# Findings", "",
        "Every claim of the paper that a chapter tested, the paper's number, ours with its 95% interval, the "
        "minimum detectable effect of our test, and the verdict with its reason. The table is generated by "
        "`emoprobe.book` from the verdicts the executed chapters glued (`emoprobe.verdicts`), never typed. A "
        "verdict is *replicated here* or *not replicated* only when the model is clearly above chance and the "
        "test could detect a paper-sized effect (or its interval settles the claim by itself: entirely beyond "
        "a paper-sized effect, or entirely on the other side of 0); otherwise it is *inconclusive* and the "
        "reason says which condition failed.", "",
        "| chapter | claim | model | paper | statistic | ours [95% CI] | min. detectable | verdict | reason |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
    ]
    if not rows:
        lines.insert(2, "No chapter has been executed yet, or none glued a verdict.\n")
    if missing:
        lines += [f"Not executed in this build: {', '.join(missing)}.", ""]
    p = paths.root() / "book" / "findings.md"
    p.write_text("\n".join(lines) + "\n")
    return p


EXTERNAL = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)=["'](https?:)?//""", re.I)


def external_assets(html_dir: Path) -> list[str]:
    """Pages that load assets from the network (the book must read offline)."""
    bad = []
    for f in sorted(html_dir.rglob("*.html")):
        for m in EXTERNAL.finditer(f.read_text(errors="replace")):
            tag = f.read_text(errors="replace")[m.start(): m.start() + 160].split(">")[0]
            if 'rel="canonical"' in tag:
                continue
            bad.append(f"{f.relative_to(html_dir)}: {tag}")
    return bad


def jupyter_book_exe() -> str:
    """The venv's jupyter-book (it has no ``python -m`` entry point)."""
    exe = Path(sys.executable).parent / "jupyter-book"
    return str(exe) if exe.exists() else "jupyter-book"


def local_mathjax() -> None:
    """Copy the MathJax that jupyter-server-mathjax ships into book/_static/mathjax (no CDN)."""
    import shutil

    import jupyter_server_mathjax

    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dst = paths.root() / "book" / "_static" / "mathjax"
    if not (dst / "MathJax.js").exists():
        shutil.copytree(src, dst, dirs_exist_ok=True)


def build_html() -> tuple[int, float, Path]:
    root = paths.root()
    t0 = time.perf_counter()
    local_mathjax()
    r = subprocess.run([jupyter_book_exe(), "build", str(root), "-W", "-n", "--keep-going"], cwd=root)
    html = root / "_build" / "html"
    rc = r.returncode
    if rc == 0:
        bad = external_assets(html)
        if bad:
            print("The built book loads assets from the network:\n  " + "\n  ".join(bad[:20]), file=sys.stderr)
            rc = 3
    return rc, time.perf_counter() - t0, html / "index.html"


def run(profile: str = "default", only: list[str] | None = None, force: bool = False,
        html: bool = True) -> int:
    os.environ["EMOPROBE_ROOT"] = str(paths.root())
    os.environ["EMOPROBE_PROFILE"] = profile
    if profile != "paper":  # nothing is downloaded at run time in smoke/default
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    names = list_chapters()
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise SystemExit(f"unknown chapters {missing}; chapters/ holds {names}")
        names = [n for n in names if n in only]
    statuses = []
    for name in names:
        st = execute_chapter(name, profile, force=force)
        print(f"[book] {name:28s} {st.status:10s} {st.wall_s:7.1f} s  peak {st.peak_rss_mb:7.0f} MB  answers "
              f"computed/stored {_answers_cell(st)}"
              + (f"  -- cell {st.failed_cell}: {st.error[:200]}" if st.status == "failed" else ""), flush=True)
        statuses.append(st)
    # the status page lists every chapter, also those not re-run now
    recorded = {s.chapter: s for s in statuses}
    for name in list_chapters():
        if name not in recorded and (stamps_dir() / f"{name}.json").exists():
            recorded[name] = ChapterStatus(**json.loads((stamps_dir() / f"{name}.json").read_text()))
    write_status_page([recorded[n] for n in list_chapters() if n in recorded])
    write_findings_page()
    rc = 0
    failed = [s for s in statuses if s.status == "failed"]
    if html:
        hrc, secs, index = build_html()
        print(f"[book] rendered in {secs:.1f} s: {index}" if hrc == 0 else f"[book] jupyter-book failed ({hrc})")
        rc = rc or hrc
    for s in failed:
        print(f"[book] FAILED {s.chapter} at cell {s.failed_cell}: {s.error[:300]}\n"
              f"       executed notebook with the traceback: {out_dir() / (s.chapter + '.ipynb')}", file=sys.stderr)
    return 1 if failed else rc


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--profile", default=os.environ.get("PROFILE", "default"), choices=config.PROFILES)
    ap.add_argument("--only", nargs="*", help="chapter stems to execute (default: all)")
    ap.add_argument("--force", action="store_true", help="re-execute even if up to date")
    ap.add_argument("--no-html", action="store_true", help="execute only, do not render")


def cli(a: argparse.Namespace) -> int:
    """Execute the chapters under a profile and render the book."""
    return run(a.profile, a.only, a.force, not a.no_html)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emoprobe.book", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
