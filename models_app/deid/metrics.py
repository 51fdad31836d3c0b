"""Image change metrics between a source and its de-identified output (pure numpy/torch).

SSIM follows Wang et al. (2004) as scikit-image computes it with ``gaussian_weights=True``
(11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, population covariances), per RGB
channel, averaged over the valid window positions and the channels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_nchw(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        t = img.detach().to(torch.float64)
    else:  # a float64 copy: read-only arrays (decoded files, views) are fine
        t = torch.from_numpy(np.array(img, dtype=np.float64))
    if t.dim() == 2:
        t = t[None, None]
    elif t.dim() == 3:  # HxWxC
        t = t.permute(2, 0, 1)[None]
    elif t.dim() != 4:
        raise ValueError(f"expected HxW, HxWxC or NCHW, got shape {tuple(t.shape)}")
    return t


def ssim(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    data_range: float = 255.0,
    sigma: float = 1.5,
    win: int = 11,
) -> float:
    """Mean SSIM of two images (HxW, HxWxC uint8/float, or NCHW tensors) in [-1, 1]."""
    x, y = _as_nchw(a), _as_nchw(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    c = x.shape[1]
    t = torch.arange(win, dtype=torch.float64) - (win - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(c, 1, win, win)

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, k, groups=c)

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def mean_abs_change(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Mean absolute pixel difference in grey levels (0..255 images)."""
    x, y = _as_nchw(a), _as_nchw(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    return float((x - y).abs().mean())


# --- Naturalness: is the face's colour one a photograph of a person has? -----------------

_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65 = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65; L* 0..100) of an HxWx3 uint8 sRGB image (the standard formulas)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _SRGB_TO_XYZ.T / _D65
    e = 216 / 24389
    f = np.where(xyz > e, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def face_colour(context: np.ndarray) -> dict[str, float]:
    """The face oval's mean a* and b* and its L* spread (standard deviation) in an aligned
    300x300 context crop (the oval of :mod:`models_app.vision.battery`): the loop's own
    figure (:func:`face_colour_torch`, in float64), so a stored figure and the loop's gate
    cannot disagree."""
    t = torch.from_numpy(np.ascontiguousarray(context)).permute(2, 0, 1)[None].double()
    return dict(zip(NATURAL_KEYS, face_colour_torch(t)[0].tolist(), strict=True))


# The 1st and 99th percentiles of face_colour over 800 LFW View-2 images, spread over all
# folds (``python -m bench.perception --naturalness 800``, 2026-12-03): a face outside them
# on any figure is not a colour a photographed face has (a green or magenta face; a flat,
# posterised one). LFW includes some greyscale photos, hence a* and b* down near 0.
NATURAL_FACE: dict[str, tuple[float, float]] = {
    "a_mean": (1.35, 27.3),
    "b_mean": (3.75, 34.8),
    "l_spread": (7.68, 25.31),
}


def naturalness(context: np.ndarray) -> dict[str, object]:
    """:func:`face_colour` and whether each figure lies in LFW's 1st–99th percentiles
    (``natural``: all do; ``outside``: the names of those that do not)."""
    stats = face_colour(context)
    outside = [k for k, (lo, hi) in NATURAL_FACE.items() if not lo <= stats[k] <= hi]
    return {**{k: round(v, 3) for k, v in stats.items()}, "natural": not outside,
            "outside": outside}


# --- CIELAB in torch (D65, sRGB), differentiable --------------------------------------------

_M = torch.tensor(_SRGB_TO_XYZ, dtype=torch.float64)
_D65_T = torch.tensor(_D65, dtype=torch.float64)
_EPS = 216 / 24389
_KAPPA = 24389 / 27
_M_INV = torch.linalg.inv(_M) * _D65_T[None, :]  # XYZ/white -> linear sRGB, computed once


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) sRGB in [0,255] -> CIELAB (L* 0..100)."""
    c = (rgb / 255.0).clamp(0.0, 1.0)
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).pow(2.4))
    m = (_M / _D65_T[:, None]).to(rgb)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    f = torch.where(xyz > _EPS, xyz.clamp_min(1e-8).pow(1 / 3), (_KAPPA * xyz + 16) / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]),
                        200 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) CIELAB -> sRGB in [0,255] (clamped to the cube)."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    f3 = f.pow(3)
    xyz = torch.where(f3 > _EPS, f3, (116 * f - 16) / _KAPPA)
    lin = torch.einsum("ij,njhw->nihw", _M_INV.to(lab), xyz).clamp(1e-7, 1.0)
    srgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.pow(1 / 2.4) - 0.055)
    return srgb * 255.0


# --- Naturalness in the loop: the same figures, differentiable ------------------------------

NATURAL_KEYS: tuple[str, ...] = ("a_mean", "b_mean", "l_spread")
_FACE_PIXELS: dict[tuple[int, int], torch.Tensor] = {}


def _face_pixels(h: int, w: int) -> torch.Tensor:
    """Flat indices of the face oval's pixels (:func:`face_colour`'s), cached per size."""
    idx = _FACE_PIXELS.get((h, w))
    if idx is None:
        from models_app.vision.battery import FACE_ELLIPSE, ellipse_mask

        keep = ellipse_mask((h, w), FACE_ELLIPSE) > 0.5
        idx = _FACE_PIXELS[(h, w)] = torch.from_numpy(np.flatnonzero(keep))
    return idx


def face_colour_torch(context: torch.Tensor) -> torch.Tensor:
    """:func:`face_colour` of (N,3,H,W) crops in [0,255], differentiable: (N,3) columns in
    :data:`NATURAL_KEYS` order (a* mean, b* mean, L* spread). Only the oval's pixels are
    converted, so this costs a fraction of a full-crop conversion."""
    n, _, h, w = context.shape
    px = context.flatten(2).index_select(2, _face_pixels(h, w).to(context.device))
    lab = rgb_to_lab(px[..., None])[..., 0]  # (N,3,M)
    # The spread as numpy's population std; the epsilon keeps the gradient finite on a flat face.
    spread = (lab[:, 0].var(dim=1, correction=0) + 1e-6).sqrt()
    return torch.stack([lab[:, 1].mean(1), lab[:, 2].mean(1), spread], 1)


def natural_bounds(source_stats: torch.Tensor, inset: float = 0.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per face (N,3) low and high bounds: LFW's range (:data:`NATURAL_FACE`) pulled in by
    ``inset``, widened to take in the source's own value, so a change is never asked to be
    more natural than the photo it starts from (a greyscale photo stays allowed)."""
    lo = torch.tensor([NATURAL_FACE[k][0] for k in NATURAL_KEYS]).to(source_stats) + inset
    hi = torch.tensor([NATURAL_FACE[k][1] for k in NATURAL_KEYS]).to(source_stats) - inset
    return torch.minimum(lo, source_stats), torch.maximum(hi, source_stats)


def natural_excess(stats: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(N,) how far (in CIELAB units, summed over the figures) each face lies outside its
    bounds; 0 inside."""
    return (F.relu(lo - stats) + F.relu(stats - hi)).sum(1)
