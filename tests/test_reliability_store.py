"""Issue 14, shared run stores: several processes on one store split the work through leases (0 lost, 0
duplicated under kill -9, predictions identical to a single process), run summaries count the store, and store
errors (mid-file corruption, a full disk) name the file; a run stopped by a full disk resumes cleanly."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emoprobe import run, store
from emoprobe.store import RunStore, StoreError
from run_helpers import FakeBackend, manifest

HERE = Path(__file__).resolve().parent
SAMPLING = {"strategy": "count", "count": 2}


def big_manifest(tmp_path, n):
    """``n`` clips (run_helpers.manifest makes at most 23 distinct grey levels: repeat them under new ids)."""
    import pandas as pd

    parts, k = [], 0
    while sum(map(len, parts)) < n:
        m = manifest(tmp_path / f"m{k}", n=min(20, n - sum(map(len, parts))))
        parts.append(m.assign(clip_id=[f"p{k}-{c}" for c in m["clip_id"]]))
        k += 1
    return pd.concat(parts, ignore_index=True)

WORKER = textwrap.dedent("""
    import os, sys, pandas as pd
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from emoprobe import run, store
    from run_helpers import FakeBackend
    man = pd.read_csv(sys.argv[1])
    b = FakeBackend(delay=float(sys.argv[3]))
    df = run.classify(b, man, sampling={"strategy": "count", "count": 2}, store=store.RunStore(sys.argv[2]),
                      batch_size=2, progress=False, run_name="shared")
    print("computed", sum(b.calls), "cached", int(df["cached"].sum()), flush=True)
""")




def _spawn(tmp_path, csv, db, delay):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(csv), str(db), str(delay)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_workers_with_kill9_lose_and_duplicate_nothing(tmp_path):
    n = 40
    man = big_manifest(tmp_path, n)
    csv = tmp_path / "man.csv"
    man.to_csv(csv, index=False)
    (tmp_path / "worker.py").write_text(WORKER)
    db = tmp_path / "shared.sqlite"
    RunStore(db).close()
    procs = [_spawn(tmp_path, csv, db, 0.06) for _ in range(3)]
    try:
        deadline = time.monotonic() + 90
        while store.answer_count(db) < 6 and time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.02)
        os.kill(procs[0].pid, signal.SIGKILL)  # one worker dies holding leases on clips it was computing
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert outs[0][0] == -signal.SIGKILL
    for rc, out, err in outs[1:]:
        assert rc == 0, err[-2000:]
    computed = [int(out.split()[1]) for rc, out, _ in outs[1:]]
    assert sum(computed) > 0, computed  # the survivors did the rest (how they split it depends on start-up times)
    s = RunStore(db)
    df = s.to_frame("shared")
    assert len(df) == n and df["key"].is_unique and (df["status"] == "ok").all()  # 0 lost
    assert (df["attempts"] == 1).all()  # 0 duplicated: no answer was written twice
    assert s._con.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0  # every lease released or taken over
    summary = json.loads(s.runs().set_index("name").loc["shared", "summary"])
    assert summary["n"] == n and summary["ok"] == n  # counted from the store, whoever finished last
    s.close()
    single = run.classify(FakeBackend(), man, sampling=SAMPLING, store=tmp_path / "single.sqlite", batch_size=2,
                          progress=False)
    assert df.set_index("clip_id").loc[single["clip_id"], "pred"].tolist() == single["pred"].tolist()


def test_claim_release_and_dead_holder(tmp_path):
    s = RunStore(tmp_path / "r.sqlite")
    assert s.claim(["a", "b", "c"], "me", ttl_s=60, limit=2) == ["a", "b"]
    assert s.claim(["a", "b", "c"], "you", ttl_s=60) == ["c"]
    s.release(["a"], "me")
    assert s.claim(["a", "b"], "you", ttl_s=60) == ["a"]
    # a lease whose holder process is gone is taken over at once; an expired one too
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    s._con.execute("UPDATE leases SET pid=?, owner='ghost' WHERE key='b'", (int(dead.stdout),))
    s._con.execute("INSERT INTO leases VALUES ('d', 'old', 'elsewhere', 1, 0)")
    assert s.claim(["b", "d"], "you", ttl_s=60) == ["b", "d"]
    s.close()


def test_shard_runs_report_store_counted_summaries(tmp_path):
    man = manifest(tmp_path, n=22)
    stores = []
    for i in range(2):
        p = tmp_path / f"shard{i}.sqlite"
        run.classify(FakeBackend(), man, sampling=SAMPLING, store=p, shard=f"{i}/2", run_name="exp", progress=False)
        stores.append(p)
    merged = RunStore(tmp_path / "merged.sqlite")
    merged.merge(stores)
    summary = json.loads(merged.runs().set_index("name").loc["exp", "summary"])
    assert summary["n"] == 22 and summary["ok"] == 22  # was the first shard's (n=12 of 22)
    merged.close()
    # two shards on ONE store under one run name: the second finisher does not overwrite the first's count
    one = tmp_path / "one.sqlite"
    for i in range(2):
        run.classify(FakeBackend(), man, sampling=SAMPLING, store=one, shard=f"{i}/2", run_name="exp", progress=False)
    s = RunStore(one)
    assert json.loads(s.runs().set_index("name").loc["exp", "summary"])["n"] == 22
    s.close()


def test_mid_file_corruption_names_the_store(tmp_path):
    p = tmp_path / "runs.sqlite"
    s = RunStore(p)
    s.put([{"key": f"k{i}", "status": "ok", "clip_id": f"c{i}", "raw": "x" * 200} for i in range(3000)])
    s.close()
    size = p.stat().st_size
    with open(p, "r+b") as fh:  # garbage over the middle of the file, header intact
        fh.seek(size // 2)
        fh.write(os.urandom(64 * 1024))
    with pytest.raises(StoreError, match=rf"{p.name}: .*corrupt"):
        st = RunStore(p)
        st.to_frame()
        st.get([f"k{i}" for i in range(3000)])
    with open(p, "r+b") as fh:  # and over the header
        fh.write(b"\0" * 100)
    with pytest.raises(StoreError, match=rf"{p.name}: "):
        RunStore(p)


def test_full_disk_stops_with_a_clear_error_and_resumes_cleanly(tmp_path):
    man = big_manifest(tmp_path, 30)
    p = tmp_path / "runs.sqlite"
    st = RunStore(p)
    pages = st._con.execute("PRAGMA page_count").fetchone()[0]
    st._con.execute(f"PRAGMA max_page_count={pages + 3}")  # SQLite's own "database or disk is full"
    b = FakeBackend()
    with pytest.raises(StoreError, match=rf"{p.name}: write answers: disk full .*free space and rerun"):
        run.classify(b, man, sampling=SAMPLING, store=st, batch_size=2, progress=False, run_name="full")
    st.close()
    st = RunStore(p)  # space freed
    kept = st.to_frame()
    assert 0 < len(kept) < 30
    b2 = FakeBackend()
    df = run.classify(b2, man, sampling=SAMPLING, store=st, batch_size=2, progress=False, run_name="full")
    assert sum(b2.calls) == 30 - len(kept) and int(df["cached"].sum()) == len(kept)
    after = st.to_frame()
    assert len(after) == 30 and after["key"].is_unique and (after["attempts"] == 1).all()
    ref = run.classify(FakeBackend(), man, sampling=SAMPLING, store=tmp_path / "ref.sqlite", progress=False)
    assert df["pred"].tolist() == ref["pred"].tolist()
    st.close()
