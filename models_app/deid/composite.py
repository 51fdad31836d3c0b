"""Paste a (modified) context crop back into the full photo.

``faces.context_crop`` is ``dlib.get_face_chip`` with size 300, padding 1.0: a similarity
transform of the photo. dlib builds it (``get_mapping_to_chip``) from the chip details — the
rect corners rotated by ``angle`` about the rect centre map to the chip corners (0,0),
(cols-1,0), (cols-1,rows-1). We rebuild that affine map, then for every photo pixel sample the
crop at the mapped position and blend with a mask that fades out towards the crop border.

Two blend shapes (``blend``): ``rectangle`` fades the whole crop out over its border (any
change of the surroundings shows as a soft-edged square in the photo); ``head`` (the loop's
default) confines the change to a soft, head-shaped oval (face, hair and outline) that is
zero well inside the crop, so the crop's rectangle never shows. :func:`seam_figure` measures
what the blend leaves: gradient energy along the crop border and along the blend's edge in
the saved photo, against the unchanged photo.
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


def aligned_backdrop(
    donor_photo: np.ndarray,
    donor_box: tuple[int, int, int, int] | list[int],
    donor_landmarks: list[tuple[int, int]] | list[list[int]],
    photo_shape: tuple[int, ...],
    box: tuple[int, int, int, int] | list[int],
    landmarks: list[tuple[int, int]] | list[list[int]],
) -> np.ndarray:
    """The donor's photo in the source photo's frame (H,W,3 uint8 of ``photo_shape``): each
    pixel takes the donor pixel at the same place of the two aligned context crops (the
    donor's face where the source's face is), the donor's edge pixels repeated beyond its
    border. An output that takes the donor's surroundings is composited onto this, so no
    rectangle of the source's own surroundings is left around the crop."""
    h, w = photo_shape[:2]
    m_s = np.vstack([context_affine(box, landmarks), [0.0, 0.0, 1.0]])
    m_d = np.vstack([context_affine(donor_box, donor_landmarks), [0.0, 0.0, 1.0]])
    t = np.linalg.inv(m_d) @ m_s  # source photo (x, y) -> donor photo (x, y)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    x = t[0, 0] * xs + t[0, 1] * ys + t[0, 2]
    y = t[1, 0] * xs + t[1, 1] * ys + t[1, 2]
    dh, dw = donor_photo.shape[:2]
    grid = np.stack([x / (dw - 1) * 2 - 1, y / (dh - 1) * 2 - 1], -1).astype(np.float32)
    # torch.tensor copies: a read-only photo (an npz or a cached decode) is fine as it is.
    img = torch.tensor(np.asarray(donor_photo), dtype=torch.float32).permute(2, 0, 1)[None]
    out = F.grid_sample(img, torch.from_numpy(grid)[None], mode="bilinear",
                        padding_mode="border", align_corners=True)
    return np.clip(np.rint(out[0].permute(1, 2, 0).numpy()), 0, 255).astype(np.uint8)


def border_mask(size: int = CONTEXT_SIZE, feather: float = 16.0) -> np.ndarray:
    """(size,size) float mask, 1 inside and fading linearly to 0 over ``feather`` px at the
    crop border, so the pasted crop has no seam where it meets the untouched photo."""
    t = np.arange(size, dtype=np.float64) + 0.5
    edge = np.minimum(t, size - t)
    ramp = np.clip(edge / feather, 0.0, 1.0)
    return np.minimum(ramp[:, None], ramp[None, :])


# The head in the 300 context crop (faces.context_crop: the face's unit square at [100, 200]):
# an oval around face, hair and ears, centre (150, 140), half-axes 118 x 124 px (it ends
# 16 px inside the crop: the rectangle blend's feather band is never touched); its weight
# ramps from 1 to 0 over the outer HEAD_FEATHER px (a raised cosine: no kink, no step).
HEAD_OVAL = (150.0, 140.0, 118.0, 124.0)
HEAD_FEATHER = 40.0
BLENDS = ("head", "rectangle")


def head_mask(
    size: int = CONTEXT_SIZE,
    oval: tuple[float, float, float, float] = HEAD_OVAL,
    feather: float = HEAD_FEATHER,
) -> np.ndarray:
    """(size,size) float head-shaped blend weight: 1 over the head, a raised-cosine ramp to
    exactly 0 at the oval's edge (``oval`` and ``feather`` in the 300 frame)."""
    k = size / 300.0
    t = (np.arange(size, dtype=np.float64) + 0.5) / k
    cx, cy, ax, ay = oval
    r = np.sqrt(((t[None, :] - cx) / ax) ** 2 + ((t[:, None] - cy) / ay) ** 2)
    ramp = np.clip((1.0 - r) * (0.5 * (ax + ay)) / feather, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * ramp)


