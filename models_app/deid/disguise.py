"""The ``disguise`` parameterisation: change what people rely on to match unfamiliar faces.

People match unfamiliar faces largely by the hair, the head's outline and the surroundings
(Kumar et al. 2009; Noyes & Jenkins 2019), and an inner face set into another person's head
is often seen as that other person (Sinha & Poggio 1996). Machines match the inner face.
So this parameterisation renders, in the aligned 300 context crop:

1. the source's **inner face** (brows, eyes, nose, mouth), aligned to a **donor**'s by 68
   landmarks (a similarity, moved by ``proportions`` toward the affine fit: the donor's
   proportions) plus a smooth displacement grid, colour-transferred in CIELAB toward the
   donor's face (mean and spread), its 8–16 cycles-per-face-width luminance band scaled;
2. set into the donor's **head** (hair and outline, warped by a smooth contour grid; hair
   lightness and colour adjustable) through a soft oval whose size, position, outline
   harmonics and feather are optimised;
3. with **brow** darkness/thickness and **shading** (beard area, eyes) on the landmarks;
4. mixed into the source by the **donor share** through a soft head-shaped mask, so nothing
   outside the head changes.

Every parameter is ``bound · tanh(θ)`` (the share ``clamp(tanh(g θ), 0, 1)``), so θ = 0
is the unchanged source and no θ leaves the ranges of :class:`DisguiseRanges`, chosen so
the output stays a photograph (skin tone from a real donor, no posterised colour, no hue-only
change). The human-side margin in the spirit of Forbes et al. (ECCV 2024):
:meth:`DisguiseParams.margin` is a hinge that is 0 only while the donor share is at least
``margin_share`` — the proxy alone cannot talk the loop out of a disguise people would see.

Donor choice (pose, size, light, skin tone) is :mod:`.donors`; the job layer supplies the
donor photos. Pure torch/numpy: no Django import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models_app.vision.landmarks68 import BROWS, EYES, INNER, JAW, MOUTH, fit_transform, landmarks68

from .metrics import lab_to_rgb, rgb_to_lab
from .params import PARAMETERISATIONS, Parameterisation, _interp_basis, gaussian_blur

# --- Ranges and layout ------------------------------------------------------------------------


@dataclass(frozen=True)
class DisguiseRanges:
    """Bounds of every disguise parameter (θ -> ``bound · tanh(θ)`` unless said otherwise)."""

    share_gain: float = 2.0  # donor share = clamp(tanh(share_gain · θ), 0, 1)
    # The Forbes-style margin: a share below this costs (hinge). High, because a half-mixed
    # head shows two hairlines (a ghost), which is no photograph.
    margin_share: float = 0.95
    inner_scale: float = 0.15  # inner-face oval half-axes x (1 ± this)
    inner_shift_px: float = 6.0  # oval centre up/down
    inner_shape: float = 0.10  # 2nd/3rd outline harmonics, in oval radii
    feather_px: tuple[float, float] = (3.0, 14.0)  # oval edge width range
    proportions: float = 1.0  # 0: similarity alignment; 1: the affine fit (donor's proportions)
    warp_px: float = 4.0  # smooth displacement of the inner face
    warp_grid: int = 4
    transfer: tuple[float, float] = (0.6, 1.0)  # share of the Lab mean/spread transfer
    hair_lightness: float = 0.20  # hair L* x (1 ± this)
    hair_chroma: float = 4.0  # hair a*, b* shift (CIELAB units; more reads as dyed green/blue)
    brow_darkness: float = 0.40  # brow L* x (1 ∓ this)
    band_gain: float = 0.60  # 8-16 cycles/face-width luminance band x (1 ± this)
    contour_px: float = 6.0  # smooth warp of the donor head (outline, jaw)
    contour_grid: int = 5
    beard: float = 0.30  # L* x (1 ∓ this) over the beard area (facial hair shading)
    eye_shading: float = 0.25  # L* x (1 ∓ this) around the eyes (make-up)
    # What lies around the head: "source" keeps the source's surroundings (only the head is
    # mixed in); "donor" takes the donor's whole crop, so the output is the donor's photo
    # with the source's inner face: the presidential illusion as the spike made it (used with
    # ``blend="rectangle"``; the head blend would put the source's surroundings back).
    surroundings: str = "source"
    # Of the pool's most natural donors (pose, size, light, skin tone), how many are tried
    # for the one whose disguise keeps the source's identity best for the recogniser
    # (:func:`donor_identity_distances`); 1: the most natural donor, unchecked.
    donor_candidates: int = 1

    def validate(self) -> None:
        for name in ("share_gain", "inner_scale", "inner_shift_px", "inner_shape",
                     "proportions", "warp_px", "hair_lightness", "hair_chroma",
                     "brow_darkness", "band_gain", "contour_px", "beard", "eye_shading"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not 0.0 <= self.margin_share <= 1.0:
            raise ValueError(f"margin_share must be in [0, 1], got {self.margin_share!r}")
        if self.surroundings not in ("source", "donor"):
            raise ValueError(f"surroundings must be 'source' or 'donor', got {self.surroundings!r}")
        for name, hi in (("inner_scale", 0.5), ("inner_shape", 0.3), ("hair_lightness", 0.6),
                         ("brow_darkness", 0.7), ("band_gain", 1.0), ("beard", 0.6),
                         ("eye_shading", 0.5), ("proportions", 1.0)):
            if getattr(self, name) > hi:
                raise ValueError(f"{name} must be <= {hi} (the output must stay a photograph)")
        for name, (lo, hi), top in (("feather_px", self.feather_px, 40.0),
                                    ("transfer", self.transfer, 1.0)):
            if not 0.0 <= lo <= hi <= top:
                raise ValueError(f"{name} must be 0 <= low <= high <= {top}")
        for name in ("warp_grid", "contour_grid"):
            v = getattr(self, name)
            if not (isinstance(v, int) and 2 <= v <= 12):
                raise ValueError(f"{name} must be an integer in [2, 12]")
        v = self.donor_candidates
        if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64):
            raise ValueError("donor_candidates must be an integer in [1, 64]")


# Scalar parameters, in theta order (the grids follow).
SCALARS: tuple[str, ...] = (
    "share", "inner_sx", "inner_sy", "inner_dy", "h2c", "h2s", "h3c", "h3s", "feather",
    "proportions", "transfer", "head_width", "head_top", "hair_l", "hair_a", "hair_b",
    "brow_dark", "brow_thick", "band", "beard", "eyes",
)

# The most the donor may lend, in the 300 frame (inside the photo blend's oval, so the donor
# fades out before the blend does): centre and half-axes, raised-cosine feather. Within it,
# the donor's own head outline (its landmarks) bounds the region: see ``face_geometry``.
DONOR_HEAD = (150.0, 138.0, 108.0, 124.0)
DONOR_HEAD_FEATHER = 30.0
# The donor's head region from its landmarks: the jaw pushed out by WIDTH and the brows
# raised by TOP (both in eye distances; the optimiser mixes the four), edge blur in iod.
HEAD_WIDTH = (0.15, 0.45)
HEAD_TOP = (0.7, 1.4)
HEAD_BLUR = 0.15


class _Prepared:
    """Per-face tensors of a batch, indexable by rows like a tensor (``prep[sel]``)."""

    def __init__(self, **fields: torch.Tensor) -> None:
        self.fields = fields

    def __getitem__(self, sel) -> _Prepared:
        return _Prepared(**{k: v[sel] for k, v in self.fields.items()})

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None


def _gauss_blobs(points: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """(size,size) max over Gaussian blobs at ``points`` (x, y): a smooth stroke mask."""
    t = np.arange(size, dtype=np.float64) + 0.5
    out = np.zeros((size, size))
    for x, y in points:
        g = np.exp(-0.5 * (((t[None, :] - x) ** 2 + (t[:, None] - y) ** 2) / sigma**2))
        np.maximum(out, g, out=out)
    return out


def _polyline(points: np.ndarray, per_segment: int = 4) -> np.ndarray:
    """Points along a polyline (denser strokes for :func:`_gauss_blobs`)."""
    out = [points[0]]
    for a, b in zip(points[:-1], points[1:], strict=True):
        for k in range(1, per_segment + 1):
            out.append(a + (b - a) * k / per_segment)
    return np.asarray(out)


def _grid_from_affine(m: np.ndarray, size: int) -> np.ndarray:
    """(size,size,2) grid_sample grid (align_corners=False) that samples the source at
    ``m⁻¹ p`` for every output pixel p, ``m`` mapping source (x, y) to output (x, y)."""
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
    t = np.arange(size, dtype=np.float64) + 0.5
    xs, ys = np.meshgrid(t, t)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    return np.stack([sx / size * 2 - 1, sy / size * 2 - 1], -1)


def face_geometry(source: np.ndarray, donor: np.ndarray, size: int = 300) -> dict[str, np.ndarray]:
    """Everything the render needs from the landmarks of one (source, donor) pair of aligned
    context crops (HxWx3 uint8): the inner face's alignment grids (similarity, affine), the
    inner oval's coordinates, the donor's masks (brows thin/thick, beard area, eyes, face)."""
    ps, pd = landmarks68(source), landmarks68(donor)
    k = size / source.shape[0]
    ps, pd = ps * k, pd * k
    inner_s, inner_d = ps[INNER], pd[INNER]
    g_sim = _grid_from_affine(fit_transform(inner_s, inner_d, affine=False), size)
    g_aff = _grid_from_affine(fit_transform(inner_s, inner_d, affine=True), size)
    # The inner oval: brows to mouth, around the donor's inner landmarks.
    lo, hi = inner_d.min(0), inner_d.max(0)
    cx, cy = (lo + hi) / 2 + np.array([0.0, 2.0])
    rx, ry = (hi - lo) / 2 * np.array([1.12, 1.10]) + np.array([4.0, 6.0])
    t = np.arange(size, dtype=np.float64) + 0.5
    xs, ys = np.meshgrid(t, t)
    u, v = (xs - cx) / rx, (ys - cy) / ry
    iod = float(np.linalg.norm(pd[EYES][6:].mean(0) - pd[EYES][:6].mean(0))) or 60.0 * k
    brow_pts = np.concatenate([_polyline(pd[17:22]), _polyline(pd[22:27])])
    brow_thin = _gauss_blobs(brow_pts, size, 0.045 * iod)
    brow_thick = _gauss_blobs(brow_pts + np.array([0.0, -0.02 * iod]), size, 0.09 * iod)
    # Beard area: jaw from ear to ear below the nose, and the upper lip; minus the lips.
    jaw = pd[JAW][3:14]
    lip_top = pd[MOUTH][0:7] + np.array([0.0, -0.08 * iod])
    beard = _gauss_blobs(np.concatenate([_polyline(jaw), _polyline(lip_top)]), size, 0.16 * iod)
    lips = _gauss_blobs(_polyline(pd[MOUTH][0:12]), size, 0.06 * iod)
    beard = np.clip(beard - 1.5 * lips, 0.0, 1.0)
    eyes = np.clip(_gauss_blobs(np.concatenate([pd[36:42], pd[42:48]]) + [0.0, -0.06 * iod],
                                size, 0.12 * iod) - _gauss_blobs(pd[EYES], size, 0.05 * iod),
                   0.0, 1.0)
    # The donor's face (jaw line closed over the raised brows): hair is the head outside it.
    top = pd[BROWS][::-1] + np.array([0.0, -0.35 * iod])
    face_poly = np.concatenate([pd[JAW], top])
    face = _polygon_mask(face_poly, size)
    from scipy.ndimage import gaussian_filter

    face = gaussian_filter(face, 0.08 * iod)
    # The donor's head (face, forehead, hairline, hair above): where it lends its pixels.
    centre = pd.mean(0)

    def pushed(pts: np.ndarray, d: float) -> np.ndarray:
        v = pts - centre
        return pts + d * iod * v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)

    heads = []
    for width in HEAD_WIDTH:
        for top in HEAD_TOP:
            poly = np.concatenate([pushed(pd[JAW], width),
                                   pushed(pd[BROWS][::-1] + [0.0, -top * iod], width)])
            heads.append(gaussian_filter(_polygon_mask(poly, size), HEAD_BLUR * iod))
    return {
        "grid_sim": g_sim.astype(np.float32), "grid_aff": g_aff.astype(np.float32),
        "inner_uv": np.stack([u, v]).astype(np.float32),
        "inner_radius": np.float32(0.5 * (rx + ry)),
        "masks": np.stack([brow_thin, brow_thick, beard, eyes, face]).astype(np.float32),
        "heads": np.stack(heads).astype(np.float32),
        "inner_oval": np.array([cx, cy, rx, ry], np.float32),
    }


def _polygon_mask(poly: np.ndarray, size: int) -> np.ndarray:
    from matplotlib.path import Path

    t = np.arange(size, dtype=np.float64) + 0.5
    xs, ys = np.meshgrid(t, t)
    inside = Path(poly).contains_points(np.stack([xs.ravel(), ys.ravel()], 1))
    return inside.reshape(size, size).astype(np.float64)


def _oval_stats(lab: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and spread per channel: (N,3,H,W), (N,1,H,W) -> (N,3,1,1) twice."""
    s = w.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    mu = (lab * w).sum(dim=(2, 3), keepdim=True) / s
    sd = (((lab - mu) ** 2 * w).sum(dim=(2, 3), keepdim=True) / s).sqrt().clamp_min(0.5)
    return mu, sd


