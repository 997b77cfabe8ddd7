import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from emoprobe import store
from emoprobe.store import RunStore, StoreError

HERE = Path(__file__).resolve().parent


def row(k, status="ok", pred="anger", clip="c1", **kw):
    return {"key": k, "status": status, "pred": pred, "clip_id": clip, "label": "anger", "raw": pred, **kw}


def test_key_is_stable_and_changes_with_every_part():
    parts = dict(model={"model": "m", "weights": "abc"}, item={"clip_id": "c1", "sha256": "f" * 64},
                 sampling={"strategy": "fps", "fps": 5.0}, transform="none", prompt="Which emotion?", seed=0,
                 code="v1")
    k = store.key(**parts)
    assert k == store.key(**dict(reversed(list(parts.items()))))  # order-independent
    assert len(k) == 64
    changes = dict(model={"model": "m", "weights": "abd"}, item={"clip_id": "c1", "sha256": "e" * 64},
                   sampling={"strategy": "fps", "fps": 10.0}, transform="red_circle", prompt="Which emotion? ",
                   seed=1, code="v2")
    for name, v in changes.items():
        assert store.key(**{**parts, name: v}) != k, name


def test_input_code_version_tracks_source(tmp_path, monkeypatch):
    mod = tmp_path / "emoprobe_fake_input_mod.py"
    mod.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    v1 = store.input_code_version(("emoprobe_fake_input_mod",))
    store.input_code_version.cache_clear()
    mod.write_text("X = 2\n")
    v2 = store.input_code_version(("emoprobe_fake_input_mod",))
    store.input_code_version.cache_clear()
    assert v1 != v2
    assert store.input_code_version() == store.input_code_version(store.INPUT_MODULES)


def test_secrets_redacted_in_key_rows_and_args(tmp_path, monkeypatch):
    secret = "sk-live-abcdefghijklmnop"
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", secret)
    spec_a = {"model": "m", "api_key": secret, "api_key_env": "SOME_PROVIDER_API_KEY"}
    spec_b = {"model": "m", "api_key": "another-key-value-123", "api_key_env": "SOME_PROVIDER_API_KEY"}
    assert store.key(model=spec_a) == store.key(model=spec_b)  # the key value does not enter the key
    assert secret not in store.canonical_json(spec_a)
    s = RunStore(tmp_path / "r.sqlite")
    s.start_run("r1", {"model": spec_a, "url": f"https://x/?key={secret}"})
    s.put([row("k1", status="failed", pred=None, error=f"401 for key {secret}")], run="r1")
    s.to_parquet(tmp_path / "r.parquet")
    s.close()
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes(), f
    s = RunStore(tmp_path / "r.sqlite")
    assert "<redacted>" in s.runs()["args"][0] and "<redacted>" in s.to_frame()["error"][0]
    s.close()


def test_upsert_never_duplicates_and_failure_never_replaces_success(tmp_path):
    s = RunStore(tmp_path / "r.sqlite")
    s.put([row("k1", status="failed", pred=None, error="timeout")])
    assert s.get(["k1"])["k1"]["status"] == "failed"
    s.put([row("k1")])
    s.put([row("k1", status="failed", pred=None, error="later failure")])
    got = s.get(["k1", "missing"])
    assert list(got) == ["k1"] and got["k1"]["status"] == "ok" and got["k1"]["error"] is None
    assert len(s) == 1
    with pytest.raises(StoreError, match="status"):
        s.put([{"key": "k2", "status": "weird"}])
    s.close()


def test_runs_table_and_export(tmp_path):
    s = RunStore(tmp_path / "r.sqlite")
    s.start_run("a", {"fps": 5})
    s.put([row("k1"), row("k2", clip="c2")], run="a")
    s.start_run("b", {"fps": 1})
    s.put([row("k3", clip="c3")], run="b")
    s.add_to_run("b", ["k1"])  # a cached answer reused by run b
    runs = s.runs().set_index("name")
    from emoprobe import __version__

    assert runs.loc["a", "emoprobe_version"] == __version__ and runs.loc["a", "args"] == '{"fps":5}'
    assert runs.loc["a", "git_commit"] is None or len(runs.loc["a", "git_commit"]) >= 40
    assert sorted(s.to_frame("a")["key"]) == ["k1", "k2"] and sorted(s.to_frame("b")["key"]) == ["k1", "k3"]
    assert len(s.to_frame()) == 3
    with pytest.raises(StoreError, match="no run named 'zzz'"):
        s.to_frame("zzz")
    df = pd.read_parquet(s.to_parquet(tmp_path / "x.parquet"))
    assert len(df) == 3 and set(store.ANSWER_COLUMNS) <= set(df.columns)
    s.close()


