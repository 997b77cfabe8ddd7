"""Reliability figures (issue 14): kill -9 resumes, concurrent writers with a worker killed, corrupt stores, a full
disk, and hostile inputs to the data loaders. Prints one table; nothing is stored. ~1-2 min on 2 busy cores.

    OMP_NUM_THREADS=1 python scripts/reliability.py [--kills 5] [--concurrent 3] [--workers 3] [--seed 0]

Every figure is measured here: "lost" = clips without an answer after the resume, "duplicated" = answers
written more than once (the store's ``attempts`` > 1) or keys stored twice; a "clear error" is an exception
of the library's own type (DataError / StoreError) whose message names the file and gives a reason.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")

from emoprobe import data, labels, run, store  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's clip fixture (a script)
from run_helpers import write_clip as _write_clip  # noqa: E402
from emoprobe.models import Answer, Backend  # noqa: E402

SAMPLING = {"strategy": "count", "count": 2}


# ------------------------------------------------------------------------------------------------ fixtures
def write_clip(path: Path, level: int) -> Path:
    """A short uniform-grey mpeg4 clip: the test suite's fixture (tests/run_helpers.py), 12 frames."""
    return _write_clip(path, level, n=12)


def make_manifest(d: Path, n: int) -> pd.DataFrame:
    labs = labels.MAFW
    rows = []
    for i in range(n):
        p = write_clip(d / "clips" / f"c{i:03d}.mp4", level=10 + (7 * i) % 240)
        rows.append({"clip_id": f"c{i:03d}", "path": str(p), "label": labs[i % len(labs)], "split": "test",
                     "label_set": "mafw"})
    return pd.DataFrame(rows)


class GreyBackend(Backend):
    """Deterministic: the label from the frames' mean grey level; ``delay`` seconds per clip."""

    def __init__(self, delay: float = 0.0):
        self.spec = {"backend": "grey", "model": "grey"}
        self.delay = delay
        self.n = 0

    def fingerprint(self):
        return {"backend": "grey", "model": "grey"}

    def classify(self, requests, score=False):
        out = []
        for r in requests:
            time.sleep(self.delay)
            lab = r.labels[int(round(float(np.asarray(r.frames).mean()))) // 7 % len(r.labels)]
            out.append(Answer(text=lab, label=lab, status="ok", parse_method="exact"))
        self.n += len(requests)
        return out

    def describe(self, requests):
        raise NotImplementedError


def worker(csv: str, db: str, delay: str) -> None:
    man = pd.read_csv(csv)
    b = GreyBackend(float(delay))
    run.classify(b, man, sampling=SAMPLING, store=store.RunStore(db), batch_size=2, progress=False, run_name="r")
    print(b.n, flush=True)


def spawn(csv, db, delay):
    return subprocess.Popen([sys.executable, __file__, "_worker", str(csv), str(db), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})




def audit(db, man, ref) -> tuple[int, int, bool]:
    """(lost, duplicated, predictions identical to the single-process reference)."""
    st = store.RunStore(db)
    try:
        df = st.to_frame("r")
    finally:
        st.close()
    if df["clip_id"].duplicated().any():
        d = df[df["clip_id"].duplicated(keep=False)].sort_values("clip_id")
        print(d[["clip_id", "key", "status", "attempts", "model", "setting", "error"]].head(6).to_string(), file=sys.stderr)
    lost = len(set(man["clip_id"]) - set(df.loc[df["status"] != "failed", "clip_id"]))
    dup = int((df["attempts"] > 1).sum()) + int(df["key"].duplicated().sum())
    same = df.set_index("clip_id").reindex(ref["clip_id"])["pred"].tolist() == ref["pred"].tolist()
    return lost, dup, same


# ------------------------------------------------------------------------------------------------ experiments
def kill_resume(tmp: Path, man: pd.DataFrame, ref: pd.DataFrame, trials: int, rng: random.Random) -> dict:
    csv = tmp / "man.csv"
    man.to_csv(csv, index=False)
    out = {"trials": trials, "killed_mid_run": 0, "lost": 0, "duplicated": 0, "identical": 0}
    for t in range(trials):
        db = tmp / f"kill{t}.sqlite"
        p = spawn(csv, db, 0.03)
        target = rng.randint(2, len(man) - 4)
        deadline = time.monotonic() + 120
        while store.answer_count(db) < target and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.random() * 0.05)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            out["killed_mid_run"] += 1
        p.communicate(timeout=30)
        st = store.RunStore(db)
        run.classify(GreyBackend(), man, sampling=SAMPLING, store=st, batch_size=2, progress=False, run_name="r")
        st.close()
        lost, dup, same = audit(db, man, ref)
        out["lost"] += lost
        out["duplicated"] += dup
        out["identical"] += int(same)
    return out


