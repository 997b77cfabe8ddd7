import json

import numpy as np
import pandas as pd
import pytest

from emoprobe import run, store

from run_helpers import FakeBackend, manifest

SAMP = {"strategy": "count", "count": 4}


@pytest.fixture
def st(tmp_path):
    s = store.RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def test_classify_columns_caching_and_failed_decode(tmp_path, st):
    man = manifest(tmp_path, n=5, broken=1)
    b = FakeBackend()
    df = run.classify(b, man, sampling=SAMP, store=st, batch_size=2, progress=False)
    assert list(df.columns) == run.COLUMNS
    assert df["clip_id"].tolist() == man["clip_id"].tolist()
    ok = df[df.status == "ok"]
    assert len(ok) == 5 and (ok["n_frames"] == 4).all() and (~df["cached"]).all()
    assert ok["pred"].notna().all() and ok["raw"].tolist() == ok["pred"].tolist()
    bad = df[df.clip_id == "bad0"].iloc[0]
    assert bad["status"] == "failed" and "cannot prepare input" in bad["error"] and pd.isna(bad["pred"])
    assert df.attrs["summary"] == {"n": 6, "ok": 5, "unparsed": 0, "failed": 1, "cached": 0}
    assert sum(b.calls) == 5 and max(b.calls) <= 2

    # second run: everything cached, no model call, identical answers
    b2 = FakeBackend()
    df2 = run.classify(b2, man, sampling=SAMP, store=st, batch_size=2, progress=False)
    assert df2["cached"].all() and b2.calls == []
    pd.testing.assert_frame_equal(df.drop(columns="cached"), df2.drop(columns="cached"))
    # the failure is retried only when asked
    b3 = FakeBackend()
    df3 = run.classify(b3, man, sampling=SAMP, store=st, progress=False, retry_failed=True)
    assert b3.calls == [] and df3.set_index("clip_id").loc["bad0", "cached"] == np.False_
    assert df3.set_index("clip_id").loc["bad0", "status"] == "failed"
    assert len(st) == 6  # no duplicates


def test_keys_change_with_settings(tmp_path, st):
    man = manifest(tmp_path, n=2)
    base = run.classify(FakeBackend(), man, sampling=SAMP, store=st, progress=False)["key"].tolist()
    variants = [
        dict(model=FakeBackend(tag="v2")),
        dict(sampling={"strategy": "count", "count": 3}),
        dict(prompt="json"),
        dict(seed=1),
        dict(shuffle_seed=0),
        dict(score=True),
        dict(labels=run._labels.MAFW[::-1]),
    ]
    seen = {tuple(base)}
    for v in variants:
        kw = dict(model=FakeBackend(), manifest=man, sampling=SAMP, store=st, progress=False)
        kw.update(v)
        keys = tuple(run.classify(**kw)["key"])
        assert keys not in seen, v
        seen.add(keys)
    # editing the clip's content changes its key
    man2 = man.copy()
    man2["sha256"] = ["a" * 64, "b" * 64]
    assert tuple(run.classify(FakeBackend(), man2, sampling=SAMP, store=st, progress=False)["key"]) not in seen


def test_shuffle_records_order_and_scores(tmp_path, st):
    man = manifest(tmp_path, n=2)
    df = run.classify(FakeBackend(), man, sampling=SAMP, store=st, progress=False, shuffle_seed=3, score=True)
    extra = json.loads(df["extra"][0])
    assert sorted(extra["order"]) == [0, 1, 2, 3] and extra["order"] != [0, 1, 2, 3]
    # shown as a new video: increasing instants for the model, the source instants travel in t_source
    assert extra["t"] == sorted(extra["t"]) and sorted(extra["t_source"]) == extra["t"]
    assert extra["t_source"] != extra["t"]
    scores = json.loads(df["scores"][0])
    assert scores[df["pred"][0]] == 1.0
    again = run.classify(FakeBackend(), man, sampling=SAMP, store=st, progress=False, shuffle_seed=3, score=True)
    assert again["cached"].all() and again["extra"].tolist() == df["extra"].tolist()


