"""A proxy version as a battery judge: lists of (source, output) context crops in, P(same)
out (:data:`models_app.vision.battery.ScoreFn`). Pure (torch, numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .network import HumanProxy


def proxy_judge(model: HumanProxy, branch: str = "full", batch_size: int = 64):
    """``score(sources, outputs) -> P(same)`` with ``model`` in eval mode. The sources are
    encoded once per list object (the battery shows the same sources with every variant)."""
    model.eval()
    cached: dict[str, object] = {}

    @torch.no_grad()
    def score(sources: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> np.ndarray:
        if len(sources) != len(outputs):
            raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
        n = len(sources)
        if cached.get("of") is not sources:
            cached["of"] = sources
            cached["bank"] = model.encode_images(list(sources), [str(i) for i in range(n)],
                                                 batch_size=batch_size)
        src_bank = cached["bank"]
        out_bank = model.encode_images(list(outputs), [str(i) for i in range(n)],
                                       batch_size=batch_size)
        idx = torch.arange(n)
        a, b = src_bank.rows(idx), out_bank.rows(idx)  # type: ignore[attr-defined]
        return model.score_inputs(a, b, branch).float().cpu().numpy()

    return score