def concurrent(tmp: Path, man: pd.DataFrame, ref: pd.DataFrame, trials: int, workers: int) -> dict:
    csv = tmp / "man.csv"
    man.to_csv(csv, index=False)
    out = {"trials": trials, "workers": workers, "killed": 0, "lost": 0, "duplicated": 0, "identical": 0,
           "all_survivors_worked": 0}
    for t in range(trials):
        db = tmp / f"conc{t}.sqlite"
        store.RunStore(db).close()
        procs = [spawn(csv, db, 0.04) for _ in range(workers)]
        deadline = time.monotonic() + 120
        while store.answer_count(db) < len(man) // 4 and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.01)
        if procs[0].poll() is None:
            os.kill(procs[0].pid, signal.SIGKILL)
            out["killed"] += 1
        done = [p.communicate(timeout=180) for p in procs]
        computed = [int(o.split()[0]) if p.returncode == 0 and o.split() else 0 for p, (o, _) in zip(procs[1:], done[1:])]
        out["all_survivors_worked"] += int(all(c > 0 for c in computed))
        lost, dup, same = audit(db, man, ref)
        out["lost"] += lost
        out["duplicated"] += dup
        out["identical"] += int(same)
    return out


def corrupt_stores(tmp: Path) -> dict:
    def fresh(name):
        p = tmp / name
        s = store.RunStore(p)
        s.put([{"key": f"k{i}", "status": "ok", "clip_id": f"c{i}", "raw": "x" * 200} for i in range(3000)])
        s.close()
        return p

    def mid(p):
        with open(p, "r+b") as fh:
            fh.seek(p.stat().st_size // 2)
            fh.write(os.urandom(65536))

    def header(p):
        with open(p, "r+b") as fh:
            fh.write(b"\0" * 100)

    def truncate(p):
        with open(p, "r+b") as fh:
            fh.truncate(p.stat().st_size // 3)

    def text(p):
        p.write_text("this is not a database\n" * 100)

    def pages(p):  # garbage over the root page of the answers table (page 2)
        with open(p, "r+b") as fh:
            fh.seek(4096)
            fh.write(os.urandom(4096))

    cases = {"garbage mid-file": mid, "zeroed header": header, "truncated to a third": truncate,
             "a text file": text, "garbage over the first table page": pages}
    out = {"tried": 0, "clear_errors": 0, "silent": 0, "details": {}}
    for name, fn in cases.items():
        p = fresh(f"c-{name.replace(' ', '_')}.sqlite")
        fn(p)
        out["tried"] += 1
        try:
            s = store.RunStore(p)
            s.to_frame()
            s.get([f"k{i}" for i in range(3000)])
            s.put([{"key": "new", "status": "ok"}])
            s.close()
            out["silent"] += 1
            out["details"][name] = "no error (the damage was not reached)"
        except store.StoreError as e:
            ok = p.name in str(e)
            out["clear_errors"] += int(ok)
            out["details"][name] = str(e).split(": ", 2)[-1][:90]
        except Exception as e:  # noqa: BLE001 - counted as an unclear error
            out["details"][name] = f"UNCLEAR {type(e).__name__}: {e}"[:90]
    return out


def full_disk(tmp: Path, man: pd.DataFrame, ref: pd.DataFrame) -> dict:
    db = tmp / "r.sqlite" if False else tmp / "full.sqlite"
    st = store.RunStore(db)
    st._con.execute(f"PRAGMA max_page_count={st._con.execute('PRAGMA page_count').fetchone()[0] + 3}")
    out = {"stopped_with_clear_error": 0, "kept_before_stop": 0, "lost": 0, "duplicated": 0, "identical": 0}
    try:
        run.classify(GreyBackend(), man, sampling=SAMPLING, store=st, batch_size=2, progress=False, run_name="r")
    except store.StoreError as e:
        out["stopped_with_clear_error"] = int(db.name in str(e) and "disk full" in str(e))
    st.close()
    st = store.RunStore(db)
    out["kept_before_stop"] = len(st)
    run.classify(GreyBackend(), man, sampling=SAMPLING, store=st, batch_size=2, progress=False, run_name="r")
    st.close()
    out["lost"], out["duplicated"], same = audit(db, man, ref)
    out["identical"] = int(same)
    return out


def bad_inputs(tmp: Path) -> dict:
    """Hostile datasets and manifests: (case, how) -> did the loader raise a DataError naming the file with a
    reason, or return the row among the failed ones with a reason? Rows lost = rows neither ok nor failed."""
    cases = []

    def dfew(rows: str, name: str):
        root = tmp / f"dfew-{name}"
        d = root / "EmoLabel_DataSplit" / "test(single-labeled)"
        d.mkdir(parents=True, exist_ok=True)
        (d / "set_1.csv").write_text(rows)
        write_clip(root / "Clip" / "original" / "00001.mp4", 50)
        return root

    def mafw(lines: str, name: str):
        root = tmp / f"mafw-{name}"
        d = root / "Train & Test Set" / "single" / "no_caption" / "set_1"
        d.mkdir(parents=True, exist_ok=True)
        (d / "test.txt").write_text(lines)
        write_clip(root / "data" / "clips" / "00001.mp4", 50)
        return root

    outside = write_clip(tmp / "outside" / "x.mp4", 90)
    cases.append(("DFEW video_name ../../../outside/x", "row",
                  lambda: data.load_dfew(dfew("video_name,label\n1,1\n../../../outside/x,2\n", "esc"), strict=False),
                  2, "set_1.csv"))
    cases.append(("MAFW line /abs/path.mp4", "row",
                  lambda: data.load_mafw(mafw(f"00001.mp4 anger\n{outside} anger\n", "abs"), strict=False), 2,
                  "test.txt"))
    cases.append(("DFEW header-only csv", "error",
                  lambda: data.load_dfew(dfew("video_name,label\n", "hdr")), 0, "set_1.csv"))
    cases.append(("DFEW label 9", "error", lambda: data.load_dfew(dfew("video_name,label\n1,9\n", "lab")), 0,
                  "set_1.csv"))
    cases.append(("MAFW unknown class", "error", lambda: data.load_mafw(mafw("00001.mp4 joy\n", "cls")), 0,
                  "test.txt"))
    cases.append(("MAFW three fields", "error", lambda: data.load_mafw(mafw("00001.mp4 anger x\n", "3f")), 0,
                  "test.txt"))

    def manifest(body: str, name: str):
        p = tmp / f"{name}.csv"
        p.write_text(body)
        return p

    clip = write_clip(tmp / "ok.mp4", 60)
    cases.append(("manifest empty path", "error",
                  lambda: data.load_manifest(manifest(f"path,label\n{clip},anger\n,anger\n", "m-empty"), "mafw"), 0,
                  "m-empty.csv"))
    cases.append(("manifest split TEST", "error",
                  lambda: data.from_spec({"name": "manifest", "csv": str(manifest(
                      f"path,label,split\n{clip},anger,TEST\n", "m-split")), "label_set": "mafw"}), 0, "m-split.csv"))
    cases.append(("manifest ids 25 and 00025", "row",
                  lambda: data.load_manifest(manifest(f"clip_id,path,label\n25,{clip},anger\n00025,{clip},anger\n",
                                                      "m-dup"), "mafw", strict=False), 2, "00025"))
    cases.append(("manifest no label_set", "error",
                  lambda: data.load_manifest(manifest(f"path,label\n{clip},anger\n", "m-nols")), 0, "m-nols.csv"))
    cases.append(("manifest unparsable", "error",
                  lambda: data.load_manifest(manifest('path,label\n"unclosed,anger\n', "m-bad"), "mafw"), 0,
                  "m-bad.csv"))

    loop = tmp / "loop.mp4"
    os.symlink(loop, loop)
    fifo = tmp / "fifo.mp4"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp / "sock.mp4"))
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp / "junk.mp4"
    junk.write_bytes(os.urandom(5000))
    os.symlink(tmp / "nowhere.mp4", tmp / "dangling.mp4")
    special = {"symlink loop": loop, "FIFO": fifo, "device file": Path("/dev/zero"), "socket": tmp / "sock.mp4",
               "empty file": empty, "dangling symlink": tmp / "dangling.mp4", "missing file": tmp / "gone.mp4",
               "random bytes (probed)": junk, "empty frame folder": tmp / "emptydir"}
    (tmp / "emptydir").mkdir()
    for name, path in special.items():
        df = pd.DataFrame({"clip_id": ["a"], "path": [str(path)], "label": ["anger"], "label_set": ["mafw"]})
        cases.append((name, "row", lambda df=df: data.validate(df, probe_media=True), 1, str(path)))

    out = {"tried": 0, "clear": 0, "rows_lost": 0, "details": {}}
    for name, kind, fn, n_rows, must_name in cases:
        out["tried"] += 1
        try:
            res = fn()
        except data.DataError as e:
            msg = str(e)
            ok = kind == "error" and must_name in msg
            out["clear"] += int(ok)
            out["details"][name] = ("ok  " if ok else "BAD ") + msg.splitlines()[-1].strip()[:100]
            continue
        except Exception as e:  # noqa: BLE001
            out["details"][name] = f"BAD {type(e).__name__}: {e}"[:100]
            continue
        ok_df, failed = res
        lost = n_rows - len(ok_df) - len(failed)
        out["rows_lost"] += max(0, lost)
        reasons = failed["reason"].tolist() if len(failed) else []
        clear = kind == "row" and len(failed) >= 1 and lost == 0 and all(reasons) and \
            any(must_name in r or must_name in str(p) for r, p in zip(reasons, failed["path"]))
        out["clear"] += int(clear)
        out["details"][name] = ("ok  " if clear else "BAD ") + (reasons[-1][:100] if reasons else "no failed row")
    sock.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=3)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--clips", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emoprobe-reliability-") as d:
        tmp = Path(d)
        man = make_manifest(tmp / "data", a.clips)
        ref = run.classify(GreyBackend(), man, sampling=SAMPLING, store=tmp / "ref.sqlite", progress=False)
        res = {
            "kill -9 + resume": kill_resume(tmp, man, ref, a.kills, random.Random(a.seed)),
            "concurrent writers, one killed": concurrent(tmp, man, ref, a.concurrent, a.workers),
            "full disk + resume": full_disk(tmp, man, ref),
            "corrupt stores": corrupt_stores(tmp),
            "bad inputs": bad_inputs(tmp),
        }
    print(f"emoprobe reliability ({a.clips} clips per run, seed {a.seed}, {time.perf_counter() - t0:.0f} s)")
    for name, r in res.items():
        details = r.pop("details", None)
        print(f"  {name:32s} " + "  ".join(f"{k}={v}" for k, v in r.items()))
        for k, v in (details or {}).items():
            print(f"      {k:34s} {v}")
    print(json.dumps({k: {kk: vv for kk, vv in v.items()} for k, v in res.items()}))
    bad = (res["kill -9 + resume"]["lost"] + res["kill -9 + resume"]["duplicated"]
           + res["concurrent writers, one killed"]["lost"] + res["concurrent writers, one killed"]["duplicated"]
           + res["full disk + resume"]["lost"] + res["full disk + resume"]["duplicated"]
           + res["bad inputs"]["rows_lost"] + res["bad inputs"]["tried"] - res["bad inputs"]["clear"]
           + res["corrupt stores"]["tried"] - res["corrupt stores"]["clear_errors"] - res["corrupt stores"]["silent"])
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker(*sys.argv[2:5])
        sys.exit(0)
    sys.exit(main())
