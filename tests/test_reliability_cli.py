"""Issue 14, the CLI on a dataset with bad clips: by default invalid clips become failed rows with their reason,
counted in the printed summary, the run summary and the report, and the run goes on; ``--strict`` aborts
before any model call with the full list; ``--label-set`` names the label set of a manifest without one."""
import json

import pandas as pd
import pytest

from emoprobe import cli, store

from fake_openai import FakeOpenAI
from run_helpers import manifest


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPROBE_CACHE", str(tmp_path / "cache"))
    man = manifest(tmp_path, n=6).drop(columns=["label_set"])  # no label_set column
    man.loc[len(man)] = {"clip_id": "gone1", "path": str(tmp_path / "gone1.mp4"), "label": "anger", "split": "test"}
    man.loc[len(man)] = {"clip_id": "gone2", "path": str(tmp_path / "gone2.mp4"), "label": "anger", "split": "test"}
    csv = tmp_path / "man.csv"
    man.to_csv(csv, index=False)
    with FakeOpenAI() as srv:
        yield tmp_path, csv, srv


def test_missing_clips_become_failed_rows_and_the_run_goes_on(setup, capsys):
    tmp, csv, srv = setup
    db = tmp / "s.sqlite"
    args = ["run", "--model", f"openai:fake-vlm@{srv.base_url}", "--dataset", f"manifest:{csv}", "--fps", "2",
            "--store", str(db), "--no-progress", "--run-name", "r"]
    assert cli.main(args) == 2  # the manifest has no label_set column: say how to name it
    assert "(name it with --label-set mafw|dfew)" in capsys.readouterr().err
    assert cli.main(args + ["--label-set", "mafw"]) == 0
    out = capsys.readouterr()
    assert "2 invalid clip(s) recorded as failed rows" in out.err
    assert "n=8 ok=6 unparsed=0 failed=2 (invalid clips 2)" in out.out
    assert len(srv.requests) == 6  # the missing clips were never sent
    st = store.RunStore(db)
    df = st.to_frame("r")
    bad = df[df["status"] == "failed"].sort_values("clip_id")
    assert bad["clip_id"].tolist() == ["gone1", "gone2"]
    assert bad["error"].str.match(r"invalid clip: missing file: .*gone\d\.mp4").all()
    summary = json.loads(st.runs().set_index("name").loc["r", "summary"])
    assert summary["n"] == 8 and summary["failed"] == 2 and summary["invalid"] == 2
    st.close()
    assert cli.main(["report", "--store", str(db), "--csv", str(tmp / "rep.csv")]) == 0
    rep = pd.read_csv(tmp / "rep.csv")
    assert rep["invalid"].tolist() == [2] and rep["n"].tolist() == [8]


def test_strict_aborts_up_front_with_the_full_list(setup, capsys):
    tmp, csv, srv = setup
    rc = cli.main(["run", "--model", f"openai:fake-vlm@{srv.base_url}", "--dataset", f"manifest:{csv}",
                   "--label-set", "mafw", "--strict", "--store", str(tmp / "s.sqlite"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(srv.requests) == 0
    assert "2 invalid row(s)" in err and "gone1: missing file" in err and "gone2: missing file" in err
