"""The perceptual battery (models_app.vision.battery): its image changes do what they say,
and its verdicts follow the judge: a judge that reads luminance layout passes the invariance
set, a pixel-exact judge fails it by name, a judge that ignores everything fails the effects.
Synthetic images, no data needed."""

from __future__ import annotations

import numpy as np
import pytest

from models_app.vision import battery as B


def _photo(seed: int) -> np.ndarray:
    """A smooth random 300x300 'photo' (low-frequency colour fields, like a face crop)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = np.stack([gaussian_filter(rng.normal(size=(300, 300)), 12) for _ in range(3)], -1)
    x = (x - x.min()) / (np.ptp(x) + 1e-9)
    return np.clip(40 + 170 * x, 0, 255).astype(np.uint8)


def _cases(n: int = 6) -> list[B.BatteryCase]:
    photos = [_photo(i) for i in range(n + 1)]
    return [B.BatteryCase(photos[i], B.add_noise(photos[i], np.random.default_rng(i), 2),
                          photos[i + 1]) for i in range(n)]


def _luma(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ B.LUMA


def layout_judge(sources, outputs) -> np.ndarray:
    """P(same) from the correlation of coarse, contrast-normalised luminance, mirror-free
    (left and right halves pooled): ignores hue, noise, JPEG, shifts, brightness, contrast."""
    def feat(x):
        y = _luma(x).reshape(30, 10, 30, 10).mean((1, 3))
        y = (y + y[:, ::-1]) / 2
        return (y - y.mean()) / (y.std() + 1e-9)

    out = []
    for a, b in zip(sources, outputs, strict=True):
        r = float(np.mean(feat(a) * feat(b)))
        out.append(1 / (1 + np.exp(-8 * (r - 0.5))))
    return np.array(out)


def pixel_judge(sources, outputs) -> np.ndarray:
    """P(same) from exact pixels: any change at all reads as different."""
    return np.array([np.exp(-np.abs(a.astype(float) - b).mean() / 2)
                     for a, b in zip(sources, outputs, strict=True)])


def test_changes_keep_or_change_what_they_say():
    x = _photo(0)
    assert np.abs(_luma(B.recolour(x, 120)) - _luma(x)).max() <= 1.5  # luminance kept
    assert not np.array_equal(B.recolour(x, 120), x)
    assert np.abs(B.add_noise(x, np.random.default_rng(0), 4).astype(int) - x).max() <= 4
    assert np.array_equal(B.mirror(B.mirror(x)), x)
    assert B.brightness(x, 1.1).mean() > x.mean() * 1.05
    assert B.contrast(x, 1.1).std() > x.std() * 1.05
    assert np.array_equal(B.shift(x, 2, 2)[2:, 2:], x[:-2, :-2])
    alone = B.face_alone(x)
    assert (alone[0, 0] == 0).all() and np.array_equal(alone[158, 150], x[158, 150])


def test_inner_face_illusion_keeps_donor_outside_and_face_inside():
    face, donor = _photo(1), _photo(2)
    out = B.inner_face_into(face, donor)
    assert np.array_equal(out[:20], donor[:20])  # hair and surroundings are the donor's
    inner = B.ellipse_mask((300, 300), (150, 160, 25, 35)) > 0.5  # well inside the blend
    c_face = np.corrcoef(_luma(out)[inner], _luma(face)[inner])[0, 1]
    c_donor = np.corrcoef(_luma(out)[inner], _luma(donor)[inner])[0, 1]
    assert c_face > 0.95 and c_face > c_donor
    with pytest.raises(ValueError, match="same size"):
        B.inner_face_into(face, donor[:200])


def test_layout_judge_passes_invariance_and_pixel_judge_fails_by_name():
    cases = _cases()
    good = B.run_battery(layout_judge, cases)
    assert good["invariance_passed"], good["invariance"]
    assert good["effects"]["negation"]["mean_drop"] > 0.3
    bad = B.run_battery(pixel_judge, cases)
    assert not bad["passed"] and not bad["invariance_passed"]
    assert {"noise_4_levels", "mirror", "brightness_+10%"} <= set(bad["failed"])
    assert bad["invariance"]["mirror"]["mean_abs_change"] > B.TOLERANCE


def test_a_judge_that_sees_nothing_fails_the_effects_not_the_invariance():
    res = B.run_battery(lambda s, o: np.full(len(s), 0.7), _cases(3))
    assert res["invariance_passed"] and not res["order_passed"]
    assert set(res["failed"]) == {"negation", "inner_face_in_other_head"}
    assert res["n_faces"] == 3 and res["baseline_p_same"] == 0.7


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one face"):
        B.run_battery(layout_judge, [])
    with pytest.raises(ValueError, match="score returned"):
        B.run_battery(lambda s, o: np.zeros(1), _cases(2))
    with pytest.raises(ValueError, match="score returned"):
        B.run_battery(lambda s, o: np.full(len(s), np.nan), _cases(2))
