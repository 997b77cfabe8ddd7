"""emoprobe.transforms: visual prompts drawn on sampled frames (shapes, determinism, where pixels change, errors)."""
import numpy as np
import pytest

from emoprobe import synthfer, transforms
from emoprobe.sampling import Frames
from emoprobe.transforms import TransformError

FACE_TRANSFORMS = [n for n in transforms.names() if transforms.TRANSFORMS[n].needs_face]


def _frames(x: np.ndarray, fps: float = 5.0) -> Frames:
    T = len(x)
    return Frames(frames=x, t=np.arange(T) / fps, indices=np.arange(T) * 5, requested=T, capped=False,
                  source_fps=25.0, n_source=5 * T, order=np.arange(T), path="synthetic.mp4")


@pytest.fixture(scope="module")
def clip():
    """A real SynthFER clip (a face that moves), sampled at 5 fps, with its ground truth."""
    frames, gt = synthfer.render_clip("happiness", np.random.default_rng(3), 112, 25, duration_s=2.0)
    idx = np.arange(0, len(frames), 5)
    fr = Frames(frames=frames[idx].copy(), t=idx / 25.0, indices=idx, requested=len(idx), capped=False,
                source_fps=25.0, n_source=len(frames), order=np.arange(len(idx)), path="synthfer.mp4")
    return fr, gt


@pytest.mark.parametrize("name", transforms.names())
def test_shapes_dtype_determinism_and_input_untouched(clip, name):
    fr, gt = clip
    before = fr.frames.copy()
    t_before = fr.t.copy()
    full = f"{name}@gt" if transforms.needs_face(name) else name
    a = transforms.apply(full, fr, gt=gt)
    b = transforms.apply(full, fr, gt=gt)
    np.testing.assert_array_equal(fr.frames, before)      # input never modified
    np.testing.assert_array_equal(fr.t, t_before)
    assert a.frames.dtype == np.uint8 and a.frames.ndim == 4 and a.frames.shape[1:] == fr.frames.shape[1:]
    assert a.frames is not fr.frames and not np.shares_memory(a.frames, fr.frames)
    np.testing.assert_array_equal(a.frames, b.frames)     # deterministic
    assert len(a.t) == len(a.indices) == len(a.order) == len(a)
    if name == "video-montage":
        assert len(a) == 1 and a.t.tolist() == [fr.t[0]] and a.indices.tolist() == [fr.indices[0]]
    else:
        assert len(a) == len(fr)
        np.testing.assert_array_equal(a.t, fr.t)
        np.testing.assert_array_equal(a.indices, fr.indices)
    if name == "none":
        np.testing.assert_array_equal(a.frames, fr.frames)
    else:
        assert np.any(a.frames != fr.frames[:len(a)]) if name != "video-montage" else True


def test_red_circle_changes_pixels_around_the_face_only(clip):
    fr, gt = clip
    out = transforms.apply("red-circle@gt", fr, gt=gt)
    H, W = fr.frames.shape[1:3]
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(len(fr)):
        x0, y0, x1, y1 = gt["box"][fr.indices[i]]
        changed = np.any(out.frames[i] != fr.frames[i], axis=-1)
        assert changed.sum() > 50
        # near the face: inside the box grown by 25% of its size on every side
        mx, my = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
        near = (xx >= x0 - mx) & (xx <= x1 + mx) & (yy >= y0 - my) & (yy <= y1 + my)
        assert not np.any(changed & ~near)
        # the drawn pixels are red-dominated
        px = out.frames[i][changed].astype(int)
        assert np.mean(px[:, 0] > px[:, 1] + 40) > 0.5
        # the face centre is untouched (an outline, not a fill)
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        assert not changed[cy - 5:cy + 5, cx - 5:cx + 5].any()


def test_focused_heatmap_stays_inside_the_face(clip):
    fr, gt = clip
    out = transforms.apply("focused-heatmap@gt", fr, gt=gt)
    for i in range(len(fr)):
        changed = np.any(out.frames[i] != fr.frames[i], axis=-1)
        face = transforms.face_mask(changed.shape, gt["box"][fr.indices[i]])
        assert not np.any(changed & ~face)
    assert any(np.any(out.frames[i] != fr.frames[i]) for i in range(len(fr)))


