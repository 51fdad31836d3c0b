"""The loop's loss: formula A, a term that pushes score-A down, and an image prior.

Formula A (claim 1)::

    L_A = λ0 ‖Θ0(Xsrc) − Θ0(XD)‖ − Σk λk ‖Θk(Xsrc) − Θk(XD)‖

Θ0 is the dlib ResNet embedding (kept close: identity stays machine-recognisable), Θk the
named multi-scale taps (pushed apart: the look changes). The Θ0 distance is in dlib's own
units (match threshold 0.6) so λ0 reads against the CFRU threshold; each tap distance is
relative to the source's tap norm, ‖ΔΘk‖ / ‖Θk(Xsrc)‖, so the λk of different scales are
comparable (raw norms differ by two orders of magnitude between the stem and level5).

Added (documented job parameters):

* score-A term ``λA · softplus(logit P − logit a_target)``: pushes the proxy's P(same) below
  ``a_target`` and stops pushing once it is well below (no needless change);
* identity guard ``λguard · relu(d0 − guard · thr)²``: a hinge that grows fast before the
  Θ0 distance reaches the CFRU threshold, so score-B is kept with margin under EOT. With
  ``guard_mode="constraint"`` the guard is also a constraint: while a face's Θ0 distance is
  past the guard point its score-A term is off, so that step only moves it back toward the
  source's identity. (A proxy's log-odds run to the hundreds; their gradient outweighs any
  fixed hinge weight, and score-B was traded for score-A.)
* image prior ``λprior · prior(θ)`` from the parameterisation (0 at the identity);
* human-side margin ``λmargin · margin(θ)`` from the parameterisation (Forbes et al., ECCV
  2024): 0 while the change is at least a margin from the identity (``disguise``: the donor
  share), so a proxy's score-A alone cannot undo a change people would see. 0 for the
  others.
* naturalness ``λnatural · excess``: how far (CIELAB units) the output's face oval lies
  outside the colour range of photographed faces (LFW's 1st–99th percentiles of mean a*,
  mean b* and L* spread, pulled in by ``natural_inset`` and widened to take in the source's
  own value). 0 inside: it only stops a change from leaving what a photograph looks like
  (a green face, a flat posterised one), which the proxy's score-A alone may reward. The
  loop also never counts an iterate outside the range itself as a success (λnatural = 0
  turns both off).

The total is the sum of the per-face losses (faces in a batch are independent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from models_app.vision.dlib_resnet import DLIB_DISTANCE_THRESHOLD, TAP_NAMES

from .errors import DeidConfigError

# Low and mid-level taps carry texture/colour ("style"); the deeper ones carry identity, so by
# default they are not pushed apart (λk = 0).
DEFAULT_TAP_WEIGHTS: dict[str, float] = {"stem": 0.3, "level1": 0.3, "level2": 0.2}


GUARD_MODES = ("penalty", "constraint")


@dataclass(frozen=True)
class LossWeights:
    """The λs of formula A and the weights of the added terms (all ≥ 0)."""

    lambda0: float = 1.0
    lambda_taps: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TAP_WEIGHTS))
    lambda_a: float = 1.0
    a_target: float = 0.2  # push P(same) below this (default: under τA = 0.3, with margin)
    lambda_guard: float = 100.0
    guard: float = 0.75  # the guard starts at guard x the CFRU threshold
    threshold: float = DLIB_DISTANCE_THRESHOLD  # Θ0 distance threshold of the torch CFRU
    lambda_prior: float = 0.05
    lambda_margin: float = 10.0
    guard_mode: str = "penalty"  # "penalty": the hinge alone; "constraint": see above
    lambda_natural: float = 1.0  # per CIELAB unit outside the natural range
    natural_inset: float = 0.5  # CIELAB units: the loss aims that far inside the range

    def validate(self) -> None:
        for name in ("lambda0", "lambda_a", "lambda_guard", "lambda_prior", "lambda_margin",
                     "lambda_natural"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise DeidConfigError(name, f"must be a finite number >= 0, got {v!r}")
        for k, v in self.lambda_taps.items():
            if k not in TAP_NAMES:
                raise DeidConfigError("lambda_taps", f"unknown tap {k!r}; taps: {TAP_NAMES}")
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise DeidConfigError("lambda_taps", f"weight of {k!r} must be >= 0, got {v!r}")
        if not 0.0 < self.a_target < 1.0:
            raise DeidConfigError("a_target", f"must be in (0, 1), got {self.a_target!r}")
        if not 0.0 < self.guard <= 1.5:
            raise DeidConfigError("guard", f"must be in (0, 1.5], got {self.guard!r}")
        v = self.natural_inset
        if not (isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 5.0):
            raise DeidConfigError("natural_inset", f"must be in [0, 5] CIELAB units, got {v!r}")
        if self.guard_mode not in GUARD_MODES:
            raise DeidConfigError("guard_mode", f"must be one of {list(GUARD_MODES)}, "
                                                f"got {self.guard_mode!r}")

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["lambda_taps"] = dict(self.lambda_taps)
        return d


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Row norm with a finite gradient at 0 (the loop starts exactly at the source, where
    ‖Θ(Xsrc) − Θ(XD)‖ = 0 and the plain norm's gradient is NaN)."""
    return (x.flatten(1).pow(2).sum(dim=1) + 1e-12).sqrt()


