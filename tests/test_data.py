"""emoprobe.data: DFEW/MAFW/manifest loaders, validation, probing, the balanced split protocol."""
import shutil
import sys
import types

import numpy as np
import pandas as pd
import pytest

from emoprobe import data, labels
from emoprobe.data import DataError
from fixtures_data import (  # noqa: F401  (fixtures)
    bad_media_fixture, dfew_fixture, mafw_fixture, video_fixture, write_dfew, write_folder, write_mafw,
    write_video,
)


# ---------------------------------------------------------------- DFEW
def test_dfew_both_layouts(dfew_fixture):
    df = data.load_dfew(dfew_fixture, fold=1, split=None)
    assert list(df.columns[:5]) == ["clip_id", "path", "label", "split", "label_set"]
    assert df["clip_id"].tolist() == [f"{i:05d}" for i in range(1, 9)]  # csv "1" -> "00001"
    assert df["label"].tolist() == ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear", "happy"]
    assert df["split"].tolist() == ["train"] * 4 + ["test"] * 4
    assert (df["label_set"] == "dfew").all()
    for cid, p in zip(df["clip_id"], df["path"]):
        if int(cid) % 2:
            assert p.endswith(f"Clip/original/{cid}.mp4")
        else:
            assert p.endswith(f"Clip/jpg_256/{cid}")
    test = data.load_dfew(dfew_fixture, fold=1, split="test")
    assert len(test) == 4 and set(test["split"]) == {"test"}
    # forcing a source: only clip 8 has a clip_224x224 folder
    ok, failed = data.load_dfew(dfew_fixture, split="test", clips="clip_224x224", strict=False)
    assert ok["clip_id"].tolist() == ["00008"] and ok["path"].iloc[0].endswith("clip_224x224/00008")
    assert len(failed) == 3 and failed["reason"].str.contains("missing file").all()


def test_dfew_padded_ids_and_video_anywhere(tmp_path):
    root = write_dfew(tmp_path / "d", with_video=False)
    for v in (1, 3, 5, 7):  # unpadded video names in another folder under Clip/
        write_video(root / "Clip" / "mp4" / f"{v}.mp4", n=4, size=16)
    df = data.load_dfew(root, split=None)
    assert df.loc[df.clip_id == "00003", "path"].iloc[0].endswith("Clip/mp4/3.mp4")


def test_dfew_missing_clip_is_reported_not_dropped(tmp_path):
    root = write_dfew(tmp_path / "d")
    shutil.rmtree(root / "Clip" / "jpg_256" / "00006")
    with pytest.raises(DataError, match=r"(?s)1 invalid row.*00006: missing file"):
        data.load_dfew(root, split="test")
    ok, failed = data.load_dfew(root, split="test", strict=False)
    assert len(ok) + len(failed) == 4
    assert failed[["clip_id", "path", "reason"]].iloc[0]["clip_id"] == "00006"