def blend_mask(blend: str, size: int = CONTEXT_SIZE, feather: float = 16.0) -> np.ndarray:
    """The crop's weight in the photo for a blend shape (:data:`BLENDS`)."""
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; one of {list(BLENDS)}")
    m = border_mask(size, feather)
    return m * head_mask(size) if blend == "head" else m


def composite(
    photo: np.ndarray,
    context_out: np.ndarray,
    box: tuple[int, int, int, int] | list[int],
    landmarks: list[tuple[int, int]] | list[list[int]],
    feather: float = 16.0,
    context_src: np.ndarray | None = None,
    blend: str = "rectangle",
) -> np.ndarray:
    """The photo (H,W,3 uint8) with the modified context crop (300,300,3 uint8) pasted back.

    With ``context_src`` (the unmodified crop) only the change ``out - src`` is warped back
    and added: a photo larger than the crop keeps its own resolution wherever the loop did
    not change it (pasting the 300 px crop itself would blur it). Without it, the crop
    replaces the photo. Either way pixels outside the crop's footprint stay as they were;
    with ``blend="head"`` so do pixels outside the head-shaped oval (:func:`head_mask`).
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
    weight = blend_mask(blend, size, feather)
    src = np.concatenate([layer, weight[..., None].astype(np.float32)], axis=-1)
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
    blend: str = "rectangle",
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
    return (inside * blend_mask(blend, size, feather)).astype(np.float32)


def _luma_gradient_energy(rgb: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """(H,W) squared gradient magnitude of the luminance (forward differences) after a
    Gaussian blur of ``sigma`` px: a seam is a low-frequency edge, and the photo's own fine
    texture (and noise) would otherwise hide it."""
    from scipy.ndimage import gaussian_filter

    y = gaussian_filter(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]), sigma)
    gx = np.zeros_like(y)
    gy = np.zeros_like(y)
    gx[:, :-1] = np.diff(y, axis=1)
    gy[:-1, :] = np.diff(y, axis=0)
    return gx**2 + gy**2


def seam_figure(
    photo_src: np.ndarray,
    photo_out: np.ndarray,
    box: tuple[int, int, int, int] | list[int],
    landmarks: list[tuple[int, int]] | list[list[int]],
    blend: str = "head",
    size: int = CONTEXT_SIZE,
    feather: float = 16.0,
    band_px: float | None = None,
) -> dict[str, object]:
    """Gradient energy (mean squared gradient of the luminance, blurred by 2 px: seams are
    low-frequency edges) of the saved photo against the unchanged one, where a paste would
    show:

    * ``border``: the photo pixels within ``band_px`` crop pixels of the crop's rectangle
      (default: the rectangle blend's feather, where a pasted crop shows as a square; None
      where that rectangle lies outside the photo);
    * ``blend_edge``: the band where the blend weight is strictly between 0.05 and 0.95.

    Each is ``{"out", "src", "ratio"}``. ``passes``: the border's energy is no higher than
    the unchanged photo's (ratio ≤ 1.001: rounding), or there is no border in the photo."""
    h, w = photo_src.shape[:2]
    m = context_affine(box, landmarks, size=size)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    col = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    row = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    inside = (col >= 0) & (col <= size - 1) & (row >= 0) & (row <= size - 1)
    edge = np.minimum.reduce([col, row, size - 1 - col, size - 1 - row])
    border = inside & (edge < (feather if band_px is None else band_px))
    weight = blend_mask(blend, size, feather)
    t = torch.from_numpy(weight.astype(np.float32))[None, None]
    grid = np.stack([col / (size - 1) * 2 - 1, row / (size - 1) * 2 - 1], -1)
    g = torch.from_numpy(grid.astype(np.float32))[None]
    alpha = F.grid_sample(t, g, mode="bilinear", padding_mode="zeros", align_corners=True)
    alpha = alpha[0, 0].numpy()
    band = (alpha > 0.05) & (alpha < 0.95)
    e_src, e_out = _luma_gradient_energy(photo_src), _luma_gradient_energy(photo_out)

    def figure(where: np.ndarray) -> dict[str, float] | None:
        if not where.any():
            return None
        a, b = float(e_out[where].mean()), float(e_src[where].mean())
        return {"out": round(a, 3), "src": round(b, 3), "ratio": round(a / max(b, 1e-9), 4)}

    fb, fe = figure(border), figure(band)
    return {"blend": blend, "border": fb, "blend_edge": fe,
            "passes": fb is None or fb["ratio"] <= 1.001}
