"""Spatial luminance structure for the proxy: band-passed maps per image, their masked
correlations per (band, region) per pair.

Why: the appearance branch's other inputs are colour statistics and a 75x75 pooled crop
(at most ~12 cycles per face width), and its CNN must learn any comparison of spatial
structure from a few hundred judgments. What people compare, by the vision literature,
is luminance structure in octave bands (identification peaks at 8-16 cycles per face
width, Näsänen 1999) in the inner face and outside it (hair, head outline; Sinha and
Poggio 1996). These are fixed, differentiable features of that kind: for each octave
band from 1 to 16 c/fw, a difference-of-Gaussians map of the luminance at three samples
per cycle of the band's top, and for each region (inner-face oval, the ring of hairline
and head outline, the surroundings) two pair features: the best Pearson correlation
over ±1 sample shifts and the mirror image (landmark jitter and mirroring are ignored by
people), and |log| of the two maps' contrast ratio. Which band and region matter is
learned from judgments by the head, not assumed here.

Pure torch, no Django. Geometry: the 300x300 context crop (padding 1.0) holds 3 face
widths; the face square (eyes, nose, mouth) is its central third.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models_app.vision.filters import gaussian_blur

CROP_FW = 3.0  # face widths across the context crop
# Octave bands in cycles per face width and the box each map covers (face widths around
# the face centre): the finest band needs only the face and its outline.
BANDS: tuple[tuple[float, float, float], ...] = (
    (1.0, 2.0, 3.0),
    (2.0, 4.0, 3.0),
    (4.0, 8.0, 2.4),
    (8.0, 16.0, 1.6),
)
# At the band's top frequency (Nyquist is 2): a one-sample shift step then leaves at most
# an eighth of a period of misalignment.
SAMPLES_PER_CYCLE = 4.0
# Gaussian sigma (in samples) whose response falls to one half at f cycles per sample.
_HALF = math.sqrt(math.log(2.0) / (2.0 * math.pi**2))
MIN_REGION = 12  # samples; a smaller (band, region) cell is left out


def _ellipse(n: int, box_fw: float, cy: float, rx: float, ry: float) -> torch.Tensor:
    """(n, n) bool: inside the ellipse (centre ``cy`` face widths below the face centre,
    radii in face widths) on a map that spans ``box_fw`` face widths around the centre."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n * box_fw - box_fw / 2
    y, x = t.view(-1, 1), t.view(1, -1)
    return ((x / rx) ** 2 + ((y - cy) / ry) ** 2) <= 1.0


def _regions(n: int, box_fw: float) -> dict[str, torch.Tensor]:
    inner = _ellipse(n, box_fw, 0.02, 0.42, 0.55)
    head = _ellipse(n, box_fw, 0.0, 1.05, 1.2)
    return {"inner_face": inner, "outline": head & ~inner, "surround": ~head}


@dataclass(frozen=True)
class Cell:
    band: int
    region: str
    mask: torch.Tensor  # (n, n) float, sums to 1