@pytest.mark.parametrize("content, match", [
    ("video_name,label\n1,1\n2,0\n", r"set_1.csv: line 3 \(video 2\): label 0 out of range"),
    ("video_name,label\n1,1\n2,8\n", r"set_1.csv: line 3 \(video 2\): label 8 out of range"),
    ("video_name,label\n1,happy\n", r"set_1.csv: line 2: label 'happy' is not an integer"),
    ("name,emotion\n1,1\n", r"set_1.csv: expected columns video_name,label"),
])
def test_dfew_bad_split_file(tmp_path, content, match):
    root = write_dfew(tmp_path / "d")
    (root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv").write_text(content)
    with pytest.raises(DataError, match=match):
        data.load_dfew(root, split="test")


def test_dfew_missing_split_file(tmp_path):
    with pytest.raises(DataError, match=r"set_2.csv: split file not found"):
        data.load_dfew(write_dfew(tmp_path / "d"), fold=2)


# ---------------------------------------------------------------- MAFW
def test_mafw_both_layouts(mafw_fixture):
    df = data.load_mafw(mafw_fixture, fold=1, split=None)
    assert df["clip_id"].tolist() == ["00025", "00026", "00027", "00030", "00031"]
    assert df["label"].tolist() == ["anger", "contempt", "helplessness", "disappointment", "anxiety"]
    assert set(df["label"]) <= set(labels.MAFW) and (df["label_set"] == "mafw").all()
    paths = dict(zip(df["clip_id"], df["path"]))
    assert paths["00025"].endswith("data/clips/00025.mp4") and paths["00026"].endswith("data/frames/00026")
    ok, failed = data.load_mafw(mafw_fixture, split="train", clips="frames", strict=False)
    assert ok["clip_id"].tolist() == ["00026"] and len(failed) == 2


@pytest.mark.parametrize("content, match", [
    ("00025.mp4 anger\n00026.mp4\n", r"train.txt: line 2: expected '<clip>.mp4 <class>'"),
    ("00025.mp4 anger extra\n", r"train.txt: line 1: expected"),
    ("00025.mp4 anger\n\n00026.mp4 joy\n", r"train.txt: line 3: unknown class 'joy'"),
    ("\n", r"train.txt: empty split file"),
])
def test_mafw_malformed_split_file(tmp_path, content, match):
    root = write_mafw(tmp_path / "m")
    (root / "Train & Test Set" / "single" / "no_caption" / "set_1" / "train.txt").write_text(content)
    with pytest.raises(DataError, match=match):
        data.load_mafw(root, split="train")


# ---------------------------------------------------------------- generic manifest + dispatch
def _manifest(tmp_path, rows, header="path,label,split"):
    write_video(tmp_path / "clips" / "a.mp4", n=5, size=16)
    write_folder(tmp_path / "clips" / "b", n=3, size=16)
    csv = tmp_path / "m.csv"
    csv.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return csv


def test_load_manifest_relative_paths(tmp_path):
    csv = _manifest(tmp_path, ["clips/a.mp4,Anger,test", f"{tmp_path}/clips/b,fear,train"])
    df = data.load_manifest(csv, label_set="mafw")
    assert df["clip_id"].tolist() == ["clips/a", str(tmp_path / "clips/b")]
    assert df["path"].tolist() == [str(tmp_path / "clips/a.mp4"), str(tmp_path / "clips/b")]
    assert df["label"].tolist() == ["anger", "fear"] and (df["label_set"] == "mafw").all()
    assert data.load("manifest", csv=csv, label_set="mafw").equals(df)


def test_manifest_row_failures_are_counted(tmp_path):
    csv = _manifest(tmp_path, ["clips/a.mp4,anger,test", "clips/missing.mp4,fear,test", "clips/b,joy,test"],
                    header="path,label,split")
    with pytest.raises(DataError, match=r"2 invalid row"):
        data.load_manifest(csv, label_set="mafw")
    ok, failed = data.load_manifest(csv, label_set="mafw", strict=False)
    assert ok["clip_id"].tolist() == ["clips/a"]
    reasons = dict(zip(failed["clip_id"], failed["reason"]))
    assert "missing file" in reasons["clips/missing"] and str(tmp_path / "clips/missing.mp4") in reasons[
        "clips/missing"]
    assert "unknown label 'joy'" in reasons["clips/b"]


def test_manifest_duplicate_ids_and_missing_columns(tmp_path):
    csv = _manifest(tmp_path, ["x,clips/a.mp4,anger", "x,clips/b,fear"], header="clip_id,path,label")
    ok, failed = data.load_manifest(csv, label_set="mafw", strict=False)
    assert len(ok) == 0 and failed["reason"].str.contains("duplicate clip_id 'x'").all()
    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\na.mp4,anger\n")
    with pytest.raises(DataError, match=r"bad.csv: missing column\(s\) \['path', 'label'\]"):
        data.load_manifest(bad, label_set="mafw")
    with pytest.raises(DataError, match="no label_set"):
        data.load_manifest(csv)


def test_load_dispatch(dfew_fixture, mafw_fixture, monkeypatch):
    assert len(data.load("DFEW", root=dfew_fixture, split="test")) == 4
    assert len(data.load("mafw", root=mafw_fixture, split=None)) == 5
    seen = {}
    fake = types.ModuleType("emoprobe.synthfer")
    fake.dataset = lambda **kw: seen.update(kw) or pd.DataFrame({"clip_id": ["s0"]})
    monkeypatch.setitem(sys.modules, "emoprobe.synthfer", fake)
    import emoprobe

    monkeypatch.setattr(emoprobe, "synthfer", fake, raising=False)
    assert data.load("synthfer", label_set="mafw", split="test", size=112)["clip_id"].tolist() == ["s0"]
    assert seen == {"label_set": "mafw", "split": "test", "size": 112}
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("ferplus")


# ---------------------------------------------------------------- validate / probe
def test_probe_good_video_and_folder(video_fixture, tmp_path):
    info = data.probe(video_fixture)
    assert info["n_frames"] == 75 and info["fps"] == 25 and abs(info["duration_s"] - 3.0) < 1e-6
    assert (info["width"], info["height"], info["size"], info["kind"]) == (64, 64, 64, "video")
    f = data.probe(write_folder(tmp_path / "f", n=10, size=16), folder_fps=5)
    assert (f["n_frames"], f["fps"], f["duration_s"], f["kind"]) == (10, 5.0, 2.0, "folder")


@pytest.mark.parametrize("name, reason", [
    ("random.mp4", "not a readable video"), ("truncated.mp4", "not a readable video"),
    ("truncated_faststart.mp4", "truncated"), ("zero.mp4", "zero decodable frames"),
    ("emptydir", "empty frame folder"), ("missing.mp4", "no such file"),
])
def test_probe_bad_media(bad_media_fixture, name, reason):
    p = bad_media_fixture / name
    with pytest.raises(DataError) as e:
        data.probe(p)
    assert str(p) in str(e.value) and reason in str(e.value)


def test_validate_probe_media_records_each_failure(bad_media_fixture, video_fixture):
    names = ["random.mp4", "truncated.mp4", "truncated_faststart.mp4", "zero.mp4", "emptydir", "empty.mp4"]
    df = pd.DataFrame({"clip_id": ["good", *names], "path": [str(video_fixture)] +
                       [str(bad_media_fixture / n) for n in names], "label": "anger", "split": "test",
                       "label_set": "mafw"})
    ok, failed = data.validate(df, probe_media=True)
    assert ok["clip_id"].tolist() == ["good"]
    assert failed["clip_id"].tolist() == names
    assert all(str(bad_media_fixture / n) in r for n, r in zip(names, failed["reason"]))
    ok2, failed2 = data.validate(df)  # without probing only the container-free checks run
    assert set(failed2["clip_id"]) == {"emptydir", "empty.mp4"}
    with pytest.raises(DataError, match="6 invalid row"):
        data.validate(df, probe_media=True, strict=True)


# ---------------------------------------------------------------- balanced split
def _fake(label_set, counts, seed=0):
    names = labels.get(label_set)
    rows = [(f"c{k:05d}", "/nowhere", lab, "train", label_set)
            for k, lab in enumerate(np.repeat(names, counts))]
    return pd.DataFrame(rows, columns=list(data.MANIFEST_COLUMNS)).sample(frac=1, random_state=seed)


def test_balanced_split_paper_sizes_and_determinism():
    mafw = _fake("mafw", [60 + 10 * i for i in range(11)])
    tr, te = data.balanced_split(mafw, 45, seed=0)
    assert len(te) == 495 and (te["label"].value_counts() == 45).all() and len(tr) == len(mafw) - 495
    assert not set(tr["clip_id"]) & set(te["clip_id"]) and set(te["split"]) == {"test"}
    assert set(tr["split"]) == {"train"} and set(te["source_split"]) == {"train"}
    tr2, te2 = data.balanced_split(mafw.sample(frac=1, random_state=5), 45, seed=0)  # row order irrelevant
    assert te["clip_id"].tolist() == te2["clip_id"].tolist() and tr["clip_id"].tolist() == tr2["clip_id"].tolist()
    _, te3 = data.balanced_split(mafw, 45, seed=1)
    assert set(te3["clip_id"]) != set(te["clip_id"])
    dfew = _fake("dfew", [150, 120, 400, 101, 300, 100, 130])
    tr, te = data.balanced_split(dfew, 100, seed=0)
    assert len(te) == 700 and (te["label"].value_counts() == 100).all() and len(tr) == len(dfew) - 700


def test_balanced_split_too_few_names_classes():
    df = _fake("dfew", [150, 120, 400, 99, 300, 100, 0])
    with pytest.raises(DataError, match=r"too few in: angry \(99\), fear \(0\)"):
        data.balanced_split(df, 100, seed=0)


def test_write_and_read_split(tmp_path):
    df = _fake("mafw", [50] * 11)
    tr, te = data.balanced_split(df, 45, seed=0)
    path = data.write_split(tr, te, tmp_path / "split")
    s = data.read_split(path)
    assert list(s.columns[:3]) == ["clip_id", "label", "split"] and (s["split"] == "test").sum() == 495
    tr2, te2 = data.read_split(tmp_path / "split", df)
    assert sorted(te2["clip_id"]) == sorted(te["clip_id"]) and sorted(tr2["clip_id"]) == sorted(tr["clip_id"])
    assert path.read_bytes() == data.write_split(tr, te, tmp_path / "again").read_bytes()
    with pytest.raises(DataError, match="not in the manifest"):
        data.read_split(path, df.iloc[:-3])
    first = te.iloc[0]
    relabelled = df.copy()
    relabelled.loc[relabelled.clip_id == first.clip_id, "label"] = "fear" if first.label != "fear" else "anger"
    with pytest.raises(DataError, match="labelled"):
        data.read_split(path, relabelled)
    bad = tmp_path / "bad.csv"
    bad.write_text("clip_id,label,split\na,anger,test\nb,fear,dev\n")
    with pytest.raises(DataError, match=r"bad.csv: line 3: split 'dev'"):
        data.read_split(bad)
