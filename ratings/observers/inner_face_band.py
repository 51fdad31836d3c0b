"""``inner_face_band``: an observer that judges identity by the inner face's luminance
structure in the 8–16 cycles-per-face-width band (the band that carries most of people's
face-identification information), ignoring hair, head outline and background.

It finds the face with its own dlib detector and 5 landmarks (on luminance), aligns it to
a frame 80 px per face width, band-pass filters the luminance to 8–16 cycles per face
width and correlates the two inner-face ovals. A residual misalignment (the landmarks
jitter by a pixel or two) is taken out by the best of small shifts; a quarter of the match
comes from the coarser 2–6 band, which keeps polarity, so a negative image reads as
strongly different. Sees pixels only.
"""

from __future__ import annotations

import numpy as np

from .perception import (
    aligned,
    band_pass,
    check_image,
    correlation,
    ellipse,
    face_geometry,
    logistic,
    luminance_u8,
    shifted,
)

SIZE = 96
PADDING = 0.1
FACE_WIDTH = SIZE / (1 + 2 * PADDING)  # 80 px
BAND = (8.0, 16.0)  # cycles per face width
COARSE_BAND = (2.0, 6.0)
SEARCH = 2  # px each way: under half the 16 c/fw period (5 px)
FINE_WEIGHT = 0.75
# The inner-face oval (brows, eyes, nose, mouth; no hairline, no jaw outline), in face
# widths from the frame's face square (dlib's mean-face frame: jaw to jaw, brows to chin).
_OFF = PADDING * FACE_WIDTH
_MASK = ellipse(SIZE, _OFF + 0.5 * FACE_WIDTH, _OFF + 0.52 * FACE_WIDTH,
                0.40 * FACE_WIDTH, 0.50 * FACE_WIDTH)[SEARCH:-SEARCH, SEARCH:-SEARCH]

# P(same) = logistic(SLOPE * similarity + INTERCEPT), fitted by maximum likelihood on
# natural LFW View-2 pairs (whole photos) with
#   .venv/bin/python -m bench.observers --fit   (100 pairs: 5 + 5 per fold)
SLOPE = 7.637
INTERCEPT = -2.106


def _bands(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y3 = luminance_u8(rgb)
    chip = aligned(y3, face_geometry(y3), SIZE, PADDING)
    return band_pass(chip, *COARSE_BAND, FACE_WIDTH), band_pass(chip, *BAND, FACE_WIDTH)


def similarity(source: np.ndarray, output: np.ndarray) -> float:
    """Best match (−1…1) over small shifts of the inner faces' band-passed luminance:
    ``FINE_WEIGHT`` × the 8–16 c/fw correlation + the rest × the 2–6 c/fw one. The coarse
    term keeps the polarity (a negative can't line up its fine ripples half a period off),
    and a maximum, unlike an argmax, moves only a little when the pixels do. The output is
    also matched mirrored, and the better orientation counts."""
    ca, fa = _bands(check_image(source, "source"))
    cb, fb = _bands(check_image(output, "output"))
    ref_c, ref_f = ca[SEARCH:-SEARCH, SEARCH:-SEARCH], fa[SEARCH:-SEARCH, SEARCH:-SEARCH]
    best = -1.0
    # Either way round: people ignore mirroring (the aligned frame is left-right symmetric,
    # so flipping it is the frame of the mirrored photo).
    for cbm, fbm in ((cb, fb), (cb[:, ::-1], fb[:, ::-1])):
        for dy in range(-SEARCH, SEARCH + 1):
            for dx in range(-SEARCH, SEARCH + 1):
                fine = correlation(ref_f, shifted(fbm, dy, dx, SEARCH), _MASK)
                coarse = correlation(ref_c, shifted(cbm, dy, dx, SEARCH), _MASK)
                best = max(best, FINE_WEIGHT * fine + (1 - FINE_WEIGHT) * coarse)
    return best


def observe(source: np.ndarray, output: np.ndarray, rng: np.random.Generator) -> float:
    """P(same) from the inner-face 8–16 c/fw luminance structure. Deterministic: ``rng`` is
    part of the protocol (the crowd adds each rater's own noise)."""
    return logistic(similarity(source, output), SLOPE, INTERCEPT)
