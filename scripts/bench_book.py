"""Benchmark of the book build: prints setup time (optional, a fresh venv), per-chapter execution time and peak
RSS for a cold build, render time, and warm-rebuild time. Figures only: targets are checked by reading them.

    python scripts/bench_book.py --profile smoke            # cold + warm build in a temporary copy
    python scripts/bench_book.py --profile default --setup  # also time a fresh venv install

Targets on a 2-core machine: smoke `make test` after setup <= 10 min; default cold `make book` after setup
<= 15 min; warm rebuild <= 60 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_sources(dst: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))  # reuse the test suite's copy routine (a script, not the lib)
    from test_book_build import _copy_sources

    _copy_sources(dst)


def timed(cmd, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - t0, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--setup", action="store_true", help="also time a fresh venv install (minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary build folder")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; profile {a.profile}")
    if a.setup:
        venv = Path(tempfile.mkdtemp()) / "venv"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "-e", f"{ROOT}[book,test]"],
                       check=True)
        print(f"setup (fresh venv, pip install): {time.perf_counter() - t0:8.1f} s")
        shutil.rmtree(venv.parent)
    tmp = Path(tempfile.mkdtemp(prefix="emoprobe-bench-"))
    copy_sources(tmp)
    env = dict(os.environ, EMOPROBE_ROOT=str(tmp), EMOPROBE_GENERATED=str(ROOT / "data" / "generated"))
    cmd = [sys.executable, "-m", "emoprobe.book", "--profile", a.profile]
    cold, r = timed(cmd, cwd=tmp, env=env)
    if r.returncode:
        print(r.stdout[-3000:], r.stderr[-3000:])
    print(f"cold build (execute + render):   {cold:8.1f} s  (rc {r.returncode})")
    for st in sorted((tmp / "data" / "cache" / "stamps").glob("*.json")):
        s = json.loads(st.read_text())
        print(f"  {s['chapter']:28s} {s['status']:8s} {s['wall_s']:8.1f} s  peak RSS {s['peak_rss_mb']:8.0f} MB  "
              f"answers computed {s.get('answers_computed')}, from the store {s.get('answers_from_store')}")
    render, r2 = timed([str(Path(sys.executable).parent / "jupyter-book"), "build", str(tmp), "-W", "-n", "--keep-going"],
                       cwd=tmp, env=env)
    print(f"render only (jupyter-book):      {render:8.1f} s  (rc {r2.returncode})")
    warm, r3 = timed(cmd, cwd=tmp, env=env)
    print(f"warm rebuild (nothing changed):  {warm:8.1f} s  (rc {r3.returncode})")
    if not a.keep:
        shutil.rmtree(tmp)
    else:
        print(f"kept {tmp}")
    return r.returncode or r3.returncode


if __name__ == "__main__":
    sys.exit(main())
