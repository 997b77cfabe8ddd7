"""scripts/synthfer_legibility.py --static: the pieces on tiny synthetic inputs (no dataset, no video, no torch)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from emoprobe.synthfer import LANDMARK_NAMES

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "synthfer_legibility.py"


@pytest.fixture(scope="module")
def leg():
    spec = importlib.util.spec_from_file_location("synthfer_legibility", _SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _face() -> np.ndarray:
    """A plausible neutral layout (N, 2) in a 112 px frame: eyes 30 px apart, brows above, mouth below."""
    pos = {
        "eye_left_outer": (35, 45), "eye_left_inner": (49, 45), "eye_right_inner": (63, 45),
        "eye_right_outer": (77, 45), "eye_left_center": (42, 45), "eye_right_center": (70, 45),
        "eye_left_top": (42, 42), "eye_left_bottom": (42, 48), "eye_right_top": (70, 42),
        "eye_right_bottom": (70, 48),
        "brow_left_outer": (33, 36), "brow_left_mid": (41, 34), "brow_left_inner": (49, 36),
        "brow_right_inner": (63, 36), "brow_right_mid": (71, 34), "brow_right_outer": (79, 36),
        "nose_tip": (56, 62), "nose_left_wing": (50, 64), "nose_right_wing": (62, 64),
        "mouth_left_corner": (45, 76), "mouth_right_corner": (67, 76), "upper_lip_top": (56, 73),
        "upper_lip_inner": (56, 76), "lower_lip_inner": (56, 76.5), "lower_lip_bottom": (56, 80),
        "chin": (56, 92),
    }
    return np.array([pos[n] for n in LANDMARK_NAMES], float)


def _gt(frames: list[np.ndarray]) -> dict:
    return {"landmarks": np.stack(frames), "landmark_names": list(LANDMARK_NAMES)}


def test_key_frames_max_and_min_summed_au(leg):
    au = np.array([[0.2, 0.1], [0.9, 0.8], [0.0, 0.05], [0.5, 0.5]])
    assert leg.key_frames(au) == (1, 2)
    # with the emotion AUs the apex follows them (e.g. frame 1 was a blink); the neutral frame does not change
    emo = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.4, 0.3]])
    assert leg.key_frames(au, emo) == (3, 2)
    # ties: the first frame
    assert leg.key_frames(np.zeros((5, 3))) == (0, 0)


def test_crop_face_shape_and_content(leg):
    img = np.zeros((112, 112, 3), np.uint8)
    img[40:70, 30:60] = 255                      # a white patch where the "face" is
    lm = np.array([[30.0, 40.0], [59.0, 69.0]])
    c = leg.crop_face(img, lm)
    assert c.shape == (leg.CROP_PX, leg.CROP_PX) and c.dtype == np.uint8
    assert c[leg.CROP_PX // 2, leg.CROP_PX // 2] == 255   # centre of the crop is inside the patch
    assert c[0, 0] == 0                                   # the 1.3x margin reaches outside it
    # a box partly outside the frame is padded, not an error
    c2 = leg.crop_face(img, np.array([[-10.0, -10.0], [20.0, 20.0]]), out_px=32)
    assert c2.shape == (32, 32)


def test_hog_features_shape_and_normalisation(leg):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    h = leg.hog_features(crops)
    assert h.shape == (3, 900) and h.dtype == np.float32
    assert np.all(h >= 0)
    blocks = h.reshape(3, 25, 36)
    assert np.allclose(np.linalg.norm(blocks, axis=-1), 1.0, atol=1e-3)   # L2-Hys: unit blocks
    assert np.all(leg.hog_features(np.zeros((1, 48, 48), np.uint8)) == 0)  # flat image: no gradient


def test_aligned_displacement_ignores_head_motion(leg):
    f0 = _face()
    th = np.deg2rad(8)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    f1 = (f0 - 56) @ rot.T * 1.1 + 56 + np.array([3.0, -2.0])     # same face, moved, turned, scaled
    d = leg.aligned_displacement(_gt([f0, f1]), apex=1, neutral=0)
    assert d.shape == (len(LANDMARK_NAMES), 2)
    assert np.abs(d).max() < 1e-9


def test_geometry_in_iod_units_and_summary(leg):
    f0 = _face()
    f1 = f0.copy()
    ix = {n: i for i, n in enumerate(LANDMARK_NAMES)}
    iod = 28.0                                   # eye-corner midpoints: x 42 and 70
    for n in leg.REGIONS["brows"]:
        f1[ix[n], 1] -= 0.1 * iod                # brows up by 0.1 IOD
    f1[ix["lower_lip_inner"], 1] += 0.2 * iod    # mouth opens by 0.2 IOD
    g = leg.geometry_features(_gt([f0, f1]), apex=1, neutral=0)
    assert g.shape == (2 * sum(len(v) for v in leg.REGIONS.values()),) == (34,)
    d = leg.aligned_displacement(_gt([f0, f1]), apex=1, neutral=0)
    s = leg.displacement_summary(d[None])
    assert s["brow_raise"][0] == pytest.approx(0.1, abs=1e-6)
    assert s["mouth_opening_change"][0] == pytest.approx(0.2, abs=1e-6)
    assert s["mouth_corner_abs"][0] == pytest.approx(0.0, abs=1e-9)
