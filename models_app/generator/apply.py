"""Using a trained generator: one forward pass per face (``generator``), or the loop started
from the generator's output (``hybrid``).

The hybrid starts in one of two ways (``hybrid_start``):

* ``output`` (default): the generator's output image is the loop's base and the loop's own
  parameters start at the identity on top of it, so it has its whole range, unsaturated;
* ``params``: the loop's parameters start at the generator's prediction (one image, one
  set of parameters). Measured worse (BENCHMARKS.md, issue 16, 2026-12-05 afternoon): 45 %
  of the predicted parameters sit where tanh saturates (|tanh| > 0.99), where Adam's steps
  barely move the image, and 31 of 48 faces stopped ``converged`` (success by the loop's
  proxy 23 %, against 71 % from the output, in 25 iterations against 14).

Both go through the loop's own scoring (``deid.run_deid_batch`` with ``init_params``): record
0 is the generator's output, scored exactly as the loop scores an iterate — score-A by the
proxy, score-B by the job's ensemble over EOT chips, and a candidate success confirmed on
the output as saved (composited, detected and aligned afresh, the dlib runtime). For
``generator`` the loop is told to stop at once, so no gradient step is taken: the result is
the single pass, with stop reason ``success`` or ``single_pass``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from models_app.deid.config import DeidConfig
from models_app.deid.loop import STOP_CANCELLED, run_deid_batch
from models_app.deid.state import DeidResult, DeidSource

from .network import ParamGenerator

METHOD_ITERATIVE = "iterative"
METHOD_GENERATOR = "generator"
METHOD_HYBRID = "hybrid"
METHODS = (METHOD_ITERATIVE, METHOD_GENERATOR, METHOD_HYBRID)
STOP_SINGLE_PASS = "single_pass"  # the generator's pass did not meet both thresholds
HYBRID_OUTPUT, HYBRID_PARAMS = "output", "params"
HYBRID_STARTS = (HYBRID_OUTPUT, HYBRID_PARAMS)


def config_for(model: ParamGenerator, cfg: DeidConfig) -> DeidConfig:
    """The job's config with the generator's parameterisation (its parameters mean nothing
    under another one)."""
    g = model.config
    return dataclasses.replace(
        cfg, parameterisation=g.parameterisation, style_ranges=dict(g.style_ranges),
        pixels_eps=g.pixels_eps,
    )


@torch.no_grad()
def predict_params(
    model: ParamGenerator, sources: Sequence[DeidSource], device: torch.device | str = "cpu",
    batch: int = 32,
) -> torch.Tensor:
    """theta (N, P) for the sources' context crops, batched."""
    model.eval()
    rows = []
    for i in range(0, len(sources), batch):
        arr = np.stack([s.context for s in sources[i : i + batch]])
        ctx = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().contiguous()
        rows.append(model(ctx))
    return torch.cat(rows)


@torch.no_grad()
def predict_outputs(
    model: ParamGenerator, sources: Sequence[DeidSource], cfg: DeidConfig,
    device: torch.device | str = "cpu", theta: torch.Tensor | None = None,
) -> torch.Tensor:
    """The generator's output context crops (N, 3, H, W) float [0, 255], rendered through
    each face's change mask (what survives compositing), rounded as a saved image is."""
    if theta is None:
        theta = predict_params(model, sources, device)
    ctx = torch.from_numpy(np.stack([s.context for s in sources])).to(device)
    ctx = ctx.permute(0, 3, 1, 2).float().contiguous()
    size = ctx.shape[-1]
    mask = torch.from_numpy(np.stack([
        np.ones((size, size), np.float32) if m is None else m
        for m in (s.change_mask(cfg.blend) for s in sources)
    ])).to(device)[:, None]
    return model.render(ctx, theta.to(device), mask).round()


def hybrid_start_kwargs(
    model: ParamGenerator, sources: Sequence[DeidSource], cfg: DeidConfig,
    device: torch.device | str = "cpu", start: str = HYBRID_OUTPUT,
    theta: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The loop's start for the hybrid (``init_base`` or ``init_params`` of
    ``run_deid_batch``); ``cfg`` is the job's config (its blend sets the change mask)."""
    if start not in HYBRID_STARTS:
        raise ValueError(f"hybrid_start must be one of {HYBRID_STARTS}, got {start!r}")
    if theta is None:
        theta = predict_params(model, sources, device)
    if start == HYBRID_PARAMS:
        return {"init_params": theta}
    return {"init_base": predict_outputs(model, sources, cfg, device, theta)}


def run_generator(
    model: ParamGenerator,
    sources: Sequence[DeidSource],
    proxy: Any,
    config: DeidConfig | None = None,
    *,
    hybrid: bool = False,
    hybrid_start: str = HYBRID_OUTPUT,
    device: torch.device | str | None = None,
    should_stop: Callable[[], bool] | None = None,
    **loop_kwargs: Any,
) -> list[DeidResult]:
    """De-identify ``sources`` with the generator (one pass) or the hybrid (the loop from the
    generator's parameters); ``loop_kwargs`` go to the loop (``on_iteration``, ``on_rung``,
    ``network``). Results are the loop's; a single pass that is not a success has stop
    reason ``single_pass`` and 0 iterations."""
    if device is None:
        from models_app.device import get_device

        device = get_device()
    model = model.to(device)
    cfg = config_for(model, config or DeidConfig())
    theta = predict_params(model, sources, device)
    if hybrid:
        start = hybrid_start_kwargs(model, sources, cfg, device, hybrid_start, theta)
        return run_deid_batch(sources, proxy, cfg, device=device, should_stop=should_stop,
                              **start, **loop_kwargs)
    # One record and no step: no autograd graph to build (6–8 % of the pass's CPU).
    with torch.no_grad():
        results = run_deid_batch(sources, proxy, cfg, init_params=theta, device=device,
                                 should_stop=lambda: True, **loop_kwargs)
    for r in results:
        if r.stop_reason == STOP_CANCELLED:
            r.stop_reason = STOP_SINGLE_PASS
    return results
