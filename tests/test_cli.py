import subprocess
import sys

import pytest

from emoprobe import cli, store

from fake_openai import FakeOpenAI
from run_helpers import manifest


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMOPROBE_TEST_KEY", "sk-cli-test-key-0123456789")
    man = manifest(tmp_path, n=7)  # labels cycle over MAFW: one happiness clip
    csv = tmp_path / "man.csv"
    man.to_csv(csv, index=False)
    with FakeOpenAI() as srv:
        yield tmp_path, csv, srv


def test_parse_model_and_dataset():
    assert cli.parse_model("openai:gemini-2.5-flash@https://x.example/v1beta/openai/", "GEMINI_API_KEY") == {
        "backend": "openai", "model": "gemini-2.5-flash", "base_url": "https://x.example/v1beta/openai/",
        "api_key_env": "GEMINI_API_KEY"}
    assert cli.parse_model("Qwen/Qwen2.5-VL-7B-Instruct") == {"backend": "hf", "model": "Qwen/Qwen2.5-VL-7B-Instruct"}
    assert cli.parse_model('{"backend": "vision", "model": "data/models/vision3d"}')["backend"] == "vision"
    with pytest.raises(Exception, match="API key"):
        cli.parse_model('{"model": "m", "api_key": "sk-123"}')
    with pytest.raises(Exception, match="openai:MODEL@BASE_URL"):
        cli.parse_model("openai:nourl")
    prof = {"name": "synthfer", "label_set": "mafw", "n_per_class": 2, "size": 112, "seed": 0}
    assert cli.parse_dataset("synthfer:dfew:train", prof) == {
        "spec": {**prof, "label_set": "dfew"}, "split": "train"}
    assert cli.parse_dataset("mafw:/data/MAFW", prof, fold=2) == {
        "spec": {"name": "mafw", "root": "/data/MAFW", "fold": 2}, "split": "test"}
    assert cli.parse_dataset(None, prof)["spec"] == prof
    with pytest.raises(Exception, match="unknown dataset"):
        cli.parse_dataset("ferplus:/x")


def test_run_report_merge(setup, capsys):
    tmp, csv, srv = setup
    model = f"openai:fake-vlm@{srv.base_url}"
    for i in range(2):
        assert cli.main(["run", "--model", model, "--api-key-env", "EMOPROBE_TEST_KEY",
                         "--dataset", f"manifest:{csv}", "--fps", "1", "5", "--shard", f"{i}/2",
                         "--store", str(tmp / f"s{i}.sqlite"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("fps=1") == 2 and out.count("fps=5") == 2
    assert srv.requests[-1]["headers"]["authorization"] == "Bearer sk-cli-test-key-0123456789"
    assert cli.main(["merge", str(tmp / "all.sqlite"), str(tmp / "s0.sqlite"), str(tmp / "s1.sqlite")]) == 0
    assert "inserted=14" in capsys.readouterr().out
    st = store.RunStore(tmp / "all.sqlite")
    assert len(st) == 14 and st.to_frame()["key"].is_unique
    st.close()
    assert cli.main(["report", "--store", str(tmp / "all.sqlite"), "--csv", str(tmp / "r.csv")]) == 0
    rep = capsys.readouterr().out
    assert "fake-vlm" in rep and "accuracy" in rep and "macro_f1" in rep
    import pandas as pd

    table = pd.read_csv(tmp / "r.csv")
    assert table["n"].tolist() == [7, 7] and (table["ok"] == 7).all()
    # the fake server always answers "happiness": accuracy is the share of happiness clips
    assert table["accuracy"].round(4).tolist() == [round(1 / 7, 4)] * 2
    # rerun: all cached, no new requests
    n_req = len(srv.requests)
    assert cli.main(["run", "--model", model, "--dataset", f"manifest:{csv}", "--fps", "1",
                     "--store", str(tmp / "all.sqlite"), "--no-progress", "--limit", "4"]) == 0
    assert len(srv.requests) == n_req and "cached=4" in capsys.readouterr().out
    for f in tmp.iterdir():
        if f.is_file():
            assert b"sk-cli-test-key" not in f.read_bytes()


def test_shuffle_experiment(setup, capsys):
    tmp, csv, srv = setup
    assert cli.main(["run", "--model", f"openai:fake-vlm@{srv.base_url}", "--dataset", f"manifest:{csv}",
                     "--experiment", "shuffle", "--fps", "5", "--shuffle-seeds", "0", "1",
                     "--store", str(tmp / "s.sqlite"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fps=5 [" in out and "fps=5 shuffle=0" in out and "fps=5 shuffle=1" in out


def test_errors(setup, capsys):
    tmp, csv, srv = setup
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--model", "m", "--dataset", "ferplus:/x", "--store", str(tmp / "s.sqlite")])
    assert e.value.code == 2 and "unknown dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["nonsense"])
    assert e.value.code == 2
    with pytest.raises(SystemExit, match="no such run store"):
        cli.main(["report", "--store", str(tmp / "missing.sqlite")])


def test_registry_and_module_entry():
    calls = []
    cli.register("hello", lambda p: p.add_argument("--who", default="x"), lambda a: calls.append(a.who) or 0)
    try:
        assert cli.main(["hello", "--who", "book"]) == 0 and calls == ["book"]
    finally:
        del cli.COMMANDS["hello"]
    r = subprocess.run([sys.executable, "-m", "emoprobe", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "run, report, merge" in r.stdout
