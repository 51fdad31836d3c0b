"""``external_features``: an observer that judges identity by what lies outside the inner
face: hair, the head's outline and the luminance layout of the surroundings (the cues
people use for unfamiliar faces, and all that is left when the face is hidden).

It finds the face with its own dlib detector and 5 landmarks (on luminance), maps the
photo to a frame three face widths wide around it, blanks the inner-face oval, and compares
(1) the coarse luminance layout (blurred luminance) of everything outside the oval and
(2) the signed luminance edges of a ring around the face (hairline, head outline,
shoulders). Only pixels that come from inside both photos count. Signed comparisons: a
negative image reads as strongly different. Sees pixels only.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion

from .perception import (
    aligned,
    blur,
    check_image,
    correlation,
    ellipse,
    face_geometry,
    logistic,
    luminance_u8,
)

SIZE = 72
PADDING = 1.0
FACE_WIDTH = SIZE / (1 + 2 * PADDING)  # 24 px; the frame is 3 face widths
_C = SIZE / 2
# The inner face (kept out): an oval of the face square's brows-to-chin height.
_FACE = ellipse(SIZE, _C, _C + 0.02 * FACE_WIDTH, 0.42 * FACE_WIDTH, 0.58 * FACE_WIDTH)
# The ring where hairline, head outline, ears and shoulders are.
_RING = ellipse(SIZE, _C, _C, 1.05 * FACE_WIDTH, 1.15 * FACE_WIDTH) & ~_FACE
LAYOUT_SIGMA = 1.5  # px: about 1/16 face width, a coarse luminance map
EDGE_SIGMA = 1.0
LAYOUT_WEIGHT = 0.5

# P(same) = logistic(SLOPE * similarity + INTERCEPT), fitted by maximum likelihood on
# natural LFW View-2 pairs (whole photos) with
#   .venv/bin/python -m bench.observers --fit   (100 pairs: 5 + 5 per fold)
SLOPE = 2.384
INTERCEPT = -0.480


def _frame(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luminance in the 3-face-width frame and where that frame lies inside the photo."""
    y3 = luminance_u8(rgb)
    g = face_geometry(y3)
    lum = aligned(y3, g, SIZE, PADDING)
    inside = aligned(np.full_like(y3, 255), g, SIZE, PADDING) > 254
    # Off the photo's border, so the blur and the edges never see the black padding.
    return lum, binary_erosion(inside, iterations=3)


def similarity(source: np.ndarray, output: np.ndarray) -> float:
    """Mean of the layout and outline correlations (−1…1) outside the inner face, the
    output taken as it is or mirrored, whichever matches better."""
    la, ia = _frame(check_image(source, "source"))
    lb, ib = _frame(check_image(output, "output"))
    # Either way round: people ignore mirroring (the frame is centred on the face, so its
    # flip is the frame of the mirrored photo); the better orientation counts.
    return max(_similarity(la, ia, lb, ib), _similarity(la, ia, lb[:, ::-1], ib[:, ::-1]))


def _similarity(la: np.ndarray, ia: np.ndarray, lb: np.ndarray, ib: np.ndarray) -> float:
    inside = ia & ib
    layout = correlation(blur(la, LAYOUT_SIGMA), blur(lb, LAYOUT_SIGMA), inside & ~_FACE)
    ea = np.gradient(blur(la, EDGE_SIGMA))
    eb = np.gradient(blur(np.ascontiguousarray(lb), EDGE_SIGMA))
    ring = np.stack([inside & _RING] * 2)
    outline = correlation(np.stack(ea), np.stack(eb), ring)
    return LAYOUT_WEIGHT * layout + (1 - LAYOUT_WEIGHT) * outline


def observe(source: np.ndarray, output: np.ndarray, rng: np.random.Generator) -> float:
    """P(same) from hair, head outline and the surroundings' luminance layout.
    Deterministic: ``rng`` is part of the protocol (the crowd adds each rater's noise)."""
    return logistic(similarity(source, output), SLOPE, INTERCEPT)
