"""emoprobe.sampling: fps/count/all sampling, MSCE keyframes and gaps, shuffling, bad input."""
import json
import logging

import numpy as np
import pytest

from emoprobe import sampling
from emoprobe.data import DataError
from fixtures_data import (  # noqa: F401  (fixtures)
    bad_media_fixture, folder_fixture, frame_index, video_fixture, write_folder,
)


@pytest.mark.parametrize("fps, expected", [
    (1, [0, 25, 50]),
    (5, list(range(0, 75, 5))),
    (10, [int(np.floor(k * 2.5)) for k in range(30)]),  # k/10 s -> frame 2.5k, ties to the earlier frame
    (25, list(range(75))),
])
def test_fps_counts_and_timestamps(video_fixture, fps, expected):
    f = sampling.sample(video_fixture, "fps", fps=fps)
    assert f.frames.dtype == np.uint8 and f.frames.shape == (len(expected), 64, 64, 3)
    assert f.indices.tolist() == expected
    assert frame_index(f.frames).tolist() == expected  # the pixels are those frames
    np.testing.assert_allclose(f.t, np.array(expected) / 25, atol=1e-6)
    assert f.requested == len(expected) and not f.capped and f.cap_reason is None
    assert f.source_fps == 25 and f.n_source == 75
    assert f.order.tolist() == list(range(len(expected))) and not f.shuffled


def test_fps_above_source_is_capped_not_duplicated(video_fixture):
    f = sampling.sample(video_fixture, "fps", fps=50)
    assert f.requested == 150 and len(f) == 75 and f.capped
    assert f.indices.tolist() == list(range(75))
    assert "150" in f.cap_reason and "75" in f.cap_reason


def test_fps_non_integer_ratio_keeps_every_frame_once(video_fixture):
    f = sampling.sample(video_fixture, "fps", fps=30)
    assert f.requested == 90 and f.capped
    assert len(np.unique(f.indices)) == len(f) == 75


def test_count_and_all(video_fixture):
    f = sampling.sample(video_fixture, "count", count=8)
    expected = [int((i + 0.5) * 75 / 8) for i in range(8)]
    assert f.indices.tolist() == expected == frame_index(f.frames).tolist()
    assert f.requested == 8 and not f.capped
    g = sampling.sample(video_fixture, "count", count=100)
    assert len(g) == 75 and g.requested == 100 and g.capped
    a = sampling.sample(video_fixture, "all")
    assert len(a) == 75 and a.requested == 75 and not a.capped
    assert frame_index(a.frames).tolist() == list(range(75))


def test_max_frames(video_fixture):
    f = sampling.sample(video_fixture, "fps", fps=25, max_frames=10)
    assert len(f) == 10 and f.requested == 75 and f.capped and "max_frames" in f.cap_reason
    assert f.indices.tolist() == [int((i + 0.5) * 75 / 10) for i in range(10)]


def test_keyframes_gaps_structure(video_fixture):
    keys, gaps = sampling.keyframes_gaps(video_fixture, key_fps=1.0, m=4)
    assert keys.indices.tolist() == [0, 25, 50]
    assert len(gaps) == len(keys) - 1 == 2
    for (a, b), g in zip(zip(keys.indices[:-1], keys.indices[1:]), gaps):
        assert len(g) == 4 and g.requested == 4 and not g.capped
        assert np.all((g.indices > a) & (g.indices < b))
        assert np.all(np.diff(g.indices) > 0)
        ka, kb = keys.t[keys.indices == a][0], keys.t[keys.indices == b][0]
        assert np.all((g.t > ka) & (g.t < kb))
        assert frame_index(g.frames).tolist() == g.indices.tolist()
    assert gaps[0].indices.tolist() == [5, 10, 15, 20]
    assert gaps[1].indices.tolist() == [30, 35, 40, 45]
    assert frame_index(keys.frames).tolist() == [0, 25, 50]


def test_keyframes_gaps_short_gap_is_capped(video_fixture):
    keys, gaps = sampling.keyframes_gaps(video_fixture, key_fps=10, m=4)  # gaps of 1-2 frames
    assert len(gaps) == len(keys) - 1
    assert all(g.capped and len(g) < 4 for g in gaps)
    assert all(np.all((g.indices > a) & (g.indices < b))
               for (a, b), g in zip(zip(keys.indices[:-1], keys.indices[1:]), gaps))


