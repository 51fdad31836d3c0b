"""What the loop optimises: parameterisations of the output context crop.

A parameterisation maps a base image (N,3,H,W) float in [0,255] and one flat parameter row per
face, ``theta`` (N,P), to the output image. ``theta = 0`` is always the identity, so both loop
modes (restart from the original, evolve the previous output) start from an unchanged face and
the resume state is just a tensor.

* ``style`` (default): perceptible, parameterised transforms optimised by backprop, in the
  spirit of Forbes et al. (ECCV 2024) parameterised obfuscations — per-region (face, hair,
  background) colour matrices and tone curves, blur/sharpen, grain texture, a low-frequency
  shading field and a coarse displacement grid (warp). Every parameter is squashed by tanh
  into a bounded, meaningful range, so no step can produce a broken image.
* ``pixels``: a free residual ``eps * tanh(theta)`` per pixel — the adversarial-noise baseline.
* ``disguise`` (:mod:`.disguise`, registered there): a donor's head around the source's inner
  face, with the cues people use (hair, brows, the 8-16 cycles band, contour, shading).

Regions come from the aligned geometry of the context crop (``faces.context_crop``: 100 px per
unit of dlib's mean face, the face's unit square at [100, 200] in a 300 crop), as soft
elliptical masks, so no segmentation network is needed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models_app.vision.filters import gaussian_blur  # noqa: F401  (re-exported: disguise)

REGIONS: tuple[str, ...] = ("face", "hair", "background")


def _ellipse(
    h: int, w: int, cx: float, cy: float, ax: float, ay: float, soft: float
) -> torch.Tensor:
    """Soft ellipse in a 300-unit frame scaled to (h, w): 1 inside, 0 outside, sigmoid edge."""
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * (300.0 / h)
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * (300.0 / w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    r = torch.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    # soft is the edge width in the 300 frame; r is in ellipse radii, so scale by the mean axis.
    return torch.sigmoid((1.0 - r) * (0.5 * (ax + ay)) / soft)


def region_masks(h: int = 300, w: int = 300, soft: float = 8.0) -> torch.Tensor:
    """(3, h, w) soft masks for face, hair, background that sum to 1 at every pixel.

    Geometry (in a 300 context crop): the face (brows to chin, cheek to cheek) is an ellipse
    around (150, 158); the head (face plus hair and ears) a larger one shifted up. Hair is the
    head minus the face, background the rest.
    """
    face = _ellipse(h, w, 150.0, 158.0, 50.0, 66.0, soft)
    head = _ellipse(h, w, 150.0, 132.0, 86.0, 100.0, soft)
    head = torch.maximum(head, face)
    return torch.stack([face, head - face, 1.0 - head])


class Parameterisation(nn.Module, ABC):
    """``render(base, theta)`` -> output; ``theta`` zeros is the identity."""

    name: str = ""
    n_params: int = 0
    # Adam learning rate that suits this parameterisation's theta units.
    default_lr: float = 0.05

    def init_params(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(n, self.n_params, device=device)

    def prepare(self, base: torch.Tensor) -> torch.Tensor | None:
        """Per-base work that does not depend on theta (computed once per base image, no
        gradient); pass the result to :meth:`render` as ``prepared`` (rows follow base)."""
        return None

    @abstractmethod
    def render(
        self, base: torch.Tensor, theta: torch.Tensor, prepared: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N,3,H,W) float [0,255] and (N,P) -> (N,3,H,W) float [0,255], differentiable."""

    @abstractmethod
    def prior(self, theta: torch.Tensor) -> torch.Tensor:
        """(N,) image prior / regulariser (0 at the identity): how far from the source to go."""

    def margin(self, theta: torch.Tensor) -> torch.Tensor:
        """(N,) human-side margin term (Forbes et al., ECCV 2024): 0 while the change stays
        at least a margin from the identity, positive below it. None by default."""
        return theta.new_zeros(theta.shape[0])

    def describe(self, theta: torch.Tensor) -> dict[str, float]:
        """A few human-readable magnitudes of the current change (for the iteration record)."""
        return {"theta_rms": float(theta.detach().pow(2).mean().sqrt())}


@dataclass(frozen=True)
class StyleRanges:
    """Bounds of the style transforms (each parameter is ``bound * tanh(theta)``)."""

    warp_px: float = 6.0  # max displacement of the coarse grid, in pixels of a 300 crop
    warp_grid: int = 5  # control points per side of the displacement grid
    colour_matrix: float = 0.5  # max off-identity entry of the 3x3 colour matrix
    colour_bias: float = 0.35  # max added offset, in [0, 1] image units
    gamma: float = 0.9  # tone curve v + k v (1 - v), |k| <= gamma, per channel
    sharpen: float = 2.0  # max unsharp-mask gain (blur goes down to a full Gaussian blur)
    blur_sigma: float = 2.5
    grain: float = 12.0  # max grain amplitude in grey levels
    shading_grid: int = 4  # low-frequency additive shading field, per side
    shading: float = 0.12  # max shading amplitude, in [0, 1] image units
    # Colour ranges per region (face, hair, background) relative to colour_matrix/colour_bias:
    # skin gets the smallest, so faces stay plausible while hair and background recolour.
    region_colour: tuple[float, float, float] = (0.5, 1.0, 1.0)


