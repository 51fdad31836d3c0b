"""Expectation over transformations (EOT) for score-B inside the loop.

The saved output is re-detected, re-aligned and possibly re-compressed before any recogniser
sees it, so the in-loop chip is cut from the context crop through a small random similarity
transform (shift, scale, rotation — what a fresh alignment moves) and passed through a real
JPEG encoder with a straight-through gradient. Everything is rounded to integers on the way
(straight-through), so the forward value is exactly a uint8 image a CFRU could be given.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models_app.vision.chips import CHIP_SIZE, CONTEXT_SIZE, central_chip


@dataclass(frozen=True)
class EOTConfig:
    """Random transforms for the in-loop chip (defaults match a fresh re-alignment's jitter)."""

    samples: int = 1  # chips per face per step (more: smoother gradient, slower)
    max_shift_px: float = 2.5  # in pixels of the 150 chip
    max_scale: float = 0.03  # relative zoom jitter
    max_rotate_deg: float = 2.0
    jpeg_prob: float = 0.5  # probability that a chip is JPEG re-encoded
    jpeg_quality: tuple[int, int] = (70, 95)
    confirm_samples: int = 4  # fresh transforms used to confirm a candidate success
    # Score-A confirmed too: a candidate's mean P(same) over the plain output and those
    # transforms (then over the saved photo's fresh crop and as many views of it) must be
    # <= τA. Without it one lucky view decides (the loop draws a new one every iteration).
    confirm_score_a: bool = True
    # Score-A through the same transform: the proxy sees the whole context crop jittered as
    # the EOT chip (which is then its central window), as a fresh alignment of the saved
    # photo would move it; without it the proxy sees the untransformed crop.
    proxy: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object] | None) -> EOTConfig:
        d = dict(d or {})
        if "jpeg_quality" in d:
            d["jpeg_quality"] = tuple(d["jpeg_quality"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]

    @classmethod
    def none(cls) -> EOTConfig:
        return cls(1, 0.0, 0.0, 0.0, 0.0, (95, 95), 0)


def straight_round(x: torch.Tensor) -> torch.Tensor:
    """Round to integers and clamp to [0,255] in the forward pass; identity gradient."""
    return x + (x.round().clamp(0.0, 255.0) - x).detach()


def jpeg_numpy(chips: np.ndarray, qualities: list[int]) -> np.ndarray:
    """Real JPEG round trip (PIL, 4:2:0 as most encoders) of (N,H,W,3) uint8 chips."""
    out = np.empty_like(chips)
    for i, (c, q) in enumerate(zip(chips, qualities, strict=True)):
        buf = io.BytesIO()
        Image.fromarray(c).save(buf, format="JPEG", quality=int(q))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


def jpeg_straight_through(x: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """JPEG of (N,3,H,W) integer-valued floats; forward = real codec, backward = identity.

    The straight-through estimator is what EOT needs here: the gradient of the chip itself is
    a good direction, and the forward value is what a real decoder produces.
    """
    jpg = torch.from_numpy(jpeg_numpy(to_uint8(x), qualities)).permute(0, 3, 1, 2).to(x)
    return x + (jpg - x).detach()


def chip_affine(
    n: int, cfg: EOTConfig, generator: torch.Generator | None = None, device: str = "cpu"
) -> torch.Tensor:
    """(n,2,3) affine_grid matrices that cut a jittered 150 chip from the 300 context crop.

    The identity cut (chip = context[75:225, 75:225] exactly) is [[0.5,0,0],[0,0.5,0]] with
    align_corners=False; jitter rotates/zooms about the crop centre and shifts.
    """
    u = torch.rand(n, 4, generator=generator) * 2.0 - 1.0
    ang = u[:, 0] * math.radians(cfg.max_rotate_deg)
    scale = (CHIP_SIZE / CONTEXT_SIZE) * (1.0 + u[:, 1] * cfg.max_scale)
    # A chip pixel is 2/CONTEXT_SIZE in the context's normalised coordinates.
    shift = u[:, 2:] * cfg.max_shift_px * 2.0 / CONTEXT_SIZE
    cos, sin = torch.cos(ang) * scale, torch.sin(ang) * scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    return theta.to(device)


def identity_affine(n: int, device: str | torch.device = "cpu") -> torch.Tensor:
    s = CHIP_SIZE / CONTEXT_SIZE
    return torch.tensor([[s, 0.0, 0.0], [0.0, s, 0.0]], device=device).expand(n, 2, 3).clone()


def cut_chips(context: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear chips (N,3,150,150) from (N,3,300,300) contexts; differentiable."""
    n = context.shape[0]
    grid = F.affine_grid(theta.to(context), (n, 3, CHIP_SIZE, CHIP_SIZE), align_corners=False)
    return F.grid_sample(context, grid, mode="bilinear", padding_mode="border", align_corners=False)


def eot_contexts(
    context: torch.Tensor,
    cfg: EOTConfig,
    generator: torch.Generator | None = None,
    samples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered, rounded whole context crops (N*samples,3,300,300), face-major, and their
    EOT chips (the central windows, sometimes JPEG'd): the same draws as :func:`eot_chips`
    makes, applied to the whole crop so the proxy can see what the chip's CFRU sees."""
    ctx = _per_sample(context, cfg, samples)
    if _no_jitter(cfg):
        jittered = ctx
    else:
        theta = chip_affine(ctx.shape[0], cfg, generator, str(ctx.device))
        theta[:, :, :2] *= CONTEXT_SIZE / CHIP_SIZE  # same rotation/zoom/shift, whole crop
        grid = F.affine_grid(theta.to(ctx), tuple(ctx.shape), align_corners=False)
        jittered = F.grid_sample(
            ctx, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
    jittered = straight_round(jittered)
    return jittered, _maybe_jpeg(central_chip(jittered), cfg, generator)


def _per_sample(context: torch.Tensor, cfg: EOTConfig, samples: int | None) -> torch.Tensor:
    """Each face's crop repeated for its samples, face-major."""
    s = cfg.samples if samples is None else samples
    return context.repeat_interleave(s, dim=0) if s > 1 else context


def _no_jitter(cfg: EOTConfig) -> bool:
    return cfg.max_shift_px == 0 and cfg.max_scale == 0 and cfg.max_rotate_deg == 0


def _maybe_jpeg(
    chips: torch.Tensor, cfg: EOTConfig, generator: torch.Generator | None
) -> torch.Tensor:
    if cfg.jpeg_prob > 0:
        u = torch.rand(chips.shape[0], generator=generator)
        q = torch.randint(
            cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (chips.shape[0],), generator=generator
        )
        idx = torch.nonzero(u < cfg.jpeg_prob).flatten().tolist()
        if idx:
            jp = jpeg_straight_through(chips[idx], [int(q[i]) for i in idx])
            chips = chips.index_put((torch.tensor(idx),), jp)
    return chips


def eot_chips(
    context: torch.Tensor,
    cfg: EOTConfig,
    generator: torch.Generator | None = None,
    samples: int | None = None,
) -> torch.Tensor:
    """``samples`` jittered, rounded, sometimes JPEG'd chips per face: (N*samples,3,150,150),
    face-major (face i owns rows i*samples .. i*samples+samples-1)."""
    ctx = _per_sample(context, cfg, samples)
    if _no_jitter(cfg):
        chips = central_chip(ctx)
    else:
        chips = cut_chips(ctx, chip_affine(ctx.shape[0], cfg, generator, str(ctx.device)))
    return _maybe_jpeg(straight_round(chips), cfg, generator)


def to_uint8(chips: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) float -> (N,H,W,3) uint8, as a CFRU's ``embed`` wants."""
    return chips.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