def test_not_a_store(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="bad.sqlite"):
        RunStore(bad)


def test_shards_partition_stably():
    ids = [f"clip{i:04d}" for i in range(400)]
    parts = [[c for c in ids if store.in_shard(c, f"{i}/4")] for i in range(4)]
    assert sorted(sum(parts, [])) == ids
    assert all(60 < len(p) < 140 for p in parts)
    assert [store.shard_of(c, 4) for c in ids[:5]] == [store.shard_of(c, 4) for c in ids[:5]]
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError):
            store.parse_shard(bad)


def test_merge_without_duplicates(tmp_path):
    ids = [f"c{i}" for i in range(20)]
    paths = []
    for i in range(2):
        s = RunStore(tmp_path / f"shard{i}.sqlite")
        s.start_run("exp", {"shard": f"{i}/2"})
        s.put([row(f"k-{c}", clip=c) for c in ids if store.in_shard(c, f"{i}/2")], run="exp")
        s.close()
        paths.append(tmp_path / f"shard{i}.sqlite")
    # a third store repeats some keys: one failed (must not replace), one ok where the merged store failed
    s = RunStore(tmp_path / "extra.sqlite")
    s.put([row("k-c0", status="failed", pred=None, error="x"), row("k-new", status="failed", pred=None,
                                                                   error="y")], run="exp")
    s.close()
    out = RunStore(tmp_path / "merged.sqlite")
    st = out.merge(paths + [tmp_path / "extra.sqlite"])
    assert st["inserted"] == 21 and st["kept"] == 1 and st["conflicts"] == 0
    again = out.merge(paths)  # merging twice changes nothing
    assert again["inserted"] == 0 and len(out) == 21
    assert out.get(["k-c0"])["k-c0"]["status"] == "ok"
    assert len(out.to_frame("exp")) == 21
    s = RunStore(tmp_path / "fix.sqlite")
    s.put([row("k-new")])
    s.close()
    assert out.merge([tmp_path / "fix.sqlite"])["replaced"] == 1
    with pytest.raises(StoreError, match="no such run store"):
        out.merge([tmp_path / "nope.sqlite"])
    out.close()


WRITER = textwrap.dedent("""
    import sys, pandas as pd
    from emoprobe import run, store
    from run_helpers import FakeBackend
    man = pd.read_csv(sys.argv[1])
    run.classify(FakeBackend(delay=0.05), man, sampling={"strategy": "count", "count": 2},
                 store=store.RunStore(sys.argv[2]), batch_size=2, progress=False, run_name="killed")
    print("finished", flush=True)
""")




def test_resume_after_sigkill(tmp_path):
    """A real subprocess writes answers slowly; SIGKILL it mid-run; resume; nothing lost, nothing duplicated."""
    from emoprobe import run
    from run_helpers import FakeBackend, manifest

    man = manifest(tmp_path, n=24)
    csv = tmp_path / "man.csv"
    man.to_csv(csv, index=False)
    (tmp_path / "writer.py").write_text(WRITER)
    db = tmp_path / "runs.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(csv), str(db)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while store.answer_count(db) < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.037)  # land somewhere inside a batch
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    s = RunStore(db)
    before = s.to_frame()
    assert 6 <= len(before) < 24 and before["key"].is_unique and (before["status"] == "ok").all()
    assert s._con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    b = FakeBackend()
    df = run.classify(b, man, sampling={"strategy": "count", "count": 2}, store=s, batch_size=2, progress=False,
                      run_name="killed")
    assert sum(b.calls) == 24 - len(before)  # only the missing clips were asked
    assert int(df["cached"].sum()) == len(before) and (df["status"] == "ok").all()
    after = s.to_frame()
    assert len(after) == 24 and after["key"].is_unique
    assert len(s.to_frame("killed")) == 24
    kept = after.set_index("key").loc[before["key"], "raw"]
    assert kept.tolist() == before["raw"].tolist()  # answers written before the kill are untouched
    s.close()