class StructureMaps:
    """Builds the per-image maps (a flat vector) and compares two of them."""

    def __init__(self) -> None:
        self.grids: list[int] = []  # per band: samples across the whole crop
        self.sizes: list[int] = []  # per band: samples across its box (the map's side)
        self.cells: list[Cell] = []
        self.band_masks: list[torch.Tensor | None] = []  # per band: its cells' masks, stacked
        for b, (_lo, hi, box) in enumerate(BANDS):
            full = int(round(CROP_FW * hi * SAMPLES_PER_CYCLE))
            n = int(round(box * hi * SAMPLES_PER_CYCLE))
            n += (full - n) % 2  # centred on the face: its mirror image is the map flipped
            self.grids.append(full)
            self.sizes.append(n)
            cells = []
            for name, m in _regions(n, box).items():
                # Shifts read one sample beyond the map: keep masks off its border.
                m = m.clone()
                m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = False
                if int(m.sum()) >= MIN_REGION:
                    cells.append(Cell(b, name, (m / m.sum()).float()))
            self.cells += cells
            self.band_masks.append(torch.stack([c.mask for c in cells]) if cells else None)
        self.dim = sum(n * n for n in self.sizes)

    @property
    def n_pair(self) -> int:
        """Pair features: correlation and |log contrast ratio| per cell."""
        return 2 * len(self.cells)

    def cell_names(self) -> list[str]:
        return [f"{c.region}_{BANDS[c.band][0]:g}-{BANDS[c.band][1]:g}" for c in self.cells]

    def maps(self, luminance: torch.Tensor) -> torch.Tensor:
        """(N, dim): the band maps of (N, 1, 300, 300) luminance in [0, 255], flattened.
        Differentiable."""
        if luminance.dim() != 4 or luminance.shape[1] != 1:
            raise ValueError(f"expected (N, 1, H, W) luminance, got {tuple(luminance.shape)}")
        side = luminance.shape[-1]
        out = []
        for (lo, hi, _box), full, n in zip(BANDS, self.grids, self.sizes, strict=True):
            per_fw = hi * SAMPLES_PER_CYCLE
            # Area resampling to the band's grid (an average: the anti-alias for the top).
            x = F.adaptive_avg_pool2d(luminance, full) if full < side else luminance
            o = (full - n) // 2
            # Blur only the box and the widest kernel's reach around it (the rest is cut).
            m = min(o, int(math.ceil(3 * _HALF * per_fw / lo)) + 1)
            x = x[:, :, o - m : o + n + m, o - m : o + n + m]
            band = gaussian_blur(x, _HALF * per_fw / hi) - gaussian_blur(x, _HALF * per_fw / lo)
            out.append(band[:, 0, m : m + n, m : m + n].flatten(1))
        return torch.cat(out, dim=1)

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        parts, start = [], 0
        for n in self.sizes:
            parts.append(flat[:, start : start + n * n].view(-1, n, n))
            start += n * n
        return parts

    def pair_features(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, n_pair): per cell, the best match (cosine similarity of the zero-mean band
        maps under the cell's mask) of a's map with b's, over shifts of up to one sample
        each way and b's mirror image, averaged with the same of b's map against a's (so
        that P(a, b) = P(b, a)), then |log(contrast b / contrast a)|."""
        ma, mb = self._split(a), self._split(b)
        corrs, ratios = [], []
        for x, y, masks in zip(ma, mb, self.band_masks, strict=True):
            if masks is None:
                continue
            k = x.shape[0]
            w = masks.to(a)  # (R, n, n)
            wf = w.flatten(1)
            ex = (x * x).flatten(1) @ wf.T  # (N, R) masked energies
            ey = (y * y).flatten(1) @ wf.T
            # Both directions in one batch: a against shifted b, b against shifted a.
            corr = _best_match(torch.cat([x, y]), torch.cat([y, x]), w, torch.cat([ex, ey]))
            corrs.append((corr[:k] + corr[k:]) / 2)
            ratios.append(0.5 * (torch.log(ey + 1e-3) - torch.log(ex + 1e-3)).abs())
        return torch.cat(corrs + ratios, dim=1)


def _best_match(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
    """(N, R): the highest masked cosine similarity of x with y shifted by up to one sample
    each way, as it is or mirrored. ``w`` (R, n, n) masks, ``ex`` x's masked energies."""
    # The 9 shifted copies of y and of its mirror image as unfold columns (zero outside):
    # the lagged sums are then two small batched matmuls, far cheaper forward and backward
    # on the CPU than grouped convolutions or 18 slices.
    shifted = torch.cat([F.unfold(yy.unsqueeze(1), 3, padding=1) for yy in (y, y.flip(-1))], 1)
    num = (x.unsqueeze(1) * w).flatten(2) @ shifted.transpose(1, 2)  # (N, R, 18)
    ey = ((shifted * shifted) @ w.flatten(1).T).transpose(1, 2)  # (N, R, 18)
    # The epsilon (grey levels squared) keeps flat maps finite and near-flat ones quiet.
    return (num / torch.sqrt((ex.unsqueeze(2) + 1e-2) * (ey + 1e-2))).amax(dim=2)