def test_shuffle_is_a_deterministic_permutation(video_fixture):
    f = sampling.sample(video_fixture, "fps", fps=5)
    s1, s2, s3 = sampling.shuffle(f, 0), sampling.shuffle(f, 0), sampling.shuffle(f, 1)
    assert s1.order.tolist() == s2.order.tolist() and s1.order.tolist() != s3.order.tolist()
    assert sorted(s1.order.tolist()) == list(range(len(f))) and s1.shuffled
    # timestamps and indices travel with their frames
    assert frame_index(s1.frames).tolist() == s1.indices.tolist()
    np.testing.assert_array_equal(s1.t, f.t[s1.order])
    np.testing.assert_array_equal(s1.indices, f.indices[s1.order])
    # sample(seed=) is the same thing
    assert sampling.sample(video_fixture, "fps", fps=5, seed=0).order.tolist() == s1.order.tolist()


def test_shuffle_never_identity_for_two_frames(video_fixture):
    f = sampling.sample(video_fixture, "count", count=2)
    for seed in range(20):
        assert sampling.shuffle(f, seed).order.tolist() == [1, 0]
    one = sampling.sample(video_fixture, "count", count=1)
    assert sampling.shuffle(one, 0).order.tolist() == [0]


def test_frame_folder_parity_with_video(video_fixture, folder_fixture):
    for kw in ({"strategy": "fps", "fps": 5}, {"strategy": "count", "count": 7}, {"strategy": "all"}):
        v = sampling.sample(video_fixture, **kw)
        d = sampling.sample(folder_fixture, folder_fps=25, **kw)
        assert d.indices.tolist() == v.indices.tolist()
        np.testing.assert_allclose(d.t, v.t, atol=1e-6)
        assert frame_index(d.frames).tolist() == frame_index(v.frames).tolist()
        assert d.source_fps == 25 and d.n_source == 75 and d.decoder == "pillow"
    kv, gv = sampling.keyframes_gaps(video_fixture)
    kd, gd = sampling.keyframes_gaps(folder_fixture)
    assert kv.indices.tolist() == kd.indices.tolist()
    assert [g.indices.tolist() for g in gv] == [g.indices.tolist() for g in gd]


def test_folder_natural_sort_and_folder_fps(tmp_path):
    d = write_folder(tmp_path / "unpadded", n=12, size=16, ext=".jpg", pad=0)  # 1.jpg .. 12.jpg
    f = sampling.sample(d, "all", folder_fps=10)
    assert frame_index(f.frames).tolist() == list(range(12))
    np.testing.assert_allclose(f.t, np.arange(12) / 10)
    assert len(sampling.sample(d, "fps", fps=1, folder_fps=10)) == 2  # 1.2 s -> 0 s and 1 s


def test_pyav_gives_the_same_frames(video_fixture):
    for kw in ({"strategy": "fps", "fps": 5}, {"strategy": "all"}):
        a = sampling.sample(video_fixture, decoder="decord", **kw)
        b = sampling.sample(video_fixture, decoder="pyav", **kw)
        assert a.decoder == "decord" and b.decoder == "pyav"
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.t, b.t, atol=1e-6)
        np.testing.assert_array_equal(a.frames, b.frames)


def test_falls_back_to_pyav_when_decord_cannot_open(video_fixture, monkeypatch, caplog):
    import decord

    def refuse(*a, **k):
        raise RuntimeError("decord refuses")

    monkeypatch.setattr(decord, "VideoReader", refuse)
    with caplog.at_level(logging.WARNING, logger="emoprobe.sampling"):
        f = sampling.sample(video_fixture, "fps", fps=1)
    assert f.decoder == "pyav" and f.indices.tolist() == [0, 25, 50]
    assert "falling back to PyAV" in caplog.text and str(video_fixture) in caplog.text