def _interp_basis(n_out: int, n_ctrl: int) -> torch.Tensor:
    """(n_out, n_ctrl) linear-interpolation weights (align_corners=True): a coarse field is
    upsampled as B @ field @ B.T — two small matmuls, far cheaper than a bicubic upsample's
    backward on the CPU."""
    pos = torch.linspace(0, n_ctrl - 1, n_out)
    lo = pos.floor().clamp(max=n_ctrl - 2).long()
    frac = pos - lo
    b = torch.zeros(n_out, n_ctrl)
    b[torch.arange(n_out), lo] = 1 - frac
    b[torch.arange(n_out), lo + 1] += frac
    return b


class StyleParams(Parameterisation):
    """Perceptible transforms: warp -> blur/sharpen -> per-region colour/tone -> grain/shading.

    Per region (face, hair, background): sharpen gain (1), colour matrix (9), colour bias (3),
    tone curve per channel (3), grain amplitude (1). Shared: warp grid (g x g x 2) and shading
    field (s x s x 3). With the defaults P = 50 + 3 x 17 + 48 = 149.
    """

    name = "style"
    default_lr = 0.08
    per_region = 17

    def __init__(self, size: int = 300, ranges: StyleRanges | None = None, seed: int = 0) -> None:
        super().__init__()
        self.size = size
        self.r = ranges or StyleRanges()
        r = self.r
        self.slices: dict[str, slice] = {}
        n = 0
        for key, count in (
            ("warp", r.warp_grid * r.warp_grid * 2),
            ("region", 3 * self.per_region),
            ("shading", r.shading_grid * r.shading_grid * 3),
        ):
            self.slices[key] = slice(n, n + count)
            n += count
        self.n_params = n
        self.register_buffer("masks", region_masks(size, size).view(3, 1, 1, -1), persistent=False)
        # Fixed band-pass grain pattern (what "texture" modulates): deterministic per seed so a
        # resumed job renders the same image from the same theta.
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(1, 3, size, size, generator=g)
        grain = noise - gaussian_blur(noise, 2.0)
        self.register_buffer("grain", (grain / grain.std()).view(1, 3, -1), persistent=False)
        self.register_buffer("ident", torch.eye(3).reshape(1, 9), persistent=False)
        self.register_buffer("warp_b", _interp_basis(size, r.warp_grid), persistent=False)
        self.register_buffer("shade_b", _interp_basis(size, r.shading_grid), persistent=False)
        grid0 = F.affine_grid(torch.eye(2, 3)[None], (1, 3, size, size), align_corners=False)
        self.register_buffer("grid0", grid0, persistent=False)  # the identity sampling grid

    def _split(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        r, n = self.r, theta.shape[0]
        reg = theta[:, self.slices["region"]].reshape(n, 3, self.per_region)
        return {
            "warp": theta[:, self.slices["warp"]].reshape(n, 2, r.warp_grid, r.warp_grid),
            "shading": theta[:, self.slices["shading"]].reshape(
                n, 3, r.shading_grid, r.shading_grid
            ),
            "sharpen": reg[:, :, 0],
            "matrix": reg[:, :, 1:10],
            "bias": reg[:, :, 10:13],
            "gamma": reg[:, :, 13:16],
            "grain": reg[:, :, 16],
        }

    @torch.no_grad()
    def prepare(self, base: torch.Tensor) -> torch.Tensor:
        """(N,6,H,W): base and its detail ``base - blur(base)``, in [0,1] units, warped together
        by :meth:`render`. Warping after blurring equals blurring after warping for these
        smooth, small warps (and the warp is linear), so this is computed once per base and
        never back-propagated."""
        return torch.cat([base, base - gaussian_blur(base, self.r.blur_sigma)], 1).div_(255.0)

    def _upsample(self, field: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(b, field), b.t())  # (N,C,g,g) -> (N,C,H,W)

    def _maps(self, coef: torch.Tensor) -> torch.Tensor:
        """Per-region coefficients (N, C, 3 regions) -> per-pixel maps (N, C, HW)."""
        return torch.matmul(coef, self.masks.view(3, -1))

    def render(
        self, base: torch.Tensor, theta: torch.Tensor, prepared: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Every full-resolution pass counts (this runs forward and backward every iteration):
        # per-region parameters become per-pixel maps through one small matmul each, and since
        # the region masks sum to 1, constants (the colour matrix's centring, the tone curve's
        # 1, the final x255) fold into those maps instead of costing passes of their own.
        r = self.r
        p = self._split(theta)
        n, _, h, w = base.shape
        if h != self.size or w != self.size:
            raise ValueError(f"StyleParams was built for {self.size}px crops, got {h}x{w}")
        stack = self.prepare(base) if prepared is None else prepared
        disp = self._upsample(torch.tanh(p["warp"]), self.warp_b) * (r.warp_px * 2.0 / w)
        # contiguous: grid_sample's CPU backward crashes on channels-last inputs (torch 2.14).
        warped = F.grid_sample(
            stack,
            self.grid0 + disp.permute(0, 2, 3, 1),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        ).view(n, 6, -1)
        x, detail = warped[:, :3], warped[:, 3:]
        a = p["sharpen"]
        # Gain in [-1, sharpen]: -1 removes all detail above sigma (a blur), >0 sharpens.
        gain = torch.where(a > 0, r.sharpen * torch.tanh(a), torch.tanh(a))  # (N,3reg)
        x = torch.addcmul(x, self._maps(gain[:, None, :]), detail)
        rc = torch.tensor(r.region_colour, device=theta.device, dtype=theta.dtype)
        mats = (self.ident + r.colour_matrix * rc[:, None] * torch.tanh(p["matrix"])).view(n, 9, 3)
        # Region r: M_r (x - 0.5) + 0.5 + bias_r = M_r x + (0.5 - M_r 0.5 + bias_r).
        bias = r.colour_bias * rc[:, None] * torch.tanh(p["bias"])  # (N,3reg,3ch)
        offset = 0.5 - 0.5 * mats.view(n, 3, 3, 3).sum(3) + bias  # (N,3reg,3ch)
        y = torch.bmm(mats, x).view(n, 3, 3, -1)  # (N, region, channel, HW)
        y = (y * self.masks.view(1, 3, 1, -1)).sum(1) + self._maps(offset.transpose(1, 2))
        # Tone curve v + k v (1 - v) = v (1 + k - k v), k per region/channel, x255 folded in.
        k = r.gamma * torch.tanh(p["gamma"]).transpose(1, 2)  # (N,3ch,3reg)
        y = y * (self._maps(255.0 * (1.0 + k)) - self._maps(255.0 * k) * y)
        amp = r.grain * torch.tanh(p["grain"])  # grey levels (N,3reg)
        y = torch.addcmul(y, self._maps(amp[:, None, :]), self.grain)
        shade = self._upsample(255.0 * r.shading * torch.tanh(p["shading"]), self.shade_b)
        return (y.view(n, 3, h, w) + shade).clamp(0.0, 255.0)

    def prior(self, theta: torch.Tensor) -> torch.Tensor:
        # Mean squared squashed parameter: the fraction of each range in use. Cheap, and
        # it keeps changes that do not lower score-A from drifting.
        return torch.tanh(theta).pow(2).mean(dim=1)

    def describe(self, theta: torch.Tensor) -> dict[str, float]:
        p = self._split(theta.detach())
        return {
            "warp_px": float(torch.tanh(p["warp"]).abs().max() * self.r.warp_px),
            "colour_matrix": float(torch.tanh(p["matrix"]).abs().mean() * self.r.colour_matrix),
            "colour_bias": float(torch.tanh(p["bias"]).abs().mean() * self.r.colour_bias),
            "tone": float(torch.tanh(p["gamma"]).abs().mean() * self.r.gamma),
        }


class PixelParams(Parameterisation):
    """A free per-pixel residual ``eps * tanh(theta)`` (grey levels): the baseline."""

    name = "pixels"
    default_lr = 0.05

    def __init__(self, size: int = 300, eps: float = 12.0) -> None:
        super().__init__()
        self.size = size
        self.eps = eps
        self.n_params = 3 * size * size

    def render(
        self, base: torch.Tensor, theta: torch.Tensor, prepared: torch.Tensor | None = None
    ) -> torch.Tensor:
        delta = self.eps * torch.tanh(theta.view(base.shape[0], 3, self.size, self.size))
        return (base + delta).clamp(0.0, 255.0)

    def prior(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.tanh(theta).pow(2).mean(dim=1)

    def describe(self, theta: torch.Tensor) -> dict[str, float]:
        d = self.eps * torch.tanh(theta.detach())
        return {"residual_rms": float(d.pow(2).mean().sqrt()), "residual_max": float(d.abs().max())}


PARAMETERISATIONS: dict[str, type[Parameterisation]] = {"style": StyleParams, "pixels": PixelParams}
DEFAULT_PARAMETERISATION = "style"


def build_parameterisation(name: str, size: int = 300, **kwargs: object) -> Parameterisation:
    """The named parameterisation for a ``size`` context crop; ValueError for unknown names."""
    if name not in PARAMETERISATIONS:
        raise ValueError(
            f"unknown parameterisation {name!r}; available: {sorted(PARAMETERISATIONS)}"
        )
    return PARAMETERISATIONS[name](size=size, **kwargs)  # type: ignore[arg-type]