def formula_a(
    src_emb: torch.Tensor,
    src_taps: Mapping[str, torch.Tensor],
    out_emb: torch.Tensor,
    out_taps: Mapping[str, torch.Tensor],
    weights: LossWeights,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Per-face formula A (N,), the Θ0 distances (N,), and per-tap relative distances (N,).

    ``out_emb`` may hold ``samples`` EOT rows per face (face-major, N*samples rows): the Θ0
    distance is then the mean over a face's samples (the EOT expectation). ``out_taps`` are
    of the plain chip (N rows): spatial maps are compared pixel to pixel, so they must not be
    jittered against the source.
    """
    n = src_emb.shape[0]
    samples = out_emb.shape[0] // n
    src_rep = src_emb.repeat_interleave(samples, 0) if samples > 1 else src_emb
    d0 = _norm(out_emb - src_rep)
    if samples > 1:
        d0 = d0.view(n, samples).mean(1)
    total = weights.lambda0 * d0
    taps: dict[str, torch.Tensor] = {}
    for name, lam in weights.lambda_taps.items():
        s, o = src_taps[name], out_taps[name]
        taps[name] = _norm(o - s) / _norm(s).clamp_min(1e-6)
        if lam:
            total = total - lam * taps[name]
    return total, d0, taps


def score_a_term(logit_same: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    """softplus(logit P − logit target): ≈ linear in the log-odds above target, → 0 below.

    Takes the proxy's log-odds, not P: P saturates at 1.0 in float32 for clear matches,
    where its gradient is zero."""
    t = weights.a_target
    return F.softplus(logit_same - math.log(t / (1 - t)))


def guard_term(d0: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    return F.relu(d0 - weights.guard * weights.threshold).pow(2)


@dataclass
class LossTerms:
    """Per-face loss terms of one step (tensors (N,); ``total`` carries the graph)."""

    total: torch.Tensor
    formula_a: torch.Tensor
    theta0: torch.Tensor
    taps: dict[str, torch.Tensor]
    score_a: torch.Tensor
    guard: torch.Tensor
    prior: torch.Tensor
    margin: torch.Tensor | None = None
    natural: torch.Tensor | None = None  # excess outside the inset natural range (N,)

    def row(self, i: int) -> dict[str, float]:
        """Plain floats of face i (for the iteration record)."""
        out = {
            "total": float(self.total[i].detach()),
            "formula_a": float(self.formula_a[i].detach()),
            "theta0_distance": float(self.theta0[i].detach()),
            "score_a_term": float(self.score_a[i].detach()),
            "guard": float(self.guard[i].detach()),
            "prior": float(self.prior[i].detach()),
        }
        if self.margin is not None:
            out["margin"] = float(self.margin[i].detach())
        if self.natural is not None:
            out["natural_excess"] = float(self.natural[i].detach())
        out.update({f"tap_{k}": float(v[i].detach()) for k, v in self.taps.items()})
        return out


def deid_loss(
    src_emb: torch.Tensor,
    src_taps: Mapping[str, torch.Tensor],
    out_emb: torch.Tensor,
    out_taps: Mapping[str, torch.Tensor],
    logit_same: torch.Tensor,
    prior: torch.Tensor,
    weights: LossWeights,
    margin: torch.Tensor | None = None,
    natural: torch.Tensor | None = None,
) -> LossTerms:
    """All terms per face (see :func:`formula_a` for the row layout of ``out_emb``);
    ``logit_same`` is the proxy's log-odds of "same" (N,); ``margin`` the parameterisation's
    human-side margin term (N,), if it has one; ``natural`` the output's excess outside the
    natural colour range (N,, :func:`models_app.deid.metrics.natural_excess`)."""
    fa, d0, taps = formula_a(src_emb, src_taps, out_emb, out_taps, weights)
    g = guard_term(d0, weights)
    sa = score_a_term(logit_same, weights)
    a_weight = weights.lambda_a
    if weights.guard_mode == "constraint":
        # Past the guard point a face's step only restores identity (a fixed gate: no
        # gradient flows through the switch).
        inside = (d0.detach() <= weights.guard * weights.threshold).to(sa.dtype)
        a_weight = weights.lambda_a * inside
    total = fa + weights.lambda_guard * g + a_weight * sa + weights.lambda_prior * prior
    if margin is not None:
        total = total + weights.lambda_margin * margin
    if natural is not None:
        total = total + weights.lambda_natural * natural
    return LossTerms(total, fa, d0, taps, sa, g, prior, margin, natural)