def test_oom_halves_the_batch(tmp_path, st):
    man = manifest(tmp_path, n=7)
    b = FakeBackend(oom_above=2)
    df = run.classify(b, man, sampling=SAMP, store=st, batch_size=8, progress=False)
    assert (df.status == "ok").all()
    assert b.calls == [7, 4, 2, 2, 2, 1]  # 7 -> 4 -> 2,2; the learned size 2 applies to the remaining 3
    # OOM even at batch size 1 -> failed rows with the reason, the run goes on
    b1 = FakeBackend(tag="oom", oom_above=0)
    df1 = run.classify(b1, man, sampling=SAMP, store=st, batch_size=4, progress=False)
    assert (df1.status == "failed").all() and df1["error"].str.contains("out of memory at batch size 1").all()


def test_backend_exception_fails_the_batch_not_the_run(tmp_path, st):
    class Broken(FakeBackend):
        def classify(self, requests, score=False):
            raise ValueError("model exploded")

    man = manifest(tmp_path, n=3)
    df = run.classify(Broken(tag="broken"), man, sampling=SAMP, store=st, progress=False)
    assert (df.status == "failed").all() and df["error"].str.contains("model exploded").all()


def test_shard_partition_and_run_frame(tmp_path, st):
    man = manifest(tmp_path, n=6)
    parts = [run.classify(FakeBackend(), man, sampling=SAMP, store=st, shard=f"{i}/3", progress=False)
             for i in range(3)]
    ids = sorted(sum((p["clip_id"].tolist() for p in parts), []))
    assert ids == sorted(man["clip_id"])
    names = {p.attrs["run"] for p in parts}
    assert len(names) == 1  # shards of one experiment share the run name
    assert len(st.to_frame(names.pop())) == 6


def test_bad_input_errors(tmp_path, st):
    man = manifest(tmp_path, n=2)
    with pytest.raises(ValueError, match="duplicate clip_id"):
        run.classify(FakeBackend(), pd.concat([man, man]), sampling=SAMP, store=st, progress=False)
    with pytest.raises(ValueError, match="lacks column"):
        run.classify(FakeBackend(), man.drop(columns="path"), sampling=SAMP, store=st, progress=False)
    with pytest.raises(ValueError, match="shard"):
        run.classify(FakeBackend(), man, sampling=SAMP, store=st, shard="3/2", progress=False)


def test_describe_and_msce(tmp_path, st):
    man = manifest(tmp_path, n=3, broken=1)
    b = FakeBackend()
    d = run.describe(b, man, sampling=SAMP, store=st, progress=False)
    assert (d.status == "ok").sum() == 3 and d["raw"].str.startswith("motion over 4 frames").sum() == 3
    # clips are 2 s at 10 fps: key_fps=1 -> 2 keyframes, 1 gap of m=4 frames
    b = FakeBackend()
    df = run.msce(b, man, key_fps=1, m=4, store=st, progress=False, batch_size=2)
    assert df["status"].tolist() == ["ok", "ok", "ok", "failed"]
    assert "cannot decode" in df["error"].iloc[3]
    extra = json.loads(df["extra"][0])
    assert len(extra["context"]) == 1 and extra["context"][0].startswith("motion over 4 frames")
    assert extra["note"] == "T=2 ctx=1"
    assert sum(b.describe_calls) == 3
    b2 = FakeBackend()
    again = run.msce(b2, man, key_fps=1, m=4, store=st, progress=False)
    assert b2.calls == [] and b2.describe_calls == [] and again["cached"].iloc[:3].all()


def test_unknown_transform_fails_fast(tmp_path, st):
    man = manifest(tmp_path, n=1)
    with pytest.raises(ValueError, match="transform 'red_circle'"):
        run.classify(FakeBackend(), man, sampling=SAMP, store=st, progress=False, transform="red_circle")


def test_answer_log_counts_computed_and_stored(tmp_path, st, monkeypatch):
    """With EMOPROBE_ANSWER_LOG set (the book runner does, per chapter), each call logs computed vs stored."""
    man = manifest(tmp_path, n=4)
    log = tmp_path / "answers.jsonl"
    monkeypatch.setenv(run.ANSWER_LOG_ENV, str(log))
    run.classify(FakeBackend(), man, sampling=SAMP, store=st, progress=False)
    run.classify(FakeBackend(), man, sampling=SAMP, store=st, progress=False)
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(r["computed"], r["from_store"]) for r in recs] == [(4, 0), (0, 4)]
    from emoprobe import book

    assert book._answer_counts(log) == (4, 4)


