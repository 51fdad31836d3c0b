"""Paste a (modified) context crop back into the full photo.

``faces.context_crop`` is ``dlib.get_face_chip`` with size 300, padding 1.0: a similarity
transform of the photo. dlib builds it (``get_mapping_to_chip``) from the chip details — the
rect corners rotated by ``angle`` about the rect centre map to the chip corners (0,0),
(cols-1,0), (cols-1,rows-1). We rebuild that affine map, then for every photo pixel sample the
crop at the mapped position and blend with a mask that fades out towards the crop border.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models_app.vision.chips import CONTEXT_PADDING, CONTEXT_SIZE
from models_app.vision.faces import stored_shape


def context_affine(
    box: tuple[int, int, int, int] | list[int],
    landmarks: list[tuple[int, int]] | list[list[int]],
    size: int = CONTEXT_SIZE,
    padding: float = CONTEXT_PADDING,
) -> np.ndarray:
    """2x3 affine matrix mapping photo (x, y) to context-crop (col, row) coordinates."""
    import dlib

    d = dlib.get_face_chip_details(stored_shape(box, landmarks), size=size, padding=padding)
    r = d.rect
    cx, cy = (r.left() + r.right()) / 2.0, (r.top() + r.bottom()) / 2.0
    c, s = np.cos(d.angle), np.sin(d.angle)

    def rot(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return c * dx - s * dy + cx, s * dx + c * dy + cy

    src = np.array([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())])
    dst = np.array([[0.0, 0.0], [d.cols - 1.0, 0.0], [d.cols - 1.0, d.rows - 1.0]])
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T  # (2,3): [col, row] = M @ [x, y, 1]


def border_mask(size: int = CONTEXT_SIZE, feather: float = 16.0) -> np.ndarray:
    """(size,size) float mask, 1 inside and fading linearly to 0 over ``feather`` px at the
    crop border, so the pasted crop has no seam where it meets the untouched photo."""
    t = np.arange(size, dtype=np.float64) + 0.5
    edge = np.minimum(t, size - t)
    ramp = np.clip(edge / feather, 0.0, 1.0)
    return np.minimum(ramp[:, None], ramp[None, :])


def composite(
    photo: np.ndarray,
    context_out: np.ndarray,
    box: tuple[int, int, int, int] | list[int],
    landmarks: list[tuple[int, int]] | list[list[int]],
    feather: float = 16.0,
    context_src: np.ndarray | None = None,
) -> np.ndarray:
    """The photo (H,W,3 uint8) with the modified context crop (300,300,3 uint8) pasted back.

    With ``context_src`` (the unmodified crop) only the change ``out - src`` is warped back
    and added: a photo larger than the crop keeps its own resolution wherever the loop did
    not change it (pasting the 300 px crop itself would blur it). Without it, the crop
    replaces the photo. Either way pixels outside the crop's footprint stay as they were.
    """
    h, w = photo.shape[:2]
    size = context_out.shape[0]
    m = context_affine(box, landmarks, size=size)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    col = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    row = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    # grid_sample with align_corners=True: -1 is the centre of pixel 0, +1 of pixel size-1.
    grid = np.stack([col / (size - 1) * 2 - 1, row / (size - 1) * 2 - 1], -1)
    layer = context_out.astype(np.float32)
    if context_src is not None:
        layer = layer - context_src.astype(np.float32)
    src = np.concatenate([layer, border_mask(size, feather)[..., None].astype(np.float32)], axis=-1)
    t = torch.from_numpy(src).permute(2, 0, 1)[None]
    g = torch.from_numpy(grid.astype(np.float32))[None]
    out = F.grid_sample(t, g, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out[0].permute(1, 2, 0).numpy()
    alpha = out[..., 3:4]
    if context_src is not None:
        blended = photo.astype(np.float32) + alpha * out[..., :3]
    else:
        blended = alpha * out[..., :3] + (1.0 - alpha) * photo.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def change_mask(
    photo_shape: tuple[int, ...],
    box: tuple[int, int, int, int] | list[int],
    landmarks: list[tuple[int, int]] | list[list[int]],
    size: int = CONTEXT_SIZE,
    feather: float = 16.0,
) -> np.ndarray:
    """(size,size) float32 weight of each context-crop pixel in the saved photo: the border
    feather :func:`composite` blends with, times 0 where the crop lies outside the photo
    (``get_face_chip`` fills black there, before and after). The loop applies its changes
    through this mask, so what it scores is what survives saving and re-cropping."""
    h, w = photo_shape[:2]
    m = np.vstack([context_affine(box, landmarks, size=size), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)  # context (col, row) -> photo (x, y)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    x = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
    y = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
    # 1 inside, fading to 0 over a pixel at the photo's edge (bilinear sampling there).
    inside = np.clip(np.minimum.reduce([x + 0.5, y + 0.5, w - 0.5 - x, h - 0.5 - y]), 0.0, 1.0)
    return (inside * border_mask(size, feather)).astype(np.float32)