class DisguiseParams(Parameterisation):
    """A donor's head around the source's inner face, and the cues people use (module doc).

    ``sources`` and ``donors``: the batch's aligned context crops (HxWx3 uint8), one donor
    per source, row for row (landmarks are found once here). P = 21 scalars + the inner
    face's warp grid (g x g x 2) + the donor contour grid (c x c x 2): 103 by default."""

    name = "disguise"
    default_lr = 0.1

    def __init__(
        self,
        size: int = 300,
        ranges: DisguiseRanges | None = None,
        sources: Sequence[np.ndarray] | None = None,
        donors: Sequence[np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.size = size
        self.r = r = ranges or DisguiseRanges()
        r.validate()
        if sources is None or donors is None or len(sources) != len(donors) or not len(donors):
            raise ValueError("disguise needs one donor context crop per source")
        n_s, n_w, n_c = len(SCALARS), r.warp_grid**2 * 2, r.contour_grid**2 * 2
        self.n_params = n_s + n_w + n_c
        self.slices = {"scalars": slice(0, n_s), "warp": slice(n_s, n_s + n_w),
                       "contour": slice(n_s + n_w, n_s + n_w + n_c)}
        geo = [face_geometry(s, d, size) for s, d in zip(sources, donors, strict=True)]

        def stack(key: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([g[key] for g in geo]))

        self.register_buffer("grid_sim", stack("grid_sim"), persistent=False)
        self.register_buffer("grid_aff", stack("grid_aff"), persistent=False)
        self.register_buffer("inner_uv", stack("inner_uv"), persistent=False)
        self.register_buffer("inner_radius", stack("inner_radius").view(-1, 1, 1),
                             persistent=False)
        self.register_buffer("masks", stack("masks"), persistent=False)
        self.register_buffer("heads", stack("heads"), persistent=False)
        donor_t = torch.from_numpy(np.stack([np.asarray(d) for d in donors])).permute(0, 3, 1, 2)
        self.register_buffer("donor_lab", rgb_to_lab(donor_t.float().contiguous()),
                             persistent=False)
        self.register_buffer("donor_head", self._oval(DONOR_HEAD, DONOR_HEAD_FEATHER)[None, None],
                             persistent=False)
        self.register_buffer("warp_b", _interp_basis(size, r.warp_grid), persistent=False)
        self.register_buffer("contour_b", _interp_basis(size, r.contour_grid), persistent=False)
        grid0 = F.affine_grid(torch.eye(2, 3)[None], (1, 3, size, size), align_corners=False)
        self.register_buffer("grid0", grid0, persistent=False)
        self.oval = np.stack([g["inner_oval"] for g in geo])  # for tests and the gallery

    def _uv(self, oval: tuple[float, float, float, float]) -> torch.Tensor:
        t = (torch.arange(self.size, dtype=torch.float32) + 0.5) * (300.0 / self.size)
        yy, xx = torch.meshgrid(t, t, indexing="ij")
        cx, cy, ax, ay = oval
        return torch.stack([(xx - cx) / ax, (yy - cy) / ay])  # (2,H,W)

    def _oval(self, oval: tuple[float, float, float, float], feather: float) -> torch.Tensor:
        u, v = self._uv(oval)
        r = torch.sqrt(u**2 + v**2)
        ramp = ((1.0 - r) * (0.5 * (oval[2] + oval[3])) / feather).clamp(0.0, 1.0)
        return 0.5 - 0.5 * torch.cos(math.pi * ramp)

    # --- theta -> values --------------------------------------------------------------------

    def values(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every scalar parameter in its own units, (N,) each (``share_raw`` unclamped)."""
        r = self.r
        t = torch.tanh(theta[:, self.slices["scalars"]])
        s = dict(zip(SCALARS, t.unbind(1), strict=True))
        raw = torch.tanh(r.share_gain * theta[:, 0])

        def mid(lo_hi: tuple[float, float], x: torch.Tensor) -> torch.Tensor:
            lo, hi = lo_hi
            return lo + (hi - lo) * 0.5 * (x + 1.0)

        return {
            "share_raw": raw,
            "share": raw.clamp(0.0, 1.0),
            "inner_sx": 1.0 + r.inner_scale * s["inner_sx"],
            "inner_sy": 1.0 + r.inner_scale * s["inner_sy"],
            "inner_dy": r.inner_shift_px * s["inner_dy"],
            "h2c": r.inner_shape * s["h2c"], "h2s": r.inner_shape * s["h2s"],
            "h3c": r.inner_shape * s["h3c"], "h3s": r.inner_shape * s["h3s"],
            "feather": mid(r.feather_px, s["feather"]),
            "proportions": r.proportions * 0.5 * (s["proportions"] + 1.0),
            "transfer": mid(r.transfer, s["transfer"]),
            "head_width": 0.5 * (s["head_width"] + 1.0),
            "head_top": 0.5 * (s["head_top"] + 1.0),
            "hair_l": r.hair_lightness * s["hair_l"],
            "hair_a": r.hair_chroma * s["hair_a"], "hair_b": r.hair_chroma * s["hair_b"],
            "brow_dark": r.brow_darkness * s["brow_dark"],
            "brow_thick": 0.5 * (s["brow_thick"] + 1.0),
            "band": r.band_gain * s["band"],
            "beard": r.beard * s["beard"],
            "eyes": r.eye_shading * s["eyes"],
        }

    @torch.no_grad()
    def prepare(self, base: torch.Tensor) -> _Prepared:
        """Per face: the base's Lab and its 8-16 cycles/face-width band, and its inner
        face's Lab statistics against the donor's (for the colour transfer)."""
        n = base.shape[0]
        if n != self.grid_sim.shape[0]:
            raise ValueError(f"disguise was built for {self.grid_sim.shape[0]} faces, got {n}")
        lab = rgb_to_lab(base)
        # The face is ~100 px wide in the 300 crop: a DoG with σ 1.2 / 2.8 px passes about
        # 6-20 cycles per face width, peaking near 11 (Näsänen 1999: 8-16 carry identity).
        k = self.size / 300.0
        big = lab[:, :1]
        band = gaussian_blur(big, 1.2 * k) - gaussian_blur(big, 2.8 * k)
        u, v = self.inner_uv[:, 0:1], self.inner_uv[:, 1:2]
        w = ((u**2 + v**2) <= 1.0).float()
        # Source statistics over its own inner face (aligned: the donor's oval pulled back).
        w_src = F.grid_sample(w, self.grid_sim, mode="bilinear", align_corners=False)
        mu_s, sd_s = _oval_stats(lab, w_src)
        mu_d, sd_d = _oval_stats(self.donor_lab, w)
        return _Prepared(lab=lab, band=band, mu_s=mu_s, sd_s=sd_s, mu_d=mu_d, sd_d=sd_d,
                         grid_sim=self.grid_sim, grid_aff=self.grid_aff, inner_uv=self.inner_uv,
                         inner_radius=self.inner_radius, masks=self.masks, heads=self.heads,
                         donor_lab=self.donor_lab)

    def render(
        self, base: torch.Tensor, theta: torch.Tensor, prepared: _Prepared | None = None
    ) -> torch.Tensor:
        r, size = self.r, self.size
        p = self.prepare(base) if prepared is None else prepared
        n = base.shape[0]
        val = self.values(theta)

        def col(x: torch.Tensor) -> torch.Tensor:
            return x.view(n, 1, 1, 1)

        # 1. The inner face: aligned to the donor, warped, colour-transferred, band scaled.
        warp = theta[:, self.slices["warp"]].view(n, 2, r.warp_grid, r.warp_grid)
        disp = torch.matmul(torch.matmul(self.warp_b, torch.tanh(warp)), self.warp_b.t())
        disp = disp * (r.warp_px * 2.0 / size)
        grid = torch.lerp(p.grid_sim, p.grid_aff, col(val["proportions"]).view(n, 1, 1, 1))
        grid = grid + disp.permute(0, 2, 3, 1)
        inner = F.grid_sample(torch.cat([p.lab, p.band], 1), grid, mode="bilinear",
                              padding_mode="border", align_corners=False)
        lab_in, band = inner[:, :3], inner[:, 3:]
        tau = col(val["transfer"])
        ratio = (p.sd_d / p.sd_s).pow(tau)
        lab_in = p.mu_s + (lab_in - p.mu_s) * ratio + tau * (p.mu_d - p.mu_s)
        lab_in = torch.cat([lab_in[:, :1] + col(val["band"]) * band, lab_in[:, 1:]], 1)

        # 2. The donor's head: contour warp, hair lightness and colour.
        cgrid = theta[:, self.slices["contour"]].view(n, 2, r.contour_grid, r.contour_grid)
        cdisp = torch.matmul(torch.matmul(self.contour_b, torch.tanh(cgrid)), self.contour_b.t())
        cdisp = cdisp * (r.contour_px * 2.0 / size)
        donor = F.grid_sample(p.donor_lab, self.grid0.expand(n, -1, -1, -1)
                              + cdisp.permute(0, 2, 3, 1),
                              mode="bilinear", padding_mode="border", align_corners=False)
        # The donor's head region: its outline from its landmarks, wider/taller as optimised.
        hm, top = p.heads, col(val["head_top"])
        head = torch.lerp(torch.lerp(hm[:, 0:1], hm[:, 1:2], top),
                          torch.lerp(hm[:, 2:3], hm[:, 3:4], top), col(val["head_width"]))
        head = head * self.donor_head
        face = p.masks[:, 4:5]
        hair = head * (1.0 - face)
        donor = torch.cat([
            donor[:, :1] * (1.0 + col(val["hair_l"]) * hair),
            donor[:, 1:2] + col(val["hair_a"]) * hair,
            donor[:, 2:3] + col(val["hair_b"]) * hair,
        ], 1)

        # 3. The inner oval: size, position, outline harmonics, feather.
        u = p.inner_uv[:, 0:1] / col(val["inner_sx"])
        v = (p.inner_uv[:, 1:2] - col(val["inner_dy"]) / p.inner_radius[:, None]) / col(
            val["inner_sy"])
        # Outline harmonics cos/sin(2φ), cos/sin(3φ) as polynomials in (u, v)/r: no trig
        # over the whole crop every iteration.
        r2 = u**2 + v**2 + 1e-8
        rad = torch.sqrt(r2)
        cu, sv = u / rad, v / rad
        edge = (1.0 + col(val["h2c"]) * (cu * cu - sv * sv) + col(val["h2s"]) * (2 * cu * sv)
                + col(val["h3c"]) * cu * (cu * cu - 3 * sv * sv)
                + col(val["h3s"]) * sv * (3 * cu * cu - sv * sv))
        m_in = torch.sigmoid((edge - rad) * p.inner_radius[:, None] / col(val["feather"]) * 4.0)
        lab = m_in * lab_in + (1.0 - m_in) * donor

        # 4. Brows, beard-area and eye shading (luminance only: no hue-only change).
        brow = torch.lerp(p.masks[:, 0:1], p.masks[:, 1:2], col(val["brow_thick"]))
        gain = (1.0 - col(val["brow_dark"]) * brow) * (1.0 - col(val["beard"]) * p.masks[:, 2:3]) \
            * (1.0 - col(val["eyes"]) * p.masks[:, 3:4])
        # (lab_to_rgb clamps to the sRGB cube, so L* above 100 cannot leave [0, 255].)
        lab = torch.cat([lab[:, :1] * gain, lab[:, 1:]], 1)
        rgb = lab_to_rgb(lab)

        # 5. Into the source by the donor share, through the head-shaped mask (a convex mix
        # of two images in [0, 255]: no clamp needed); with the donor's surroundings, over
        # the whole crop.
        alpha = col(val["share"]) * (head if r.surroundings == "source" else 1.0)
        return torch.lerp(base, rgb, alpha)

    def prior(self, theta: torch.Tensor) -> torch.Tensor:
        # The share is held up by the margin; the prior keeps the rest from drifting.
        return torch.tanh(theta[:, 1:]).pow(2).mean(dim=1)

    def margin(self, theta: torch.Tensor) -> torch.Tensor:
        """(N,) hinge² below the donor-share margin (0 once share ≥ ``margin_share``)."""
        raw = torch.tanh(self.r.share_gain * theta[:, 0])
        return F.relu(self.r.margin_share - raw).pow(2)

    def describe(self, theta: torch.Tensor) -> dict[str, float]:
        v = self.values(theta.detach()[:1])
        keys = ("share", "proportions", "transfer", "band", "brow_dark", "hair_l", "beard")
        return {f"disguise_{k}": round(float(v[k][0]), 4) for k in keys}


PARAMETERISATIONS["disguise"] = DisguiseParams


@torch.no_grad()
def donor_identity_distances(
    source: np.ndarray,
    donors: Sequence[np.ndarray],
    ranges: DisguiseRanges | None = None,
    mask: np.ndarray | None = None,
    network: torch.nn.Module | None = None,
) -> np.ndarray:
    """For each candidate donor (aligned context crops, HxWx3 uint8, like ``source``): the
    recogniser's Θ0 distance (dlib units, match threshold 0.6) between the source's chip and
    the chip of the disguise where the loop must hold it: the donor share at its margin,
    every other parameter at its identity, through the job's change ``mask``. A donor whose
    jaw and hair pull the chip far from the source's identity sets the loop's guard against
    its margin from the first step (the output then keeps neither), so the loop starts
    from the donor that pulls least. Pure torch: the engine's own recogniser, no Django."""
    from models_app.vision.chips import central_chip
    from models_app.vision.dlib_resnet import get_dlib_resnet

    r = ranges or DisguiseRanges()
    k = len(donors)
    if not k:
        return np.zeros(0)
    size = source.shape[0]
    param = DisguiseParams(size, r, [source] * k, list(donors))
    base = torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1)[None].float()
    base = base.expand(k, -1, -1, -1).contiguous()
    theta = torch.zeros(k, param.n_params)
    share = min(max(r.margin_share, 0.5), 0.999)
    theta[:, 0] = math.atanh(share) / max(r.share_gain, 1e-6)
    out = param.render(base, theta)
    if mask is not None:
        out = torch.lerp(base, out, torch.from_numpy(mask.astype(np.float32))[None, None])
    net = network if network is not None else get_dlib_resnet("cpu")
    emb = net.features(central_chip(out.round()))[0]
    src = net.features(central_chip(base[:1]))[0]
    return (emb - src).norm(dim=1).cpu().numpy()


def best_donor(
    source: np.ndarray,
    donors: Sequence[np.ndarray],
    ranges: DisguiseRanges | None = None,
    mask: np.ndarray | None = None,
) -> int:
    """Index of the candidate donor whose disguise keeps the source's identity best (the
    smallest :func:`donor_identity_distances`); 0 when there is one candidate (no network
    pass). The job runner and the benchmarks choose donors through this one rule."""
    if len(donors) <= 1:
        return 0
    return int(np.argmin(donor_identity_distances(source, donors, ranges, mask)))
