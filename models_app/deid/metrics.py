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
    t = torch.as_tensor(np.asarray(img) if not isinstance(img, torch.Tensor) else img)
    t = t.detach().to(torch.float64)
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
