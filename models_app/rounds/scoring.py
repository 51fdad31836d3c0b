"""Score-A of (source, image) pairs under stored proxy versions (for sampling and reports)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models_app.faces.models import FaceImage
from models_app.faces.selectors import context_of
from models_app.training.models import ModelVersion
from models_app.training.selectors import load_version_model


def proxy_scores(version: ModelVersion, pairs: Sequence[tuple[str, str]],
                 batch: int = 32) -> np.ndarray:
    """P(same) under ``version`` for each (source id, image id); NaN where an image has no
    face context (an output whose face was lost)."""
    return expit(proxy_logits(version, pairs, batch))


def expit(z: np.ndarray) -> np.ndarray:
    """P from log-odds in float64 (NaN stays NaN)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def proxy_logits(version: ModelVersion, pairs: Sequence[tuple[str, str]],
                 batch: int = 32) -> np.ndarray:
    """The calibrated log-odds of "same" under ``version`` for each (source id, image id);
    NaN where an image has no face context. Rank by these, not by P: a prior's P(same) is
    exactly 1.0 on most outputs (log-odds in the tens or hundreds), and ties rank nothing."""
    import torch  # the network: only where a round scores pairs

    from models_app.deid.score_a import HumanProxyScorer
    from models_app.proxy.data import context_to_tensor

    ids = {i for pair in pairs for i in pair}
    images = {str(i.pk): i for i in FaceImage.objects.filter(pk__in=ids)}
    model = load_version_model(version)
    scorer = HumanProxyScorer(model)
    device = next(model.parameters()).device
    out = np.full(len(pairs), np.nan)
    usable = [k for k, (a, b) in enumerate(pairs)
              if images.get(a) is not None and images.get(b) is not None
              and images[a].landmarks and images[b].landmarks]
    # A source is in many pairs (its ladder rungs and final output): decode it once. The
    # other side of each pair is decoded where it is used (each appears once).
    sources: dict[str, torch.Tensor] = {}

    def source(image_id: str) -> torch.Tensor:
        if image_id not in sources:
            sources[image_id] = context_to_tensor(context_of(images[image_id]))
        return sources[image_id]

    for start in range(0, len(usable), batch):
        chunk = usable[start:start + batch]
        xa = torch.stack([source(pairs[k][0]) for k in chunk]).to(device)
        xb = torch.stack([context_to_tensor(context_of(images[pairs[k][1]])) for k in chunk]).to(device)
        with torch.no_grad():
            out[chunk] = scorer.logit(xa, xb).detach().cpu().numpy().astype(np.float64)
    return out
