"""Platt scaling of the proxy's logits: ``P = sigmoid(a * logit + b)``, fitted on a
validation split so that P(same) is calibrated (``HumanProxy.calibration`` stores (a, b))."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def fit_platt(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[float, float]:
    """Platt scaling (a, b) minimising weighted cross-entropy of sigmoid(a*logit + b).

    Soft targets are fine. ``a`` is kept positive (a calibration must not flip the ranking).
    """
    z = logits.detach().double()
    y = targets.detach().double()
    w = torch.ones_like(z) if weights is None else weights.detach().double()
    if len(z) < 2 or float(w.sum()) <= 0:
        return 1.0, 0.0
    log_a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_a, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (
            w * F.binary_cross_entropy_with_logits(log_a.exp() * z + b, y, reduction="none")
        ).sum() / w.sum()
        loss.backward()
        return loss

    opt.step(closure)
    a, bb = float(log_a.detach().exp()), float(b.detach())
    if not (math.isfinite(a) and math.isfinite(bb)):
        return 1.0, 0.0
    return a, bb