def test_montage_tiles_in_order():
    T, H, W = 4, 32, 32
    x = np.zeros((T, H, W, 3), np.uint8)
    for i in range(T):
        x[i] = 40 * (i + 1)
    out = transforms.apply("video-montage", _frames(x))
    m = out.frames[0]
    assert m.shape == (H, W, 3)
    assert [int(m[8, 8, 0]), int(m[8, 24, 0]), int(m[24, 8, 0]), int(m[24, 24, 0])] == [40, 80, 120, 160]


def test_single_frame_motion_transforms_do_not_fail(clip):
    fr, gt = clip
    one = Frames(frames=fr.frames[:1].copy(), t=fr.t[:1], indices=fr.indices[:1], requested=1, capped=False,
                 source_fps=25.0, n_source=fr.n_source, order=np.arange(1), path=fr.path)
    for n in ("heatmap", "focused-heatmap", "motionflow-arrow", "pointtrack"):
        assert transforms.apply(f"{n}@gt", one, gt=gt).frames.shape == one.frames.shape


def test_default_detector_is_mtcnn_and_finds_the_synthfer_face(clip):
    fr, gt = clip
    assert transforms.parse_name("red-circle") == ("red-circle", "mtcnn")
    face = transforms.locate_face(fr, gt, "mtcnn")
    assert face.source == "mtcnn" and face.found.mean() > 0.5
    g = gt["box"][fr.indices]
    cx_d, cx_g = (face.box[:, 0] + face.box[:, 2]) / 2, (g[:, 0] + g[:, 2]) / 2
    assert np.median(np.abs(cx_d - cx_g)) < 10          # the same face, roughly where the generator put it
    a = transforms.apply("red-circle", fr, gt=gt)        # default: gt ignored, MTCNN used
    b = transforms.apply("red-circle@mtcnn", fr)
    np.testing.assert_array_equal(a.frames, b.frames)


def test_errors_name_the_transform_and_reason(clip):
    fr, gt = clip
    with pytest.raises(TransformError, match=r"'blur'.*unknown name"):
        transforms.apply("blur", fr)
    with pytest.raises(TransformError, match=r"unknown face detector 'dlib'"):
        transforms.apply("red-circle@dlib", fr)
    with pytest.raises(TransformError, match=r"'red-circle@gt'.*ground truth"):
        transforms.apply("red-circle@gt", fr, gt=None)
    bad = _frames(np.zeros((3, 16, 16, 3), np.float32))
    with pytest.raises(TransformError, match=r"'heatmap'.*uint8 \(T, H, W, 3\)"):
        transforms.apply("heatmap", bad)
    gray = _frames(np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(TransformError, match=r"uint8 \(T, H, W, 3\)"):
        transforms.apply("none", gray)
    with pytest.raises(TransformError, match=r"no face found by MTCNN"):
        transforms.apply("red-circle", _frames(np.full((2, 64, 64, 3), 128, np.uint8)))
    short_gt = {**gt, "box": gt["box"][:2], "landmarks": gt["landmarks"][:2]}
    with pytest.raises(TransformError, match=r"ground truth has 2 frames"):
        transforms.apply("pointtrack@gt", fr, gt=short_gt)
    assert issubclass(TransformError, ValueError)


def test_run_classify_records_transform_failures_and_rejects_unknown_names(tmp_path):
    """A clip without a face is a failed row naming the transform; an unknown name fails before any work."""
    from emoprobe import run, store
    from run_helpers import FakeBackend, manifest

    man = manifest(tmp_path, n=2)          # uniform grey clips: no face
    st = store.RunStore(tmp_path / "runs.sqlite")
    df = run.classify(FakeBackend(), man, sampling={"strategy": "count", "count": 3}, transform="red-circle",
                      store=st, progress=False)
    assert (df["status"] == "failed").all()
    assert df["error"].str.contains("TransformError: transform 'red-circle': no face found by MTCNN").all()
    ok = run.classify(FakeBackend(), man, sampling={"strategy": "count", "count": 3}, transform="video-montage",
                      store=st, progress=False)
    assert (ok["status"] == "ok").all() and (ok["n_frames"] == 1).all()
    with pytest.raises(ValueError, match=r"transform 'red_circle'.*unknown name"):
        run.classify(FakeBackend(), man, sampling={"strategy": "count", "count": 3}, transform="red_circle",
                     store=st, progress=False)
