"""run.msce with given contexts (oracle / permuted texts): stage 1 skipped, texts in the key, failures named."""
import json

import pytest

from emoprobe import run, store

from run_helpers import FakeBackend, manifest


@pytest.fixture
def st(tmp_path):
    s = store.RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def test_msce_given_contexts(tmp_path, st):
    man = manifest(tmp_path, n=3)  # 2 s clips at 10 fps: key_fps=1 -> 2 keyframes, 1 gap
    ctx = {"c000": ["brows lower"], "c001": [], "c002": ["a", "b"]}
    b = FakeBackend()
    df = run.msce(b, man, key_fps=1, m=4, store=st, progress=False, contexts=ctx)
    assert b.describe_calls == []                      # no stage 1
    assert df["status"].tolist() == ["ok", "ok", "failed"]
    assert "2 context texts" in df["error"].iloc[2] and "1 gaps" in df["error"].iloc[2]
    assert json.loads(df["extra"][0])["context"] == ["brows lower"]
    assert json.loads(df["extra"][0])["note"] == "T=2 ctx=1"
    assert json.loads(df["extra"][1])["note"] == "T=2 ctx=0"  # empty list: interleaved layout, no text

    # a missing clip fails with the reason; other texts give other keys; the same texts reuse the store
    df2 = run.msce(FakeBackend(), man, key_fps=1, m=4, store=st, progress=False, contexts={"c000": ["x"]})
    assert df2["error"].iloc[1] == "no context given for clip c001"
    assert df2["key"].iloc[0] != df["key"].iloc[0]
    b3 = FakeBackend()
    df3 = run.msce(b3, man, key_fps=1, m=4, store=st, progress=False, contexts=ctx)
    assert b3.calls == [] and df3["cached"].all() and df3["key"].tolist() == df["key"].tolist()
    assert df3.attrs["run"] == df.attrs["run"] and df2.attrs["run"] != df.attrs["run"]


def test_given_texts_equal_to_stage1_share_the_answer(tmp_path, st):
    man = manifest(tmp_path, n=2)
    own = run.msce(FakeBackend(), man, key_fps=1, m=4, store=st, progress=False)
    texts = {c: json.loads(e)["context"] for c, e in zip(own["clip_id"], own["extra"])}
    b = FakeBackend()
    again = run.msce(b, man, key_fps=1, m=4, store=st, progress=False, contexts=texts)
    assert b.calls == [] and b.describe_calls == [] and again["key"].tolist() == own["key"].tolist()
