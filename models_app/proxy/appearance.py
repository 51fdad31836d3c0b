"""The proxy's appearance branch: what a person sees besides the face itself.

:class:`AppearanceEncoder` works on the context crop average-pooled to 75x75 (low
frequencies): a small trainable CNN plus hand-made differentiable descriptors (per-region
colour means, standard deviations and soft histograms for face centre, hair band, sides,
clothes and background ring; a 5x5 low-pass image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ProxyConfig

# Regions of the context crop, (top, bottom, left, right) in 300x300 pixels. With padding 1.0
# the landmark template's unit square (eyes, nose, mouth) maps to [100, 200] in both axes.
REGIONS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "face": ((100, 200, 100, 200),),
    "hair": ((30, 100, 80, 220),),
    "sides": ((100, 220, 50, 100), (100, 220, 200, 250)),
    "clothes": ((240, 300, 50, 250),),
    "background": ((0, 30, 0, 300), (30, 200, 0, 50), (30, 200, 250, 300)),
}


def _region_masks(size: int, pool: int) -> torch.Tensor:
    """(R, size, size) masks, each summing to 1 (means are weighted sums)."""
    masks = torch.zeros(len(REGIONS), size, size, dtype=torch.float64)
    for r, boxes in enumerate(REGIONS.values()):
        for t, b, lft, rgt in boxes:
            masks[r, t // pool : b // pool, lft // pool : rgt // pool] = 1.0
    return (masks / masks.sum(dim=(1, 2), keepdim=True)).float()


def _opponent(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0,1] -> (luminance, red-green, yellow-blue), roughly in [0,1] each."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack(
        [(r + g + b) / 3.0, (r - g) / 2.0 + 0.5, (r + g - 2.0 * b) / 4.0 + 0.5], dim=1
    )


class AppearanceEncoder(nn.Module):
    """Trainable CNN embedding + fixed descriptors of the 75x75 pooled context crop."""

    def __init__(self, cfg: ProxyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin, size = 3, cfg.small_size
        for i, c in enumerate(cfg.cnn_channels):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(cin, c, k, stride=2, padding=k // 2), nn.ReLU()]
            cin, size = c, (size + 2 * (k // 2) - k) // 2 + 1
        self.cnn = nn.Sequential(*layers)
        # Flatten, not global pooling: where a colour is (hair vs clothes) matters.
        self.embed = nn.Linear(cin * size * size, cfg.appearance_dim)
        masks = _region_masks(cfg.small_size, cfg.pool)
        self.register_buffer("masks", masks.flatten(1).T.contiguous())  # (s*s, R)
        centres = (torch.arange(cfg.hist_bins, dtype=torch.float32) + 0.5) / cfg.hist_bins
        self.register_buffer("bin_centres", centres)

    @property
    def n_regions(self) -> int:
        return self.masks.shape[1]

    def descriptor_split(self) -> tuple[int, int, int]:
        """Sizes of (region stats, region histograms, low-pass image) in a descriptor."""
        r = self.n_regions
        return 6 * r, 3 * self.cfg.hist_bins * r, 3 * self.cfg.lowpass**2

    def forward(self, small: torch.Tensor) -> torch.Tensor:
        """(N, appearance_dim) learned embedding."""
        return self.embed(self.cnn((small / 255.0 - 0.5) / 0.25).flatten(1))

    def descriptors(self, small: torch.Tensor) -> torch.Tensor:
        """(N, descriptor_dim): per-region colour mean/std and soft histograms (opponent
        colours), and the low-pass image. Fixed (no parameters), differentiable."""
        n, bins = small.shape[0], self.cfg.hist_bins
        x = small / 255.0
        opp = _opponent(x).flatten(2)  # (N, 3, s*s)
        m = self.masks
        mean = opp @ m  # (N, 3, R): masks sum to 1, so a matmul is a weighted mean
        var = (opp * opp) @ m - mean**2
        std = torch.sqrt(var.clamp_min(0.0) + 1e-6)
        # Soft histograms: Gaussian votes one bin wide, normalised per pixel.
        d = (opp.unsqueeze(2) - self.bin_centres.view(1, 1, -1, 1)) * bins  # (N, 3, B, s*s)
        votes = torch.exp(-0.5 * d * d)
        votes = votes / votes.sum(dim=2, keepdim=True).clamp_min(1e-12)
        hist = votes.flatten(1, 2) @ m  # (N, 3*B, R)
        low = F.adaptive_avg_pool2d(x, self.cfg.lowpass)
        return torch.cat(
            [mean.flatten(1), std.flatten(1), hist.transpose(1, 2).flatten(1), low.flatten(1)],
            dim=1,
        ).reshape(n, -1)
