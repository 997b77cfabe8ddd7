"""Issue 14, hostile inputs to emoprobe.data: names escaping the dataset root, malformed manifests, silent
0-row results, padded ids, special files, reasons that hide each other. Each test failed before the fix."""
import os
import socket

import pandas as pd
import pytest

from emoprobe import data
from emoprobe.data import DataError
from fixtures_data import write_dfew, write_mafw, write_video


def _outside(tmp_path):
    """A readable clip outside the dataset root that a hostile split file points at."""
    return write_video(tmp_path / "outside" / "x.mp4", n=6, size=16)


def test_dfew_name_escaping_the_root_is_an_invalid_row(tmp_path):
    root = write_dfew(tmp_path / "DFEW")
    _outside(tmp_path)
    csv = root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    csv.write_text(csv.read_text() + "../../../outside/x,2\n")
    with pytest.raises(DataError, match=r"(?s)1 invalid row.*line 6: video_name '\.\./\.\./\.\./outside/x' "
                                        r"is not a plain clip name"):
        data.load_dfew(root, split="test")
    ok, failed = data.load_dfew(root, split="test", strict=False)
    assert len(ok) == 4 and len(failed) == 1
    assert "outside" not in " ".join(ok["path"])


def test_mafw_name_escaping_the_root_is_an_invalid_row(tmp_path):
    root = write_mafw(tmp_path / "MAFW")
    _outside(tmp_path)
    txt = root / "Train & Test Set" / "single" / "no_caption" / "set_1" / "test.txt"
    txt.write_text(txt.read_text() + "../../../outside/x.mp4 anger\n/etc/passwd anger\n")
    ok, failed = data.load_mafw(root, split="test", strict=False)
    assert len(ok) == 2 and len(failed) == 2
    assert failed["reason"].str.contains(r"line [34]: clip name .* is not a plain file name").all()
    # from_spec keeps them as failed rows (not read), with the reason
    df = data.from_spec({"name": "mafw", "root": str(root)}, "test")
    assert df["invalid"].notna().sum() == 2 and df["invalid"].str.contains("not a plain file name").sum() == 2


def test_empty_path_in_manifest_names_file_and_line(tmp_path):
    csv = tmp_path / "m.csv"
    v = write_video(tmp_path / "a.mp4", n=4, size=16)
    csv.write_text(f"path,label\n{v},anger\n,anger\n")
    with pytest.raises(DataError, match=r"m\.csv: line\(s\) 3: empty path"):
        data.load_manifest(csv, label_set="mafw")


def test_zero_row_filters_are_errors_naming_the_filter(tmp_path):
    v = write_video(tmp_path / "a.mp4", n=4, size=16)
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,label,split\n{v},anger,TEST\n")
    with pytest.raises(DataError, match=r"m\.csv: the filter split == 'test' matches none of its 1 rows.*'TEST'"):
        data.from_spec({"name": "manifest", "csv": str(csv), "label_set": "mafw"}, "test")
    root = write_dfew(tmp_path / "DFEW")
    (root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv").write_text("video_name,label\n")
    with pytest.raises(DataError, match=r"set_1\.csv: no rows \(a header only\)"):
        data.load_dfew(root, split="test")


def test_25_and_00025_are_one_clip(tmp_path):
    a = write_video(tmp_path / "a.mp4", n=4, size=16)
    b = write_video(tmp_path / "b.mp4", n=4, size=16)
    csv = tmp_path / "m.csv"
    csv.write_text(f"clip_id,path,label\n25,{a},anger\n00025,{b},anger\n")
    ok, failed = data.load_manifest(csv, label_set="mafw", strict=False)
    assert ok.empty and len(failed) == 2
    assert failed["reason"].str.contains("duplicate clip_id '00025'").all()
    csv.write_text(f"clip_id,path,label\n25,{a},anger\n")
    assert data.load_manifest(csv, label_set="mafw")["clip_id"].tolist() == ["00025"]


def test_special_files_get_their_own_reason(tmp_path):
    loop = tmp_path / "loop.mp4"
    os.symlink(loop, loop)
    dangling = tmp_path / "dangling.mp4"
    os.symlink(tmp_path / "nowhere.mp4", dangling)
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.mp4"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    rows = [("a", loop), ("b", dangling), ("c", fifo), ("d", "/dev/null"), ("e", sock_path),
            ("f", tmp_path / "missing.mp4")]
    df = pd.DataFrame({"clip_id": [r[0] for r in rows], "path": [str(r[1]) for r in rows], "label": "anger",
                       "label_set": "mafw"})
    try:
        ok, failed = data.validate(df)
    finally:
        s.close()
    assert ok.empty
    why = dict(zip(failed["clip_id"], failed["reason"]))
    assert why["a"].startswith("symlink loop")
    assert why["b"].startswith("broken symlink")
    assert why["c"].startswith("not a regular file (a FIFO")
    assert why["d"].startswith("not a regular file (a device file)")
    assert why["e"].startswith("not a regular file (a socket)")
    assert why["f"].startswith("missing file")


def test_duplicate_reason_does_not_hide_other_reasons(tmp_path):
    v = write_video(tmp_path / "a.mp4", n=4, size=16)
    df = pd.DataFrame({"clip_id": ["x", "x"], "path": [str(v), str(tmp_path / "gone.mp4")],
                       "label": ["anger", "joy"], "label_set": "mafw"})
    ok, failed = data.validate(df)
    r = failed["reason"].tolist()
    assert "duplicate clip_id" in r[0] and "missing" not in r[0]
    assert "duplicate clip_id" in r[1] and "unknown label 'joy'" in r[1] and "missing file" in r[1]


def test_strict_from_spec_lists_every_invalid_row(tmp_path):
    root = write_dfew(tmp_path / "DFEW")
    for cid in ("00005", "00007"):
        (root / "Clip" / "original" / f"{cid}.mp4").unlink()
    df = data.from_spec({"name": "dfew", "root": str(root)}, "test")
    assert len(df) == 4 and df["invalid"].notna().sum() == 2  # default: kept as failed rows, run goes on
    with pytest.raises(DataError, match=r"(?s)2 invalid row.*00005: missing file.*00007: missing file"):
        data.from_spec({"name": "dfew", "root": str(root)}, "test", strict=True)


def test_killed_synthfer_generation_leaves_no_tmp_folder(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    gen = tmp_path / "generated"
    env = {**os.environ, "EMOPROBE_GENERATED": str(gen), "OMP_NUM_THREADS": "1"}
    code = ("from emoprobe import synthfer; synthfer.dataset('mafw', 'test', size=64, n_per_class=3, workers=1)")
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list((gen / "synthfer").glob(".tmp-*/videos/*.mp4")) and time.monotonic() < deadline:
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    left = list((gen / "synthfer").glob(".tmp-*"))
    assert len(left) == 1  # SIGKILL: the process could not clean up itself
    alive = gen / "synthfer" / f".tmp-feed-{os.getpid()}"  # a generation in progress (this pid is alive)
    alive.mkdir()
    assert data.sweep_stale_tmp(gen / "synthfer", quiet_s=3600) == []  # too recent: maybe another host's
    assert data.sweep_stale_tmp(gen / "synthfer", quiet_s=0) == left  # the next generation removes it
    assert alive.exists() and not left[0].exists()
