"""Using a trained generator: one forward pass per face (``generator``), or the loop started
from the generator's parameters (``hybrid``).

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


def run_generator(
    model: ParamGenerator,
    sources: Sequence[DeidSource],
    proxy: Any,
    config: DeidConfig | None = None,
    *,
    hybrid: bool = False,
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
        return run_deid_batch(sources, proxy, cfg, init_params=theta, device=device,
                              should_stop=should_stop, **loop_kwargs)
    # One record and no step: no autograd graph to build (6–8 % of the pass's CPU).
    with torch.no_grad():
        results = run_deid_batch(sources, proxy, cfg, init_params=theta, device=device,
                                 should_stop=lambda: True, **loop_kwargs)
    for r in results:
        if r.stop_reason == STOP_CANCELLED:
            r.stop_reason = STOP_SINGLE_PASS
    return results
