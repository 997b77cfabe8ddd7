"""Issue 14, the OpenAI-compatible backend: a key under a user-chosen variable name echoed back by the server
never reaches answers, the store, its WAL, parquet exports or logs; Retry-After is honoured (capped) and
failed answers record their attempts. Each test failed before the fix."""
import logging
import time

import numpy as np
import pytest

from emoprobe import labels, models, run, store
from emoprobe.models import ClassifyRequest

from fake_openai import FakeOpenAI
from run_helpers import manifest

KEY = "mycred-Zq81xv0Lw3kP"  # no KEY/TOKEN/SECRET in the variable's name: only api_key_env says it is one


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("MY_CRED", KEY)
    with FakeOpenAI() as s:
        yield s


def spec(server, **kw):
    return {"backend": "openai", "model": "fake-vlm", "base_url": server.base_url, "api_key_env": "MY_CRED",
            "backoff_s": 0.005, "max_retries": 2, "timeout_s": 5, **kw}


def req(mode):
    frames = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    return ClassifyRequest(frames=frames, t=np.arange(2) * 0.2, labels=list(labels.MAFW),
                           prompt=f"Which emotion? MODE={mode}")


def test_echoed_key_under_any_name_never_stored(server, tmp_path, caplog):
    man = manifest(tmp_path, n=4)
    st = store.RunStore(tmp_path / "runs.sqlite")
    caplog.set_level(logging.INFO)
    dfs = [run.classify(spec(server), man, sampling={"strategy": "count", "count": 2},
                        prompt="Which emotion? {labels} MODE=" + mode, store=st, progress=False)
           for mode in ("echo400", "echook")]
    logging.getLogger("emoprobe.test").warning("server said: Authorization: Bearer %s", KEY)
    assert server.requests and server.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert (dfs[0]["status"] == "failed").all() and "invalid credentials" in dfs[0]["error"].iloc[0]
    assert (dfs[1]["status"] == "ok").all() and "<redacted>" in dfs[1]["raw"].iloc[0]
    for df in dfs:  # what a notebook would display
        assert KEY not in df.to_csv()
    st.to_parquet(tmp_path / "x.parquet")
    wal = (tmp_path / "runs.sqlite-wal").read_bytes()  # before close() checkpoints it away
    assert len(wal) > 0
    st.close()
    blobs = [wal, (tmp_path / "runs.sqlite").read_bytes(), (tmp_path / "x.parquet").read_bytes()]
    for b in blobs:
        assert KEY.encode() not in b
    assert KEY not in caplog.text and "<redacted>" in caplog.text


def test_scrub_authorization_values():
    s = store.scrub('{"headers": {"Authorization": "Bearer abc123XYZ987"}} then bearer qqq111www222')
    assert "abc123XYZ987" not in s and "qqq111www222" not in s and s.count("<redacted>") == 2


def test_retry_after_is_honoured_and_capped(server):
    b = models.load(spec(server))
    t0 = time.perf_counter()
    [a] = b.classify([req("429ra:0.6")])
    waited = time.perf_counter() - t0
    assert a.status == "ok" and a.extra["attempts"] == 2
    assert waited >= 0.6  # the backoff alone would have slept 0.0025-0.0075 s
    b = models.load(spec(server, retry_after_max_s=0.2, max_retries=1))
    t0 = time.perf_counter()
    [a] = b.classify([req("503ra:30")])
    waited = time.perf_counter() - t0
    assert a.status == "failed" and "HTTP 503" in a.error
    assert 0.2 <= waited < 5  # capped, not 30 s


def test_failed_answers_record_attempts(server, tmp_path):
    b = models.load(spec(server))
    [a, c] = b.classify([req("500always"), req("400")])
    assert a.status == c.status == "failed"
    assert a.extra["attempts"] == 3 and c.extra["attempts"] == 1


def test_retry_after_parsing():
    from emoprobe.remote import retry_after_s

    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None
