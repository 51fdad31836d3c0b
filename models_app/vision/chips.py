"""The geometry shared by the recognition chip and the context crop: one home for it.

Both are dlib ``get_face_chip`` alignments of the same 5 landmarks. With these numbers the
recognition chip is exactly the central 150x150 window of the context crop (dlib maps
landmarks to (padding + m)/(2*padding + 1) * size, i.e. 100 px per unit in both), so the chip
is cut from the crop by slicing, without resampling, and a gradient reaches the crop.

No heavy imports (numpy only): every engine imports this.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# The context crop: same alignment, three face-widths wide, so hair, ears, clothes and
# background show.
CONTEXT_SIZE = 300
CONTEXT_PADDING = 1.0
CHIP_OFFSET = (CONTEXT_SIZE - CHIP_SIZE) // 2

_Image = TypeVar("_Image")
_WINDOW = slice(CHIP_OFFSET, CHIP_OFFSET + CHIP_SIZE)


def central_chip(context: _Image) -> _Image:
    """The recognition chip of context crops, as a view: numpy arrays are channels-last
    (..., 300, 300, C), as images are decoded; torch tensors are channels-first
    (..., C, 300, 300), as networks take them."""
    if isinstance(context, np.ndarray):
        return context[..., _WINDOW, _WINDOW, :]
    return context[..., _WINDOW, _WINDOW]  # type: ignore[index]
