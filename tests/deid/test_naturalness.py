"""The naturalness figure: a real face photo's colour lies inside LFW's 1st–99th
percentiles; a green face, a blue one and a flat posterised one do not, and say which
figure is out. CIELAB matches the standard's reference values."""

from __future__ import annotations

import numpy as np

from models_app.deid.metrics import face_colour, naturalness, srgb_to_lab
from models_app.vision.battery import recolour


def test_lab_reference_values():
    lab = srgb_to_lab(np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], np.uint8))[0]
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.05)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=0.05)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, D65


def test_real_face_is_natural_and_recolourings_are_not(portrait_source):
    ctx = portrait_source.context
    real = naturalness(ctx)
    assert real["natural"] is True and real["outside"] == [], real
    green = naturalness(recolour(ctx, -90))  # same luminance, a green face
    assert green["natural"] is False and "a_mean" in green["outside"] and green["a_mean"] < 0
    blue = naturalness(recolour(ctx, 120))  # a blue-violet face
    assert blue["natural"] is False and "b_mean" in blue["outside"] and blue["b_mean"] < 0
    flat = ctx.copy()
    flat[...] = np.array(ctx.reshape(-1, 3).mean(0), np.uint8)  # one colour: no shading at all
    out = naturalness(flat)
    assert out["natural"] is False and "l_spread" in out["outside"]
    assert face_colour(ctx)["l_spread"] > face_colour(flat)["l_spread"]
