"""Aligned face chips for the vision tests (not a test module).

``packaged_chips`` needs nothing outside the installed packages (a real portrait shipped with
matplotlib, plus procedural images), so the equality tests always run in CI; ``lfw_chips``
uses ../shared/data and the tests that need it skip when it is absent.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from tests.helpers import LFW_DIR, require_lfw

# Six different people, one clear frontal face each.
LFW_IMAGES = (
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "AJ_Lamas/AJ_Lamas_0001.jpg",
    "Abel_Pacheco/Abel_Pacheco_0001.jpg",
    "Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg",
    "Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg",
)


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def portrait_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _chip(rgb: np.ndarray) -> np.ndarray:
    from models_app.vision import faces

    face = faces.detect_and_align(rgb)
    assert face is not None, "no face found in a test image"
    return face.chip


def procedural_chip(seed: int) -> np.ndarray:
    """A smooth random colour image: exercises every pixel value path without a face."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=(10, 10, 3))
    img = np.kron(low, np.ones((15, 15, 1)))
    img += rng.normal(0, 20, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def packaged_chips() -> np.ndarray:
    """4 chips of a real face (portrait, mirrored, rotated, darker) and 2 procedural ones."""
    from PIL import Image, ImageEnhance

    path = portrait_path()
    if not path.exists():  # matplotlib ships it; fail loudly rather than skip
        raise FileNotFoundError(path)
    with Image.open(path) as im:
        im = im.convert("RGB")
        variants = [
            im,
            im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            im.rotate(12, resample=Image.Resampling.BILINEAR),
            ImageEnhance.Brightness(im).enhance(0.6),
        ]
        chips = [_chip(np.asarray(v)) for v in variants]
    chips += [procedural_chip(1), procedural_chip(2)]
    return np.stack(chips)


@lru_cache(maxsize=1)
def _lfw_chips() -> np.ndarray:
    return np.stack([_chip(_rgb(LFW_DIR / p)) for p in LFW_IMAGES])


def lfw_chips() -> np.ndarray:
    require_lfw()
    return _lfw_chips()