def test_processing_order_groups_lengths_but_output_keeps_manifest_order(tmp_path, st):
    """Clips are processed shortest first (equal frame counts batch together); rows stay in manifest order."""
    man = manifest(tmp_path, n=6)
    man["duration_s"] = [3.0, 1.0, 2.0, 1.0, 3.0, 2.0]
    seen = []

    class Spy(FakeBackend):
        def classify(self, requests, score=False):
            seen.extend(float(r.frames.mean()) for r in requests)
            return super().classify(requests, score=score)

    df = run.classify(Spy(), man, sampling=SAMP, store=st, batch_size=2, progress=False)
    assert df["clip_id"].tolist() == man["clip_id"].tolist()
    levels = [20 + 10 * i for i in range(6)]
    order = sorted(range(6), key=lambda i: (man["duration_s"][i], i))
    assert np.allclose(seen, [levels[i] for i in order], atol=2)


def test_backend_reused_for_the_same_spec(tmp_path, monkeypatch):
    """A spec dict is loaded once and reused while the same spec and files are asked for again."""
    from emoprobe import models

    loads = []
    monkeypatch.setattr(models, "load", lambda spec: loads.append(spec) or FakeBackend())
    run.release_backends()
    spec = {"backend": "fake", "model": str(tmp_path), "name": "A"}
    b1, n1 = run.load_backend(spec)
    b2, n2 = run.load_backend({**spec, "name": "B"})
    assert b1 is b2 and (n1, n2) == ("A", "B") and len(loads) == 1
    (tmp_path / "weights.bin").write_bytes(b"x")   # the checkpoint folder changed: loaded again
    b3, _ = run.load_backend(spec)
    assert b3 is not b1 and len(loads) == 2
    run.release_backends()


@pytest.mark.slow
def test_helper_processes_share_the_work_with_identical_answers(tmp_path, monkeypatch):
    """EMOPROBE_WORKERS=2: a helper process answers part of the clips through the store's leases; the rows, in
    manifest order, equal those of a single-process run, and none counts as cached."""
    from emoprobe import tiny

    ckpt = tiny.build_qwen2_5_vl(tmp_path / "tiny")
    man = manifest(tmp_path, n=24)
    spec = {"backend": "hf", "model": str(ckpt), "name": "tiny"}
    kw = dict(sampling={"strategy": "count", "count": 4}, progress=False, batch_size=2)
    monkeypatch.setenv("EMOPROBE_WORKERS", "1")
    one = run.classify(spec, man, store=tmp_path / "one.sqlite", **kw)
    monkeypatch.setenv("EMOPROBE_WORKERS", "2")
    monkeypatch.setattr(run, "PARALLEL_MIN_ITEMS", 4)
    monkeypatch.setattr(run._Engine, "LEASE_ROUND", 1)   # small lease rounds: both processes get clips
    from emoprobe import hf

    slow = hf.HFBackend.classify   # this process only (helpers import afresh): leaves the helper time to start
    monkeypatch.setattr(hf.HFBackend, "classify", lambda self, reqs, score=False: (__import__("time").sleep(1.0),
                                                                                    slow(self, reqs, score))[1])
    by_helper = []
    join = run._join_helpers
    monkeypatch.setattr(run, "_join_helpers", lambda fs, rows: (by_helper.extend(k for f in fs for k in f.result()),
                                                                join(fs, rows)))
    try:
        run._helper_pool(1).submit(int).result()   # the helper process started and imported (as after a 1st call)
        two = run.classify(spec, man, store=tmp_path / "two.sqlite", **kw)
    finally:
        run.shutdown_helpers()
    assert two["clip_id"].tolist() == man["clip_id"].tolist()
    assert two["raw"].tolist() == one["raw"].tolist() and two["pred"].tolist() == one["pred"].tolist()
    assert not two["cached"].any() and two.attrs["summary"]["n"] == 24
    assert 0 < len(by_helper) < 24 and set(by_helper) <= set(two["key"])
    rows = store.RunStore(tmp_path / "two.sqlite").to_frame()
    assert len(rows) == 24 and rows["key"].is_unique