def test_decord_alone_reads_the_same_frames_without_pyav(video_fixture, monkeypatch):
    """A machine carrying only decord (no PyAV): no header check, identical frames."""
    import sys

    ref = sampling.sample(video_fixture, "fps", fps=5)
    monkeypatch.setitem(sys.modules, "av", None)          # `import av` now raises ImportError
    assert sampling._declared_frames(video_fixture) == (None, None)
    f = sampling.sample(video_fixture, "fps", fps=5)
    assert f.decoder == "decord"
    np.testing.assert_array_equal(f.frames, ref.frames)
    np.testing.assert_array_equal(f.indices, ref.indices)


@pytest.mark.parametrize("name, reason", [
    ("missing.mp4", "no such file"),
    ("random.mp4", "not a readable video"),
    ("truncated.mp4", "not a readable video"),
    ("truncated_faststart.mp4", "truncated"),
    ("zero.mp4", "zero decodable frames"),
    ("emptydir", "empty frame folder"),
    ("empty.mp4", "empty file"),
])
def test_bad_input_names_path_and_reason(bad_media_fixture, name, reason):
    p = bad_media_fixture / name
    with pytest.raises(DataError) as e:
        sampling.sample(p, "fps", fps=1)
    assert str(p) in str(e.value) and reason in str(e.value)
    with pytest.raises(DataError):
        sampling.keyframes_gaps(p)


def test_unreadable_image_in_folder(tmp_path):
    d = write_folder(tmp_path / "f", n=5, size=16)
    (d / "00003.png").write_bytes(b"not a png")
    assert sampling.sample(d, "count", count=2).indices.tolist() == [1, 3]  # 00003.png is never read
    with pytest.raises(DataError, match="00003.png"):
        sampling.sample(d, "all")


def test_bad_arguments(video_fixture):
    with pytest.raises(ValueError, match="fps"):
        sampling.sample(video_fixture, "fps")
    with pytest.raises(ValueError, match="count"):
        sampling.sample(video_fixture, "count", count=0)
    with pytest.raises(ValueError, match="strategy"):
        sampling.sample(video_fixture, "random")


def test_spec_key_canonical():
    a = sampling.spec_key("fps", fps=5)
    assert a == sampling.spec_key("fps", fps=5.0, decoder="pyav")
    assert a["strategy"] == "fps" and a["fps"] == 5.0 and a["version"] == sampling.SAMPLING_VERSION
    assert a != sampling.spec_key("fps", fps=5, seed=0)
    assert json.loads(json.dumps(sampling.spec_key("keyframes_gaps"))) == {
        "strategy": "keyframes_gaps", "version": sampling.SAMPLING_VERSION, "key_fps": 1.0, "m": 4,
        "folder_fps": 25.0}
    with pytest.raises(ValueError):
        sampling.spec_key("count", fps=5)
    with pytest.raises(ValueError):
        sampling.spec_key("fps")


def test_frame_cache_returns_independent_copies_and_sees_file_changes(tmp_path):
    """Decoded frames are cached per (file, size, mtime, inode, parameters); callers get copies."""
    import shutil

    from emoprobe import sampling, synthfer

    src = synthfer.dataset("mafw", "test", n_per_class=1, seed=0, workers=1)
    a, b = src["path"].iloc[0], src["path"].iloc[1]
    p = tmp_path / "clip.mp4"
    shutil.copy(a, p)
    sampling.clear_cache()
    f1 = sampling.sample(p, "fps", fps=2)
    f1.frames[:] = 0          # a caller scribbling on its frames ...
    f1.t[:] = -1
    f2 = sampling.sample(p, "fps", fps=2)
    ref = sampling.sample(a, "fps", fps=2)
    assert np.array_equal(f2.frames, ref.frames) and np.array_equal(f2.t, ref.t)  # ... does not reach the cache
    assert f2.frames is not sampling.sample(p, "fps", fps=2).frames
    shutil.copy(b, p)         # the file changes: decoded afresh
    f3 = sampling.sample(p, "fps", fps=2)
    assert np.array_equal(f3.frames, sampling.sample(b, "fps", fps=2).frames)
    s1 = sampling.sample(p, "fps", fps=2, seed=3)   # shuffling happens after the cache
    assert s1.shuffled and sorted(s1.order.tolist()) == list(range(len(s1)))
