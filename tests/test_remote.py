import socket
import time

import numpy as np
import pytest

from emoprobe import labels, models
from emoprobe.models import ClassifyRequest, DescribeRequest, ModelError
from emoprobe.remote import OpenAIBackend

from fake_openai import FakeOpenAI

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("EMOPROBE_TEST_API_KEY", KEY)
    with FakeOpenAI() as s:
        yield s


def backend(server, **kw):
    spec = {"backend": "openai", "model": "fake-vlm", "base_url": server.base_url,
            "api_key_env": "EMOPROBE_TEST_API_KEY", "backoff_s": 0.005, "max_retries": 2, "timeout_s": 5, **kw}
    return models.load(spec)


def req(mode="ok:happiness", n=3, context=None):
    frames = np.random.default_rng(0).integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    return ClassifyRequest(frames=frames, t=np.arange(n) * 0.2, labels=list(labels.MAFW),
                           prompt=f"Which emotion? MODE={mode}", context=context)


def test_classify_ok_sends_key_frames_and_records_usage(server):
    b = backend(server)
    assert isinstance(b, OpenAIBackend)
    [a] = b.classify([req("ok:The emotion is: Sadness.")])
    assert (a.status, a.label, a.parse_method) == ("ok", "sadness", "exact")
    assert a.extra["prompt_tokens"] == 10 + 64 * 3 and a.extra["completion_tokens"] == 2
    assert a.extra["attempts"] == 1
    assert a.n_visual_tokens is None and a.n_text_tokens is None  # the API gives no split
    r = server.requests[-1]
    assert r["headers"]["authorization"] == f"Bearer {KEY}"
    parts = r["body"]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"] * 3 + ["text"]
    assert parts[0]["text"] == "Frame 1 (t=0.00s):" and parts[2]["text"] == "Frame 2 (t=0.20s):"
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert r["body"]["temperature"] == 0 and r["body"]["model"] == "fake-vlm"


def test_unparsed_answer(server):
    [a] = backend(server).classify([req("ok:Either happy or sad.")])
    assert a.status == "unparsed" and a.label is None and a.text == "Either happy or sad."


def test_as_video_and_msce_context(server):
    b = backend(server, as_video=True)
    b.classify([req()])
    parts = server.requests[-1]["body"]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["video_url", "text"]
    url = parts[0]["video_url"]["url"]
    assert url.startswith("data:video/jpeg;base64,") and url.count(",") == 3  # 3 frames, comma-joined
    backend(server).classify([req(context=["brow raises", "mouth opens"])])
    parts = server.requests[-1]["body"]["messages"][0]["content"]
    kinds = [p["type"] if p["type"] != "text" else p["text"].split(" ")[0] for p in parts]
    assert kinds == ["FrameID", "image_url", "Motion:", "FrameID", "image_url", "Motion:", "FrameID",
                     "image_url", "Which"]
    [a] = backend(server).classify([req(context=["only one"])])  # 3 keyframes need 2 texts
    assert a.status == "failed" and "one text per gap" in a.error


def test_retry_then_ok_and_429(server):
    b = backend(server)
    [a, c] = b.classify([req("500once"), req("429once", n=2)])
    assert a.status == "ok" and a.extra["attempts"] == 2
    assert c.status == "ok" and c.extra["attempts"] == 2


def test_permanent_500_fails_after_bounded_retries(server):
    [a] = backend(server, max_retries=2).classify([req("500always")])
    assert a.status == "failed" and "HTTP 500" in a.error and "3 attempts" in a.error
    assert server.attempts["Which emotion? MODE=500always"] == 3


def test_4xx_fails_immediately(server):
    [a] = backend(server).classify([req("400")])
    assert a.status == "failed" and "HTTP 400" in a.error and "too many images" in a.error
    assert server.attempts["Which emotion? MODE=400"] == 1


@pytest.mark.parametrize("mode,reason", [("badjson", "invalid JSON"), ("nochoices", "no choices"),
                                         ("empty", "empty content")])
def test_malformed_replies_fail_with_reason(server, mode, reason):
    [a] = backend(server).classify([req(mode)])
    assert a.status == "failed" and reason in a.error
    assert server.attempts[f"Which emotion? MODE={mode}"] == 1


def test_timeout_and_unreachable(server):
    [a] = backend(server, timeout_s=0.2, max_retries=1).classify([req("slow:0.6")])
    assert a.status == "failed" and "timeout" in a.error
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = models.load({"backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{port}/v1",
                     "max_retries": 1, "backoff_s": 0.001, "timeout_s": 2})
    [a] = b.classify([req()])
    assert a.status == "failed" and "connection error" in a.error and "2 attempts" in a.error


def test_concurrency_is_bounded(server):
    b = backend(server, max_concurrency=2)
    t0 = time.monotonic()
    answers = b.classify([req(f"slow:0.15 #{i}", n=1) for i in range(6)])
    assert all(a.status == "ok" for a in answers)
    assert server.peak == 2
    assert time.monotonic() - t0 >= 0.4  # 6 requests, 2 at a time, 0.15 s each


def test_describe(server):
    [a] = backend(server).describe([DescribeRequest(frames=req().frames, t=req().t,
                                                    prompt="Describe. MODE=ok:The brows rise.")])
    assert (a.status, a.text) == ("ok", "The brows rise.")


def test_fingerprint_and_spec_never_hold_the_key(server):
    b = backend(server)
    fp = b.fingerprint()
    assert fp["model"] == "fake-vlm" and fp["host"].startswith("127.0.0.1:")
    assert KEY not in repr(fp) and KEY not in repr(b.spec)
    with pytest.raises(ModelError, match="api_key_env") as e:
        OpenAIBackend({"model": "m", "base_url": server.base_url, "api_key": KEY})
    assert KEY not in str(e.value)
    with pytest.raises(ModelError, match="unknown spec keys"):
        OpenAIBackend({"model": "m", "base_url": server.base_url, "tmperature": 0})


def test_key_never_stored_by_a_run(server, tmp_path, monkeypatch):
    """A run through the store leaves no trace of the key in the SQLite files or the parquet export."""
    from emoprobe import run, store

    monkeypatch.setenv("EMOPROBE_CACHE", str(tmp_path / "cache"))
    import run_helpers as th

    manifest = th.manifest(tmp_path, n=3)
    # the prompt mentions nothing; errors echo the URL, which we make contain the key to test scrubbing
    spec = {"backend": "openai", "model": "fake-vlm", "base_url": server.base_url,
            "api_key_env": "EMOPROBE_TEST_API_KEY", "backoff_s": 0.001, "max_retries": 0}
    st = store.RunStore(tmp_path / "runs.sqlite")
    df = run.classify(spec, manifest, sampling={"strategy": "count", "count": 2}, store=st, progress=False,
                      run_name="remote-test")
    assert (df["status"] == "ok").all()
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    st.to_parquet(tmp_path / "out.parquet")
    st.close()
    for f in tmp_path.iterdir():
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
